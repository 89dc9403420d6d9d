"""The ``astrosr`` command (also ``python -m astrosr``).

Subcommands so far: ``demo`` (simulate a dithered stack of the Hubble Deep
Field and register it), ``register`` (shifts of a stack of FITS frames),
``train`` (train a super-resolution network, needs the ``gan`` extra) and
``info`` (versions). Fusion, enhancement and the pipeline join them as they land.
"""

import argparse
import os
import shlex
import sys
import time

import numpy as np

__all__ = ["main"]


def _demo(args):
    from . import psf as psf_models
    from . import register_stack, simulate
    from ._data import hubble_deep_field

    truth = hubble_deep_field(size=args.size)
    stack = simulate.observe(truth, n_frames=args.frames, scale=4, psf=psf_models.GaussianPSF(1.2),
                             sky=100.0, read_noise=5.0, seed=args.seed)
    print(f"Simulated {len(stack)} frames of {stack.frames[0].shape[1]}x{stack.frames[0].shape[0]} "
          "pixels (Hubble Deep Field truth, scale 4, Gaussian PSF sigma 1.2 px).")
    start = time.perf_counter()
    table = register_stack(stack.frames)
    elapsed = time.perf_counter() - start
    true = np.column_stack([stack.shifts["dx"].value, stack.shifts["dy"].value])
    est = np.column_stack([table["dx"].value, table["dy"].value])
    err = np.column_stack([table["dx_err"].value, table["dy_err"].value])
    print(f"{'frame':>5} {'dx true':>9} {'dx est':>9} {'dy true':>9} {'dy est':>9} {'error':>7}")
    for i in range(len(table)):
        print(f"{i:5d} {true[i, 0]:9.4f} {est[i, 0]:9.4f} {true[i, 1]:9.4f} {est[i, 1]:9.4f} "
              f"{err[i, 0]:7.4f}")
    rms = np.sqrt(np.mean((est[1:] - true[1:]) ** 2))
    print(f"RMS error {rms:.4f} px, median stated error {np.median(err[1:]):.4f} px, "
          f"{1000 * elapsed / len(table):.0f} ms per frame.")
    return 0


def _register(args):
    from . import register_stack

    table = register_stack(args.frames, reference=args.reference, hdu=args.hdu)
    for col in ("dx", "dy", "dx_err", "dy_err", "flux_ratio", "chi2"):
        table[col].info.format = ".5f"
    if args.output:
        table.write(args.output, overwrite=args.overwrite)
    else:
        table.pprint_all()
    return 0


def _train(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    try:
        import keras  # noqa: F401
    except ImportError:
        raise ImportError("training needs TensorFlow and Keras 3: "
                          "pip install 'astrosr-gan[gan]'") from None
    from .models import SRModel
    from .models.model import _paths
    from .training import train

    model, options = _train_model(args, SRModel)
    scale = model.scale if isinstance(model, SRModel) else args.scale or 4
    out = _paths(args.out or f"{args.model}-x{scale}")
    for p in out:  # before training, not after hours of it
        if p.exists() and not args.overwrite:
            raise FileExistsError(f"{p} exists: pass --overwrite to replace it")
    weights = {} if args.consistency is None else {"consistency": args.consistency}
    result = train(
        model, stage="gan" if args.model == "srgan" else "pixel", steps=args.steps,
        batch_size=args.batch, patch=args.patch, scale=args.scale or 4, model_options=options,
        learning_rate=args.lr, lr_schedule=args.lr_schedule, paths=args.data or None,
        include_hdf=not args.no_hdf, n_synthetic=args.synthetic, loss_weights=weights,
        vgg19_weights=args.vgg19_weights, seed=args.seed, checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every, resume=args.resume, csv=args.csv,
        steps_per_epoch=args.epoch_steps, n_val=args.val, threads=args.threads,
        progress=not args.quiet, command=shlex.join(["astrosr", *args.argv]))
    weights_path, card_path = result.save(out[0], overwrite=args.overwrite)
    t, m = result.card["training"], result.card["metrics"]
    print(f"Wrote {weights_path} and {card_path}: {t['steps']} steps in {t['wall_time_s']:.1f} s; "
          f"validation PSNR (asinh scale) {m['val_psnr']:.2f} dB, bicubic "
          f"{m['val_psnr_bicubic']:.2f} dB.")
    return 0


def _train_model(args, SRModel):
    """The model to train (``--init``: a saved one) and the builder options for a new one."""
    given = {k: v for k, v in (("--blocks", args.blocks), ("--filters", args.filters),
                               ("--scale", args.scale)) if v is not None}
    if args.init:
        if given:
            raise ValueError(f"{', '.join(given)} cannot be combined with --init (the "
                             "architecture comes from the initial model's card)")
        return SRModel.load(args.init), None
    options = {}
    if args.filters is not None:
        f = args.filters
        options["filters"] = (2 * f, f) if args.model == "srcnn" else f
    if args.blocks is not None:
        if args.model == "srcnn":
            raise ValueError("--blocks does not apply to srcnn (three layers)")
        options["depth" if args.model == "vdsr" else "n_blocks"] = args.blocks
    return args.model, options


def _info(args):
    import astropy
    import scipy

    from . import __version__

    print(f"astrosr {__version__}")
    for name, mod in (("numpy", np), ("scipy", scipy), ("astropy", astropy)):
        print(f"  {name} {mod.__version__}")
    return 0


def _parser():
    parser = argparse.ArgumentParser(prog="astrosr", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="simulate and register a dithered stack (no data needed)",
                          epilog="example: astrosr demo --frames 16 --seed 1")
    demo.add_argument("--frames", type=int, default=16, help="frames in the stack (default 16)")
    demo.add_argument("--size", type=int, default=512, help="truth size in fine pixels (default 512)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(func=_demo)
    reg = sub.add_parser("register", help="sub-pixel shifts of a stack of FITS frames",
                         epilog="example: astrosr register frame*.fits -o shifts.ecsv")
    reg.add_argument("frames", nargs="+", help="FITS files (the first is the reference)")
    reg.add_argument("--reference", type=int, default=0, help="index of the reference frame")
    reg.add_argument("--hdu", default=None, help="HDU to read (default: the first image HDU)")
    reg.add_argument("-o", "--output", help="write the table (ECSV, FITS...) instead of printing")
    reg.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    reg.set_defaults(func=_register)
    _train_parser(sub)
    info = sub.add_parser("info", help="versions of astrosr and its dependencies")
    info.set_defaults(func=_info)
    return parser


def _train_parser(sub):
    tr = sub.add_parser(
        "train", help="train a super-resolution network (needs astrosr-gan[gan])",
        description="Train on truths from FITS files, the Hubble Deep Field and synthetic skies, "
                    "observed through astrosr's observation model; writes NAME.weights.h5 and "
                    "the model card NAME.json.",
        epilog="example: astrosr train --model srresnet --steps 100000 --checkpoint-dir ckpt "
               "--out srresnet-x4; then astrosr train --model srgan --init srresnet-x4 "
               "--steps 100000 --checkpoint-dir ckpt-gan --out srgan-x4")
    tr.add_argument("--model", choices=["srresnet", "srgan", "srcnn", "vdsr"], default="srresnet",
                    help="srresnet: generator, pixel losses (stage 1); srgan: generator, "
                         "adversarial losses (stage 2, start it with --init); srcnn, vdsr: "
                         "baselines (default srresnet)")
    tr.add_argument("--init", metavar="MODEL",
                    help="start from a saved model (stem of MODEL.weights.h5 + MODEL.json)")
    tr.add_argument("--scale", type=int, choices=[1, 2, 4], help="upsampling factor (default 4)")
    tr.add_argument("--blocks", type=int, help="residual blocks (srresnet/srgan; default 8) or "
                                               "layers (vdsr; default 10)")
    tr.add_argument("--filters", type=int, help="feature channels (default 32)")
    tr.add_argument("--steps", type=int, default=1000, help="total training steps (default 1000)")
    tr.add_argument("--batch", type=int, default=16, help="pairs per step (default 16)")
    tr.add_argument("--patch", type=int, default=24, help="coarse patch side (default 24)")
    tr.add_argument("--lr", type=float, default=1e-4, help="initial learning rate (default 1e-4)")
    tr.add_argument("--lr-schedule", choices=["cosine", "step", "constant"], default="cosine",
                    help="learning-rate decay over the steps (default cosine)")
    tr.add_argument("--data", nargs="+", metavar="PATH", help="FITS files or directories of them")
    tr.add_argument("--no-hdf", action="store_true", help="leave out the Hubble Deep Field")
    tr.add_argument("--synthetic", type=int, default=8, help="synthetic skies (default 8)")
    tr.add_argument("--consistency", type=float, metavar="WEIGHT",
                    help="weight of the consistency (chi-square) term (default 0: off)")
    tr.add_argument("--vgg19-weights", metavar="FILE",
                    help="local Keras VGG19 weights (no top) for the srgan content loss; "
                         "default: discriminator feature matching")
    tr.add_argument("--checkpoint-dir", metavar="DIR", help="checkpoints (and metrics.csv) here")
    tr.add_argument("--checkpoint-every", type=int, default=500,
                    help="steps between checkpoints (default 500)")
    tr.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                    help="continue from the latest checkpoint in --checkpoint-dir (default yes)")
    tr.add_argument("--csv", help="metrics file (default DIR/metrics.csv with --checkpoint-dir)")
    tr.add_argument("--epoch-steps", type=int, default=100,
                    help="steps between metrics rows and validations (default 100)")
    tr.add_argument("--val", type=int, default=32, help="validation pairs (default 32)")
    tr.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    tr.add_argument("--threads", type=int, help="TensorFlow threads (default: all cores)")
    tr.add_argument("--out", metavar="NAME",
                    help="output stem: NAME.weights.h5 and NAME.json (default MODEL-xSCALE)")
    tr.add_argument("--overwrite", action="store_true", help="replace existing output files")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=_train)


def main(argv=None):
    """Entry point of the ``astrosr`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError, ImportError) as exc:
        print(f"astrosr {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
