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
from astropy.stats import mad_std
from astropy.table import QTable
from scipy import fft, ndimage
from scipy.signal.windows import hann

from .stack import FrameStack

__all__ = ["Shift", "register", "register_stack", "phase_correlation"]

#: Pixels next to an edge or a bad pixel that the spline does not trust.
_MARGIN = 2
#: Gauss-Newton stops when the shift changes by less than this (pixels).
_TOL = 1e-4
#: Residuals beyond this many robust standard deviations are outliers.
_CLIP = 8.0
#: Mirror-padded border of Fourier-shifted images (pixels).
_PAD = 16


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


# --------------------------------------------------------------------------- frames


class _Frame:
    """One frame prepared for registration: filled data, variance and spline."""

    def __init__(self, stack, index, name):
        data, var, good = stack.data[index], stack.var[index], stack.good[index]
        if good.sum() < 16:
            raise ValueError(f"{name} has fewer than 16 usable pixels (all masked or NaN)")
        values = data[good]
        if np.ptp(values) == 0:
            raise ValueError(f"{name} is constant: there is nothing to register")
        self.estimated_noise = not stack.var_given[index]
        self.data = _fill(data, good)
        self.var = var
        self.good = good
        self.trusted = ndimage.binary_erosion(good, iterations=_MARGIN, border_value=0)
        self.coeffs = ndimage.spline_filter(self.data, order=3, mode="mirror")
        self.good_var = np.where(good, var, 0.0)

    def aligned(self, d):
        """Data, variance and coverage resampled onto the reference grid: value at x is f(x + d)."""
        sy, sx = -d[1], -d[0]
        values = _spline_shift(self.coeffs, sy, sx)
        var = _spline_shift(self.good_var, sy, sx, order=1)
        return values, var, _shifted_mask(self.trusted, sy, sx)


def _fill(data, good):
    """Replace bad pixels by a local Gaussian-weighted mean of good ones, for the spline and FFTs."""
    if good.all():
        return data
    num = ndimage.gaussian_filter(np.where(good, data, 0.0), 2.0)
    den = ndimage.gaussian_filter(good.astype(float), 2.0)
    fallback = np.median(data[good])
    with np.errstate(invalid="ignore", divide="ignore"):
        filled = np.where(den > 1e-3, num / den, fallback)
    return np.where(good, data, filled)


def _wiener_filter(image, variance):
    """Wiener-filter a template: keep the frequencies where its signal beats its noise.

    The gradient of white noise has more power than the gradient of a
    PSF-limited sky: unfiltered, a noisy template makes the least-squares
    surface rough, with minima set by the noise, and an interpolating spline
    smooths the noise more at half-pixel shifts than at whole ones, which pulls
    the fit towards half pixels. Filtering leaves a band-limited template that
    the spline shifts without either effect. The filter is real and
    symmetric, so it moves nothing. Its signal power is the periodogram
    smoothed over a few frequency bins, less the white-noise power.

    Returns the filtered image and the factor by which it scales white-noise variance.
    """
    padded, taper = _tapered_pad(image, _PAD)
    ft = fft.rfft2(padded, workers=-1)
    noise_power = np.sum(_tapered_pad(variance, _PAD, mean=0.0)[0] * taper ** 2)
    power = np.abs(ft) ** 2
    smooth = ndimage.gaussian_filter(power, 2.0, mode=("wrap", "nearest"))
    signal = np.clip(smooth - noise_power, 0.0, None)
    gain = signal / (signal + noise_power)
    gain[0, 0] = 1.0
    filtered = fft.irfft2(ft * gain, padded.shape, workers=-1)
    # Variance of the filtered noise relative to the unfiltered (Parseval, rfft half-plane).
    weights = np.full(gain.shape, 2.0)
    weights[:, 0] = 1.0
    factor = float(np.sum(weights * gain ** 2) / np.sum(weights))
    return filtered[_PAD:_PAD + image.shape[0], _PAD:_PAD + image.shape[1]], factor


def _tapered_pad(data, pad, mean=None):
    """Mirror-pad by ``pad``, taper the border to the mean: a smooth periodic image, and the taper."""
    mean = data.mean() if mean is None else mean
    out = np.pad(data - mean, pad, mode="symmetric")
    total = [_odd_fast_len(n + 2 * pad) for n in data.shape]
    out = np.pad(out, [(0, t - n - 2 * pad) for t, n in zip(total, data.shape)])
    ramps = []
    for n, t in zip(data.shape, total):
        ramp = np.zeros(t)
        ramp[pad:pad + n] = 1.0
        edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(pad) + 0.5) / pad)
        ramp[:pad] = edge
        ramp[pad + n:2 * pad + n] = edge[::-1]
        ramps.append(ramp)
    taper = np.outer(*ramps)
    return out * taper + mean, taper


def _odd_fast_len(n):
    """Smallest odd length >= n that scipy.fft transforms fast (3, 5, 7, 11 smooth)."""
    n += 1 - n % 2
    while fft.next_fast_len(n) != n:
        n += 2
    return n


class _Template:
    """Template on the reference grid: Wiener-filtered values as a cubic spline, with gradients."""

    def __init__(self, values, var, cover):
        var = np.where(cover, var, 0.0)
        self.cover = ndimage.binary_erosion(cover, iterations=_MARGIN, border_value=0)
        filtered, factor = _wiener_filter(_fill(values, cover), var)
        self.var = var * factor
        self.coeffs = ndimage.spline_filter(filtered, order=3, mode="mirror")
        # Derivative of a cubic B-spline: a quadratic B-spline on the
        # differences of the coefficients, displaced by half a pixel.
        self.dcx = self.coeffs - np.roll(self.coeffs, 1, axis=1)
        self.dcy = self.coeffs - np.roll(self.coeffs, 1, axis=0)

    def sampled(self, d):
        """Template value and gradient at ``x - d`` for every pixel x of the frame."""
        sy, sx = d[1], d[0]
        val = _spline_shift(self.coeffs, sy, sx)
        gx = _spline_shift(self.dcx, sy, sx - 0.5, order=(3, 2))
        gy = _spline_shift(self.dcy, sy - 0.5, sx, order=(2, 3))
        return val, gx, gy

    def coverage(self, d):
        """Frame pixels whose template position ``x - d`` lies inside the trusted template."""
        sy, sx = d[1], d[0]
        return _shifted_mask(self.cover, sy, sx), _spline_shift(self.var, sy, sx, order=1)


# --------------------------------------------------------------------------- B-spline translation
#
# A translation only needs the B-spline sampled at one fractional offset per
# axis, so it is a 2-4 tap separable filter: cheaper than ndimage.shift, and it
# allows a different spline order per axis, which the exact gradient of a
# cubic spline needs (quadratic along the derivative, cubic across it).


def _bspline(order, t):
    t = np.abs(t)
    if order == 3:
        return np.where(t < 1, 2 / 3 - t ** 2 + t ** 3 / 2, np.where(t < 2, (2 - t) ** 3 / 6, 0.0))
    if order == 2:
        return np.where(t < 0.5, 0.75 - t ** 2, np.where(t < 1.5, (1.5 - t) ** 2 / 2, 0.0))
    return np.clip(1.0 - t, 0.0, None)


def _shift_axis(coeffs, shift, order, axis):
    """Evaluate a B-spline with coefficients ``coeffs`` at ``x - shift`` along one axis (wraps)."""
    whole = np.floor(shift)
    frac = shift - whole
    out = np.zeros_like(coeffs)
    for m in range(-1, 3):
        weight = float(_bspline(order, m - frac))
        if weight:
            out += weight * np.roll(coeffs, int(whole) + m, axis=axis)
    return out


def _spline_shift(coeffs, sy, sx, order=3):
    """Translate a B-spline surface by ``(sy, sx)``; ``order`` may differ per axis."""
    oy, ox = (order, order) if np.isscalar(order) else order
    return _shift_axis(_shift_axis(coeffs, sy, oy, 0), sx, ox, 1)


def _shifted_mask(mask, sy, sx):
    """Pixels whose source position ``x - s`` is inside the array and fully in ``mask``."""
    inside = _spline_shift(mask.astype(float), sy, sx, order=1) > 0.999
    yy = np.arange(mask.shape[0]) - sy
    xx = np.arange(mask.shape[1]) - sx
    inside &= ((yy >= 0) & (yy <= mask.shape[0] - 1))[:, None]
    inside &= ((xx >= 0) & (xx <= mask.shape[1] - 1))[None, :]
    return inside


# --------------------------------------------------------------------------- phase correlation


def phase_correlation(reference, image, *, upsample=100, window=True, good=None):
    """Shift of ``image`` relative to ``reference`` by upsampled-DFT cross-correlation.

    Parameters
    ----------
    reference, image : numpy.ndarray
        2-D arrays of the same shape, no NaN (fill them first).
    upsample : int
        Precision of the estimate is ``1 / upsample`` pixel.
    window : bool
        Multiply by a 2-D Hann window after subtracting the median, which
        removes the edge discontinuity that biases the peak towards zero.
    good : tuple of numpy.ndarray, optional
        Boolean maps of usable pixels of ``reference`` and ``image``.

    Returns
    -------
    dx, dy : float
        A source at ``(x, y)`` in ``reference`` is at ``(x + dx, y + dy)`` in ``image``.
    """
    ref = _prepare_for_fft(reference, None if good is None else good[0], window)
    img = _prepare_for_fft(image, None if good is None else good[1], window)
    cross = fft.fft2(img, workers=-1) * np.conj(fft.fft2(ref, workers=-1))
    corr = fft.ifft2(cross, workers=-1).real
    peak = np.array(np.unravel_index(np.argmax(corr), corr.shape), dtype=float)
    n = np.array(corr.shape)
    peak = np.where(peak > n // 2, peak - n, peak)
    if upsample > 1:
        peak = _refine_peak(cross, peak, int(upsample))
    return float(peak[1]), float(peak[0])


def _prepare_for_fft(data, good, window):
    data = np.asarray(data, dtype=float)
    if good is None:
        good = np.isfinite(data)
    # Compress the dynamic range (asinh above a few times the noise): a
    # correlation of raw data is dominated by the brightest star, which then
    # matches any other bright star when it has left the field.
    level = np.median(data[good])
    noise = mad_std(data[good]) or 1.0
    out = np.where(good, np.arcsinh((data - level) / (3.0 * noise)), 0.0)
    if window:
        out = out * np.outer(hann(out.shape[0], sym=False), hann(out.shape[1], sym=False))
    return out


def _refine_peak(cross, peak, upsample):
    """Locate the correlation peak to 1/upsample pixel by a matrix DFT around it."""
    half = np.ceil(1.5 * upsample / 2.0)
    offsets = (np.arange(2 * half + 1) - half) / upsample

    def kernel(n, centre):
        return np.exp(2j * np.pi * np.outer(centre + offsets, fft.fftfreq(n)))

    ky = kernel(cross.shape[0], peak[0])
    kx = kernel(cross.shape[1], peak[1])
    up = (ky @ cross @ kx.T).real
    iy, ix = np.unravel_index(np.argmax(up), up.shape)
    return peak + offsets[[iy, ix]]


# --------------------------------------------------------------------------- least squares


@dataclass
class _Fit:
    d: np.ndarray
    cov: np.ndarray
    flux_ratio: float
    chi2: float
    explained: float
    signal: float


def _fit_shift(frame, template, d0, *, template_noise_in_weights, max_iter=20):
    """Gauss-Newton fit of ``frame = a * T(x - d) + b``; returns a `_Fit`.

    Pixels that deviate by more than ``_CLIP`` times the robust scatter of the
    normalised residuals (cosmic rays, hot pixels that no mask flags) are
    dropped and the fit repeated, at most three times.
    """
    d = np.array(d0, dtype=float)
    cover, tvar_map = template.coverage(d)
    use = frame.good & cover
    a, b = 1.0, 0.0
    for _ in range(3):
        if use.sum() < 16:
            raise ValueError("frames do not overlap: fewer than 16 common pixels at the "
                             "estimated shift")
        d, a, b, normal = _gauss_newton(frame, template, use, tvar_map, d, a, b,
                                        template_noise_in_weights, max_iter)
        resid = (frame.data - a * template.sampled(d)[0]) - b
        norm = resid / np.sqrt(frame.var + a * a * tvar_map)
        outliers = use & (np.abs(norm) > _CLIP * mad_std(norm[use]))
        if not outliers.any():
            break
        use &= ~outliers
    y, var_f, tvar = frame.data[use], frame.var[use], tvar_map[use]
    w_full = 1.0 / (var_f + a * a * tvar)
    chi2 = np.sum(w_full * resid[use] ** 2)
    # Structure in the frame above its own noise, and how much of it the template explains.
    null = np.sum((y - np.average(y, weights=1.0 / var_f)) ** 2 / var_f)
    dof = max(use.sum() - 4, 1)
    return _Fit(d=d, cov=np.linalg.inv(normal)[:2, :2], flux_ratio=a, chi2=chi2 / dof,
                explained=(null - chi2) / max(null - dof, 1e-30),
                signal=(null - dof) / np.sqrt(2.0 * dof))


def _gauss_newton(frame, template, use, tvar_map, d, a, b, template_noise_in_weights, max_iter):
    y, var_f, tvar = frame.data[use], frame.var[use], tvar_map[use]
    for _ in range(max_iter):
        val, gx, gy = (arr[use] for arr in template.sampled(d))
        w = 1.0 / (var_f + (a * a * tvar if template_noise_in_weights else 0.0))
        jac = np.column_stack([-a * gx, -a * gy, val, np.ones_like(val)])
        resid = y - (a * val + b)
        jw = jac * w[:, None]
        normal = jac.T @ jw
        score = jw.T @ resid
        # Errors in variables: the template's own noise inflates sum(w T^2) and
        # would dilute the flux ratio a (and, through it, the fit) towards 0.
        noise_power = np.sum(w * tvar)
        normal[2, 2] -= noise_power
        score[2] += a * noise_power
        step = np.linalg.solve(normal, score)
        d = d + step[:2]
        a += step[2]
        b += step[3]
        if np.max(np.abs(step[:2])) < _TOL:
            break
    return d, a, b, normal


def _check_common_signal(fit, name):
    if fit.signal < 5.0:
        raise ValueError(f"{name} shows no signal above the noise: nothing to register")
    if fit.explained < 0.5 or fit.flux_ratio <= 0:
        raise ValueError(
            f"{name} and the reference do not overlap or show different skies: the best "
            f"alignment explains only {100 * max(fit.explained, 0):.0f}% of the signal")


def _errors(fit, estimated_noise):
    """Standard errors of (dx, dy), inflated by the reduced chi-square where the noise is uncertain."""
    factor = fit.chi2 if estimated_noise else max(fit.chi2, 1.0)
    return np.sqrt(np.diag(fit.cov) * factor)


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
    return _register_pair(_Frame(pair, 1, "frame"), _Frame(pair, 0, "reference"), upsample)


def _register_pair(img, ref, upsample):
    d0 = np.array(phase_correlation(ref.data, img.data, upsample=upsample,
                                    good=(ref.good, img.good)))
    template = _Template(ref.data, ref.good_var, ref.good)
    fit = _fit_shift(img, template, d0, template_noise_in_weights=True)
    _check_common_signal(fit, "frame")
    err = _errors(fit, img.estimated_noise)
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
        s = _register_pair(_Frame(frames, other, f"frames[{other}]"),
                           _Frame(frames, reference, f"frames[{reference}]"), upsample)
        d = [np.zeros(2), np.zeros(2)]
        e = [np.zeros(2), np.zeros(2)]
        d[other], e[other] = np.array([s.dx, s.dy]), np.array([s.dx_err, s.dy_err])
        ratio = [1.0, 1.0]
        ratio[other] = s.flux_ratio
        return _table(d, e, ratio, [0.0 if i == reference else s.chi2 for i in range(2)])
    from .progress import progress_bar

    with progress_bar(total=3 * n, desc="registering", unit="frame", enabled=progress) as bar:
        stack = []
        for i in range(n):
            stack.append(_Frame(frames, i, f"frames[{i}]"))
            bar.update(1)
        ref = stack[reference]
        d = []
        for i, f in enumerate(stack):
            d.append(phase_correlation(ref.data, f.data, upsample=upsample,
                                       good=(ref.good, f.good)) if i != reference else (0.0, 0.0))
            bar.update(1)
        fits = _iterate_templates(stack, np.array(d), max_iter, bar)
    for i, fit in enumerate(fits):
        _check_common_signal(fit, f"frames[{i}]")
    errs = np.array([_errors(f, s.estimated_noise) for f, s in zip(fits, stack)])
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
            fits.append(_fit_shift(frame, _Template(mean, var, cover), di,
                                   template_noise_in_weights=False))
            if bar is not None:
                bar.update(1)
        new = np.array([f.d for f in fits])
        change = np.abs(new - d).max(axis=0)
        d = new
        typical = np.median([np.sqrt(np.diag(f.cov)) for f in fits], axis=0)
        if np.all(change < 0.01 * typical) or np.all(change < _TOL):
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
