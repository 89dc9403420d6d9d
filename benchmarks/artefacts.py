"""Benchmark: the artefacts a user sees in x4 outputs of real images, against bicubic.

Real images, held out: the crops of ``../shared/data/`` (the Spitzer GLIMPSE
mosaic, MJy/sr, and the 2MASS K image of the Galactic centre) were never used
to train or tune the shipped networks (trained on the Hubble Deep Field and
synthetic skies). From each image, the 128x128 NaN-free crop with the most
isolated, unsaturated bright stars (DAOStarFinder, 20 sigma, no other
detection within 10 input pixels) is enhanced x4 by every shipped scale-4
model (`astrosr.enhance`, default ``consistency="observation"`` and
``consistency="pixel"``; with the default tile, 256 input pixels, and with
``tile=32`` so that tile seams fall inside the crop) and by bicubic
(``scipy.ndimage.zoom(order=3, grid_mode=True)``, as in
``single_frame.py``). The stars are those detected on the input, at their
fine-grid positions ``4 (p + 0.5) - 0.5``.

Columns (`astrosr.metrics`):

- ``de``: median over the stars of the output's ellipticity less bicubic's
  (adaptive second moments, a box of six bicubic FWHM), ``n_e`` the stars
  measured on both, ``fwhm`` the output's median FWHM (fine pixels,
  `astrosr.metrics.fwhm`): below about 2.5 fine pixels a star is sampled
  too coarsely for its moments, and its ellipticity is in part that of
  the pixel grid;
- ``ring``: the worst dark-ring depth (sigma) over the stars, and ``n>3`` the
  stars deeper than 3 sigma. The noise per fine pixel is the input's white
  noise (neighbour differences) times 4 in the fine-grid flux unit: the
  noise of a fine annulus's mean is that of the ``n / 16`` input pixels it
  covers (the outputs' noise is correlated over an input pixel);
- ``P4``: `astrosr.metrics.periodic_peak` at period 4 (the pixel shuffle);
  ``P128``: at period 128 fine pixels without the harmonics of period 4
  (``exclude=4``): the tile period on the output grid for ``tile=32``
  (seams), a control for bicubic and the default tile (256 input pixels,
  1024 fine: one tile holds the whole crop, its period cannot be measured
  on it). The outputs' own period-4 structure (the input's spectrum
  repeated about the harmonics of 4, wider than the bins left out) shows
  at period 128 too: a seam is a ``tile=32`` value above its control's.
  ``dtile``: the largest difference between the ``tile=32`` and default-tile
  outputs, in units of the input's noise (per fine pixel: the input noise
  in the fine-grid flux unit), directly the seams (with
  ``consistency="observation"`` it also holds the float rounding of the
  network's tiles, grown by the fit's iterations at the peaks of bright
  stars). As guidance a peak is above 20, a dark ring above 3 sigma;
- ``chi2``: ``CHI2RED`` of ``consistency="observation"``.

The shipped models' scale is 4 (`astrosr.enhance` takes it from the
model). Run from the repository root (about 3.5 minutes on 2 cores)::

    python benchmarks/artefacts.py
"""

import sys
import time
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData
from scipy import ndimage

import astrosr
from astrosr import metrics
from astrosr.inference import DEFAULT_TILE
from astrosr.nddata import white_noise_variance
from astrosr.output import is_surface_brightness

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, REAL  # noqa: E402

SCALE = 4
CROP = 128
SMALL_TILE = 32
FWHM_GUESS = {"spitzer": 1.7, "2mass": 2.5}  # input pixels, for DAOStarFinder
MODES = ("observation", "pixel")


def load(name):
    """The image (float, NaN kept), its unit, and its saturation level (or inf)."""
    with fits.open(DATA / REAL[name]) as hdul:
        data = np.asarray(hdul[0].data, dtype=float)
        unit = hdul[0].header.get("BUNIT", "adu")
    top = np.nanmax(data)
    saturation = top if np.sum(data == top) > 3 else np.inf  # a clipped top: saturated
    return data, unit, saturation


def isolated(data, fwhm, noise, saturation):
    """``(x, y)`` of the bright, unsaturated stars without a neighbour within 10 pixels."""
    return metrics.detected_stars(data, fwhm=fwhm, noise=noise, saturation=saturation)


def best_crop(data, fwhm, noise, saturation):
    """Origin ``(x0, y0)`` of the NaN-free crop with the most isolated stars inside."""
    stars = isolated(data, fwhm, noise, saturation)
    good = np.isfinite(data)
    best, origin = -1, (0, 0)
    for y0 in range(0, data.shape[0] - CROP + 1, 16):
        for x0 in range(0, data.shape[1] - CROP + 1, 16):
            if not good[y0:y0 + CROP, x0:x0 + CROP].all():
                continue
            inside = np.sum((stars[:, 0] >= x0 + 12) & (stars[:, 0] < x0 + CROP - 12)
                            & (stars[:, 1] >= y0 + 12) & (stars[:, 1] < y0 + CROP - 12))
            if inside > best:
                best, origin = inside, (x0, y0)
    return origin


def shipped_models():
    from astrosr.models import SRModel, available_models

    return [name for name in available_models() if SRModel.pretrained(name).scale == SCALE]


def figures(image, ref_e, fine_xy, box, ring_noise):
    """``de, n_e, fwhm, worst ring, n > 3, P4, P128`` of one output."""
    e = metrics.ellipticity(image, fine_xy, box=box) - ref_e
    depth = metrics.dark_ring_depth(image, fine_xy, noise=ring_noise)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LevMarLSQFitter's "fit may be unsuccessful"
        fwhm = metrics.fwhm(image, fine_xy, box=box)
    return (np.nanmedian(e), int(np.sum(np.isfinite(e))), fwhm, np.nanmax(depth),
            int(np.sum(depth > 3)), metrics.periodic_peak(image, SCALE),
            metrics.periodic_peak(image, SCALE * SMALL_TILE, exclude=SCALE))


def row(label, values, chi2=None, dtile=None):
    de, n_e, fwhm, ring, n3, p4, p128 = values
    chi = "" if chi2 is None else f"{float(chi2):6.2f}"
    dt = "-" if dtile is None else f"{dtile:.2g}"
    return (f"{label:<32s} {de:+6.3f} {n_e:3d} {fwhm:5.1f} {ring:6.1f} {n3:3d} {p4:6.1f} "
            f"{p128:7.1f} {chi:>6s} {dt:>7s}")


def bench(name, models):
    data, unit, saturation = load(name)
    noise = np.sqrt(white_noise_variance(np.nan_to_num(data), np.isfinite(data)))
    x0, y0 = best_crop(data, FWHM_GUESS[name], noise, saturation)
    crop = data[y0:y0 + CROP, x0:x0 + CROP]
    stars = isolated(crop, FWHM_GUESS[name], noise, saturation)
    flux = 1.0 if is_surface_brightness(CCDData(crop, unit=unit).unit) else 1.0 / SCALE ** 2
    fine_xy = SCALE * (stars + 0.5) - 0.5
    up = ndimage.zoom(crop, SCALE, order=3, grid_mode=True, mode="nearest") * flux
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fwhm = metrics.fwhm(up, fine_xy, box=8 * SCALE * int(np.ceil(FWHM_GUESS[name])) + 1)
    box = 2 * int(3 * fwhm) + 1
    ring_noise = noise * flux * SCALE
    ref_e = metrics.ellipticity(up, fine_xy, box=box)
    print(f"\n{name}: crop x0={x0} y0={y0} ({CROP}x{CROP}, {unit}), {len(stars)} isolated stars, "
          f"input noise {noise:.3g}, bicubic FWHM {fwhm:.1f} fine px, box {box}, "
          f"bicubic median ellipticity {np.nanmedian(ref_e):.3f}")
    print(f"{'method':<32s} {'de':>6s} {'n_e':>3s} {'fwhm':>5s} {'ring':>6s} {'n>3':>3s} "
          f"{'P4':>6s} {'P128':>7s} {'chi2':>6s} {'dtile':>7s}")
    print(row("bicubic", figures(up, ref_e, fine_xy, box, ring_noise)))
    ccd = CCDData(crop, unit=unit)
    for model in models:
        for mode in MODES:
            whole = None
            for tile in (DEFAULT_TILE, SMALL_TILE):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # misfit warnings: CHI2RED is printed
                    out = astrosr.enhance(ccd, model=model, consistency=mode, tile=tile)
                image = np.asarray(out.data, dtype=float)
                dtile = (None if whole is None
                         else float(np.max(np.abs(image - whole))) / (noise * flux))
                whole = image if whole is None else whole
                print(row(f"{model} {mode} tile={tile}",
                          figures(image, ref_e, fine_xy, box, ring_noise),
                          out.meta.get("CHI2RED"), dtile), flush=True)


def main():
    t0 = time.perf_counter()
    models = shipped_models()
    for name in REAL:
        bench(name, models)
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
