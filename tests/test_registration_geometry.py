"""register_stack with rotation and scale, seeded by the WCS, and on undersampled frames."""

import time

import numpy as np
import pytest
from astropy import units as u
from astropy.table import QTable
from astropy.wcs import WCS

from astrosr import fuse, psf, register_stack, simulate
from astrosr.geometry import Similarity


@pytest.fixture(scope="module")
def sky():
    return simulate.make_sky((384, 384), n_stars=40, n_galaxies=6, nebula=True, nebula_flux=20.0,
                             seed=5)


def _geometry(rotation, scale=None, seed=0):
    rng = np.random.default_rng(seed)
    n = len(rotation)
    shift = np.vstack([[0.0, 0.0], rng.uniform(-1.5, 1.5, (n - 1, 2))])
    # render_geometry integrates a frame pixel by a midpoint rule on 16 x 16 points over
    # piecewise-constant fine pixels: where the frame's grid is aligned with them (multiples of
    # 90 deg) a shift is drawn to the nearest 1/16 px, so such frames get shifts on that lattice.
    aligned = np.isclose(np.asarray(rotation, float) % 90.0, 0.0)
    shift[aligned] = np.round(shift[aligned] * 16) / 16
    table = QTable({"frame": np.arange(n), "dx": shift[:, 0] * u.pix, "dy": shift[:, 1] * u.pix,
                    "rotation": np.asarray(rotation, float) * u.deg})
    if scale is not None:
        table["scale"] = np.asarray(scale, float) * u.one
    return table


def _params(table, names):
    return np.column_stack([u.Quantity(table[n]).value for n in names])


@pytest.mark.parametrize("kind", ["rigid", "similarity"])
def test_rotation_and_scale_of_any_angle_recovered_with_calibrated_errors(sky, kind):
    rotation = [0.0, 7.3, -12.1, 90.0, 180.0, -163.0]
    scale = [1.0, 1.015, 0.985, 1.0, 1.01, 0.99] if kind == "similarity" else None
    truth = _geometry(rotation, scale)
    stack = simulate.observe(sky, geometry=truth, scale=4, psf=psf.GaussianPSF(1.2), seed=2)
    table = register_stack(stack.frames, transform=kind)
    names = ["dx", "dy", "rotation"] + (["scale"] if kind == "similarity" else [])
    assert table.colnames[:5] == ["frame", "dx", "dy", "dx_err", "dy_err"]
    assert table["rotation"].unit == u.deg and "rotation_err" in table.colnames
    assert ("scale_err" in table.colnames) == (kind == "similarity")
    est, true = _params(table, names), _params(truth, names)
    err = _params(table, [n + "_err" for n in names])
    resid = (est - true)[1:]
    resid[:, 2] = (resid[:, 2] + 180.0) % 360.0 - 180.0
    assert np.all(err[0] == 0) and np.all(err[1:] > 0)
    np.testing.assert_allclose(resid[:, :2], 0.0, atol=0.03)
    np.testing.assert_allclose(resid[:, 2], 0.0, atol=0.05)
    if kind == "similarity":
        np.testing.assert_allclose(resid[:, 3], 0.0, atol=1e-3)
    # Calibrated: no residual beyond 4.5 sigma, and their spread is near 1.
    pulls = resid / err[1:]
    assert np.all(np.abs(pulls) < 4.5)
    assert 0.4 < np.std(pulls) < 1.8
    assert table.meta["transform"] == kind


def test_rigid_table_fuses_like_the_true_geometry(sky):
    truth = _geometry([0.0, 15.0, -8.0, 180.0])
    stack = simulate.observe(sky, geometry=truth, scale=4, psf=psf.GaussianPSF(1.2), seed=3)
    table = register_stack(stack.frames, transform="rigid", reference=1)
    assert table["rotation"][1] == 0 and table["dx"][1] == 0
    a = fuse(stack.frames, table, scale=2, reference=1)
    b = fuse(stack.frames, _relative_truth(truth, 1, stack.frames[0].shape), scale=2, reference=1)
    inner = (slice(20, -20), slice(20, -20))
    assert np.abs(a.data - b.data)[inner].max() < 0.03 * np.abs(b.data[inner]).max()


def _relative_truth(truth, r, shape):
    """The true geometry relative to frame r (G_i o G_r^-1)."""
    c = ((shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0)
    sims = [Similarity(row["dx"].value, row["dy"].value, row["rotation"].value, center=c)
            for row in truth]
    out = truth.copy()
    for i, s in enumerate(sims):
        x, y = s.reference_to_frame(*sims[r].frame_to_reference(c[0], c[1]))
        out["dx"][i] = (x - c[0]) * u.pix
        out["dy"][i] = (y - c[1]) * u.pix
        out["rotation"][i] = (s.rotation - sims[r].rotation) * u.deg
    return out


def test_undersampled_frames_are_fitted_against_a_fine_model(star_field):
    sharp = psf.GaussianPSF(0.5)
    stack = simulate.observe(star_field, n_frames=8, scale=4, psf=sharp, seed=11)
    true = _params(stack.shifts, ["dx", "dy"])
    true -= true[0]
    model = register_stack(stack.frames)
    assert model.meta["registration"].startswith("model: undersampled")
    plain = register_stack(stack.frames, method="correlation")
    assert plain.meta["registration"] == "correlation: requested"
    r_model = _params(model, ["dx", "dy"]) - true
    r_plain = _params(plain, ["dx", "dy"]) - true
    rms = lambda r: float(np.sqrt(np.mean(r[1:] ** 2)))  # noqa: E731
    assert rms(r_model) < 0.25 * rms(r_plain)
    pulls = r_model[1:] / _params(model, ["dx_err", "dy_err"])[1:]
    assert 0.4 < np.std(pulls) < 1.8


def test_auto_keeps_well_sampled_frames_on_the_fast_path(star_field):
    stack = simulate.observe(star_field, n_frames=4, scale=4, psf=psf.GaussianPSF(1.2), seed=1)
    table = register_stack(stack.frames, psf=psf.GaussianPSF(1.2))
    assert table.meta["registration"].startswith("correlation: well sampled")


def _tan_wcs(shape):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [(shape[1] + 1) / 2.0, (shape[0] + 1) / 2.0]
    w.wcs.cd = np.array([[-1.0, 0.0], [0.0, 1.0]]) * 0.4 / 3600.0
    w.wcs.set()
    return w


def test_use_wcs_refines_a_wcs_that_is_off(sky):
    """Frames whose WCS is off by ~0.5 px and 0.1 deg: the correction and the corrected WCS."""
    truth = _geometry([0.0, 10.0, -6.0, 4.0])
    stack = simulate.observe(sky, geometry=truth, scale=4, psf=psf.GaussianPSF(1.2), seed=4)
    shape = stack.frames[0].shape
    ref_wcs = _tan_wcs(shape)
    c = ((shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0)
    frames, exact = [], []
    for i, (f, row) in enumerate(zip(stack.frames, truth)):
        sim = Similarity(row["dx"].value, row["dy"].value, row["rotation"].value, center=c)
        exact.append(sim)
        off = Similarity(*((0.5, -0.4, 0.1) if i else (0.0, 0.0, 0.0)), center=c)
        f = f.copy()
        f.wcs = _wcs_of(ref_wcs, sim, off, shape)
        frames.append(f)
    table = register_stack(frames, transform="rigid", use_wcs=True)
    assert "wcs" in table.colnames and table.meta["wcs_residual_px"] < 1e-3
    yy, xx = np.mgrid[0:shape[0]:8, 0:shape[1]:8].astype(float)
    for i in range(1, len(frames)):
        # The corrected WCS puts frame pixels where the truth does, on the reference's pixels.
        sky_xy = table["wcs"][i].pixel_to_world_values(xx, yy)
        px, py = ref_wcs.world_to_pixel_values(*sky_xy)
        tx, ty = exact[i].frame_to_reference(xx, yy)
        assert np.max(np.hypot(px - tx, py - ty)) < 0.03
    fused = fuse(frames, table, scale=2)
    assert "corrected" in " ".join(fused.meta["HISTORY"])


def _wcs_of(ref_wcs, sim, off, shape):
    """A frame WCS seen through the true geometry, then put off by ``off`` (frame pixels)."""
    from astrosr.geometry import fitted_wcs

    def to_ref(x, y):
        return sim.frame_to_reference(*off.frame_to_reference(x, y))
    return fitted_wcs(ref_wcs, to_ref, shape, sip_degree=None)


def test_errors_are_clear():
    cube = np.random.default_rng(0).normal(size=(3, 32, 32))
    with pytest.raises(ValueError, match="transform must be one of"):
        register_stack(cube, transform="affine")
    with pytest.raises(ValueError, match="method must be"):
        register_stack(cube, method="fast")
    with pytest.raises(ValueError, match="needs a WCS on every frame"):
        register_stack(cube, use_wcs=True)


def test_frames_of_different_skies_are_refused_in_seconds(sky):
    other = simulate.make_sky((384, 384), n_stars=40, n_galaxies=6, nebula=True,
                              nebula_flux=20.0, seed=99)
    a = simulate.observe(sky, n_frames=2, scale=4, psf=psf.GaussianPSF(1.2), seed=1).frames
    b = simulate.observe(other, n_frames=2, scale=4, psf=psf.GaussianPSF(1.2), seed=2).frames
    for kind in ("shift", "rigid"):
        t0 = time.perf_counter()
        with pytest.raises(ValueError, match="do not overlap or show different skies"):
            register_stack([a[0], a[1], b[0]], transform=kind)
        assert time.perf_counter() - t0 < 10.0
