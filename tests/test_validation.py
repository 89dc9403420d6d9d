"""Held-out frames: prediction through the model, k-fold scores, jackknife errors."""
import numpy as np
import pytest

from astrosr import FrameStack, psf, simulate
from astrosr.fusion import predict_frames
from astrosr.validation import (HeldOutScores, aperture_errors, fold_variance, frame_folds,
                                held_out, heldout_chi2, jackknife_variance)

PSF = psf.GaussianPSF(1.0)


@pytest.fixture(scope="module")
def sky():
    return simulate.make_sky((96, 96), n_stars=15, n_galaxies=2, nebula=True, seed=5)


@pytest.fixture(scope="module")
def noisy(sky):
    st = simulate.observe(sky, n_frames=8, scale=4, psf=PSF, sky=0.0, read_noise=5.0, seed=6)
    return st, FrameStack.parse(st.frames)


def test_folds_partition_the_frames_interleaved():
    folds = frame_folds(10, 4)
    np.testing.assert_array_equal(np.sort(np.concatenate(folds)), np.arange(10))
    np.testing.assert_array_equal(folds[1], [1, 5, 9])
    for bad in (1, 11):
        with pytest.raises(ValueError, match="2 <= folds <= frames"):
            frame_folds(10, bad)


def test_prediction_is_the_simulators_noise_free_frames(sky):
    shifts = simulate.default_shifts(5, seed=3)
    expected = simulate.render(sky, shifts, scale=4, psf=PSF, edge="zero")
    frames = [np.zeros_like(e) for e in expected]
    predicted, modelled = predict_frames(sky, frames, shifts, psf=PSF, scale=4)
    # The PSF's reach (4 sigma, 1 input pixel here) is lost at the borders, not more.
    assert modelled[:, 5:-5, 5:-5].all() and not modelled[:, 0, 0].any()
    peak = expected.max()
    np.testing.assert_allclose(predicted[modelled], expected[modelled], atol=1e-6 * peak)


def test_the_truth_predicts_held_out_frames_within_their_noise(sky, noisy):
    st, stack = noisy
    chi2, blocks, n_frames = heldout_chi2(sky, stack, st.shifts, [1, 5], psf=PSF, scale=4)
    assert n_frames == 2 and blocks.shape == chi2.shape
    # Frames of 24x24 pixels: 2x2 blocks of 16 each (the borders cut), none shared by frames.
    assert len(np.unique(blocks)) == 8
    assert abs(chi2.mean() - 1.0) < 4.0 * np.sqrt(2.0 / chi2.size)
    # A sky 0.2 input pixels off, or blurred, predicts them far worse.
    from scipy import ndimage

    for wrong in (ndimage.shift(sky, (0.0, 0.8), order=3), ndimage.gaussian_filter(sky, 2.0)):
        worse, _, _ = heldout_chi2(wrong, stack, st.shifts, [1, 5], psf=PSF, scale=4)
        assert worse.mean() > 1.2


def test_held_out_frames_have_no_good_pixel(noisy):
    _, stack = noisy
    less = held_out(stack, [0, 3])
    assert not less.good[[0, 3]].any() and np.array_equal(less.good[1], stack.good[1])
    assert np.isinf(less.background_variance()[[0, 3]]).all()


def test_paired_significance_sees_what_the_sums_hide():
    rng = np.random.default_rng(1)
    base = rng.chisquare(1, 20000)
    blocks = np.arange(base.size) // 16
    scores = HeldOutScores(["a", "b", "c"])
    # b is worse by 0.5 % of a chi-square everywhere: lost in the chi2's own noise (0.7 %),
    # but the same pixels scored for both show it.
    scores.add({"a": base, "b": base * 1.005, "c": base + rng.normal(0, 1e-3, base.size)},
               blocks, 4)
    assert scores.n == base.size - 4 and scores.n_blocks == 1250
    assert scores.significance("b", "a") > 10 and scores.significance("a", "b") < -10
    assert abs(scores.significance("c", "a")) < 4
    assert scores.choose(["b", "c", "a"]) in ("c", "a")
    assert scores.choose(["b"]) == min(scores.names, key=scores.reduced().get)


def test_errors_correlated_within_blocks_are_not_taken_for_a_difference():
    """A difference constant over each block, of random sign: no significance beyond noise.

    Counted per pixel, the same difference would look 4 (= sqrt(16)) times as significant.
    """
    rng = np.random.default_rng(2)
    blocks = np.arange(16 * 400) // 16
    z = []
    for _ in range(200):
        base = rng.chisquare(1, blocks.size)
        scores = HeldOutScores(["a", "b"])
        scores.add({"a": base, "b": base + rng.normal(0, 0.1, 400)[blocks]}, blocks)
        z.append(scores.significance("b", "a"))
    assert 0.8 < np.std(z) < 1.25


def test_jackknife_of_a_mean_is_the_between_groups_variance():
    rng = np.random.default_rng(2)
    data = rng.normal(3.0, 2.0, (12, 50))  # 12 values of 50 quantities, 4 groups of 3
    groups = [np.arange(j, 12, 4) for j in range(4)]
    folds = [np.delete(data, g, axis=0).mean(axis=0) for g in groups]
    means = np.array([data[g].mean(axis=0) for g in groups])
    # For the mean, the delete-a-group jackknife equals var(group means) / k exactly.
    np.testing.assert_allclose(jackknife_variance(folds), means.var(axis=0, ddof=1) / 4)
    with pytest.raises(ValueError, match="2 or more folds"):
        jackknife_variance(folds[:1])


def test_fold_variance_adds_the_alternatives_spread():
    folds = np.array([[1.0, 2.0], [3.0, 2.0]])
    other = np.array([[3.0, 2.0], [5.0, 2.0]])  # fold mean 2 above
    np.testing.assert_allclose(fold_variance(folds), [1.0, 0.0])
    np.testing.assert_allclose(fold_variance(folds, [other]), [5.0, 0.0])


def test_aperture_errors_are_the_jackknife_of_the_sums():
    from photutils.aperture import CircularAperture

    rng = np.random.default_rng(3)
    folds = [np.full((20, 20), 1.0) + rng.normal(0, 0.1, (20, 20)) for _ in range(4)]
    ap = CircularAperture([(10, 10), (5, 14)], r=3)
    sums, errors = aperture_errors(folds[0], folds, ap)
    per_fold = [np.asarray(ap.do_photometry(f)[0]) for f in folds]
    np.testing.assert_allclose(errors, np.sqrt(jackknife_variance(per_fold)))
    np.testing.assert_allclose(sums, per_fold[0])


def test_a_held_out_fold_is_as_if_its_frames_were_never_given(noisy):
    """Drizzle of the stack less frames 1 and 5 = drizzle of the other frames alone."""
    from astrosr import fuse

    st, stack = noisy
    keep = [i for i in range(len(stack)) if i not in (1, 5)]
    less = fuse(held_out(stack, [1, 5]), st.shifts, scale=4, method="drizzle", reject=False)
    alone = fuse([st.frames[i] for i in keep], st.shifts[keep], scale=4, method="drizzle",
                 reject=False)
    np.testing.assert_allclose(less.data, alone.data, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(less.uncertainty.array, alone.uncertainty.array, rtol=1e-12)


def test_prediction_of_rotated_frames_is_the_simulators(sky):
    """Any geometry: the polygon-overlap operator against the simulator's midpoint integral."""
    from astropy.table import Table

    geometry = Table({"dx": [0.0, 0.4, -0.3], "dy": [0.0, -0.2, 0.6],
                      "rotation": [0.0, 7.0, -12.0]})
    expected = simulate.render_geometry(sky, geometry, scale=4, psf=PSF, edge="zero")
    frames = [np.zeros_like(e) for e in expected]
    predicted, modelled = predict_frames(sky, frames, geometry, psf=PSF, scale=4)
    assert modelled[:, 8:-8, 8:-8].all()
    peak = expected.max()
    # 4e-4 of the peak measured (the simulator's midpoint rule); the rotations' opposite sign
    # gives 0.4.
    np.testing.assert_allclose(predicted[modelled], expected[modelled], atol=1e-3 * peak)
