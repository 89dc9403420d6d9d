"""Maximum-likelihood fit of a frame against a template, with errors from its Fisher information.

The frame is modelled as ``a * T(x - dx, y - dy) + b`` where ``T`` is a
cubic-spline surface through a Wiener-filtered template, and
``(dx, dy, a, b)`` are fitted by Gauss-Newton weighted least squares on the
overlap, pixels weighted by the inverse variance of the frame. Only pixels
whose template value is interpolated from inside the template's support are
used (no wrap-around, no ringing at the edges).
"""

from dataclasses import dataclass

import numpy as np
from astropy.stats import mad_std

from ..geometry import Similarity

__all__ = ["Fit", "FREE", "fit_shift", "fit_transform", "fit_pixels", "check_common_signal",
           "check_frame_signal", "scaled_errors", "TOL"]

#: Gauss-Newton stops when the shift changes by less than this (pixels).
TOL = 1e-4
#: Residuals beyond this many robust standard deviations are outliers.
_CLIP = 8.0
#: A frame's structure above its noise, in sigmas of chance, needed to register it.
MIN_SIGNAL = 5.0
#: The fit uses the pixels that hold this fraction of the geometric Fisher information ...
INFORMATION = 0.995
#: ... and one in this many of the others (they fix the background and the flux ratio).
_SKY_SAMPLING = 16


@dataclass
class Fit:
    """A frame's fitted geometry: ``params`` (dx, dy [px], rotation [deg], scale), the
    covariance ``cov`` of the free ones (in those units), flux ratio and fit measures;
    ``pixels`` the number of the frame's pixels that the fit used."""

    params: np.ndarray
    cov: np.ndarray
    flux_ratio: float
    chi2: float
    explained: float
    signal: float
    pixels: int = 0
    #: Whether ``cov`` comes from the residuals (the sandwich of `fit_pixels`) rather than
    #: from the stated noise: then not to be scaled by the reduced chi-square again.
    from_residuals: bool = False

    @property
    def d(self):
        """The shift ``(dx, dy)``."""
        return self.params[:2]


#: Free geometric parameters of each kind of transform (dx, dy, rotation, scale in that order).
FREE = {"shift": 2, "rigid": 3, "similarity": 4}


def fit_shift(frame, template, d0, *, template_noise_in_weights, max_iter=20):
    """Gauss-Newton fit of ``frame = a * T(x - d) + b`` by separable spline shifts; a `Fit`."""
    return _fit(frame, _Translation(template, d0), template_noise_in_weights, max_iter)


def fit_transform(frame, template, start, kind, *, inputs=None, template_noise_in_weights=False,
                  max_iter=30):
    """Gauss-Newton fit of ``frame(u) = a * T(P(u)) + b`` for a shift, rigid or similarity ``P``.

    ``P`` is `astrosr.geometry.Similarity.frame_to_reference`, its parameters
    the free ones of ``kind`` (`FREE`), starting from the `Similarity`
    ``start``; ``u`` are the frame pixels' coordinates (``inputs``: default
    the pixel grid; with a WCS start, their reference positions through the
    WCS, so that the fit is the correction on top of it). ``template`` gives
    its values and gradients anywhere (``at``, ``coverage_at``).
    """
    return _fit(frame, _Warp(template, start, kind, inputs, frame.data.shape),
                template_noise_in_weights, max_iter)


def fit_pixels(pixels, problem, *, template_noise_in_weights, residual_errors=False,
               max_iter=20):
    """Gauss-Newton fit of ``pixels = a * model + b`` on all the pixels given; a `Fit`.

    Parameters
    ----------
    pixels : object
        ``data``, ``var`` and ``good``: arrays of the same shape (any), the
        pixels' values, variances and which of them may be used.
    problem : object
        The model, with ``free`` (the number of geometric parameters) and the
        methods ``coverage()`` (which pixels the template covers, and its
        variance there), ``model(use)`` (the template's values at the pixels
        ``use`` and their derivatives with respect to the geometric
        parameters, one column each), ``update(step)`` (move the parameters;
        True when converged) and ``params()`` (dx, dy, rotation, scale).
    template_noise_in_weights : bool
        Whether the template's variance adds to the pixels' in the weights.
    residual_errors : bool
        Take the covariance from the residuals (the sandwich
        ``N^-1 (sum (w r)^2 J J^T) N^-1``, ``N`` the normal matrix) rather than
        from the pixels' variances: for noise that was only estimated (one
        level for the whole frame, where a star's pixels have more), which
        the reduced chi-square alone corrects on average only.
    max_iter : int
        Most Gauss-Newton iterations per round of outlier rejection.

    Returns
    -------
    Fit
        As `fit_shift`, the pixels (less outliers) all used: unlike
        `fit_shift`, no further selection of the informative ones.
    """
    return _fit(pixels, problem, template_noise_in_weights, max_iter, select=False,
                residual_errors=residual_errors)


def _fit(frame, problem, template_noise_in_weights, max_iter, select=True,
         residual_errors=False):
    """Fit, then drop pixels beyond ``_CLIP`` robust sigmas (cosmic rays, hot pixels that no
    mask flags) and fit again, at most three times; a `Fit`."""
    cover, tvar_map = problem.coverage()
    overlap = frame.good & cover
    if overlap.sum() < 16:
        raise ValueError(_NO_OVERLAP)
    signal = _signal(frame.data[overlap], frame.var[overlap], problem.free)
    if signal < MIN_SIGNAL:  # nothing to fit: `check_common_signal` refuses it at once
        k = problem.free
        return Fit(problem.params(), np.full((k, k), np.inf), 0.0, np.nan, 0.0, signal)
    use = _informative(frame, problem, overlap) if select else overlap.copy()
    a, b = 1.0, 0.0
    for _ in range(3):
        if use.sum() < 16:
            raise ValueError(_NO_OVERLAP)
        a, b, normal = _gauss_newton(frame, problem, use, tvar_map, a, b,
                                     template_noise_in_weights, max_iter)
        resid = frame.data[use] - a * _values(problem, use) - b
        norm = resid / np.sqrt(frame.var[use] + a * a * tvar_map[use])
        # The robust scatter of 50 000 residuals is as good as that of all of them, and cheaper.
        outliers = np.abs(norm) > _CLIP * mad_std(norm[::max(1, norm.size // 50_000)])
        if not outliers.any():
            break
        use.flat[np.flatnonzero(use)[outliers]] = False
        resid = resid[~outliers]
    y, var_f, tvar = frame.data[use], frame.var[use], tvar_map[use]
    chi2 = np.sum(resid ** 2 / (var_f + a * a * tvar))
    # Structure in the frame above its own noise, and how much of it the template explains.
    null = _null_chi2(y, var_f)
    k = problem.free
    dof = max(use.sum() - k - 2, 1)
    inverse = np.linalg.inv(normal)
    if residual_errors:
        w = 1.0 / (var_f + (a * a * tvar if template_noise_in_weights else 0.0))
        val, grad = problem.model(use)
        cols = [a * grad[:, i] for i in range(k)] + [val, np.ones_like(val)]
        wr2 = (w * resid) ** 2
        meat = np.array([[np.einsum("i,i->", wr2 * ci, cj) for cj in cols] for ci in cols])
        inverse = inverse @ meat @ inverse
    cov = inverse[:k, :k]
    if k > 2:  # rotation: radians -> degrees
        cov[2, :] *= np.rad2deg(1.0)
        cov[:, 2] *= np.rad2deg(1.0)
    return Fit(params=problem.params(), cov=cov, flux_ratio=a, chi2=chi2 / dof,
               explained=(null - chi2) / max(null - dof, 1e-30),
               signal=(null - dof) / np.sqrt(2.0 * dof), pixels=int(use.sum()),
               from_residuals=residual_errors)


def _values(problem, use):
    """The template's values at the pixels ``use`` (without the derivatives where the
    problem can give them alone)."""
    return problem.values(use) if hasattr(problem, "values") else problem.model(use)[0]


def _null_chi2(y, var):
    """Chi-square of the frame's pixels about their mean: its structure above the noise."""
    return np.sum((y - np.average(y, weights=1.0 / var)) ** 2 / var)


def _signal(y, var, k):
    """The structure above the noise in sigmas of the chi-square's chance scatter."""
    dof = max(y.size - k - 2, 1)
    return (_null_chi2(y, var) - dof) / np.sqrt(2.0 * dof)


def _informative(frame, problem, use):
    """The pixels that hold `INFORMATION` of the Fisher information on the geometry (the
    template's gradients over the frame's variance), and a sparse sample of the others.

    On a field of stars most pixels are empty sky, which tells nothing about
    the shift but costs as much to fit: leaving it out costs half a percent
    of the precision (the errors, from the Fisher matrix of the pixels used,
    say so) and most of the time. Where the information is spread over most
    pixels (a nebula), every pixel is used.
    """
    if use.sum() < 4096:
        return use
    _, grad = problem.model(use)
    info = np.sum(grad ** 2, axis=1) / frame.var[use]
    order = np.argsort(info)[::-1]
    cumulative = np.cumsum(info[order])
    n_keep = int(np.searchsorted(cumulative, INFORMATION * cumulative[-1])) + 1
    if n_keep > 0.5 * order.size:
        return use
    keep = np.zeros(order.size, dtype=bool)
    keep[order[:n_keep]] = True
    keep[order[n_keep::_SKY_SAMPLING]] = True
    out = np.zeros_like(use)
    out.flat[np.flatnonzero(use)[keep]] = True
    return out


def _gauss_newton(frame, problem, use, tvar_map, a, b, template_noise_in_weights, max_iter):
    y, var_f, tvar = frame.data[use], frame.var[use], tvar_map[use]
    k = problem.free
    previous = None
    w = None if template_noise_in_weights else 1.0 / var_f
    wy = None if w is None else w * y
    noise_power = None if w is None else np.sum(w * tvar)
    for _ in range(max_iter):
        val, grad = problem.model(use)
        if template_noise_in_weights:
            w = 1.0 / (var_f + a * a * tvar)
            wy, noise_power = w * y, np.sum(w * tvar)
        normal, score = _normal_equations(grad, val, wy, w, a, b)
        # Errors in variables: the template's own noise inflates sum(w T^2) and
        # would dilute the flux ratio a (and, through it, the fit) towards 0.
        normal[k, k] -= noise_power
        score[k] += a * noise_power
        step = np.linalg.solve(normal, score)
        a += step[k]
        b += step[k + 1]
        geometric, previous = _accelerated(step[:k], previous)
        if problem.update(geometric):
            break
    return a, b, normal


def _normal_equations(grad, val, wy, w, a, b):
    """Normal matrix and score of the weighted least squares of ``y = a * val + b`` in
    (geometry, flux ratio, background): the Jacobian's columns are ``a`` times ``grad``'s,
    ``val`` and ones; ``wy`` is ``w * y``.

    Built from sums over the pixels, column by column (single-threaded sums: a
    multi-threaded BLAS product of thin matrices stalls on a loaded machine), without
    the Jacobian or the residuals as arrays: the score is ``J^T w y`` less the normal
    matrix times the model's (flux ratio, background).
    """
    k = grad.shape[1]
    cols = [grad[:, i] for i in range(k)] + [val]
    weighted = [w * c for c in cols]
    normal = np.empty((k + 2, k + 2))
    for i, wc in enumerate(weighted):
        for j in range(i + 1):
            normal[i, j] = normal[j, i] = np.einsum("i,i->", wc, cols[j])
        normal[i, k + 1] = normal[k + 1, i] = wc.sum()
    normal[k + 1, k + 1] = w.sum()
    data = np.array([np.einsum("i,i->", wy, c) for c in cols] + [wy.sum()])
    score = data - normal @ np.concatenate([np.zeros(k), [a, b]])
    scale = np.concatenate([np.full(k, a), [1.0, 1.0]])
    return normal * np.outer(scale, scale), score * scale


def _accelerated(step, previous):
    """A Gauss-Newton step, extrapolated to its limit when the steps shrink at a steady rate.

    The template's own noise adds to the curvature that its gradients show
    (its gradient noise is not in the data's residuals), so the steps fall
    short by a steady fraction ``r`` and converge linearly, by tens of
    iterations from a tenth of a pixel. Two steps in the same direction
    measure ``r``; the remaining steps sum to ``step * r / (1 - r)``
    (Aitken's extrapolation), taken at once. Returns the step to take and
    the one to compare the next with (None after an extrapolation).
    """
    if previous is not None:
        rate = float(step @ previous) / float(previous @ previous)
        if 0.0 < rate < 0.9:
            return step / (1.0 - rate), None
    return step, step



#: Above this fraction of the frame's pixels, a shifted template is sampled by separable filters.
_DENSE = 0.3


class _Translation:
    """A pure shift, sampled by separable spline filters over the whole frame (the fast path),
    or at the pixels used when they are few."""

    free = 2

    def __init__(self, template, d0):
        self.template, self.d = template, np.array(d0, dtype=float)

    def coverage(self):
        return self.template.coverage(self.d)

    def model(self, use):
        if use.sum() > _DENSE * use.size:
            val, gx, gy = (arr[use] for arr in self.template.sampled(self.d))
        else:  # a few pixels: the spline at their positions, not the whole frame shifted
            y, x = np.nonzero(use)
            val, gx, gy = self.template.at(x - self.d[0], y - self.d[1])
        return val, -np.column_stack([gx, gy])

    def update(self, step):
        self.d = self.d + step
        return np.max(np.abs(step)) < TOL

    def params(self):
        return np.array([self.d[0], self.d[1], 0.0, 1.0])


class _Warp:
    """A shift, rotation and scale about the centre, sampled at each pixel's mapped position.

    With ``v = P(u) - c``: ``dP/d(dx, dy) = -M^-1``, ``dP/d(rotation) = (v_y, -v_x)``
    (radians), ``dP/d(scale) = -v / s``.
    """

    def __init__(self, template, start, kind, inputs, shape):
        self.template, self.free, self.center = template, FREE[kind], start.center
        self.theta = np.array([start.dx, start.dy, np.deg2rad(start.rotation), start.scale])
        if inputs is None:
            yy, xx = np.indices(shape, dtype=float)
            inputs = (xx, yy)
        self.ux, self.uy = inputs
        # A step moves no pixel by more than this (px): Gauss-Newton far from the minimum.
        self.radius = float(np.max(np.hypot(self.ux - self.center[0], self.uy - self.center[1])))

    def transform(self):
        dx, dy, t, s = self.theta
        return Similarity(dx, dy, np.rad2deg(t), s, center=self.center)

    def positions(self, use=None):
        ux, uy = (self.ux, self.uy) if use is None else (self.ux[use], self.uy[use])
        return self.transform().frame_to_reference(ux, uy)

    def coverage(self):
        return self.template.coverage_at(*self.positions())

    def model(self, use):
        px, py = self.positions(use)
        val, gx, gy = self.template.at(px, py)
        vx, vy = px - self.center[0], py - self.center[1]
        inv = np.linalg.inv(self.transform().matrix)
        cols = [-(gx * inv[0, 0] + gy * inv[1, 0]), -(gx * inv[0, 1] + gy * inv[1, 1]),
                gx * vy - gy * vx, -(gx * vx + gy * vy) / self.theta[3]]
        return val, np.column_stack(cols[:self.free])

    def update(self, step):
        # The most any pixel moves: the shift, plus the rotation and scale at the frame's edge.
        move = np.hypot(step[0], step[1]) + self.radius * np.sum(np.abs(step[2:]))
        if move > 1.0:
            step = step / move
        self.theta[:self.free] += step
        return move < TOL

    def params(self):
        dx, dy, t, s = self.theta
        return np.array([dx, dy, np.rad2deg(t), s])


def check_frame_signal(data, var, good, name, free=2):
    """Refuse a frame whose good pixels show no structure above their noise.

    The structure is the chi-square of the good pixels about their weighted
    mean, in sigmas of its chance scatter; below `MIN_SIGNAL` the frame is
    refused as a fit on those pixels would refuse it (`check_common_signal`).

    Parameters
    ----------
    data, var, good : numpy.ndarray
        The frame's values, variances and usable pixels.
    name : str
        The frame's name in the message (``"frames[3]"``).
    free : int
        Geometric parameters that a fit would have (degrees of freedom).

    Raises
    ------
    ValueError
        "shows no signal above the noise", with what to try.
    """
    signal = _signal(data[good], var[good], free)
    if signal < MIN_SIGNAL:
        check_common_signal(Fit(np.zeros(4), np.zeros((free, free)), 0.0, np.nan, 0.0, signal),
                            name)


def check_common_signal(fit, name):
    """Refuse a frame with no signal, or whose best alignment explains little of it."""
    if fit.signal < MIN_SIGNAL:
        raise ValueError(f"{name} shows no signal above the noise: nothing to register. "
                         f"{_ADVICE}")
    if fit.explained < 0.5 or fit.flux_ratio <= 0:
        raise ValueError(
            f"{name} and the reference do not overlap or show different skies: the best "
            f"alignment explains only {100 * max(fit.explained, 0):.0f}% of the signal. "
            f"{_ADVICE}")


_NO_OVERLAP = "frames do not overlap: fewer than 16 common pixels at the estimated shift"
_ADVICE = ("Try: leave the frame out; give the geometry (a table of shifts, or 'wcs' when the "
           "frames have one); for raw frames, calibrate them with their calibration frames "
           "first (astrosr.calibration.calibrate(frames, bias=, dark=, flat=); on the command "
           "line, astrosr stack or pipeline --bias/--dark/--flat)")


def scaled_errors(fit, estimated_noise):
    """Standard errors of the free parameters (inflated by the reduced chi-square where the
    noise is uncertain)."""
    if fit.from_residuals:
        return np.sqrt(np.diag(fit.cov))
    factor = fit.chi2 if estimated_noise else max(fit.chi2, 1.0)
    return np.sqrt(np.diag(fit.cov) * factor)
