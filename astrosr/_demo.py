"""``astrosr demo``: the whole pipeline on a simulated stack of the Hubble Deep Field.

Truth: scikit-image's Hubble Deep Field (no download). A 16-frame dithered
stack is observed through the observation model (scale 4, Gaussian PSF sigma
1.2 input pixels, sky 100 e-, read noise 5 e-), written as FITS, registered,
fused (drizzle and reconstruct) and refined by `astrosr.MultiFrameSR`; the
results go to FITS, a comparison figure to PNG, and a metrics table to the
terminal.
"""

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
    from ._data import hubble_deep_field

    out = _prepare_folder(out, overwrite)
    truth = hubble_deep_field(size=size)
    stack = simulate.observe(truth, n_frames=n_frames, scale=SCALE,
                             psf=psf_models.GaussianPSF(PSF_SIGMA), sky=SKY,
                             read_noise=READ_NOISE, seed=seed)
    frames = stack.frames
    for f in frames:  # the sky is known here; subtract it as a reduction would
        f.data = f.data - SKY
    (out / "frames").mkdir(exist_ok=True)
    for i, f in enumerate(frames):
        write_fits(f, out / "frames" / f"frame_{i:02d}.fits", overwrite=overwrite)
    say(f"Simulated {n_frames} frames of {frames[0].shape[1]}x{frames[0].shape[0]} pixels "
        f"(Hubble Deep Field truth, scale {SCALE}, Gaussian PSF sigma {PSF_SIGMA} px, sky "
        f"{SKY:g} e-, read noise {READ_NOISE:g} e-) -> {out / 'frames'}")
    results, times, sr = _process(frames, say)
    _report_shifts(stack, sr.shifts_, times["register"], say)
    results = {"bicubic": _bicubic_frame(frames[0]), **results}
    for name, ccd in (("drizzle", results["drizzle"]), ("reconstruct", results["reconstruct"]),
                      ("pipeline", results["pipeline"])):
        write_fits(ccd, out / f"{name}.fits", overwrite=overwrite)
    write_fits(stack.truth, out / "truth.fits", overwrite=overwrite)
    table = _metrics(results, truth, times)
    _print_table(table, say)
    figure = out / "demo.png"
    _figure(frames[0], results, truth, table, figure, overwrite)
    say(f"Wrote {out}/: frames/*.fits, drizzle.fits, reconstruct.fits, pipeline.fits, truth.fits "
        f"and the figure {figure}")
    return table


def _prepare_folder(out, overwrite):
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty: pass --overwrite to replace "
                              "the demo's files in it")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"folder {out.parent} does not exist")
    out.mkdir(exist_ok=True)
    return out


def _process(frames, say):
    from . import fuse
    from .pipeline import MultiFrameSR

    times = {}
    sr = MultiFrameSR(scale=SCALE, psf="estimate")
    t0 = time.perf_counter()
    try:
        pipeline = sr.run(frames)
    except ValueError as exc:  # too few stars for a PSF: use the one simulated
        say(f"PSF estimate failed ({exc}); using the simulated PSF")
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


def _figure(frame, results, truth, table, path, overwrite):
    from .visualization import compare

    images = [frame] + list(results.values()) + [truth]
    titles = ["raw frame (1 of 16)"] + [
        f"{n}\n{table[n]['psnr']:.1f} dB, phot {_pct(table[n]['phot'])}" for n in results
    ] + ["truth"]
    compare(images, titles=titles, stretch="asinh", ncols=3, path=path, overwrite=overwrite)
