"""Fusion of registered frames onto a finer grid: drizzle, shift-and-add, reconstruction.

`fuse` puts a stack of dithered frames onto a grid ``scale`` times finer than
the input pixels, in the coordinates of the reference frame (the frame whose
shift is zero; DESIGN.md sign convention), and returns a
`~astropy.nddata.CCDData` with the WCS of that grid, the propagated
uncertainty, a mask where no input pixel landed, the weight map and the
rejected pixels (a `astrosr.output.ResultImage`: they survive ``.copy()`` and
are written as the ``WHT`` and ``REJECT`` extensions), ``NCOMBINE`` and
HISTORY. The frames may differ by shifts, rotations and scales (a geometry
table) or by their WCS, distortion included (``"wcs"``), and the output may
be any grid (``output_wcs=``, ``shape_out=``): see `astrosr.geometry`.

This is the high level: it parses the frames once (`astrosr.FrameStack`),
places them on the output grid (`astrosr.geometry.Placement`), calls the
core (`astrosr.resample`, `astrosr.reconstruct`, `astrosr.forward`) and
builds the result (`astrosr.output`).

Methods
-------
``"drizzle"``
    The square-kernel drizzle of Fruchter & Hook (2002). Each input pixel,
    shrunk by ``pixfrac``, drops its value onto the output pixels in
    proportion to the overlap area: separable for translations, the
    ``drizzle`` package's C kernel for any other geometry
    (`astrosr.resample`).
``"shift_and_add"``
    The classical baseline: each input pixel replicated onto ``scale x
    scale`` output pixels at the nearest whole output pixel (drizzle with
    ``pixfrac=1`` and shifts rounded to the output grid).
``"reconstruct"``
    Maximum-likelihood multi-frame reconstruction with the PSF: multi-frame
    Richardson-Lucy (the Poisson likelihood, each frame put on a count scale
    from its variance) through the observation model
    (PSF, geometry, integration over the input pixels: the FFT operator
    `astrosr.forward.ObservationOperator` for shifts,
    `astrosr.forward.PixmapOperator` for any geometry), with Biggs & Andrews (1997) acceleration; the image stays
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
from astropy.utils.exceptions import AstropyUserWarning

from .calibration import is_raw
from .geometry import OutputGrid, Placement, carries_wcs, fitted_wcs, frame_transforms
from .misfit import record_fit
from .nddata import add_history, shift_wcs
from .output import ResultImage, is_surface_brightness, output_header, uncertainty_like
from .psf import GaussianPSF, as_psf
from .reconstruct import PoissonNoise, clean_mask, median_model, reject_against, richardson_lucy, \
    start_image
from .stack import FrameStack

__all__ = ["fuse", "predict_frames", "METHODS"]

METHODS = ("drizzle", "shift_and_add", "reconstruct")

# The options each method uses; any other one given is an error.
_METHOD_OPTIONS = {
    "drizzle": {"pixfrac", "weights", "reject", "kappa", "psf"},
    "shift_and_add": {"weights", "reject", "kappa", "psf"},
    "reconstruct": {"psf", "reject", "kappa", "background", "stop", "tol", "max_iter", "start"},
}
_DEFAULTS = {"pixfrac": 1.0, "kappa": 5.0, "stop": "converged", "max_iter": 1000}
# Drizzle without a PSF: outliers are judged against a model seen through this
# PSF (sigma in input pixels), narrower than the PSF of well-sampled data.
_REJECTION_PSF = GaussianPSF(0.5)
# What to check when the frames do not fit their reconstruction.
_MISFIT_HINT = ("the PSF (psf=) or the shifts are probably wrong (or the frames' rotation, "
                "scale or WCS), the frames' uncertainty too small, or saturated pixels are not "
                "masked")


def _warn_if_raw(stack):
    """Fusion takes frames as given: raw ones keep their bias, banding and defects."""
    raw = [i for i, ccd in enumerate(stack.ccds) if is_raw(ccd)]
    if raw:
        warnings.warn(f"frames {raw} look raw (whole-number ADU, no uncertainty): fuse uses them "
                      "as given, bias, banding and defects included; calibrate them first "
                      "(astrosr.calibration.calibrate) or use astrosr.MultiFrameSR, which does",
                      AstropyUserWarning, stacklevel=3)


def fuse(frames, geometry=None, *, scale=None, method="drizzle", pixfrac=None, psf=None,
         weights=None, reject=None, kappa=None, background=None, stop=None, tol=None,
         max_iter=None, start=None, output_wcs=None, shape_out=None, reference=0, hdu=None,
         progress=False, chunks=None):
    """Fuse registered frames onto a finer grid, or onto any output grid.

    Parameters
    ----------
    frames : list of CCDData/NDData/paths, 3-D array, or `~astrosr.FrameStack`
        The stack (see `astrosr.nddata.as_frames`). Masked, NaN and infinite
        pixels contribute nothing.
    geometry : table, (n, 2) array, or ``"wcs"``
        Each frame's geometry in the order of ``frames``: a table with
        ``dx``, ``dy`` (input pixels) and optionally ``rotation`` (deg) and
        ``scale`` (as returned by `astrosr.register_stack`; DESIGN.md
        convention, `astrosr.geometry`), an ``(n, 2)`` array or list of
        shifts, or ``"wcs"``: each frame's own WCS, distortion included.
        Default: the `~astrosr.FrameStack`'s ``geometry``.
    scale : number
        Output pixels per input pixel, >= 1 (drizzle also takes a
        non-integer scale). Required unless ``output_wcs`` is given (then
        it is that grid's sampling, which reconstruct needs to be an integer).
    method : {"drizzle", "shift_and_add", "reconstruct"}
    pixfrac : float
        Drizzle: linear size of the shrunk input pixel ("drop"), in (0, 1];
        default 1.
    psf : `~astrosr.psf.PSF` or array, optional
        The PSF (an array is sampled on the output grid: odd, centred, sum
        1), the same for every frame. Required for ``method="reconstruct"``;
        drizzle and shift-and-add use it only to judge outliers (without
        it, a Gaussian of sigma 0.5 input pixels).
    weights : array_like, optional
        Drizzle and shift-and-add: one weight per frame or one per pixel
        ``(n, ny, nx)``. Default: the inverse background variance of each
        frame (the median variance of its pixels; DrizzlePac's IVM), never
        the source's own Poisson term, which would bias the flux low.
    reject : {"auto", True, False}
        Outlier rejection; "auto" (default) turns it on for 3 or more frames.
    kappa : float
        Rejection threshold in sigma (default 5).
    background : float or sequence, optional
        Reconstruct: the Poisson background of the frames, per input pixel in
        their units (one value or one per frame, 0 included): the sky that
        was subtracted from them plus the read-noise variance (the shift of
        Snyder et al. 1993). Default: estimated from the frames'
        uncertainty, by fitting ``variance = gain * (data + background)``.
        It enters the noise model only; the sky is not subtracted.
    stop : {"converged", "discrepancy"}
        Reconstruct's stopping rule (default ``"converged"``). ``"converged"``:
        run to the maximum-likelihood solution, stopping when an iteration
        moves less than ``tol`` (default 1e-4) of the image's structure.
        ``"discrepancy"`` (Morozov): stop at the first iterate that reproduces
        the frames with reduced chi-square <= ``1 + tol`` (default ``3 *
        sqrt(2 / n_pixels)``, three standard deviations of a perfect
        model's), the most conservative choice.
    tol : float, optional
        Tolerance of the stopping rule (see ``stop``).
    max_iter : int
        Reconstruct: safety cap on Richardson-Lucy iterations (default 1000).
    start : array_like or NDData, optional
        Reconstruct: the first iterate, an image of the output grid (in the
        output's units), for example a refined image; negative pixels are
        raised to a small floor and the image is scaled so that, observed,
        it has the frames' total flux. Default: a flat image.
    output_wcs : WCS, optional
        Any output projection (a FITS or APE-14 celestial WCS), with
        ``shape_out``; the frames need a WCS. Default: the reference frame's
        grid ``scale`` times finer.
    shape_out : tuple of int, optional
        ``(ny, nx)`` of the output grid.
    reference : int
        With ``geometry="wcs"``: the frame whose grid is the reference.
    hdu : int or str, optional
        HDU to read when ``frames`` are paths.
    progress : bool
        Reconstruct: show a progress bar over the Richardson-Lucy iterations
        (the other methods have none to show).
    chunks : int or tuple, optional
        Process as dask arrays in these blocks; see
        `astrosr.parallel.fuse_blocks`. Dask-backed frames go there too (the
        result is then a lazy `astrosr.parallel.BlockImage`).

    Returns
    -------
    `~astrosr.output.ResultImage`
        A CCDData with ``uncertainty`` (the input's class, Variance by
        default), ``mask`` (no coverage), ``weight`` (the weight map) and
        ``rejected`` (boolean cube of the input pixels rejected as outliers),
        WCS of the output grid (when the frames have one), ``NCOMBINE``,
        ``FUSESCAL``, ``FUSEMETH``, ``FUSEGEOM``, ``NREJECT``, and HISTORY.
        Per-pixel units (electron, adu, Jy/pixel) keep the total flux;
        surface-brightness units keep the surface brightness. For
        reconstruct the uncertainty is the conditional variance of each
        pixel (the inverse diagonal of the Fisher matrix): a lower bound,
        since the errors of a deconvolution are correlated.

    Raises
    ------
    ValueError
        An unknown method or option value, an option the method does not
        use, a geometry that does not match the frames.
    TypeError
        Reconstruct without ``psf``; no geometry.
    """
    given = {k: v for k, v in dict(pixfrac=pixfrac, psf=psf, weights=weights, reject=reject,
                                   kappa=kappa, background=background, stop=stop, tol=tol,
                                   max_iter=max_iter, start=start).items() if v is not None}
    opts = _options(method, given)
    from .parallel import is_dask_backed

    if chunks is not None or is_dask_backed(frames):
        from .parallel import fuse_blocks

        grid = {k: v for k, v in dict(output_wcs=output_wcs, shape_out=shape_out,
                                      hdu=hdu).items() if v is not None}
        return fuse_blocks(frames, geometry, scale=scale, method=method, chunks=chunks,
                           **given, **grid, reference=reference, progress=progress)
    opts["progress"] = bool(progress)
    stack = FrameStack.parse(frames, hdu=hdu)
    _warn_if_raw(stack)
    placement, scale, note = _placement(stack, geometry, scale, method, output_wcs, shape_out,
                                        reference)
    reject = len(stack) >= 3 if opts["reject"] == "auto" else opts["reject"]
    t0 = time.perf_counter()
    if method == "reconstruct":
        psf = as_psf(opts["psf"], oversampling=scale)
        image, var, weight, info = _reconstruct(stack, placement, scale, psf, reject, opts)
    else:
        image, var, weight, info = _drizzle(stack, placement, scale, reject, opts,
                                            snap=method == "shift_and_add")
    info["seconds"] = time.perf_counter() - t0
    info["geometry"] = note
    return _result(stack, placement, image, var, weight, scale, method, opts, info)


def predict_frames(image, frames, geometry=None, *, psf, scale=None, output_wcs=None,
                   shape_out=None, reference=0, hdu=None):
    """The frames an image of the output grid predicts, through the observation model.

    The model of ``method="reconstruct"`` (`astrosr.forward`): the PSF, each
    frame's geometry and the integration over its pixels, on the grid `fuse`
    would use for the same arguments. Light outside the output grid is not
    known, so a frame pixel is *modelled* only where the grid holds all of
    its light (at least 99.9 %): the frames' borders that see past the
    grid's edge are not.

    Parameters
    ----------
    image : array_like or NDData
        An image of the output grid, in the frames' units (per output pixel,
        or surface brightness), as `fuse` returns it.
    frames, geometry, scale, output_wcs, shape_out, reference, hdu
        As for `fuse`.
    psf : `~astrosr.psf.PSF` or array
        The PSF (an array is sampled on the output grid).

    Returns
    -------
    predicted : numpy.ndarray
        ``(n, ny, nx)``: each frame as the image predicts it, in the frames' units.
    modelled : numpy.ndarray of bool
        ``(n, ny, nx)``: the pixels whose light the output grid holds.
    """
    stack = FrameStack.parse(frames, hdu=hdu)
    placement, scale, _ = _placement(stack, geometry, scale, "reconstruct", output_wcs, shape_out,
                                     reference)
    op = placement.operator(as_psf(psf, oversampling=scale), scale=scale, single=False)
    fine = _start_array(image, placement.out_shape, placement.grid.pixel_area(), stack.unit)
    predicted = np.array(op.crop_frames(op.forward(op.embed_image(fine))))
    inside = op.crop_frames(op.forward(op.embed_image(np.ones(placement.out_shape))))
    everywhere = op.crop_frames(op.forward(np.ones(op.fine_shape)))
    # A pixel the modelled grid barely reaches (or not at all) is not modelled either.
    reached = everywhere >= 0.5 * everywhere.max(axis=(-2, -1), keepdims=True)
    return predicted, reached & (inside >= (1.0 - 1e-3) * everywhere)


# --------------------------------------------------------------------------- options


def _options(method, given):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    unused = sorted(set(given) - _METHOD_OPTIONS[method])
    if unused:
        raise ValueError(f"option(s) {unused} are not used by method={method!r}; it takes "
                         f"{sorted(_METHOD_OPTIONS[method])}: leave them out")
    opts = {**_DEFAULTS, "reject": "auto", **given}
    if opts["reject"] not in ("auto", True, False):
        raise ValueError(f"reject must be 'auto', True or False, got {opts['reject']!r}")
    if opts["stop"] not in ("converged", "discrepancy"):
        raise ValueError(f"stop must be 'converged' or 'discrepancy', got {opts['stop']!r}")
    if method == "reconstruct" and "psf" not in given:
        raise TypeError("psf is required for method='reconstruct': pass an astrosr.psf "
                        "model or an array sampled on the output grid")
    if method == "shift_and_add":
        opts["pixfrac"] = 1.0
    elif not 0 < opts["pixfrac"] <= 1:
        raise ValueError(f"pixfrac must be in (0, 1], got {opts['pixfrac']}")
    return opts


def _check_scale(scale, *, integer):
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise TypeError(f"scale must be a number, got {scale!r}") from None
    if not np.isfinite(value) or value < 1:
        raise ValueError(f"scale must be >= 1 (output pixels per input pixel), got {scale}")
    if integer:
        if abs(value - round(value)) > 1e-2 * value:
            raise ValueError(f"scale must be an integer for this method, got {scale}; "
                             "method='drizzle' takes a non-integer scale")
        return int(round(value))
    return int(value) if value == int(value) else value


# --------------------------------------------------------------------------- geometry


def _placement(stack, geometry, scale, method, output_wcs, shape_out, reference):
    """Where the frames land on the output grid, the grid's sampling, and a note for HISTORY."""
    if geometry is None:
        geometry = stack.geometry
    if geometry is None:
        raise TypeError("geometry is required: pass the table of astrosr.register_stack, an "
                        "(n, 2) array of shifts, or 'wcs' to align by the frames' WCS")
    if not isinstance(geometry, str):
        if not hasattr(geometry, "__len__"):
            raise TypeError(f"geometry must be a table, an (n, 2) array of shifts or 'wcs', "
                            f"got {geometry!r}")
        if len(geometry) != len(stack):
            raise ValueError(f"geometry has {len(geometry)} rows but there are {len(stack)} "
                             "frames: give one row per frame, in the order of frames")
    transforms = frame_transforms(geometry, stack.shape, stack.wcs, reference=reference)
    ref_wcs = _reference_wcs(stack, transforms, geometry, reference)
    if scale is None and output_wcs is None:
        raise TypeError("scale is required (output pixels per input pixel) unless output_wcs "
                        "is given")
    integer = method != "drizzle"
    if scale is not None:
        scale = _check_scale(scale, integer=integer)
    grid = OutputGrid(stack.shape, scale, reference_wcs=ref_wcs, output_wcs=output_wcs,
                      shape_out=shape_out)
    scale = _check_scale(grid.scale, integer=integer)
    placement = Placement(transforms, stack.shape, grid)
    kind = "shift" if all(t.is_shift for t in transforms) else "similarity"
    if isinstance(geometry, str) or carries_wcs(geometry):
        kind = ("wcs" if isinstance(geometry, str) else "wcs (corrected by registration)") + (
            " (translations only: the shift path)" if kind == "shift" else "")
    return placement, scale, kind + ("" if grid.is_default else " onto output_wcs/shape_out")


def _reference_wcs(stack, transforms, geometry, reference):
    """The WCS of the reference's pixels: the geometry's identity frame, else derived from frame 0."""
    if isinstance(geometry, str):
        return stack.wcs[reference]
    if carries_wcs(geometry):
        return geometry["wcs"][reference]
    from astropy.wcs import WCS

    for t, w in zip(transforms, stack.wcs):
        if w is not None and t.is_shift and t.dx == 0.0 and t.dy == 0.0:
            return w
    t0, w0 = transforms[0], stack.wcs[0]
    if w0 is None:
        return None
    if t0.is_shift and isinstance(w0, WCS):
        return shift_wcs(w0, -t0.dx, -t0.dy)
    return fitted_wcs(w0, t0.reference_to_frame, stack.shape)


# --------------------------------------------------------------------------- drizzle


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
        # A frame without a good pixel (held out) has nothing to weigh.
        if stack.good[i].any() and not w[i].any():
            raise ValueError(f"weights of frame {i} are all zero: drop the frame instead")
    return w


def _drizzle(stack, placement, scale, reject, opts, snap):
    place = placement.snapped() if snap else placement
    w = _frame_weights(stack, opts.get("weights"))
    rejected = np.zeros(stack.data.shape, bool)
    if reject:
        # Judged against a model fitted to the frames through the PSF (or, without
        # one, a Gaussian narrower than any well-sampled PSF): it predicts each
        # frame within its noise, so cosmic rays on bright sources are found
        # too, and it cannot put a hit into one frame with fine-grid structure.
        fine = _rejection_placement(placement, scale)
        model_psf = (as_psf(opts["psf"], oversampling=fine.grid.scale) if "psf" in opts
                     else _REJECTION_PSF)
        op = fine.operator(model_psf, scale=fine.grid.scale)
        good, _ = _outlier_free(stack, fine, op, None, opts["kappa"])
        w = np.where(good, w, 0.0)
        rejected = stack.good & ~good
    # Per-pixel flux onto the output: each input pixel's flux over its footprint's area.
    area = place.areas()
    mean, var, wht = place.drizzle(stack.data / area, w, stack.var / area ** 2, opts["pixfrac"])
    return mean, var, wht, {"rejected": rejected}


#: Elements of the frames' fine images held at once by `_median_first` (their median
#: takes about five times as much).
_STRIP_PIXELS = 2 ** 21


def _rejection_placement(placement, scale):
    """The placement on an integer fine grid, on which outliers are judged."""
    grid = int(np.ceil(scale))
    if not placement.is_shift or grid == placement.grid.scale:
        return placement
    return Placement(placement.transforms, placement.shape, OutputGrid(placement.shape, grid))


def _outlier_free(stack, placement, op, noise, kappa):
    """Good pixels without outliers, and the provisional model (`astrosr.reconstruct.clean_mask`)."""
    plain = placement.operator(None, scale=op.scale, single=False)
    first = reject_against(stack, plain, _median_first(stack, placement), kappa)
    if noise is None:
        noise = PoissonNoise(stack, None)
    return clean_mask(stack, op, noise, kappa, first)


def _median_first(stack, placement):
    """The median model: each frame alone on the fine grid (drop pixfrac 1, snapped shifts).

    For shifts on an integer grid it is built by strips of the output, so that
    the frames' fine images are never all held at once (16 frames of 2048²
    at scale 4 would need 8.6 GB).
    """
    snapped = placement.snapped()
    scale = snapped.grid.scale
    if not (snapped.is_shift and float(scale).is_integer()):
        return median_model(_singles(stack, snapped))
    s, ny = int(scale), stack.shape[0]
    image = np.zeros(snapped.out_shape)
    covered = np.zeros(snapped.out_shape, dtype=bool)
    step = max(1, _STRIP_PIXELS // (len(stack) * snapped.out_shape[1] * s))
    for first in range(0, ny, step):
        stop = min(first + step, ny)
        rows, part = snapped.strip(first, stop)
        sub = stack.data[:, rows], stack.good[:, rows]
        image[s * first:s * stop], covered[s * first:s * stop] = median_model(
            _singles(sub, part))
    return image, covered


def _singles(frames, placement):
    """Each frame alone on the output grid ``(n, NY, NX)``, NaN where it is absent.

    ``frames`` is a stack or a pair of cubes ``(data, good)``.
    """
    data, good = (frames.data, frames.good) if hasattr(frames, "data") else frames
    area = placement.areas()
    singles = np.full((len(data),) + placement.out_shape, np.nan, dtype=np.float32)
    for i in range(len(data)):
        mean, _, wht = _single(placement, i).drizzle(data[i:i + 1] / area[i:i + 1],
                                                     good[i:i + 1].astype(float), None, 1.0)
        singles[i] = np.where(wht * area[i].mean() > 0.5, mean, np.nan)
    return singles


def _single(placement, i):
    return Placement(placement.transforms[i:i + 1], placement.shape, placement.grid)


# --------------------------------------------------------------------------- reconstruct


def _reconstruct(stack, placement, scale, psf, reject, opts):
    op = placement.operator(psf, scale=scale, single=True)
    if not placement.is_shift:
        # Frame pixels whose footprint leaves the modelled grid are not modelled.
        stack = stack.restricted(op.inside)
    background = opts.get("background")
    noise = PoissonNoise(stack, None if background is None
                         else _per_frame(background, len(stack), "background"))
    if reject:
        good, image = _outlier_free(stack, placement, op, noise, opts["kappa"])
    else:
        good, image = stack.good, None
    if "start" in opts:
        fine = _start_array(opts["start"], placement.out_shape, placement.grid.pixel_area(),
                            stack.unit)
        image = start_image(op, fine, stack, good, noise)
    image, info = richardson_lucy(op, stack, good, noise, image, opts.get("tol"),
                                  opts["max_iter"], stop=opts["stop"], progress=opts["progress"])
    info["pedestal"] = noise.mean_pedestal()
    info["rejected"] = stack.good & ~good
    fisher = op.crop_image(op.adjoint(op.embed_frames(np.where(good, 1.0 / stack.var, 0.0)),
                                      squared=True))
    coverage = op.crop_image(op.adjoint(op.embed_frames(good.astype(float))))
    # Band-limited shifts ring: a pixel reached only by a ringing tail (frames that do not
    # overlap it) has no positive information, and is not covered.
    covered = (coverage > 1e-6 * coverage.max()) & (fisher > 0)
    var = np.where(covered, 1.0 / np.where(covered, fisher, 1.0), np.inf)
    image = op.crop_image(image) + noise.mean_pedestal() / placement.grid.pixel_area()
    return np.where(covered, image, 0.0), var, fisher, info


def _per_frame(value, n, name):
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be one finite number or one per frame ({n})")
    return arr


def _start_array(start, shape, area, unit):
    """``start=`` as a per-pixel array of the output grid."""
    a = np.asarray(getattr(start, "data", start), dtype=float)
    if a.shape != tuple(shape):
        raise ValueError(f"start must have the output grid's shape {tuple(shape)}, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("start has NaN or inf pixels: fill them first")
    return a / area if is_surface_brightness(unit) else a


# --------------------------------------------------------------------------- output


def _result(stack, placement, image, var, weight, scale, method, opts, info):
    area = placement.grid.pixel_area()
    if is_surface_brightness(stack.unit):
        # Per-pixel fluxes were computed; surface brightness is flux per area.
        image, var = image * area, var * area ** 2
    mask = ~np.isfinite(var)
    image = np.where(mask, 0.0, image)
    var = np.where(mask, 0.0, var)
    ref = stack.ccds[0]
    meta = output_header(ref.meta)
    meta["NCOMBINE"] = (len(stack), "frames fused")
    meta["FUSEMETH"] = (method, "astrosr.fuse method")
    meta["FUSESCAL"] = (float(scale), "output pixels per input pixel")
    meta["FUSEGEOM"] = (info["geometry"].split()[0], "geometry of the frames")
    n_rejected = int(info["rejected"].sum())
    meta["NREJECT"] = (n_rejected, "input pixels rejected as outliers")
    text = (f"astrosr.fuse: method={method} scale={scale} frames={len(stack)} "
            f"geometry={info['geometry']}")
    if method == "drizzle":
        meta["PIXFRAC"] = (float(opts["pixfrac"]), "drizzle drop size")
        text += f" pixfrac={opts['pixfrac']} kernel=square weights=IVM-or-user"
    if method == "reconstruct":
        record_fit(meta, info["chi2"], what="the frames", hint=_MISFIT_HINT, stacklevel=4)
        meta["RLSTOP"] = (info["stopped"], "why the Richardson-Lucy iterations ended")
        text += (f" Richardson-Lucy (Biggs-Andrews) iterations={info['iterations']}"
                 f" chi2_red={info['chi2']:.3f} stop={info['stopped']} noise={info['noise']}"
                 f" pedestal={info['pedestal']:.6g}")
    add_history(meta, text + f" rejected={n_rejected} time={info['seconds']:.2f}s")
    if stack.var_estimated:
        add_history(meta, "astrosr.fuse: frame variance estimated from pixel differences")
    return ResultImage(image, unit=stack.unit, uncertainty=uncertainty_like(var, ref.uncertainty),
                       mask=mask, wcs=placement.grid.fits_wcs(), meta=meta, weight=weight,
                       rejected=info["rejected"])
