"""Cubic B-spline surfaces: translated by separable filters, sampled anywhere, with gradients.

A translation only needs the B-spline sampled at one fractional offset per
axis, so it is a 2-4 tap separable filter: cheaper than ndimage.shift, and it
allows a different spline order per axis, which the exact gradient of a
cubic spline needs (quadratic along the derivative, cubic across it).
"""

import numpy as np

__all__ = ["spline_shift", "shifted_mask"]


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
