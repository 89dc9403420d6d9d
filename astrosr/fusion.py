"""Fusion of registered frames onto a finer grid: drizzle, shift-and-add, reconstruction.

`fuse` puts a stack of dithered frames onto a grid ``scale`` times finer than
the input pixels, in the coordinates of the reference frame (the frame whose
shift is zero; DESIGN.md sign convention), and returns a
`~astropy.nddata.CCDData` with the WCS of that grid, the propagated
uncertainty, a mask where no input pixel landed, the weight map (attribute
``weight``, written as the ``WHT`` extension by `astrosr.nddata.write_fits`),
``NCOMBINE`` and HISTORY.

Methods
-------
``"drizzle"``
    The square-kernel drizzle of Fruchter & Hook (2002) for translations.
    Each input pixel, shrunk by ``pixfrac``, drops its value onto the output
    pixels in proportion to the overlap area. For translations the overlap
    is the product of an x and a y overlap, so one frame is two sparse matrix
    products ``Oy @ (w * data) @ Ox.T``: written here (vectorised) because
    the ``drizzle`` package has no separable path and takes per-pixel
    mappings. The ``drizzle`` package is the test oracle.
``"shift_and_add"``
    The classical baseline: each input pixel replicated onto ``scale x
    scale`` output pixels at the nearest whole output pixel (drizzle with
    ``pixfrac=1`` and shifts rounded to the output grid).
``"reconstruct"``
    Maximum-likelihood multi-frame reconstruction with the PSF: multi-frame
    Richardson-Lucy (the Poisson likelihood, each frame put on a count scale
    from its variance) through the observation model
    (`astrosr.forward.ObservationOperator`: PSF, shift, integration over the
    input pixels), with Biggs & Andrews (1997) acceleration; the image stays
    non-negative. Stopped by a documented rule (``stop``): by default when
    it has converged to the maximum-likelihood solution, or by the
    discrepancy principle.

Outlier rejection (``reject``): each frame is compared with the model
observed at its shift; pixels deviating by more than ``kappa`` sigma (plus a
term for the model's own error at sharp features, as DrizzlePac's
``driz_cr``) are masked and the fit is redone. The first model is the median
of the frames on the fine grid, so a cosmic ray in one frame cannot hide.
"""

import time
import warnings

import numpy as np
from astropy import units as u
from astropy.nddata import CCDData, InverseVariance, StdDevUncertainty, VarianceUncertainty
from astropy.stats import sigma_clipped_stats
from scipy import ndimage, sparse

from .forward import ObservationOperator
from .misfit import record_fit
from .progress import progress_bar
from .nddata import (add_history, as_frames, frame_arrays, rescale_wcs, shift_array, shift_wcs,
                     white_noise_variance)
from .psf import GaussianPSF, as_psf

__all__ = ["fuse", "METHODS"]

METHODS = ("drizzle", "shift_and_add", "reconstruct")

# Rejection: a frame pixel is an outlier when |data - model| exceeds
# kappa * sigma + _DERIV_SCALE * (local spread of the model), DrizzlePac's form.
_DERIV_SCALE = 0.7
# Reconstruct: rounds of rejection against provisional models of this many iterations.
_REJECT_ROUNDS = 3
_PROVISIONAL_ITER = 30
#: Reconstruct's default stopping rule: converged when an iteration moves less
#: than this fraction of the image's flux.
CONVERGED_TOL = 1e-4
# Reconstruct: fine pixels (in the unobserved margin) seen with less than this
# fraction of the best coverage are not solved for: RL is unstable where the
# data barely constrain the sky.
_MIN_COVERAGE = 1e-3
# Frames with a flat variance are modelled as Poisson counts with this many
# counts on the sky (1/10 relative noise): nearly Gaussian, yet quick to converge.
_FLAT_COUNTS = 100.0
# The discrepancy rule gives up when the chi-square has not fallen for this many iterations.
_STALL_ITER = 30
# Drizzle without a PSF: outliers are judged against a model seen through this
# PSF (sigma in input pixels), narrower than the PSF of well-sampled data.
_REJECTION_PSF = GaussianPSF(0.5)
# What to check when the frames do not fit their reconstruction.
_MISFIT_HINT = ("the PSF (psf=) or the shifts are probably wrong, the frames' uncertainty too "
                "small, or saturated pixels are not masked")


def fuse(frames, shifts, *, scale, method="drizzle", pixfrac=1.0, psf=None, weights=None,
         reject="auto", kappa=5.0, background=None, stop="converged", tol=None, max_iter=1000,
         start=None, hdu=None, progress=False):
    """Fuse registered frames onto a grid ``scale`` times finer.

    Parameters
    ----------
    frames : list of CCDData/NDData/paths, or 3-D array
        The stack (see `astrosr.nddata.as_frames`). Masked, NaN and infinite
        pixels contribute nothing.
    shifts : `~astropy.table.Table` with ``dx``, ``dy`` or array (n, 2)
        Shift of each frame in input pixels, in the order of ``frames``
        (as returned by `astrosr.register_stack`).
    scale : int
        Output pixels per input pixel, >= 1 (drizzle also takes a
        non-integer scale).
    method : {"drizzle", "shift_and_add", "reconstruct"}
    pixfrac : float
        Drizzle: linear size of the shrunk input pixel ("drop"), in (0, 1].
    psf : `~astrosr.psf.PSF` or array, optional
        The PSF (an array is sampled on the output grid: odd, centred, sum
        1). Required for ``method="reconstruct"``; drizzle and shift-and-add
        use it only to judge outliers (without it, a Gaussian of sigma 0.5
        input pixels).
    weights : array_like, optional
        Drizzle and shift-and-add: one weight per frame or one per pixel
        ``(n, ny, nx)``. Default: the inverse background variance of each
        frame (the median variance of its pixels; DrizzlePac's IVM), never
        the source's own Poisson term, which would bias the flux low.
    reject : {"auto", True, False}
        Outlier rejection; "auto" turns it on for 3 or more frames.
    kappa : float
        Rejection threshold in sigma.
    background : float or sequence, optional
        Reconstruct: the Poisson background of the frames, per input pixel in
        their units (one value or one per frame): the sky that was
        subtracted from them plus the read-noise variance (the shift of
        Snyder et al. 1993). Default: estimated from the frames'
        uncertainty, by fitting ``variance = gain * (data + background)``.
        It enters the noise model only; the sky is not subtracted.
    stop : {"converged", "discrepancy"}
        Reconstruct's stopping rule. ``"converged"``: run to the
        maximum-likelihood solution, stopping when an iteration moves less
        than ``tol`` (default 1e-4) of the image's flux. ``"discrepancy"``
        (Morozov): stop at the first iterate that reproduces the frames
        with reduced chi-square <= ``1 + tol`` (default ``3 * sqrt(2 /
        n_pixels)``, three standard deviations of a perfect model's), the
        most conservative choice. On the benchmark skies, the converged
        solution is closer to the truth on every image: the positivity of
        the sky keeps sharpening point sources after the data are fitted.
    tol : float, optional
        Tolerance of the stopping rule (see ``stop``).
    max_iter : int
        Reconstruct: safety cap on Richardson-Lucy iterations.
    start : array_like or NDData, optional
        Reconstruct: the first iterate, an image of the output grid (shape
        ``scale`` times the frames', in the output's units), for example a
        refined image; negative pixels are raised to a small floor (the
        iterations keep zeros at zero) and the image is scaled so that,
        observed, it has the frames' total flux. With ``stop="discrepancy"``
        the result is the first iterate from ``start`` that reproduces the
        frames within their noise. Default: a flat image.
    hdu : int or str, optional
        HDU to read when ``frames`` are paths.
    progress : bool
        Reconstruct: show a progress bar (with ETA; `astrosr.progress.progress_bar`)
        over the Richardson-Lucy iterations (``max_iter`` is their most).

    Returns
    -------
    `~astropy.nddata.CCDData`
        Fine image with ``uncertainty`` (`~astropy.nddata.VarianceUncertainty`),
        ``mask`` (no coverage), ``weight`` attribute (the weight map),
        ``rejected`` attribute (boolean cube of the input pixels rejected as
        outliers, shape of the stack), WCS of the fine grid
        (when the frames have one), ``NCOMBINE``, ``FUSESCAL``, ``FUSEMETH``,
        ``NREJECT``, and HISTORY. Per-pixel units (electron, adu, Jy/pixel)
        keep the total flux; surface-brightness units keep the surface
        brightness. For reconstruct the uncertainty is the conditional
        variance of each pixel (the inverse diagonal of the Fisher matrix):
        a lower bound, since the errors of a deconvolution are correlated.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if stop not in ("converged", "discrepancy"):
        raise ValueError(f"stop must be 'converged' or 'discrepancy', got {stop!r}")
    stack = _Stack(frames, shifts, hdu=hdu)
    scale = _check_scale(scale, integer=method != "drizzle")
    if method == "reconstruct" and psf is None:
        raise TypeError("psf is required for method='reconstruct': pass an astrosr.psf "
                        "model or an array sampled on the output grid")
    if reject == "auto":
        reject = len(stack) >= 3
    t0 = time.perf_counter()
    if method == "reconstruct":
        psf = as_psf(psf, oversampling=scale)
        image, var, weight, info = _reconstruct(stack, scale, psf, reject, kappa,
                                                _per_frame(background, len(stack), "background"),
                                                stop, tol, max_iter, start, progress)
    else:
        if method == "shift_and_add":
            pixfrac = 1.0
        elif not 0 < pixfrac <= 1:
            raise ValueError(f"pixfrac must be in (0, 1], got {pixfrac}")
        image, var, weight, info = _drizzle_stack(stack, scale, pixfrac, weights, reject, kappa,
                                                  psf, snap=method == "shift_and_add")
    info["seconds"] = time.perf_counter() - t0
    return _result(stack, image, var, weight, scale, method, pixfrac, info)


# --------------------------------------------------------------------------- input


class _Stack:
    """Frames as arrays: data (bad pixels 0), variance, good mask, shifts."""

    def __init__(self, frames, shifts, *, hdu):
        self.ccds = as_frames(frames, hdu=hdu)
        n = len(self.ccds)
        self.shifts = shift_array(shifts, n)
        arrays = [frame_arrays(c) for c in self.ccds]
        self.data = np.array([a[0] for a in arrays])
        self.good = np.array([a[2] for a in arrays])
        for i, g in enumerate(self.good):
            if not g.any():
                raise ValueError(f"frames[{i}] has no usable pixel (all masked, NaN or inf): "
                                 "drop it from frames and shifts")
        self.var = np.array([v if v is not None else np.where(g, _estimated_variance(d, g), np.inf)
                             for d, v, g in arrays])
        self.var_estimated = any(a[1] is None for a in arrays)
        self.unit = self.ccds[0].unit

    def __len__(self):
        return len(self.ccds)

    @property
    def shape(self):
        return self.data.shape[1:]

    def background_variance(self):
        """Per-frame inverse-variance weights: the median variance of the good pixels."""
        return np.array([np.median(v[g]) for v, g in zip(self.var, self.good)])


def _estimated_variance(data, good):
    """White-noise variance of a frame without uncertainty; 1 (equal weights) if it has no noise."""
    var = white_noise_variance(data, good)
    return var if var > 0 else 1.0


def _check_scale(scale, *, integer):
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise TypeError(f"scale must be a number, got {scale!r}") from None
    if not np.isfinite(value) or value < 1:
        raise ValueError(f"scale must be >= 1 (output pixels per input pixel), got {scale}")
    if integer:
        if value != int(value):
            raise ValueError(f"scale must be an integer for this method, got {scale}; "
                             "method='drizzle' takes a non-integer scale")
        return int(value)
    return int(value) if value == int(value) else value


def _per_frame(value, n, name):
    if value is None:
        return np.zeros(n)
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be one finite number or one per frame ({n})")
    return arr


def _frame_weights(stack, weights):
    """Weights ``(n, ny, nx)``, zero where a pixel is bad."""
    n = len(stack)
    if weights is None:
        bkg = stack.background_variance()
        # Noise-free frames (simulations) have no variance to weight by: equal weights.
        w = 1.0 / bkg if np.all(bkg > 0) else np.ones(n)
        w = np.broadcast_to(w[:, None, None], stack.data.shape)
    else:
        w = np.asarray(weights, dtype=float)
        if w.shape == (n,):
            w = np.broadcast_to(w[:, None, None], stack.data.shape)
        elif w.shape != stack.data.shape:
            raise ValueError(f"weights must have shape ({n},) or {stack.data.shape}, got {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("weights must be finite and >= 0")
    w = np.where(stack.good, w, 0.0)
    for i in range(n):
        if not w[i].any():
            raise ValueError(f"weights of frame {i} are all zero: drop the frame instead")
    return w


# --------------------------------------------------------------------------- drizzle


def _overlap_matrix(n_in, n_out, scale, shift, pixfrac):
    """Sparse ``(n_out, n_in)`` overlap lengths (output pixels) of shrunk input pixels.

    Input pixel ``i`` is centred at ``scale * (i - shift + 0.5) - 0.5`` on the
    output grid (DESIGN.md's finer-grid mapping, after undoing the shift).
    """
    centre = scale * (np.arange(n_in) - shift + 0.5) - 0.5
    half = 0.5 * pixfrac * scale
    lo, hi = centre - half, centre + half
    first = np.floor(lo + 0.5).astype(int)
    width = int(np.ceil(pixfrac * scale)) + 2
    cols = first[:, None] + np.arange(width)[None, :]
    length = np.minimum(hi[:, None], cols + 0.5) - np.maximum(lo[:, None], cols - 0.5)
    keep = (length > 0) & (cols >= 0) & (cols < n_out)
    rows = np.broadcast_to(np.arange(n_in)[:, None], cols.shape)
    return sparse.csr_matrix((length[keep], (cols[keep], rows[keep])), shape=(n_out, n_in))


def _drizzle_frames(data, weight, var, shifts, out_shape, scale, pixfrac):
    """Weighted sums over frames: ``sum w a d``, ``sum w a`` and ``sum (w a)^2 var``."""
    num = np.zeros(out_shape)
    den = np.zeros(out_shape)
    vnum = np.zeros(out_shape)
    ny, nx = data.shape[1:]
    for d, w, v, (dx, dy) in zip(data, weight, var, shifts):
        oy = _overlap_matrix(ny, out_shape[0], scale, dy, pixfrac)
        ox = _overlap_matrix(nx, out_shape[1], scale, dx, pixfrac)
        num += (ox @ (oy @ (w * d)).T).T
        den += (ox @ (oy @ w).T).T
        if v is not None:
            oy2, ox2 = oy.multiply(oy), ox.multiply(ox)
            vnum += (ox2 @ (oy2 @ (w * w * np.where(w > 0, v, 0.0))).T).T
    return num, den, vnum


def _drizzle_stack(stack, scale, pixfrac, weights, reject, kappa, psf, snap):
    shifts = np.round(stack.shifts * scale) / scale if snap else stack.shifts
    out_shape = tuple(int(round(n * scale)) for n in stack.shape)
    w = _frame_weights(stack, weights)
    rejected = np.zeros(stack.data.shape, bool)
    if reject:
        # Judged against a model fitted to the frames through the PSF (or, without
        # one, a Gaussian narrower than any well-sampled PSF): it predicts each
        # frame within its noise, so cosmic rays on bright sources are found
        # too, and it cannot put a hit into one frame with fine-grid structure.
        grid = int(np.ceil(scale))
        model_psf = as_psf(psf, oversampling=grid) if psf is not None else _REJECTION_PSF
        op = ObservationOperator(stack.shape, shifts, scale=grid, psf=model_psf, single=True)
        good, _ = _clean_mask(stack, op, _PoissonNoise(stack, np.zeros(len(stack))), kappa)
        w = np.where(good, w, 0.0)
        rejected = stack.good & ~good
    num, den, vnum = _drizzle_frames(stack.data, w, stack.var, shifts, out_shape, scale, pixfrac)
    covered = den > 0
    area = scale ** 2  # output pixels per input pixel: per-pixel flux is divided by it
    with np.errstate(invalid="ignore", divide="ignore"):
        image = np.where(covered, num / den, 0.0) / area
        var = np.where(covered, vnum / den ** 2, np.inf) / area ** 2
    # Weight map as the drizzle package's out_wht: weight times the fraction of
    # the drop (pixfrac * scale output pixels on a side) landing in the pixel.
    return image, var, den / (pixfrac * scale) ** 2, {"rejected": rejected}


# --------------------------------------------------------------------------- rejection


def _median_model(stack, scale, shifts):
    """Robust first model: the median of the frames replicated onto the fine grid."""
    scale = int(np.ceil(scale))
    out_shape = tuple(n * scale for n in stack.shape)
    snapped = np.round(shifts * scale) / scale
    singles = np.full((len(stack),) + out_shape, np.nan)
    for i in range(len(stack)):
        g = stack.good[i].astype(float)
        num, den, _ = _drizzle_frames(stack.data[i:i + 1], g[None], [None], snapped[i:i + 1],
                                      out_shape, scale, 1.0)
        singles[i] = np.where(den > 0.5, num / np.where(den > 0, den, 1.0), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels off the field
        model = np.nanmedian(singles, axis=0) / scale ** 2
    return np.nan_to_num(model), scale, np.isfinite(model)


def _reject_against(stack, model, shifts, kappa):
    """Outliers against a fine model ``(image, scale, covered)`` blotted to each frame.

    Only frame pixels that the model covers entirely are judged; the limit
    allows for the blurred model's error at sharp features.
    """
    image, scale, covered = model
    op = ObservationOperator(stack.shape, shifts, scale=scale)
    predicted = op.crop_frames(op.forward(op.embed_image(image)))
    judged = op.crop_frames(op.forward(op.embed_image(covered.astype(float)))) > 0.999
    limit = kappa * np.sqrt(np.where(stack.good, stack.var, np.inf))
    limit = limit + _DERIV_SCALE * _local_spread(predicted)
    return stack.good & judged & (np.abs(stack.data - predicted) > limit)


def _local_spread(cube):
    """Largest difference of each pixel from its 8 neighbours (the model's sharpness)."""
    size = (1, 3, 3)
    return np.maximum(ndimage.maximum_filter(cube, size=size) - cube,
                      cube - ndimage.minimum_filter(cube, size=size))


# --------------------------------------------------------------------------- reconstruct


def _reconstruct(stack, scale, psf, reject, kappa, background, stop, tol, max_iter, start,
                 progress):
    op = ObservationOperator(stack.shape, stack.shifts, scale=scale, psf=psf, single=True)
    noise = _PoissonNoise(stack, background)
    good, image = _clean_mask(stack, op, noise, kappa) if reject else (stack.good, None)
    if start is not None:
        image = _start_image(op, _start_array(start, op, stack.unit), stack, good, noise)
    image, info = _richardson_lucy(op, stack, good, noise, image, tol, max_iter, stop=stop,
                                   progress=progress)
    info["pedestal"] = noise.mean_pedestal()
    info["rejected"] = stack.good & ~good
    fisher = op.adjoint(op.embed_frames(np.where(good, 1.0 / stack.var, 0.0)), squared=True)
    coverage = op.crop_image(op.adjoint(op.embed_frames(good.astype(float))))
    covered = coverage > 1e-6 * coverage.max()
    with np.errstate(divide="ignore"):
        var = np.where(covered, 1.0 / op.crop_image(fisher), np.inf)
    image = op.crop_image(image) + noise.mean_pedestal() / scale ** 2
    return np.where(covered, image, 0.0), var, op.crop_image(fisher), info


def _clean_mask(stack, op, noise, kappa):
    """Good-pixel mask without outliers, and the provisional model it was judged by.

    The first mask comes from the median of the frames (robust, but blurred,
    hence the allowance for sharp features). Then provisional models are fitted
    and each frame is compared with its prediction: outliers beyond ``kappa``
    sigma are flagged, and pixels flagged before come back if the model fits
    them. Stops when the mask no longer changes.
    """
    median = _median_model(stack, op.scale, stack.shifts)
    good = stack.good & ~_reject_against(stack, median, stack.shifts, kappa)
    # Only pixels whose footprint the model fully covers are judged: at the
    # frames' edges the sky beyond the field is barely constrained.
    judged = op.crop_frames(op.forward(_observed(op, stack.good).astype(float))) > 0.999
    image = None
    for _ in range(_REJECT_ROUNDS):
        image, _info = _richardson_lucy(op, stack, good, noise, image, -np.inf, _PROVISIONAL_ITER)
        resid = noise.above(stack.data) - op.crop_frames(op.forward(image))
        new = stack.good & ~(judged & (np.abs(resid) > kappa * np.sqrt(stack.var)))
        if np.array_equal(new, good):
            break
        good = new
    return good, image


class _PoissonNoise:
    """Frames as scaled Poisson counts: ``variance = gain_f * (model + pedestal_f + b_f)``.

    Richardson-Lucy is the maximum-likelihood estimator for Poisson data, so
    each frame is put on a count scale: ``gain_f`` and the effective
    background ``b_f`` (sky plus read-noise variance, in data units; the
    standard shift of Snyder et al. 1993 for read noise) come from a straight
    line fitted to the variance against the data. ``background=`` given by
    the user replaces ``b_f``.

    A frame whose sky level departs from zero by more than its noise (a sky
    or bias pedestal that was not subtracted, or an over-subtracted one) has
    that level, less one sigma of slack, as its ``pedestal``: a known
    background of the Poisson model, not light of the image. The image then
    holds only the light above the sky, as for sky-subtracted frames, so the
    iterations converge on the sources and the stopping rules measure them,
    not the pedestal; the mean pedestal is added back to the result.
    """

    def __init__(self, stack, background):
        n = len(stack)
        self.gain, self.background, self.pedestal = np.ones(n), np.zeros(n), np.zeros(n)
        given = np.any(background != 0)
        for i, (d, v, g) in enumerate(zip(stack.data, stack.var, stack.good)):
            sigma = float(np.sqrt(np.median(v[g])))
            floor = _sky_floor(d, g, sigma)
            line = None if given else _variance_line(d[g], v[g])
            if line is None and not given:
                # Flat variance (no Poisson term seen, e.g. a frame without
                # uncertainty): Gaussian noise, as Poisson counts of
                # _FLAT_COUNTS on the sky, in any unit.
                self.gain[i] = sigma / np.sqrt(_FLAT_COUNTS)
                self.pedestal[i] = _pedestal(floor, sigma, np.inf)
                self.background[i] = np.sqrt(_FLAT_COUNTS) * sigma - self.pedestal[i]
                continue
            self.gain[i], self.background[i] = line if line is not None else (1.0, background[i])
            self.pedestal[i] = _pedestal(floor, sigma, floor[0] + self.background[i])
        self.source = "background=" if given else "variance vs data fit"

    def above(self, data):
        """The frames ``(n, ny, nx)`` less their pedestals."""
        return data - self.pedestal[:, None, None]

    def mean_pedestal(self):
        """The pedestal restored to the result: the mean over frames, per input pixel."""
        return float(np.mean(self.pedestal))


def _sky_floor(frame, good, sigma, box=5):
    """A frame's darkest level, and whether most of the frame is one flat sky at that level.

    The darkest level is the 1st percentile of the ``box x box`` local means
    (they average the noise down). Where it lies within 2 sigma of the
    frame's sigma-clipped median, most of the frame is one flat sky.
    """
    num = ndimage.uniform_filter(np.where(good, frame, 0.0), box)
    den = ndimage.uniform_filter(good.astype(float), box)
    low = float(np.percentile((num / np.maximum(den, 1e-12))[good & (den > 0.5)], 1.0))
    _, median, _ = sigma_clipped_stats(frame[good], sigma=3.0, maxiters=5)
    return low, bool(median - low < 2.0 * sigma)


def _pedestal(floor, sigma, sky_counts):
    """A frame's pedestal from its darkest level ``(low, flat)``: ``low`` less one sigma, or 0.

    A frame whose darkest light lies below zero beyond the noise (an
    over-subtracted bias or sky) needs one, or a non-negative image could not
    fit it. One whose flat sky lies above zero beyond the noise (a sky or bias
    pedestal) gets one. Sky-subtracted frames (the darkest light within the
    noise of zero) and fields filled with emission (no flat sky: the finer
    grid may hold darker sky between the sources than any frame pixel shows)
    get none. ``sky_counts`` is the Poisson mean of the darkest sky without
    the pedestal (in data units); the pedestal leaves at least a tenth of
    it, so the model stays positive.
    """
    low, flat = floor
    wanted = low < -2.0 * sigma or (flat and low > sigma)
    if not wanted or not sky_counts > 0:
        return 0.0
    return float(max(low - sigma, low - 0.9 * sky_counts))


def _variance_line(data, var):
    """Fit ``var = gain * (data + b)`` robustly: ``(gain, b)``, or None for a flat variance."""
    lo, hi = np.percentile(data, [5, 99.5])
    edges = np.linspace(lo, hi, 21)
    idx = np.digitize(data, edges)
    x, y = [], []
    for k in range(1, len(edges)):
        sel = idx == k
        if sel.sum() >= 10:
            x.append(np.median(data[sel]))
            y.append(np.median(var[sel]))
    if len(x) >= 3:
        slope, intercept = np.polyfit(x, y, 1)
        if slope > 0 and intercept > 0:
            return float(slope), float(intercept / slope)
    return None


def _richardson_lucy(op, stack, good, noise, start, tol, max_iter, stop="discrepancy",
                     sources=None, progress=False):
    """Multi-frame Richardson-Lucy with Biggs-Andrews acceleration.

    The image is the light above each frame's pedestal (`_PoissonNoise`).
    Stopping rules: ``"discrepancy"`` stops at the first iterate whose model
    reproduces the frames with reduced chi-square <= 1 + tol (default tol:
    3 standard deviations of a perfect model's reduced chi-square), the
    smallest departure from the start that the data allow. With ``sources``
    (a mask of the frames' pixels), the chi-square over those pixels alone
    must also pass, with its own tolerance: over a whole image the sky's
    many pixels hide misfits of the sources (a star's flux), which are what
    photometry measures. When the frames cannot be fitted that well (a wrong
    PSF), it ends when the chi-square has stopped falling for `_STALL_ITER`
    iterations, or at ``max_iter``, and returns the iterate that fitted best.
    ``"converged"`` runs to the maximum-likelihood solution: it stops when an
    iteration moves less than ``tol`` (default `CONVERGED_TOL`) of the
    image's structure (its flux above its own median: what the data
    constrain, never a sky pedestal). The returned ``chi2`` is that of the
    returned image.
    """
    b = noise.background[:, None, None]
    data = noise.above(stack.data)
    inv_gain = (1.0 / noise.gain)[:, None, None]
    counts = op.embed_frames(np.where(good, np.clip(stack.data + b, 0.0, None), 0.0))
    bg = op.embed_frames(np.broadcast_to(b + noise.pedestal[:, None, None], stack.data.shape))
    weight = op.embed_frames(np.where(good, inv_gain, 0.0))
    norm = op.adjoint(weight)
    observed = _observed(op, good, norm)
    fit = _FitMeasure(op, data, stack.var, good, sources)
    if tol is None:
        tol = 3.0 * np.sqrt(2.0 / fit.n_pix) if stop == "discrepancy" else CONVERGED_TOL
    if start is None:
        level = max(float(np.sum(np.where(good, data, 0)) / fit.n_pix) / op.scale ** 2, 1e-3)
        start = np.where(observed, level, 0.0)
    # Zero outside the observed pixels, so the update needs no masking.
    inv_norm = np.where(observed, 1.0 / np.where(observed, norm, 1.0), 0.0)
    x, previous, step, step_before = start, None, None, None
    best, stopped = (np.inf, None, None), "max_iter"
    bar = progress_bar(total=int(max_iter), desc="Richardson-Lucy", unit="iteration",
                       enabled=progress)
    for it in range(1, int(max_iter) + 1):
        bar.update()
        y = _extrapolate(x, previous, step, step_before)
        predicted = op.forward(y)
        chi2, chi2_src = fit.chi2(predicted)
        if stop == "discrepancy":
            if chi2 <= 1.0 + tol and chi2_src <= 1.0 + fit.tol_src:
                x, stopped = y, "discrepancy"
                break
            if chi2 < best[0] * (1.0 - 1e-4):
                best = (chi2, y, it)
            elif it - best[2] >= _STALL_ITER:
                stopped = "stalled"
                break
        ratio = weight * counts / np.maximum(predicted + bg, 1e-12)
        new = op.adjoint(ratio)
        new *= y
        new *= inv_norm
        step_before, step = step, new - y
        previous, x = x, new
        if stop == "converged":
            change = float(np.sum(np.abs(step)) / max(_structure(y, observed), 1e-300))
            if change < tol:
                stopped = "converged"
                break
    bar.close()
    if stop == "discrepancy" and stopped != "discrepancy":
        x = best[1] if best[1] is not None else x  # the iterate that fitted best
    if stopped != "discrepancy":
        chi2, chi2_src = fit.chi2(op.forward(x))
    info = {"chi2": chi2, "iterations": it, "stopped": stopped, "noise": noise.source,
            "chi2_sources": chi2_src if fit.n_src else None}
    return x, info


class _FitMeasure:
    """Reduced chi-square of the frames (and of their source pixels) against a model."""

    def __init__(self, op, data, var, good, sources):
        self.op, self.data = op, data
        self.inv_var = np.where(good, 1.0 / np.where(good, var, 1.0), 0.0)
        self.n_pix = int(good.sum())
        self.sources = None if sources is None else sources & good
        self.n_src = 0 if self.sources is None else int(self.sources.sum())
        self.tol_src = 3.0 * np.sqrt(2.0 / max(self.n_src, 1))

    def chi2(self, predicted):
        """``(chi2_red, chi2_red of the source pixels or 0)`` of a predicted padded cube."""
        chi2_map = self.inv_var * (self.data - self.op.crop_frames(predicted)) ** 2
        chi2 = float(np.sum(chi2_map)) / self.n_pix
        return chi2, (float(np.sum(chi2_map[self.sources])) / self.n_src if self.n_src else 0.0)


def _structure(image, observed):
    """The image's flux above its own median over the observed pixels (what the data constrain).

    The median is taken on every 16th pixel: the same estimate, 16 times cheaper.
    """
    values = image[observed]
    return float(np.sum(np.abs(values - np.median(values[::16]))))


def _start_array(start, op, unit):
    """``start=`` as a per-pixel array of the output grid's unpadded field."""
    a = np.asarray(getattr(start, "data", start), dtype=float)
    expected = tuple(op.scale * n for n in op.shape)
    if a.shape != expected:
        raise ValueError(f"start must have the output grid's shape {expected}, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("start has NaN or inf pixels: fill them first")
    return a / op.scale ** 2 if _surface_brightness(unit) else a


def _start_image(op, fine, stack, good, noise):
    """A positive first iterate on the padded grid from an image of the field.

    The iterations work on the light above the frames' pedestals
    (`_PoissonNoise`), so the mean pedestal is taken off ``fine`` first.
    Richardson-Lucy keeps zeros at zero, so pixels are raised to a small
    floor; the unobserved margin starts at the image's mean level. Raising
    negative noise adds light, so the start is scaled to give, observed, the
    frames' total flux above their pedestals (which the iterations then keep).
    """
    fine = fine - noise.mean_pedestal() / op.scale ** 2
    floor = 1e-3 * max(float(np.mean(np.abs(fine))), 1e-12)
    start = np.full(op.fine_shape, max(float(np.mean(fine)), floor))
    o = op.margin * op.scale
    start[o:o + fine.shape[0], o:o + fine.shape[1]] = np.clip(fine, floor, None)
    predicted = op.crop_frames(op.forward(start))
    return start * np.sum(noise.above(stack.data)[good]) / max(float(np.sum(predicted[good])),
                                                               1e-300)


def _observed(op, good, norm=None):
    """Fine pixels the frames constrain well enough to be solved for."""
    if norm is None:
        norm = op.adjoint(op.embed_frames(good.astype(float)))
    return norm > _MIN_COVERAGE * norm.max()


def _extrapolate(x, previous, step, step_before):
    """Biggs & Andrews (1997) vector extrapolation of the RL iterates, kept >= 0.

    Dot products by BLAS and one temporary array: 4x faster than the
    element-wise expressions (an iteration on one 512x512 frame at scale 4:
    18% faster).
    """
    if previous is None or step_before is None:
        return x
    before = step_before.ravel()
    alpha = float(np.dot(step.ravel(), before)) / max(float(np.dot(before, before)), 1e-300)
    alpha = min(max(alpha, 0.0), 0.98)
    y = x - previous
    y *= alpha
    y += x
    return np.maximum(y, 0.0, out=y)


# --------------------------------------------------------------------------- output


def _surface_brightness(unit):
    """True for units per solid angle (MJy/sr, erg/s/cm2/arcsec2)."""
    if unit is None:
        return False
    try:
        decomposed = unit.decompose()
    except Exception:  # noqa: BLE001 - unknown/composite units: treat as per pixel
        return False
    return dict(zip(decomposed.bases, decomposed.powers)).get(u.rad, 0) <= -2


def _result(stack, image, var, weight, scale, method, pixfrac, info):
    if _surface_brightness(stack.unit):
        # Per-pixel fluxes were computed; surface brightness is flux per area.
        image, var = image * scale ** 2, var * scale ** 4
    mask = ~np.isfinite(var)
    image = np.where(mask, 0.0, image)
    var = np.where(mask, 0.0, var)
    ref = stack.ccds[0]
    wcs = None
    if ref.wcs is not None:
        dx, dy = stack.shifts[0]
        wcs = rescale_wcs(shift_wcs(ref.wcs, -dx, -dy), scale)
    meta = _output_header(ref.meta)
    meta["NCOMBINE"] = (len(stack), "frames fused")
    meta["FUSEMETH"] = (method, "astrosr.fuse method")
    meta["FUSESCAL"] = (float(scale), "output pixels per input pixel")
    n_rejected = int(info["rejected"].sum())
    meta["NREJECT"] = (n_rejected, "input pixels rejected as outliers")
    text = f"astrosr.fuse: method={method} scale={scale} frames={len(stack)}"
    if method == "drizzle":
        meta["PIXFRAC"] = (float(pixfrac), "drizzle drop size")
        text += f" pixfrac={pixfrac} kernel=square weights=IVM-or-user"
    if method == "reconstruct":
        record_fit(meta, info["chi2"], what="the frames", hint=_MISFIT_HINT, stacklevel=4)
        meta["RLSTOP"] = (info["stopped"], "why the Richardson-Lucy iterations ended")
        text += (f" Richardson-Lucy (Biggs-Andrews) iterations={info['iterations']}"
                 f" chi2_red={info['chi2']:.3f} stop={info['stopped']} noise={info['noise']}"
                 f" pedestal={info['pedestal']:.6g}")
    add_history(meta, text + f" rejected={n_rejected} time={info['seconds']:.2f}s")
    if stack.var_estimated:
        add_history(meta, "astrosr.fuse: frame variance estimated from pixel differences")
    out = CCDData(image, unit=stack.unit, uncertainty=_like_input(var, ref.uncertainty), mask=mask,
                  wcs=wcs, meta=meta)
    out.weight = weight
    out.rejected = info["rejected"]
    return out


def _like_input(var, uncertainty):
    """The output variance in the uncertainty class of the input (Variance by default)."""
    if isinstance(uncertainty, StdDevUncertainty):
        return StdDevUncertainty(np.sqrt(var))
    if isinstance(uncertainty, InverseVariance):
        with np.errstate(divide="ignore"):
            return InverseVariance(np.where(var > 0, 1.0 / np.where(var > 0, var, 1.0), 0.0))
    return VarianceUncertainty(var)


def _output_header(meta):
    from astropy.io import fits

    hdr = fits.Header()
    for key in ("TELESCOP", "INSTRUME", "FILTER", "OBJECT", "BUNIT", "DATE-OBS", "EXPTIME"):
        if key in meta:
            hdr[key] = meta[key]
    return hdr
