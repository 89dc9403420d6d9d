"""Real image held to the data: `astrosr.enhance` on the Spitzer mosaic of ``../shared/data``.

The image (GLIMPSE IRAC mosaic, 1025x513 pixels of 1.2", MJy/sr, no
uncertainty) was never used in training or tuning. It is enhanced by the
default model with the PSF given (``--psf irac``: the IRAC channel-1 PSF
file, 4x oversampled) or fitted to its stars (``--psf fit``). Printed: the
wall time and peak memory, the fit check (``CHI2RED``, ``CHI2SRC``,
``CHI2OK``; `astrosr.misfit`), the HISTORY, and the aperture photometry of
the isolated stars (radius 3 input pixels) of the output against the input,
as ratios.

Run from the repository root::

    python benchmarks/real_enhance_fit.py --psf irac
    python benchmarks/real_enhance_fit.py --psf fit
"""

import argparse
import resource
import time
import warnings
from pathlib import Path

import numpy as np
from astropy.stats import sigma_clipped_stats
from photutils.aperture import CircularAperture, aperture_photometry
from photutils.detection import DAOStarFinder

import astrosr
from astrosr.misfit import MisfitWarning
from astrosr.nddata import as_frames
from astrosr.psf import read_psf

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SCALE = 4
RADIUS = 3.0  # aperture radius, input pixels


def isolated_stars(data, fwhm=1.7, nsigma=20.0, isolation=8.0, edge=10):
    """(x, y) of the stars of ``data`` with no other detection within ``isolation`` pixels."""
    _, med, std = sigma_clipped_stats(data)
    found = DAOStarFinder(fwhm=fwhm, threshold=nsigma * std)(data - med)
    xy = np.column_stack([found["xcentroid"], found["ycentroid"]])
    dist = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(dist, np.inf)
    ny, nx = data.shape
    keep = ((dist.min(axis=1) > isolation) & (xy[:, 0] > edge) & (xy[:, 1] > edge)
            & (xy[:, 0] < nx - edge) & (xy[:, 1] < ny - edge))
    return xy[keep], med


def photometry_ratios(data, fine, xy, level):
    """Output over input aperture sums (surface brightness: fine sums divided by SCALE**2)."""
    before = aperture_photometry(data - level, CircularAperture(xy, RADIUS))["aperture_sum"]
    centres = SCALE * xy + (SCALE - 1) / 2.0  # DESIGN.md: p -> s*(p + 0.5) - 0.5
    after = aperture_photometry(fine - level, CircularAperture(centres, SCALE * RADIUS))
    return np.asarray(after["aperture_sum"] / SCALE ** 2 / before)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--psf", choices=["irac", "fit"], default="irac")
    args = parser.parse_args()
    (ccd,) = as_frames([DATA / "spitzer_example_image.fits"])
    psf = read_psf(DATA / "irac_ch1_flight.fits", scale=SCALE) if args.psf == "irac" else None
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MisfitWarning)
        out = astrosr.enhance(ccd, psf=psf)
    seconds = time.perf_counter() - t0
    print(f"psf={args.psf}: {seconds:.0f} s, peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.1f} GB")
    for w in caught:
        if issubclass(w.category, MisfitWarning):
            print(f"MisfitWarning: {w.message}")
    print({k: out.meta.get(k) for k in ("CHI2RED", "CHI2SRC", "CHI2MAX", "CHI2OK")})
    print(" ".join("".join(out.meta["HISTORY"]).split()))
    data = np.nan_to_num(np.asarray(ccd.data, dtype=float))
    xy, level = isolated_stars(data)
    ratio = photometry_ratios(data, np.asarray(out.data, dtype=float), xy, level)
    lo, hi = np.percentile(ratio, [16, 84])
    print(f"{len(xy)} isolated stars, aperture {RADIUS:g} px: output/input median "
          f"{np.median(ratio):.4f}, 16-84% {lo:.4f}-{hi:.4f}")


if __name__ == "__main__":
    main()
