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

__all__ = ["Fit", "FREE", "fit_shift", "fit_transform", "check_common_signal", "scaled_errors",
           "TOL"]

#: Gauss-Newton stops when the shift changes by less than this (pixels).
TOL = 1e-4
#: Residuals beyond this many robust standard deviations are outliers.
_CLIP = 8.0


@dataclass
class Fit:
    """A frame's fitted geometry: ``params`` (dx, dy [px], rotation [deg], scale), the
    covariance ``cov`` of the free ones (in those units), flux ratio and fit measures."""

    params: np.ndarray
    cov: np.ndarray
    flux_ratio: float
    chi2: float
    explained: float
    signal: float

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


def _fit(frame, problem, template_noise_in_weights, max_iter):
    """Fit, then drop pixels beyond ``_CLIP`` robust sigmas (cosmic rays, hot pixels that no
    mask flags) and fit again, at most three times; a `Fit`."""
    cover, tvar_map = problem.coverage()
    use = frame.good & cover
    a, b = 1.0, 0.0
    for _ in range(3):
        if use.sum() < 16:
            raise ValueError("frames do not overlap: fewer than 16 common pixels at the "
                             "estimated shift")
        a, b, normal = _gauss_newton(frame, problem, use, tvar_map, a, b,
                                     template_noise_in_weights, max_iter)
        resid = frame.data[use] - a * problem.model(use)[0] - b
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
    null = np.sum((y - np.average(y, weights=1.0 / var_f)) ** 2 / var_f)
    k = problem.free
    dof = max(use.sum() - k - 2, 1)
    cov = np.linalg.inv(normal)[:k, :k]
    if k > 2:  # rotation: radians -> degrees
        cov[2, :] *= np.rad2deg(1.0)
        cov[:, 2] *= np.rad2deg(1.0)
    return Fit(params=problem.params(), cov=cov, flux_ratio=a, chi2=chi2 / dof,
               explained=(null - chi2) / max(null - dof, 1e-30),
               signal=(null - dof) / np.sqrt(2.0 * dof))


def _gauss_newton(frame, problem, use, tvar_map, a, b, template_noise_in_weights, max_iter):
    y, var_f, tvar = frame.data[use], frame.var[use], tvar_map[use]
    k = problem.free
    for _ in range(max_iter):
        val, grad = problem.model(use)
        w = 1.0 / (var_f + (a * a * tvar if template_noise_in_weights else 0.0))
        jac = np.column_stack([a * grad, val, np.ones_like(val)])
        resid = y - (a * val + b)
        jw = jac * w[:, None]
        normal = jac.T @ jw
        score = jw.T @ resid
        # Errors in variables: the template's own noise inflates sum(w T^2) and
        # would dilute the flux ratio a (and, through it, the fit) towards 0.
        noise_power = np.sum(w * tvar)
        normal[k, k] -= noise_power
        score[k] += a * noise_power
        step = np.linalg.solve(normal, score)
        a += step[k]
        b += step[k + 1]
        if problem.update(step[:k]):
            break
    return a, b, normal


class _Translation:
    """A pure shift, sampled by separable spline filters over the whole frame (the fast path)."""

    free = 2

    def __init__(self, template, d0):
        self.template, self.d = template, np.array(d0, dtype=float)

    def coverage(self):
        return self.template.coverage(self.d)

    def model(self, use):
        val, gx, gy = (arr[use] for arr in self.template.sampled(self.d))
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


def check_common_signal(fit, name):
    if fit.signal < 5.0:
        raise ValueError(f"{name} shows no signal above the noise: nothing to register")
    if fit.explained < 0.5 or fit.flux_ratio <= 0:
        raise ValueError(
            f"{name} and the reference do not overlap or show different skies: the best "
            f"alignment explains only {100 * max(fit.explained, 0):.0f}% of the signal")


def scaled_errors(fit, estimated_noise):
    """Standard errors of the free parameters (inflated by the reduced chi-square where the
    noise is uncertain)."""
    factor = fit.chi2 if estimated_noise else max(fit.chi2, 1.0)
    return np.sqrt(np.diag(fit.cov) * factor)
