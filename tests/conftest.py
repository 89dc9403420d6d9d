"""Shared fixtures: seeded synthetic skies and the real FITS files in ../shared/data."""
from pathlib import Path

import numpy as np
import pytest

from astrosr import psf, simulate

#: The real FITS files of the project, beside the repository (not shipped with it).
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
#: The one reason every test that needs them gives when they are absent; the report header
#: says it once, before the tests run.
NO_DATA = "../shared/data not found (the real FITS files of the project); these tests need it"


def pytest_report_header(config):
    if not DATA.is_dir():
        return f"shared data: {DATA} not found; the tests that need the real FITS files are skipped"
    return f"shared data: {DATA}"


@pytest.fixture(scope="session")
def shared_data():
    """The folder of the real FITS files (``../shared/data``); skips the test without it."""
    if not DATA.is_dir():
        pytest.skip(NO_DATA)
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
