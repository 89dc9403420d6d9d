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

__all__ = ["phase_correlation", "coarse_shift", "CoarseShift", "prepare_for_fft", "SMOOTHING",
           "COARSE_SIZE"]

#: Smoothing (pixels, a Gaussian's sigma) of both frames before they are correlated.
SMOOTHING = 1.0
#: `coarse_shift` correlates frames larger than this (pixels, either axis) binned to about
#: this size, then a central crop of this size at full resolution.
COARSE_SIZE = 256


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
    return _peak(cross, corr, upsample)


def _peak(cross, corr, upsample):
    """``(dx, dy)`` of the correlation's highest peak, refined to ``1 / upsample`` pixel."""
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
    ref = _spectrum(reference, None if good is None else good[0], window)
    return _cross(ref, image, None if good is None else good[1], window)


def _spectrum(data, good, window):
    """The conjugate spectrum of a prepared frame, smoothed (a reference for `_cross`)."""
    ref = prepare_for_fft(data, good, window)
    return np.conj(fft.fft2(ref, workers=-1)) * _gaussian(ref.shape, SMOOTHING)


def _cross(reference_spectrum, image, good, window):
    img = prepare_for_fft(image, good, window)
    cross = fft.fft2(img, workers=-1) * reference_spectrum
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
    """Locate the correlation peak to 1/upsample pixel by matrix DFTs around it.

    The surface is sampled at a tenth of a pixel over +-0.75 px first, then
    (for ``upsample > 10``) at ``1 / upsample`` over +-0.15 px around that
    maximum: the grid of one DFT at the final spacing over +-0.75 px costs
    ``upsample / 10`` times more, for the same maximum of a smooth peak.
    """
    steps = [min(upsample, 10)] + ([upsample] if upsample > 10 else [])
    reach = 0.75
    for up in steps:
        half = np.ceil(reach * up)
        offsets = (np.arange(2 * half + 1) - half) / up

        def kernel(n, centre):
            return np.exp(2j * np.pi * np.outer(centre + offsets, fft.fftfreq(n)))

        ky = kernel(cross.shape[0], peak[0])
        kx = kernel(cross.shape[1], peak[1])
        surface = _real_product(ky, cross, kx)
        iy, ix = np.unravel_index(np.argmax(surface), surface.shape)
        peak = peak + offsets[[iy, ix]]
        reach = 1.5 / up
    return peak


def _real_product(ky, cross, kx):
    """``(ky @ cross @ kx.T).real`` in real arithmetic (single-threaded einsum: complex BLAS
    products of these thin matrices cost tens of times more, on a loaded machine)."""
    cr, ci = cross.real, cross.imag
    ar = np.einsum("ay,yx->ax", ky.real, cr) - np.einsum("ay,yx->ax", ky.imag, ci)
    ai = np.einsum("ay,yx->ax", ky.real, ci) + np.einsum("ay,yx->ax", ky.imag, cr)
    return np.einsum("ax,bx->ab", ar, kx.real) - np.einsum("ax,bx->ab", ai, kx.imag)


def coarse_shift(reference, image, *, upsample=100, good=None):
    """`phase_correlation` at a cost that does not grow with the frame beyond `COARSE_SIZE`.

    A frame larger than `COARSE_SIZE` pixels is correlated first
    binned by ``b`` (blocks of ``b x b`` pixels, to about `COARSE_SIZE` a
    side), which finds shifts up to a quarter of the frame to a fraction of
    ``b`` pixels, then on a central crop of `COARSE_SIZE` pixels a side at
    full resolution, the image's crop displaced by that estimate: the
    residual shift, to ``1 / upsample`` pixel. Where the two disagree by more
    than ``b`` pixels (a crop with little structure), the binned estimate
    stands. The least-squares refinement takes it from either.

    Parameters
    ----------
    reference, image : numpy.ndarray
        2-D arrays of the same shape, no NaN (fill them first).
    upsample : int
        Precision of the estimate is ``1 / upsample`` pixel.
    good : tuple of numpy.ndarray, optional
        Boolean maps of usable pixels of ``reference`` and ``image``.

    Returns
    -------
    dx, dy : float
        A source at ``(x, y)`` in ``reference`` is at ``(x + dx, y + dy)`` in ``image``.
    """
    good = (None, None) if good is None else good
    return CoarseShift(reference, upsample=upsample, good=good[0])(image, good=good[1])


class CoarseShift:
    """`coarse_shift` of any number of images against one reference, prepared once.

    Parameters
    ----------
    reference : numpy.ndarray
        2-D array, no NaN (fill it first).
    upsample : int
        Precision of the estimates is ``1 / upsample`` pixel.
    good : numpy.ndarray, optional
        Boolean map of the reference's usable pixels.

    Examples
    --------
    >>> locate = CoarseShift(reference)            # doctest: +SKIP
    >>> dx, dy = locate(image, good=image_good)    # doctest: +SKIP
    """

    def __init__(self, reference, *, upsample=100, good=None):
        self.reference = np.asarray(reference, dtype=float)
        self.good = np.isfinite(self.reference) if good is None else good
        self.upsample = int(upsample)
        self.direct = max(self.reference.shape) <= COARSE_SIZE
        self._crops = {}
        if self.direct:
            self._spectrum = _spectrum(self.reference, self.good, True)
            return
        self.binning = int(np.ceil(max(self.reference.shape) / COARSE_SIZE))
        self._spectrum = _spectrum(*_binned(self.reference, self.good, self.binning), True)

    def __call__(self, image, *, good=None):
        """The shift of ``image`` relative to the reference.

        Parameters
        ----------
        image : numpy.ndarray
            2-D array of the reference's shape, no NaN (fill it first).
        good : numpy.ndarray, optional
            Boolean map of its usable pixels.

        Returns
        -------
        dx, dy : float
            A source at ``(x, y)`` in the reference is at ``(x + dx, y + dy)`` in ``image``.

        Raises
        ------
        ValueError
            If the shapes differ.
        """
        image = np.asarray(image, dtype=float)
        if image.shape != self.reference.shape:
            raise ValueError(f"image shape {image.shape} differs from the reference's "
                             f"{self.reference.shape}")
        good = np.isfinite(image) if good is None else good
        if self.direct:
            return _peak(*_cross(self._spectrum, image, good, True), self.upsample)
        b = self.binning
        # To a tenth of a binned pixel: the crop's correlation takes it from there.
        dx, dy = _peak(*_cross(self._spectrum, *_binned(image, good, b), True),
                       min(self.upsample, 10))
        d = np.array([dx, dy]) * b
        k = np.round(d).astype(int)
        crops = _crops(image.shape, k, COARSE_SIZE)
        if crops is None:
            return float(d[0]), float(d[1])
        ref_box, img_box = crops
        key = tuple((sl.start, sl.stop) for sl in ref_box)
        if key not in self._crops:
            self._crops[key] = _spectrum(self.reference[ref_box], self.good[ref_box], True)
        residual = _peak(*_cross(self._crops[key], image[img_box], good[img_box], True),
                         self.upsample)
        if np.max(np.abs(residual)) > b:
            return float(d[0]), float(d[1])
        return float(k[0] + residual[0]), float(k[1] + residual[1])


def _binned(data, good, b):
    """Mean of ``b x b`` blocks (the remainder rows and columns dropped); blocks with any
    bad pixel are bad."""
    ny, nx = (n // b * b for n in data.shape)
    values = np.where(good, data, 0.0)[:ny, :nx].reshape(ny // b, b, nx // b, b)
    count = good[:ny, :nx].reshape(ny // b, b, nx // b, b).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = values.sum(axis=(1, 3)) / count
    full = count == b * b
    if not full.any():
        full = count > 0
    return np.where(full, mean, 0.0), full


def _crops(shape, k, size):
    """Slices of a central crop (at most ``size`` a side) of the reference and the image's,
    displaced by ``k`` (dx, dy) and inside both frames; None where they overlap too little."""
    boxes = ([], [])
    for n, shift in zip(shape, (k[1], k[0])):
        lo, hi = max(0, -shift), min(n, n - shift)  # reference range whose image is inside
        side = min(size, hi - lo)
        if side < COARSE_SIZE // 4:
            return None
        start = min(max((n - side) // 2, lo), hi - side)
        boxes[0].append(slice(start, start + side))
        boxes[1].append(slice(start + shift, start + shift + side))
    return tuple(boxes[0]), tuple(boxes[1])
