"""Point-spread functions: analytic models and user arrays.

Analytic models are defined in units of **input (coarse) pixels** and can be
sampled on any grid: ``psf.kernel(scale)`` returns the PSF integrated over the
pixels of a grid ``scale`` times finer, odd-sized, centred and normalised to
sum 1, optionally displaced by a sub-pixel ``offset`` (in fine pixels). Arrays
given by the user are sampled on the output (fine) grid, as DESIGN.md says.

The analytic profiles come from `astropy.modeling` (Gaussian2D, Moffat2D,
AiryDisk2D); pixel integration is done here by oversampling, because the
observation model needs a kernel displaced by an arbitrary sub-pixel offset,
which `astropy.convolution.discretize_model` does not offer.
"""

import numpy as np
from astropy.modeling import functional_models as fm
from scipy import fft, ndimage

__all__ = ["PSF", "GaussianPSF", "MoffatPSF", "AiryPSF", "ArrayPSF", "as_psf", "estimate_psf"]

#: Sub-samples per fine pixel used to integrate analytic profiles.
_OVERSAMPLE = 5


class PSF:
    """Base class of point-spread functions.

    Subclasses define ``_profile(x, y)`` (input-pixel units, centred on 0,
    any normalisation) and ``_radius`` (input pixels beyond which the profile
    is negligible).
    """

    _radius = 3.0

    def _profile(self, x, y):  # pragma: no cover - abstract
        raise NotImplementedError

    def kernel(self, scale=1, *, offset=(0.0, 0.0), size=None):
        """Sample the PSF on a grid ``scale`` times finer than the input pixels.

        Parameters
        ----------
        scale : int
            Fine pixels per input pixel along each axis.
        offset : tuple of float
            ``(ox, oy)`` displacement of the PSF centre, in fine pixels.
        size : int, optional
            Odd side of the kernel in fine pixels; by default large enough to
            hold the PSF out to its truncation radius.

        Returns
        -------
        numpy.ndarray
            Odd-sized 2-D kernel, normalised to sum 1, the PSF integrated over
            each fine pixel.
        """
        scale = _check_scale(scale)
        half = size // 2 if size else int(np.ceil(self._radius * scale + max(map(abs, offset))))
        if size is not None and size % 2 == 0:
            raise ValueError(f"size must be odd, got {size}")
        n = _OVERSAMPLE
        sub = (np.arange(n) + 0.5) / n - 0.5
        coords = (np.arange(-half, half + 1)[:, None] + sub[None, :]).ravel()
        x = (coords - offset[0]) / scale
        y = (coords - offset[1]) / scale
        values = self._profile(x[None, :], y[:, None])
        side = 2 * half + 1
        k = values.reshape(side, n, side, n).sum(axis=(1, 3))
        return k / k.sum()

    def __repr__(self):
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class GaussianPSF(PSF):
    """Circular Gaussian PSF.

    Parameters
    ----------
    sigma : float
        Standard deviation in input pixels (FWHM = 2.3548 sigma).
    """

    def __init__(self, sigma):
        self.sigma = _positive(sigma, "sigma")
        self._radius = 6.0 * self.sigma
        self._model = fm.Gaussian2D(1.0, 0.0, 0.0, self.sigma, self.sigma)

    @property
    def fwhm(self):
        """Full width at half maximum in input pixels."""
        return 2.0 * np.sqrt(2.0 * np.log(2.0)) * self.sigma

    def _profile(self, x, y):
        return self._model(x, y)


class MoffatPSF(PSF):
    """Circular Moffat PSF, a good model of seeing-limited stars.

    Parameters
    ----------
    fwhm : float
        Full width at half maximum in input pixels.
    beta : float
        Power index of the wings (> 1; 2.5-4.8 are typical of seeing).
    """

    def __init__(self, fwhm, beta=3.0):
        self.fwhm = _positive(fwhm, "fwhm")
        if not beta > 1:
            raise ValueError(f"beta must be > 1 for a normalisable Moffat profile, got {beta}")
        self.beta = float(beta)
        gamma = self.fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / self.beta) - 1.0))
        # Radius enclosing all but 1e-4 of the light: 1 - (1 + r^2/g^2)^(1-beta).
        self._radius = gamma * np.sqrt(1e-4 ** (1.0 / (1.0 - self.beta)) - 1.0)
        self._radius = min(self._radius, 12.0 * self.fwhm)
        self._model = fm.Moffat2D(1.0, 0.0, 0.0, gamma, self.beta)

    def _profile(self, x, y):
        return self._model(x, y)


class AiryPSF(PSF):
    """Airy pattern of an unobstructed circular aperture.

    Parameters
    ----------
    radius : float
        Radius of the first dark ring in input pixels (1.22 lambda/D).
    rings : int
        How many rings the kernel keeps before truncation.
    """

    def __init__(self, radius, rings=4):
        self.radius = _positive(radius, "radius")
        self.rings = int(rings)
        self._radius = self.radius * (self.rings + 1.0)
        self._model = fm.AiryDisk2D(1.0, 0.0, 0.0, self.radius)

    @property
    def fwhm(self):
        """Full width at half maximum in input pixels (0.8436 of the first-dark-ring radius)."""
        return 0.8436 * self.radius

    def _profile(self, x, y):
        return self._model(x, y)


class ArrayPSF(PSF):
    """A PSF given as an image, e.g. an empirical or instrument PSF.

    Parameters
    ----------
    array : array_like
        2-D, odd-sized, centred on the middle pixel, sum 1 (within 1e-3).
    oversampling : int
        Pixels of ``array`` per input pixel. Arrays passed to astrosr's
        fusion and inference are sampled on the output grid, so this is
        normally the ``scale`` of the job.
    normalize : bool
        Normalise the array to sum 1 instead of rejecting it.

    Raises
    ------
    ValueError
        If the array is not 2-D, even-sized, has non-finite values, or is not
        normalised (and ``normalize`` is False).
    """

    def __init__(self, array, *, oversampling=1, normalize=False):
        a = np.asarray(array, dtype=float)
        if a.ndim != 2:
            raise ValueError(f"psf array must be 2-D, got {a.ndim}-D")
        if a.shape[0] % 2 == 0 or a.shape[1] % 2 == 0:
            raise ValueError(
                f"psf array must be odd-sized (centred on a pixel), got shape {a.shape}; "
                "pad or crop it by one pixel")
        if not np.all(np.isfinite(a)):
            raise ValueError("psf array contains NaN or inf")
        total = a.sum()
        if normalize:
            if not total > 0:
                raise ValueError("psf array must have a positive sum to be normalised")
            a = a / total
        elif abs(total - 1.0) > 1e-3:
            raise ValueError(
                f"psf array must be normalised to sum 1, got sum {total:.6g}; "
                "pass normalize=True to normalise it")
        self.array = a
        self.oversampling = _check_scale(oversampling)
        self._radius = max(a.shape) / 2.0 / self.oversampling

    def __repr__(self):
        return f"ArrayPSF(shape={self.array.shape}, oversampling={self.oversampling})"

    def kernel(self, scale=1, *, offset=(0.0, 0.0), size=None):
        """Sample the PSF on a grid ``scale`` times finer than the input pixels.

        At the array's own sampling the offset is applied as an exact
        (band-limited) Fourier shift of the zero-padded array; at another
        sampling the array is resampled by cubic-spline interpolation with
        flux normalisation. See `PSF.kernel` for the parameters.
        """
        scale = _check_scale(scale)
        if scale == self.oversampling and size is None:
            return _fourier_shifted(self.array, offset)
        return super().kernel(scale, offset=offset, size=size)

    def _profile(self, x, y):
        # Cubic-spline surface through the samples (units: input pixels).
        ny, nx = self.array.shape
        col = x * self.oversampling + nx // 2
        row = y * self.oversampling + ny // 2
        rr, cc = np.broadcast_arrays(row, col)
        vals = ndimage.map_coordinates(self.array, [rr, cc], order=3, mode="constant", cval=0.0)
        return np.clip(vals, 0.0, None)


def _fourier_shifted(array, offset):
    """Shift an odd-sized kernel by ``offset`` (fine pixels) with a Fourier phase ramp."""
    ox, oy = offset
    if ox == 0 and oy == 0:
        return array.copy()
    pad = int(np.ceil(max(abs(ox), abs(oy)))) + 2
    a = np.pad(array, pad)
    ky = fft.fftfreq(a.shape[0])[:, None]
    kx = fft.fftfreq(a.shape[1])[None, :]
    shifted = fft.ifft2(fft.fft2(a) * np.exp(-2j * np.pi * (kx * ox + ky * oy))).real
    return shifted / shifted.sum()


def as_psf(psf, *, oversampling=1):
    """Return a `PSF` from a PSF object or an array.

    Parameters
    ----------
    psf : PSF or array_like
        A PSF model, or an array sampled ``oversampling`` times finer than the
        input pixels (see `ArrayPSF`).
    oversampling : int
        Sampling of an array PSF, in pixels per input pixel.
    """
    if isinstance(psf, PSF):
        return psf
    if psf is None:
        raise TypeError("psf is required: pass an astrosr.psf model or an array")
    return ArrayPSF(psf, oversampling=oversampling)


def _positive(value, name):
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def _check_scale(scale):
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    return int(scale)


def estimate_psf(ccd, *, fwhm_guess=3.0, snr=20.0, max_stars=50, box=11):
    """A Gaussian PSF fitted to the isolated stars of an image.

    Stars are found with `photutils.detection.DAOStarFinder` above ``snr``
    times the sky noise, away from the edges and from each other; each is
    fitted with a 2-D Gaussian plus a constant (`astropy.modeling`), and the
    median width, corrected for integration over the pixels (``sigma**2 -
    1/12``), gives the PSF.

    Parameters
    ----------
    ccd : `~astropy.nddata.NDData` or array
        The image (input pixels).
    fwhm_guess : float
        FWHM for the star finder, in pixels.
    snr : float
        Detection threshold in sky-noise sigma.
    max_stars : int
        The brightest isolated stars fitted.
    box : int
        Odd side of the fitted cutouts.

    Returns
    -------
    GaussianPSF

    Raises
    ------
    ValueError
        If fewer than 3 usable stars are found.
    """
    from astropy.modeling import fitting, models
    from astropy.stats import sigma_clipped_stats
    from photutils.detection import DAOStarFinder

    data = np.asarray(getattr(ccd, "data", ccd), dtype=float)
    mask = ~np.isfinite(data)
    if getattr(ccd, "mask", None) is not None:
        mask |= np.asarray(ccd.mask, dtype=bool)
    _, median, std = sigma_clipped_stats(data, mask=mask)
    sub = np.where(mask, 0.0, data - median)
    found = DAOStarFinder(fwhm=fwhm_guess, threshold=snr * std)(sub, mask=mask)
    if found is None or len(found) < 3:
        raise ValueError("estimate_psf: fewer than 3 stars found; pass a PSF instead")
    x, y = np.asarray(found["xcentroid"]), np.asarray(found["ycentroid"])
    half = box // 2
    ny, nx = data.shape
    dist = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :]) + np.eye(len(x)) * 1e9
    keep = ((x > half + 1) & (x < nx - half - 2) & (y > half + 1) & (y < ny - half - 2)
            & (dist.min(axis=1) > box))
    order = np.argsort(-np.asarray(found["flux"]))
    sigmas = []
    fitter = fitting.LevMarLSQFitter()
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    for i in [k for k in order if keep[k]][:max_stars]:
        cy, cx = int(round(y[i])), int(round(x[i]))
        cut = sub[cy - half:cy + half + 1, cx - half:cx + half + 1]
        if mask[cy - half:cy + half + 1, cx - half:cx + half + 1].any():
            continue
        g = models.Gaussian2D(cut.max(), x[i] - cx, y[i] - cy, 1.0, 1.0) + models.Const2D(0.0)
        fit = fitter(g, xx, yy, cut)
        sx, sy = abs(fit.x_stddev_0.value), abs(fit.y_stddev_0.value)
        if 0.3 < sx < half and 0.3 < sy < half:
            sigmas.append(np.sqrt(sx * sy))
    if len(sigmas) < 3:
        raise ValueError("estimate_psf: fewer than 3 isolated stars could be fitted; "
                         "pass a PSF instead")
    sigma2 = np.median(sigmas) ** 2 - 1.0 / 12.0
    return GaussianPSF(float(np.sqrt(max(sigma2, 0.05))))
