"""Phase correlation: a first estimate of the shift between two frames.

The upsampled DFT of Guizar-Sicairos, Thurman & Fienup (2008, Opt. Lett. 33,
156), on Hann-windowed frames whose dynamic range is compressed (asinh), with
masked and NaN pixels filled: a robust first estimate, good to a fraction of
a pixel, for shifts up to a quarter of the frame.
"""

import numpy as np
from astropy.stats import mad_std
from scipy import fft
from scipy.signal.windows import hann

__all__ = ["phase_correlation", "prepare_for_fft", "SMOOTHING"]

#: Smoothing (pixels, a Gaussian's sigma) of both frames before they are correlated.
SMOOTHING = 1.0


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
    cross, corr = _correlation(reference, image, good, window)
    peak = np.array(np.unravel_index(np.argmax(corr), corr.shape), dtype=float)
    n = np.array(corr.shape)
    peak = np.where(peak > n // 2, peak - n, peak)
    if upsample > 1:
        peak = _refine_peak(cross, peak, int(upsample))
    return float(peak[1]), float(peak[0])


def _window(shape):
    return np.outer(hann(shape[0], sym=False), hann(shape[1], sym=False))


def _correlation(reference, image, good, window):
    """Cross-power spectrum and cross-correlation surface of two prepared frames, smoothed.

    Both frames are smoothed by a Gaussian of `SMOOTHING` pixels (a product
    in the Fourier domain): the sky is band-limited by the PSF, but a
    pattern fixed on the detector (the flat field's pixel-to-pixel response
    times the sky, residual hot pixels) is white, and unsmoothed its peak at
    zero shift can outweigh the sky's at the true one. The filter is
    symmetric: it moves no peak.
    """
    ref = prepare_for_fft(reference, None if good is None else good[0], window)
    img = prepare_for_fft(image, None if good is None else good[1], window)
    cross = fft.fft2(img, workers=-1) * np.conj(fft.fft2(ref, workers=-1)) * _gaussian(
        ref.shape, SMOOTHING)
    return cross, fft.ifft2(cross, workers=-1).real


def _gaussian(shape, sigma):
    """The Fourier transform of two Gaussian smoothings of ``sigma`` pixels (one per frame)."""
    fy, fx = (fft.fftfreq(n) for n in shape)
    return np.exp(-4 * (np.pi * sigma) ** 2 * (fy[:, None] ** 2 + fx[None, :] ** 2))


def prepare_for_fft(data, good, window):
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
        out = out * _window(out.shape)
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
