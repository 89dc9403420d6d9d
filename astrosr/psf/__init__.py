"""Point-spread functions: analytic models and user arrays.

Analytic models are defined in units of **input (coarse) pixels** and can be
sampled on any grid: ``psf.kernel(scale)`` returns the PSF integrated over the
pixels of a grid ``scale`` times finer, odd-sized, centred and normalised to
sum 1, optionally displaced by a sub-pixel ``offset`` (in fine pixels). Arrays
given by the user are sampled on the output (fine) grid, as DESIGN.md says.

`read_psf` reads a PSF from an array or a FITS file; `estimate_psf` fits a
Gaussian to the stars of one image, and `estimate_stack_psf` measures the PSF
on the fine grid from the stars of a dithered stack (photutils' ePSF, with
the pixel response removed).

The analytic profiles come from `astropy.modeling` (Gaussian2D, Moffat2D,
AiryDisk2D); pixel integration is done here by oversampling, because the
observation model needs a kernel displaced by an arbitrary sub-pixel offset,
which `astropy.convolution.discretize_model` does not offer.
"""

import os

import numpy as np
from astropy.modeling import functional_models as fm
from scipy import fft, ndimage

__all__ = ["PSF", "GaussianPSF", "MoffatPSF", "AiryPSF", "ArrayPSF", "as_psf", "read_psf",
           "estimate_psf", "estimate_stack_psf", "fit_stack_psf", "stack_psf"]

#: Sub-samples per fine pixel used to integrate analytic profiles.
_OVERSAMPLE = 5


class PSF:
    """Base class of point-spread functions.

    Subclasses define ``_profile(x, y)`` (input-pixel units, centred on 0,
    any normalisation) — by default their ``_model``, an `astropy.modeling`
    profile — and ``_radius`` (input pixels beyond which the profile is
    negligible).
    """

    _radius = 3.0

    def _profile(self, x, y):
        return self._model(x, y)

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
        scale = check_scale(scale)
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
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                           if not k.startswith("_") and k != "fit_info")
        return f"{type(self).__name__}({params})"


class GaussianPSF(PSF):
    """Circular Gaussian PSF.

    Parameters
    ----------
    sigma : float
        Standard deviation in input pixels (FWHM = 2.3548 sigma).
    """

    def __init__(self, sigma):
        self.sigma = check_positive(sigma, "sigma")
        self._radius = 6.0 * self.sigma
        self._model = fm.Gaussian2D(1.0, 0.0, 0.0, self.sigma, self.sigma)

    @property
    def fwhm(self):
        """Full width at half maximum in input pixels."""
        return 2.0 * np.sqrt(2.0 * np.log(2.0)) * self.sigma


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
        self.fwhm = check_positive(fwhm, "fwhm")
        if not beta > 1:
            raise ValueError(f"beta must be > 1 for a normalisable Moffat profile, got {beta}")
        self.beta = float(beta)
        gamma = self.fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / self.beta) - 1.0))
        # Radius enclosing all but 1e-4 of the light: 1 - (1 + r^2/g^2)^(1-beta).
        self._radius = gamma * np.sqrt(1e-4 ** (1.0 / (1.0 - self.beta)) - 1.0)
        self._radius = min(self._radius, 12.0 * self.fwhm)
        self._model = fm.Moffat2D(1.0, 0.0, 0.0, gamma, self.beta)


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
        self.radius = check_positive(radius, "radius")
        self.rings = int(rings)
        self._radius = self.radius * (self.rings + 1.0)
        self._model = fm.AiryDisk2D(1.0, 0.0, 0.0, self.radius)

    @property
    def fwhm(self):
        """Full width at half maximum in input pixels (0.8436 of the first-dark-ring radius)."""
        return 0.8436 * self.radius


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
        a = _checked_array(array, "psf array")
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
        self.oversampling = check_scale(oversampling)
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
        scale = check_scale(scale)
        if scale == self.oversampling and size is None:
            return fourier_shifted(self.array, offset)
        return super().kernel(scale, offset=offset, size=size)

    def _profile(self, x, y):
        # Cubic-spline surface through the samples (units: input pixels).
        ny, nx = self.array.shape
        col = x * self.oversampling + nx // 2
        row = y * self.oversampling + ny // 2
        rr, cc = np.broadcast_arrays(row, col)
        vals = ndimage.map_coordinates(self.array, [rr, cc], order=3, mode="constant", cval=0.0)
        return np.clip(vals, 0.0, None)


def fourier_shifted(array, offset):
    """Shift an odd-sized kernel by ``offset`` (fine pixels) with a Fourier phase ramp.

    Parameters
    ----------
    array : numpy.ndarray
        Odd-sized 2-D kernel, centred on its central pixel.
    offset : tuple of float
        ``(ox, oy)`` displacement, in pixels of ``array``.

    Returns
    -------
    numpy.ndarray
        The kernel shifted (band-limited), zero-padded by
        ``ceil(max(|ox|, |oy|)) + 2`` pixels on each side and normalised to
        sum 1; a copy of ``array`` when the offset is zero.
    """
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
    """Return a `PSF` from a PSF object, an array or a FITS file.

    Parameters
    ----------
    psf : PSF, array_like, str or path
        A PSF model, an array sampled ``oversampling`` times finer than the
        input pixels (see `ArrayPSF`), or the path of a FITS file (read with
        `read_psf`).
    oversampling : int
        Sampling of an array PSF, in pixels per input pixel.
    """
    if isinstance(psf, PSF):
        return psf
    if psf is None:
        raise TypeError("psf is required: pass an astrosr.psf model or an array")
    if isinstance(psf, (str, os.PathLike)):
        return read_psf(psf, scale=oversampling)
    return ArrayPSF(psf, oversampling=oversampling)


#: FITS keywords read (in this order) as the oversampling of a PSF image
#: relative to the detector pixels (WebbPSF and Tiny Tim write OVERSAMP).
_OVERSAMPLING_KEYS = ("OVERSAMP", "OVERSAMPLING", "OVERSAMPL", "OVERSAMPLE", "PSFOVERS")


def read_psf(source, *, scale):
    """Return a `PSF` from a model, an array on the fine grid, or a FITS file.

    Parameters
    ----------
    source : PSF, array_like, str or path
        A PSF model (returned as is); a 2-D array sampled on the fine grid,
        ``scale`` times finer than the input pixels; or the path of a FITS
        file whose first image HDU holds the PSF. If that HDU's header has
        an ``OVERSAMP`` keyword (or ``OVERSAMPLING``, ``OVERSAMPL``,
        ``OVERSAMPLE``, ``PSFOVERS``), it gives the image's sampling in
        pixels per input pixel and the PSF is resampled to the fine grid
        when it is used; otherwise the image is taken to be on the fine
        grid. Arrays and images are normalised to sum 1.
    scale : int
        Fine pixels per input pixel (the ``scale`` of the job).

    Returns
    -------
    PSF

    Raises
    ------
    ValueError
        If the array or image is not 2-D, has NaN/inf or no positive sum,
        the oversampling keyword is not a positive integer, or the array is
        even-sized. Even-sized arrays are rejected, not resampled: their
        centre lies between two pixels, or on pixel ``n // 2`` by the FFT
        convention, and guessing wrong would shift every source of a
        reconstruction by half a fine pixel; crop or pad the array by one
        pixel so that its peak is on the central pixel.
    FileNotFoundError
        If the path does not exist.
    """
    scale = check_scale(scale)
    if isinstance(source, PSF):
        return source
    if source is None:
        raise TypeError("psf source is required: pass an astrosr.psf model, an array or a "
                        "FITS path")
    oversampling = scale
    name = "psf array"
    if isinstance(source, (str, os.PathLike)):
        array, oversampling = _read_psf_fits(os.fspath(source), scale)
        name = f"PSF image in {os.fspath(source)}"
    else:
        array = source
    return ArrayPSF(_checked_array(array, name), oversampling=oversampling, normalize=True)


def _read_psf_fits(path, scale):
    from astropy.io import fits

    if not os.path.exists(path):
        raise FileNotFoundError(f"PSF file not found: {path}")
    with fits.open(path) as hdul:
        hdu = next((h for h in hdul if getattr(h, "data", None) is not None
                    and getattr(h, "is_image", False) and h.data.ndim >= 1), None)
        if hdu is None:
            raise ValueError(f"{path} has no image HDU holding a PSF")
        array = np.array(hdu.data, dtype=float)
        key = next((k for k in _OVERSAMPLING_KEYS if k in hdu.header), None)
        if key is None:
            return array, scale
        value = hdu.header[key]
    try:
        oversampling = check_scale(value)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: header keyword {key}={value!r} must be a positive integer "
                         "(the PSF's pixels per detector pixel); fix the header or pass the "
                         "array with read_psf(array, scale=...)") from None
    return array, oversampling


def _checked_array(array, name):
    """``array`` as a float array, if it can be a PSF: 2-D, odd-sized, finite."""
    a = np.asarray(array, dtype=float)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {a.shape}")
    if a.shape[0] % 2 == 0 or a.shape[1] % 2 == 0:
        raise ValueError(
            f"{name} must be odd-sized (centred on a pixel), got shape {a.shape}; "
            "crop or pad it by one pixel so that its peak is on the central pixel")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def check_positive(value, name):
    """Validate a positive finite number (a PSF width, a FWHM guess) and return it as a float.

    Parameters
    ----------
    value : float
        The value to check.
    name : str
        Its name, for the error message.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``value`` is not finite or not > 0.
    """
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def check_scale(scale):
    """Validate a sampling factor (fine pixels per input pixel) and return it as an int.

    Parameters
    ----------
    scale : int
        The factor; an integral float is accepted.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        If ``scale`` is not an integer >= 1.
    """
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    return int(scale)


# The estimators (photutils) live in their own module; imported last: they use the models.
from .estimate import estimate_psf, estimate_stack_psf  # noqa: E402
from .fit import fit_stack_psf  # noqa: E402


def stack_psf(frames, shifts, *, scale, hdu=None, fwhm_guess=None, snr=None, max_stars=None,
              saturation=None):
    """The PSF of a dithered stack, measured on its stars; ``(psf, how)``.

    The effective PSF on the fine grid (`estimate_stack_psf`) when the stack
    has enough isolated stars for it; else a Gaussian or Moffat profile
    fitted to its point sources in every frame at once (`fit_stack_psf`);
    else, when the sources' surroundings defeat that fit (a deep field's
    texture, neighbours), the Gaussian that the point sources of the
    reference frame agree on (`estimate_psf`: the narrowest width many
    sources share; galaxies are wider, defects narrower, saturated stars
    are left out). Never a Gaussian fitted to whatever sources there are:
    on a field of galaxies such a fit is far too wide (sigma 1.8 instead of
    1.2 input pixels on the Hubble Deep Field).

    Parameters
    ----------
    frames, shifts, hdu
        As for `estimate_stack_psf`; ``shifts`` may also be any geometry of
        `astrosr.fuse` (a table with ``rotation``/``scale``, or ``"wcs"``):
        the PSF is then measured on the frames that are translated only
        relative to the reference (the PSF is taken to be the same in every
        frame, on the output grid's orientation).
    scale : int
        Fine pixels per input pixel.
    fwhm_guess, snr, max_stars, saturation : optional
        Star selection, passed to each estimate (``None``: each one's
        default); ``MultiFrameSR(psf_options={...})`` passes them here.

    Returns
    -------
    psf : PSF
    how : str
        Which estimate, from how many stars (for HISTORY).

    Raises
    ------
    ValueError
        When no estimate is possible; the message names what to pass instead.
    """
    options = {k: v for k, v in (("fwhm_guess", fwhm_guess), ("snr", snr),
                                 ("max_stars", max_stars)) if v is not None}
    frames, shifts, note = _translated_frames(frames, shifts, hdu)
    psf, how = _stack_estimate(frames, shifts, scale, hdu, saturation, options)
    return psf, how + note


def _translated_frames(frames, geometry, hdu):
    """The frames translated only relative to the reference, their shifts, and a note."""
    from ..geometry import frame_transforms
    from ..stack import FrameStack

    stack = FrameStack.parse(frames, hdu=hdu)
    transforms = frame_transforms(geometry, stack.shape, stack.wcs)
    keep = [i for i, t in enumerate(transforms) if t.is_shift]
    if not keep:
        raise ValueError("cannot estimate the PSF: every frame is rotated or scaled relative to "
                         "the reference; give psf= (--psf)")
    if len(keep) == len(stack):
        return stack, np.array([(t.dx, t.dy) for t in transforms]), ""
    note = (f"; measured on the {len(keep)} of {len(stack)} frames that are not rotated or "
            "scaled relative to the reference")
    return ([stack.ccds[i] for i in keep], np.array([(transforms[i].dx, transforms[i].dy)
                                                     for i in keep]), note)


def _stack_estimate(frames, shifts, scale, hdu, saturation, options):
    errors = []
    try:
        est = estimate_stack_psf(frames, shifts, scale=scale, hdu=hdu, saturation=saturation,
                                 **options)
        return est, f"effective PSF estimated from the stars of the stack ({est!r})"
    except ValueError as exc:
        errors.append(f"effective PSF: {exc}")
    try:
        est = fit_stack_psf(frames, shifts, hdu=hdu, saturation=saturation, **options)
        info = est.fit_info
        return est, (f"{info['profile']} profile fitted to {info['n_stars']} stars in every "
                     f"frame ({est!r}, reduced chi-square "
                     f"{info['chi2_red'][info['profile']]:.2f}); too few stars for an "
                     "effective PSF")
    except ValueError as exc:
        errors.append(f"profile fit: {exc}")
    est, ref = _reference_frame_psf(frames, shifts, hdu, saturation, options, errors)
    info = est.fit_info
    return est, (f"Gaussian that {info['n_stars']} point sources of frame {ref} agree on "
                 f"({est!r}, FWHM {est.fwhm:.2f} px, scatter {100 * info['scatter']:.0f}%); "
                 "the stack's stars gave neither an effective PSF nor a profile fit")


def _reference_frame_psf(frames, shifts, hdu, saturation, options, errors):
    from ..nddata import as_frames, shift_array
    from .stars import ADVICE

    ccds = as_frames(frames, hdu=hdu)
    offsets = shift_array(shifts, len(ccds))
    ref = int(np.argmin(np.hypot(offsets[:, 0], offsets[:, 1])))
    single = {k: v for k, v in options.items() if k != "max_stars"}
    try:
        return estimate_psf(ccds[ref], saturation=saturation, **single), ref
    except ValueError as exc:
        errors.append(f"single frame: {exc}")
    detail = "; ".join(e.replace(ADVICE, "").rstrip("; ") for e in errors)
    raise ValueError(f"cannot estimate the PSF from the stack ({detail}); {ADVICE}") from None
