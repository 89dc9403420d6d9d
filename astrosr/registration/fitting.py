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

__all__ = ["Fit", "fit_shift", "check_common_signal", "scaled_errors", "TOL"]

#: Gauss-Newton stops when the shift changes by less than this (pixels).
TOL = 1e-4
#: Residuals beyond this many robust standard deviations are outliers.
_CLIP = 8.0


@dataclass
class Fit:
    d: np.ndarray
    cov: np.ndarray
    flux_ratio: float
    chi2: float
    explained: float
    signal: float


def fit_shift(frame, template, d0, *, template_noise_in_weights, max_iter=20):
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
    return Fit(d=d, cov=np.linalg.inv(normal)[:2, :2], flux_ratio=a, chi2=chi2 / dof,
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
        if np.max(np.abs(step[:2])) < TOL:
            break
    return d, a, b, normal


def check_common_signal(fit, name):
    if fit.signal < 5.0:
        raise ValueError(f"{name} shows no signal above the noise: nothing to register")
    if fit.explained < 0.5 or fit.flux_ratio <= 0:
        raise ValueError(
            f"{name} and the reference do not overlap or show different skies: the best "
            f"alignment explains only {100 * max(fit.explained, 0):.0f}% of the signal")


def scaled_errors(fit, estimated_noise):
    """Standard errors of (dx, dy), inflated by the reduced chi-square where the noise is uncertain."""
    factor = fit.chi2 if estimated_noise else max(fit.chi2, 1.0)
    return np.sqrt(np.diag(fit.cov) * factor)
