"""Train a ``finegrid-x4`` model: the fine-grid SRGAN generator, pixel stage then adversarial stage.

The network is `astrosr.models.build_finegrid` (a cheap coarse trunk, then
residual blocks on the fine grid that see the bicubic upsampling). Truths:
the Hubble Deep Field (scikit-image) and synthetic skies of every class of
`astrosr.training.SYNTHETIC_CLASSES` (survey, crowded field, filamentary
nebula, spiral galaxy), never the images in ``shared/data`` (the benchmarks'
test images); one whole image of each class is held out for validation
(`astrosr.training.data.split_validation` with the images' labels), so
validation never sees a crop of a training image. Pairs are observed through
``astrosr.simulate`` with the default `astrosr.training.Degradation`
(Gaussian or Moffat PSFs of FWHM 1-4 input pixels, sky 0.3-1e4 e-, read
noise 1-12 e-, fresh noise every batch).

Stage 1 (``pixel``): L1 on the asinh scale + L1 of block fluxes on the
linear scale. Stage 2 (``gan``), from the stage-1 result: discriminator
feature matching (or VGG19 features with ``--vgg19``, a local file) +
1e-3 x the adversarial loss + 0.1 x the stage-1 pixel loss, with the
discriminator held back in three ways: the R1 gradient penalty (gamma
``--r1``; Mescheder et al. 2018), a learning rate ``--d-lr-ratio`` times the
generator's, and one-sided label smoothing 0.1.

Every piece of work is checkpointed: ``<out>.pixel.ckpt`` and
``<out>.gan.ckpt`` hold the checkpoints, ``<out>-pixel.*`` the stage-1
model. ``--minutes`` caps the training time of one invocation (default 9,
for a 10-minute GPU slot: start-up and data generation come on top, about a
minute; stage 2 starts only with at least a minute left); run the same
command again and it continues where it stopped (network, optimisers and
random state are in the checkpoints). It exits with status 75 while work
remains and 0 once ``<out>.weights.h5`` and ``<out>.json`` are written::

    until python examples/train_finegrid_x4.py --out runs/finegrid-x4; do
        [ $? -eq 75 ] || break
    done

A tiny run end to end (CPU, seconds)::

    python examples/train_finegrid_x4.py --pixel-steps 4 --gan-steps 4 --batch 2 --patch 16 \\
        --synthetic 8 --tiny --out /tmp/fg-tiny
"""

import argparse
import sys
import time
from pathlib import Path

from astrosr.models import SRModel
from astrosr.training import Degradation, train

#: Network sizes of the recipe, and the tiny ones of ``--tiny`` (a smoke test).
SIZES = {"coarse_blocks": 3, "coarse_filters": 32, "fine_blocks": 1, "fine_filters": 8}
TINY = {"coarse_blocks": 1, "coarse_filters": 8, "fine_blocks": 1, "fine_filters": 4}
#: Exit status while steps remain (EX_TEMPFAIL: run the same command again).
NOT_DONE = 75
#: Seconds of the budget that stage 2 needs left to start (its set-up and first trace).
GAN_START_S = 60.0


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--out", default="runs/finegrid-x4", help="output stem (and checkpoint prefix)")
    add("--pixel-steps", type=int, default=20000, help="steps of stage 1 (pixel losses)")
    add("--gan-steps", type=int, default=10000, help="steps of stage 2 (adversarial)")
    add("--minutes", type=float, default=9.0, help="training minutes of this invocation")
    add("--batch", type=int, default=32, help="pairs per step")
    add("--patch", type=int, default=32, help="side of the coarse patches")
    add("--synthetic", type=int, default=16, help="synthetic skies (classes in turn)")
    add("--lr", type=float, default=5e-4, help="stage-1 learning rate (stage 2: a fifth)")
    add("--r1", type=float, default=1.0, help="gamma of the R1 penalty (0: off)")
    add("--d-lr-ratio", type=float, default=0.5, help="discriminator / generator learning rate")
    add("--vgg19", help="local VGG19 weights file (no top) for the content loss")
    add("--threads", type=int, help="TensorFlow CPU threads (default: all)")
    add("--tiny", action="store_true", help="tiny networks (a smoke test of the recipe)")
    return parser.parse_args(argv)


def common_options(args, deadline):
    """Options shared by both stages; ``max_minutes`` is what is left of this invocation."""
    left = max((deadline - time.monotonic()) / 60.0, 1e-3)
    return dict(batch_size=args.batch, patch=args.patch, n_synthetic=args.synthetic,
                include_hdf=True, degradation=Degradation(), lr_schedule="cosine",
                max_minutes=left, n_val=32, steps_per_epoch=250,
                checkpoint_every=500,
                command="python examples/train_finegrid_x4.py " + " ".join(sys.argv[1:]))


def stage_pixel(args, deadline):
    """The stage-1 model: loaded if saved, else trained (possibly only in part: None)."""
    stem = Path(f"{args.out}-pixel")
    if stem.with_suffix(".json").is_file():
        return SRModel.load(stem)
    sizes = TINY if args.tiny else SIZES
    model = train("finegrid", stage="pixel", steps=args.pixel_steps, scale=4, model_options=sizes,
                  learning_rate=args.lr, loss_weights={"linear": 1.0}, seed=11,
                  checkpoint_dir=f"{args.out}.pixel.ckpt", **common_options(args, deadline))
    if model.card["training"]["steps"] < args.pixel_steps:
        return None
    model.save(stem, overwrite=True)
    return model


def stage_gan(args, start, deadline):
    """Stage 2 from ``start``; True once it has run all its steps (and the model is saved)."""
    model = train(start, stage="gan", steps=args.gan_steps, learning_rate=args.lr / 5,
                  loss_weights={"pixel": 0.1, "linear": 1.0, "label_smoothing": 0.1,
                                "r1": args.r1},
                  d_lr_ratio=args.d_lr_ratio, vgg19_weights=args.vgg19, seed=12,
                  checkpoint_dir=f"{args.out}.gan.ckpt", **common_options(args, deadline))
    if model.card["training"]["steps"] < args.gan_steps:
        return False
    model.card["name"] = Path(args.out).name
    model.save(args.out, overwrite=True)
    return True


def set_threads(n):
    """TensorFlow's CPU threads, set once before anything starts it (both stages use them)."""
    if n:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)


def main(argv=None):
    args = parse(argv)
    set_threads(args.threads)
    if Path(f"{args.out}.json").is_file():
        print(f"{args.out}.json exists: nothing to do")
        return 0
    deadline = time.monotonic() + 60.0 * args.minutes
    start = stage_pixel(args, deadline)
    if (start is not None and deadline - time.monotonic() > min(GAN_START_S, 60 * args.minutes)
            and stage_gan(args, start, deadline)):
        print(f"wrote {args.out}.weights.h5 and {args.out}.json")
        return 0
    print(f"stopped after {args.minutes:g} minutes with steps left: run the same command again "
          "to continue from the checkpoints")
    return NOT_DONE


if __name__ == "__main__":
    sys.exit(main())
