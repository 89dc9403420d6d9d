"""Drizzle kernels on plain arrays (the core under `astrosr.fuse`).

Two kernels compute the same square-kernel drizzle (Fruchter & Hook 2002):
each input pixel, shrunk by ``pixfrac``, drops its value onto the output
pixels in proportion to the overlap area, with a weight per pixel; the
output is the weighted mean, its variance ``sum (w a)^2 var / (sum w a)^2``
and its weight ``sum w a / drop area`` (the drizzle package's ``out_wht``).

`drizzle_shifts`
    Translations: the overlap is the product of an x and a y overlap, so one
    frame is two sparse matrix products ``Oy @ (w * data) @ Ox.T``. Written
    here because the ``drizzle`` package has no separable path; it is 2-5x
    faster than the package on shifts and exact in float64.
`drizzle_pixmaps`
    Any geometry (rotation, scale, distortion): the ``drizzle`` package's C
    kernel (a runtime dependency), given each frame's pixel map. Its exact
    polygon overlap in C is the reference implementation of drizzle, kept up
    by STScI for HST and JWST; a numpy rewrite would be slower and would
    have to be maintained beside it.

Both return per-pixel *mean values* of the input; the caller converts them
to flux per output pixel.
"""

import numpy as np
from scipy import sparse

__all__ = ["drizzle_shifts", "drizzle_pixmaps", "overlap_matrix"]


def overlap_matrix(n_in, n_out, scale, shift, pixfrac):
    """Sparse ``(n_out, n_in)`` overlap lengths (output pixels) of shrunk input pixels along one axis.

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


def drizzle_shifts(data, weight, var, shifts, out_shape, scale, pixfrac):
    """Drizzle translated frames: ``(mean, variance, weight)`` on the output grid.

    Parameters
    ----------
    data, weight : ndarray ``(n, ny, nx)``
        Frames and their weights (0 at bad pixels).
    var : ndarray ``(n, ny, nx)`` or None
        Variances (ignored where the weight is 0); None: no variance.
    shifts : ndarray ``(n, 2)``
        ``(dx, dy)`` of each frame (DESIGN.md sign).
    out_shape : tuple of int
    scale, pixfrac : float

    Returns
    -------
    mean, variance, weight : ndarray
        The weighted mean (0 where nothing landed), its variance (``inf``
        there) and the drizzle weight map.
    """
    num, den, vnum = np.zeros(out_shape), np.zeros(out_shape), np.zeros(out_shape)
    ny, nx = data.shape[1:]
    for i, (dx, dy) in enumerate(shifts):
        oy = overlap_matrix(ny, out_shape[0], scale, dy, pixfrac)
        ox = overlap_matrix(nx, out_shape[1], scale, dx, pixfrac)
        w = weight[i]
        num += (ox @ (oy @ (w * data[i])).T).T
        den += (ox @ (oy @ w).T).T
        if var is not None:
            vw = w * w * np.where(w > 0, var[i], 0.0)
            vnum += (ox.multiply(ox) @ (oy.multiply(oy) @ vw).T).T
    return _mean(num, den, vnum) + (den / (pixfrac * scale) ** 2,)


def _mean(num, den, vnum):
    covered = den > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(covered, num / den, 0.0),
                np.where(covered, vnum / den ** 2, np.inf))


def drizzle_pixmaps(data, weight, var, pixmaps, out_shape, pixfrac):
    """Drizzle frames with any geometry through the ``drizzle`` package's C kernel.

    Parameters
    ----------
    data, weight, var : ndarray ``(n, ny, nx)``
        As in `drizzle_shifts` (``var`` may be None).
    pixmaps : sequence of ndarray ``(ny, nx, 2)``
        Output ``(x, y)`` coordinates of each frame's pixel centres
        (`astrosr.geometry.pixel_map`).
    out_shape : tuple of int
    pixfrac : float

    Returns
    -------
    mean, variance, weight : ndarray
        As `drizzle_shifts` (the package works in single precision).
    """
    from drizzle.resample import Drizzle

    if min(np.shape(data)[1:]) < 2:
        raise ValueError(f"frames of shape {np.shape(data)[1:]} cannot be drizzled with this "
                         "geometry: the drizzle package's kernel needs at least 2 pixels along "
                         "each axis (pure shifts onto the reference's grid take any shape)")
    # The package leaves out input pixels whose centre falls beyond the output
    # grid, so the output's edge pixels would miss the parts of their drops:
    # drizzle onto a grid padded by a drop's reach, then crop.
    pad = _reach(pixmaps)
    padded = (out_shape[0] + 2 * pad, out_shape[1] + 2 * pad)
    img2 = [np.zeros(padded, np.float32)] if var is not None else None
    driz = Drizzle(kernel="square", out_shape=padded, fillval=0.0, fillval2=0.0,
                   out_img2=img2, disable_ctx=True)
    for i, pixmap in enumerate(pixmaps):
        w = np.asarray(weight[i], np.float32)
        data2 = None if var is None else [np.where(w > 0, var[i], 0.0).astype(np.float32)]
        driz.add_image(np.asarray(data[i], np.float32), exptime=1.0,
                       pixmap=np.asarray(pixmap, float) + pad, data2=data2, weight_map=w,
                       pixfrac=float(pixfrac), in_units="cps")
    crop = (slice(pad, pad + out_shape[0]), slice(pad, pad + out_shape[1]))
    wht = np.asarray(driz.out_wht, float)[crop]
    covered = wht > 0
    mean = np.where(covered, driz.out_img[crop], 0.0)
    if var is None:
        return mean, np.where(covered, 0.0, np.inf), wht
    out2 = driz.out_img2[0] if isinstance(driz.out_img2, list) else driz.out_img2
    return mean, np.where(covered, np.asarray(out2, float)[crop], np.inf), wht


def _reach(pixmaps):
    """Output pixels a drop reaches beyond its centre: the largest pixel spacing, plus 2."""
    step = max(float(np.nanmax(np.hypot(*np.moveaxis(np.diff(p, axis=a), -1, 0))))
               for p in pixmaps for a in (0, 1) if p.shape[a] > 1)
    return int(np.ceil(step)) + 2
