"""The ``astrosr`` command (also ``python -m astrosr``).

Subcommands so far: ``demo`` (simulate a dithered stack of the Hubble Deep
Field and register it), ``register`` (shifts of a stack of FITS frames) and
``info`` (versions). Fusion, enhancement and the pipeline join them as they land.
"""

import argparse
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
    info = sub.add_parser("info", help="versions of astrosr and its dependencies")
    info.set_defaults(func=_info)
    return parser


def main(argv=None):
    """Entry point of the ``astrosr`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"astrosr {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
