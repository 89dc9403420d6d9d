"""Figures of merit against a known truth: PSNR, flux ratio, consistency chi-square.

These score a reconstruction on a simulated sky (benchmarks, tests,
``astrosr evaluate``). PSNR uses `skimage.metrics.peak_signal_noise_ratio`
with the data range of the truth on the scored region, so that every method
is scored with the same peak.
"""

import numpy as np

__all__ = ["interior", "psnr", "flux_ratio", "ssim", "isolated_stars", "photometric_error", "fwhm"]


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
