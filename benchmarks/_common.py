"""Test images and stack settings shared by the benchmarks."""

from pathlib import Path

import numpy as np

from astrosr import simulate
from astrosr._data import hubble_deep_field
from astrosr.psf import GaussianPSF

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
REAL = {"spitzer": "spitzer_example_image.fits", "2mass": "gc_2mass_k.fits"}
ALL_IMAGES = ["stars", "galaxies", "hdf", "spitzer", "2mass"]

N_FRAMES = 16
SCALE = 4
PSF = GaussianPSF(1.2)
SKY = 100.0
READ_NOISE = 5.0


def load_real(path, size=512, peak=5000.0):
    """Centre crop of a real image, NaN -> median, floor (1st percentile) removed, peak 5000 e-."""
    from astropy.io import fits

    data = np.asarray(fits.getdata(path), dtype=float)
    ny, nx = data.shape
    y0, x0 = (ny - size) // 2, (nx - size) // 2
    crop = data[y0:y0 + size, x0:x0 + size].copy()
    crop[~np.isfinite(crop)] = np.nanmedian(crop)
    crop = np.clip(crop - np.percentile(crop, 1), 0.0, None)
    return crop * (peak / crop.max())


def make_truth(name, seed):
    """A 512x512 fine-grid truth (electrons per fine pixel) for a named test image."""
    if name == "stars":
        return simulate.make_sky((512, 512), n_stars=150, n_galaxies=0, nebula=False, seed=seed)
    if name == "galaxies":
        return simulate.make_sky((512, 512), n_stars=20, n_galaxies=25, nebula=True, seed=seed)
    if name == "hdf":
        return hubble_deep_field(512)
    return load_real(DATA / REAL[name])


def available(name):
    """False for a real image whose file is absent."""
    return name not in REAL or (DATA / REAL[name]).exists()
