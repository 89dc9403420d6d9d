"""Shared fixtures: seeded synthetic skies and the real FITS files in ../shared/data."""
from pathlib import Path

import numpy as np
import pytest

from astrosr import psf, simulate

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data():
    if not DATA.is_dir():
        pytest.skip(f"real FITS files not present at {DATA}")
    return DATA


@pytest.fixture(scope="session")
def star_field():
    """A sparse star field on a 256x256 fine grid (64x64 frames at scale 4)."""
    return simulate.make_sky((256, 256), n_stars=60, n_galaxies=0, nebula=False,
                             star_flux=(2e3, 2e5), seed=11)


@pytest.fixture(scope="session")
def extended_sky():
    """Extended emission and galaxies with a few stars."""
    return simulate.make_sky((256, 256), n_stars=5, n_galaxies=4, nebula=True, nebula_flux=30.0,
                             seed=12)


@pytest.fixture
def gaussian_psf():
    return psf.GaussianPSF(1.0)


def centroid(image):
    yy, xx = np.indices(image.shape)
    total = image.sum()
    return (image * xx).sum() / total, (image * yy).sum() / total
