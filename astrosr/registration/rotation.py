"""Coarse similarity (rotation, scale, shift) between two frames, from any start.

A source at reference pixel ``p`` appears in the frame at
``q = s R(rotation) (p - c) + c + (dx, dy)`` (DESIGN.md, `astrosr.geometry.Similarity`,
``c`` the frame centre). `coarse_similarity` finds ``(dx, dy, rotation, scale)``
for any rotation, a scale within about ±10% and shifts up to a quarter of the
frame along each axis, to a fraction of a pixel over the frame: close enough for a
Gauss-Newton refinement to take over. Both frames are first compressed
(asinh above a few times the noise, `astrosr.registration.correlation.prepare_for_fft`)
so that the brightest stars do not outweigh the rest. Then:

1. **Rotation and scale from the Fourier magnitude**, which a translation
   does not change (Reddy & Chatterji 1996, IEEE Trans. Image Proc. 5, 1266:
   the Fourier-Mellin transform). The magnitudes of the tapered frames'
   spectra (a Tukey window, flat over the middle: a Hann window weights
   the content shared by frames shifted by a quarter of their size too
   little), high-pass emphasised, are mapped to log-polar
   coordinates over an annulus of useful frequencies (the lowest belong to
   the window and the DC; the highest are noise and, in undersampled frames,
   aliases), where a rotation is a shift along the angle and a scale a shift
   along the log-radius, and the two maps are cross-correlated. A real
   image's spectrum is symmetric, so each peak gives the rotation modulo
   180 degrees; a larger image has a smaller spectrum, so the log-radial
   shift is ``-log(scale)``.
2. **The 180-degree ambiguity and the translation.** For each of the
   strongest peaks, at its angle and that angle plus 180 degrees, the frame
   is resampled onto the reference grid (through
   `Similarity.reference_to_frame`, so the convention cannot drift) and its
   translation found: to a pixel by masked normalised cross-correlation
   (Padfield 2012, CVPR; `skimage.registration.phase_cross_correlation`
   with masks), which the small overlap of frames shifted by a quarter of
   their size along both axes and rotated does not fool, then to a fraction
   of a pixel by phase correlation
   (`astrosr.registration.correlation.phase_correlation`). A translation
   ``t`` found there is a shift ``s R t`` in frame pixels. The candidate whose
   resampled frame then correlates best with the reference is kept.
3. **Polish** by Gauss-Newton steps of the similarity on the compressed
   frames, smoothed less and less (a Gaussian of 3 pixels down to none),
   which widens the reach of the first steps to a few pixels; the result is
   kept if it matches better than the start.

When the best match is weak (a correlation below ``FALLBACK_CORRELATION``:
mostly sparse star fields, whose spectrum holds too little to rank the right
peak first), a grid of rotations and scales, each scored at its best
translation, gives further candidates.

Why these functions: the FFTs (`scipy.fft`), the window
(`scipy.signal.windows.tukey`), the log-polar resampling
(`skimage.transform.warp_polar`), interpolation and filters (`scipy.ndimage`)
and the translations (`skimage.registration.phase_cross_correlation`, this
package's `phase_correlation`) are library code.
Written here: the cross-correlation of the log-polar maps, because it must
be periodic along the angle but not along the log-radius, be searched only
over plausible scales and give several peaks, which neither
`phase_correlation` nor ``skimage.registration`` offers; and the
Gauss-Newton step, because it fits a similarity about the frame centre with
a flux scale and offset, which skimage's and scipy's optimisers would only
reach through many evaluations of a generic cost.
"""

import numpy as np
from scipy import fft, ndimage
from scipy.signal.windows import tukey

from ..geometry import Similarity, frame_centre
from .correlation import phase_correlation, prepare_for_fft

__all__ = ["coarse_similarity", "CoarseSimilarity"]

#: Annulus of the spectrum used, in cycles per pixel: above the window's and the
#: DC's reach, below the noise and most aliases of undersampled frames.
FREQUENCIES = (0.03, 0.4)
#: Fraction of each axis tapered (Tukey window) before the Fourier transforms.
TAPER = 0.5
#: Fewest samples of the log-polar maps along the angle (0-180 degrees) and the log-radius.
MIN_SAMPLES = (180, 128)
#: Largest scale change searched (fraction): ``1 / (1 + x)`` to ``1 + x``.
MAX_SCALE_CHANGE = 0.12
#: Fourier-Mellin peaks tried (each at its angle and that angle + 180 degrees).
N_CANDIDATES = 3
#: Below this correlation of the best Fourier-Mellin candidate, the grid is searched too.
FALLBACK_CORRELATION = 0.45
#: Steps of that grid: rotation (degrees) and scale (fraction).
GRID_STEP, GRID_SCALE = 3.0, 0.04
#: Points a side (at most about) of the grid of the first, masked, search for a translation.
COARSE_GRID = 64
#: Gaussian smoothing (pixels) of the frames correlated to compare transforms, and the larger
#: scales removed too (a difference of Gaussians) for `CoarseSimilarity.correlation`.
MATCH_BAND = (1.0, 4.0)
#: Gaussian smoothing (pixels) of the frames at each Gauss-Newton step of the polish.
NEWTON_SMOOTHING = (3.0, 2.0, 1.0, 0.5, 0.0)


class CoarseSimilarity(tuple):
    """``(dx, dy, rotation, scale)`` of `coarse_similarity`, with the quality of the match.

    Unpacks as a 4-tuple; the fields are also attributes.

    Attributes
    ----------
    dx, dy : float
        Shift in frame pixels.
    rotation : float
        Counter-clockwise rotation in degrees, in ``(-180, 180]``.
    scale : float
        Frame pixels per reference pixel.
    correlation : float
        Pearson correlation of the asinh-compressed reference and frame,
        band-passed (a difference of Gaussians, ``MATCH_BAND``), over their
        overlap, the frame resampled with this transform. Matched noisy
        128x128 frames gave 0.9-0.98 on extended emission, 0.85-0.95 on star
        fields (150 stars) and 0.5-0.85 on sparse ones (30 stars);
        unrelated frames (the best of many transforms, found by chance) up
        to 0.2 on extended emission, 0.4 on star fields and 0.45 on sparse
        ones, pure noise 0.1-0.25: trust a match above about 0.6.
    overlap : float
        Fraction of the reference's pixels in the overlap.
    """

    def __new__(cls, dx, dy, rotation, scale, correlation=np.nan, overlap=np.nan):
        self = super().__new__(cls, (float(dx), float(dy), float(rotation), float(scale)))
        self.correlation, self.overlap = float(correlation), float(overlap)
        return self

    dx = property(lambda self: self[0], doc="Shift along x (frame pixels).")
    dy = property(lambda self: self[1], doc="Shift along y (frame pixels).")
    rotation = property(lambda self: self[2], doc="Counter-clockwise rotation (degrees).")
    scale = property(lambda self: self[3], doc="Frame pixels per reference pixel.")

    def similarity(self, center):
        """The `astrosr.geometry.Similarity` about ``center``, the frame centre."""
        return Similarity(*self, center=center)

    def __repr__(self):
        return (f"CoarseSimilarity(dx={self[0]:.4g}, dy={self[1]:.4g}, rotation={self[2]:.4g}, "
                f"scale={self[3]:.6g}, correlation={self.correlation:.3g}, "
                f"overlap={self.overlap:.3g})")


def coarse_similarity(reference, image, *, good=None, scale=True):
    """Coarse similarity transform of ``image`` relative to ``reference``, from any start.

    Parameters
    ----------
    reference, image : numpy.ndarray
        2-D arrays of the same shape, no NaN (fill them first).
    good : tuple of numpy.ndarray, optional
        Boolean maps of the usable pixels of ``reference`` and ``image``.
    scale : bool
        Fit the scale; with False the transform is rigid and ``scale`` is
        exactly 1.0.

    Returns
    -------
    CoarseSimilarity
        ``(dx, dy, rotation, scale)``: a source at reference pixel ``p`` is at
        ``scale * R(rotation) (p - c) + c + (dx, dy)`` in ``image``, ``c`` the
        frame centre ``((nx-1)/2, (ny-1)/2)``, rotation in degrees in
        ``(-180, 180]``; its ``correlation`` and ``overlap`` attributes
        measure the match.

    Raises
    ------
    ValueError
        Arrays that are not 2-D, differ in shape, hold NaN or inf, are
        smaller than 16x16, or have no usable pixels.
    """
    pair = _Pair(reference, image, good)
    candidates = [(r, s) for rotation, s in _fourier_mellin(pair, scale)
                  for r in (rotation, rotation + 180.0)]
    best, (r, n) = _best_of(pair, candidates, scale)
    if r < FALLBACK_CORRELATION:
        other, (r_other, n_other) = _best_of(pair, _grid_search(pair, scale), scale)
        if r_other * np.sqrt(n_other) > r * np.sqrt(n):
            best, r, n = other, r_other, n_other
    rotation = (best.rotation + 180.0) % 360.0 - 180.0
    r, n = _match(pair, best, band_pass=True)
    return CoarseSimilarity(best.dx, best.dy, 180.0 if rotation == -180.0 else rotation,
                            best.scale if scale else 1.0, r, n / pair.ref.size)


class _Pair:
    """The two frames, compressed (`prepare_for_fft`), their usable pixels and the frame centre."""

    def __init__(self, reference, image, good):
        ref, img = np.asarray(reference, dtype=float), np.asarray(image, dtype=float)
        if ref.ndim != 2 or ref.shape != img.shape:
            raise ValueError(f"reference and image must be 2-D arrays of the same shape, got "
                             f"{ref.shape} and {img.shape}")
        if min(ref.shape) < 16:
            raise ValueError(f"frames must be at least 16x16, got {ref.shape}")
        if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(img))):
            raise ValueError("reference and image must not hold NaN or inf (fill them first)")
        if good is None:
            good = (np.ones(ref.shape, bool), np.ones(ref.shape, bool))
        self.good_ref, self.good_img = (np.asarray(g, dtype=bool) for g in good)
        if self.good_ref.shape != ref.shape or self.good_img.shape != ref.shape:
            raise ValueError("good must be two boolean maps of the frames' shape")
        if not (self.good_ref.any() and self.good_img.any()):
            raise ValueError("reference or image has no usable pixels")
        self.shape = ref.shape
        self.center = frame_centre(ref.shape)
        self.ref = prepare_for_fft(ref, self.good_ref, False)
        self.img = prepare_for_fft(img, self.good_img, False)
        self.spline = ndimage.spline_filter(self.img, order=3, mode="nearest")
        self._smoothed = {}

    def smoothed(self, sigma):
        """The compressed reference and image smoothed by a Gaussian of ``sigma`` pixels (cached)."""
        if sigma not in self._smoothed:
            self._smoothed[sigma] = tuple(ndimage.gaussian_filter(d, sigma)
                                          for d in (self.ref, self.img))
        return self._smoothed[sigma]

    def band_passed(self):
        """The compressed frames less their smoothed versions (``MATCH_BAND``): no large scales."""
        (ref_lo, img_lo), (ref_hi, img_hi) = (self.smoothed(s) for s in MATCH_BAND)
        return ref_lo - ref_hi, img_lo - img_hi

    def resampled(self, sim, order=3, step=1, source=None):
        """The compressed image seen on the reference grid through ``sim``, and where it is usable.

        ``step > 1``: on every ``step``-th reference pixel along each axis
        only; ``source``: another version of the compressed image (smoothed,
        band-passed), interpolated linearly.
        """
        ny, nx = self.shape
        yy, xx = np.mgrid[0:ny:step, 0:nx:step].astype(float)
        qx, qy = sim.reference_to_frame(xx, yy)
        if source is None:
            source = self.spline if order == 3 else self.img
        values = ndimage.map_coordinates(source, [qy, qx], order=1 if source is not self.spline
                                         else 3, mode="nearest", prefilter=False)
        usable = (qx >= 0) & (qx <= nx - 1) & (qy >= 0) & (qy <= ny - 1)
        usable &= self.good_ref[::step, ::step]
        if not self.good_img.all():
            usable &= ndimage.map_coordinates(self.good_img.astype(float), [qy, qx], order=1,
                                              mode="nearest") > 0.999
        return values, usable


# --------------------------------------------------------------------------- step 1


def _fourier_mellin(pair, fit_scale):
    """``(rotation mod 180, scale)`` of the strongest log-polar correlation peaks."""
    n = max(pair.shape)
    rmin, rmax = max(4.0, FREQUENCIES[0] * n), FREQUENCIES[1] * n
    # About 2 frequency bins (the width of the window's kernel) per sample at rmax.
    n_angle = max(MIN_SAMPLES[0], int(np.ceil(np.pi * rmax / 2)))
    n_radius = max(MIN_SAMPLES[1], int(np.ceil(rmax * np.log(rmax) / 2)))
    k = n_radius / np.log(rmax)  # columns per unit of log-radius
    first = int(np.ceil(k * np.log(rmin)))
    maps = [_log_polar(_spectrum(data, n), n_angle, n_radius, rmax)[:, first:]
            for data in (pair.ref, pair.img)]
    reach = int(np.ceil(k * np.log1p(MAX_SCALE_CHANGE))) if fit_scale else 0
    peaks = _peaks(_correlate_maps(*maps), reach, N_CANDIDATES)
    return [(row * 180.0 / n_angle, float(np.exp(-col / k)) if fit_scale else 1.0)
            for row, col in peaks]


def _spectrum(data, n):
    """High-pass emphasised Fourier magnitude (DC at ``n // 2``) of a tapered frame."""
    mag = np.abs(fft.fftshift(fft.fft2(data * _taper(data.shape), s=(n, n), workers=-1)))
    f = fft.fftshift(fft.fftfreq(n))
    x = np.outer(np.cos(np.pi * f), np.cos(np.pi * f))
    return mag * (1.0 - x) * (2.0 - x)  # Reddy & Chatterji's emphasis filter


def _taper(shape):
    """2-D Tukey window (``TAPER`` of each axis tapered).

    Flat over the middle, unlike a Hann window, so that frames shifted by a
    quarter of their size still share most of their weighted content.
    """
    return np.outer(tukey(shape[0], TAPER), tukey(shape[1], TAPER))


def _log_polar(mag, n_angle, n_radius, rmax):
    """Half-plane log-polar map (rows: angle 0..180 deg, columns: log-radius), standardised.

    Each column (one radius) is given zero mean and unit variance, which
    removes the radial envelope (PSF, power-law sky) that would pull the
    scale towards 1 and lets every radius count alike.
    """
    from skimage.transform import warp_polar  # here: scikit-image is heavy to import

    n = mag.shape[0]
    lp = warp_polar(mag, center=(n // 2, n // 2), radius=rmax, output_shape=(2 * n_angle, n_radius),
                    scaling="log", order=1)[:n_angle]
    lp = lp - lp.mean(axis=0)
    sd = lp.std(axis=0)
    return lp / np.where(sd > 0, sd, 1.0)


def _correlate_maps(a, b):
    """Cross-correlation of two log-polar maps: periodic in angle, zero-padded in log-radius.

    ``corr[i, j]`` is large when ``b`` is ``a`` shifted by ``i`` rows and
    ``j`` columns (negative ``j`` wrapped to the end). The columns are
    Hann-weighted so that the ends of the annulus fade out.
    """
    w = np.hanning(a.shape[1] + 2)[1:-1]
    shape = (a.shape[0], 2 * a.shape[1])
    fa = fft.rfft2(a * w, s=shape, workers=-1)
    fb = fft.rfft2(b * w, s=shape, workers=-1)
    return fft.irfft2(fb * np.conj(fa), s=shape, workers=-1)


def _peaks(corr, reach, count):
    """Sub-pixel ``(row, column)`` shifts of the ``count`` highest local maxima.

    Only column shifts ``-reach..reach`` are searched; rows (the angle) wrap.
    """
    n_rows = corr.shape[0]
    shifts = np.arange(-reach, reach + 1)
    sub = corr[:, shifts % corr.shape[1]]
    local = ndimage.maximum_filter(sub, size=(5, 5), mode=("wrap", "nearest"))
    rows, cols = np.nonzero(sub == local)
    order = np.argsort(sub[rows, cols])[::-1][:count]
    out = []
    for i, j in zip(rows[order], cols[order]):
        di = _vertex(sub[(i - 1) % n_rows, j], sub[i, j], sub[(i + 1) % n_rows, j])
        dj = _vertex(sub[i, j - 1], sub[i, j], sub[i, j + 1]) if 0 < j < 2 * reach else 0.0
        out.append(((i + di + n_rows / 2) % n_rows - n_rows / 2, shifts[j] + dj))
    return out


def _vertex(minus, centre, plus):
    """Offset of the vertex of the parabola through three equally spaced values."""
    den = minus - 2.0 * centre + plus
    return 0.0 if den >= 0 else float(np.clip(0.5 * (minus - plus) / den, -0.5, 0.5))


# --------------------------------------------------------------------------- step 2


def _best_of(pair, candidates, fit_scale):
    """The best candidate ``(rotation, scale)`` with its translation, polished, and its match.

    Candidates are ranked by the significance ``r sqrt(n)`` of their match
    (`_match`), which does not favour a tiny overlap.
    """
    step = max(1, max(pair.shape) // 256)
    trials = []
    for rotation, s in candidates:
        sim = _with_translation(pair, Similarity(0.0, 0.0, rotation, s, center=pair.center))
        r, n = _match(pair, sim, step)
        trials.append((r * np.sqrt(n), sim))
    return _polish(pair, max(trials, key=lambda t: t[0])[1], fit_scale)


def _with_translation(pair, sim):
    """``sim`` with the shift found once its rotation and scale are undone.

    The resampled frame ``w(p) = image(sim(p))`` shows a source of the
    reference at ``p + t`` when the frame's true shift is ``sim``'s plus
    ``s R t``. ``t`` is found to the nearest pixel of a grid of at most
    about ``COARSE_GRID`` points a side by masked normalised cross-correlation
    (Padfield 2012, `skimage.registration.phase_cross_correlation` with
    masks: unbiased by how little the frames overlap), then to a fraction
    of a pixel by phase correlation of the frames so aligned, on a grid of
    at most about 256 points a side (every ``step``-th pixel of the frames,
    smoothed by ``step / 2``).
    """
    from skimage.registration import phase_cross_correlation  # scikit-image is slow to import

    step = max(1, int(np.ceil(max(pair.shape) / COARSE_GRID)))
    ref, img = pair.smoothed(0.5 * step + 0.5)
    values, usable = pair.resampled(sim, step=step, source=img)
    ref = ref[::step, ::step]
    shift = phase_cross_correlation(ref, values, reference_mask=pair.good_ref[::step, ::step],
                                    moving_mask=usable)[0]
    sim = _shifted(sim, -step * shift[::-1])
    step = max(1, max(pair.shape) // 256)
    ref, img = pair.smoothed(0.5 * step) if step > 1 else (pair.ref, pair.img)
    values, usable = pair.resampled(sim, step=step, source=img)
    ref = ref[::step, ::step]
    w = _taper(ref.shape)
    t = phase_correlation(ref * w, values * w, upsample=2, window=False, good=(usable, usable))
    return _shifted(sim, step * np.array(t))


def _shifted(sim, t):
    """``sim`` followed by a shift ``t`` on the reference grid: ``d + s R t``."""
    d = np.array([sim.dx, sim.dy]) + sim.matrix @ np.asarray(t, dtype=float)
    return Similarity(d[0], d[1], sim.rotation, sim.scale, center=sim.center)


def _match(pair, sim, step=1, band_pass=False):
    """Pearson correlation ``r`` of the smoothed compressed frames over their ``n``-pixel overlap.

    Both frames are smoothed (a Gaussian of ``MATCH_BAND[0]`` pixels) so
    that the smoothing of the noise by the interpolation, which varies with
    the sub-pixel offsets, does not favour some transforms over others.
    ``band_pass``: their large scales (``MATCH_BAND[1]``) removed too, which
    unrelated smooth emission would share by chance (for the correlation
    reported; the search compares transforms of the same frames, where the
    large scales help). ``step``: on every ``step``-th pixel along each axis
    only.
    """
    ref, img = pair.band_passed() if band_pass else pair.smoothed(MATCH_BAND[0])
    values, usable = pair.resampled(sim, step=step, source=img)
    n = int(usable.sum()) * step ** 2
    if n < 16:
        return 0.0, n
    a, b = ref[::step, ::step][usable], values[usable]
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return (float((a * b).sum() / den) if den > 0 else 0.0), n


def _grid_search(pair, fit_scale):
    """Fallback candidates ``(rotation, scale)``: the local maxima of a grid search.

    Each rotation (every ``GRID_STEP`` degrees) and scale (``1`` and
    ``1 ± GRID_SCALE``) is scored by the peak of the normalised
    cross-correlation (over all shifts) of the reference with the frame
    resampled through it, both smoothed and sampled on a grid of at most
    about 96 reference points a side. ``2 * N_CANDIDATES`` are returned,
    best first.
    """
    ny, nx = pair.shape
    step = max(1, int(np.ceil(max(ny, nx) / 96)))
    ref, img = pair.smoothed(0.5 * step + 0.5)
    yy, xx = np.mgrid[step // 2:ny:step, step // 2:nx:step].astype(float)
    window = _taper(yy.shape)
    a = ref[step // 2::step, step // 2::step] * window
    fa = np.conj(fft.rfft2(a - a.mean()))
    angles = np.arange(0.0, 360.0, GRID_STEP)
    scales = (1.0 / (1.0 + GRID_SCALE), 1.0, 1.0 + GRID_SCALE) if fit_scale else (1.0,)
    score = np.empty((len(angles), len(scales)))
    for i, angle in enumerate(angles):
        for j, s in enumerate(scales):
            qx, qy = Similarity(0.0, 0.0, angle, s, center=pair.center).reference_to_frame(xx, yy)
            b = ndimage.map_coordinates(img, [qy, qx], order=1, cval=0.0) * window
            b = b - b.mean()
            score[i, j] = fft.irfft2(fft.rfft2(b) * fa, a.shape).max() / (np.linalg.norm(b)
                                                                          + 1e-300)
    local = ndimage.maximum_filter(score, size=(3, 3), mode=("wrap", "nearest"))
    rows, cols = np.nonzero(score == local)
    order = np.argsort(score[rows, cols])[::-1][:2 * N_CANDIDATES]
    return [(float(angles[i]), scales[j]) for i, j in zip(rows[order], cols[order])]


# --------------------------------------------------------------------------- step 3


def _polish(pair, sim, fit_scale):
    """``sim`` after the Gauss-Newton steps, and its `_match`.

    The steps are kept if they improve the match and leave the scale within
    ``MAX_SCALE_CHANGE``.
    """
    start = sim
    for smooth in NEWTON_SMOOTHING:
        step = _newton_step(pair, sim, fit_scale, smooth)
        if step is None:
            sim = start
            break
        sim = _compose(sim, step)
    before, after = _match(pair, start), _match(pair, sim)
    plausible = abs(np.log(sim.scale)) <= np.log1p(MAX_SCALE_CHANGE)
    return (sim, after) if plausible and after[0] >= before[0] else (start, before)


def _newton_step(pair, sim, fit_scale, smooth):
    """One Gauss-Newton step: the similarity ``G`` with ``image(sim(G(p))) ≈ α reference(p) + β``.

    Linearised about ``G = identity`` on the compressed frames smoothed by a
    Gaussian of ``smooth`` pixels (the frame resampled linearly then, by
    cubic splines below 1 pixel), with the mean of the two frames' gradients
    (efficient second-order minimisation, Benhimane & Malis 2004), over the
    overlap less the reach of the smoothing; None when the overlap is too
    small or the system singular.
    """
    values, usable = pair.resampled(sim, order=1 if smooth >= 1 else 3)
    use = ndimage.binary_erosion(usable, iterations=2 + int(np.ceil(2 * smooth)))
    if use.sum() < 64:
        return None
    ref, img = pair.ref, values
    if smooth > 0:
        ref, img = pair.smoothed(smooth)[0], ndimage.gaussian_filter(img, smooth)
    gy, gx = (g[use] for g in np.gradient(0.5 * (img + ref)))
    yy, xx = np.nonzero(use)
    ux, uy = xx - pair.center[0], yy - pair.center[1]
    columns = [gy * ux - gx * uy, gx, gy] + ([gx * ux + gy * uy] if fit_scale else [])
    design = np.column_stack(columns + [-ref[use], -np.ones(len(ux))])
    try:
        params = np.linalg.solve(design.T @ design, -design.T @ img[use])
    except np.linalg.LinAlgError:
        return None
    b, dx, dy = params[:3]
    a = params[3] if fit_scale else 0.0
    return Similarity(dx, dy, np.rad2deg(np.arctan2(b, 1.0 + a)),
                      np.hypot(1.0 + a, b) if fit_scale else 1.0, center=pair.center)


def _compose(sim, g):
    """``sim ∘ g`` (both about the same centre): rotations add, scales multiply."""
    d = np.array([sim.dx, sim.dy]) + sim.matrix @ np.array([g.dx, g.dy])
    return Similarity(d[0], d[1], sim.rotation + g.rotation, sim.scale * g.scale,
                      center=sim.center)
