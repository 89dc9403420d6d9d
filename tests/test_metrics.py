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


def _gaussian(shape, x, y, sigma_a, sigma_b=None, angle=0.0):
    """An elliptical Gaussian (peak 1), axis ``sigma_a`` at ``angle`` radians from x."""
    sigma_b = sigma_a if sigma_b is None else sigma_b
    yy, xx = np.indices(shape, dtype=float)
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * (xx - x) + s * (yy - y), -s * (xx - x) + c * (yy - y)
    return np.exp(-0.5 * ((u / sigma_a) ** 2 + (v / sigma_b) ** 2))


STARS = [(15.3, 15.7), (40.1, 20.45), (20.9, 45.2), (45.5, 45.5)]


def test_ellipticity_of_round_and_elongated_gaussians():
    rng = np.random.default_rng(1)
    round_ = sum(_gaussian((64, 64), x, y, 2.0) for x, y in STARS)
    assert np.all(metrics.ellipticity(round_, STARS) < 0.01)
    angles = rng.uniform(0, np.pi, len(STARS))  # arbitrary angles, sub-pixel positions
    flat = sum(_gaussian((64, 64), x, y, 2.0, 1.6, a) for (x, y), a in zip(STARS, angles))
    assert metrics.ellipticity(flat, STARS) == pytest.approx(0.2, abs=0.002)
    noisy = 5.0 + 100 * flat + rng.normal(0, 1, flat.shape)  # sky and noise
    assert metrics.ellipticity(noisy, STARS) == pytest.approx(0.2, abs=0.02)
    assert np.isnan(metrics.ellipticity(flat, [(2.0, 2.0)])).all()  # the cutout leaves the image
    sharp = _gaussian((32, 32), 16.3, 16.6, 0.7)  # FWHM 1.6 pixels: still measured
    assert metrics.ellipticity(sharp, [(16.3, 16.6)])[0] < 0.03


def _normalised_gaussian(shape, x, y, sigma):
    return _gaussian(shape, x, y, sigma) / (2 * np.pi * sigma ** 2)


def test_dark_ring_depth_sees_a_moat_and_not_the_noise():
    shape, (x, y), sigma = (96, 96), (47.3, 48.6), 2.0
    star = 10.0 + 2000.0 * _normalised_gaussian(shape, x, y, sigma)
    # A difference-of-Gaussians moat, scaled to 5 sigma per annulus at its deepest
    moat = (_normalised_gaussian(shape, x, y, 1.5 * sigma)
            - _normalised_gaussian(shape, x, y, 3.0 * sigma))
    edges = np.arange(2.3548 * sigma, 4 * 2.3548 * sigma + 1)
    alone = metrics.dark_ring_depth(moat, [(x, y)], noise=1.0, radii=edges)[0]
    moat *= 5.0 / alone
    assert metrics.dark_ring_depth(star, [(x, y)], noise=1.0) == pytest.approx(0.0, abs=0.1)
    for seed in range(5):
        noise = np.random.default_rng(seed).normal(0, 1.0, shape)
        clean = metrics.dark_ring_depth(star + noise, [(x, y)], noise=np.ones(shape))[0]
        ringed = metrics.dark_ring_depth(star + moat + noise, [(x, y)], noise=1.0)[0]
        assert abs(clean) < 3 and ringed > 3
    with pytest.raises(ValueError, match="increasing"):
        metrics.dark_ring_depth(star, [(x, y)], noise=1.0, radii=[5, 3])


def _smooth_sky(n, seed):
    """A power-law (P ~ f^-3) Gaussian field of rms 5 plus white noise of rms 1."""
    from scipy import fft

    rng = np.random.default_rng(seed)
    f = np.hypot(*np.meshgrid(fft.fftfreq(n), fft.fftfreq(n)))
    f[0, 0] = 1.0
    field = fft.ifft2(fft.fft2(rng.normal(size=(n, n))) * f ** -1.5).real
    return 5.0 * field / field.std() + rng.normal(0, 1.0, (n, n))


def test_periodic_peak_finds_a_faint_checkerboard():
    sky = _smooth_sky(256, seed=0)
    for period in (4, 32, 64, (4, 64)):
        assert metrics.periodic_peak(sky, period) < 15  # below the 20 of a peak
    yy, xx = np.indices(sky.shape)
    checkerboard = np.where((xx // 2 + yy // 2) % 2 == 0, 0.3, -0.3)  # 0.3 sigma, period 4
    assert metrics.periodic_peak(sky + checkerboard, 4) > 100
    assert metrics.periodic_peak(sky + checkerboard, (4, 64)) > 100
    assert metrics.periodic_peak(sky + checkerboard, 64) < 15  # not its period
    stripes = np.where(xx % 4 < 2, 0.3, -0.3)  # along x: harmonics of 4 and of 64 on the axis
    assert metrics.periodic_peak(sky + stripes, 64) > 100
    assert metrics.periodic_peak(sky + stripes, 64, exclude=4) < 15
    with pytest.raises(ValueError, match="period"):
        metrics.periodic_peak(sky, 200)


def test_detected_stars_are_bright_isolated_and_unsaturated():
    from astropy.modeling.models import Gaussian2D

    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:96, :96]
    image = rng.normal(0.0, 1.0, (96, 96))
    for x, y, amp in ((30.3, 40.6, 200.0), (60.0, 25.0, 300.0), (67.0, 29.0, 200.0),
                      (70.2, 70.1, 5000.0), (50.0, 80.0, 10.0)):
        image += Gaussian2D(amp, x, y, 1.0, 1.0)(xx, yy)
    image = np.minimum(image, 1000.0)  # the 5000 star is clipped: saturated
    found = metrics.detected_stars(image, fwhm=2.35, noise=1.0, saturation=1000.0)
    # The lone bright star only: a pair within 10 px, a clipped star and a faint one are not.
    np.testing.assert_allclose(found, [[30.3, 40.6]], atol=0.1)
