"""The ``astrosr`` command (also ``python -m astrosr``).

Subcommands: ``demo`` (the whole pipeline on a simulated stack of the Hubble
Deep Field, with a figure), ``register`` (shifts of a stack of FITS frames),
``stack`` (register and fuse), ``enhance`` (one image, x4, by a network held
to the data), ``pipeline`` (register, fuse, refine), ``train`` (train a
network; needs the ``gan`` extra), ``evaluate`` (metrics against a truth
image), ``batch`` (the pipeline on many stacks in parallel, on
dask.distributed; needs the ``dask`` extra) and ``info`` (versions and
shipped models).

Everything is checked before the heavy work starts: the output path, the
options (``--scale``, ``--psf``...), the frames, and the memory the run needs
(`astrosr.resources.check_memory`).

Exit status:

- 0 success;
- 2 bad input or usage (a missing file, a non-image HDU, frames of two
  sizes, a malformed ``--psf``, ``--scale 0``...), or not enough memory (the
  estimate exceeds what is available, or an allocation failed);
- 3 the output exists (pass ``--overwrite``);
- 4 an optional dependency is missing;
- 5 the result does not reproduce its input within the noise (its reduced
  chi-square ``CHI2RED`` is above the bound ``CHI2MAX``, ``CHI2OK`` false):
  nothing is written unless ``--allow-misfit``, which writes it and exits 0;
  ``batch``: no stack failed but one or more results misfit (those are not
  written);
- 6 ``batch``: one or more stacks failed (each is reported on its own line;
  the others are written);
- 143 terminated by SIGTERM; no output is left.

Errors are one line on stderr, and no output file is left behind by a failed
run.
"""

import argparse
import contextlib
import os
import shlex
import sys
import warnings
from pathlib import Path

import numpy as np
from astropy.units import UnitsError
from astropy.utils.exceptions import AstropyUserWarning

from .misfit import MisfitWarning, fit_passed, recorded_number

__all__ = ["main", "EXIT_MISFIT", "EXIT_STACK_FAILED"]

#: Exit status of a result that does not fit its input (see the module notes).
EXIT_MISFIT = 5
#: Exit status of ``astrosr batch`` when one or more of its stacks failed.
EXIT_STACK_FAILED = 6
#: `astrosr enhance` writes an output of more fine pixels than this band by band, as it is
#: made (`astrosr.enhance` with ``output=``): its memory stays bounded whatever the size.
STREAM_PIXELS = 2 ** 26

#: What ``--psf`` accepts, for the messages.
PSF_FORMS = ("estimate, gaussian:SIGMA, moffat:FWHM[,BETA] (SIGMA, FWHM in input pixels) "
             "or a PSF FITS file (sampled on the output grid)")


def _demo(args):
    from ._demo import run_demo

    run_demo(args.out, size=args.size, n_frames=args.frames, seed=args.seed,
             overwrite=args.overwrite, say=_say(args))
    return 0


def _say(args):
    """print, or nothing with --quiet."""
    return (lambda *a, **k: None) if getattr(args, "quiet", False) else print


def _check_output(path, overwrite):
    """Refuse before any work: an existing file without --overwrite, or a missing folder."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists: pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} does not exist")
    return path


def _psf_arg(text):
    """``--psf``: "estimate", gaussian:SIGMA, moffat:FWHM[,BETA] (input pixels) or a FITS file.

    Checked before any work: an unknown kind, wrong parameters or a file that
    does not exist raise ValueError naming what is accepted.
    """
    from . import psf as psf_models

    if text is None or text == "estimate":
        return text
    kind, colon, params = text.partition(":")
    if kind in ("gaussian", "moffat"):
        try:
            values = [float(v) for v in params.split(",")] if params else []
        except ValueError:
            values = []
        counts = (1,) if kind == "gaussian" else (1, 2)
        if len(values) not in counts:
            raise ValueError(f"--psf {text}: {kind} takes "
                             f"{'SIGMA' if kind == 'gaussian' else 'FWHM[,BETA]'} (numbers); "
                             f"--psf accepts {PSF_FORMS}")
        model = psf_models.GaussianPSF if kind == "gaussian" else psf_models.MoffatPSF
        try:
            return model(*values)
        except ValueError as exc:
            raise ValueError(f"--psf {text}: {exc}") from None
    if Path(text).is_file():
        return text  # a FITS file, read by the pipeline
    file_like = text.lower().endswith((".fits", ".fit", ".fts", ".fits.gz")) or os.sep in text
    what = (f"{kind!r} is not a PSF kind" if colon and not file_like
            else f"no such PSF file {text!r}")
    raise ValueError(f"--psf {text}: {what}; --psf accepts {PSF_FORMS}")


def _positive_int(text):
    """argparse type: an integer >= 1 (``--scale``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _tile_int(text):
    """argparse type: a tile side, an integer >= 8."""
    value = _positive_int(text)
    if value < 8:
        raise argparse.ArgumentTypeError(f"must be at least 8, got {value}")
    return value


def _pixfrac(text):
    """argparse type: drizzle's drop size, in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def _warn(args, text):
    """A one-line warning on stderr (shown with --quiet too)."""
    print(f"astrosr {args.command}: warning: {text}", file=sys.stderr)


def _single_frame(args, frames, scale):
    if len(frames) == 1:
        _warn(args, f"1 frame: nothing is stacked; the output is that frame resampled onto a "
                    f"grid {scale}x finer, with no information it does not have (give several "
                    "dithered frames, or use 'astrosr enhance' on one image)")


def _check_memory(frames, **options):
    """Refuse, before registering, a run that cannot fit in memory (MemoryError: exit 2)."""
    from .resources import check_memory

    check_memory(frames[0].shape, advice=_MEMORY_ADVICE, **options)


_MEMORY_ADVICE = "use a smaller --scale, fewer frames or a smaller --tile (or a cut-out)"


@contextlib.contextmanager
def _misfits_caught(args):
    """Collect the library's MisfitWarning texts (the command reports them its own way).

    Other `AstropyUserWarning` (e.g. astrosr's "1 frame: nothing is stacked")
    are shown as one line each; other warnings as usual, when they happen.
    """
    caught = []
    with warnings.catch_warnings():
        warnings.simplefilter("always", MisfitWarning)
        show = warnings.showwarning

        def showwarning(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, MisfitWarning):
                caught.append(str(message))
            elif issubclass(category, AstropyUserWarning):
                _warn(args, str(message))
            else:
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = showwarning
        yield caught


#: What to change when a command's result misfits, if the library gave no hint.
_MISFIT_HINTS = {
    "stack": "the PSF or the shifts are probably wrong: give --psf, or check the registration "
             "(astrosr register)",
    "enhance": "give the image's PSF (--psf), or use --consistency pixel",
    "pipeline": "the PSF or the shifts are probably wrong: give --psf, or check the "
                "registration (astrosr register)",
}


def _deliver(args, result, out, caught, summary, written=None):
    """Write ``result`` unless it misfits its input (then exit 5, or write with --allow-misfit).

    ``written``: the file ``result`` was already written to, named ``out`` here
    (or removed, when it misfits).
    """
    from .nddata import write_fits

    if not fit_passed(result.meta):
        text = _misfit_message(args.command, result.meta, caught)
        if not args.allow_misfit:
            print(f"astrosr {args.command}: error: {text}; pass --allow-misfit to write it "
                  "anyway", file=sys.stderr)
            if written is not None:
                written.unlink()
            return EXIT_MISFIT
        _warn(args, f"{text}; written anyway (--allow-misfit)")
    else:
        for text in dict.fromkeys(caught):  # an intermediate step's, once each
            _warn(args, text)
    if written is None:
        write_fits(result, out, overwrite=args.overwrite)
    elif args.overwrite:
        os.replace(written, out)
    else:  # never over a file that appeared meanwhile
        os.link(written, out)
        written.unlink()
    _say(args)(summary)
    return 0


def _misfit_message(command, meta, caught):
    """One line: the figure, the bound, what it means and the library's hint."""
    chi2, bound = recorded_number(meta, "CHI2RED"), recorded_number(meta, "CHI2MAX")
    hint = _MISFIT_HINTS[command]
    if caught and "; " in caught[-1]:
        hint = caught[-1].split("; ", 1)[1]
    figure = f"reduced chi-square {chi2:.3g}" if chi2 is not None else "reduced chi-square"
    if bound is not None:
        figure += f" > bound {bound:g}"
    return (f"{figure}: the result does not reproduce the input within its noise; "
            f"{hint.rstrip('. ')}")



def _given_geometry(args):
    """``--geometry`` (or its older name ``--shifts``): a table path, ``"wcs"``, or None."""
    if args.geometry and args.shifts:
        raise ValueError("give --geometry or --shifts, not both (--shifts is its older name)")
    return args.geometry or args.shifts


def _geometry(args, frames):
    """The frames' geometry: ``wcs``, a table read from file, or registered now."""
    from astropy.table import QTable

    from . import register_stack

    given = _given_geometry(args)
    if given == "wcs":
        return "wcs"
    if given:
        return QTable.read(given)
    return register_stack(frames, reference=args.reference, progress=not args.quiet)


def _output_grid(args):
    """``--output-wcs FILE``: ``output_wcs`` and ``shape_out`` from a FITS image or a text header.

    The first HDU with a celestial WCS gives both, its shape from ``NAXIS1``
    and ``NAXIS2``; a text header (as ``fits.Header.totextfile`` writes) works too.
    """
    if not args.output_wcs:
        return {}
    import warnings

    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    try:
        with fits.open(args.output_wcs) as hdul:
            headers = [h.header for h in hdul]
    except OSError:
        headers = [fits.Header.fromtextfile(args.output_wcs)]
    for header in headers:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header)
        shape = (header.get("NAXIS2"), header.get("NAXIS1"))
        if wcs.has_celestial and None not in shape and min(shape) > 0:
            return {"output_wcs": wcs.celestial, "shape_out": shape}
    raise ValueError(f"--output-wcs {args.output_wcs}: no header with a celestial WCS and "
                     "NAXIS1, NAXIS2 (give a FITS image on the output grid, or its header)")


#: ``--reject`` to `astrosr.fuse`'s ``reject``.
REJECT = {"auto": "auto", "on": True, "off": False}


def _chi2_text(meta):
    value = recorded_number(meta, "CHI2RED")
    return "" if value is None else f", chi2_red {value:.3f}"


def _psf_options(args, psf):
    """``--psf-snr`` and ``--fwhm-guess`` as options of the PSF estimate (refused with a given PSF)."""
    options = {k: v for k, v in (("snr", args.psf_snr), ("fwhm_guess", args.fwhm_guess))
               if v is not None}
    if options and psf not in (None, "estimate"):
        raise ValueError("--psf-snr and --fwhm-guess tune the PSF estimate: drop them, or "
                         "drop --psf")
    return options


def _stack(args):
    from . import fuse
    from .nddata import add_history
    from .psf import stack_psf

    out = _check_output(args.output, args.overwrite)
    psf = _psf_arg(args.psf)
    psf_options = _psf_options(args, psf)
    say = _say(args)
    frames, calibration = _calibrated(args, say)
    _single_frame(args, frames, args.scale)
    _check_memory(frames, n_frames=len(frames), scale=args.scale, method=args.method)
    with _misfits_caught(args) as caught:
        if not _given_geometry(args):
            say(f"[astrosr] registering {len(frames)} frames...")
        shifts = _geometry(args, frames)
        if psf == "estimate" or (psf is None and args.method == "reconstruct"):
            say("[astrosr] estimating the PSF from the stars of the stack...")
            psf, how = stack_psf(frames, shifts, scale=args.scale, **psf_options)
            say(f"[astrosr] PSF: {how}")
        say(f"[astrosr] fusing ({args.method}, scale {args.scale})...")
        options = dict(scale=args.scale, method=args.method, pixfrac=args.pixfrac, psf=psf,
                       reject=REJECT[args.reject], **_output_grid(args))
        result = fuse(frames, shifts, progress=not args.quiet, **options)
    if calibration:
        add_history(result.meta, calibration)
    return _deliver(args, result, out, caught, f"Wrote {out} ({result.shape[1]}x"
                    f"{result.shape[0]}, {args.method}{_chi2_text(result.meta)})")


def _model_scale(model):
    """Upsampling factor of a model from its card (JSON: no TensorFlow), 4 if unknown."""
    import json

    name = str(model)
    for suffix in (".weights.h5", ".json"):
        name = name[:-len(suffix)] if name.endswith(suffix) else name
    for card in (Path(__file__).parent / "data" / f"{name}.json", Path(f"{name}.json")):
        try:
            return int(json.loads(card.read_text())["architecture"]["scale"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return 4


def _enhance(args):
    from . import enhance
    from .inference import DEFAULT_OVERLAP
    from .nddata import as_frames

    out = _check_output(args.output, args.overwrite)
    psf = _psf_arg(args.psf)
    psf = None if psf == "estimate" else psf  # enhance fits the image's stars by default
    psf_options = _psf_options(args, psf)
    (ccd,) = as_frames([_one_image(args.image, "enhance")], hdu=args.hdu)
    scale = _model_scale(args.model)
    streamed = scale ** 2 * ccd.data.size > STREAM_PIXELS
    if not streamed:
        _check_memory([ccd], scale=scale, method="enhance", ensemble=args.ensemble,
                      tile=args.tile, overlap=DEFAULT_OVERLAP)
    consistency = None if args.consistency == "none" else args.consistency
    _say(args)(f"[astrosr] enhancing {args.image} with {args.model}"
               f"{' (written band by band)' if streamed else ''}...")
    _quiet_tensorflow()
    # A large output is written as it is made, under a hidden name, and named
    # (or removed, when it misfits) at the end.
    partial = out.with_name(f".{out.name}.partial") if streamed else None
    with _misfits_caught(args) as caught:
        options = dict(model=args.model, psf=psf, consistency=consistency, tile=args.tile,
                       ensemble=args.ensemble, stop=args.stop, psf_options=psf_options)
        result = enhance(ccd, progress=not args.quiet, output=partial, overwrite=True, **options)
    return _deliver(args, result, out, caught, f"Wrote {out} ({result.shape[1]}x"
                    f"{result.shape[0]}){_chi2_text(result.meta)}", written=partial)


def _one_image(path, what):
    """``path``, refused when it is a folder (frames may be folders; these take one image)."""
    if Path(path).is_dir():
        raise ValueError(f"{path} is a folder: {what} takes one FITS image")
    return path


def _quiet_tensorflow():
    from .progress import quiet_tensorflow

    quiet_tensorflow()


def _pipeline(args):
    from .pipeline import MultiFrameSR
    from .stack import FrameStack

    out = _check_output(args.output, args.overwrite)
    options = _pipeline_options(args)
    frames = FrameStack(args.frames, hdu=args.hdu)  # one frame: MultiFrameSR warns
    refine = options["refine"]
    _check_memory(frames, n_frames=len(frames), scale=args.scale, method="pipeline",
                  ensemble=args.ensemble, tile=args.tile, refine=refine is not None)
    if refine is not None:
        _quiet_tensorflow()
    with _misfits_caught(args) as caught:
        geometry = _geometry(args, frames) if _given_geometry(args) else None
        sr = MultiFrameSR(progress=not args.quiet, **options)
        result = sr.run(frames, geometry)
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in sr.timings_.items())
    return _deliver(args, result, out, caught, f"Wrote {out} ({result.shape[1]}x"
                    f"{result.shape[0]}){_chi2_text(result.meta)}; {timings}")


def _pipeline_options(args):
    """The options of `astrosr.MultiFrameSR` from those of ``pipeline`` and ``batch``."""
    psf = _psf_arg(args.psf)
    return dict(scale=args.scale, fusion=args.fusion,
                refine=None if args.refine == "none" else args.refine, psf=psf,
                reference=args.reference, ensemble=args.ensemble, tile=args.tile,
                folds=args.folds,
                consistency=None if args.consistency == "none" else args.consistency,
                psf_options=_psf_options(args, psf), bias=args.bias, dark=args.dark,
                flat=args.flat, calibrate=args.calibrate, **_output_grid(args))


def _batch(args):
    from .parallel import process_stacks, stack_names

    for stack in args.stacks:  # all checked before a cluster starts
        if not Path(stack).is_dir() and not args.scheduler:  # remote workers may see others
            raise FileNotFoundError(f"{stack} is not a folder: each STACK is a folder of the "
                                    "FITS frames of one stack")
    for name in stack_names(args.stacks, files=True):
        out = Path(args.output_dir) / f"{name}.fits"
        if out.exists() and not args.overwrite:
            raise FileExistsError(f"{out} exists: pass --overwrite to replace it")
    options = _pipeline_options(args)  # the workers read the frames: --hdu goes with them
    say = _say(args)
    where = args.scheduler or "a local cluster"
    n = len(args.stacks)
    say(f"[astrosr] {n} stack{'s' * (n > 1)} on {where}, results in {args.output_dir}")
    records = process_stacks(list(args.stacks), client=args.scheduler, workers=args.workers,
                             output_dir=args.output_dir, overwrite=args.overwrite,
                             progress=not args.quiet, allow_misfit=args.allow_misfit,
                             hdu=args.hdu, **options)
    for record in records:
        for text in record.warnings:
            if not text.startswith("MisfitWarning") or record.ok:
                _warn(args, f"{record.name}: {text.split(': ', 1)[-1]}")
        if record.ok:
            say(record.summary())
        else:
            print(record.summary(), file=sys.stderr if args.quiet else sys.stdout)
    failed = [r for r in records if not r.ok and r.error_type != "MisfitWarning"]
    misfits = [r for r in records if not r.ok and r.error_type == "MisfitWarning"]
    written = len(records) - len(failed) - len(misfits)
    say(f"[astrosr] {written} of {len(records)} stacks written to {args.output_dir}")
    if failed:
        return EXIT_STACK_FAILED
    return EXIT_MISFIT if misfits else 0


def _evaluate(args):
    import json

    from . import metrics
    from .nddata import as_frames

    (image,) = as_frames([_one_image(args.image, "evaluate")], hdu=args.hdu)
    (truth,) = as_frames([_one_image(args.truth, "evaluate --truth")], hdu=args.truth_hdu)
    if image.shape != truth.shape:
        raise ValueError(f"image {image.shape} and truth {truth.shape} must be on the same grid")
    est, ref = np.nan_to_num(np.asarray(image.data, float)), np.asarray(truth.data, float)
    stars = metrics.isolated_stars(ref, radius=args.radius)
    result = {"psnr_db": metrics.psnr(est, ref, margin=args.margin),
              "ssim": metrics.ssim(est, ref, margin=args.margin),
              "flux_ratio": metrics.flux_ratio(est, ref, margin=args.margin),
              "n_stars": len(stars),
              "photometric_error": metrics.photometric_error(est, ref, stars, radius=args.radius),
              "fwhm_px": metrics.fwhm(est, stars) if len(stars) else float("nan"),
              "fwhm_truth_px": metrics.fwhm(ref, stars) if len(stars) else float("nan")}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:<18} {v:.4f}" if isinstance(v, float) else f"{k:<18} {v}")
    return 0


def _register(args):
    from . import register_stack
    from .files import replacing

    out = _check_output(args.output, args.overwrite) if args.output else None
    table = register_stack(args.frames, reference=args.reference, hdu=args.hdu,
                           progress=not args.quiet)
    for col in ("dx", "dy", "dx_err", "dy_err", "flux_ratio", "chi2"):
        table[col].info.format = ".5f"
    if out is None:
        table.pprint_all()
        return 0
    with replacing(out, overwrite=args.overwrite) as tmp:  # no partial file on failure
        table.write(tmp, format=_table_format(out), overwrite=True)
    return 0


def _table_format(path):
    """astropy's format name for a table file's suffix (ECSV unless FITS, CSV, ...)."""
    suffix = path.suffix.lower()
    return {".fits": "fits", ".fit": "fits", ".csv": "ascii.csv", ".txt": "ascii.fixed_width",
            ".dat": "ascii.fixed_width", ".html": "html", ".tex": "latex"}.get(suffix, "ascii.ecsv")


def _train(args):
    _quiet_tensorflow()  # TensorFlow's start-up chatter
    try:
        import keras  # noqa: F401
    except ImportError:
        raise ImportError("training needs TensorFlow and Keras 3: "
                          "pip install 'astrosr-gan[gan]'") from None
    from .models import SRModel
    from .models.model import model_paths
    from .training import train

    model, options = _train_model(args, SRModel)
    scale = model.scale if isinstance(model, SRModel) else args.scale or 4
    out = model_paths(args.out or f"{args.model}-x{scale}")
    for p in out:  # before training, not after hours of it
        if p.exists() and not args.overwrite:
            raise FileExistsError(f"{p} exists: pass --overwrite to replace it")
    weights = {} if args.consistency is None else {"consistency": args.consistency}
    if args.label_smoothing is not None:
        weights["label_smoothing"] = args.label_smoothing
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


#: The builder option that ``--blocks`` sets, where it is not ``n_blocks``.
_BLOCKS_OPTION = {"vdsr": "depth", "finegrid": "coarse_blocks"}


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
        options[_BLOCKS_OPTION.get(args.model, "n_blocks")] = args.blocks
    if args.model == "finegrid" and "filters" in options:
        options["coarse_filters"] = options.pop("filters")
    return args.model, options


def _info(args):
    import astropy
    import photutils
    import scipy
    import skimage

    from . import __version__

    models = Path(__file__).parent / "data"  # not models.model: that would start TensorFlow

    print(f"astrosr {__version__}")
    for name, mod in (("numpy", np), ("scipy", scipy), ("astropy", astropy),
                      ("photutils", photutils), ("scikit-image", skimage)):
        print(f"  {name} {mod.__version__}")
    for name in ("tensorflow", "keras", "dask"):
        print(f"  {name} {_version(name)}")
    print(f"Shipped models ({models}):")
    for card in _cards(models):
        print("  " + card)
    return 0


def _version(name):
    """Installed version of a distribution (TensorFlow may be installed as tensorflow-cpu)."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in (name, f"{name}-cpu") if name == "tensorflow" else (name,):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "not installed"


def _cards(folder):
    """One line per shipped model card (read as JSON: no TensorFlow needed)."""
    import json

    lines = []
    for path in sorted(folder.glob("*.json")):
        card = json.loads(path.read_text())
        arch, train = card.get("architecture", {}), card.get("training") or {}
        lines.append(f"{path.stem}: {arch.get('architecture')} x{arch.get('scale')} "
                     f"({arch.get('n_blocks', arch.get('depth', '?'))} blocks x "
                     f"{arch.get('filters')} filters), {train.get('steps', '?')} steps "
                     f"({train.get('stage', '?')} stage), sha256 "
                     f"{card.get('weights', {}).get('sha256', '?')[:16]}")
    return lines or ["none"]


_EXIT_HELP = """exit status:
  0  success
  2  bad input or usage, or not enough memory for the run
  3  the output exists (pass --overwrite)
  4  an optional dependency is missing
  5  the result does not reproduce its input within the noise (reduced
     chi-square above the bound): nothing written; --allow-misfit writes it
  6  batch: one or more stacks failed (the others are written)
  143  terminated by SIGTERM: nothing written"""


def _parser():
    from . import __version__

    parser = argparse.ArgumentParser(prog="astrosr", description="astrosr: sharper, "
                                     "finer-sampled images of the sky from telescope data.",
                                     epilog="run 'astrosr COMMAND --help' for a command's "
                                            "options\n\n" + _EXIT_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"astrosr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _demo_parser(sub)
    reg = _command(sub, "register", "sub-pixel shifts of a stack of FITS frames",
                   "astrosr register frame*.fits -o shifts.ecsv")
    reg.add_argument("frames", nargs="+", help="FITS files or a quoted glob (the first is the "
                                               "reference unless --reference)")
    reg.add_argument("--reference", type=int, default=0, help="index of the reference frame")
    reg.add_argument("--hdu", default=None, help="HDU to read (default: the first image HDU)")
    reg.add_argument("-o", "--output", help="write the table (ECSV, FITS...) instead of printing")
    reg.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    reg.add_argument("--quiet", action="store_true", help="no progress bar")
    reg.set_defaults(func=_register)
    _stack_parser(sub)
    _enhance_parser(sub)
    _pipeline_parser(sub)
    _batch_parser(sub)
    _train_parser(sub)
    _evaluate_parser(sub)
    _command(sub, "info", "versions of astrosr and its dependencies, shipped models",
             "astrosr info").set_defaults(func=_info)
    return parser


def _command(sub, name, text, example):
    return sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".",
                          epilog="example: " + example,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _demo_parser(sub):
    demo = _command(sub, "demo", "the whole pipeline on a simulated stack of the Hubble Deep "
                    "Field (no data or network needed)",
                    "astrosr demo --out astrosr-demo\n  then open astrosr-demo/demo.png")
    demo.add_argument("--out", default="astrosr-demo",
                      help="folder for the frames, results and figure (default astrosr-demo)")
    demo.add_argument("--frames", type=int, default=16, help="frames in the stack (default 16)")
    demo.add_argument("--size", type=int, default=512,
                      help="truth size in fine pixels (default 512: frames of 128x128)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--overwrite", action="store_true", help="replace the demo's files in --out")
    demo.add_argument("--quiet", action="store_true", help="print nothing")
    demo.set_defaults(func=_demo)


def _common_output(p):
    p.add_argument("-o", "--output", required=True,
                   help="output FITS (primary: data; UNCERT, MASK and WHT extensions)")
    _write_options(p, "replace an existing output file")
    p.epilog += ("\n\nexit status 5: the result does not reproduce the input within its noise "
                 "(reduced\n  chi-square above the bound): nothing is written unless "
                 "--allow-misfit")


def _write_options(p, overwrite_help):
    """--overwrite, --allow-misfit, --hdu and --quiet (every command that writes images)."""
    p.add_argument("--overwrite", action="store_true", help=overwrite_help)
    p.add_argument("--allow-misfit", action="store_true",
                   help="write the result even when it does not reproduce the input within "
                        f"the noise (otherwise: nothing written, exit {EXIT_MISFIT})")
    p.add_argument("--hdu", default=None, help="HDU to read (default: the first image HDU)")
    p.add_argument("--quiet", action="store_true", help="no progress messages or bars")


def _common_stack(p):
    p.add_argument("frames", nargs="+", help="FITS frames, or a quoted glob such as 'f*.fits'")
    _scale_options(p)
    p.add_argument("--geometry", metavar="TABLE|wcs",
                   help="known geometry instead of registering: a table (dx, dy, and optionally "
                        "rotation in deg and scale; e.g. from astrosr register), or 'wcs' to "
                        "align the frames by their WCS (distortion included)")
    p.add_argument("--shifts", help="a table of known shifts (the older name of --geometry)")
    _frames_options(p)
    _common_output(p)


def _scale_options(p):
    """--scale and --reference (stack, pipeline, batch)."""
    p.add_argument("--scale", type=_positive_int, default=4,
                   help="output pixels per input pixel, an integer >= 1 (default 4)")
    p.add_argument("--reference", type=int, default=0, help="index of the reference frame")


def _frames_options(p):
    """--output-wcs, --psf and its estimate's options, calibration (stack, pipeline, batch)."""
    p.add_argument("--output-wcs", metavar="FILE",
                   help="FITS header or image whose celestial WCS and NAXIS1/2 define the output "
                        "grid (default: the reference frame's grid, --scale times finer)")
    p.add_argument("--psf", default=None,
                   help="'estimate' (stars of the stack; default), gaussian:SIGMA or "
                        "moffat:FWHM[,BETA] in input pixels, or a PSF FITS file (fine grid)")
    _psf_estimate_options(p)
    _calibration_options(p)


def _calibration_options(p):
    for name in ("bias", "dark", "flat"):
        p.add_argument(f"--{name}", metavar="FITS", help=f"master {name} frame (ccdproc)")
    p.add_argument("--no-calibrate", dest="calibrate", action="store_const", const=False,
                   default="auto", help="use the frames as they are (default: calibrate raw "
                                        "frames, whole numbers without uncertainty: defects, "
                                        "banding and background estimated from the frames)")


def _calibrated(args, say):
    """The frames as a FrameStack, calibrated as the options ask; the note is printed."""
    from .calibration import calibrated_stack

    frames, note = calibrated_stack(args.frames, bias=args.bias, dark=args.dark, flat=args.flat,
                                    when=args.calibrate, hdu=args.hdu)
    if note:
        say(f"[astrosr] {note}")
    return frames, note


def _psf_estimate_options(p):
    p.add_argument("--psf-snr", type=float, metavar="SNR",
                   help="PSF estimate: the least signal-to-noise ratio of a star it uses")
    p.add_argument("--fwhm-guess", type=float, metavar="PIXELS",
                   help="PSF estimate: a first guess of the stars' FWHM, input pixels")


def _fusion_option(p, flag):
    p.add_argument(flag, choices=["reconstruct", "drizzle", "shift_and_add"],
                   default="reconstruct", help="fusion method (default reconstruct)")


def _stack_parser(sub):
    st = _command(sub, "stack", "register and fuse a stack onto a finer grid",
                  "astrosr stack 'raw/frame_*.fits' --method reconstruct -o fused.fits\n"
                  "  astrosr stack f*.fits --method drizzle --pixfrac 0.7 -o drizzled.fits")
    _common_stack(st)
    _fusion_option(st, "--method")
    st.add_argument("--pixfrac", type=_pixfrac, default=None,
                    help="drizzle drop size, in (0, 1] (default 1; --method drizzle only)")
    st.add_argument("--reject", choices=["auto", "on", "off"], default="auto",
                    help="outlier (cosmic-ray) rejection (default auto: on for 3+ frames)")
    st.set_defaults(func=_stack)


def _enhance_parser(sub):
    from .inference import DEFAULT_ENSEMBLE, DEFAULT_TILE

    en = _command(sub, "enhance", "super-resolve one image (x4) with a network held to the data",
                  "astrosr enhance image.fits -o image_x4.fits\n"
                  "  astrosr enhance image.fits --consistency pixel -o image_x4.fits\n"
                  "  astrosr enhance stars.fits --stop converged -o stars_x4.fits")
    en.add_argument("image", help="FITS image")
    en.add_argument("--model", default="srresnet-x4", help="shipped model name or saved model "
                                                           "stem (default srresnet-x4)")
    en.add_argument("--psf", default=None, help="as for 'stack'; default: fitted to the stars "
                                                "of the image, else the model card's")
    _psf_estimate_options(en)
    en.add_argument("--consistency", choices=["observation", "pixel", "none"],
                    default="observation", help="how the output is held to the input "
                                                "(default observation)")
    en.add_argument("--stop", choices=["discrepancy", "converged"], default="discrepancy",
                    help="end of the observation fit: as soon as the data are reproduced "
                         "(default), or at the maximum-likelihood image (star fields; slower)")
    en.add_argument("--tile", type=_tile_int, default=DEFAULT_TILE,
                    help=f"tile side, input pixels (default {DEFAULT_TILE}; smaller uses less "
                         "memory)")
    _ensemble_option(en, DEFAULT_ENSEMBLE)
    _common_output(en)
    en.set_defaults(func=_enhance)


def _ensemble_option(parser, default):
    parser.add_argument("--ensemble", type=int, choices=[1, 2, 4, 8], default=default,
                        metavar="N", help="average the network over N flips/rotations and add "
                                          f"their spread to the uncertainty (default {default})")
    parser.add_argument("--no-ensemble", dest="ensemble", action="store_const", const=1,
                        help="the network once (same as --ensemble 1)")


def _pipeline_parser(sub):
    pl = _command(sub, "pipeline", "register, fuse, refine and hold to the data (MultiFrameSR)",
                  "astrosr pipeline 'raw/frame_*.fits' -o sr.fits\n"
                  "  astrosr pipeline f*.fits --psf gaussian:1.2 --refine none -o fused.fits")
    _common_stack(pl)
    _refine_options(pl)
    pl.set_defaults(func=_pipeline)


def _refine_options(p):
    """--fusion, --refine, --tile and --ensemble of MultiFrameSR (pipeline, batch)."""
    _fusion_option(p, "--fusion")
    p.add_argument("--refine", default="refine-x1",
                   help="scale-1 refinement model, or 'none' (default refine-x1)")
    p.add_argument("--tile", type=_tile_int, default=256,
                   help="refinement tile side, output pixels (default 256; smaller uses less "
                        "memory)")
    p.add_argument("--folds", type=int, default=4, metavar="K",
                   help="held-out validation over K folds of the frames (default 4; the run "
                        "costs about K + 1 times one without it); 0: none")
    p.add_argument("--consistency", choices=["heldout", "observation", "converged", "none"],
                   default="heldout",
                   help="what is returned: the candidate that best predicts held-out frames "
                        "(default), the refined image held to the frames (discrepancy stop, or "
                        "converged), or the raw network output (none)")
    _ensemble_option(p, 1)


def _batch_parser(sub):
    ba = _command(sub, "batch", "run the pipeline on many stacks in parallel "
                  "(dask.distributed; needs astrosr-gan[dask])",
                  "astrosr batch night1/m31 night1/m33 night2/ngc253 --output-dir sr\n"
                  "  astrosr batch stacks/* --output-dir sr --workers 4 --refine none\n"
                  "  astrosr batch stacks/* --output-dir sr --scheduler tcp://login1:8786")
    ba.add_argument("stacks", nargs="+", metavar="STACK",
                    help="a folder of the FITS frames of one stack (the output is "
                         "DIR/<folder name>.fits); with --scheduler, as the workers see it")
    ba.add_argument("--output-dir", required=True, metavar="DIR",
                    help="folder of the results, one FITS per stack (created if missing; on "
                         "a cluster, a path the workers see)")
    where = ba.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive_int, metavar="N",
                       help="worker processes of a cluster started on this machine (default: "
                            "one per stack, at most one per core and per 2 GiB of memory)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on the dask cluster of this scheduler (e.g. "
                            "tcp://login1:8786) instead of on this machine")
    _scale_options(ba)
    _frames_options(ba)
    _refine_options(ba)
    _write_options(ba, "replace existing result files")
    ba.epilog += (f"\n\nexit status {EXIT_STACK_FAILED}: one or more stacks failed (each is "
                  "reported; the others are\n  written); "
                  f"{EXIT_MISFIT}: none failed, but one or more results do not reproduce\n"
                  "  their frames within the noise (not written unless --allow-misfit); "
                  "3: a result\n  file exists (pass --overwrite; checked before any work)")
    ba.set_defaults(func=_batch)


def _evaluate_parser(sub):
    ev = _command(sub, "evaluate", "metrics of an image against a truth on the same grid",
                  "astrosr evaluate astrosr-demo/pipeline.fits --truth astrosr-demo/truth.fits")
    ev.add_argument("image", help="FITS image to score")
    ev.add_argument("--truth", required=True, help="FITS truth on the same grid")
    ev.add_argument("--hdu", default=None, help="HDU of the image (default: first image HDU)")
    ev.add_argument("--truth-hdu", default=None, help="HDU of the truth")
    ev.add_argument("--margin", type=int, default=16, help="edge pixels left out (default 16)")
    ev.add_argument("--radius", type=float, default=16.0,
                    help="photometry aperture radius, pixels (default 16)")
    ev.add_argument("--json", action="store_true", help="print JSON")
    ev.set_defaults(func=_evaluate)


def _train_parser(sub):
    tr = sub.add_parser(
        "train", help="train a super-resolution network (needs astrosr-gan[gan])",
        description="Train on truths from FITS files, the Hubble Deep Field and synthetic skies, "
                    "observed through astrosr's observation model; writes NAME.weights.h5 and "
                    "the model card NAME.json.",
        epilog="example: astrosr train --model srresnet --steps 100000 --checkpoint-dir ckpt "
               "--out srresnet-x4; then astrosr train --model srgan --init srresnet-x4 "
               "--steps 100000 --checkpoint-dir ckpt-gan --out srgan-x4")
    tr.add_argument("--model", choices=["srresnet", "srgan", "finegrid", "srcnn", "vdsr"],
                    default="srresnet",
                    help="srresnet: generator, pixel losses (stage 1); srgan: generator, "
                         "adversarial losses (stage 2, start it with --init); finegrid: the "
                         "fine-grid generator, pixel losses; srcnn, vdsr: baselines (default "
                         "srresnet)")
    tr.add_argument("--init", metavar="MODEL",
                    help="start from a saved model (stem of MODEL.weights.h5 + MODEL.json)")
    tr.add_argument("--scale", type=int, choices=[1, 2, 4], help="upsampling factor (default 4)")
    tr.add_argument("--blocks", type=int, help="residual blocks (srresnet/srgan; default 8; "
                                               "finegrid: of its coarse trunk, default 3) or "
                                               "layers (vdsr; default 10)")
    tr.add_argument("--filters", type=int, help="feature channels (default 32; finegrid: of "
                                                "its coarse trunk)")
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
    tr.add_argument("--label-smoothing", type=float, metavar="S",
                    help="srgan: the discriminator's target for real patches is 1 - S "
                         "(default 0; the shipped srgan-x4 used 0.1)")
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


#: Exit status of each kind of failure (see the module notes).
EXIT_CODES = ((FileExistsError, 3), (ImportError, 4), (MemoryError, 2),
              ((ValueError, TypeError, OSError, UnitsError), 2))


def main(argv=None):
    """Entry point of the ``astrosr`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    args.argv = argv
    if getattr(args, "hdu", None) is not None and str(args.hdu).lstrip("-").isdigit():
        args.hdu = int(args.hdu)
    from .files import sigterm_exits

    try:
        with sigterm_exits():  # SIGTERM: cleanup runs, no partial file; exit status 143
            return args.func(args)
    except Exception as exc:
        for kinds, code in EXIT_CODES:
            if isinstance(exc, kinds):
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if isinstance(exc, MemoryError) and "is available" not in message:
                    message = f"not enough memory ({message}): {_MEMORY_ADVICE}"
                print(f"astrosr {args.command}: error: {message}", file=sys.stderr)
                return code
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
