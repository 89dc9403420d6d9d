"""Raw camera frames made fit to register and fuse: calibration, defects, fixed pattern.

`calibrate` applies the calibration frames a user has (``bias=``,
``dark=``, ``flat=``) with ccdproc, the well-kept library for CCD
reduction, and then estimates from the frames themselves what no
calibration frame removed:

- **defects** fixed on the detector: hot and dead pixels are single pixels
  far sharper than any star (they stand out of their 3x3 neighbourhood while
  their neighbours do not), flagged in at least half of the frames at the
  same detector position; hot and dead columns stand out of the other
  columns by far more than the banding does. Saturated pixels (the header's
  level, else a plateau at the maximum) and their neighbours, and satellite
  trails (long straight lines of pixels above the noise, found by a Hough
  transform) are masked in their frame;
- **banding**: the offsets of each row and then each column from a smooth
  background, measured with sources and defects masked (medians), subtracted;
- **background**: the smooth background (a sigma-clipped quadratic surface:
  pedestal, sky, gradient and vignetted sky), subtracted. Without a bias
  frame the bias cannot be told from the sky, so both go.

`is_raw` says whether a frame is raw (whole numbers, no uncertainty);
`astrosr.MultiFrameSR` and the command line calibrate raw frames by default,
and `astrosr.register_stack` registers them as calibrated (its table does
not depend on the pedestal). Every step is recorded in the frame's HISTORY.
"""

import warnings

import numpy as np
from astropy import units as u
from astropy.nddata import CCDData
from scipy import ndimage

from .nddata import add_history, as_frames, frame_arrays, saturated_pixels, white_noise_variance

__all__ = ["calibrate", "calibrated_stack", "is_raw", "RAW_UNITS"]

#: Significance (noise sigma) of a defect pixel's excess over its 3x3 median.
DEFECT_SIGMA = 5.0
#: A hot pixel's second brightest 4-neighbour rises above the background by less than
#: this fraction of the pixel's own excess (a star's neighbours carry >= 10%
#: even when it is undersampled, FWHM 1 pixel) ...
NEIGHBOUR_FRACTION = 0.05
#: ... and it is flagged in at least this fraction of the frames.
FIXED_FRACTION = 0.5
#: A column whose median offset exceeds this many pixel-noise sigma is a defect, not banding.
COLUMN_SIGMA = 1.0
#: Banding: row-to-row offsets over this many rows (columns) ...
BANDING_SCALE = 15
#: ... subtracted when their scatter is this many times that of the noise.
BANDING_SIGNIFICANCE = 2.0
#: Trails: smoothed pixels above this many sigma, in straight runs this fraction of the frame.
TRAIL_SIGMA = 2.5
TRAIL_LENGTH = 0.25
#: Pixels masked either side of a trail's spine.
_TRAIL_HALF_WIDTH = 3.0


#: Units of raw camera frames (no unit: a FITS file without BUNIT).
RAW_UNITS = (u.adu, u.count, u.dimensionless_unscaled, u.Unit("DN"))


def is_raw(frame):
    """Whether a frame looks raw from a camera: no uncertainty, whole numbers only, in ADU.

    A frame in ADU, counts, DN or without a unit (`RAW_UNITS`), with no
    uncertainty and only whole numbers (integers, or floats holding them) is
    what a camera writes; frames in electrons or with an uncertainty have
    been calibrated.

    Parameters
    ----------
    frame : `~astropy.nddata.CCDData` or `~astropy.nddata.NDData`
    """
    if frame.uncertainty is not None or (frame.unit is not None and frame.unit not in RAW_UNITS):
        return False
    data = np.asarray(frame.data)
    finite = data[np.isfinite(data)] if data.dtype.kind == "f" else data
    return finite.size > 0 and np.ptp(finite) > 0 and bool(np.all(finite == np.round(finite)))


def calibrate(frames, *, bias=None, dark=None, flat=None, hdu=None):
    """Calibrate raw frames: calibration frames where given, estimates from the frames otherwise.

    Parameters
    ----------
    frames : list of CCDData/NDData/paths, glob pattern or 3-D array
        The raw frames (see `astrosr.nddata.as_frames`).
    bias, dark, flat : `~astropy.nddata.CCDData` or path, optional
        Master calibration frames of the frames' shape. The dark is scaled by
        the ratio of the ``EXPTIME`` cards when both frames have one (it is
        taken as bias-subtracted); the flat is normalised to its mean.
    hdu : int or str, optional
        HDU to read from FITS paths.

    Returns
    -------
    list of `~astropy.nddata.CCDData`
        Background-subtracted frames, in their unit, with the defects masked
        and, where the header gives ``GAIN`` (or ``EGAIN``), a variance (the
        sky's noise measured on the frame plus the sources' Poisson noise);
        HISTORY says what was done.

    Raises
    ------
    ValueError
        If a calibration frame's shape differs from the frames'.
    """
    ccds = as_frames(frames, hdu=hdu)
    masters = {name: _master(value, name, ccds[0].shape, hdu)
               for name, value in (("bias", bias), ("dark", dark), ("flat", flat))
               if value is not None}
    ccds = [_apply_masters(c, masters) for c in ccds]
    goods = [_good(c) for c in ccds]
    fixed = _fixed_defects([c.data for c in ccds], goods)
    return [_clean(c, g, fixed, "bias" in masters) for c, g in zip(ccds, goods)]


def calibrated_stack(frames, *, bias=None, dark=None, flat=None, when="auto", hdu=None):
    """The frames as a `~astrosr.FrameStack`, calibrated (`calibrate`) where that is asked for.

    Parameters
    ----------
    frames : list of CCDData/NDData/paths, glob pattern, 3-D array, or FrameStack
    bias, dark, flat : optional
        As for `calibrate`.
    when : {"auto", True, False}
        Whether to calibrate; ``"auto"``: when a calibration frame is given
        or any frame `is_raw`.
    hdu : int or str, optional

    Returns
    -------
    stack : `~astrosr.FrameStack`
    note : str or None
        What was done, for HISTORY (None: the frames as given).
    """
    from .stack import FrameStack

    if when not in ("auto", True, False):
        raise ValueError(f"calibrate must be 'auto', True or False, got {when!r}")
    masters = [m for m in (bias, dark, flat) if m is not None]
    if masters and when is False:
        raise ValueError("calibrate=False (--no-calibrate) with calibration frames (bias=, dark=, "
                         "flat=; --bias/--dark/--flat): give one or the other")
    stack = FrameStack.parse(frames, hdu=hdu)
    raw = [i for i, c in enumerate(stack.ccds) if is_raw(c)]
    if when is False or (when == "auto" and not masters and not raw):
        return stack, None
    given = ", ".join(n for n, m in (("bias", bias), ("dark", dark), ("flat", flat))
                      if m is not None) or "no calibration frames"
    note = (f"astrosr.calibrate ({given}): " + ("raw frames " if raw else "frames ")
            + "calibrated; defects masked, banding and background subtracted "
              "(each frame's HISTORY has the figures)")
    return FrameStack(calibrate(stack, bias=bias, dark=dark, flat=flat, hdu=hdu)), note


def _master(value, name, shape, hdu):
    (master,) = as_frames([value], hdu=hdu)
    if master.shape != shape:
        raise ValueError(f"{name} has shape {master.shape}, the frames {shape}: pass a master "
                         f"{name} frame of the same detector and binning")
    return master


def _apply_masters(ccd, masters):
    """Bias, dark and flat by ccdproc; the notes go to HISTORY."""
    import ccdproc

    out = CCDData(ccd.data, unit=ccd.unit, mask=ccd.mask, wcs=ccd.wcs, meta=ccd.meta.copy())
    notes = []
    if "bias" in masters:
        out = ccdproc.subtract_bias(out, _in_unit(masters["bias"], out.unit))
        notes.append("bias frame subtracted (ccdproc)")
    if "dark" in masters:
        dark = _in_unit(masters["dark"], out.unit)
        timed = "EXPTIME" in out.meta and "EXPTIME" in dark.meta
        out = ccdproc.subtract_dark(out, dark, exposure_time="EXPTIME" if timed else None,
                                    exposure_unit=u.s if timed else None, scale=timed,
                                    **({} if timed else {"dark_exposure": 1 * u.s,
                                                         "data_exposure": 1 * u.s}))
        notes.append("dark frame subtracted (ccdproc)" + (", scaled by EXPTIME" if timed else ""))
    if "flat" in masters:
        flat = masters["flat"]
        out = ccdproc.flat_correct(out, CCDData(flat.data, unit=out.unit, mask=flat.mask))
        notes.append("flat field divided (ccdproc, normalised to its mean)")
    for note in notes:
        add_history(out.meta, f"astrosr.calibrate: {note}")
    out.mask = None if out.mask is None else np.asarray(out.mask, dtype=bool)
    return out


def _in_unit(master, unit):
    """A master frame in the frames' unit (a master without one is taken in it)."""
    if master.unit in (None, u.dimensionless_unscaled) or master.unit == unit:
        return CCDData(master.data, unit=unit, mask=master.mask, meta=master.meta)
    return master


def _good(ccd):
    return frame_arrays(ccd)[2]


def _fixed_defects(cube, goods):
    """Hot and dead pixels and columns: sharp outliers at the same place in most frames."""
    votes_hot = np.zeros(cube[0].shape, dtype=int)
    votes_dead = np.zeros(cube[0].shape, dtype=int)
    columns = np.zeros(cube[0].shape[1], dtype=int)
    for data, good in zip(cube, goods):
        hot, dead, bad_columns = _frame_defects(np.asarray(data, dtype=float), good)
        votes_hot += hot
        votes_dead += dead
        columns += bad_columns
    need = max(1, int(np.ceil(FIXED_FRACTION * len(cube))))
    fixed = (votes_hot >= need) | (votes_dead >= need)
    fixed[:, columns >= need] = True
    return fixed


def _frame_defects(data, good):
    """One frame's sharp hot and dead pixels and its outlying columns."""
    sigma = np.sqrt(white_noise_variance(data, good))
    filled = np.where(good, data, np.median(data[good]))
    if min(data.shape) < 3:
        return (np.zeros(data.shape, bool),) * 2 + (np.zeros(data.shape[1], bool),)
    median = ndimage.median_filter(filled, size=3, mode="mirror")
    excess = filled - median
    level = ndimage.uniform_filter(median, 7, mode="mirror")  # the level around a pixel
    rise = _second_brightest_neighbour(filled) - level
    hot = (excess > DEFECT_SIGMA * sigma) & (rise < NEIGHBOUR_FRACTION * (filled - level)
                                             + 3 * sigma)
    dead = excess < -DEFECT_SIGMA * sigma
    offsets = _median_along(filled - _background(filled, good), good & ~hot & ~dead, axis=0)
    spread = np.median(offsets)
    bad_columns = np.abs(offsets - spread) > max(COLUMN_SIGMA * sigma, 8 * _mad(offsets))
    return hot & good, dead & good, bad_columns


def _second_brightest_neighbour(image):
    """The second brightest of each pixel's four neighbours: a pair of hot pixels side by side
    (each the other's brightest neighbour) is still two sharp pixels; a star is not."""
    padded = np.pad(image, 1, mode="reflect")
    neighbours = np.stack([padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2],
                           padded[1:-1, 2:]])
    return np.partition(neighbours, 2, axis=0)[2]


def _clean(ccd, good, fixed, bias_removed):
    """Mask a frame's defects, then remove its banding and background; record it."""
    data = np.asarray(ccd.data, dtype=float)
    saturated = saturated_pixels(data, ccd.meta, grow=1)  # as frame_arrays masks them
    good = good & ~fixed
    background = _background(data, good)
    residual = data - background
    sigma = np.sqrt(white_noise_variance(residual, good))
    quiet = good & ~ndimage.binary_dilation(residual > 3 * sigma, iterations=2)
    rows = _banding(residual, quiet, sigma, axis=1)
    residual -= rows[:, None]
    columns = _banding(residual, quiet, sigma, axis=0)
    residual -= columns[None, :]
    sigma = np.sqrt(white_noise_variance(residual, good))  # the bands are gone from it now
    trails = _trails(residual, good, sigma)
    good &= ~trails
    out = CCDData(residual, unit=ccd.unit, mask=~good, wcs=ccd.wcs, meta=ccd.meta.copy(),
                  uncertainty=_variance(ccd, residual, sigma))
    level = float(np.median(background[good])) if good.any() else 0.0
    add_history(out.meta, f"astrosr.calibrate: masked {int(fixed.sum())} fixed defect pixels "
                          f"(hot/dead pixels and columns), {int(saturated.sum())} saturated "
                          f"and {int(trails.sum())} trail pixels")
    add_history(out.meta, f"astrosr.calibrate: row banding {np.std(rows):.3g} and column "
                          f"banding {np.std(columns):.3g} (RMS, {ccd.unit}) subtracted")
    add_history(out.meta, f"astrosr.calibrate: smooth background subtracted (median {level:.6g} "
                          f"{ccd.unit}; " + ("sky" if bias_removed else
                                             "bias and sky: no bias frame to tell them apart")
                          + ")")
    return out


def _variance(ccd, residual, sigma):
    """Sky noise plus the sources' Poisson noise, with the header's ``GAIN`` (electrons per
    ADU: the source term is its excess over the background / gain); None without a gain (the
    stack then estimates one white-noise level from the pixels)."""
    from astropy.nddata import VarianceUncertainty

    gain = ccd.meta.get("GAIN", ccd.meta.get("EGAIN"))
    try:
        gain = float(gain)
    except (TypeError, ValueError):
        return None
    if not (np.isfinite(gain) and gain > 0):
        return None
    return VarianceUncertainty(sigma ** 2 + np.clip(residual, 0, None) / gain)


def _background(data, good):
    """The smooth background: a quadratic surface (pedestal, sky gradient, vignetted sky),
    fitted to the good pixels with sigma clipping (astropy.modeling).

    Not a mesh of box medians (photutils' Background2D): the mesh is fixed on
    the detector and takes a different share of an extended source in each
    dithered frame, a fixed pattern that registration would lock on.
    """
    from astropy.modeling import fitting, models
    from astropy.stats import sigma_clip

    stride = max(1, int(np.sqrt(good.sum() / 20_000)))
    yy, xx = np.mgrid[0:data.shape[0]:stride, 0:data.shape[1]:stride]
    keep = good[::stride, ::stride]
    if keep.sum() < 12 or min(data.shape) < 8:
        return np.full(data.shape, np.median(data[good]))
    norm = max(data.shape)
    fitter = fitting.FittingWithOutlierRemoval(fitting.LinearLSQFitter(), sigma_clip, niter=5,
                                               sigma=2.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy's notes on the clipped fit
        surface, _ = fitter(models.Polynomial2D(2), xx[keep] / norm, yy[keep] / norm,
                            data[::stride, ::stride][keep])
    y, x = np.indices(data.shape, dtype=float)
    return surface(x / norm, y / norm)


def _banding(residual, quiet, sigma, axis):
    """The offsets of the rows (axis=1) or columns (axis=0) from their neighbours, where they
    stand out of the noise of a median; zeros where they do not.

    Only the part that changes from one row to the next (offsets less a
    running median over `BANDING_SCALE` rows) is banding: a slow change
    along the frame is the sky's own (a nebula, a galaxy larger than the
    source mask), which a median along each row cannot tell from a band.
    """
    offsets = _median_along(residual, quiet, axis)
    jitter = offsets - ndimage.median_filter(offsets, BANDING_SCALE, mode="nearest")
    per_line = max(float(np.mean(quiet.sum(axis=axis))), 1.0)
    expected = 1.2533 * sigma / np.sqrt(per_line)  # noise of a median of per_line pixels
    return jitter if np.std(jitter) > BANDING_SIGNIFICANCE * expected else np.zeros_like(jitter)


def _median_along(values, good, axis):
    """Medians of the good pixels of each row (axis=1) or column (axis=0); 0 where none.

    One sort of the frame (bad pixels sorted last as NaN), not a median per
    row: `numpy.nanmedian` along an axis loops over the rows in Python.
    """
    ordered = np.sort(np.where(good, values, np.nan), axis=axis)
    count = good.sum(axis=axis)
    low = np.expand_dims(np.clip((count - 1) // 2, 0, None), axis)
    high = np.expand_dims(np.clip(count // 2, 0, None), axis)
    median = 0.5 * (np.take_along_axis(ordered, low, axis) + np.take_along_axis(ordered, high, axis))
    return np.where(count > 0, np.squeeze(median, axis=axis), 0.0)


def _mad(values):
    return float(np.median(np.abs(values - np.median(values)))) * 1.4826


def _trails(residual, good, sigma):
    """Pixels of satellite trails: long straight lines above the noise (Hough transform)."""
    from skimage.transform import probabilistic_hough_line

    smooth = ndimage.gaussian_filter(np.where(good, residual, 0.0), 1.0)
    bright = good & (smooth > TRAIL_SIGMA * sigma * 0.28)  # noise of a sigma-1 smoothing: 0.28
    bright &= ~_compact_sources(bright)
    length = int(TRAIL_LENGTH * min(residual.shape))
    out = np.zeros(residual.shape, dtype=bool)
    if length < 8 or not bright.any():
        return out
    segments = probabilistic_hough_line(bright, threshold=length // 2, line_length=length,
                                        line_gap=3, rng=0)
    yy, xx = np.indices(residual.shape, dtype=float)
    for (x0, y0), (x1, y1) in segments:
        if _thin_line(bright, (x0, y0), (x1, y1)):
            # A satellite crosses the whole field: mask the whole line, not the segment found.
            norm = np.hypot(x1 - x0, y1 - y0)
            out |= np.abs((xx - x0) * (y1 - y0) - (yy - y0) * (x1 - x0)) / norm <= _TRAIL_HALF_WIDTH
    return out & good


def _thin_line(bright, start, end, offset=8.0):
    """Whether a segment is part of a trail: the whole line through it, across the frame, is
    bright along most of its length, and twice as often as 8 pixels to either side (the part of
    a nebula or galaxy is neither as long nor as thin)."""
    (x0, y0), (x1, y1) = start, end
    ux, uy = np.array([x1 - x0, y1 - y0], dtype=float) / np.hypot(x1 - x0, y1 - y0)
    reach = np.hypot(*bright.shape)
    t = np.arange(-reach, reach)
    x, y = x0 + t * ux, y0 + t * uy
    inside = (x >= 0) & (x <= bright.shape[1] - 1) & (y >= 0) & (y <= bright.shape[0] - 1)
    x, y = x[inside], y[inside]

    def fraction(k):
        xs = np.clip(np.round(x - k * uy), 0, bright.shape[1] - 1).astype(int)
        ys = np.clip(np.round(y + k * ux), 0, bright.shape[0] - 1).astype(int)
        return bright[ys, xs].mean()

    return fraction(0.0) > max(0.5, 2.0 * max(fraction(offset), fraction(-offset)))


def _compact_sources(bright):
    """Connected regions of bright pixels that are not long and thin (stars, galaxies)."""
    labels, n = ndimage.label(bright)
    if n == 0:
        return np.zeros(bright.shape, dtype=bool)
    slices = ndimage.find_objects(labels)
    sizes = np.array([max(s[0].stop - s[0].start, s[1].stop - s[1].start) for s in slices])
    areas = ndimage.sum(bright, labels, np.arange(1, n + 1))
    compact = (sizes < 40) | (areas > 0.3 * sizes ** 2)
    return compact[labels - 1] & (labels > 0)
