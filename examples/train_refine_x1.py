"""Train the shipped ``refine-x1`` model: the last step of `astrosr.MultiFrameSR`.

A scale-1 SRGAN generator (residual blocks, no upsampling) that refines the
fused image of a dithered stack on its own grid. Its training pairs are made
by the pipeline's own fusion (`astrosr.training.fused.FusedPairs`): crops of
the Hubble Deep Field (scikit-image) and of 16 synthetic skies are observed
as 16-frame stacks at scale 4 (Gaussian PSF sigma 0.8-1.6 input pixels, or a
Moffat one 20 % of the time; sky 10-1000 e-, read noise 2-10 e-, flux x0.05-20)
and fused by ``fuse(method="reconstruct")`` with the true PSF; the network
learns fused -> truth with the pixel losses of stage 1 (L1 on the asinh scale
+ block-flux L1 on the linear scale). The images in ``shared/data`` (the
benchmarks' real test images) are never used. The pairs are cached in
``OUT.pairs.npz`` and training resumes from its checkpoints::

    python examples/train_refine_x1.py --pairs 400 --steps 6000 --out runs/refine-x1
"""

import argparse
import sys
from pathlib import Path

from astrosr.training import Degradation, train, training_images
from astrosr.training.fused import FusedPairs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=400, help="simulated stacks (default 400)")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--filters", type=int, default=32)
    parser.add_argument("--out", default="runs/refine-x1", help="output stem (and checkpoint dir)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--then", type=int, default=0,
                        help="further steps from the result at learning rate 2e-4 (seed 6)")
    args = parser.parse_args(argv)
    cache = Path(args.out + ".pairs.npz")
    if cache.exists():
        pairs = FusedPairs.load(cache)
    else:
        degradation = Degradation.legacy(psf_sigma=(0.8, 1.6), moffat_fraction=0.2)
        # The skies and ranges refine-x1 was trained on (before the sky classes).
        images = training_images(include_hdf=True, n_synthetic=16, seed=3, classes=("survey",))
        pairs = FusedPairs.simulate(images, args.pairs, scale=4, n_frames=16, size=32,
                                    degradation=degradation, seed=4, progress=True)
        cache.parent.mkdir(parents=True, exist_ok=True)
        pairs.save(cache)
    model = train("srresnet", steps=args.steps, batch_size=16, patch=48, scale=1,
                  model_options={"n_blocks": args.blocks, "filters": args.filters},
                  learning_rate=5e-4, lr_schedule="cosine", pairs=pairs, n_val=32,
                  loss_weights={"linear": 1.0}, seed=5, checkpoint_dir=args.out + ".ckpt",
                  checkpoint_every=500, steps_per_epoch=250, threads=args.threads,
                  command="python examples/train_refine_x1.py " + " ".join(sys.argv[1:]))
    if args.then:
        model = train(model, steps=args.then, batch_size=16, patch=48, learning_rate=2e-4,
                      lr_schedule="cosine", pairs=pairs, n_val=32, loss_weights={"linear": 1.0},
                      seed=6, checkpoint_dir=args.out + ".ckpt2", checkpoint_every=500,
                      steps_per_epoch=250, threads=args.threads,
                      command="python examples/train_refine_x1.py " + " ".join(sys.argv[1:]))
    model.card["name"] = "refine-x1"
    model.save(args.out, overwrite=True)
    print(f"wrote {args.out}.weights.h5 and {args.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
