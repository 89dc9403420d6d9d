"""Train the shipped ``srresnet-x4`` model (stage 1 of SRGAN: pixel losses).

The recipe of the weights in ``astrosr/data/srresnet-x4.*``, recorded in its
model card. Truths: the Hubble Deep Field (scikit-image) and 16 synthetic
skies; never the images in ``shared/data`` (the benchmarks' test images).
Pairs are observed through ``astrosr.simulate`` with Gaussian PSFs of sigma
0.9-1.6 input pixels (well-sampled imagers; the consistency step of
``astrosr.enhance`` then uses the image's own PSF), sky 10-1000 e-, read noise
2-10 e-, fresh noise every batch. Loss: L1 on the asinh scale + L1 of the
fluxes of 8x8-fine-pixel blocks on the linear scale (a per-pixel linear L1
teaches the network to erase stars: see `astrosr.models.losses.pixel_loss`).
Resumes from its checkpoints, so a run cut short continues where it stopped.
The shipped weights took 3000 steps, then 4000 more from them at a lower
learning rate (29 minutes in all on 2 CPU cores)::

    python examples/train_srresnet_x4.py --steps 3000 --then 4000 --out runs/srresnet-x4
"""

import argparse
import sys

from astrosr.training import Degradation, train


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--out", default="runs/srresnet-x4", help="output stem (and checkpoint dir)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--then", type=int, default=0,
                        help="further steps from the result at learning rate 2e-4 (seed 2)")
    args = parser.parse_args(argv)
    degradation = Degradation.legacy(psf_sigma=(0.9, 1.6), moffat_fraction=0.0)
    model = train("srresnet", steps=args.steps, batch_size=16, patch=24, scale=4,
                  model_options={"n_blocks": 8, "filters": 32}, learning_rate=5e-4,
                  lr_schedule="cosine", n_synthetic=16, degradation=degradation,
                  loss_weights={"linear": 1.0}, seed=1, checkpoint_dir=args.out + ".ckpt",
                  checkpoint_every=1000, steps_per_epoch=500, threads=args.threads,
                  command="python examples/train_srresnet_x4.py " + " ".join(sys.argv[1:]))
    if args.then:
        model = train(model, steps=args.then, batch_size=16, patch=24, scale=4, learning_rate=2e-4,
                      lr_schedule="cosine", n_synthetic=16, degradation=degradation,
                      loss_weights={"linear": 1.0}, seed=2, checkpoint_dir=args.out + ".ckpt2",
                      checkpoint_every=1000, steps_per_epoch=500, threads=args.threads,
                      command="python examples/train_srresnet_x4.py " + " ".join(sys.argv[1:]))
    model.card["name"] = "srresnet-x4"
    model.save(args.out, overwrite=True)
    print(f"wrote {args.out}.weights.h5 and {args.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
