"""Figures of merit against a known truth."""

import numpy as np
import pytest
from scipy import ndimage

from astrosr import metrics


def _stars():
    img = np.zeros((128, 128))
    pos = [(20, 20), (60, 30), (100, 100), (30, 90)]
    for i, (x, y) in enumerate(pos):
        img[y, x] = 1000.0 * (i + 1)
    img[92, 31] = 2000.0  # a close companion at (x, y) = (31, 92): (30, 90) is not isolated
    return img, pos


def test_isolated_stars_finds_the_lonely_ones():
    img, pos = _stars()
    found = {tuple(p) for p in metrics.isolated_stars(img, radius=4).astype(int)}
    assert found == {(20, 20), (60, 30), (100, 100)}


def test_photometric_error_is_zero_on_the_truth_and_grows_with_blur():
    img, _ = _stars()
    stars = metrics.isolated_stars(img, radius=4)
    assert metrics.photometric_error(img, img, stars, radius=4) == 0
    small = metrics.photometric_error(ndimage.gaussian_filter(img, 1.0), img, stars, radius=4)
    large = metrics.photometric_error(ndimage.gaussian_filter(img, 3.0), img, stars, radius=4)
    assert 0 < small < large


def test_psnr_ssim_and_flux_of_known_errors():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 10, (64, 64))
    noisy = truth + rng.normal(0, 0.1, truth.shape)
    expected = 10 * np.log10(np.ptp(truth) ** 2 / np.mean((noisy - truth) ** 2))
    assert metrics.psnr(noisy, truth) == pytest.approx(expected, rel=1e-9)
    assert metrics.ssim(truth, truth) == pytest.approx(1.0)
    assert metrics.flux_ratio(2 * truth, truth, margin=4) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.psnr(noisy[1:], truth)


def test_fwhm_of_a_gaussian():
    yy, xx = np.mgrid[0:41, 0:41]
    img = np.exp(-((xx - 20) ** 2 + (yy - 20) ** 2) / (2 * 2.0 ** 2))
    assert metrics.fwhm(img, [(20, 20)]) == pytest.approx(2.3548 * 2.0, rel=1e-3)
