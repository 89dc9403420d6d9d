"""PSF estimates from the stars of an image or a dithered stack (photutils).

`estimate_psf` fits a Gaussian to the stars of one image; `estimate_stack_psf`
builds the effective PSF on the fine grid from the stars of a dithered stack
(photutils' ePSF builder) and removes the pixel response, so the result can go
straight into the observation model (PSF, then integration over the input
pixels). Both are re-exported by `astrosr.psf`.
"""

import contextlib
import threading

import numpy as np
from scipy import fft, ndimage

from . import ArrayPSF, GaussianPSF, check_positive, check_scale, fourier_shifted
from ..nddata import saturated_pixels
from .stars import ADVICE, column as _column, psf_stars

__all__ = ["estimate_psf", "estimate_stack_psf"]


def estimate_psf(ccd, *, fwhm_guess=None, snr=5.0, max_stars=200, min_stars=3,
                 saturation=None):
    """A Gaussian PSF fitted to the point sources of one image.

    The stars are selected as `astrosr.psf.stars` describes: candidates
    above ``snr`` sky sigma, saturated stars (flat tops, the header's
    ``SATURATE``/``SATLEVEL`` or ``saturation=``), defects narrower than any
    PSF, blends and galaxies rejected, and the narrowest width that many
    sources share taken as the PSF's. Each is fitted with an elliptical
    Gaussian integrated over the pixels, so the result is the PSF before
    pixel integration, as the observation model wants it. When the width
    found differs from ``fwhm_guess`` by more than 30%, the selection is
    repeated with the width found.

    Parameters
    ----------
    ccd : `~astropy.nddata.NDData` or array
        The image (input pixels). Masked, NaN and infinite pixels are not used.
    fwhm_guess : float, optional
        FWHM of the stars in pixels, for the star finder; default 3, then
        the width measured.
    snr : float
        Least peak of a candidate, in sky-noise sigma.
    max_stars : int
        The candidates of highest SNR that are fitted.
    min_stars : int
        Least number of stars that agree on the width (more are needed when
        they scatter: as many as make the median width good to 5%).
    saturation : float, optional
        Saturation level in data units (default: from the header, else the
        image's maximum when several pixels share it).

    Returns
    -------
    GaussianPSF
        In pixels of the image; ``fit_info`` holds ``n_stars``, ``scatter``
        (relative, of the members' widths), ``n_candidates`` and the stars'
        ``x``, ``y``.

    Raises
    ------
    ValueError
        If too few point sources agree on a width; the message says what to pass instead.
    """
    snr, max_stars, min_stars = _check_selection(snr, max_stars, min_stars)
    ccd = ccd if hasattr(ccd, "data") else _Plain(ccd)
    sub, mask, std = sky_subtracted(ccd)
    saturated = _saturated(ccd, saturation)
    guess = 3.0 if fwhm_guess is None else check_positive(fwhm_guess, "fwhm_guess")
    try:
        stars = psf_stars(sub, mask, std, saturated, fwhm=guess, snr=snr, max_stars=max_stars,
                          min_stars=min_stars)
        found = observed_fwhm(stars["sigma_psf"])
        if abs(found / guess - 1.0) > 0.3:
            stars = psf_stars(sub, mask, std, saturated, fwhm=found, snr=snr,
                              max_stars=max_stars, min_stars=min_stars)
    except ValueError as exc:
        raise ValueError(f"estimate_psf: no PSF from the stars of the image: {exc}; "
                         f"{ADVICE}") from None
    psf = GaussianPSF(stars["sigma_psf"])
    psf.fit_info = {"n_stars": len(stars["x"]), "scatter": stars["scatter"],
                    "n_candidates": stars["n_candidates"], "x": stars["x"], "y": stars["y"]}
    return psf


class _Plain:
    """An array seen as a frame without mask or header."""

    def __init__(self, data):
        self.data = np.asarray(data, dtype=float)
        self.mask = None
        self.meta = {}


def _check_selection(snr, max_stars, min_stars):
    if not (np.isfinite(snr) and snr > 0):
        raise ValueError(f"snr must be a positive number, got {snr}")
    for name, value, least in (("max_stars", max_stars, 3), ("min_stars", min_stars, 1)):
        if int(value) != value or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value}")
    return float(snr), int(max_stars), int(min_stars)


def observed_fwhm(sigma):
    """FWHM a star finder sees: the PSF's width with the pixel's 1/12 variance added.

    Parameters
    ----------
    sigma : float or array_like
        Gaussian sigma of the PSF, input pixels (before the pixel response).

    Returns
    -------
    float
        FWHM, input pixels, of the PSF convolved with the pixel (variance
        ``sigma**2 + 1/12``).
    """
    return float(2.0 * np.sqrt(2.0 * np.log(2.0)) * np.sqrt(sigma ** 2 + 1.0 / 12.0))


# --------------------------------------------------------------------------- PSF from a stack

#: Half-width of the star stamps, in FWHM (plus one pixel): a circle of that
#: radius holds all but 0.5% of a beta=3 Moffat's light; ``size=`` asks for
#: larger stamps.
_STAMP_RADIUS = 3.5
#: Richardson-Lucy iterations that remove the pixel response from the ePSF
#: (converged to 0.3% in FWHM for a Moffat of FWHM 1.5 pixels, better for wider PSFs).
_PIXEL_RL_ITER = 20
#: Fraction of the PSF's flux the default kernel size holds.
_FLUX_FRACTION = 0.999
#: Largest default half-width of the returned kernel, in input pixels.
_MAX_HALF_WIDTH = 25
#: A neighbour in a star's stamp brighter than this fraction of its peak rejects it.
_NEIGHBOUR_RATIO = 0.1
#: Star images needed per ePSF (per half of the stack) per fine pixel of an
#: input pixel: with ``n`` stamps each fine pixel of the ePSF gets about
#: ``n / scale**2`` samples, whose median it is.
_STAMPS_PER_PHASE = 5


def estimate_stack_psf(frames, shifts, *, scale, fwhm_guess=None, snr=30.0, max_stars=100,
                       size=None, saturation=None, hdu=None):
    """The PSF on the fine grid, measured on the stars of a dithered stack.

    The stack's dithers put each star at a different sub-pixel phase in each
    frame, so together the frames sample the PSF ``scale`` times finer than
    one frame does: the effective PSF (Anderson & King 2000) is built on the
    fine grid from every frame's stamps, the pixel response is removed, and
    the result is what `astrosr.fuse` with ``method="reconstruct"`` wants.

    1. Each frame's sky is subtracted (its sigma-clipped median).
    2. Stars are found in the reference frame (the frame with the smallest
       shift) with `photutils.detection.DAOStarFinder`; kept are those whose
       peak is at least ``snr`` times the sky noise, below the saturation
       level (header ``SATURATE``/``SATLEVEL``, when present), with no
       other source (above 5 sigma) within the isolation radius (the stamp
       half-width plus one FWHM, at least 3 FWHM), whose stamp is inside
       every frame and holds no saturated pixel, and with no masked pixel
       within 1.5 FWHM of the centre in the reference frame (masked pixels
       elsewhere are left out of the fit). The ``max_stars`` brightest are
       used.
    3. Each star is placed in every frame at its shifted position
       ``(x + dx, y + dy)`` and cut out (`photutils.psf.extract_stars`,
       stamps of half-width 3.5 FWHM + 1 pixel), and effective PSFs are
       built with `photutils.psf.EPSFBuilder` (``oversampling=scale``, star
       centres re-fitted) from the even and from the odd frames.
    4. Their mean is the ePSF; half their difference is its noise, which
       sets a Wiener filter (ring by ring in spatial frequency) that keeps
       what the data measure. The faint wings (below 5 sigma per pixel) are
       replaced by their azimuthal mean and cut where that is no longer
       significant.
    5. The ePSF is the PSF convolved with the ``scale x scale`` box of an
       input pixel; the box is removed by Richardson-Lucy deconvolution
       (20 iterations), the result is centred (centroid on the central
       pixel within 0.05 fine pixels), cropped, clipped at 0 and normalised.

    Parameters
    ----------
    frames : list of CCDData/NDData/paths, or 3-D array
        The stack (see `astrosr.nddata.as_frames`). Masked, NaN and infinite
        pixels are not used.
    shifts : `~astropy.table.Table` with ``dx``, ``dy`` or array (n, 2)
        Shift of each frame in input pixels (as from
        `astrosr.register_stack`): a source at ``(x, y)`` in the reference
        frame is at ``(x + dx, y + dy)`` in frame i.
    scale : int
        Fine pixels per input pixel: the ``scale`` of the fusion.
    fwhm_guess : float, optional
        FWHM of the stars in input pixels, for the star finder. Default:
        measured on the reference frame with `estimate_psf`.
    snr : float
        Least peak of a PSF star, in sky-noise sigma.
    max_stars : int
        The brightest isolated stars used (each gives one stamp per frame).
    saturation : float, optional
        Saturation level in data units (default: the header's ``SATURATE``,
        ``SATLEVEL`` or ``SATURATION``, else the maximum when
        several pixels share it).
    size : int, optional
        Odd side of the returned kernel in fine pixels (the stamps are made
        large enough for it). Default: large enough to hold 99.9% of the
        measured PSF's flux, at most the extent of the stamps and 25 input
        pixels from the centre. (With 99.5%, the flux left out, renormalised
        into the core, made `astrosr.fuse` reconstruct point sources up to
        1.6 dB worse in PSNR on our test stacks.)
    hdu : int or str, optional
        HDU to read when ``frames`` are paths.

    Returns
    -------
    ArrayPSF
        ``oversampling=scale``; the array is odd-sized, centred, >= 0 and
        sums to 1.

    Raises
    ------
    ValueError
        If shifts and frames differ in length, ``scale``, ``snr``,
        ``max_stars`` or ``size`` are invalid, or fewer than 3 isolated
        stars are found.

    Notes
    -----
    The pixel response is removed by Richardson-Lucy iterations rather than
    by a Fourier division: the box's transfer function has exact zeros (at
    multiples of ``1 / scale`` cycles per fine pixel), where a division, even
    regularised, needs a tuned floor and rings (clipped at 0, the rings make
    a halo of false flux); Richardson-Lucy keeps the kernel non-negative and
    its flux fixed, needs no parameter but the number of iterations, and
    leaves alone the frequencies the box removed (where a PSF wider than a
    pixel has almost no power anyway). On a noisy ePSF it sharpens the noise
    into a false core (the FWHM 1-3% small after 30 iterations on our test
    stacks), hence the Wiener filter first, whose noise level is measured,
    not tuned. With one frame there is no second half: no filter.

    The star field's own light (PSF wings overlapping between stars) is
    taken for sky by step 1, so far wings of a crowded field come out
    fainter than they are.
    """
    from ..nddata import as_frames, shift_array

    scale = check_scale(scale)
    if not (np.isfinite(snr) and snr > 0):
        raise ValueError(f"snr must be a positive number, got {snr}")
    if int(max_stars) != max_stars or max_stars < 3:
        raise ValueError(f"max_stars must be an integer >= 3, got {max_stars}")
    if size is not None and (int(size) != size or size < 3 or size % 2 == 0):
        raise ValueError(f"size must be an odd integer >= 3 (fine pixels), got {size}")
    ccds = as_frames(frames, hdu=hdu)
    offsets = shift_array(shifts, len(ccds))
    images = [sky_subtracted(c) for c in ccds]
    ref = int(np.argmin(np.hypot(offsets[:, 0], offsets[:, 1])))
    sub, mask, std = images[ref]
    if fwhm_guess is None:
        fwhm = _measured_fwhm(sub, mask, snr)
    else:
        fwhm = check_positive(fwhm_guess, "fwhm_guess")
    half = int(np.ceil(_STAMP_RADIUS * fwhm)) + 1
    if size is not None:
        half = max(half, int(np.ceil((size // 2 + 1) / scale)))
    x, y = _isolated_stars(sub, mask, std, fwhm=fwhm, snr=snr, half=half,
                           saturated=_saturated(ccds[ref], saturation),
                           offsets=offsets - offsets[ref],
                           max_stars=int(max_stars))
    # Positions in the reference frame's own pixels -> every frame's pixels.
    x, y = x - offsets[ref, 0], y - offsets[ref, 1]
    # Two ePSFs from alternate frames: their mean is the ePSF, their difference
    # measures its noise (for the Wiener filter). One frame: one ePSF, unfiltered.
    halves = [(images[i::2], offsets[i::2]) for i in range(min(2, len(images)))]
    built = [_build_epsf(im, x, y, off, scale=scale, half=half) for im, off in halves]
    epsf = _smooth_wings(_denoised(built), scale)
    return ArrayPSF(_finish_kernel(_remove_pixel_response(epsf, scale), scale, size),
                    oversampling=scale)


def sky_subtracted(ccd):
    """A frame's data less its sky, its bad-pixel mask and its sky noise.

    Parameters
    ----------
    ccd : astropy.nddata.CCDData or NDData-like
        A frame: ``.data``, and an optional boolean ``.mask``.

    Returns
    -------
    sub : numpy.ndarray
        ``data - sky`` (float), 0 on bad pixels; the sky is the 3-sigma
        clipped median of the good pixels.
    mask : numpy.ndarray of bool
        Bad pixels: NaN, inf or masked.
    std : float
        Clipped standard deviation about the sky (the sky noise).

    Raises
    ------
    ValueError
        If the frame has no usable pixel, or no noise about its sky.
    """
    from astropy.stats import sigma_clipped_stats

    data = np.asarray(ccd.data, dtype=float)
    mask = ~np.isfinite(data)
    if getattr(ccd, "mask", None) is not None:
        mask |= np.asarray(ccd.mask, dtype=bool)
    if mask.all():
        raise ValueError("a frame has no usable pixel (all masked, NaN or inf): drop it from "
                         "frames and shifts")
    _, median, std = sigma_clipped_stats(data, mask=mask, sigma=3.0, maxiters=10)
    if not std > 0:
        raise ValueError("a frame has no noise about its sky (constant or empty): "
                         f"{ADVICE}")
    return np.where(mask, 0.0, data - median), mask, float(std)


def _saturated(ccd, level=None):
    """Saturated pixels of a frame and their neighbours (`astrosr.nddata.saturated_pixels`)."""
    return saturated_pixels(ccd.data, getattr(ccd, "meta", None), level, grow=1)


def _measured_fwhm(sub, mask, snr):
    """FWHM of the stars of a sky-subtracted frame, in pixels (pixel response included)."""
    frame = _Plain(np.where(mask, np.nan, sub))
    try:
        psf = estimate_psf(frame, snr=min(snr, 5.0))
    except ValueError as exc:
        reason = str(exc).split(": ", 2)[-1].split("; pass the PSF")[0]
        raise ValueError("estimate_stack_psf: fewer than 3 isolated stars agree on a FWHM in "
                         f"the reference frame ({reason}); give fwhm_guess=, or {ADVICE}"
                         ) from None
    return observed_fwhm(psf.sigma)


def _isolated_stars(sub, mask, std, *, fwhm, snr, half, saturated, offsets, max_stars):
    """(x, y) of the bright, isolated, unsaturated stars of the reference frame.

    ``offsets`` are the shifts of all frames relative to the reference frame.
    """
    from photutils.detection import DAOStarFinder

    # min_separation=fwhm: photutils 3 merges peaks closer than 2.5 FWHM by default, which
    # would let a close pair pass for one isolated star.
    found = DAOStarFinder(threshold=5.0 * std, fwhm=fwhm, exclude_border=False,
                          min_separation=fwhm)(sub, mask=mask)
    few = ("estimate_stack_psf: fewer than 3 isolated stars {what} in the reference frame "
           f"(peak >= snr={snr:g} sigma, unsaturated, no comparable neighbour within the "
           "stamp, stamp inside every frame); ")
    if found is None or len(found) < 3:
        raise ValueError(few.format(what="found") + ADVICE)
    x = _column(found, "x_centroid", "xcentroid")
    y = _column(found, "y_centroid", "ycentroid")
    peak = _column(found, "peak")
    ny, nx = sub.shape
    # The stamp must lie inside every frame (with a pixel to spare for re-centring).
    lo = half + 1 - offsets.min(axis=0)
    hi = np.array([nx, ny]) - half - 2 - offsets.max(axis=0)
    inside = (x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1])
    # Isolated: no source at all within 3 FWHM (it would bias the centre and flux
    # fits), and none brighter than _NEIGHBOUR_RATIO of the star within the stamp
    # (plus a FWHM); fainter ones differ from stamp to stamp and are sigma-clipped.
    d = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    np.fill_diagonal(d, np.inf)
    comparable = peak[None, :] > _NEIGHBOUR_RATIO * peak[:, None]
    crowded = ((d < 3.0 * fwhm) | ((d < half + fwhm) & comparable)).any(axis=1)
    keep = inside & (peak >= snr * std) & ~crowded
    # Saturated pixels anywhere in the stamp, or masked ones in the core, reject a
    # star; masked pixels further out are only left out (extract_stars weights them 0).
    core = int(np.ceil(1.5 * fwhm))
    order = [i for i in np.argsort(-peak) if keep[i]]
    good = []
    for i in order:
        cy, cx = int(np.rint(y[i])), int(np.rint(x[i]))
        if not (saturated[cy - half:cy + half + 1, cx - half:cx + half + 1].any()
                or mask[cy - core:cy + core + 1, cx - core:cx + core + 1].any()):
            good.append(i)
        if len(good) == max_stars:
            break
    if len(good) < 3:
        raise ValueError(few.format(what=f"({len(good)}) usable") + ADVICE)
    return x[good], y[good]


def _build_epsf(images, x, y, offsets, *, scale, half):
    """Oversampled effective PSF (Anderson & King) from every frame's stamps, via photutils."""
    import warnings

    from astropy.nddata import NDData
    from astropy.table import Table
    from photutils.psf import EPSFBuilder, extract_stars

    data, catalogs = [], []
    for (sub, mask, _), (dx, dy) in zip(images, offsets):
        data.append(NDData(sub, mask=mask))
        catalogs.append(Table({"x": x + dx, "y": y + dy}))
    with warnings.catch_warnings():
        # Stamps cut by the frame's edge or with masked pixels are reported and skipped.
        warnings.simplefilter("ignore")
        stars = extract_stars(data, catalogs, size=2 * half + 1)
        need = _STAMPS_PER_PHASE * scale ** 2
        if len(stars.all_stars) < need:
            raise ValueError(
                f"estimate_stack_psf: {len(stars.all_stars)} star images (isolated stars x "
                f"frames) in {len(images)} frame(s), too few to sample the PSF {scale} times "
                f"finer than the pixels: {need} are needed from the even frames and {need} "
                f"from the odd ones; add frames or stars, or {ADVICE}")
        builder = EPSFBuilder(oversampling=scale, maxiters=_EPSF_ITER, progress_bar=False)
        with _fast_gap_filling():
            epsf, _ = builder(stars)
    return np.asarray(epsf.data, dtype=float)


#: EPSFBuilder iterations (photutils' default is 10; star centres from the
#: known shifts are good from the start, and the ePSF settles in a few).
_EPSF_ITER = 5
_PATCH_LOCK = threading.Lock()


@contextlib.contextmanager
def _fast_gap_filling():
    """Fill the ePSF grid's unsampled pixels by nearest neighbour inside EPSFBuilder.

    With an even oversampling the outermost rows of photutils' ePSF grid are
    reached only by stars at extreme sub-pixel phases, so a corner pixel is
    often unsampled; photutils then fills it with a Clough-Tocher
    interpolation over the whole grid, whose Delaunay triangulation of a
    regular grid takes from 0.3 to 15 s, at every iteration. These pixels
    are at the edge of the stamps, where the ePSF is ~0: the nearest sample
    does as well. The patch is held under a lock and undone on exit; with a
    photutils that does not have the helper, nothing is patched.
    """
    from photutils.psf import epsf_builder

    original = getattr(epsf_builder, "_interpolate_missing_data", None)
    if original is None:  # pragma: no cover - another photutils layout
        yield
        return

    def nearest(data, mask, *args, **kwargs):
        return original(data, mask, method="nearest")

    with _PATCH_LOCK:
        epsf_builder._interpolate_missing_data = nearest
        try:
            yield
        finally:
            epsf_builder._interpolate_missing_data = original


def _denoised(epsfs):
    """Mean of the ePSFs built from alternate frames, Wiener-filtered with their difference.

    The two halves of the stack give independent estimates of the same
    ePSF: half their difference has the spectrum of the noise of their mean.
    Each ring of spatial frequencies is scaled by ``max(P_mean - P_noise, 0)
    / P_mean`` (radially averaged powers), which keeps the frequencies the
    data measure and drops those that are noise; without it, the pixel
    deconvolution turns the noise into a sharper, false core (the FWHM comes
    out 1-3% small after 30 Richardson-Lucy iterations on our test stacks).
    """
    arrays = []
    for e in epsfs:
        e = np.asarray(e, dtype=float)
        arrays.append(_recentred(e / e.sum(), clip=False))
    shape = np.max([a.shape for a in arrays], axis=0)
    arrays = [np.pad(a, [((n - m) // 2, (n - m) // 2) for n, m in zip(shape, a.shape)])
              for a in arrays]
    mean = np.mean(arrays, axis=0)
    if len(arrays) < 2:
        return mean
    noise = (arrays[0] - arrays[1]) / 2.0
    f_mean, f_noise = fft.fft2(mean), fft.fft2(noise)
    fy = fft.fftfreq(shape[0])[:, None]
    fx = fft.fftfreq(shape[1])[None, :]
    # Rings two frequency samples wide.
    ring = np.floor(np.hypot(fx, fy) * max(shape) / 2.0).astype(int).ravel()
    count = np.maximum(np.bincount(ring), 1)
    p_mean = np.bincount(ring, np.abs(f_mean.ravel()) ** 2) / count
    p_noise = np.bincount(ring, np.abs(f_noise.ravel()) ** 2) / count
    gain = np.clip(p_mean - p_noise, 0.0, None) / np.maximum(p_mean, 1e-300)
    return fft.ifft2(f_mean * gain[ring].reshape(shape)).real


def _smooth_wings(epsf, scale):
    """The ePSF with its faint wings replaced by their azimuthal mean, cut where it ends.

    Far from the core each ePSF pixel is mostly noise, and clipping it at 0
    (as the deconvolution and the kernel need) would add a halo of false
    flux (percents of the total over a stamp). Where the azimuthally averaged
    profile is below 5 times the pixel noise (measured on the stamp's
    border) the pixels are blended into that profile, fully below 2 sigma;
    beyond the first radius where the profile is no longer significant (2
    sigma of a ring's mean) the ePSF is set to 0. The core, where the data
    are good, keeps its shape (asymmetries, spikes).
    """
    e = np.asarray(epsf, dtype=float)
    e = e / e.sum()
    ny, nx = e.shape
    yy, xx = np.indices(e.shape)
    edge = np.minimum.reduce([yy, xx, ny - 1 - yy, nx - 1 - xx])
    band = e[edge < scale]
    sigma = 1.4826 * np.median(np.abs(band - np.median(band)))
    if not sigma > 0:
        return np.clip(e, 0.0, None)
    r = np.hypot(xx - (nx - 1) / 2.0, yy - (ny - 1) / 2.0)
    rbin = np.floor(r + 0.5).astype(int)
    count = np.bincount(rbin.ravel())
    profile = np.bincount(rbin.ravel(), e.ravel()) / np.maximum(count, 1)
    faint = np.nonzero(profile < 2.0 * sigma / np.sqrt(np.maximum(count, 1)))[0]
    end = faint[0] if len(faint) else len(profile)
    model = np.interp(r, np.arange(len(profile)), np.clip(profile, 0.0, None))
    w = np.clip((model / sigma - 2.0) / 3.0, 0.0, 1.0)
    out = w * e + (1.0 - w) * model
    out[rbin >= end] = 0.0
    return np.clip(out, 0.0, None)


def _remove_pixel_response(epsf, scale, n_iter=_PIXEL_RL_ITER):
    """Deconvolve the ``scale x scale`` box of an input pixel from an oversampled ePSF.

    Richardson-Lucy on the non-negative part of the ePSF (see the notes of
    `estimate_stack_psf` for why). For an even ``scale`` the box has no
    central pixel: the kernel used is the box in an odd array, off centre by
    half a fine pixel, and the result is re-centred afterwards.
    """
    from scipy.signal import fftconvolve

    e = np.clip(epsf, 0.0, None)
    total = e.sum()
    if not total > 0:
        raise ValueError(f"estimate_stack_psf: the effective PSF is empty; {ADVICE}")
    e = np.pad(e / total, scale)
    if scale == 1:
        return e
    side = scale + 1 - scale % 2
    box = np.zeros((side, side))
    box[:scale, :scale] = 1.0 / scale ** 2
    flipped = box[::-1, ::-1]
    floor = 1e-12 * e.max()
    u = e.copy()
    for _ in range(n_iter):
        model = fftconvolve(u, box, mode="same")
        ratio = np.where(model > floor, e / np.maximum(model, floor), 0.0)
        u = np.clip(u * fftconvolve(ratio, flipped, mode="same"), 0.0, None)
    return u / u.sum()


def _centroid_offset(a):
    yy, xx = np.indices(a.shape)
    total = a.sum()
    return ((a * xx).sum() / total - a.shape[1] // 2, (a * yy).sum() / total - a.shape[0] // 2)


def _finish_kernel(a, scale, size, tol=0.02):
    """Centre (centroid on the central pixel), crop to ``size``, clip at 0, normalise."""
    # A square, odd array about the core (the peak of the box-smoothed kernel).
    cy, cx = np.unravel_index(np.argmax(ndimage.uniform_filter(a, scale)), a.shape)
    h = min(cy, cx, a.shape[0] - 1 - cy, a.shape[1] - 1 - cx)
    full = _recentred(a[cy - h:cy + h + 1, cx - h:cx + h + 1])
    half = size // 2 if size is not None else _enclosing_half_width(full, scale)
    for _ in range(8):
        k = np.clip(_crop_or_pad(full, half), 0.0, None)
        k = k / k.sum()
        ox, oy = _centroid_offset(k)
        if abs(ox) <= tol and abs(oy) <= tol:
            break
        full = _recentred(full, (ox, oy))
    return k


def _recentred(a, offset=None, *, clip=True):
    """``a`` Fourier-shifted by minus ``offset`` (fine pixels; default its centroid's).

    Same shape; clipped at 0 unless ``clip`` is False.
    """
    ox, oy = _centroid_offset(a) if offset is None else offset
    if ox == 0 and oy == 0:
        return np.clip(a, 0.0, None) if clip else a.copy()
    pad = int(np.ceil(max(abs(ox), abs(oy)))) + 2
    out = fourier_shifted(a, (-ox, -oy))[pad:-pad, pad:-pad]
    return np.clip(out, 0.0, None) if clip else out


def _enclosing_half_width(a, scale):
    """Half-width (fine pixels) of the square holding _FLUX_FRACTION of the flux, capped."""
    c = a.shape[0] // 2
    yy, xx = np.indices(a.shape) - c
    r = np.maximum(np.abs(xx), np.abs(yy)).ravel()
    order = np.argsort(r, kind="stable")
    cum = np.cumsum(a.ravel()[order]) / a.sum()
    half = int(r[order][min(np.searchsorted(cum, _FLUX_FRACTION), len(cum) - 1)])
    return int(min(max(half, scale), c, _MAX_HALF_WIDTH * scale))


def _crop_or_pad(a, half):
    c = a.shape[0] // 2
    if half <= c:
        return a[c - half:c + half + 1, c - half:c + half + 1].copy()
    return np.pad(a, half - c)
