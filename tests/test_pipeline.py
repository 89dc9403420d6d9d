"""MultiFrameSR: register -> fuse -> refine -> consistency with the frames."""
import numpy as np
import pytest
from astropy import units as u
from astropy.nddata import CCDData
from astropy.wcs import WCS

import astrosr
from astrosr import metrics, psf, simulate

PSF = psf.GaussianPSF(1.0)


def _sky_wcs(shape):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [shape[1] / 2 + 0.5, shape[0] / 2 + 0.5]
    w.wcs.cdelt = [-0.1 / 3600, 0.1 / 3600]
    return w


@pytest.fixture(scope="module")
def stack():
    """8 frames of 32x32 (scale 4) of a sky with a WCS, sky subtracted."""
    truth = simulate.make_sky((128, 128), n_stars=12, n_galaxies=2, nebula=True,
                              star_flux=(2e3, 5e4), seed=21)
    truth[60:63, 70:73] = 0.0
    truth[61, 71] = 3e5  # a bright isolated star for the astrometry check
    ccd = CCDData(truth, unit=u.electron, wcs=_sky_wcs(truth.shape))
    st = simulate.observe(ccd, n_frames=8, scale=4, psf=PSF, sky=50.0, read_noise=5.0, seed=22)
    frames = []
    for f in st.frames:
        g = f.subtract(50.0 * u.electron, propagate_uncertainties=False)
        g.uncertainty, g.mask, g.wcs = f.uncertainty, f.mask, f.wcs
        frames.append(g)
    return st, frames


@pytest.fixture(scope="module")
def tiny_model():
    pytest.importorskip("keras")
    from astrosr.models import SRGAN

    return SRGAN(scale=1, n_blocks=1, filters=4, name="tiny-x1")


def test_without_refinement_the_pipeline_is_the_fusion(stack):
    st, frames = stack
    out = astrosr.MultiFrameSR(scale=4, psf=PSF, refine=None).run(frames)
    shifts = astrosr.register_stack(frames)
    ref = astrosr.fuse(frames, shifts, scale=4, method="reconstruct", psf=PSF)
    np.testing.assert_allclose(out.data, ref.data, rtol=1e-10, atol=1e-10)
    assert out.meta["PIPELINE"] == "astrosr.MultiFrameSR"


def test_refined_output_is_held_to_every_frame(stack, tiny_model):
    st, frames = stack
    sr = astrosr.MultiFrameSR(scale=4, psf=PSF, refine=tiny_model, consistency="observation",
                              folds=0)
    out = sr.run(frames)
    n_pix = sum(int(np.sum(~f.mask)) for f in frames)
    assert out.meta["CHI2RED"] <= 1.0 + 3.0 * np.sqrt(2.0 / n_pix) + 1e-9
    history = "".join(out.meta["HISTORY"])
    for step in ("register_stack", "PSF: given", "fused: astrosr.fuse", "tiny-x1",
                 "Richardson-Lucy from the refined image, stop=discrepancy", "timings"):
        assert step in history
    assert set(sr.timings_) == {"register", "psf", "fuse", "refine", "consistency"}
    assert "NFOLDS" not in out.meta and "PCHI2FUS" not in out.meta
    assert out.shape == (128, 128) and out.uncertainty is not None
    assert metrics.psnr(out, st.truth, margin=8) > metrics.psnr(sr.fused_, st.truth, margin=8) - 1


def test_consistency_none_returns_the_raw_network(stack, tiny_model):
    st, frames = stack
    held = astrosr.MultiFrameSR(scale=4, psf=PSF, refine=tiny_model, consistency="observation",
                                folds=0).run(frames, shifts=st.shifts)
    sr = astrosr.MultiFrameSR(scale=4, psf=PSF, refine=tiny_model, consistency=None, folds=0)
    raw = sr.run(frames, shifts=st.shifts)
    history = "".join(raw.meta["HISTORY"])
    assert "not held to the data" in history and "geometry given" in history
    # What the fusion carries survives the copy (it used to ride on an attribute .copy() drops).
    np.testing.assert_array_equal(raw.weight, sr.fused_.weight)
    assert raw.rejected.shape == (len(frames),) + frames[0].shape
    assert "CHI2RED" not in raw.meta and "register" in sr.timings_
    assert not np.allclose(raw.data, held.data)


def test_a_star_keeps_its_sky_position(stack):
    """pixel_to_world of a star agrees before (the input frames' WCS) and after, within 0.05 px."""
    st, frames = stack
    out = astrosr.MultiFrameSR(scale=4, psf=PSF, refine=None).run(frames)
    # Before: the star's position in the reference frame, through that frame's WCS (the
    # star is at fine pixel (71, 61) of the truth: input pixel s(p + 0.5) - 0.5 inverted).
    before = frames[0].wcs.pixel_to_world((71 + 0.5) / 4 - 0.5, (61 + 0.5) / 4 - 0.5)
    assert before.separation(st.truth.wcs.pixel_to_world(71, 61)) < 1e-6 * u.arcsec
    after = out.wcs.pixel_to_world(*_centroid(out.data, 71, 61, 8))
    assert before.separation(after) < 0.05 * 0.4 * u.arcsec  # input pixels are 0.4"


def _centroid(image, x, y, half):
    x0, y0 = int(round(x)), int(round(y))
    cut = image[y0 - half:y0 + half + 1, x0 - half:x0 + half + 1]
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    return x0 + (cut * xx).sum() / cut.sum(), y0 + (cut * yy).sum() / cut.sum()


def test_refinement_model_must_keep_the_grid(stack):
    pytest.importorskip("keras")
    from astrosr.models import SRGAN

    _, frames = stack
    sr = astrosr.MultiFrameSR(scale=4, psf=PSF, refine=SRGAN(scale=2, n_blocks=1, filters=4))
    with pytest.raises(ValueError, match="scale 1"):
        sr.run(frames)


@pytest.mark.parametrize("kwargs, match", [
    ({"fusion": "median"}, "fusion must be one of"),
    ({"consistency": "pixel"}, "consistency must be one of"),
    ({"scale": 2.5}, "scale must be an integer"),
    ({"folds": 1}, "folds must be 0"),
    ({"folds": 2.5}, "folds must be 0"),
    ({"folds": 0}, "consistency='heldout' chooses by the held-out validation"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        astrosr.MultiFrameSR(**kwargs)


def test_a_wrong_psf_is_flagged(stack):
    _, frames = stack
    from astrosr.misfit import MisfitWarning

    with pytest.warns(MisfitWarning, match=r"the PSF \(psf=\) or the shifts are probably wrong"):
        out = astrosr.MultiFrameSR(scale=4, psf=psf.GaussianPSF(2.0), refine=None).run(frames)
    assert "WARNING: the frames do not fit" in " ".join(" ".join(out.meta["HISTORY"]).split())
    assert out.meta["CHI2OK"] is False


def test_too_few_stars_for_the_psf_asks_for_psf(stack):
    _, frames = stack
    with pytest.raises(ValueError, match=r"cannot estimate the PSF from the stack.*"
                                         r"MultiFrameSR\(psf=.*psf_options=.*--psf-snr"):
        astrosr.MultiFrameSR(scale=4, refine=None).run(frames)


def test_psf_options_reach_the_estimate(stack, monkeypatch):
    from astrosr import psf as psf_models

    _, frames = stack
    seen = {}

    def fake(frames, shifts, *, scale, hdu=None, **options):
        seen.update(options)
        return PSF, "fake"

    monkeypatch.setattr(psf_models, "stack_psf", fake)
    astrosr.MultiFrameSR(scale=4, refine=None, psf_options={"snr": 7.0, "fwhm_guess": 2.5}
                         ).run(frames)
    assert seen == {"snr": 7.0, "fwhm_guess": 2.5}
    with pytest.raises(ValueError, match="psf_options apply to the PSF estimate only"):
        astrosr.MultiFrameSR(scale=4, psf=PSF, psf_options={"snr": 7.0})


def test_a_single_frame_is_not_stacked_and_says_so(stack):
    _, frames = stack
    with pytest.warns(UserWarning, match="1 frame: nothing is stacked"):
        out = astrosr.MultiFrameSR(scale=4, psf=PSF, refine=None).run(frames[:1])
    assert "nothing is stacked" in "".join(out.meta["HISTORY"])


def test_psf_from_a_fits_file(stack, tmp_path):
    from astropy.io import fits

    _, frames = stack
    fits.PrimaryHDU(PSF.kernel(4)).writeto(tmp_path / "psf.fits")
    out = astrosr.MultiFrameSR(scale=4, psf=str(tmp_path / "psf.fits"), refine=None).run(frames)
    ref = astrosr.MultiFrameSR(scale=4, psf=PSF, refine=None).run(frames)
    np.testing.assert_allclose(out.data, ref.data, rtol=1e-6, atol=1e-6 * ref.data.max())
    assert "read from" in "".join(out.meta["HISTORY"])


def test_heldout_validation_scores_every_candidate(stack, tiny_model):
    """An untrained network predicts held-out frames worse than the fusion: never returned."""
    st, frames = stack
    sr = astrosr.MultiFrameSR(scale=4, psf=PSF, refine=tiny_model)
    out = sr.run(frames, st.shifts)
    scores = sr.scores_.reduced()
    assert out.meta["NFOLDS"] == 4 and set(scores) == set(astrosr.pipeline.CANDIDATES)
    for name, key in astrosr.pipeline.SCORE_KEYS.items():
        assert out.meta[key] == pytest.approx(scores[name], abs=1e-5)
    assert scores["refined"] > scores["fusion"] + 0.05
    assert out.meta["CANDIDAT"] == sr.candidate_ != "refined"
    assert sr.scores_.significance(sr.candidate_, min(scores, key=scores.get)) < 2.0
    assert "held-out validation over 4 folds" in "".join(out.meta["HISTORY"])
    assert len(sr.fold_images_["converged"]) == 4


def test_reconstruction_uncertainty_is_calibrated(stack):
    """Pulls against the truth, bias included, per pixel: rms 0.7-1.5.

    Over all but the brightest 1 % of the truth: the cores of stars a single
    fine pixel wide, finer than any fit of these frames can tell (their
    pulls reach 10-20).
    """
    st, frames = stack
    sr = astrosr.MultiFrameSR(scale=4, psf=PSF, refine=None)
    out = sr.run(frames, st.shifts)
    np.testing.assert_array_equal(out.data, sr.fused_.data)
    assert not np.array_equal(out.uncertainty.array, sr.fused_.uncertainty.array)
    truth = st.truth.data
    inner = np.zeros(truth.shape, dtype=bool)
    inner[8:-8, 8:-8] = True
    inner &= truth < np.percentile(truth[inner], 99)
    pulls = (out.data - truth)[inner] / np.sqrt(out.uncertainty.array[inner])
    assert 0.7 <= np.sqrt(np.mean(pulls ** 2)) <= 1.5


def test_aperture_sum_errors_are_calibrated(star_field):
    """Aperture sums of isolated stars against the truth's, over their errors: rms 0.7-1.5."""
    from photutils.aperture import CircularAperture

    st = simulate.observe(star_field, n_frames=8, scale=4, psf=PSF, sky=0.0, read_noise=5.0,
                          seed=23)
    sr = astrosr.MultiFrameSR(scale=4, psf=PSF, refine=None)
    out = sr.run(st.frames, st.shifts)
    stars = metrics.isolated_stars(star_field, radius=16, isolation=24)
    assert len(stars) >= 10
    for radius in (8, 16):
        ap = CircularAperture(stars, r=radius)
        table = sr.photometry(ap)
        true_sums = np.asarray(ap.do_photometry(star_field)[0])
        pulls = (table["aperture_sum"].value - true_sums) / table["aperture_sum_err"].value
        assert 0.5 <= np.sqrt(np.mean(pulls ** 2)) <= 1.5, radius
        assert table["aperture_sum"].unit == out.unit


def test_photometry_needs_the_folds(stack):
    _, frames = stack
    sr = astrosr.MultiFrameSR(scale=4, psf=PSF, refine=None, folds=0)
    with pytest.raises(RuntimeError, match="call run"):
        sr.photometry(None)
    out = sr.run(frames)
    assert "NFOLDS" not in out.meta
    with pytest.raises(RuntimeError, match="folds >= 2"):
        sr.photometry(None)


def test_a_drizzled_result_keeps_its_own_variance(stack):
    """Drizzle's variance is calibrated already; the folds do not replace it.

    A drizzled image holds the PSF already: it is not scored through it (it would be blurred
    twice), and its aperture errors are the jackknife of its own folds alone.
    """
    from photutils.aperture import CircularAperture

    from astrosr.validation import jackknife_variance

    st, frames = stack
    sr = astrosr.MultiFrameSR(scale=4, psf=PSF, fusion="drizzle", refine=None)
    out = sr.run(frames, st.shifts)
    np.testing.assert_array_equal(out.uncertainty.array, sr.fused_.uncertainty.array)
    assert out.meta["CANDIDAT"] == "fusion" and "PCHI2DIS" in out.meta
    assert "PCHI2FUS" not in out.meta
    ap = CircularAperture([(71, 61)], r=8)
    sums = [np.asarray(ap.do_photometry(f)[0]) for f in sr.fold_images_["fusion"]]
    np.testing.assert_allclose(sr.photometry(ap)["aperture_sum_err"].value,
                               np.sqrt(jackknife_variance(sums)))


def test_three_frames_are_left_out_one_by_one(stack):
    """Fewer frames than folds: leave-one-out; every fold scores its own frame."""
    st, frames = stack
    sr = astrosr.MultiFrameSR(scale=4, psf=PSF, refine=None)
    out = sr.run(frames[:3], st.shifts[:3])
    assert out.meta["NFOLDS"] == 3 and len(sr.fold_images_["fusion"]) == 3
    assert np.isfinite(out.meta["PCHI2FUS"]) and np.isfinite(out.meta["PCHI2DIS"])


def test_consistency_converged_returns_the_fit_run_to_convergence(stack, tiny_model):
    st, frames = stack
    sr = astrosr.MultiFrameSR(scale=4, psf=PSF, refine=tiny_model, consistency="converged")
    out = sr.run(frames, st.shifts)
    assert out.meta["CANDIDAT"] == "converged" == sr.candidate_
    assert out.meta["RLSTOP"] in ("converged", "max_iter")
    assert "stop=converged" in "".join(out.meta["HISTORY"])
