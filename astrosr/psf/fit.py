"""An analytic PSF fitted to the stars of a dithered stack.

`estimate_stack_psf` builds a non-parametric PSF on the fine grid, which needs
many star images (about ``5 * scale**2`` per half of the stack, so some ten
isolated bright stars at scale 4): most fields have fewer. With a handful of
stars, two or three numbers can still be measured well: `fit_stack_psf` fits
a Gaussian and a Moffat profile, integrated over the input pixels as the
observation model integrates them, to every star in every frame at once
(the stars' positions shared by all frames through the known shifts), and
keeps the profile that fits better.
"""

import numpy as np
from scipy import optimize, special

from . import GaussianPSF, MoffatPSF
from .estimate import estimate_psf, observed_fwhm, sky_subtracted
from .stars import ADVICE

__all__ = ["fit_stack_psf"]

#: Stamp half-width in FWHM: enough for the core and the first wings, small
#: enough that stars with neighbours a few FWHM away remain usable.
_STAMP_FWHM = 2.0
#: Reduced chi-square above which the sources do not share one point-source profile.
_MAX_CHI2 = 2.0
#: Sub-pixel samples per axis for integrating the Moffat profile over a pixel.
_SUB = 6
#: Stars fitted worse than this many times the median star are left out (blends).
_CLIP = 2.0
_CLIP_ROUNDS = 3


def fit_stack_psf(frames, shifts, *, fwhm_guess=None, snr=5.0, max_stars=30, saturation=None,
                  hdu=None):
    """A Gaussian or Moffat PSF fitted to the isolated stars of a dithered stack.

    Each point source of the reference frame (the frame with the smallest
    shift; selected by `estimate_psf`: saturated stars, defects, blends and
    galaxies left out; stamps of half-width 2 FWHM + 1) is cut out of every
    frame at its shifted position. A profile
    integrated over the input pixels, with one shape for all and a flux and
    a position (in the reference frame, moved by each frame's shift) per
    star, is fitted by weighted least squares to all stamps (the sky is
    subtracted first; a free background per star would trade against the
    Moffat wings);
    the Gaussian (width) and the Moffat (width and power index) are both
    fitted and the one with the lower chi-square (the Moffat must gain more
    than 2, its extra parameter's worth) is returned.

    Parameters
    ----------
    frames : list of CCDData/NDData/paths, or 3-D array
        The stack (see `astrosr.nddata.as_frames`).
    shifts : `~astropy.table.Table` with ``dx``, ``dy`` or array (n, 2)
        Shift of each frame in input pixels (DESIGN sign convention).
    fwhm_guess : float, optional
        FWHM of the stars in input pixels, for the star finder; default:
        measured on the reference frame.
    snr : float
        Least peak of a star, in sky-noise sigma.
    max_stars : int
        The brightest point sources used.
    saturation : float, optional
        Saturation level in data units (default: from the header, see `estimate_psf`).
    hdu : int or str, optional
        HDU to read when ``frames`` are paths.

    Returns
    -------
    `~astrosr.psf.GaussianPSF` or `~astrosr.psf.MoffatPSF`
        In input pixels (evaluate it on any grid with ``kernel(scale)``); its
        ``fit_info`` attribute holds the number of stars and stamps and the
        reduced chi-square of both profiles.

    Raises
    ------
    ValueError
        Fewer than 3 isolated stars, or sources that no single point-source
        profile fits (reduced chi-square above 2: galaxies, blends; on our
        test stacks stars fit at 1.0-1.9, galaxy and nebula fields at 3.7-12).
    """
    from ..nddata import as_frames, shift_array

    ccds = as_frames(frames, hdu=hdu)
    offsets = shift_array(shifts, len(ccds))
    images = [sky_subtracted(c) for c in ccds]
    ref = int(np.argmin(np.hypot(offsets[:, 0], offsets[:, 1])))
    sub, mask, std = images[ref]
    fwhm, x, y = _point_sources(ccds[ref], sub.shape, offsets - offsets[ref],
                                fwhm_guess=fwhm_guess, snr=snr, max_stars=int(max_stars),
                                saturation=saturation)
    half = int(np.ceil(_STAMP_FWHM * fwhm)) + 1
    noise = [_noise(c, std, sky_mask) for c, (_, sky_mask, std) in zip(ccds, images)]
    stamps = _Stamps(images, noise, x - offsets[ref, 0], y - offsets[ref, 1], offsets, half)
    stamps = _without_outliers(stamps, fwhm)
    fits = {"gaussian": _fit(stamps, "gaussian", fwhm)[:2]}
    dof = stamps.n_data - (2 + 3 * stamps.n_stars)
    # A Gaussian far off (texture, neighbours, galaxies) is not rescued by the Moffat's
    # one more parameter, whose fit then wanders for a minute: refuse at once.
    if fits["gaussian"][1] / dof <= 2.0 * _MAX_CHI2:
        fits["moffat"] = _fit(stamps, "moffat", fwhm)[:2]
    best = ("moffat" if "moffat" in fits and fits["moffat"][1] < fits["gaussian"][1] - 2.0
            else "gaussian")
    shape, chi2 = fits[best]
    chi2_red = {name: float(c / dof) for name, (_, c) in fits.items()}
    if chi2_red[best] > _MAX_CHI2:
        raise ValueError(f"fit_stack_psf: the {stamps.n_stars} sources are not fitted by one "
                         f"point-source profile (reduced chi-square {chi2_red[best]:.1f}): "
                         f"galaxies or blends; {ADVICE}")
    psf = (GaussianPSF(shape[0] / (2.0 * np.sqrt(2.0 * np.log(2.0)))) if best == "gaussian"
           else MoffatPSF(shape[0], shape[1]))
    psf.fit_info = {"n_stars": stamps.n_stars, "n_stamps": stamps.n_stamps,
                    "chi2_red": chi2_red, "profile": best}
    return psf


def _point_sources(ccd, shape, offsets, *, fwhm_guess, snr, max_stars, saturation):
    """(FWHM seen, x, y) of the reference frame's point sources whose stamps fit every frame."""
    try:
        found = estimate_psf(ccd, fwhm_guess=fwhm_guess, snr=snr,
                             max_stars=max(3 * max_stars, 50), saturation=saturation)
    except ValueError as exc:
        raise ValueError(str(exc).replace("estimate_psf:", "fit_stack_psf: in the reference "
                                          "frame,", 1)) from None
    fwhm = observed_fwhm(found.sigma)
    x, y = found.fit_info["x"], found.fit_info["y"]
    half = int(np.ceil(_STAMP_FWHM * fwhm)) + 1
    ny, nx = shape
    lo = half + 1 - offsets.min(axis=0)
    hi = np.array([nx, ny]) - half - 2 - offsets.max(axis=0)
    inside = (x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1])
    if inside.sum() < 3:
        raise ValueError(f"fit_stack_psf: fewer than 3 point sources ({int(inside.sum())}) with "
                         f"stamps inside every frame; {ADVICE}")
    return fwhm, x[inside][:max_stars], y[inside][:max_stars]


def _noise(ccd, sky_sigma, bad):
    """Per-pixel sigma: the frame's uncertainty (which holds the stars' own photon noise).

    The sky's measured scatter beyond what the uncertainty explains (faint sources,
    a galaxy field's texture: confusion) is added in quadrature: no profile fits it.
    """
    from ..nddata import variance_of

    var = variance_of(ccd)
    if var is None:  # sky noise only: bright stars will look worse fitted than they are
        return np.full(np.shape(ccd.data), sky_sigma)
    var = np.asarray(var, dtype=float)
    usable = np.isfinite(var) & (var > 0) & ~bad
    confusion = max(sky_sigma ** 2 - float(np.median(var[usable])), 0.0) if usable.any() else 0.0
    return np.sqrt(np.where(np.isfinite(var) & (var > 0), var + confusion, np.inf))


class _Stamps:
    """Cut-outs of every star in every frame, with their pixel coordinates and weights."""

    def __init__(self, images, noise, x, y, offsets, half):
        k = np.arange(-half, half + 1)
        cx = x[None, :] + offsets[:, 0:1]  # (frames, stars): positions in each frame
        cy = y[None, :] + offsets[:, 1:2]
        ix, iy = np.rint(cx).astype(int), np.rint(cy).astype(int)
        self.X, self.Y = (np.array(a) for a in np.broadcast_arrays(
            ix[..., None, None] + k[None, None, None, :],
            iy[..., None, None] + k[None, None, :, None]))
        self.data = np.empty(self.X.shape)
        self.weight = np.empty(self.X.shape)
        for i, ((sub, mask, _), sigma) in enumerate(zip(images, noise)):
            for j in range(len(x)):
                ys, xs = self.Y[i, j, :, 0], self.X[i, j, 0, :]
                inside = ((ys[:, None] >= 0) & (ys[:, None] < sub.shape[0])
                          & (xs[None, :] >= 0) & (xs[None, :] < sub.shape[1]))
                yy, xx = np.clip(ys, 0, sub.shape[0] - 1), np.clip(xs, 0, sub.shape[1] - 1)
                self.data[i, j] = sub[np.ix_(yy, xx)]
                self.weight[i, j] = np.where(inside & ~mask[np.ix_(yy, xx)],
                                             1.0 / sigma[np.ix_(yy, xx)], 0.0)
        self.offsets = offsets
        self._count(np.concatenate([x, y]))

    def _count(self, start):
        self.n_stars = self.data.shape[1]
        self.n_stamps = int(np.prod(self.data.shape[:2]))
        self.n_data = int(np.count_nonzero(self.weight))
        self.start = start

    def subset(self, keep):
        """The stamps of the stars where ``keep`` is True."""
        out = object.__new__(_Stamps)
        out.X, out.Y, out.data, out.weight = (a[:, keep] for a in (self.X, self.Y, self.data,
                                                                  self.weight))
        out.offsets = self.offsets
        n = self.n_stars
        out._count(np.concatenate([self.start[:n][keep], self.start[n:][keep]]))
        return out

    def model(self, profile, shape, x, y, flux):
        dx = self.X - (x[None, :] + self.offsets[:, 0:1])[..., None, None]
        dy = self.Y - (y[None, :] + self.offsets[:, 1:2])[..., None, None]
        return flux[None, :, None, None] * _pixel_integrated(profile, shape, dx, dy)


def _pixel_integrated(profile, shape, dx, dy):
    """Unit-flux profile integrated over the input pixels centred at offsets (dx, dy)."""
    if profile == "gaussian":
        # Exact: the pixel integral of a Gaussian separates into error functions.
        s = shape[0] / (2.0 * np.sqrt(2.0 * np.log(2.0))) * np.sqrt(2.0)
        gx = 0.5 * (special.erf((dx + 0.5) / s) - special.erf((dx - 0.5) / s))
        gy = 0.5 * (special.erf((dy + 0.5) / s) - special.erf((dy - 0.5) / s))
        return gx * gy
    fwhm, beta = shape
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    u = (np.arange(_SUB) + 0.5) / _SUB - 0.5  # sub-pixel sample offsets
    total = 0.0
    for uy in u:
        r2 = (dx[..., None] + u) ** 2 + (dy[..., None] + uy) ** 2
        total = total + np.sum((1.0 + r2 / alpha ** 2) ** (-beta), axis=-1)
    return total * (beta - 1.0) / (np.pi * alpha ** 2) / _SUB ** 2


def _without_outliers(stamps, fwhm):
    """Drop stars fitted much worse than the others: blends, neighbours' wings in the stamp.

    A star whose chi-square per pixel exceeds `_CLIP` times the median of all
    stars' is left out and the fit repeated (at most `_CLIP_ROUNDS` times,
    keeping at least 3 stars). When every source is extended, all fit alike
    badly and the final chi-square test rejects them.
    """
    for _ in range(_CLIP_ROUNDS):
        per_star = _fit(stamps, "gaussian", fwhm)[2]
        keep = per_star <= _CLIP * np.median(per_star)
        if keep.all() or keep.sum() < 3:
            break
        stamps = stamps.subset(keep)
    return stamps


def _fit(stamps, profile, fwhm):
    """Least-squares fit of one profile: (shape parameters, chi-square, chi-square per pixel
    of each star)."""
    n = stamps.n_stars
    n_shape = 1 if profile == "gaussian" else 2

    def unpack(p):
        # beta in (1.05, 34): beyond, the Moffat is a Gaussian and alpha overflows.
        shape = ((np.exp(p[0]),) if n_shape == 1
                 else (np.exp(p[0]), 1.0 + np.exp(np.clip(p[1], -3.0, 3.5))))
        q = p[n_shape:]
        return shape, q[:n], q[n:2 * n], q[2 * n:]

    def residuals(p):
        shape, x, y, flux = unpack(p)
        return ((stamps.data - stamps.model(profile, shape, x, y, flux))
                * stamps.weight).ravel()

    flux0 = np.maximum(stamps.data.sum(axis=(2, 3)).mean(axis=0), 1e-3)
    start = np.concatenate([[np.log(fwhm)] + ([np.log(2.0)] if n_shape == 2 else []),
                            stamps.start, flux0])
    result = optimize.least_squares(residuals, start, x_scale="jac", method="trf")
    shape = unpack(result.x)[0]
    r2 = residuals(result.x).reshape(stamps.data.shape) ** 2
    n_pix = np.maximum(np.count_nonzero(stamps.weight, axis=(0, 2, 3)), 1)
    per_star = r2.sum(axis=(0, 2, 3)) / n_pix
    return shape, float(2.0 * result.cost), per_star
