import numpy as np
import pytest

from astrosr import psf, simulate
from astrosr.psf import GaussianPSF

from .conftest import centroid


@pytest.mark.parametrize("model", [psf.GaussianPSF(1.0), psf.MoffatPSF(2.5, beta=3.0),
                                   psf.AiryPSF(1.5)])
@pytest.mark.parametrize("scale", [1, 4])
def test_kernels_are_odd_centred_and_normalised(model, scale):
    k = model.kernel(scale)
    assert k.shape[0] % 2 == 1 and k.shape[1] % 2 == 1
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    cx, cy = centroid(k)
    assert cx == pytest.approx(k.shape[1] // 2, abs=1e-9)
    assert cy == pytest.approx(k.shape[0] // 2, abs=1e-9)


def test_gaussian_kernel_width_matches_sigma():
    k = psf.GaussianPSF(1.5).kernel(4)
    yy, xx = np.indices(k.shape) - k.shape[0] // 2
    # Variance in fine pixels: (4 sigma)^2 plus the fine pixel's own 1/12.
    assert (k * xx ** 2).sum() == pytest.approx((4 * 1.5) ** 2 + 1 / 12, rel=1e-3)


def test_offset_moves_the_centroid_exactly():
    k = psf.GaussianPSF(1.0).kernel(4, offset=(0.37, -1.21))
    cx, cy = centroid(k)
    assert cx - k.shape[1] // 2 == pytest.approx(0.37, abs=1e-6)
    assert cy - k.shape[0] // 2 == pytest.approx(-1.21, abs=1e-6)


def test_array_psf_fourier_shift_keeps_flux_and_moves_centroid():
    a = psf.ArrayPSF(psf.GaussianPSF(1.0).kernel(4), oversampling=4)
    k = a.kernel(4, offset=(0.5, 0.25))
    assert k.sum() == pytest.approx(1.0)
    cx, cy = centroid(k)
    assert cx - k.shape[1] // 2 == pytest.approx(0.5, abs=1e-3)
    assert cy - k.shape[0] // 2 == pytest.approx(0.25, abs=1e-3)


def test_array_psf_resampled_to_another_scale_keeps_its_width():
    fine = psf.GaussianPSF(1.2).kernel(4)
    k = psf.ArrayPSF(fine, oversampling=4).kernel(2)
    yy, xx = np.indices(k.shape) - k.shape[0] // 2
    assert np.sqrt((k * xx ** 2).sum()) == pytest.approx(2 * 1.2, rel=0.03)


def test_real_irac_psf_is_accepted(shared_data):
    from astropy.io import fits

    data = fits.getdata(shared_data / "irac_ch1_flight.fits").astype(float)
    p = psf.ArrayPSF(data, oversampling=4)
    assert p.kernel(4).shape == (81, 81)


@pytest.mark.parametrize("array, match", [
    (np.ones((4, 5)) / 20, "odd-sized"),
    (np.ones((5, 5)), "normalised"),
    (np.ones(5) / 5, "2-D"),
    (np.full((3, 3), np.nan), "NaN"),
])
def test_bad_psf_arrays_are_rejected(array, match):
    with pytest.raises(ValueError, match=match):
        psf.ArrayPSF(array)


def test_normalize_option_and_bad_parameters():
    assert psf.ArrayPSF(np.ones((3, 3)), normalize=True).array.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="sigma"):
        psf.GaussianPSF(-1.0)
    with pytest.raises(ValueError, match="beta"):
        psf.MoffatPSF(2.0, beta=0.5)
    with pytest.raises(ValueError, match="scale"):
        psf.GaussianPSF(1.0).kernel(2.5)
    with pytest.raises(TypeError, match="psf is required"):
        psf.as_psf(None)


@pytest.mark.parametrize("sigma", [0.8, 1.5])
def test_estimate_psf_recovers_the_width_from_stars(sigma):
    from astrosr.psf import estimate_psf

    truth = simulate.make_sky((384, 384), n_stars=50, n_galaxies=0, nebula=False,
                              star_flux=(5e3, 2e5), seed=3)
    frame = simulate.observe(truth, n_frames=1, scale=4, psf=GaussianPSF(sigma), seed=4).frames[0]
    assert estimate_psf(frame).sigma == pytest.approx(sigma, rel=0.05)


def test_estimate_psf_needs_stars_and_says_what_to_pass():
    from astrosr.psf import estimate_psf

    with pytest.raises(ValueError, match=r"MultiFrameSR\(psf=.*--psf gaussian:SIGMA.*"
                                         r"psf_options=.*--psf-snr, --fwhm-guess"):
        estimate_psf(np.random.default_rng(0).normal(size=(64, 64)), snr=20)


def _crowded_frame(sigma=1.3, seed=21):
    """A crowded star field (about one star per 60 pixels, many overlapping), one frame."""
    truth = simulate.make_sky((512, 512), n_stars=280, n_galaxies=0, nebula=False,
                              star_flux=(2e3, 3e5), seed=seed)
    return simulate.observe(truth, n_frames=1, scale=4, psf=GaussianPSF(sigma), sky=50.0,
                            read_noise=5.0, seed=seed + 1).frames[0]


def test_estimate_psf_in_a_crowded_field_leaves_out_saturated_stars():
    from astrosr.psf import estimate_psf

    frame = _crowded_frame()
    level = np.sort(frame.data.ravel())[-40]  # the brightest stars' cores flat at this level
    frame.data = np.minimum(frame.data, level)
    est = estimate_psf(frame)
    assert est.sigma == pytest.approx(1.3, rel=0.1)
    assert est.sigma < 1.3 * 1.05  # flat tops would widen it
    clipped = np.argwhere(frame.data >= level)
    info = est.fit_info
    d = np.hypot(info["x"][:, None] - clipped[None, :, 1], info["y"][:, None] - clipped[None, :, 0])
    assert d.min() > 2.0 and info["n_stars"] >= 3
    # A level given (as a SATURATE keyword would) leaves out at least as many.
    assert estimate_psf(frame, saturation=level).fit_info["n_stars"] <= info["n_stars"]


def test_hot_pixels_are_not_taken_for_stars():
    from astrosr.psf import estimate_psf

    frame = _crowded_frame(sigma=1.0, seed=31)
    rng = np.random.default_rng(5)
    hot = rng.integers(10, 118, size=(60, 2))
    frame.data[hot[:, 0], hot[:, 1]] += rng.uniform(2e3, 2e4, len(hot))
    est = estimate_psf(frame)
    assert est.sigma == pytest.approx(1.0, rel=0.1)
    info = est.fit_info
    d = np.hypot(info["x"][:, None] - hot[None, :, 1], info["y"][:, None] - hot[None, :, 0])
    assert (d.min(axis=1) > 1.0).all()


def _pixel_scale_arcsec(path):
    from astropy.io import fits
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales

    return float(proj_plane_pixel_scales(WCS(fits.getheader(path))).mean() * 3600)


def test_estimate_psf_on_a_spitzer_mosaic(shared_data):
    """GLIMPSE IRAC mosaic (1.2"/px, MJy/sr, extended emission): a FWHM near the IRAC PSF's."""
    from astropy.io import fits

    from astrosr.psf import estimate_psf

    path = shared_data / "spitzer_example_image.fits"
    est = estimate_psf(fits.getdata(path).astype(float))
    fwhm_arcsec = est.fwhm * _pixel_scale_arcsec(path)
    # IRAC's PSF: FWHM 1.66" (ch1) to 1.72" (ch2), a little more after mosaicking.
    assert 1.4 < fwhm_arcsec < 2.4 and est.fit_info["n_stars"] >= 10


def test_estimate_psf_on_a_crowded_2mass_plate(shared_data):
    """2MASS K galactic centre (5"/px, clipped at its maximum): seeing-limited stars."""
    from astropy.io import fits

    from astrosr.psf import estimate_psf

    path = shared_data / "gc_2mass_k.fits"
    est = estimate_psf(fits.getdata(path).astype(float))
    fwhm_arcsec = est.fwhm * _pixel_scale_arcsec(path)
    assert 2.0 < fwhm_arcsec < 5.0 and est.fit_info["n_stars"] >= 5
