"""Raw camera frames: the simulated defects, and their calibration (astrosr.camera, .calibration)."""

import time
import warnings

import numpy as np
import pytest
from scipy import ndimage
from astropy import units as u
from astropy.nddata import CCDData, StdDevUncertainty

import astrosr
from astrosr import psf, simulate
from astrosr.calibration import calibrate, calibrated_stack, is_raw
from astrosr.camera import DEFECTS, Camera

SHIFTS = np.array([[0.0, 0.0], [6.3, 2.1], [-4.6, 5.2], [9.2, -3.4]])


@pytest.fixture(scope="module")
def sky():
    return simulate.make_sky((384, 512), n_stars=60, n_galaxies=3, nebula=True, nebula_flux=5.0,
                             seed=5)


def _observe(sky, camera, seed=3, **kwargs):
    return simulate.observe(sky, scale=2, psf=psf.GaussianPSF(1.3), shifts=SHIFTS, sky=300.0,
                            read_noise=8.0, seed=seed, camera=camera, **kwargs)


@pytest.fixture(scope="module")
def raw(sky):
    return _observe(sky, Camera(trails=0.0, row_banding=6.0, column_banding=8.0))


@pytest.fixture(scope="module")
def calibrated(raw):
    return calibrate(raw.frames)


def _shift_error(table):
    est = np.column_stack([table["dx"].value, table["dy"].value])
    return np.abs(est - SHIFTS)[1:], np.column_stack([table["dx_err"].value,
                                                      table["dy_err"].value])[1:]


# --------------------------------------------------------------------------- the camera

def test_raw_frames_are_uint16_adu_without_uncertainty_or_mask(raw):
    frame = raw.frames[0]
    assert frame.data.dtype == np.uint16 and frame.unit == u.adu
    assert frame.uncertainty is None and frame.mask is None
    assert frame.meta["GAIN"] == 1.0
    assert is_raw(frame)


def test_ideal_camera_gives_the_sky_over_the_gain(sky):
    obs = simulate.observe(np.full((128, 128), 0.0), scale=2, n_frames=2, sky=400.0,
                           read_noise=4.0, seed=1, camera=Camera.ideal(gain=2.0))
    data = obs.frames[0].data.astype(float)
    assert abs(np.mean(data) - 200.0) < 0.5
    assert np.std(data) == pytest.approx(np.sqrt(400.0 + 16.0) / 2.0, rel=0.05)


def test_camera_adds_a_fixed_bias_with_banding_and_fixed_defects(sky):
    a = _observe(sky, Camera.only("banding"), seed=1)
    b = _observe(sky, Camera.only("banding"), seed=2)
    fixed_a = a.camera.bias[0] - a.camera.bias[0].mean()
    fixed_b = b.camera.bias[1] - b.camera.bias[1].mean()
    # the same detector: the fixed part of the banding correlates across stacks
    assert np.corrcoef(fixed_a.ravel(), fixed_b.ravel())[0, 1] > 0.5
    hot = _observe(sky, Camera.only("hot_dead"))
    assert hot.camera.hot.any() and hot.camera.dead.any()
    data = hot.frames[0].data.astype(float)
    assert np.median(data[hot.camera.hot]) > np.median(data) + 50
    assert np.all(data[hot.camera.dead] < np.median(data) - 100)


def test_saturated_stars_clip_and_bleed_along_columns():
    truth = np.zeros((128, 128))
    truth[64, 64] = 5e6  # far above the full well
    obs = simulate.observe(truth, scale=2, n_frames=1, sky=100.0, seed=1, edge="zero",
                           camera=Camera.only("saturation", full_well=60000.0, adc_max=40000))
    saturated = obs.camera.saturated[0]
    assert obs.frames[0].data.max() == 40000
    rows, cols = np.nonzero(saturated)
    assert np.ptp(rows) > 2 * np.ptp(cols)  # a bleed trail: long in y, narrow in x


def test_camera_options_are_checked():
    with pytest.raises(ValueError, match="defect must be one of"):
        Camera.only("glitter")
    with pytest.raises(ValueError, match="Camera.gain must be > 0"):
        Camera(gain=0.0)
    with pytest.raises(ValueError, match="Camera.flat_rms must be finite and >= 0"):
        Camera(flat_rms=-1.0)
    assert set(DEFECTS) >= {"banding", "hot_dead", "saturation", "flat", "trails"}


# --------------------------------------------------------------------------- calibration

def test_is_raw_tells_camera_frames_from_calibrated_ones():
    ints = np.arange(20, dtype=float).reshape(4, 5)
    assert is_raw(CCDData(ints.astype(np.int16), unit="adu"))
    assert is_raw(CCDData(ints, unit="adu"))  # whole numbers in float
    assert not is_raw(CCDData(ints + 0.25, unit="adu"))
    assert not is_raw(CCDData(ints, unit="adu", uncertainty=StdDevUncertainty(np.ones((4, 5)))))
    assert not is_raw(CCDData(np.zeros((4, 5)), unit="adu"))  # constant: nothing to say
    assert not is_raw(CCDData(ints, unit="electron"))  # the gain was applied: calibrated


def test_calibration_masks_the_fixed_defects_and_nothing_much_else(raw, calibrated):
    defects = raw.camera.hot | raw.camera.dead
    for frame in calibrated:
        found = frame.mask & defects
        assert found.sum() >= 0.98 * defects.sum()
        assert (frame.mask & ~defects).mean() < 0.02  # saturated, their neighbours, few else


def _jitter(offsets):
    """Row-to-row (column-to-column) changes: offsets less their running median over 15."""
    return offsets - ndimage.median_filter(offsets, 15, mode="nearest")


def test_hot_pixels_side_by_side_are_masked_and_stars_are_not(sky):
    obs = _observe(sky, Camera.ideal(bias=500.0))
    frames = []
    for f in obs.frames:
        data = f.data.astype(float)
        data[40, 60] += 8000.0  # a vertical pair: each is the other's brightest neighbour
        data[41, 60] += 5000.0
        data[100, 30:32] += 3000.0  # a horizontal pair
        frames.append(CCDData(data.astype(np.uint16), unit="adu", meta=f.meta))
    mask = calibrate(frames)[0].mask
    assert mask[40, 60] and mask[41, 60] and mask[100, 30] and mask[100, 31]
    assert mask.mean() < 0.01  # the stars' cores are kept


def test_calibration_removes_banding_and_background(raw, calibrated):
    frame = calibrated[0]
    good = ~frame.mask & (np.abs(frame.data) < 50)
    noise = np.std(frame.data[good])
    sky = np.where(good, frame.data, np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a masked column: no median
        rows, cols = (np.nan_to_num(np.nanmedian(sky, axis=a)) for a in (1, 0))
    banding = raw.camera.bias[0]
    # the bands were there, well above the noise of a median of a row (column) ...
    row_noise, col_noise = (1.25 * noise / np.sqrt(n) for n in frame.shape[::-1])
    assert np.std(_jitter(banding.mean(axis=1))) > 3 * row_noise
    assert np.std(_jitter(banding.mean(axis=0))) > 3 * col_noise
    # ... and what is left of them is that noise (the sky's slow changes stay: they are sky)
    assert np.std(_jitter(rows)) < 1.5 * row_noise
    assert np.std(_jitter(cols)) < 1.5 * col_noise
    assert abs(np.median(frame.data[good])) < 0.1 * noise
    history = "".join(frame.meta["HISTORY"])
    assert "banding" in history and "bias and sky" in history


def test_calibration_gives_a_variance_from_the_gain(raw, calibrated):
    frame = calibrated[0]
    var = frame.uncertainty.array
    good = ~frame.mask
    sky = good & (np.abs(frame.data) < 60)
    # the sky's variance: its photons (300 e- through the flat), read noise (8 e-), dark (2 e-)
    assert np.median(var[sky]) == pytest.approx(300.0 + 8.0 ** 2 + 2.0, rel=0.15)
    bright = good & (frame.data > 2000)
    assert np.all(var[bright] > frame.data[bright])


def test_satellite_trails_are_masked(sky):
    obs = _observe(sky, Camera.only("trails", trails=3.0, trail_flux=200.0))
    frames = calibrate(obs.frames)
    trail = np.array(obs.camera.trails)
    masked = np.array([f.mask for f in frames])
    near = ndimage.binary_dilation(trail, np.ones((1, 3, 3)), iterations=3)  # its wings
    assert trail.sum() > 500
    assert (masked & trail).sum() >= 0.75 * trail.sum()
    assert (masked & ~near).mean() < 0.02


def test_calibration_frames_are_applied_with_ccdproc(sky):
    obs = _observe(sky, Camera(hot_pixels=0.0, dead_pixels=0.0, hot_columns=0, dead_columns=0,
                               trails=0.0, sky_gradient=0.0, frame_row_banding=0.0,
                               frame_column_banding=0.0))
    bias = CCDData(obs.camera.bias[0], unit="adu")
    flat = CCDData(obs.camera.flat, unit="adu")
    frames = calibrate(obs.frames, bias=bias, flat=flat)
    history = "".join(frames[0].meta["HISTORY"])
    assert "bias frame subtracted (ccdproc)" in history and "flat field divided" in history
    # the flat's pixel-to-pixel pattern is gone from the sky: no correlation left with it
    quiet = ~frames[0].mask & (np.abs(frames[0].data) < 40)
    pattern = obs.camera.flat / np.median(obs.camera.flat)
    r = np.corrcoef(frames[0].data[quiet], pattern[quiet])[0, 1]
    uncorrected = calibrate(obs.frames)[0]
    r0 = np.corrcoef(uncorrected.data[quiet], pattern[quiet])[0, 1]
    assert abs(r) < 0.03 < r0


def test_calibration_frames_of_another_shape_are_refused(raw):
    with pytest.raises(ValueError, match="bias has shape"):
        calibrate(raw.frames, bias=CCDData(np.zeros((10, 10)), unit="adu"))
    with pytest.raises(ValueError, match=r"calibrate=False \(--no-calibrate\) with calibration"):
        calibrated_stack(raw.frames, bias=raw.frames[0], when=False)
    with pytest.raises(ValueError, match="calibrate must be"):
        calibrated_stack(raw.frames, when="yes")


def test_calibrated_stack_leaves_calibrated_frames_alone(sky):
    clean = _observe(sky, None)
    stack, note = calibrated_stack(clean.frames)
    assert note is None
    np.testing.assert_array_equal(stack.data[0], np.asarray(clean.frames[0].data, float))


# --------------------------------------------------------------------------- registration

def test_raw_frames_register_as_well_as_clean_ones(sky, raw):
    clean = _observe(sky, None)
    err_clean, sigma_clean = _shift_error(astrosr.register_stack(clean.frames))
    table = astrosr.register_stack(raw.frames)
    err_raw, _ = _shift_error(table)
    assert "calibrate" in table.meta["registration"]
    # the fixed pattern does not pull the shifts to zero: within the clean stack's bound
    assert np.sqrt(np.mean(err_raw ** 2)) < 2.0 * np.median(sigma_clean) + 0.01
    assert np.sqrt(np.mean(err_clean ** 2)) < 2.0 * np.median(sigma_clean) + 0.01


def test_noise_frames_are_refused_in_seconds_with_what_to_try():
    rng = np.random.default_rng(0)
    frames = [CCDData(rng.poisson(500.0, (1040, 1392)).astype(np.uint16), unit="adu")
              for _ in range(3)]
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"(no signal above the noise|do not overlap or show "
                                         r"different skies).*Try: leave the frame out"):
        astrosr.register_stack(frames)
    assert time.perf_counter() - t0 < 10.0


def test_pipeline_calibrates_raw_frames_and_says_so(raw):
    out = astrosr.MultiFrameSR(scale=2, refine=None, fusion="drizzle", psf=psf.GaussianPSF(1.3),
                               consistency="observation").run(raw.frames)
    history = "".join(out.meta["HISTORY"])
    assert "raw frames calibrated" in history
    with pytest.raises(ValueError, match="calibrate must be"):
        astrosr.MultiFrameSR(calibrate="sometimes")


def test_an_all_zero_frame_among_real_ones_is_refused(raw, calibrated):
    frames = list(calibrated) + [CCDData(np.zeros(calibrated[0].shape), unit="adu")]
    with pytest.raises(ValueError, match=r"frames\[4\] is constant \(every usable pixel is 0\)"):
        astrosr.fuse(frames, np.zeros((5, 2)), scale=1)
