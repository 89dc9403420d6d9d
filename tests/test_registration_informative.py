"""Registration of large frames on their informative pixels (astrosr.registration.informative)."""

import numpy as np
import pytest
from astropy import units as u
from astropy.nddata import CCDData, VarianceUncertainty
from scipy import ndimage

import astrosr.registration as registration
from astrosr import psf, register_stack, simulate
from astrosr.registration.correlation import CoarseShift, coarse_shift
from astrosr.registration.informative import MIN_PIXELS
from astrosr.registration.templates import erode, tapered_pad, tapered_sum

from .shift_columns import errors, estimated, true_shifts

PSF = psf.GaussianPSF(1.2)


@pytest.fixture(scope="module")
def wide_star_field():
    """16 frames of 512 x 512 pixels of a star field (one star per 1500 pixels)."""
    truth = simulate.make_sky((1024, 1024), n_stars=175, n_galaxies=0, nebula=False, seed=31)
    return simulate.observe(truth, n_frames=16, scale=2, psf=PSF, seed=32)


def test_a_large_star_field_is_fitted_on_few_pixels_to_its_errors(wide_star_field):
    table = register_stack(wide_star_field.frames)
    assert wide_star_field.frames[0].shape == (512, 512)
    assert table.meta["registration_pixels"] < 0.2
    resid = (estimated(table) - true_shifts(wide_star_field))[1:]
    err = errors(table)[1:]
    assert np.sqrt(np.mean(resid ** 2)) <= 1.5 * np.median(err)
    # The RMS of the pulls, not their scatter about the mean: the reference's own error,
    # common to every frame's shift, is half of each error.
    assert 0.7 <= np.sqrt(np.mean((resid / err) ** 2)) <= 1.4


def _frames(model, var, noise, rng):
    return [CCDData(m + rng.normal(size=m.shape) * np.sqrt(v) * noise, unit=u.electron,
                    uncertainty=VarianceUncertainty(v * noise ** 2)) for m, v in zip(model, var)]


@pytest.mark.parametrize("sky", ["stars", "nebula"])
def test_informative_pixels_and_every_pixel_give_the_same_shifts(sky, monkeypatch):
    """The two paths on the same frames: at a tenth of the noise they agree within 0.2 of
    the errors at the full noise (what the methods differ by); at the full noise within
    their errors (each sees noise in pixels the other does not use, or filters the
    templates slightly differently)."""
    truth = (simulate.make_sky((512, 512), n_stars=45, n_galaxies=0, nebula=False, seed=33)
             if sky == "stars" else
             simulate.make_sky((512, 512), n_stars=10, n_galaxies=3, nebula=True,
                               nebula_flux=30.0, seed=34))
    shifts = simulate.default_shifts(8, seed=7)
    model = simulate.render(truth, shifts, scale=2, psf=PSF) + 100.0
    var = model + 25.0
    assert model[0].size >= MIN_PIXELS
    results = {}
    for noise in (1.0, 0.1):
        frames = _frames(model, var, noise, np.random.default_rng(1))
        fast = register_stack(frames)
        with monkeypatch.context() as patch:
            patch.setattr(registration, "MIN_PIXELS", 10 ** 12)
            full = register_stack(frames)
        results[noise] = fast, full
    fast, full = results[1.0]
    # A star field on few pixels; a nebula, whose information is spread, on all of them.
    used = fast.meta["registration_pixels"]
    assert used < 0.2 if sky == "stars" else used > 0.9
    bound = np.median(errors(full)[1:])
    assert np.median(errors(fast)[1:]) == pytest.approx(bound, rel=0.15)
    differ = (estimated(fast) - estimated(full))[1:]
    assert np.sqrt(np.mean(differ ** 2)) < 0.6 * bound
    assert np.abs(differ).max() < 1.5 * bound
    fast, full = results[0.1]
    assert np.abs(estimated(fast) - estimated(full)).max() < 0.2 * bound


def test_cosmic_rays_are_taken_out_of_frames_and_templates():
    truth = simulate.make_sky((1024, 1024), n_stars=170, n_galaxies=0, nebula=False, seed=3)
    stack = simulate.observe(truth, n_frames=8, scale=2, psf=PSF, seed=1, cosmic_ray_rate=1e-3)
    table = register_stack(stack.frames)
    resid = (estimated(table) - true_shifts(stack))[1:]
    assert np.sqrt(np.mean(resid ** 2)) <= 1.5 * np.median(errors(table)[1:])


def test_shifts_of_a_tenth_of_a_large_frame(wide_star_field):
    truth = simulate.make_sky((1024, 1024), n_stars=175, n_galaxies=0, nebula=False, seed=31)
    shifts = [[0, 0], [60.3, -45.2], [-70.1, 20.7], [30.5, 64.2], [1.2, -0.4]]
    stack = simulate.observe(truth, shifts=shifts, scale=2, psf=PSF, seed=2, edge="zero")
    table = register_stack(stack.frames)
    resid = (estimated(table) - true_shifts(stack))[1:]
    assert np.all(np.abs(resid) < 5 * errors(table)[1:])


def test_coarse_shift_bins_then_crops_a_large_frame():
    truth = simulate.make_sky((1200, 1200), n_stars=400, n_galaxies=0, nebula=False, seed=5)
    frames = simulate.render(truth, [[0, 0], [-83.4, 41.7]], scale=2, psf=PSF, edge="zero")
    dx, dy = coarse_shift(frames[0] + 100, frames[1] + 100)
    assert dx == pytest.approx(-83.4, abs=0.2) and dy == pytest.approx(41.7, abs=0.2)
    locate = CoarseShift(frames[0] + 100)
    assert locate(frames[1] + 100) == (dx, dy)
    with pytest.raises(ValueError, match="shape"):
        locate(frames[1][:-1])


def test_frames_without_signal_are_refused_before_any_fit():
    rng = np.random.default_rng(0)
    frames = [CCDData(rng.normal(100.0, 10.0, (300, 300)), unit=u.electron,
                      uncertainty=VarianceUncertainty(np.full((300, 300), 100.0)))
              for _ in range(4)]
    with pytest.raises(ValueError, match=r"frames\[0\] shows no signal above the noise"):
        register_stack(frames)


def test_small_frames_say_how_many_pixels_they_used(star_field):
    stack = simulate.observe(star_field, n_frames=4, psf=psf.GaussianPSF(1.0), seed=8)
    fraction = register_stack(stack.frames).meta["registration_pixels"]
    assert 0.0 < fraction <= 1.0


def test_taper_sums_and_erosion_match_their_definitions():
    rng = np.random.default_rng(2)
    for shape in [(37, 51), (1, 5), (3, 3), (7, 40)]:
        data = rng.random(shape)
        padded, taper = tapered_pad(data, 16, mean=0.0)
        assert tapered_sum(data, 16, 3) == pytest.approx(np.sum(padded * taper ** 2))
        mask = rng.random(shape) > 0.1
        np.testing.assert_array_equal(erode(mask, 2),
                                      ndimage.binary_erosion(mask, iterations=2, border_value=0))
