"""Sub-pixel registration of frames: phase correlation, then refinement to the noise limit.

Two steps:

1. **Phase correlation** by the upsampled DFT of Guizar-Sicairos, Thurman &
   Fienup (2008, Opt. Lett. 33, 156), on Hann-windowed frames whose dynamic
   range is compressed (asinh), with masked and NaN pixels filled: a robust
   first estimate, good to a fraction of a pixel, for shifts up to a quarter
   of the frame.
2. **Maximum-likelihood refinement**: the frame is modelled as
   ``a * T(x - dx, y - dy) + b`` where ``T`` is a cubic-spline surface through
   a Wiener-filtered template, and ``(dx, dy, a, b)`` are fitted by
   Gauss-Newton weighted least squares on the overlap, pixels weighted by the
   inverse variance of the frame. Only pixels whose template value is
   interpolated from inside the template's support are used (no wrap-around,
   no ringing at the edges).
   Errors come from the Fisher information of that fit.

`register` fits one frame against one reference (the reference's noise is
included in the weights and errors). `register_stack` registers each frame
against the mean of all the *other* frames, aligned with the current shifts
(a leave-one-out template, far less noisy than one frame), iterated to a
fixed point; the shifts are then given relative to the reference frame.

Frames of `~astrosr.registration.informative.MIN_PIXELS` or more are
registered (shifts) on their informative pixels only, against templates
built without a filter per template (`astrosr.registration.informative`):
the cost then grows with the pixels that hold the information, not with the
frame; the first estimate comes from a binned frame and a central crop
(`coarse_shift`), and the PSF that chooses the method from a central crop.

Why scipy.ndimage/scipy.fft and not ``skimage.registration``: the refinement
needs the template, its gradient and the coverage at arbitrary sub-pixel
shifts, with masks and weights, which skimage's phase correlation does not
expose; the phase-correlation step is short enough to keep alongside.
"""

from dataclasses import dataclass

import numpy as np
from astropy import units as u
from astropy.table import QTable

from ..calibration import calibrated_stack
from ..geometry import Corrected, Similarity, frame_centre, frame_transforms, local_area
from ..psf import as_psf, estimate_psf
from ..stack import FrameStack
from .correlation import CoarseShift, coarse_shift, phase_correlation
from .fitting import (FREE, TOL, Fit, check_common_signal, check_frame_signal, fit_shift,
                      fit_transform, scaled_errors)
from .informative import MIN_PIXELS, InformativeStack
from .model import MODEL_SCALE, ModelTemplate, fine_model
from .rotation import coarse_similarity
from .templates import Frame, Template, fill
from .wcs_correction import corrected_wcs

__all__ = ["Shift", "register", "register_stack", "phase_correlation"]


@dataclass(frozen=True)
class Shift:
    """Result of `register`: the frame's shift relative to the reference.

    A source at ``(x, y)`` in the reference appears at ``(x + dx, y + dy)``
    in the frame. ``flux_ratio`` is the frame's flux scale relative to the
    reference, ``chi2`` the reduced chi-square of the fit.
    """

    dx: float
    dy: float
    dx_err: float
    dy_err: float
    flux_ratio: float
    chi2: float


# --------------------------------------------------------------------------- public API


def register(frame, reference, *, upsample=100):
    """Sub-pixel shift of one frame relative to a reference frame.

    Parameters
    ----------
    frame, reference : `~astropy.nddata.NDData`, `~astropy.nddata.CCDData` or array
        Same shape. Uncertainties (variance, standard deviation or inverse
        variance) weight the fit and give calibrated errors; without them a
        uniform noise is estimated from the data. Masked and NaN pixels are
        ignored.
    upsample : int
        Upsampling of the phase-correlation first estimate.

    Returns
    -------
    Shift
        ``dx, dy`` such that a source at ``(x, y)`` in ``reference`` is at
        ``(x + dx, y + dy)`` in ``frame``, their standard errors, flux ratio
        and reduced chi-square.

    Raises
    ------
    ValueError
        Different shapes, constant or fully masked frames, frames that do not
        overlap.
    """
    try:
        pair = FrameStack([reference, frame])
    except ValueError as err:
        raise ValueError(str(err).replace("frames[0]", "reference").replace("frames[1]", "frame")
                         ) from None
    return _register_pair(Frame(pair, 1, "frame"), Frame(pair, 0, "reference"), upsample)


def _register_pair(img, ref, upsample):
    d0 = np.array(phase_correlation(ref.data, img.data, upsample=upsample,
                                    good=(ref.good, img.good)))
    template = Template(ref.data, ref.good_var, ref.good)
    fit = fit_shift(img, template, d0, template_noise_in_weights=True)
    check_common_signal(fit, "frame")
    err = scaled_errors(fit, img.estimated_noise)
    return Shift(dx=float(fit.d[0]), dy=float(fit.d[1]), dx_err=float(err[0]),
                 dy_err=float(err[1]), flux_ratio=float(fit.flux_ratio), chi2=float(fit.chi2))


def register_stack(frames, reference=0, *, transform="shift", use_wcs=False, psf=None,
                   method="auto", upsample=100, max_iter=12, hdu=None, progress=False):
    """Sub-pixel geometry of every frame of a stack relative to one of them.

    Each frame is first located against the reference (phase correlation for
    shifts; rotation and scale from any start by log-polar correlation of the
    Fourier magnitudes, the 180-degree ambiguity resolved by correlation; or
    the frames' WCS with ``use_wcs=True``), then fitted by weighted least
    squares against a leave-one-out template (the mean of all other frames,
    aligned with the current geometry), and the templates are rebuilt until
    the parameters stop changing (by less than 0.3 of their errors, at most
    ``max_iter`` rounds). Frames sampled more coarsely than Nyquist (PSF FWHM
    below 2 input pixels) are then fitted against a Richardson-Lucy model of
    the sky on a 4x finer grid, observed through each frame's geometry, the
    PSF and the pixels, alternated with the model until it converges
    (`astrosr.registration.model`): the only way to the noise limit there.

    Parameters
    ----------
    frames : list of CCDData/NDData/str, or 3-D array
        The stack (see `astrosr.nddata.as_frames`); uncertainties weight the
        fit and make the errors calibrated.
    reference : int
        Index of the frame that defines the identity.
    transform : {"shift", "rigid", "similarity"}
        The parameters fitted: ``dx, dy``; plus ``rotation``; plus ``scale``
        (DESIGN.md convention, about the frame centre).
    use_wcs : bool
        Start from each frame's WCS (distortion included) and fit a
        correction on top of it (the ``transform`` parameters, in the
        reference's pixels): the table's ``dx, dy, rotation, scale`` are then
        that correction, and its column ``wcs`` holds each frame's corrected
        WCS (CRVAL and CD adjusted, distortion kept), as TweakReg does.
    psf : `~astrosr.psf.PSF`, optional
        The frames' PSF, for the choice of method and the model fit; default:
        measured on the stars of the reference frame when ``method`` needs it.
    method : {"auto", "correlation", "model"}
        ``"auto"`` fits against the fine-grid model when the PSF's FWHM is
        below 2 input pixels, else against the frames (the fast path); the
        choice and its reason are in ``table.meta["registration"]``.
    upsample : int
        Upsampling of the phase-correlation first estimate of shifts.
    max_iter : int
        Most template rebuilds.
    hdu : int or str, optional
        HDU to read when ``frames`` are FITS paths.
    progress : bool
        Show a progress bar (with ETA) over the frames.

    Returns
    -------
    `~astropy.table.QTable`
        Columns ``frame``, ``dx``, ``dy``, ``dx_err``, ``dy_err`` (pixels),
        with ``rotation``, ``rotation_err`` (deg) for rigid and similarity
        and ``scale``, ``scale_err`` for similarity, then ``flux_ratio`` and
        ``chi2`` (and ``wcs`` with ``use_wcs``). A source at ``p`` in the
        reference is at ``scale * R(rotation) (p - c) + c + (dx, dy)`` in
        frame ``i`` (``c`` the frame centre). The errors of frame ``i``
        combine its own and the reference's measurement errors, because the
        reference's noise sets where zero is; the reference row has zeros.
        ``meta["registration"]`` says which method ran and why, and
        ``meta["registration_pixels"]`` the fraction of a frame's pixels that
        its fit used (the median over the frames): frames of
        `~astrosr.registration.informative.MIN_PIXELS` or more are fitted
        (shifts) on the pixels that hold 99% of the information, and their
        errors come from those pixels.

    Raises
    ------
    ValueError
        Unknown transform or method, a reference out of range, frames that do
        not overlap or show no common signal, ``use_wcs`` without a WCS.
    """
    if transform not in FREE:
        raise ValueError(f"transform must be one of {sorted(FREE)}, got {transform!r}")
    if method not in ("auto", "correlation", "model"):
        raise ValueError(f"method must be 'auto', 'correlation' or 'model', got {method!r}")
    frames, calibration = calibrated_stack(frames, hdu=hdu)
    n = len(frames)
    if not -n <= reference < n:
        raise ValueError(f"reference={reference} is out of range for {n} frames")
    reference %= n
    wcs_maps = wcs_starts(frames, reference) if use_wcs else None
    if n == 1:
        return _table(frames, [Fit(_IDENTITY.copy(), np.zeros((4, 4)), 1.0, 0.0,
                                   1.0, 0.0)], 0, transform, None, "single frame", None)
    if transform == "shift" and wcs_maps is None and frames.data[0].size >= MIN_PIXELS:
        # Fitted on their informative pixels: a frame without signal is refused on all of
        # them, as the fits on every pixel refuse it, and before anything is measured.
        for i in range(n):
            check_frame_signal(frames.data[i], frames.var[i], frames.good[i], f"frames[{i}]")
    method, why, psf = choose_method(frames, reference, psf, method)
    from ..progress import progress_bar

    with progress_bar(total=3 * n, desc="registering", unit="frame", enabled=progress) as bar:
        stack = []
        for i in range(n):
            stack.append(Frame(frames, i, f"frames[{i}]"))
            bar.update(1)
        if transform == "shift" and wcs_maps is None:
            fits = _shift_fits(stack, reference, upsample, max_iter, bar)
        else:
            fits = _warp_fits(stack, reference, transform, wcs_maps, max_iter, bar)
        if method.startswith("model"):
            fits = _model_fits(frames, stack, fits, transform, wcs_maps, psf,
                               min(max_iter, _MODEL_ROUNDS))
    for i, fit in enumerate(fits):
        check_common_signal(fit, f"frames[{i}]")
    why = why if calibration is None else f"{why}; {calibration}"
    return _table(frames, fits, reference, transform, [s.estimated_noise for s in stack],
                  f"{method}: {why}", wcs_maps)


def _shift_fits(stack, reference, upsample, max_iter, bar):
    """Shifts: phase correlation, a fit to the reference, then leave-one-out templates (on the
    informative pixels of frames of `MIN_PIXELS` or more)."""
    if stack[0].data.size >= MIN_PIXELS:
        return _informative_fits(stack, reference, upsample, max_iter, bar)

    def first_fit(ref, frame, template, i):
        d0 = coarse_shift(ref.data, frame.data, upsample=upsample, good=(ref.good, frame.good))
        return fit_shift(frame, template, d0, template_noise_in_weights=True)

    return _from_reference(stack, reference, first_fit, "shift", None, max_iter, bar)


def _informative_fits(stack, reference, upsample, max_iter, bar):
    """`_shift_fits` on the informative pixels (`astrosr.registration.informative`).

    The leave-one-out rounds start from the correlation's estimates (a round
    on the informative pixels costs less than fits to the reference on the
    pixels informative in it alone). A round maps the shifts ``p`` it starts
    from to ``q``: a frame's template is the mean of the others, so its error
    relative to them becomes minus theirs over ``n - 1``, and the fixed point
    is ``q + (p - q) / n``, where the next round starts. It then moves the
    shifts by what the linear picture leaves (a small fraction of their
    errors), and the rounds stop, as `_iterate_templates`'s, when one changes
    them by less than `CONVERGED` of their errors.
    """
    pixels = InformativeStack(stack, reference)
    ref = stack[reference]
    locate = CoarseShift(ref.data, upsample=upsample, good=ref.good)
    starts = np.zeros((len(stack), 2))
    for i, frame in enumerate(stack):
        if i != reference:
            starts[i] = locate(frame.data, good=frame.good)
    if len(stack) == 2:
        fit = pixels.first_fit(1 - reference, starts[1 - reference])
        check_common_signal(fit, f"frames[{1 - reference}]")
        fits = [fit, fit]
        fits[reference] = _identity_fit(fit)
        bar.update(2)
        return fits
    bar.update(len(stack))
    params = [np.array([d[0], d[1], 0.0, 1.0]) for d in starts]
    fits = None
    for round_ in range(max(int(max_iter), 1)):
        if round_:
            bar.total += len(stack)
            bar.refresh()
        fits = pixels.leave_one_out(np.array([p[:2] for p in params]), progress=bar.update)
        if round_ == 0:
            for i, fit in enumerate(fits):
                check_common_signal(fit, f"frames[{i}]")
        new = [f.params for f in fits]
        if round_ and _converged(params, new, fits, 2):
            break
        params = [q + (p - q) / len(stack) for p, q in zip(params, new)]
    return fits


def _warp_fits(stack, reference, kind, wcs_maps, max_iter, bar):
    """Rotation/scale (or a WCS start): coarse start, a fit to the reference, then
    leave-one-out templates."""
    def first_fit(ref, frame, template, i):
        start = _coarse(ref, frame, kind, _map(wcs_maps, i))
        return fit_transform(frame, template, start, kind, inputs=_inputs(wcs_maps, i),
                             template_noise_in_weights=True)

    return _from_reference(stack, reference, first_fit, kind, wcs_maps, max_iter, bar)


def _from_reference(stack, reference, first_fit, kind, wcs_maps, max_iter, bar):
    """Every frame fitted to the reference (a frame of another sky is refused at once, before
    the others are fitted), then, from there, to leave-one-out templates (`register` with two).

    The first fits start the templates at the precision of one pair, so the
    leave-one-out rounds converge in a few: started from the correlation's
    estimates, templates of frames misplaced by a tenth of a pixel take many.
    """
    ref = stack[reference]
    first = Template(ref.data, ref.good_var, ref.good)
    fits = []
    for i, frame in enumerate(stack):
        fit = None
        if i != reference:
            fit = first_fit(ref, frame, first, i)
            check_common_signal(fit, f"frames[{i}]")
        fits.append(fit)
        bar.update(1)
    fits[reference] = _identity_fit(fits[1 - reference])
    if len(stack) == 2:
        return fits
    return _iterate_templates(stack, [f.params for f in fits], kind, wcs_maps, max_iter, bar)


def _coarse(ref, frame, kind, wcs_map):
    """The start of the fit: log-polar correlation, or the WCS and a phase correlation."""
    center = _center(frame)
    if wcs_map is None:
        dx, dy, rot, scl = coarse_similarity(ref.data, frame.data, good=(ref.good, frame.good),
                                             scale=kind == "similarity")
        return Similarity(dx, dy, rot if kind != "shift" else 0.0, scl, center=center)
    # On the reference grid through the WCS, what is left is (nearly) a translation.
    values, _, cover = frame.resampled(wcs_map.transform)
    dx, dy = phase_correlation(ref.data, fill(values, cover), good=(ref.good, cover))
    return Similarity(dx, dy, center=center)


def _inputs(wcs_maps, i):
    return None if wcs_maps is None else wcs_maps[i].inputs


def _center(frame):
    return frame_centre(frame.data.shape)


def _transform(params, frame, wcs_map):
    """Reference grid <-> frame pixels for fitted ``params`` (and a WCS start)."""
    sim = Similarity(*params, center=_center(frame))
    return sim if wcs_map is None else Corrected(wcs_map.transform, sim)


def _identity_fit(fit):
    return Fit(_IDENTITY.copy(), np.zeros_like(fit.cov), 1.0, 0.0, 1.0, fit.signal, fit.pixels)


def _iterate_templates(stack, params, kind, wcs_maps, max_iter, bar=None):
    """Fit every frame to its leave-one-out template until the parameters converge.

    ``bar`` (a progress bar) advances by one per frame fitted; its total
    grows by a round of frames when a round after the first begins.
    """
    fits, k = None, FREE[kind]
    shift_only = kind == "shift" and wcs_maps is None
    for round_ in range(max(int(max_iter), 1)):
        if bar is not None and round_:
            bar.total += len(stack)
            bar.refresh()
        if shift_only:
            aligned = [f.aligned(p[:2]) for f, p in zip(stack, params)]
        else:
            aligned = [f.resampled(t, area=1.0 / local_area(t.frame_to_reference, _center(f)))
                       for f, t in ((f, _transform(p, f, _map(wcs_maps, i)))
                                    for i, (f, p) in enumerate(zip(stack, params)))]
        total = sum(np.where(c, v, 0.0) for v, _, c in aligned)
        total_var = sum(np.where(c, w, 0.0) for _, w, c in aligned)
        count = sum(c.astype(float) for _, _, c in aligned)
        fits = []
        for i, (frame, p, (v, w, c)) in enumerate(zip(stack, params, aligned)):
            n_other = count - c
            cover = n_other > 0
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(cover, (total - np.where(c, v, 0.0)) / n_other, 0.0)
                var = np.where(cover, (total_var - np.where(c, w, 0.0)) / n_other ** 2, 0.0)
            template = Template(mean, var, cover)
            if shift_only:
                fits.append(fit_shift(frame, template, p[:2], template_noise_in_weights=False))
            else:
                fits.append(fit_transform(frame, template, Similarity(*p, center=_center(frame)),
                                          kind, inputs=_inputs(wcs_maps, i)))
            if bar is not None:
                bar.update(1)
        if round_ == 0:  # refuse a different sky before any further round
            for i, fit in enumerate(fits):
                check_common_signal(fit, f"frames[{i}]")
        new = [f.params for f in fits]
        if _converged(params, new, fits, k):
            break
        params = new
    return fits


def _converged(old, new, fits, k):
    """Whether no frame's parameters changed by more than `CONVERGED` sigmas in a round.

    A shift common to all frames (the reference's included) is no change of
    the registration, which is relative: left alone, it drifts for many
    rounds while the frames' relative shifts stand still. It is taken out.
    """
    change = np.array(new)[:, :k] - np.array(old)[:, :k]
    change[:, :2] -= change[:, :2].mean(axis=0)
    change = np.abs(change).max(axis=0)
    typical = np.median([np.sqrt(np.diag(f.cov)) for f in fits], axis=0)
    return bool(np.all(change < CONVERGED * typical) or np.all(change < TOL))


def _map(wcs_maps, i):
    return None if wcs_maps is None else wcs_maps[i]


def _model_fits(frames, stack, fits, kind, wcs_maps, psf, max_iter):
    """Alternate a fine-grid Richardson-Lucy model and the fit of every frame against it."""
    params = [f.params for f in fits]
    for _ in range(max(int(max_iter), 1)):
        transforms = [_transform(p, f, _map(wcs_maps, i))
                      for i, (f, p) in enumerate(zip(stack, params))]
        template = ModelTemplate(fine_model(frames, transforms, psf), psf, MODEL_SCALE)
        fits = [fit_transform(f, template, Similarity(*p, center=_center(f)), kind,
                              inputs=_inputs(wcs_maps, i))
                for i, (f, p) in enumerate(zip(stack, params))]
        new = [f.params for f in fits]
        if _converged(params, new, fits, FREE[kind]):
            break
        params = new
    return fits


#: Parameters (dx, dy, rotation, scale) of the identity.
_IDENTITY = np.array([0.0, 0.0, 0.0, 1.0])
#: The templates are rebuilt until no parameter changes by more than this fraction of its
#: error. Each round shrinks the distance to the fixed point about 15-fold (the others' mean
#: error), but the pixel sets at the overlap's edges change with the shifts, so the rounds
#: then wander by 0.05-0.2 of the errors: a change below 0.3 leaves about 0.02 to gain.
CONVERGED = 0.3
#: Frames whose PSF is narrower (FWHM, input pixels) are sampled below Nyquist.
NYQUIST_FWHM = 2.0
#: Most alternations of model and fit on undersampled frames.
_MODEL_ROUNDS = 4


def choose_method(frames, reference, psf, method):
    """``(method, reason, psf)``: the fine-grid model where the frames are undersampled."""
    if method == "correlation":
        return "correlation", "requested", psf
    measured = psf is None
    if measured:
        try:
            psf = _reference_psf(frames.ccds[reference], PSF_CROP)
        except ValueError:
            if method == "model":
                raise ValueError("method='model' needs the PSF: none could be measured on the "
                                 "stars of the reference frame; pass psf=") from None
            return "correlation", "no PSF measured on the reference frame (no point sources): " \
                                  "frames taken as well sampled", None
        source = "measured on the reference frame"
    else:
        source = "given"
    fwhm = psf_fwhm(psf)
    if measured and (method == "model" or fwhm < NYQUIST_FWHM) and \
            max(frames.data.shape[1:]) > PSF_CROP:
        # The model is fitted with this PSF: measured on all the reference's stars.
        psf = _reference_psf(frames.ccds[reference], None)
        fwhm = psf_fwhm(psf)
    if method == "model":
        return "model", f"requested; PSF ({source}) FWHM {fwhm:.2f} px", psf
    if fwhm < NYQUIST_FWHM:
        return ("model", f"undersampled: PSF ({source}) FWHM {fwhm:.2f} px < {NYQUIST_FWHM:g} px",
                psf)
    return ("correlation",
            f"well sampled: PSF ({source}) FWHM {fwhm:.2f} px >= {NYQUIST_FWHM:g} px", psf)


#: The PSF that chooses the method is measured on a central crop of this size (pixels) first.
PSF_CROP = 256


def _reference_psf(ccd, crop):
    """`estimate_psf` on the reference's central ``crop`` pixels (a measure that costs the
    same on any frame), on the whole frame where the crop shows too few stars (or with
    ``crop=None``)."""
    ny, nx = ccd.shape
    if crop is not None and max(ny, nx) > crop:
        y0, x0 = max((ny - crop) // 2, 0), max((nx - crop) // 2, 0)
        try:
            return estimate_psf(ccd[y0:y0 + crop, x0:x0 + crop])
        except ValueError:
            pass
    return estimate_psf(ccd)


def psf_fwhm(psf, oversampling=8):
    """Full width at half maximum of any PSF (input pixels), from the area above half its peak."""
    kernel = as_psf(psf, oversampling=oversampling).kernel(oversampling)
    area = np.count_nonzero(kernel >= 0.5 * kernel.max()) / oversampling ** 2
    return float(2.0 * np.sqrt(area / np.pi))


class WCSStart:
    """A frame's WCS map onto the reference, and its pixels' reference positions (the inputs)."""

    def __init__(self, transform, shape):
        self.transform = transform
        yy, xx = np.indices(shape, dtype=float)
        self.inputs = transform.frame_to_reference(xx, yy)


def wcs_starts(frames, reference):
    """The frames' WCS as the start of ``use_wcs=True`` (ValueError where a frame has none)."""
    shape = frames.data.shape[1:]
    transforms = frame_transforms("wcs", shape, frames.wcs, reference=reference)
    return [WCSStart(t, shape) for t in transforms]


def _relative(params, ref):
    """Parameters of frame i relative to the reference: ``G_i o G_ref^-1`` (same centre)."""
    rot, scl = params[2] - ref[2], params[3] / ref[3]
    m = Similarity(0.0, 0.0, rot, scl).matrix
    d = params[:2] - m @ ref[:2]
    return np.array([d[0], d[1], rot, scl])


def _table(frames, fits, reference, kind, estimated_noise, description, wcs_maps):
    """The DESIGN.md geometry table, relative to the reference frame."""
    k = FREE[kind]
    ref = fits[reference]
    params = np.array([_relative(f.params, ref.params) for f in fits])
    if estimated_noise is None:
        errs = np.zeros((len(fits), k))
    else:
        errs = np.array([scaled_errors(f, e) for f, e in zip(fits, estimated_noise)])
        errs = np.sqrt(errs ** 2 + errs[reference] ** 2)
        errs[reference] = 0.0
        params[reference] = _IDENTITY
    table = QTable({"frame": np.arange(len(fits)),
                    "dx": params[:, 0] * u.pix, "dy": params[:, 1] * u.pix,
                    "dx_err": errs[:, 0] * u.pix, "dy_err": errs[:, 1] * u.pix})
    if k > 2:
        table["rotation"], table["rotation_err"] = params[:, 2] * u.deg, errs[:, 2] * u.deg
    if k > 3:
        table["scale"] = params[:, 3] * u.one
        table["scale_err"] = errs[:, 3] * u.one
    table["flux_ratio"] = np.array([f.flux_ratio / ref.flux_ratio for f in fits])
    table["chi2"] = np.array([0.0 if i == reference else f.chi2 for i, f in enumerate(fits)])
    table.meta["registration"] = description
    table.meta["transform"] = kind
    used = [f.pixels for i, f in enumerate(fits) if i != reference and f.pixels]
    if used:  # the median fraction of a frame's pixels that its fit used
        table.meta["registration_pixels"] = float(np.median(used) / frames.data[0].size)
    if wcs_maps is not None:
        _add_corrected_wcs(table, frames, params, reference)
    return table


def _add_corrected_wcs(table, frames, params, reference):
    """Column ``wcs``: each frame's WCS with its correction; ``meta`` the worst misfit (px)."""
    shape = frames.data.shape[1:]
    center = frame_centre(shape)
    corrected, worst = [], 0.0
    for w, p in zip(frames.wcs, params):
        new, residual = corrected_wcs(w, frames.wcs[reference], Similarity(*p, center=center),
                                      shape)
        corrected.append(new)
        worst = max(worst, residual)
    table["wcs"] = corrected
    table.meta["wcs_residual_px"] = worst
