"""``astrosr demo``: the whole pipeline on a simulated stack of the Hubble Deep Field.

Truth: scikit-image's Hubble Deep Field (no download). A 16-frame dithered
stack is observed through the observation model (scale 4, Gaussian PSF sigma
1.2 input pixels, sky 100 e-, read noise 5 e-), written as FITS, registered,
fused (drizzle and reconstruct) and refined by `astrosr.MultiFrameSR`; the
results go to FITS, a comparison figure to PNG, and a metrics table to the
terminal.

Everything is written into a hidden temporary folder inside ``out`` and moved
into place at the end, so a demo that fails (or is interrupted) midway leaves
nothing behind that would block the next run.
"""

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from . import metrics, psf as psf_models, simulate
from .nddata import write_fits

#: The demo's observation: the fusion benchmark's settings.
SCALE, PSF_SIGMA, SKY, READ_NOISE = 4, 1.2, 100.0, 5.0
#: Aperture radius of the photometry, input pixels (the single-frame benchmark's).
APERTURE = 4


def run_demo(out, *, size=512, n_frames=16, seed=0, overwrite=False, say=print):
    """Simulate, process and score the demo stack; write its files into ``out``."""
    out, created = _prepare_folder(out, overwrite)
    work = Path(tempfile.mkdtemp(prefix=_WORK_PREFIX, dir=out))
    try:
        table = _run(out, work, size=size, n_frames=n_frames, seed=seed, say=say)
        _publish(work, out)
    except BaseException:
        # Nothing half-written stays: the next `astrosr demo` needs no --overwrite.
        shutil.rmtree(work, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)
    say(f"Wrote {out}/: frames/*.fits, drizzle.fits, reconstruct.fits, pipeline.fits, truth.fits "
        f"and the figure {out / 'demo.png'}")
    return table


#: The temporary folder inside ``out`` that a run writes into before moving its files.
_WORK_PREFIX = ".astrosr-demo-"
#: What a run leaves in ``out``: the frames folder and these files.
_FILES = ("drizzle.fits", "reconstruct.fits", "pipeline.fits", "truth.fits", "demo.png")


def _run(out, work, *, size, n_frames, seed, say):
    """The demo proper, writing into ``work``; messages name the final paths in ``out``."""
    from ._data import hubble_deep_field

    truth = hubble_deep_field(size=size)
    stack = simulate.observe(truth, n_frames=n_frames, scale=SCALE,
                             psf=psf_models.GaussianPSF(PSF_SIGMA), sky=SKY,
                             read_noise=READ_NOISE, seed=seed)
    frames = stack.frames
    for f in frames:  # the sky is known here; subtract it as a reduction would
        f.data = f.data - SKY
    (work / "frames").mkdir()
    for i, f in enumerate(frames):
        write_fits(f, work / "frames" / f"frame_{i:02d}.fits")
    say(f"Simulated {n_frames} frames of {frames[0].shape[1]}x{frames[0].shape[0]} pixels "
        f"(Hubble Deep Field truth, scale {SCALE}, Gaussian PSF sigma {PSF_SIGMA} px, sky "
        f"{SKY:g} e-, read noise {READ_NOISE:g} e-) -> {out / 'frames'}")
    results, times, sr = _process(frames, say)
    _report_shifts(stack, sr.shifts_, times["register"], say)
    results = {"bicubic": _bicubic_frame(frames[0]), **results}
    for name, ccd in (("drizzle", results["drizzle"]), ("reconstruct", results["reconstruct"]),
                      ("pipeline", results["pipeline"])):
        write_fits(ccd, work / f"{name}.fits")
    write_fits(stack.truth, work / "truth.fits")
    table = _metrics(results, truth, times)
    _print_table(table, say)
    _figure(frames[0], results, stack.truth, table, work / "demo.png", n_frames=len(frames))
    return table


def _prepare_folder(out, overwrite):
    """``out`` ready to take the demo's files, and whether this call created it."""
    out = Path(out)
    # A hidden work folder left by a run that was killed outright does not count.
    if (out.exists() and any(not p.name.startswith(_WORK_PREFIX) for p in out.iterdir())
            and not overwrite):
        raise FileExistsError(f"{out} exists and is not empty: pass --overwrite to replace "
                              "the demo's files in it")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"folder {out.parent} does not exist")
    created = not out.exists()
    out.mkdir(exist_ok=True)
    return out, created


def _publish(work, out):
    """Move a finished run's files from ``work`` into ``out``, replacing the demo's old ones."""
    frames = out / "frames"
    frames.mkdir(exist_ok=True)
    for old in frames.glob("frame_*.fits"):  # a previous run may have had more frames
        old.unlink()
    for new in sorted((work / "frames").iterdir()):
        os.replace(new, frames / new.name)
    for name in _FILES:
        os.replace(work / name, out / name)


def _process(frames, say):
    from . import fuse
    from .pipeline import MultiFrameSR

    times = {}
    sr = MultiFrameSR(scale=SCALE, psf="estimate")
    t0 = time.perf_counter()
    try:
        pipeline = sr.run(frames)
    except ValueError as exc:  # too few stars for a PSF: use the one simulated
        say(f"\nWARNING: the PSF estimate from the stars of the frames failed:\n  {exc}\n"
            f"WARNING: falling back to the PSF the demo simulated (Gaussian, sigma {PSF_SIGMA} "
            "input px), which real data would not give you. The results below use it.\n")
        sr = MultiFrameSR(scale=SCALE, psf=psf_models.GaussianPSF(PSF_SIGMA))
        pipeline = sr.run(frames)
    times["pipeline"] = time.perf_counter() - t0
    times.update(sr.timings_)
    times["reconstruct"] = sum(sr.timings_[k] for k in ("register", "psf", "fuse"))
    t0 = time.perf_counter()
    drizzle = fuse(frames, sr.shifts_, scale=SCALE, method="drizzle", pixfrac=0.7)
    times["drizzle"] = time.perf_counter() - t0 + sr.timings_["register"]
    say(f"Pipeline done in {times['pipeline']:.1f} s ("
        + ", ".join(f"{k} {v:.1f} s" for k, v in sr.timings_.items()) + ")")
    if sr.scores_ is not None:
        say(f"Held-out validation ({pipeline.meta['NFOLDS']} folds of frames): returned "
            f"{sr.candidate_}; reduced chi-square of the held-out frames: "
            + ", ".join(f"{k} {v:.4f}" for k, v in sr.scores_.reduced().items()))
    return {"drizzle": drizzle, "reconstruct": sr.fused_, "pipeline": pipeline}, times, sr


def _report_shifts(stack, table, seconds, say):
    true = np.column_stack([stack.shifts["dx"].value, stack.shifts["dy"].value])
    true -= true[0]
    est = np.column_stack([table["dx"].value, table["dy"].value])
    err = np.column_stack([table["dx_err"].value, table["dy_err"].value])
    say(f"{'frame':>5} {'dx true':>9} {'dx est':>9} {'dy true':>9} {'dy est':>9} {'error':>7}")
    for i in range(len(table)):
        say(f"{i:5d} {true[i, 0]:9.4f} {est[i, 0]:9.4f} {true[i, 1]:9.4f} {est[i, 1]:9.4f} "
            f"{err[i, 0]:7.4f}")
    rms = np.sqrt(np.mean((est[1:] - true[1:]) ** 2))
    say(f"RMS error {rms:.4f} px, median stated error {np.median(err[1:]):.4f} px, "
        f"{1000 * seconds / len(table):.0f} ms per frame.")


def _bicubic_frame(frame):
    """Frame 0 on the fine grid by bicubic interpolation (flux per fine pixel)."""
    from scipy import ndimage

    return ndimage.zoom(np.asarray(frame.data, float), SCALE, order=3, grid_mode=True,
                        mode="reflect") / SCALE ** 2


def _metrics(results, truth, times):
    margin = 4 * SCALE
    stars = _sources(truth)
    rows = {}
    for name, img in results.items():
        data = np.asarray(getattr(img, "data", img), dtype=float)
        rows[name] = {"psnr": metrics.psnr(data, truth, margin=margin),
                      "ssim": metrics.ssim(data, truth, margin=margin),
                      "phot": metrics.photometric_error(data, truth, stars, radius=APERTURE * SCALE),
                      "chi2": getattr(img, "meta", {}).get("CHI2RED", np.nan),
                      "time": times.get(name, np.nan)}
    rows["_stars"] = len(stars)
    return rows


def _sources(truth):
    """Isolated point sources for the photometry; in a crowded field, compact bright ones.

    The Hubble Deep Field has no source isolated by three aperture radii, so
    there sources brighter than 5% of the peak with no comparable neighbour
    within one aperture radius are measured instead.
    """
    radius = APERTURE * SCALE
    stars = metrics.isolated_stars(truth, radius=radius)
    if len(stars) >= 5:
        return stars
    return metrics.isolated_stars(truth, radius=radius, isolation=radius,
                                  threshold=0.05 * float(np.max(truth)))


def _print_table(table, say):
    say(f"\n{'image':<12} {'PSNR [dB]':>10} {'SSIM':>6} {'phot. err':>10} {'chi2_red':>9} "
        f"{'time [s]':>9}")
    for name, r in table.items():
        if name.startswith("_"):
            continue
        say(f"{name:<12} {r['psnr']:10.2f} {r['ssim']:6.3f} {_pct(r['phot']):>10} "
            f"{r['chi2']:9.3f} {r['time']:9.1f}")
    say(f"(PSNR and SSIM against the truth, {4 * SCALE} fine pixels inside the edges; photometry: "
        f"median error of {table['_stars']} compact sources, apertures of {APERTURE} input px)")


def _pct(value):
    return "n/a" if not np.isfinite(value) else f"{100 * value:.1f}%"


def _figure(frame, results, truth, table, path, *, n_frames=16):
    """The comparison figure: one raw frame, the results and the truth, with a zoom row.

    The zoom shows the same small region of sky in every panel at full
    resolution (where the truth has most fine structure), so that the raw
    frame's input pixels and the finer sampling of the results can be seen;
    the raw frame is labelled in input pixels, the others in fine pixels, and
    the colour bar in the truth's unit per fine pixel.
    """
    from astropy.nddata import CCDData

    from .visualization import compare

    unit = getattr(truth, "unit", None) or frame.unit
    fine = [r if isinstance(r, CCDData) else CCDData(np.asarray(r, float), unit=unit)
            for r in results.values()]
    images = [frame] + fine + [truth]
    titles = [f"raw frame (1 of {n_frames})"] + [
        f"{n}\n{table[n]['psnr']:.1f} dB, phot {_pct(table[n]['phot'])}" for n in results
    ] + ["truth"]
    names = ["input pixel"] + ["fine pixel"] * (len(images) - 1)
    compare(images, titles=titles, stretch="asinh", ncols=3, path=path, zoom=_zoom(truth),
            grid="own", pixel_names=names, wcs=False)


def _zoom(truth):
    """The zoom region ``(x, y, size)`` in fine pixels: where the truth has most fine structure.

    The window of 12 input pixels (at most a quarter of the image) with the
    largest sum of the truth's positive high-pass part (the truth minus the
    truth smoothed over two input pixels): compact sources and sharp edges,
    not the smooth halo of the brightest galaxy.
    """
    from scipy import ndimage

    data = np.asarray(getattr(truth, "data", truth), dtype=float)
    ny, nx = data.shape
    size = int(min(12 * SCALE, min(ny, nx) // 4))
    detail = np.clip(data - ndimage.gaussian_filter(data, 2.0 * SCALE), 0.0, None)
    energy = ndimage.uniform_filter(detail, size)
    half = size // 2
    inner = energy[half:ny - half, half:nx - half]  # windows that lie inside the image
    iy, ix = np.unravel_index(np.argmax(inner), inner.shape)
    return (float(ix + half), float(iy + half), size)
