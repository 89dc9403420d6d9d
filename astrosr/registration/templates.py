"""Frames and templates prepared for registration: filled, Wiener-filtered, as cubic splines."""

from functools import cached_property

import numpy as np
from scipy import fft, ndimage

from .splines import mask_at, shifted_mask, spline_at, spline_gradient_at, spline_shift

__all__ = ["Frame", "Template", "fill", "tapered_pad", "tapered_sum", "wiener_gain", "erode",
           "MARGIN", "PAD"]

#: Pixels next to an edge or a bad pixel that the spline does not trust.
MARGIN = 2
#: Mirror-padded border of Fourier-filtered images (pixels).
PAD = 16


class Frame:
    """One frame prepared for registration: filled data, variance and spline."""

    def __init__(self, stack, index, name):
        data, var, good = stack.data[index], stack.var[index], stack.good[index]
        if good.sum() < 16:
            raise ValueError(f"{name} has fewer than 16 usable pixels (all masked or NaN)")
        values = data[good]
        if np.ptp(values) == 0:
            raise ValueError(f"{name} is constant: there is nothing to register")
        self.estimated_noise = not stack.var_given[index]
        self.data = fill(data, good)
        self.var = var
        self.good = good
        self.trusted = erode(good, MARGIN)

    @cached_property
    def coeffs(self):
        """Cubic-spline coefficients of the filled data (computed when first needed)."""
        return ndimage.spline_filter(self.data, order=3, mode="mirror")

    @cached_property
    def good_var(self):
        """The variance, 0 at bad pixels."""
        return np.where(self.good, self.var, 0.0)

    def aligned(self, d):
        """Data, variance and coverage resampled onto the reference grid: value at x is f(x + d)."""
        sy, sx = -d[1], -d[0]
        values = spline_shift(self.coeffs, sy, sx)
        var = spline_shift(self.good_var, sy, sx, order=1)
        return values, var, shifted_mask(self.trusted, sy, sx)

    def resampled(self, transform, area=1.0):
        """Data, variance and coverage on the reference grid through any transform.

        The value at reference pixel p is the frame at ``transform.reference_to_frame(p)``,
        times ``area`` (frame pixels per reference pixel: flux per reference pixel).
        """
        yy, xx = np.indices(self.data.shape, dtype=float)
        qx, qy = transform.reference_to_frame(xx, yy)
        values = spline_at(self.coeffs, qx, qy) * area
        var = spline_at(self.good_var, qx, qy, order=1) * area ** 2
        return values, var, mask_at(self.trusted, qx, qy)


def fill(data, good):
    """Replace bad pixels by a local Gaussian-weighted mean of good ones, for the spline and FFTs."""
    if good.all():
        return data
    num = ndimage.gaussian_filter(np.where(good, data, 0.0), 2.0)
    den = ndimage.gaussian_filter(good.astype(float), 2.0)
    fallback = np.median(data[good]) if good.any() else 0.0  # no coverage: nothing to fill from
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
    symmetric, so it moves nothing (`wiener_gain`).

    Returns the filtered image and the factor by which it scales white-noise variance.
    """
    padded, taper = tapered_pad(image, PAD)
    ft = fft.rfft2(padded, workers=-1)
    noise_power = tapered_sum(variance, PAD, 3)
    gain, factor = wiener_gain(np.abs(ft) ** 2, noise_power)
    filtered = fft.irfft2(ft * gain, padded.shape, workers=-1)
    return filtered[PAD:PAD + image.shape[0], PAD:PAD + image.shape[1]], factor


def wiener_gain(power, noise_power, template_noise=None):
    """The Wiener filter of an image from its periodogram (an rfft half-plane).

    Its signal power is the periodogram smoothed over a few frequency bins,
    less the white-noise power; the gain is signal / (signal + noise), 1 at
    zero frequency.

    Parameters
    ----------
    power : numpy.ndarray
        Periodogram ``|rfft2(image)|**2`` (or a mean of several images').
    noise_power : float
        White-noise power per frequency bin in ``power`` (the sum of the variance).
    template_noise : float, optional
        Noise power of the image to be filtered, when it differs from the one
        whose periodogram ``power`` is (a mean of frames is less noisy than each).

    Returns
    -------
    gain : numpy.ndarray
        The filter, same shape as ``power``.
    factor : float
        The factor by which it scales white-noise variance (Parseval, rfft half-plane).
    """
    template_noise = noise_power if template_noise is None else template_noise
    smooth = ndimage.gaussian_filter(power, 2.0, mode=("wrap", "nearest"))
    signal = np.clip(smooth - noise_power, 0.0, None)
    gain = signal / (signal + template_noise)
    gain[0, 0] = 1.0
    weights = np.full(gain.shape, 2.0)
    weights[:, 0] = 1.0
    factor = float(np.sum(weights * gain ** 2) / np.sum(weights))
    return gain, factor


def tapered_pad(data, pad, mean=None):
    """Mirror-pad by ``pad``, taper the border to the mean: a smooth periodic image, and the taper.

    Parameters
    ----------
    data : numpy.ndarray
        2-D image.
    pad : int
        Mirrored border (pixels); the image is then padded further to an
        odd length that `scipy.fft` transforms fast.
    mean : float, optional
        The level the border tapers to (default: the image's mean).

    Returns
    -------
    padded, taper : numpy.ndarray
        The padded image (``data`` at ``[pad:pad + ny, pad:pad + nx]``) and
        the taper it was multiplied by (about the mean).
    """
    mean = data.mean() if mean is None else mean
    out = np.pad(data - mean, pad, mode="symmetric")
    total = [_odd_fast_len(n + 2 * pad) for n in data.shape]
    out = np.pad(out, [(0, t - n - 2 * pad) for t, n in zip(total, data.shape)])
    taper = np.outer(*_ramps(data.shape, pad))
    return out * taper + mean, taper


def tapered_sum(data, pad, exponent):
    """``sum(mirror-padded data * taper ** exponent)`` over `tapered_pad`'s grid, in one pass.

    Parameters
    ----------
    data : numpy.ndarray
        2-D image (a variance: the white-noise power of `tapered_pad`'s image is this
        sum with ``exponent=3``, the taper applied once to the image and twice to its power).
    pad : int
        Mirrored border, as for `tapered_pad`.
    exponent : float
        Power of the taper.

    Returns
    -------
    float
        The sum: ``A @ data @ B`` with the taper's powers folded back onto the
        image's rows and columns through the mirror.
    """
    folded = []
    for n, ramp in zip(data.shape, _ramps(data.shape, pad)):
        source = np.arange(-pad, n + pad) % (2 * n)  # the mirror repeats with period 2n
        source = np.where(source < n, source, 2 * n - 1 - source)
        folded.append(np.bincount(source, weights=ramp[:n + 2 * pad] ** exponent, minlength=n))
    return float(folded[0] @ (np.asarray(data, dtype=float) @ folded[1]))


def _ramps(shape, pad):
    """The taper of `tapered_pad` along each axis (1 on the image, a raised cosine across the
    mirrored border, 0 beyond)."""
    ramps = []
    for n in shape:
        ramp = np.zeros(_odd_fast_len(n + 2 * pad))
        ramp[pad:pad + n] = 1.0
        edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(pad) + 0.5) / pad)
        ramp[:pad] = edge
        ramp[pad + n:2 * pad + n] = edge[::-1]
        ramps.append(ramp)
    return ramps


def erode(mask, iterations):
    """`scipy.ndimage.binary_erosion` of ``mask`` by the cross, ``iterations`` times, with
    nothing outside (``border_value=0``), by shifted slices (many times faster).

    Parameters
    ----------
    mask : numpy.ndarray of bool
        2-D map.
    iterations : int

    Returns
    -------
    numpy.ndarray of bool
    """
    out = np.asarray(mask, dtype=bool)
    for _ in range(int(iterations)):
        eroded = out.copy()
        eroded[1:] &= out[:-1]
        eroded[:-1] &= out[1:]
        eroded[:, 1:] &= out[:, :-1]
        eroded[:, :-1] &= out[:, 1:]
        eroded[0], eroded[-1], eroded[:, 0], eroded[:, -1] = False, False, False, False
        out = eroded
    return out


def _odd_fast_len(n):
    """Smallest odd length >= n that scipy.fft transforms fast (3, 5, 7, 11 smooth)."""
    n += 1 - n % 2
    while fft.next_fast_len(n) != n:
        n += 2
    return n


class Template:
    """Template on the reference grid: Wiener-filtered values as a cubic spline, with gradients."""

    def __init__(self, values, var, cover):
        var = np.where(cover, var, 0.0)
        self.cover = ndimage.binary_erosion(cover, iterations=MARGIN, border_value=0)
        filtered, factor = _wiener_filter(fill(values, cover), var)
        self.var = var * factor
        self.coeffs = ndimage.spline_filter(filtered, order=3, mode="mirror")
        # Derivative of a cubic B-spline: a quadratic B-spline on the
        # differences of the coefficients, displaced by half a pixel.
        self.dcx = self.coeffs - np.roll(self.coeffs, 1, axis=1)
        self.dcy = self.coeffs - np.roll(self.coeffs, 1, axis=0)

    def sampled(self, d):
        """Template value and gradient at ``x - d`` for every pixel x of the frame."""
        sy, sx = d[1], d[0]
        val = spline_shift(self.coeffs, sy, sx)
        gx = spline_shift(self.dcx, sy, sx - 0.5, order=(3, 2))
        gy = spline_shift(self.dcy, sy - 0.5, sx, order=(2, 3))
        return val, gx, gy

    def coverage(self, d):
        """Frame pixels whose template position ``x - d`` lies inside the trusted template."""
        sy, sx = d[1], d[0]
        return shifted_mask(self.cover, sy, sx), spline_shift(self.var, sy, sx, order=1)

    def at(self, x, y):
        """Template value and gradient at reference positions ``(x, y)``."""
        return spline_gradient_at(self.coeffs, x, y)

    def coverage_at(self, x, y):
        """Which positions ``(x, y)`` lie inside the trusted template, and its variance there."""
        return mask_at(self.cover, x, y), spline_at(self.var, x, y, order=1)
