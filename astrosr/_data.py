"""Built-in data: images that ship with installed packages (no download)."""

import numpy as np

__all__ = ["hubble_deep_field"]


def hubble_deep_field(size=512):
    """Luminance of scikit-image's Hubble Deep Field crop as a non-negative truth.

    The 8-bit RGB image is averaged to luminance, its dark floor (the 1st
    percentile) removed, and a ``size`` x ``size`` centre crop scaled to a
    peak of 3000 electrons per fine pixel: a sky with galaxies and stars.
    """
    from skimage.data import hubble_deep_field as hdf

    rgb = hdf().astype(float)
    lum = rgb.mean(axis=2)
    ny, nx = lum.shape
    if size > min(ny, nx):
        raise ValueError(f"size must be at most {min(ny, nx)}, got {size}")
    y0, x0 = (ny - size) // 2, (nx - size) // 2
    crop = lum[y0:y0 + size, x0:x0 + size]
    crop = np.clip(crop - np.percentile(crop, 1), 0.0, None)
    return crop * (3000.0 / crop.max())
