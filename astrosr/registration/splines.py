"""Cubic B-spline surfaces: translated by separable filters, sampled anywhere, with gradients.

A translation only needs the B-spline sampled at one fractional offset per
axis, so it is a 2-4 tap separable filter: cheaper than ndimage.shift, and it
allows a different spline order per axis, which the exact gradient of a
cubic spline needs (quadratic along the derivative, cubic across it).
"""

import numpy as np
from scipy import ndimage

__all__ = ["spline_shift", "shifted_mask", "spline_at", "spline_gradient_at", "mask_at",
           "bspline_taps", "GRADIENT_STEP"]


def _bspline(order, t):
    t = np.abs(t)
    if order == 3:
        return np.where(t < 1, 2 / 3 - t ** 2 + t ** 3 / 2, np.where(t < 2, (2 - t) ** 3 / 6, 0.0))
    if order == 2:
        return np.where(t < 0.5, 0.75 - t ** 2, np.where(t < 1.5, (1.5 - t) ** 2 / 2, 0.0))
    return np.clip(1.0 - t, 0.0, None)


def _bspline_derivative(t):
    """Derivative of the cubic B-spline at ``t``."""
    a = np.abs(t)
    outer = np.where(a < 2, -np.sign(t) * (2 - a) ** 2 / 2, 0.0)
    return np.where(a < 1, -2 * t + 1.5 * t * a, outer)


def bspline_taps(t):
    """Weights of a cubic B-spline and of its derivative at ``base + t``, ``0 <= t < 1``.

    Parameters
    ----------
    t : float
        Fractional part of the position, from its integer ``base``.

    Returns
    -------
    weights, derivative : numpy.ndarray
        Four weights each, of the coefficients at ``base - 1 .. base + 2``:
        the surface's value there is ``weights @ c[base - 1:base + 3]``, its
        derivative along the axis ``derivative @ c[base - 1:base + 3]``.
    """
    m = t - np.arange(-1, 3)
    return _bspline(3, m), _bspline_derivative(m)


def _shift_axis(coeffs, shift, order, axis):
    """Evaluate a B-spline with coefficients ``coeffs`` at ``x - shift`` along one axis (wraps).

    ``out[x] = sum_m w_m c[x - whole - m]``, ``m = -1..2``: along rows, a
    roll and `scipy.ndimage.correlate1d` (one pass in C, three times faster
    than four rolls there); across rows, four rolls of whole rows (faster
    than correlate1d's strided pass).
    """
    whole = int(np.floor(shift))
    weights = {m: float(_bspline(order, m - (shift - whole))) for m in range(-1, 3)}
    if axis == coeffs.ndim - 1:
        taps = [weights[m] for m in (2, 1, 0, -1)]  # correlate1d's taps run the other way
        return ndimage.correlate1d(np.roll(coeffs, whole, axis=axis), taps, axis=axis,
                                   mode="wrap")
    out = np.zeros_like(coeffs)
    for m, weight in weights.items():
        if weight:
            out += weight * np.roll(coeffs, whole + m, axis=axis)
    return out


def spline_shift(coeffs, sy, sx, order=3):
    """Translate a B-spline surface by ``(sy, sx)``; ``order`` may differ per axis."""
    oy, ox = (order, order) if np.isscalar(order) else order
    return _shift_axis(_shift_axis(coeffs, sy, oy, 0), sx, ox, 1)


def shifted_mask(mask, sy, sx):
    """Pixels whose source position ``x - s`` is inside the array and fully in ``mask``."""
    inside = spline_shift(mask.astype(float), sy, sx, order=1) > 0.999
    yy = np.arange(mask.shape[0]) - sy
    xx = np.arange(mask.shape[1]) - sx
    inside &= ((yy >= 0) & (yy <= mask.shape[0] - 1))[:, None]
    inside &= ((xx >= 0) & (xx <= mask.shape[1] - 1))[None, :]
    return inside


# --------------------------------------------------------------------------- anywhere
#
# A rotated or scaled grid needs the spline at arbitrary points:
# scipy.ndimage.map_coordinates evaluates it (prefilter=False: the
# coefficients are given). Its gradient is a forward difference over
# GRADIENT_STEP pixels: the model itself is evaluated exactly, so this only
# touches the Jacobian (and the Fisher errors) at the 1e-3 level.

#: Step of the spline's finite-difference gradient (pixels).
GRADIENT_STEP = 1e-3


def spline_at(coeffs, x, y, order=3):
    """A B-spline surface with coefficients ``coeffs`` at points ``(x, y)`` (mirrored beyond)."""
    return ndimage.map_coordinates(coeffs, [np.asarray(y, float), np.asarray(x, float)],
                                   order=order, prefilter=False, mode="mirror")


def spline_gradient_at(coeffs, x, y):
    """Value and gradient ``(v, dv/dx, dv/dy)`` of a cubic B-spline surface at ``(x, y)``."""
    h = GRADIENT_STEP
    val = spline_at(coeffs, x, y)
    return val, (spline_at(coeffs, x + h, y) - val) / h, (spline_at(coeffs, x, y + h) - val) / h


def mask_at(mask, x, y):
    """Points ``(x, y)`` inside the array whose bilinear neighbourhood is fully in ``mask``."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ny, nx = mask.shape
    inside = (x >= 0) & (x <= nx - 1) & (y >= 0) & (y <= ny - 1)
    return inside & (ndimage.map_coordinates(mask.astype(float), [y, x], order=1,
                                             mode="constant") > 0.999)
