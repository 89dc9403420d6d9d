"""Figures of merit: against a known truth, and of the artefacts a user sees.

Against a truth (`psnr`, `ssim`, `flux_ratio`, `photometric_error`, `fwhm`)
they score a reconstruction on a simulated sky (benchmarks, tests,
``astrosr evaluate``). PSNR uses `skimage.metrics.peak_signal_noise_ratio`
with the data range of the truth on the scored region, so that every method
is scored with the same peak.

Without a truth, three figures look for what a user sees in a
super-resolved image (real skies have no truth): `ellipticity` (stars made
elongated), `dark_ring_depth` (dark moats round stars, the ringing of a
deconvolution) and `periodic_peak` (a grid pattern: the pixel shuffle of
the network, the seams of its tiles).
"""

import numpy as np

__all__ = ["interior", "psnr", "flux_ratio", "ssim", "isolated_stars", "photometric_error", "fwhm",
           "detected_stars", "ellipticity", "dark_ring_depth", "periodic_peak"]


def interior(image, margin):
    """The image without ``margin`` pixels on every side (where edge effects live)."""
    image = np.asarray(getattr(image, "data", image), dtype=float)
    if margin <= 0:
        return image
    return image[margin:-margin, margin:-margin]


def psnr(estimate, truth, *, margin=0):
    """Peak signal-to-noise ratio [dB] of ``estimate`` against ``truth``.

    Parameters
    ----------
    estimate, truth : array_like or NDData
        Images on the same grid and in the same units.
    margin : int
        Pixels left out at every edge (both images).
    """
    from skimage.metrics import peak_signal_noise_ratio

    est, ref = interior(estimate, margin), interior(truth, margin)
    if est.shape != ref.shape:
        raise ValueError(f"estimate {est.shape} and truth {ref.shape} differ in shape")
    return float(peak_signal_noise_ratio(ref, est, data_range=float(np.ptp(ref))))


def flux_ratio(estimate, truth, *, margin=0):
    """Total flux of ``estimate`` over that of ``truth`` (per-pixel units, same grid)."""
    return float(np.sum(interior(estimate, margin)) / np.sum(interior(truth, margin)))


def ssim(estimate, truth, *, margin=0):
    """Structural similarity (`skimage.metrics.structural_similarity`), truth's data range."""
    from skimage.metrics import structural_similarity

    est, ref = interior(estimate, margin), interior(truth, margin)
    return float(structural_similarity(ref, est, data_range=float(np.ptp(ref))))


def isolated_stars(truth, *, radius, threshold=None, isolation=None):
    """Positions ``(x, y)`` of isolated point sources in a truth image.

    Sources are the local maxima above ``threshold`` (default: 20 times the
    truth's robust spread above its median) with no brighter or comparable
    source within ``isolation`` pixels (default ``3 * radius``), and at least
    ``radius`` from the edges.
    """
    from astropy.stats import sigma_clipped_stats
    from scipy import ndimage

    img = np.asarray(getattr(truth, "data", truth), dtype=float)
    _, med, std = sigma_clipped_stats(img)
    if threshold is None:
        threshold = med + 20.0 * max(std, 1e-12)
    peaks = (img == ndimage.maximum_filter(img, size=3)) & (img > threshold)
    ys, xs = np.nonzero(peaks)
    isolation = 3.0 * radius if isolation is None else isolation
    all_y, all_x = np.nonzero((img == ndimage.maximum_filter(img, size=3))
                              & (img > med + 3.0 * max(std, 1e-12)))
    keep = []
    ny, nx = img.shape
    for x, y in zip(xs, ys):
        d = np.hypot(all_x - x, all_y - y)
        crowded = np.any((d > 0) & (d < isolation) & (img[all_y, all_x] > 0.1 * img[y, x]))
        inside = radius <= x < nx - radius and radius <= y < ny - radius
        if inside and not crowded:
            keep.append((x, y))
    return np.array(keep, dtype=float).reshape(-1, 2)


def detected_stars(image, *, fwhm, noise, snr=20.0, isolation=10.0, edge=12,
                   saturation=np.inf):
    """``(x, y)`` of bright, unsaturated, isolated stars found on an observed image.

    `isolated_stars` reads a truth; this finds stars on data, with
    photutils' `~photutils.detection.DAOStarFinder` (``snr`` times
    ``noise`` above the median), and keeps those with no other detection
    within ``isolation`` pixels, at least ``edge`` pixels from the borders,
    and whose 3x3 peak stays below ``saturation``. NaN pixels are read as
    the median.

    Parameters
    ----------
    image : array_like
    fwhm : float
        The stars' FWHM guess (pixels), for the finder's kernel.
    noise : float
        The image's noise per pixel.
    snr, isolation, edge, saturation
        As above.
    """
    from photutils.detection import DAOStarFinder
    from scipy import ndimage

    data = np.asarray(getattr(image, "data", image), dtype=float)
    med = np.nanmedian(data)
    filled = np.nan_to_num(data, nan=med)
    found = DAOStarFinder(fwhm=fwhm, threshold=snr * noise)(filled - med)
    if found is None:
        return np.zeros((0, 2))
    names = [("x_centroid", "y_centroid") if "x_centroid" in found.colnames
             else ("xcentroid", "ycentroid")][0]
    xy = np.column_stack([np.asarray(found[names[0]]), np.asarray(found[names[1]])])
    dist = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(dist, np.inf)
    labels = np.zeros(data.shape, dtype=int)
    for i, (x, y) in enumerate(np.round(xy).astype(int)):
        labels[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] = i + 1
    peak = np.asarray(ndimage.maximum(filled, labels, np.arange(1, len(xy) + 1)))
    ny, nx = data.shape
    keep = ((dist.min(axis=1) > isolation) & (xy[:, 0] >= edge) & (xy[:, 1] >= edge)
            & (xy[:, 0] < nx - edge) & (xy[:, 1] < ny - edge) & (peak < saturation))
    return xy[keep]


def photometric_error(estimate, truth, positions, *, radius):
    """Median relative error of aperture fluxes of ``estimate`` against ``truth``.

    Circular apertures of ``radius`` pixels at ``positions`` (photutils),
    the same on both images; returns ``median(|F_est - F_true| / F_true)``.
    """
    from photutils.aperture import CircularAperture, aperture_photometry

    if len(positions) == 0:
        return float("nan")
    ap = CircularAperture(positions, r=radius)
    est = np.asarray(aperture_photometry(interior(estimate, 0), ap)["aperture_sum"])
    ref = np.asarray(aperture_photometry(interior(truth, 0), ap)["aperture_sum"])
    return float(np.median(np.abs(est - ref) / np.abs(ref)))


def fwhm(image, positions, *, box=15):
    """Median FWHM [pixels] of the sources at ``positions``, from 2-D Gaussian fits."""
    from astropy.modeling import fitting, models

    img = np.asarray(getattr(image, "data", image), dtype=float)
    half = box // 2
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    fitter = fitting.LevMarLSQFitter()
    widths = []
    for x, y in np.asarray(positions, dtype=float):
        cx, cy = int(round(x)), int(round(y))
        cut = img[cy - half:cy + half + 1, cx - half:cx + half + 1]
        if cut.shape != yy.shape:
            continue
        g = models.Gaussian2D(cut.max(), x - cx, y - cy, 2.0, 2.0) + models.Const2D(0.0)
        fit = fitter(g, xx, yy, cut)
        widths.append(2.3548 * np.sqrt(abs(fit.x_stddev_0.value * fit.y_stddev_0.value)))
    return float(np.median(widths)) if widths else float("nan")


def _plain(image):
    return np.asarray(getattr(image, "data", image), dtype=float)


def _cutout(img, x, y, half):
    """``(cut, x, y)``: the square of side ``2 half + 1`` round ``(x, y)``, the position in it.

    None where the square leaves the image.
    """
    cx, cy = int(round(x)), int(round(y))
    ny, nx = img.shape
    if cx - half < 0 or cy - half < 0 or cx + half >= nx or cy + half >= ny:
        return None
    cut = img[cy - half:cy + half + 1, cx - half:cx + half + 1]
    return cut, x - cx + half, y - cy + half


def _border_median(cut):
    return np.median(np.concatenate([cut[0], cut[-1], cut[1:-1, 0], cut[1:-1, -1]]))


def _moments(cut, x, y, n_iter=30):
    """Centre and 2x2 covariance ``(x, y, cov)`` of a source in a sky-subtracted cutout.

    Moments ``M`` weighted by a circular Gaussian of variance ``s^2``,
    recentred and resized (to the source's own size, ``s`` from 1 pixel to a
    quarter of the cutout) at each step. The weight's effect is taken out,
    exactly for a Gaussian source (the inverse covariances of a product of
    Gaussians add): ``cov^-1 = M^-1 - I / s^2``. Weighted rather than the
    plain moments of photutils' `~photutils.morphology.data_properties`:
    plain moments of a cutout are dominated by the noise of its outer pixels
    and biased by its edges. Returns None when the moments are not those of
    a source (noise, a 1-D or empty cutout).
    """
    yy, xx = np.indices(cut.shape, dtype=float)
    s2 = (cut.shape[0] / 8.0) ** 2
    cov = None
    for _ in range(n_iter):
        w = cut * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2.0 * s2))
        total = w.sum()
        if not total > 0:
            return None
        x_new, y_new = (w * xx).sum() / total, (w * yy).sum() / total
        dx, dy = xx - x_new, yy - y_new
        m = np.array([[(w * dx * dx).sum(), (w * dx * dy).sum()],
                      [(w * dx * dy).sum(), (w * dy * dy).sum()]]) / total
        if not np.linalg.det(m) > 0:
            return None
        inv = np.linalg.inv(m) - np.eye(2) / s2
        if np.any(np.linalg.eigvalsh(inv) <= 0):
            return None
        cov, moved = np.linalg.inv(inv), np.hypot(x_new - x, y_new - y)
        x, y = x_new, y_new
        s2_new = np.clip(np.sqrt(np.linalg.det(cov)), 1.0, (cut.shape[0] / 4.0) ** 2)
        if moved < 1e-6 and abs(s2_new - s2) < 1e-6 * s2:
            break
        s2 = s2_new
    return x, y, cov


def _star_moments(img, x, y, box):
    """``_moments`` of the star at ``(x, y)`` in a ``box`` cutout less its border's median."""
    found = _cutout(img, x, y, int(box) // 2)
    if found is None:
        return None
    cut, cx, cy = found
    if not np.all(np.isfinite(cut)):
        return None
    return _moments(cut - _border_median(cut), cx, cy)


def ellipticity(image, positions, *, box=15):
    """Ellipticity ``e = 1 - b/a`` of the stars at ``positions``.

    ``a`` and ``b`` are the square roots of the eigenvalues of each star's
    second-moment matrix, measured with a circular Gaussian weight fitted to
    the star's size (adaptive moments) and corrected for that weight (exact
    for a Gaussian star), in a ``box`` cutout less the median of its border
    pixels. An elliptical Gaussian of axis ratio ``q`` gives ``1 - q`` at
    any angle and sub-pixel position; a round star about 0 (plus noise).

    Parameters
    ----------
    image : array_like or NDData
        The image.
    positions : array_like, shape (n, 2)
        ``(x, y)`` of the stars (0-based pixel centres).
    box : int
        Side of the cutout (pixels, odd): several FWHM, few neighbours.

    Returns
    -------
    ndarray, shape (n,)
        One value per star; NaN where the cutout leaves the image or the
        moments are not those of a source.
    """
    img = _plain(image)
    out = np.full(len(positions), np.nan)
    for i, (x, y) in enumerate(np.asarray(positions, dtype=float).reshape(-1, 2)):
        found = _star_moments(img, x, y, box)
        if found is not None:
            small, large = np.linalg.eigvalsh(found[2])
            out[i] = 1.0 - np.sqrt(small / large)
    return out


def _star_fwhm(img, x, y):
    """FWHM [pixels] of a star from its moments, the cutout grown to six FWHM; NaN if none.

    Where a larger cutout would leave the image, the last one's FWHM stands.
    """
    fwhm = np.nan
    for box in (15, 31, 63, 127):
        found = _star_moments(img, x, y, box)
        if found is None:
            return fwhm
        fwhm = 2.3548 * np.linalg.det(found[2]) ** 0.25
        if 6.0 * fwhm <= box:
            return fwhm
    return fwhm


def _ring_depth(img, noise2, x, y, edges):
    """Largest ``(sky - annulus mean) / (noise / sqrt(n))`` over the annuli between ``edges``."""
    sky_out = 1.5 * edges[-1]
    ny, nx = img.shape
    y0, y1 = max(int(y - sky_out), 0), min(int(y + sky_out) + 2, ny)
    x0, x1 = max(int(x - sky_out), 0), min(int(x + sky_out) + 2, nx)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    dist = np.hypot(xx - x, yy - y)
    cut, var = img[y0:y1, x0:x1], noise2[y0:y1, x0:x1]
    sky_pixels = cut[(dist >= edges[-1]) & (dist < sky_out)]
    label = np.digitize(dist, edges).ravel()  # 1..len(edges)-1: inside an annulus
    n = np.bincount(label, minlength=len(edges) + 1)[1:len(edges)]
    total = np.bincount(label, weights=cut.ravel(), minlength=len(edges) + 1)[1:len(edges)]
    v = np.bincount(label, weights=var.ravel(), minlength=len(edges) + 1)[1:len(edges)]
    if sky_pixels.size == 0 or not np.any(n > 0):
        return np.nan
    ok = n > 0
    # (sky - total / n) / (sqrt(v / n) / sqrt(n)), v / n the annulus's mean variance per pixel
    depth = (np.median(sky_pixels) * n[ok] - total[ok]) / np.sqrt(v[ok])
    return float(depth.max())


def dark_ring_depth(image, positions, *, noise, radii=None):
    """Depth of the darkest annulus round each star below the local sky, in sigma.

    For each star: annuli 1 pixel wide from one FWHM (the star's core: a
    Gaussian is down to 6% of its peak there) to four FWHM (FWHM from the
    star's second moments, as in `ellipticity`), or those of ``radii``;
    the local sky is the median of the annulus from the outermost radius to
    1.5 times it. The depth of an annulus is ``(sky - mean) / (sigma /
    sqrt(n))``, ``n`` its pixels and ``sigma`` the noise per pixel over it
    (root mean square): positive below the sky. The largest depth is
    returned: a clean star on a flat sky gives the largest of some noise
    deviates (about 2, rarely above 3); a dark ring such as the ringing of a
    deconvolution gives more. As guidance, above 3 is probably a dark ring
    (the noise alone of a clean star exceeds it about once in 50 stars, 4
    about once in 2000), or noise that is correlated (an interpolated image:
    give as ``noise`` the one that makes ``noise / sqrt(n)`` the noise of an
    annulus's mean).

    Parameters
    ----------
    image : array_like or NDData
        The image (not necessarily sky-subtracted).
    positions : array_like, shape (n, 2)
        ``(x, y)`` of the stars (0-based pixel centres); isolated ones.
    noise : float or array_like
        Noise (standard deviation) per pixel: a number, or an image of the
        shape of ``image``.
    radii : array_like, optional
        Edges of the annuli (pixels from the star, increasing), the same for
        every star, instead of the ones set by each star's FWHM.

    Returns
    -------
    ndarray, shape (n,)
        One depth per star (sigma); NaN where no annulus or sky is in the
        image or the star's FWHM could not be measured.
    """
    img = _plain(image)
    noise2 = np.broadcast_to(np.asarray(noise, dtype=float) ** 2, img.shape)
    if radii is not None:
        radii = np.asarray(radii, dtype=float)
        if radii.ndim != 1 or radii.size < 2 or np.any(np.diff(radii) <= 0) or radii[0] < 0:
            raise ValueError(f"radii must be at least two increasing radii >= 0, got {radii}")
    out = np.full(len(positions), np.nan)
    for i, (x, y) in enumerate(np.asarray(positions, dtype=float).reshape(-1, 2)):
        edges = radii
        if edges is None:
            fwhm = _star_fwhm(img, x, y)
            if not np.isfinite(fwhm):
                continue
            edges = np.arange(fwhm, 4.0 * fwhm + 1.0, 1.0)
        out[i] = _ring_depth(img, noise2, x, y, edges)
    return out


def _harmonic_bins(n, periods):
    """Frequency bins (integers mod ``n``) of the harmonics ``k / p``, ``k = 0..p-1``."""
    return [np.unique(np.round(np.arange(p) * n / p).astype(int) % n) for p in periods]


def _lattice(shape, periods):
    """``(periods, y bins, x bins)`` of the harmonics of each period on an FFT of ``shape``."""
    return periods, _harmonic_bins(shape[0], periods), _harmonic_bins(shape[1], periods)


#: Longest period whose harmonics are the whole lattice ``(k_x, k_y) / period``.
_LATTICE_PERIOD = 8


def _harmonics(shape, periods):
    """Boolean map of the harmonic bins of an FFT of ``shape``: ``(k_x / p, k_y / p)``.

    The whole lattice of combinations for periods up to ``_LATTICE_PERIOD``
    (a pixel-shuffle pattern; at most 63 harmonics), the two axes only for
    longer ones (tile seams: lines; a lattice of thousands of harmonics would
    raise the largest ratio of the noise alone).
    """
    peaks = np.zeros(shape, dtype=bool)
    for p, ky, kx in zip(*_lattice(shape, periods)):
        if p <= _LATTICE_PERIOD:
            peaks[np.ix_(ky, kx)] = True
        else:
            peaks[ky, 0] = True
            peaks[0, kx] = True
    peaks[0, 0] = False
    return peaks


def periodic_peak(image, period, *, width=3, exclude=None):
    """Largest power at the harmonics of a period over the power round it.

    The image less its mean, times a Hann window, is Fourier transformed
    (`scipy.fft`). At each harmonic of ``period`` (frequencies ``k / period``
    cycles per pixel, ``k = 1..period - 1``, along x and y, and their
    combinations ``(k_x, k_y) / period`` for periods up to 8 pixels) the
    power of the nearest frequency bin is divided by the median power of a
    ring of the same spatial frequency ``|f|`` (within ``width`` bins),
    without the harmonics and the two bins on each side of them. Harmonics
    within ``4 * width`` bins of zero frequency, where the sky's power
    changes too fast across a ring, are left out. Returns the largest ratio.

    Without a pattern the ratio at one harmonic is an exponential deviate of
    median 1 (``P(ratio > t) = 2**-t``), so the largest is about 3-12 for
    tens to hundreds of harmonics. As guidance, a ratio above 20 is a peak:
    a periodic pattern (the pixel shuffle of a network at period ``scale``,
    tile seams at the tile's period on the output grid).

    Parameters
    ----------
    image : array_like or NDData
        The image (finite values).
    period : int or sequence of int
        Period(s) in pixels, from 2 to half the image's smaller side; for a
        sequence, the largest ratio over all their harmonics.
    width : int
        Half-width (frequency bins) of the ring of each harmonic.
    exclude : int or sequence of int, optional
        Periods whose harmonics (the whole lattice) are not counted, nor used
        in the rings: those of the pixel shuffle when looking for tile
        seams, whose period is a multiple of it.

    Returns
    -------
    float
        The largest ratio (a few for no pattern; NaN if every harmonic is
        left out).
    """
    from scipy import fft, ndimage
    from scipy.signal.windows import hann

    img = _plain(image)
    periods = np.atleast_1d(period).astype(int)
    if img.ndim != 2 or not np.all(np.isfinite(img)):
        raise ValueError("image must be a 2-D array of finite values")
    excluded = np.atleast_1d([] if exclude is None else exclude).astype(int)
    if np.any(np.concatenate([periods, excluded]) < 2) or np.any(periods > min(img.shape) / 2):
        raise ValueError(f"period must be from 2 to {min(img.shape) // 2} pixels, got {period}"
                         f" (exclude={exclude})")
    ny, nx = img.shape
    window = np.outer(hann(ny, sym=False), hann(nx, sym=False))
    power = np.abs(fft.fft2((img - img.mean()) * window)) ** 2
    peaks = _harmonics(img.shape, periods)
    near = ndimage.maximum_filter(peaks, size=5, mode="wrap")
    if excluded.size:
        others = np.zeros(img.shape, dtype=bool)
        for p, ky, kx in zip(*_lattice(img.shape, excluded)):
            others[np.ix_(ky, kx)] = True
        peaks &= ~others
        near |= ndimage.maximum_filter(others, size=5, mode="wrap")
    near[0, 0] = True
    radius = np.hypot(*np.meshgrid(fft.fftfreq(nx) * nx, fft.fftfreq(ny) * nx))
    order = np.argsort(radius[~near])
    ring_r, ring_p = radius[~near][order], power[~near][order]
    ratios = []
    for r, p in zip(radius[peaks], power[peaks]):
        if r < 4 * width:
            continue
        lo, hi = np.searchsorted(ring_r, [r - width, r + width], side="left")
        if hi > lo:
            ratios.append(p / np.median(ring_p[lo:hi]))
    return float(max(ratios)) if ratios else float("nan")
