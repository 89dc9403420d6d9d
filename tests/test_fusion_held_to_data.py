"""Reconstruction held to the data: stopping rules that cannot stop at nothing (sky-dominated
stacks, with and without the sky subtracted), and the check of the final fit (CHI2OK,
MisfitWarning) when the observation model is wrong."""

import warnings

import numpy as np
import pytest
from astropy.nddata import CCDData
from scipy import ndimage

import astrosr
from astrosr import simulate
from astrosr.metrics import psnr
from astrosr.misfit import CHI2_BOUND, MisfitWarning, fit_passed
from astrosr.psf import GaussianPSF

S = 4
SKY = 500.0
PSF = GaussianPSF(1.2)


@pytest.fixture(scope="module")
def faint_sky():
    """Sky 500 e-, sources peaking near 100 e- above it (sky >= 5x the peaks)."""
    truth = simulate.make_sky((192, 192), n_stars=30, n_galaxies=3, nebula=False,
                              star_flux=(100.0, 1500.0), galaxy_flux=(500.0, 3000.0), seed=1)
    stack = simulate.observe(truth, n_frames=9, scale=S, psf=PSF, sky=SKY, read_noise=5.0,
                             seed=2)
    return truth, stack


@pytest.fixture(scope="module")
def bright_stack(faint_sky):
    """The same sky 50 times brighter over a sky of 100 e-: a wrong PSF cannot fit it."""
    truth, _ = faint_sky
    return simulate.observe(50 * truth, n_frames=9, scale=S, psf=PSF, sky=100.0, read_noise=5.0,
                            seed=3)


def _correlation(image, truth, inner):
    """Correlation with the truth, both smoothed to the scale of an input pixel."""
    a, b = (ndimage.gaussian_filter(np.asarray(x, dtype=float), S) for x in (image, truth))
    return np.corrcoef(a[inner].ravel(), b[inner].ravel())[0, 1]


def _peaks(image, n=8, size=9):
    """(y, x) of the n brightest local maxima (fine pixels)."""
    data = np.asarray(image, dtype=float)
    smooth = ndimage.gaussian_filter(data, 2.0)
    is_peak = (smooth == ndimage.maximum_filter(smooth, size=size))
    is_peak[:16], is_peak[-16:], is_peak[:, :16], is_peak[:, -16:] = False, False, False, False
    ys, xs = np.nonzero(is_peak)
    order = np.argsort(smooth[ys, xs])[::-1][:n]
    return np.column_stack([ys[order], xs[order]])


@pytest.mark.parametrize("subtracted", [False, True])
def test_sky_dominated_stack_is_not_flat_and_matches_drizzle(faint_sky, subtracted):
    truth, stack = faint_sky
    frames = [f.copy() for f in stack.frames]
    peak = max(float(np.max(f.data)) for f in frames) - SKY
    assert SKY >= 2.0 * peak  # the sky dominates every pixel
    if subtracted:
        for f in frames:
            f.data = f.data - SKY
    expected = truth if subtracted else truth + SKY / S ** 2
    rec = astrosr.fuse(frames, stack.shifts, scale=S, method="reconstruct", psf=PSF)
    drz = astrosr.fuse(frames, stack.shifts, scale=S, method="drizzle", pixfrac=0.7)
    assert rec.meta["RLSTOP"] == "converged"
    history = " ".join(rec.meta["HISTORY"])
    iterations = int(history.split("iterations=")[1].split()[0])
    assert iterations > 20  # the stopping rule did not stop at the start
    inner = (slice(16, -16), slice(16, -16))
    # Never flat: on the scale of an input pixel the result follows the truth's sources
    # (at least as well as drizzle).
    assert _correlation(rec.data, truth, inner) > max(0.8, _correlation(drz.data, truth, inner))
    assert psnr(rec, expected, margin=16) >= psnr(drz, expected, margin=16) - 1.0
    # Drizzle and reconstruct agree on where the sources are (within one input pixel).
    for y, x in _peaks(drz.data):
        nearest = np.min(np.hypot(*(_peaks(rec.data, n=20) - (y, x)).T))
        assert nearest <= S
    if not subtracted:  # the pedestal is a known background: the flux above it is kept
        assert np.sum(rec.data) - rec.size * SKY / S ** 2 == pytest.approx(truth.sum(), rel=0.05)
    assert fit_passed(rec.meta)


def test_a_pedestal_is_known_background_and_comes_back(faint_sky):
    """With or without the sky subtracted, the same image above the sky."""
    truth, stack = faint_sky
    raw = astrosr.fuse(stack.frames, stack.shifts, scale=S, method="reconstruct", psf=PSF,
                       reject=False)
    frames = [CCDData(f.data - SKY, unit=f.unit, uncertainty=f.uncertainty) for f in stack.frames]
    sub = astrosr.fuse(frames, stack.shifts, scale=S, method="reconstruct", psf=PSF, reject=False)
    assert "pedestal=0 " in " ".join(sub.meta["HISTORY"])
    # The sky comes back at its level, within a tenth of its noise per input pixel.
    sky = (np.asarray(raw.data) - truth)[16:-16, 16:-16]
    assert np.mean(sky) * S ** 2 == pytest.approx(SKY, abs=0.1 * np.sqrt(SKY))
    assert psnr(np.asarray(raw.data) - SKY / S ** 2, truth, margin=16) > \
        psnr(sub, truth, margin=16) - 1.0


def test_a_wrong_psf_is_a_misfit_with_a_warning(bright_stack):
    stack = bright_stack
    with pytest.warns(MisfitWarning, match=r"reduced chi-square .* > 1\.3; the PSF"):
        rec = astrosr.fuse(stack.frames, stack.shifts, scale=S, method="reconstruct",
                           psf=GaussianPSF(3.0), reject=False, max_iter=200)
    assert rec.meta["CHI2OK"] is False and rec.meta["CHI2RED"] > CHI2_BOUND
    assert rec.meta["CHI2MAX"] == CHI2_BOUND


def test_the_right_psf_passes_without_a_warning(bright_stack):
    stack = bright_stack
    with warnings.catch_warnings():
        warnings.simplefilter("error", MisfitWarning)
        rec = astrosr.fuse(stack.frames, stack.shifts, scale=S, method="reconstruct", psf=PSF,
                           reject=False)
    assert rec.meta["CHI2OK"] is True and rec.meta["RLSTOP"] == "converged"
    assert rec.meta["CHI2RED"] < 1.2


def test_discrepancy_that_cannot_be_reached_stops_and_says_so(bright_stack):
    """A wrong PSF: the discrepancy rule gives up, returns its best fit, and says why."""
    stack = bright_stack
    with pytest.warns(MisfitWarning):
        rec = astrosr.fuse(stack.frames, stack.shifts, scale=S, method="reconstruct",
                           psf=GaussianPSF(3.0), reject=False, stop="discrepancy", max_iter=400)
    assert rec.meta["RLSTOP"] in ("stalled", "max_iter")
    assert "stop=discrepancy" not in " ".join(rec.meta["HISTORY"])
    # The best iterate is returned: no worse than a fit cut short at 10 iterations.
    with pytest.warns(MisfitWarning):
        short = astrosr.fuse(stack.frames, stack.shifts, scale=S, method="reconstruct",
                             psf=GaussianPSF(3.0), reject=False, stop="discrepancy", max_iter=10)
    assert rec.meta["CHI2RED"] <= short.meta["CHI2RED"]


def _clipped(frames, level, keyword):
    """Frames clipped at ``level`` (a saturated camera), with or without SATURATE."""
    out = []
    for f in frames:
        g = CCDData(np.minimum(f.data, level), unit=f.unit, uncertainty=f.uncertainty,
                    meta={"SATURATE": level} if keyword else {})
        out.append(g)
    return out


def test_saturated_stars_are_masked_not_fitted(bright_stack):
    stack = bright_stack
    level = float(np.percentile(np.concatenate([f.data.ravel() for f in stack.frames]), 99.0))
    frames = _clipped(stack.frames, level, keyword=True)
    n_clipped = sum(int(np.sum(f.data >= level)) for f in frames)
    assert n_clipped > 20
    with warnings.catch_warnings():
        warnings.simplefilter("error", MisfitWarning)
        rec = astrosr.fuse(frames, stack.shifts, scale=S, method="reconstruct", psf=PSF,
                           reject=False)
    assert fit_passed(rec.meta)
    # The same clipped pixels, hidden from the saturation test (no keyword, and not all equal
    # to the maximum): fitted as if they were unsaturated, the frames cannot be reproduced.
    hidden = _clipped(stack.frames, level, keyword=False)
    for i, f in enumerate(hidden):
        at = f.data >= level
        f.data = np.where(at, level - 1e-3 * np.arange(at.size).reshape(at.shape), f.data)
    with pytest.warns(MisfitWarning):
        bad = astrosr.fuse(hidden, stack.shifts, scale=S, method="reconstruct", psf=PSF,
                           reject=False)
    assert bad.meta["CHI2RED"] > rec.meta["CHI2RED"]


def test_clipped_frames_without_a_keyword_are_found(bright_stack):
    """Pixels sharing the image's maximum were clipped: masked, with their neighbours."""
    from astrosr.nddata import frame_arrays

    frame = bright_stack.frames[0]
    level = float(np.percentile(frame.data, 99.8))
    (clipped,) = _clipped([frame], level, keyword=False)
    _, _, good = frame_arrays(clipped)
    at = clipped.data >= level
    assert not good[at].any()
    assert (~good).sum() > at.sum()  # and the pixels beside them
    _, _, good_raw = frame_arrays(frame)
    assert good_raw.all()
