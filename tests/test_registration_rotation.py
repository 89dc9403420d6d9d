"""Coarse similarity registration (astrosr.registration.rotation) against injected geometries.

128x128 frames rendered from 512x512 fine-grid skies at scale 4 with the
DESIGN.md convention (`astrosr.simulate.observe(geometry=...)`, the sky ending
at the edges so that a mirrored sky does not enter), then asserted within the
coarse tolerances a Gauss-Newton refinement needs.
"""
import numpy as np
import pytest
from astropy import units as u
from astropy.table import QTable

from astrosr import simulate
from astrosr.geometry import Similarity
from astrosr.psf import GaussianPSF
from astrosr.registration.rotation import CoarseSimilarity, coarse_similarity

#: Coarse tolerances: rotation (deg), scale (fraction), shift (frame pixels).
TOL_ROTATION, TOL_SCALE, TOL_SHIFT = 0.3, 0.003, 0.5
#: (rotation deg, scale, dx, dy) of frames 1.. (frame 0 is the reference).
CASES = [(-17.0, 1.03, 25.0, -18.0), (33.0, 0.98, -20.0, 12.0), (90.0, 1.0, 12.0, 25.0),
         (180.0, 1.03, -25.0, -18.0), (-135.0, 0.98, 18.0, 22.0),
         (-160.0, 1.0, -32.0, -32.0)]  # a quarter of the frame along both axes
SKIES = {
    "stars": dict(n_stars=150, n_galaxies=0, nebula=False, seed=1),
    "extended": dict(n_stars=20, n_galaxies=25, nebula=True, seed=1),
}
CENTER = (63.5, 63.5)


def geometry(cases):
    """Geometry table with the reference (identity) first, then ``cases``."""
    rows = [(0.0, 1.0, 0.0, 0.0)] + list(cases)
    rot, scl, dx, dy = (np.array(c) for c in zip(*rows))
    return QTable({"frame": np.arange(len(rows)), "dx": dx * u.pix, "dy": dy * u.pix,
                   "rotation": rot * u.deg, "scale": scl * u.one})


@pytest.fixture(scope="module")
def truths():
    return {name: simulate.make_sky((512, 512), **kw) for name, kw in SKIES.items()}


@pytest.fixture(scope="module")
def stacks(truths):
    """Noisy 128x128 frames of each sky at PSF sigma 1.2 and 0.5 px, keyed by (sky, sigma)."""
    out = {}
    for i, (name, truth) in enumerate(truths.items()):
        for j, sigma in enumerate((1.2, 0.5)):
            obs = simulate.observe(truth, geometry=geometry(CASES), psf=GaussianPSF(sigma),
                                   scale=4, seed=10 * i + j, edge="zero")
            out[name, sigma] = [f.data for f in obs.frames]
    return out


def wrapped(angle):
    return (angle + 180.0) % 360.0 - 180.0


def centroid(image, x, y, half=3):
    """Background-subtracted centroid of ``image`` in a box around pixel ``(x, y)``."""
    x0, y0 = int(round(x)), int(round(y))
    box = image[y0 - half:y0 + half + 1, x0 - half:x0 + half + 1]
    box = np.clip(box - np.median(image), 0.0, None)
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    return x0 + (xx * box).sum() / box.sum(), y0 + (yy * box).sum() / box.sum()


# --------------------------------------------------------------------------- the convention


def test_rendered_frames_follow_the_similarity_convention():
    """A single star: where render_geometry puts it is where Similarity.reference_to_frame says."""
    truth = np.zeros((512, 512))
    truth[300, 200] = 1e6  # fine pixel (200, 300): reference pixel (200.5 / 4 - 0.5, 300.5 / 4 - 0.5)
    geo = geometry([(30.0, 1.03, 10.0, -5.0), (180.0, 1.0, -25.0, 18.0)])
    frames = simulate.render_geometry(truth, geo, scale=4, psf=GaussianPSF(1.2), edge="zero")
    px, py = centroid(frames[0], 49.625, 74.625, half=8)
    assert (px, py) == pytest.approx((49.625, 74.625), abs=0.01)
    for frame, (rot, scl, dx, dy) in zip(frames[1:], [(30.0, 1.03, 10.0, -5.0),
                                                       (180.0, 1.0, -25.0, 18.0)]):
        qx, qy = Similarity(dx, dy, rot, scl, center=CENTER).reference_to_frame(px, py)
        assert centroid(frame, qx, qy, half=8) == pytest.approx((qx, qy), abs=0.01)


def test_result_maps_a_bright_star_through_similarity(stacks):
    """The brightest star of the reference, mapped by the result's Similarity, lands on it."""
    frames = stacks["stars", 1.2]
    ref = frames[0]
    inner = ref[20:-20, 20:-20]
    y, x = np.unravel_index(np.argmax(inner), inner.shape)
    px, py = centroid(ref, x + 20, y + 20)
    checked = 0
    for image, (rot, scl, dx, dy) in zip(frames[1:], CASES):
        qx, qy = Similarity(dx, dy, rot, scl, center=CENTER).reference_to_frame(px, py)
        if not (4 <= qx <= 123 and 4 <= qy <= 123):
            continue  # the star has left the frame
        found = coarse_similarity(ref, image).similarity(CENTER).reference_to_frame(px, py)
        assert found == pytest.approx(centroid(image, qx, qy), abs=0.3)
        checked += 1
    assert checked >= 3


def test_shift_is_in_frame_pixels_after_rotation(truths):
    """At 90 degrees a pure shift along x of the frame is dx, not (0, -dx) on the reference grid."""
    obs = simulate.observe(truths["extended"], geometry=geometry([(90.0, 1.0, 20.0, 0.0)]),
                           psf=GaussianPSF(1.2), scale=4, seed=5, edge="zero")
    dx, dy, rot, scl = coarse_similarity(obs.frames[0].data, obs.frames[1].data)
    assert (dx, dy, rot, scl) == pytest.approx((20.0, 0.0, 90.0, 1.0), abs=0.2)


# --------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("sky", list(SKIES))
@pytest.mark.parametrize("sigma", [1.2, 0.5])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_recovers_injected_similarity(stacks, sky, sigma, case):
    frames = stacks[sky, sigma]
    rot, scl, dx, dy = CASES[case]
    res = coarse_similarity(frames[0], frames[case + 1])
    assert abs(wrapped(res.rotation - rot)) < TOL_ROTATION
    assert abs(res.scale / scl - 1.0) < TOL_SCALE
    assert np.hypot(res.dx - dx, res.dy - dy) < TOL_SHIFT
    assert res.correlation > 0.8


def test_inverse_roles_give_the_inverse_transform(stacks):
    frames = stacks["extended", 0.5]
    forward = coarse_similarity(frames[0], frames[2]).similarity(CENTER)
    backward = coarse_similarity(frames[2], frames[0]).similarity(CENTER)
    x, y = np.array([10.0, 100.0, 60.0]), np.array([20.0, 50.0, 110.0])
    assert np.allclose(backward.reference_to_frame(*forward.reference_to_frame(x, y)), (x, y),
                       atol=0.5)


def test_rigid_fit_returns_scale_exactly_one(truths):
    obs = simulate.observe(truths["stars"], geometry=geometry([(-135.0, 1.0, 18.0, -22.0)]),
                           psf=GaussianPSF(0.5), scale=4, seed=7, edge="zero")
    res = coarse_similarity(obs.frames[0].data, obs.frames[1].data, scale=False)
    assert res.scale == 1.0 and res[3] == 1.0
    assert abs(wrapped(res.rotation + 135.0)) < TOL_ROTATION
    assert np.hypot(res.dx - 18.0, res.dy + 22.0) < TOL_SHIFT


def test_bad_pixels_are_ignored(stacks):
    frames = stacks["stars", 1.2]
    image = frames[4].copy()
    good = np.ones(image.shape, bool)
    good[40:70, 30:50] = False
    image[~good] = 6e4
    rot, scl, dx, dy = CASES[3]
    res = coarse_similarity(frames[0], image, good=(np.ones(image.shape, bool), good))
    assert abs(wrapped(res.rotation - rot)) < TOL_ROTATION
    assert np.hypot(res.dx - dx, res.dy - dy) < TOL_SHIFT


# --------------------------------------------------------------------------- the result


def test_result_unpacks_and_measures_the_match(stacks):
    frames = stacks["extended", 1.2]
    res = coarse_similarity(frames[0], frames[1])
    assert isinstance(res, CoarseSimilarity) and len(res) == 4
    dx, dy, rotation, scale = res
    assert (dx, dy, rotation, scale) == (res.dx, res.dy, res.rotation, res.scale)
    assert -180.0 < rotation <= 180.0
    assert res.correlation > 0.9
    assert 0.5 < res.overlap < 1.0  # shifted by (25, -18) and rotated: part of the frame is lost


@pytest.mark.parametrize("kw", [dict(n_stars=150, n_galaxies=0, nebula=False),
                                dict(n_stars=20, n_galaxies=25, nebula=True)])
def test_unrelated_frames_correlate_less(stacks, kw):
    """Another sky: the best transform found correlates far less than a real match."""
    ref = stacks["stars" if kw["n_stars"] == 150 else "extended", 1.2][0]
    other = simulate.observe(simulate.make_sky((512, 512), seed=99, **kw), n_frames=1,
                             psf=GaussianPSF(1.2), scale=4, seed=3).frames[0].data
    assert coarse_similarity(ref, other).correlation < 0.5
    rng = np.random.default_rng(4)
    assert coarse_similarity(rng.normal(size=(64, 64)), rng.normal(size=(64, 64))).correlation < 0.3


def test_non_square_frames():
    truth = simulate.make_sky((384, 512), n_stars=120, n_galaxies=0, nebula=False, seed=4)
    rot, scl, dx, dy = -100.0, 0.97, 20.0, -12.0
    obs = simulate.observe(truth, geometry=geometry([(rot, scl, dx, dy)]), psf=GaussianPSF(0.8),
                           scale=4, seed=2, edge="zero")
    assert obs.frames[0].shape == (96, 128)
    res = coarse_similarity(obs.frames[0].data, obs.frames[1].data)
    assert abs(wrapped(res.rotation - rot)) < TOL_ROTATION
    assert abs(res.scale / scl - 1.0) < TOL_SCALE
    assert np.hypot(res.dx - dx, res.dy - dy) < TOL_SHIFT


@pytest.mark.parametrize("bad", ["shape", "nan", "small"])
def test_rejects_bad_input(bad):
    a = np.random.default_rng(0).normal(size=(32, 32))
    b = {"shape": a[:, :30], "nan": np.where(a > 2, np.nan, a), "small": a[:8, :8]}[bad]
    ref = a[:8, :8] if bad == "small" else a
    with pytest.raises(ValueError):
        coarse_similarity(ref, b)
