"""The point sources of an image that can measure its PSF: found, vetted, agreed on.

Shared by `astrosr.psf.estimate_psf` (one image) and the stack estimates. A
field rarely has many clean isolated stars: a plate is crowded, a deep field
is mostly galaxies, a survey image has saturated stars and hot pixels. So the
selection here does not ask for isolation first; it fits every bright
candidate and keeps those a point source explains:

1. Candidates: `photutils.detection.DAOStarFinder` peaks above ``snr`` times
   the sky noise, ranked by that SNR.
2. Rejected outright: stamps cut by the edge or holding masked pixels;
   saturated stars (`astrosr.nddata.saturated_pixels`, with ``saturation=``
   as the level; or a flat top: pixels of the core tied at its maximum); a brighter-than-half
   neighbour within the fit box.
3. Each survivor is fitted with an elliptical Gaussian integrated over the
   pixels, plus a constant, in a box of half-width 1.5 FWHM (at least 2
   pixels). Rejected: widths at the lower bound (a hot pixel or cosmic ray is
   narrower than any PSF the pixels can show), elongated fits (blends),
   residuals far above the candidates' median (blends, galaxies' structure).
4. Agreement: the PSF is the narrowest populous width. Galaxies are wider
   than the PSF, never narrower; stars pile up at one width. From the
   narrowest source where the density of log widths (kernel: the sources'
   median width error, 3-15%) reaches a quarter of its highest, a mean
   shift climbs to the nearest mode; the sources within two kernels (at
   least 5%) of it are the members, whose median width is the estimate.
   Enough members are required to make that median good to 5%: ``min_stars``
   (3) when they agree, more when they scatter.
   Where compact galaxies outnumber the point sources (a deep field), their
   width can win and the estimate comes out wide.
"""

import inspect
import warnings

import numpy as np
from scipy import optimize, special
from scipy.spatial import cKDTree

__all__ = []

#: Least intrinsic Gaussian sigma (input pixels) of a real star: below it, a defect.
MIN_SIGMA = 0.12
#: Largest ellipticity ``|sx - sy| / (sx + sy)`` of an accepted fit.
MAX_ELLIPTICITY = 0.2
#: Residual (rms per pixel, in sky sigma) above this many times the median rejects a fit.
RESIDUAL_CLIP = 2.5
#: Bounds of the kernel (in log width) of the width density: the sources' median error.
MIN_BANDWIDTH, MAX_BANDWIDTH = 0.03, 0.15
#: The mean shift starts at the narrowest source with this fraction of the densest's density.
START_FRACTION = 0.25
#: Least half-width (relative) of the members' width range (else two kernels).
MEMBER_TOLERANCE = 0.05
#: The standard error of the median width allowed (relative): more scatter needs more stars.
PRECISION = 0.05

#: What a user can pass instead, named in every failure of the estimates.
ADVICE = ("pass the PSF instead (Python: MultiFrameSR(psf=...), enhance(psf=...), e.g. "
          "astrosr.psf.GaussianPSF(1.2); command line: --psf gaussian:SIGMA or --psf FILE), or "
          "tune the star selection (Python: psf_options={'snr': 10, 'fwhm_guess': 2.5} or "
          "estimate_psf(..., snr=, fwhm_guess=); command line: --psf-snr, --fwhm-guess)")


def column(table, *names):
    """A column of a photutils table under its current or older name."""
    for name in names:
        if name in table.colnames:
            return np.asarray(table[name], dtype=float)
    raise KeyError(names[0])  # pragma: no cover - photutils API change


def psf_stars(sub, mask, std, saturated, *, fwhm, snr, max_stars, min_stars=3):
    """The point sources of a sky-subtracted image that agree on one PSF.

    Returns a dict: ``x``, ``y`` (pixels), ``sigma`` (intrinsic Gaussian
    sigma of each member, pixels), ``snr`` of the members, and ``sigma_psf``
    (their median), ``scatter`` (relative, robust), ``n_candidates``.
    Raises ValueError when too few agree.
    """
    cand = _candidates(sub, mask, std, saturated, fwhm=fwhm, snr=snr)
    if len(cand["x"]) == 0:
        raise ValueError(f"no star candidates above snr={snr:g} sky sigma that are unsaturated, "
                         "unmasked and inside the image")
    fits = _fitted(sub, std, cand, fwhm=fwhm, max_stars=max_stars)
    if len(fits["x"]) < min_stars:
        raise ValueError(f"{len(fits['x'])} of {len(cand['x'])} candidates fitted as point "
                         f"sources (fewer than {min_stars})")
    return _agreeing(fits, min_stars)


def _candidates(sub, mask, std, saturated, *, fwhm, snr):
    from photutils.detection import DAOStarFinder
    from photutils.utils.exceptions import NoDetectionsWarning

    # Sharpness/roundness limits are relaxed: defects and blends are judged by the fit.
    limits = ({"sharpness_range": (0.0, 3.0), "roundness_range": (-1.5, 1.5)}
              if "sharpness_range" in inspect.signature(DAOStarFinder).parameters
              else {"sharplo": 0.0, "sharphi": 3.0, "roundlo": -1.5, "roundhi": 1.5})
    finder = DAOStarFinder(threshold=snr * std, fwhm=fwhm, exclude_border=False,
                           min_separation=max(fwhm, 1.5), **limits)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)  # reported by the caller
        found = finder(sub, mask=mask)
    empty = {k: np.zeros(0) for k in ("x", "y", "peak")}
    if found is None or len(found) == 0:
        return empty
    x, y = column(found, "x_centroid", "xcentroid"), column(found, "y_centroid", "ycentroid")
    peak = column(found, "peak")
    half = _half(fwhm)
    ny, nx = sub.shape
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    ok = (ix >= half) & (ix < nx - half) & (iy >= half) & (iy < ny - half)
    # A neighbour brighter than half the star within the box (plus a pixel) spoils the fit.
    tree = cKDTree(np.column_stack([x, y]))
    for i, j in tree.query_pairs(half + 1.0, output_type="ndarray"):
        ok[i] &= not peak[j] > 0.5 * peak[i]
        ok[j] &= not peak[i] > 0.5 * peak[j]
    bad = mask | saturated
    for i in np.nonzero(ok)[0]:
        win = (slice(iy[i] - half, iy[i] + half + 1), slice(ix[i] - half, ix[i] + half + 1))
        core = sub[iy[i] - 1:iy[i] + 2, ix[i] - 1:ix[i] + 2]
        ok[i] = not (bad[win].any() or _flat_top(core, std))
    order = np.argsort(-peak[ok])
    return {"x": x[ok][order], "y": y[ok][order], "peak": peak[ok][order]}


def _flat_top(core, std):
    """A clipped core: two or more pixels tied exactly at a bright maximum."""
    top = core.max()
    return bool(top > 10.0 * std and np.count_nonzero(core == top) >= 2)


def _half(fwhm):
    return max(2, int(np.ceil(1.5 * fwhm)))


def _fitted(sub, std, cand, *, fwhm, max_stars):
    """Integrated-Gaussian fits of the brightest candidates, defects and blends removed."""
    half = _half(fwhm)
    rows = []
    for x, y, peak in zip(cand["x"][:max_stars], cand["y"][:max_stars],
                          cand["peak"][:max_stars]):
        cx, cy = int(np.rint(x)), int(np.rint(y))
        cut = sub[cy - half:cy + half + 1, cx - half:cx + half + 1]
        p, rms, err = _fit_gaussian(cut, x - cx, y - cy, fwhm / 2.3548)
        rows.append((cx + p[1], cy + p[2], p[3], p[4], rms / std, peak / std, err))
    keys = ("x", "y", "sx", "sy", "residual", "snr", "error")
    if not rows:
        return {k: np.zeros(0) for k in keys}
    a = dict(zip(keys, np.array(rows).T))
    sx, sy = a["sx"], a["sy"]
    good = ((np.minimum(sx, sy) > MIN_SIGMA) & (np.maximum(sx, sy) < half)
            & (np.abs(sx - sy) / (sx + sy) <= MAX_ELLIPTICITY))
    if good.any():
        good &= a["residual"] <= RESIDUAL_CLIP * max(np.median(a["residual"][good]), 1.0)
    return {k: v[good] for k, v in a.items()}


def _fit_gaussian(cut, x0, y0, sigma0):
    """Least squares: (amplitude, x, y, sx, sy, background) and the rms residual."""
    half = cut.shape[0] // 2
    k = np.arange(-half, half + 1, dtype=float)
    root2 = np.sqrt(2.0)

    def model(p):
        flux, x, y, sx, sy, bg = p
        gx = special.erf((k - x + 0.5) / (root2 * sx)) - special.erf((k - x - 0.5) / (root2 * sx))
        gy = special.erf((k - y + 0.5) / (root2 * sy)) - special.erf((k - y - 0.5) / (root2 * sy))
        return 0.25 * flux * gy[:, None] * gx[None, :] + bg

    bg0 = float(np.median(np.concatenate([cut[0], cut[-1], cut[:, 0], cut[:, -1]])))
    flux0 = max(float((cut - bg0).sum()), float(cut.max() - bg0), 1e-12)
    start = [flux0, x0, y0, max(sigma0, 0.3), max(sigma0, 0.3), bg0]
    lo = [0.0, -1.5, -1.5, 0.5 * MIN_SIGMA, 0.5 * MIN_SIGMA, -np.inf]
    hi = [np.inf, 1.5, 1.5, 2.0 * half, 2.0 * half, np.inf]
    start = np.clip(start, np.add(lo, 1e-9), np.subtract(hi, 1e-9))
    result = optimize.least_squares(lambda p: (model(p) - cut).ravel(), start,
                                    bounds=(lo, hi), method="trf")
    rms = float(np.sqrt(np.mean(result.fun ** 2)))
    # Relative error of the mean width sqrt(sx * sy), from the Jacobian.
    j = result.jac[:, 3:5] / result.x[3:5]
    try:
        cov = np.linalg.inv(j.T @ j) * rms ** 2
        err = 0.5 * np.sqrt(max(cov.sum(), 0.0))
    except np.linalg.LinAlgError:
        err = np.inf
    return result.x, rms, float(err)


def _agreeing(fits, min_stars):
    """The members of the narrowest width that enough sources share (see the module notes)."""
    s = np.sqrt(fits["sx"] * fits["sy"])
    logs = np.log(s)
    # Kernel: the sources' typical width error (a star field's scatter), at least 3%.
    h = float(np.clip(np.median(fits["error"]), MIN_BANDWIDTH, MAX_BANDWIDTH))
    density = _kernel(logs, logs, h).sum(axis=1)
    start = np.nonzero(density >= max(min(min_stars, len(s)),
                                      START_FRACTION * density.max()))[0]
    mode = logs[start[np.argmin(logs[start])]]
    for _ in range(100):  # mean shift from the narrowest: climbs to the nearest mode
        w = _kernel(np.array([mode]), logs, h)[0]
        new = float((w * logs).sum() / w.sum())
        if abs(new - mode) < 1e-4 * h:
            break
        mode = new
    members = np.abs(logs - mode) <= max(2.0 * h, MEMBER_TOLERANCE)
    n = int(members.sum())
    sigma = float(np.median(s[members]))
    scatter = float(1.4826 * np.median(np.abs(s[members] / sigma - 1.0)))
    needed = max(min_stars, int(np.ceil((1.2533 * scatter / PRECISION) ** 2)))
    if n < needed:
        raise ValueError(f"only {n} point sources agree on a width (sigma {sigma:.2f} px, "
                         f"scatter {100 * scatter:.0f}%: {needed} needed)")
    return {"x": fits["x"][members], "y": fits["y"][members], "sigma": s[members],
            "snr": fits["snr"][members], "sigma_psf": sigma, "scatter": scatter,
            "n_candidates": len(s)}


def _kernel(at, logs, h):
    return np.exp(-0.5 * ((at[:, None] - logs[None, :]) / h) ** 2)
