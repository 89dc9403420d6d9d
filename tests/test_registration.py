import subprocess
import sys

import numpy as np
import pytest
from astropy import units as u
from astropy.nddata import CCDData

from astrosr import psf, register, register_stack, simulate
from astrosr.registration import phase_correlation

from .shift_columns import errors, estimated, true_shifts


def test_phase_correlation_sign_and_precision(extended_sky):
    frames = simulate.render(extended_sky, [[0, 0], [3.37, -5.81]], scale=4,
                             psf=psf.GaussianPSF(1.0))
    dx, dy = phase_correlation(frames[0], frames[1], upsample=100)
    # A first estimate: the least-squares refinement takes it from there.
    assert dx == pytest.approx(3.37, abs=0.3) and dy == pytest.approx(-5.81, abs=0.3)


def test_register_noise_free_pair_is_exact(extended_sky):
    frames = simulate.render(extended_sky, [[0, 0], [0.63, -0.27]], scale=4,
                             psf=psf.GaussianPSF(1.2))
    s = register(frames[1] + 100, frames[0] + 100)
    assert s.dx == pytest.approx(0.63, abs=5e-3) and s.dy == pytest.approx(-0.27, abs=5e-3)
    assert s.flux_ratio == pytest.approx(1.0, abs=3e-3)


@pytest.mark.parametrize("sky", ["star_field", "extended_sky"])
def test_register_stack_recovers_injected_shifts(sky, request):
    truth = request.getfixturevalue(sky)
    stack = simulate.observe(truth, n_frames=8, scale=4, psf=psf.GaussianPSF(1.0), seed=21)
    table = register_stack(stack.frames)
    assert table.colnames[:5] == ["frame", "dx", "dy", "dx_err", "dy_err"]
    assert table["dx"].unit == u.pix
    est, true, err = estimated(table), true_shifts(stack), errors(table)
    assert np.all(err[1:] > 0) and np.all(err[0] == 0)
    assert np.all(est[0] == 0)
    np.testing.assert_allclose(est, true, atol=0.05)
    assert np.all(np.abs(est[1:] - true[1:]) < 5 * err[1:])


def test_shifts_up_to_a_quarter_of_the_frame(extended_sky):
    shifts = [[0, 0], [15.3, -12.6], [-16.0, 4.2], [7.7, 15.9]]
    # edge="zero": a mirrored sky entering the field would correlate with itself.
    stack = simulate.observe(extended_sky, shifts=shifts, psf=psf.GaussianPSF(1.0), seed=3,
                             edge="zero")
    table = register_stack(stack.frames)
    np.testing.assert_allclose(estimated(table), true_shifts(stack), atol=0.05)


def test_reference_other_than_zero(star_field):
    stack = simulate.observe(star_field, n_frames=5, psf=psf.GaussianPSF(1.0), seed=8)
    table = register_stack(stack.frames, reference=2)
    true = true_shifts(stack) - true_shifts(stack)[2]
    assert np.all(estimated(table)[2] == 0)
    np.testing.assert_allclose(estimated(table), true, atol=0.05)


def test_masks_nan_and_missing_uncertainty_are_handled(extended_sky):
    stack = simulate.observe(extended_sky, n_frames=6, psf=psf.GaussianPSF(1.0),
                             bad_pixel_fraction=0.02, seed=4)
    frames = []
    for f in stack.frames:
        data = f.data.copy()
        data[5:9, 20:40] = np.nan
        frames.append(CCDData(data, unit=f.unit, mask=f.mask))  # no uncertainty
    table = register_stack(frames)
    np.testing.assert_allclose(estimated(table), true_shifts(stack), atol=0.05)
    assert np.all(np.isfinite(errors(table)))
    # A plain 3-D array works too, with NaN for its bad pixels (unmasked detector
    # defects sit at the same pixels of every frame and pull the shifts to zero).
    cube = np.array([np.where(f.mask, np.nan, f.data) for f in stack.frames])
    np.testing.assert_allclose(estimated(register_stack(cube)), true_shifts(stack), atol=0.05)


def test_two_frames_use_the_pairwise_fit(extended_sky):
    stack = simulate.observe(extended_sky, n_frames=2, psf=psf.GaussianPSF(1.0), seed=9)
    table = register_stack(stack.frames)
    s = register(stack.frames[1], stack.frames[0])
    assert table["dx"][1].value == pytest.approx(s.dx)
    assert table["dy_err"][1].value == pytest.approx(s.dy_err)


@pytest.mark.slow
def test_errors_are_calibrated_on_200_simulations():
    """Pulls (est - true) / err over 200 seeded stacks have a standard deviation in [0.7, 1.5]."""
    pulls = []
    for seed in range(200):
        truth = simulate.make_sky((128, 128), n_stars=15, n_galaxies=2, nebula=True,
                                  nebula_flux=10.0, seed=1000 + seed)
        stack = simulate.observe(truth, n_frames=4, scale=4, psf=psf.GaussianPSF(1.0),
                                 seed=seed)
        table = register_stack(stack.frames)
        pulls.append(((estimated(table) - true_shifts(stack)) / errors(table).clip(1e-12))[1:])
    pulls = np.concatenate(pulls).ravel()
    assert 0.7 < np.std(pulls) < 1.5
    assert abs(np.mean(pulls)) < 0.2


def test_frames_that_do_not_overlap_are_rejected():
    a = simulate.make_sky((256, 256), n_stars=80, n_galaxies=0, nebula=False, seed=1)
    b = simulate.make_sky((256, 256), n_stars=80, n_galaxies=0, nebula=False, seed=2)
    fa = simulate.observe(a, n_frames=1, seed=1).frames[0]
    fb = simulate.observe(b, n_frames=1, seed=2).frames[0]
    with pytest.raises(ValueError, match="do not overlap"):
        register(fb, fa)


def test_constant_frames_and_mismatched_shapes_are_rejected(star_field):
    stack = simulate.observe(star_field, n_frames=3, seed=1)
    with pytest.raises(ValueError, match="constant"):
        register_stack([stack.frames[0], CCDData(np.full((64, 64), 7.0), unit="electron"),
                        stack.frames[2]])
    with pytest.raises(ValueError, match="same shape"):
        register(np.zeros((64, 64)) + stack.frames[0].data, stack.frames[0].data[:32])
    with pytest.raises(ValueError, match="reference=5 is out of range"):
        register_stack(stack.frames, reference=5)
    dead = CCDData(stack.frames[1].data, unit="electron", mask=np.ones((64, 64), bool))
    with pytest.raises(ValueError, match=r"frames\[1\] has no usable pixel"):
        register_stack([stack.frames[0], dead, stack.frames[2]])
    few = np.ones((64, 64), bool)
    few[:3, :3] = False
    sparse = CCDData(stack.frames[1].data, unit="electron", mask=few)
    with pytest.raises(ValueError, match=r"frames\[1\] has fewer than 16 usable pixels"):
        register_stack([stack.frames[0], sparse, stack.frames[2]])


def test_import_loads_no_heavy_module():
    # What the import loads, not how long it takes: a timing depends on the machine's load
    # (timings belong in the benchmarks).
    heavy = ("tensorflow", "keras", "dask", "matplotlib", "torch", "skimage")
    code = ("import sys, astrosr; "
            f"print(' '.join(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []
