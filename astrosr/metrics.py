"""Figures of merit against a known truth: PSNR, flux ratio, consistency chi-square.

These score a reconstruction on a simulated sky (benchmarks, tests,
``astrosr evaluate``). PSNR uses `skimage.metrics.peak_signal_noise_ratio`
with the data range of the truth on the scored region, so that every method
is scored with the same peak.
"""

import numpy as np

__all__ = ["interior", "psnr", "flux_ratio"]


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
