"""Coarse similarity (rotation, scale, shift) between two frames, from any start.

A source at reference pixel ``p`` appears in the frame at
``q = s R(rotation) (p - c) + c + (dx, dy)`` (DESIGN.md, `astrosr.geometry.Similarity`,
``c`` the frame centre). `coarse_similarity` finds ``(dx, dy, rotation, scale)``
for any rotation, a scale within about ±10% and shifts up to a quarter of the
frame, to a fraction of a pixel over the frame: close enough for a
Gauss-Newton refinement to take over. Both frames are first compressed
(asinh above a few times the noise, `astrosr.registration.correlation.prepare_for_fft`)
so that the brightest stars do not outweigh the rest. Then:

1. **Rotation and scale from the Fourier magnitude**, which a translation
   does not change (Reddy & Chatterji 1996, IEEE Trans. Image Proc. 5, 1266:
   the Fourier-Mellin transform). The magnitudes of the Hann-windowed
   frames' spectra, high-pass emphasised, are mapped to log-polar
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
   `Similarity.reference_to_frame`, so the convention cannot drift) and
   phase-correlated with the reference
   (`astrosr.registration.correlation.phase_correlation`). A translation
   ``t`` found there is a shift ``s R t`` in frame pixels. The candidate whose
   resampled frame then correlates best with the reference is kept.
3. **Polish** by Gauss-Newton steps of the similarity on the compressed
   frames, smoothed less and less (a Gaussian of 3 pixels down to none),
   which widens the reach of the first steps to a few pixels; the result is
   kept if it matches better than the start.

When the best match is weak (a correlation below ``FALLBACK_CORRELATION``:
sparse star fields, whose spectrum holds too little to rank the right peak
first), a grid of rotations and scales, each with its best translation, gives
further candidates.

Why these functions: the FFTs (`scipy.fft`), the log-polar resampling
(`skimage.transform.warp_polar`), interpolation and filters (`scipy.ndimage`)
and the translations (this package's `phase_correlation`) are library code.
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

from ..geometry import Similarity
from .correlation import phase_correlation, prepare_for_fft

__all__ = ["coarse_similarity", "CoarseSimilarity"]

#: Annulus of the spectrum used, in cycles per pixel: above the window's and the
#: DC's reach, below the noise and most aliases of undersampled frames.
FREQUENCIES = (0.03, 0.4)
#: Largest scale change searched (fraction): ``1 / (1 + x)`` to ``1 + x``.
MAX_SCALE_CHANGE = 0.12
#: Fourier-Mellin peaks tried (each at its angle and that angle + 180 degrees).
N_CANDIDATES = 3
#: Below this correlation of the best Fourier-Mellin candidate, the grid is searched too.
FALLBACK_CORRELATION = 0.45
#: Steps of that grid: rotation (degrees) and scale (fraction).
GRID_STEP, GRID_SCALE = 3.0, 0.04
#: Gaussian smoothing (pixels) of the frames for their correlation (`CoarseSimilarity.correlation`).
MATCH_SMOOTHING = 1.0
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
        Pearson correlation of the asinh-compressed reference and frame over
        their overlap, the frame resampled with this transform: about 0.95 or
        more on extended emission, 0.6-0.8 on a noisy star field, 0.2-0.5 on
        a sparse one, below 0.15 when nothing matched.
    """

    def __new__(cls, dx, dy, rotation, scale, correlation=np.nan):
        self = super().__new__(cls, (float(dx), float(dy), float(rotation), float(scale)))
        self.correlation = float(correlation)
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
                f"scale={self[3]:.6g}, correlation={self.correlation:.3g})")


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
        ``(-180, 180]``; its ``correlation`` attribute measures the match.

    Raises
    ------
    ValueError
        Arrays that are not 2-D, differ in shape, hold NaN or inf, are
        smaller than 16x16, or have no usable pixels.
    """
    pair = _Pair(reference, image, good)
    candidates = [(r, s) for rotation, s in _fourier_mellin(pair, scale)
                  for r in (rotation, rotation + 180.0)]
    best, r = _best_of(pair, candidates, scale)
    if r < FALLBACK_CORRELATION:
        other, r_other = _best_of(pair, _grid_search(pair, scale), scale)
        if r_other > r:
            best, r = other, r_other
    rotation = (best.rotation + 180.0) % 360.0 - 180.0
    return CoarseSimilarity(best.dx, best.dy, 180.0 if rotation == -180.0 else rotation,
                            best.scale if scale else 1.0, r)


class _Pair:
    """The two frames (raw and compressed), their usable pixels and the frame centre."""

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
        self.center = ((ref.shape[1] - 1) / 2.0, (ref.shape[0] - 1) / 2.0)
        self.ref = prepare_for_fft(ref, self.good_ref, False)
        self.img = prepare_for_fft(img, self.good_img, False)
        self.spline = ndimage.spline_filter(self.img, order=3, mode="nearest")
        self.smooth_ref, self.smooth_img = (ndimage.gaussian_filter(d, MATCH_SMOOTHING)
                                            for d in (self.ref, self.img))

    def resampled(self, sim, order=3, step=1, smooth=False):
        """The compressed image seen on the reference grid through ``sim``, and where it is usable.

        ``step > 1``: on every ``step``-th reference pixel along each axis
        only; ``smooth``: the image smoothed by ``MATCH_SMOOTHING`` (linear
        interpolation only).
        """
        ny, nx = self.shape
        yy, xx = np.mgrid[0:ny:step, 0:nx:step].astype(float)
        qx, qy = sim.reference_to_frame(xx, yy)
        source = self.smooth_img if smooth else self.spline if order == 3 else self.img
        values = ndimage.map_coordinates(source, [qy, qx], order=1 if smooth else order,
                                         mode="nearest", prefilter=False)
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
    n_angle = max(360, int(np.ceil(np.pi * rmax / 2)))
    n_radius = max(256, int(np.ceil(rmax * np.log(rmax) / 2)))
    k = n_radius / np.log(rmax)  # columns per unit of log-radius
    first = int(np.ceil(k * np.log(rmin)))
    maps = [_log_polar(_spectrum(data, n), n_angle, n_radius, rmax)[:, first:]
            for data in (pair.ref, pair.img)]
    reach = int(np.ceil(k * np.log1p(MAX_SCALE_CHANGE))) if fit_scale else 0
    peaks = _peaks(_correlate_maps(*maps), reach, N_CANDIDATES)
    return [(row * 180.0 / n_angle, float(np.exp(-col / k)) if fit_scale else 1.0)
            for row, col in peaks]


def _spectrum(data, n):
    """High-pass emphasised Fourier magnitude (DC at ``n // 2``) of a Hann-windowed frame."""
    ny, nx = data.shape
    windowed = data * np.outer(np.hanning(ny), np.hanning(nx))
    mag = np.abs(fft.fftshift(fft.fft2(windowed, s=(n, n), workers=-1)))
    f = fft.fftshift(fft.fftfreq(n))
    x = np.outer(np.cos(np.pi * f), np.cos(np.pi * f))
    return mag * (1.0 - x) * (2.0 - x)  # Reddy & Chatterji's emphasis filter


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

    Candidates are ranked by the significance of their match (`_match`).
    """
    step = max(1, max(pair.shape) // 256)
    trials = []
    for rotation, s in candidates:
        sim = _with_translation(pair, Similarity(0.0, 0.0, rotation, s, center=pair.center))
        trials.append((_match(pair, sim, step)[1], sim))
    return _polish(pair, max(trials, key=lambda t: t[0])[1], fit_scale)


def _with_translation(pair, sim):
    """``sim`` with the shift that phase correlation finds once its rotation and scale are undone.

    The resampled frame ``w(p) = image(sim(p))`` shows a source of the
    reference at ``p + t`` when the frame's true shift is ``sim``'s plus
    ``s R t``.
    """
    values, usable = pair.resampled(sim, order=1)
    t = phase_correlation(pair.ref, values, upsample=4, good=(usable, usable))
    d = np.array([sim.dx, sim.dy]) + sim.matrix @ np.array(t)
    return Similarity(d[0], d[1], sim.rotation, sim.scale, center=pair.center)


def _match(pair, sim, step=1):
    """Pearson correlation of the smoothed compressed frames over the overlap, and its significance.

    Both frames are smoothed (``MATCH_SMOOTHING``) so that the smoothing of
    the noise by the interpolation, which varies with the sub-pixel offsets,
    does not favour some transforms over others. The significance
    ``r sqrt(n)`` (``n`` pixels in the overlap) ranks candidates without
    favouring a tiny overlap. ``step``: on every ``step``-th pixel along each
    axis only.
    """
    values, usable = pair.resampled(sim, step=step, smooth=True)
    n = int(usable.sum()) * step ** 2
    if n < 16:
        return 0.0, 0.0
    a, b = pair.smooth_ref[::step, ::step][usable], values[usable]
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    r = float((a * b).sum() / den) if den > 0 else 0.0
    return r, r * np.sqrt(n)


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
    ref, img = (ndimage.gaussian_filter(d, 0.5 * step + 0.5) for d in (pair.ref, pair.img))
    yy, xx = np.mgrid[step // 2:ny:step, step // 2:nx:step].astype(float)
    window = np.outer(np.hanning(yy.shape[0]), np.hanning(yy.shape[1]))
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
    """``sim`` after the Gauss-Newton steps if they improve the match, and its correlation."""
    start = sim
    for smooth in NEWTON_SMOOTHING:
        step = _newton_step(pair, sim, fit_scale, smooth)
        if step is None:
            sim = start
            break
        sim = _compose(sim, step)
    r_start, r = _match(pair, start)[0], _match(pair, sim)[0]
    return (sim, r) if r >= r_start else (start, r_start)


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
        ref, img = ndimage.gaussian_filter(ref, smooth), ndimage.gaussian_filter(img, smooth)
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
    return Similarity(dx, dy, np.rad2deg(np.arctan2(b, 1.0 + a)), np.hypot(1.0 + a, b),
                      center=pair.center)


def _compose(sim, g):
    """``sim ∘ g`` (both about the same centre): rotations add, scales multiply."""
    d = np.array([sim.dx, sim.dy]) + sim.matrix @ np.array([g.dx, g.dy])
    return Similarity(d[0], d[1], sim.rotation + g.rotation, sim.scale * g.scale,
                      center=sim.center)
