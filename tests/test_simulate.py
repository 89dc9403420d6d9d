import numpy as np
import pytest
from astropy import units as u
from astropy.nddata import VarianceUncertainty
from astropy.wcs import WCS

from astrosr import psf, simulate

from .conftest import centroid


def test_render_conserves_flux_by_integration(gaussian_psf):
    truth = np.zeros((128, 128))
    truth[60, 70] = 1000.0
    truth[30:40, 50:70] = 2.0
    frames = simulate.render(truth, [[0, 0], [0.3, -1.7]], scale=4, psf=gaussian_psf, edge="zero")
    assert frames.shape == (2, 32, 32)
    np.testing.assert_allclose(frames.sum(axis=(1, 2)), truth.sum(), rtol=1e-10)


@pytest.mark.parametrize("dx, dy", [(0.3, -1.7), (2.13, 0.61), (-0.5, 0.5)])
def test_star_centroid_moves_by_exactly_the_dither(dx, dy, gaussian_psf):
    truth = np.zeros((128, 128))
    truth[62, 66] = 1e4
    f0, f1 = simulate.render(truth, [[0, 0], [dx, dy]], scale=4, psf=gaussian_psf, edge="zero")
    (x0, y0), (x1, y1) = centroid(f0), centroid(f1)
    assert x1 - x0 == pytest.approx(dx, abs=1e-6)
    assert y1 - y0 == pytest.approx(dy, abs=1e-6)
    # The fine pixel (62, 66) has its centre at detector (66 + 0.5)/4 - 0.5.
    assert x0 == pytest.approx((66 + 0.5) / 4 - 0.5, abs=1e-6)
    assert y0 == pytest.approx((62 + 0.5) / 4 - 0.5, abs=1e-6)


def test_noise_statistics_match_the_model():
    truth = np.full((256, 256), 5.0)  # 80 e- per detector pixel
    stack = simulate.observe(truth, n_frames=8, scale=4, psf=psf.GaussianPSF(1.0), sky=120.0,
                             read_noise=7.0, gain=2.0, seed=3)
    data = np.array([f.data for f in stack.frames])
    expected_mean = 80.0 + 120.0
    expected_var = expected_mean + 7.0 ** 2 + 2.0 ** 2 / 12
    n = data.size
    assert data.mean() == pytest.approx(expected_mean, abs=4 * np.sqrt(expected_var / n))
    # Sampling error of a variance estimate: var * sqrt(2 / n).
    assert data.var() == pytest.approx(expected_var, abs=4 * expected_var * np.sqrt(2 / n))
    unc = stack.frames[0].uncertainty
    assert isinstance(unc, VarianceUncertainty)
    np.testing.assert_allclose(unc.array, expected_var, rtol=1e-9)
    assert stack.frames[0].unit == u.electron
    # Digitised to whole ADU of 2 electrons.
    np.testing.assert_allclose(data % 2.0, 0.0, atol=1e-9)


def test_same_seed_same_frames(star_field):
    a = simulate.observe(star_field, n_frames=3, seed=5, cosmic_ray_rate=0.01)
    b = simulate.observe(star_field, n_frames=3, seed=5, cosmic_ray_rate=0.01)
    c = simulate.observe(star_field, n_frames=3, seed=6, cosmic_ray_rate=0.01)
    for fa, fb in zip(a.frames, b.frames):
        np.testing.assert_array_equal(fa.data, fb.data)
    np.testing.assert_array_equal(a.shifts["dx"], b.shifts["dx"])
    assert not np.array_equal(a.frames[1].data, c.frames[1].data)


def test_shift_table_and_given_shifts(star_field):
    shifts = [[0.0, 0.0], [0.25, -0.5], [1.0, 2.0]]
    stack = simulate.observe(star_field, shifts=shifts, seed=1)
    assert len(stack) == 3
    assert stack.shifts["dx"].unit == u.pix
    np.testing.assert_allclose(stack.shifts["dy"].value, [0.0, -0.5, 2.0])
    assert stack.truth.data.shape == (256, 256)
    assert stack.frames[2].meta["DITHX"] == 1.0


def test_cosmic_rays_and_bad_pixels(star_field):
    stack = simulate.observe(star_field, n_frames=4, cosmic_ray_rate=0.01,
                             bad_pixel_fraction=0.02, seed=2)
    masks = [f.mask for f in stack.frames]
    assert 0.01 < masks[0].mean() < 0.03
    assert all(np.array_equal(masks[0], m) for m in masks)  # fixed detector defects
    hits = stack.cosmic_rays[1]
    assert 0.007 < hits.mean() < 0.02
    clean = simulate.observe(star_field, n_frames=4, seed=2)
    jump = stack.frames[1].data - clean.frames[1].data
    assert np.all(jump[hits & ~masks[1]] >= 300.0)


def test_frames_get_the_wcs_of_their_dither():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [128.5, 128.5]
    w.wcs.cdelt = [-0.1 / 3600, 0.1 / 3600]
    from astropy.nddata import CCDData

    truth = np.zeros((256, 256))
    truth[100, 140] = 1e5
    ccd = CCDData(truth, unit=u.electron, wcs=w)
    stack = simulate.observe(ccd, shifts=[[0, 0], [0.7, -1.3]], psf=psf.GaussianPSF(0.8),
                             sky=0.0, read_noise=0.0, seed=0)
    star_sky = w.pixel_to_world(140, 100)
    for frame in stack.frames:
        x, y = centroid(np.clip(frame.data, 0, None))
        pos = frame.wcs.pixel_to_world(x, y)
        # Poisson noise of 1e5 e- leaves ~1e-3 px of centroid scatter.
        assert pos.separation(star_sky).arcsec < 0.01 * 0.4


@pytest.mark.parametrize("kwargs, match", [
    ({"sky": -1.0}, "sky"),
    ({"gain": 0.0}, "gain"),
    ({"shifts": [[0, 0, 0]]}, "shifts"),
    ({"scale": 3}, "divisible"),
])
def test_bad_arguments(star_field, kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate.observe(star_field, n_frames=2, seed=0, **kwargs)


def test_negative_truth_is_rejected():
    with pytest.raises(ValueError, match="non-negative"):
        simulate.observe(-np.ones((16, 16)), n_frames=2, seed=0)


def test_make_sky_contents():
    sky = simulate.make_sky((128, 128), n_stars=30, n_galaxies=3, nebula=True, seed=4)
    assert sky.shape == (128, 128) and np.all(sky >= 0)
    stars_only = simulate.make_sky((128, 128), n_stars=30, n_galaxies=0, nebula=False, seed=4)
    assert np.count_nonzero(stars_only) <= 30
    assert stars_only.max() <= 2e5
    assert np.array_equal(sky, simulate.make_sky((128, 128), n_stars=30, n_galaxies=3, seed=4))
