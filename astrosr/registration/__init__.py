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

Why scipy.ndimage/scipy.fft and not ``skimage.registration``: the refinement
needs the template, its gradient and the coverage at arbitrary sub-pixel
shifts, with masks and weights, which skimage's phase correlation does not
expose; the phase-correlation step is short enough to keep alongside.
"""

from dataclasses import dataclass

import numpy as np
from astropy import units as u
from astropy.table import QTable

from ..stack import FrameStack
from .correlation import phase_correlation
from .fitting import TOL, check_common_signal, fit_shift, scaled_errors
from .templates import Frame, Template

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


def register_stack(frames, reference=0, *, upsample=100, max_iter=12, hdu=None, progress=False):
    """Sub-pixel shifts of every frame of a stack relative to one of them.

    Each frame is first located against the reference by phase correlation,
    then fitted by weighted least squares against a leave-one-out template
    (the mean of all other frames, aligned with the current shifts), and the
    templates are rebuilt until the shifts stop changing (by less than 1% of
    their errors, at most ``max_iter`` rounds). With two frames this is
    `register`.

    Parameters
    ----------
    frames : list of CCDData/NDData/str, or 3-D array
        The stack (see `astrosr.nddata.as_frames`); uncertainties weight the
        fit and make the errors calibrated.
    reference : int
        Index of the frame that defines ``dx = dy = 0``.
    upsample : int
        Upsampling of the phase-correlation first estimate.
    max_iter : int
        Most template rebuilds.
    hdu : int or str, optional
        HDU to read when ``frames`` are FITS paths.
    progress : bool
        Show a progress bar (with ETA) over the frames: their preparation,
        phase correlation and each round of template fits (the total grows
        by one round of frames whenever another round is needed).

    Returns
    -------
    `~astropy.table.QTable`
        Columns ``frame``, ``dx``, ``dy``, ``dx_err``, ``dy_err`` (pixels),
        ``flux_ratio`` and ``chi2``. A source at ``(x, y)`` in the reference
        is at ``(x + dx, y + dy)`` in frame ``i``. The errors of frame ``i``
        combine its own and the reference's measurement errors, because the
        reference's noise sets where zero is; the reference row has zeros.
    """
    frames = FrameStack.parse(frames, hdu=hdu)
    n = len(frames)
    if not -n <= reference < n:
        raise ValueError(f"reference={reference} is out of range for {n} frames")
    reference %= n
    if n == 1:
        return _table([np.zeros(2)], [np.zeros(2)], [1.0], [0.0])
    if n == 2:
        other = 1 - reference
        s = _register_pair(Frame(frames, other, f"frames[{other}]"),
                           Frame(frames, reference, f"frames[{reference}]"), upsample)
        d = [np.zeros(2), np.zeros(2)]
        e = [np.zeros(2), np.zeros(2)]
        d[other], e[other] = np.array([s.dx, s.dy]), np.array([s.dx_err, s.dy_err])
        ratio = [1.0, 1.0]
        ratio[other] = s.flux_ratio
        return _table(d, e, ratio, [0.0 if i == reference else s.chi2 for i in range(2)])
    from ..progress import progress_bar

    with progress_bar(total=3 * n, desc="registering", unit="frame", enabled=progress) as bar:
        stack = []
        for i in range(n):
            stack.append(Frame(frames, i, f"frames[{i}]"))
            bar.update(1)
        ref = stack[reference]
        d = []
        for i, f in enumerate(stack):
            d.append(phase_correlation(ref.data, f.data, upsample=upsample,
                                       good=(ref.good, f.good)) if i != reference else (0.0, 0.0))
            bar.update(1)
        fits = _iterate_templates(stack, np.array(d), max_iter, bar)
    for i, fit in enumerate(fits):
        check_common_signal(fit, f"frames[{i}]")
    errs = np.array([scaled_errors(f, s.estimated_noise) for f, s in zip(fits, stack)])
    shifts = np.array([f.d for f in fits]) - fits[reference].d
    errs = np.sqrt(errs ** 2 + errs[reference] ** 2)
    errs[reference] = 0.0
    return _table(shifts, errs, [f.flux_ratio / fits[reference].flux_ratio for f in fits],
                  [f.chi2 for f in fits])


def _iterate_templates(stack, d, max_iter, bar=None):
    """Fit every frame to its leave-one-out template until the shifts converge.

    ``bar`` (a progress bar) advances by one per frame fitted; its total
    grows by a round of frames when a round after the first begins.
    """
    fits = None
    for round_ in range(max(int(max_iter), 1)):
        if bar is not None and round_:
            bar.total += len(stack)
            bar.refresh()
        aligned = [f.aligned(di) for f, di in zip(stack, d)]
        total = sum(np.where(c, v, 0.0) for v, _, c in aligned)
        total_var = sum(np.where(c, w, 0.0) for _, w, c in aligned)
        count = sum(c.astype(float) for _, _, c in aligned)
        fits = []
        for frame, di, (v, w, c) in zip(stack, d, aligned):
            n_other = count - c
            cover = n_other > 0
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(cover, (total - np.where(c, v, 0.0)) / n_other, 0.0)
                var = np.where(cover, (total_var - np.where(c, w, 0.0)) / n_other ** 2, 0.0)
            fits.append(fit_shift(frame, Template(mean, var, cover), di,
                                   template_noise_in_weights=False))
            if bar is not None:
                bar.update(1)
        new = np.array([f.d for f in fits])
        change = np.abs(new - d).max(axis=0)
        d = new
        typical = np.median([np.sqrt(np.diag(f.cov)) for f in fits], axis=0)
        if np.all(change < 0.01 * typical) or np.all(change < TOL):
            break
    return fits


def _table(shifts, errs, ratio, chi2):
    shifts = np.asarray(shifts, dtype=float)
    errs = np.asarray(errs, dtype=float)
    return QTable({
        "frame": np.arange(len(shifts)),
        "dx": shifts[:, 0] * u.pix, "dy": shifts[:, 1] * u.pix,
        "dx_err": errs[:, 0] * u.pix, "dy_err": errs[:, 1] * u.pix,
        "flux_ratio": np.asarray(ratio, dtype=float), "chi2": np.asarray(chi2, dtype=float),
    })
