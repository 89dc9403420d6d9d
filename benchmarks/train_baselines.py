"""Train the SRCNN and VDSR baselines that ``benchmarks/single_frame.py`` compares.

The peers the project started from, trained with astrosr's trainer on the
same truths and degradation as ``srresnet-x4`` (the Hubble Deep Field and 16
synthetic skies, Gaussian PSF sigma 0.9-1.6 input pixels; pixel losses), small
enough to train in minutes on 2 CPU cores. Both ship in ``astrosr/data``:
``vdsr-x4`` (2,000 steps, 9 minutes) and ``srcnn-x4`` (2,000 steps, 4.5
minutes), so ``benchmarks/single_frame.py`` compares them by default. To
compare your own run::

    python benchmarks/single_frame.py --models runs/srcnn-x4 runs/vdsr-x4 --no-shipped

Usage::

    python benchmarks/train_baselines.py --steps 2000 --out runs
"""

import argparse
import sys
from pathlib import Path

from astrosr.training import Degradation, train

BASELINES = {"srcnn": {"filters": (32, 16)}, "vdsr": {"depth": 8, "filters": 32}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--out", default="runs", help="folder for NAME-x4.* and checkpoints")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, options in BASELINES.items():
        model = train(name, steps=args.steps, batch_size=16, patch=24, scale=4,
                      model_options=options, learning_rate=5e-4, lr_schedule="cosine",
                      n_synthetic=16, degradation=Degradation.legacy(psf_sigma=(0.9, 1.6),
                                                                     moffat_fraction=0.0),
                      loss_weights={"linear": 1.0}, seed=7,
                      checkpoint_dir=out / f"{name}-x4.ckpt", checkpoint_every=500,
                      steps_per_epoch=250, threads=args.threads,
                      command="python benchmarks/train_baselines.py " + " ".join(sys.argv[1:]))
        model.card["name"] = f"{name}-x4"
        model.save(out / f"{name}-x4", overwrite=True)
        print(f"wrote {out / name}-x4.weights.h5 and .json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
