"""The intensity transform between fluxes and the network's scale.

Astronomical images span five or more decades, from sky noise to the cores
of bright stars, so the networks see ``asinh(x / softening)``: linear within
a few ``softening`` of zero (the noise keeps its Gaussian shape, negative
values stay negative) and logarithmic above (bright cores are compressed, not
clipped). The transform is exactly invertible and float32 in and out.

The softening is the image's own sky-noise sigma (`noise_sigma`), estimated
robustly from the image itself at training and at inference alike, so the
same flux in the same noise gives the same network input whatever the units
of the data.
"""

import numpy as np

__all__ = ["forward", "inverse", "noise_sigma", "stack_softening"]

#: 1 / Phi^-1(3/4): MAD to Gaussian sigma.
_MAD_TO_SIGMA = 1.482602218505602


def forward(x, softening):
    """Fluxes to the network scale, ``asinh(x / softening)``.

    Parameters
    ----------
    x : array_like
        Fluxes (any sign, any magnitude; sky-subtracted).
    softening : float or array_like
        Positive flux at which the transform turns from linear to
        logarithmic; broadcast against ``x``.

    Returns
    -------
    numpy.ndarray
        float32 array of the shape of ``x``.
    """
    s = _check_softening(softening)
    # float64 inside: x / s may be far beyond float32's linear precision.
    return np.arcsinh(np.asarray(x, dtype=np.float64) / s).astype(np.float32)


def inverse(y, softening):
    """Network scale to fluxes, ``softening * sinh(y)`` (inverse of `forward`).

    Parameters
    ----------
    y : array_like
        Values on the asinh scale.
    softening : float or array_like
        The softening `forward` used.

    Returns
    -------
    numpy.ndarray
        float32 fluxes.
    """
    s = _check_softening(softening)
    return (np.sinh(np.asarray(y, dtype=np.float64)) * s).astype(np.float32)


def noise_sigma(image):
    """Robust sky-noise sigma of an image: the softening of the transform.

    The MAD of the differences between horizontal neighbours, divided by
    sqrt(2): differences cancel smooth structure (nebulae, galaxies, the
    PSF-blurred parts of sources) that would inflate a plain MAD, and the
    median ignores stars. Non-finite pixels are ignored.

    Parameters
    ----------
    image : array_like
        2-D image (or a stack ``(..., ny, nx)``, one sigma for all).

    Returns
    -------
    float
        Positive sigma. For a noise-free image (sigma 0) a floor of 1e-6 of
        the largest absolute value (1 for an all-zero image) keeps the
        transform defined.
    """
    a = np.asarray(image, dtype=np.float64)
    if a.ndim < 2:
        raise ValueError(f"image must be at least 2-D, got {a.ndim}-D")
    d = np.diff(a, axis=-1)
    d = d[np.isfinite(d)]
    sigma = _MAD_TO_SIGMA * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0) if d.size else 0.0
    if sigma > 0:
        return float(sigma)
    finite = np.abs(a[np.isfinite(a)])
    peak = finite.max() if finite.size else 0.0
    return float(1e-6 * peak) if peak > 0 else 1.0


def stack_softening(frames, scale):
    """Softening for an image fused from a stack: its expected noise per fine pixel.

    A fused (above all a deconvolved) image's own pixel noise depends on the
    fusion, so the scale is set by the frames instead: a frame pixel's noise
    ``sigma`` (`noise_sigma` of each frame, median over frames) spread over
    ``scale**2`` fine pixels and averaged over the ``n`` frames that cover
    each of them, ``sigma / (scale**2 * sqrt(n))``, the noise of a drizzled
    image. The refinement network sees its input on this scale at training
    and at inference alike.

    Parameters
    ----------
    frames : sequence of 2-D arrays
        The sky-subtracted frames of the stack.
    scale : float
        Fine pixels per frame pixel.

    Returns
    -------
    float
    """
    sigma = float(np.median([noise_sigma(f) for f in frames]))
    return sigma / (scale ** 2 * np.sqrt(len(frames)))


def _check_softening(softening):
    s = np.asarray(softening, dtype=np.float64)
    if not np.all(np.isfinite(s) & (s > 0)):
        raise ValueError(f"softening must be positive and finite, got {softening!r}")
    return s
