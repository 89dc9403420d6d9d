"""Train the shipped ``srgan-x4`` model (stage 2 of SRGAN: adversarial training).

Starts from the shipped ``srresnet-x4`` (stage 1) and trains it with the
SRGAN losses: a content loss (discriminator feature matching: no VGG19 file
is shipped or downloaded) plus 1e-3 times the adversarial loss, as in Ledig
et al. (2017), plus a small pixel term (weight 0.1: the L1 on the asinh scale
and the block-flux L1 of stage 1) so that the generator keeps the fluxes that
photometry needs. The discriminator's real targets are 0.9 (one-sided label
smoothing): without it the discriminator won within a few hundred steps
(its loss 0.86 -> 0.03) and the generator hardly moved. Same truths and
degradation as ``srresnet-x4`` (the Hubble Deep Field and 16 synthetic skies;
Gaussian PSF sigma 0.9-1.6 input pixels); never the benchmark images in
``shared/data``. Resumes from its checkpoints::

    python examples/train_srgan_x4.py --steps 2500 --out runs/srgan-x4
"""

import argparse
import sys

from astrosr.models import SRModel
from astrosr.training import Degradation, train


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--init", default="srresnet-x4",
                        help="stage-1 model (shipped name or stem)")
    parser.add_argument("--out", default="runs/srgan-x4", help="output stem (and checkpoint dir)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoothing", type=float, default=0.1,
                        help="one-sided label smoothing of the discriminator (default 0.1)")
    args = parser.parse_args(argv)
    from astrosr.models import get_model

    start = get_model(args.init)
    assert isinstance(start, SRModel)
    model = train(start, stage="gan", steps=args.steps, batch_size=16, patch=24,
                  learning_rate=1e-4, lr_schedule="cosine", n_synthetic=16,
                  degradation=Degradation.legacy(psf_sigma=(0.9, 1.6), moffat_fraction=0.0),
                  loss_weights={"pixel": 0.1, "linear": 1.0, "label_smoothing": args.smoothing},
                  seed=3,
                  checkpoint_dir=args.out + ".ckpt", checkpoint_every=500, steps_per_epoch=250,
                  threads=args.threads,
                  command="python examples/train_srgan_x4.py " + " ".join(sys.argv[1:]))
    model.card["name"] = "srgan-x4"
    model.save(args.out, overwrite=True)
    print(f"wrote {args.out}.weights.h5 and {args.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
