"""Coarse similarity (rotation, scale, shift) between two frames, from any start.

A source at reference pixel ``p`` appears in the frame at
``q = s R(rotation) (p - c) + c + (dx, dy)`` (DESIGN.md, `astrosr.geometry.Similarity`).
`coarse_similarity` finds ``(dx, dy, rotation, scale)`` for any rotation, a
scale within about ±10% and shifts up to a quarter of the frame, well enough
(a fraction of a pixel over the frame) for a Gauss-Newton refinement to take
over. Three steps:

1. **Rotation and scale from the Fourier magnitude**, which a translation
   does not change (Reddy & Chatterji 1996, IEEE Trans. Image Proc. 5, 1266:
   the Fourier-Mellin transform). Both frames are compressed and
   Hann-windowed (`astrosr.registration.correlation.prepare_for_fft`); the
   magnitude of their spectra, high-pass emphasised, is mapped to log-polar
   coordinates over an annulus of useful frequencies (the lowest are the
   window's and the DC's, the highest noise and, in undersampled frames,
   aliases), where a rotation is a shift along the angle and a scale a shift
   along the log-radius, and the two maps are cross-correlated. A real
   image's spectrum is symmetric, so each peak gives the rotation modulo
   180 degrees; a larger image has a smaller spectrum, so the log-radial
   shift is ``-log(scale)``.
2. **The 180-degree ambiguity and the translation.** For the strongest
   peaks, and for each angle and that angle plus 180 degrees, the frame is
   resampled onto the reference grid (through `Similarity.reference_to_frame`,
   so the convention cannot drift) and phase-correlated with the reference
   (`astrosr.registration.correlation.phase_correlation`). A translation
   ``t`` found there is a shift ``s R t`` in frame pixels. The candidate whose
   resampled frame correlates best with the reference is kept.
3. **Polish.** The frame, resampled with the estimate, is phase-correlated
   with the reference in 3x3 overlapping tiles of the overlap; the local
   shifts are fitted (least squares, outliers rejected) by a small similarity
   that corrects the estimate. Two rounds bring rotation, scale and shift to
   the precision of the tile shifts.

Why these functions: the FFTs (`scipy.fft`), the log-polar resampling
(`skimage.transform.warp_polar`), interpolation (`scipy.ndimage.map_coordinates`)
and the translation estimates (this package's `phase_correlation`) are
library code. The cross-correlation of the log-polar maps is written here
because it must be periodic along the angle but not along the log-radius,
be searched only over plausible scales, and give several peaks (candidates),
which neither `phase_correlation` nor ``skimage.registration`` exposes;
skimage has no similarity fit to local shifts with a fixed centre of rotation.
"""

import numpy as np
from scipy import fft, ndimage
from skimage.transform import warp_polar

from ..geometry import Similarity
from .correlation import phase_correlation, prepare_for_fft

__all__ = ["coarse_similarity", "CoarseSimilarity"]

#: Annulus of the spectrum used, in cycles per pixel: above the window's and the
#: DC's reach, below the noise and the aliases of undersampled frames.
FREQUENCIES = (0.03, 0.3)
#: Largest scale change searched (fraction): ``1 / (1 + x)`` to ``1 + x``.
MAX_SCALE_CHANGE = 0.12
#: Fourier-Mellin peaks tried (each with its 180-degree twin).
N_CANDIDATES = 3
#: Rounds of the tile fit, then of Gauss-Newton steps, in the polish.
TILE_ROUNDS = 1
#: Gaussian smoothing (pixels) of the frames at each Gauss-Newton step of the polish.
NEWTON_SMOOTHING = (0.0, 0.0, 0.0)
#: Pixels by which the Gauss-Newton steps may move a corner of the frame, in all.
MAX_STEP = 1.5


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
        their overlap, the frame resampled with this transform (near 1 for a
        good match on extended emission, 0.5-0.8 on noisy star fields, near 0
        when nothing matched).
    """

    def __new__(cls, dx, dy, rotation, scale, correlation=np.nan):
        self = super().__new__(cls, (float(dx), float(dy), float(rotation), float(scale)))
        self.correlation = float(correlation)
        return self

    dx = property(lambda self: self[0], doc="Shift along x (frame pixels).")
    dy = property(lambda self: self[1], doc="Shift along y (frame pixels).")
    rotation = property(lambda self: self[2], doc="Rotation in degrees.")
    scale = property(lambda self: self[3], doc="Frame pixels per reference pixel.")

    def similarity(self, center):
        """The `astrosr.geometry.Similarity` about ``center`` (the frame centre)."""
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
        frame centre ``((nx-1)/2, (ny-1)/2)``; its ``correlation`` attribute
        measures the match.

    Raises
    ------
    ValueError
        Arrays that are not 2-D, differ in shape, hold NaN or inf, are
        smaller than 16x16, or have no usable pixels.
    """
    pair = _Pair(reference, image, good)
    trials = []
    for rotation, s in _fourier_mellin(pair, scale):
        for r in (rotation, rotation + 180.0):
            sim = _with_translation(pair, Similarity(0.0, 0.0, r, s, center=pair.center))
            trials.append((_match(pair, sim), sim))
    (_, _), best = max(trials, key=lambda t: t[0][1])
    best = _polish(pair, best, scale)
    rotation = (best.rotation + 180.0) % 360.0 - 180.0
    if rotation == -180.0:
        rotation = 180.0
    return CoarseSimilarity(best.dx, best.dy, rotation, best.scale if scale else 1.0,
                            _match(pair, best)[0])


class _Pair:
    """The two frames, their usable pixels and the frame centre."""

    def __init__(self, reference, image, good):
        self.ref = np.asarray(reference, dtype=float)
        self.img = np.asarray(image, dtype=float)
        if self.ref.ndim != 2 or self.ref.shape != self.img.shape:
            raise ValueError(f"reference and image must be 2-D arrays of the same shape, got "
                             f"{self.ref.shape} and {self.img.shape}")
        if min(self.ref.shape) < 16:
            raise ValueError(f"frames must be at least 16x16, got {self.ref.shape}")
        if not (np.all(np.isfinite(self.ref)) and np.all(np.isfinite(self.img))):
            raise ValueError("reference and image must not hold NaN or inf (fill them first)")
        if good is None:
            good = (np.ones(self.ref.shape, bool), np.ones(self.ref.shape, bool))
        self.good_ref, self.good_img = (np.asarray(g, dtype=bool) for g in good)
        if self.good_ref.shape != self.ref.shape or self.good_img.shape != self.ref.shape:
            raise ValueError("good must be two boolean maps of the frames' shape")
        if not (self.good_ref.any() and self.good_img.any()):
            raise ValueError("reference or image has no usable pixels")
        self.all_good = bool(self.good_img.all())
        ny, nx = self.ref.shape
        self.center = ((nx - 1) / 2.0, (ny - 1) / 2.0)

    def resampled(self, sim, order=3):
        """The image seen on the reference grid through ``sim``, and where it is usable."""
        ny, nx = self.ref.shape
        yy, xx = np.indices((ny, nx), dtype=float)
        qx, qy = sim.reference_to_frame(xx, yy)
        inside = (qx >= 0) & (qx <= nx - 1) & (qy >= 0) & (qy <= ny - 1)
        values = ndimage.map_coordinates(self.img, [qy, qx], order=order, mode="nearest")
        usable = inside & self.good_ref
        if not self.all_good:
            usable &= ndimage.map_coordinates(self.good_img.astype(float), [qy, qx], order=1,
                                              mode="nearest") > 0.999
        return values, usable


# --------------------------------------------------------------------------- step 1


def _fourier_mellin(pair, fit_scale):
    """``(rotation mod 180, scale)`` of the strongest log-polar correlation peaks."""
    n = max(pair.ref.shape)
    rmin, rmax = max(4.0, FREQUENCIES[0] * n), FREQUENCIES[1] * n
    n_angle = max(360, int(np.ceil(np.pi * rmax)))
    n_radius = max(256, int(np.ceil(rmax * np.log(rmax))))
    k = n_radius / np.log(rmax)  # columns per unit of log-radius
    first = int(np.ceil(k * np.log(rmin)))
    maps = [_log_polar(_spectrum(d, g, n), n_angle, n_radius, rmax)[:, first:]
            for d, g in ((pair.ref, pair.good_ref), (pair.img, pair.good_img))]
    corr = _correlate_maps(*maps)
    reach = int(np.ceil(k * np.log1p(MAX_SCALE_CHANGE))) if fit_scale else 0
    peaks = _peaks(corr, reach, N_CANDIDATES)
    return [(row * 180.0 / n_angle, float(np.exp(-col / k)) if fit_scale else 1.0)
            for row, col in peaks]


def _spectrum(data, good, n):
    """High-pass emphasised Fourier magnitude (DC at ``n // 2``) of the prepared frame."""
    mag = np.abs(fft.fftshift(fft.fft2(prepare_for_fft(data, good, True), s=(n, n), workers=-1)))
    f = fft.fftshift(fft.fftfreq(n))
    x = np.outer(np.cos(np.pi * f), np.cos(np.pi * f))
    return mag * (1.0 - x) * (2.0 - x)  # Reddy & Chatterji's emphasis filter


def _log_polar(mag, n_angle, n_radius, rmax):
    """Half-plane log-polar map (rows: angle 0..180 deg, columns: log-radius), standardised.

    Each column (one radius) is given zero mean and unit variance, which
    removes the radial envelope (PSF, power-law sky) that would pull the
    scale towards 1.
    """
    n = mag.shape[0]
    lp = warp_polar(mag, center=(n // 2, n // 2), radius=rmax, output_shape=(2 * n_angle, n_radius),
                    scaling="log", order=1)[:n_angle]
    lp = lp - lp.mean(axis=0)
    lp = lp / np.where(lp.std(axis=0) > 0, lp.std(axis=0), 1.0)
    return lp


def _correlate_maps(a, b):
    """Cross-correlation of two log-polar maps: periodic in angle, zero-padded in log-radius.

    ``corr[i, j]`` is large when ``b`` is ``a`` shifted by ``i`` rows and
    ``j`` columns (negative ``j`` wrapped to the end).
    """
    w = np.hanning(a.shape[1] + 2)[1:-1]
    m = 2 * a.shape[1]
    fa = fft.rfft2(a * w, s=(a.shape[0], m), workers=-1)
    fb = fft.rfft2(b * w, s=(a.shape[0], m), workers=-1)
    return fft.irfft2(fb * np.conj(fa), s=(a.shape[0], m), workers=-1)


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


def _with_translation(pair, sim):
    """``sim`` with the shift that phase correlation finds once its rotation and scale are undone.

    The resampled frame ``w(p) = image(sim(p))`` shows a source of the
    reference at ``p + t`` when the frame's true shift is ``sim``'s plus
    ``s R t``.
    """
    values, usable = pair.resampled(sim, order=1)
    t = phase_correlation(pair.ref, values, upsample=10, good=(usable, usable))
    d = np.array([sim.dx, sim.dy]) + sim.matrix @ np.array(t)
    return Similarity(d[0], d[1], sim.rotation, sim.scale, center=pair.center)


def _match(pair, sim):
    """Pearson correlation of the compressed frames over the overlap, and its significance.

    The significance ``r sqrt(n)`` (``n`` pixels in the overlap) ranks
    candidates without favouring a tiny overlap.
    """
    values, usable = pair.resampled(sim, order=1)
    n = int(usable.sum())
    if n < 16:
        return 0.0, 0.0
    a = prepare_for_fft(pair.ref, usable, False)[usable]
    b = prepare_for_fft(values, usable, False)[usable]
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    r = float((a * b).sum() / den) if den > 0 else 0.0
    return r, r * np.sqrt(n)


# --------------------------------------------------------------------------- step 3


def _polish(pair, sim, fit_scale):
    """``sim`` corrected by the tile fit, then by Gauss-Newton steps (kept if they stay close).

    The tiles' phase correlations reach far (a quarter of a tile) but are
    noisy; the Gauss-Newton steps use every pixel but only converge from
    within about a PSF width. Steps that move any corner of the frame by more
    than ``MAX_STEP`` pixels in all are rejected.
    """
    for _ in range(TILE_ROUNDS):
        correction = _tile_fit(pair, sim, fit_scale)
        if correction is None:
            break
        sim = _compose(sim, correction)
    start = sim
    for smooth in NEWTON_SMOOTHING:
        step = _newton_step(pair, sim, fit_scale, smooth)
        if step is None:
            return start
        sim = _compose(sim, step)
    return sim if _largest_move(start, sim, pair.ref.shape) <= MAX_STEP else start


def _largest_move(a, b, shape):
    """Largest distance between where ``a`` and ``b`` put the corners of the frame."""
    ny, nx = shape
    x, y = np.array([0.0, nx - 1, nx - 1, 0.0]), np.array([0.0, 0.0, ny - 1, ny - 1])
    (ax, ay), (bx, by) = a.reference_to_frame(x, y), b.reference_to_frame(x, y)
    return float(np.hypot(ax - bx, ay - by).max())


def _newton_step(pair, sim, fit_scale, smooth=0.0):
    """One Gauss-Newton step: the similarity ``G`` with ``image(sim(G(p))) ≈ α reference(p) + β``.

    Linearised about ``G = identity`` on the compressed frames, with the mean
    of the two frames' gradients (efficient second-order minimisation,
    Benhimane & Malis 2004), over the overlap less 2 pixels; None when the
    overlap is too small.
    """
    values, usable = pair.resampled(sim, order=3)
    use = ndimage.binary_erosion(usable, iterations=2 + int(np.ceil(2 * smooth)))
    if use.sum() < 64:
        return None
    ref = prepare_for_fft(pair.ref, usable, False)
    img = prepare_for_fft(values, usable, False)
    if smooth > 0:
        ref, img = ndimage.gaussian_filter(ref, smooth), ndimage.gaussian_filter(img, smooth)
    gy, gx = (g[use] for g in np.gradient(0.5 * (img + ref)))
    ref = ref[use]
    yy, xx = np.nonzero(use)
    ux, uy = xx - pair.center[0], yy - pair.center[1]
    columns = [gy * ux - gx * uy, gx, gy] + ([gx * ux + gy * uy] if fit_scale else [])
    design = np.column_stack(columns + [-ref, -np.ones_like(ref)])
    params = np.linalg.solve(design.T @ design, -design.T @ img[use])
    b, dx, dy = params[:3]
    a = params[3] if fit_scale else 0.0
    return Similarity(dx, dy, np.rad2deg(np.arctan2(b, 1.0 + a)), np.hypot(1.0 + a, b),
                      center=pair.center)


def _tile_fit(pair, sim, fit_scale):
    """The similarity ``G`` (about the centre) with ``image ≈ reference through sim∘G``, or None.

    The resampled frame ``w(p) = image(sim(p))`` shows a reference source
    at ``x`` at ``G(x)``, ``G = sim⁻¹ ∘ truth``: the local shifts
    ``G(x_k) - x_k`` at the tile centres ``x_k`` give ``G``.
    """
    values, usable = pair.resampled(sim, order=3)
    points, shifts = [], []
    for rows, cols in _tiles(usable):
        g = usable[rows, cols]
        if g.mean() < 0.6:
            continue
        shifts.append(phase_correlation(pair.ref[rows, cols], values[rows, cols], upsample=50,
                                        good=(g, g)))
        points.append(_weighted_centre(g, rows, cols))
    if len(points) < 3:
        return None
    return _fit_similarity(np.array(points) - pair.center, np.array(shifts), fit_scale,
                           pair.center)


def _tiles(usable):
    """3x3 overlapping tiles (half the size of the overlap's bounding box) as slice pairs."""
    ys, xs = np.nonzero(usable)
    out = []
    for lo, hi in ((ys.min(), ys.max() + 1), (xs.min(), xs.max() + 1)):
        size = max((hi - lo) // 2, min(16, hi - lo))
        starts = np.linspace(lo, hi - size, 3).round().astype(int)
        out.append([slice(s, s + size) for s in starts])
    return [(r, c) for r in out[0] for c in out[1]]


def _weighted_centre(g, rows, cols):
    """Centre of a tile's usable pixels weighted by the Hann window of the correlation."""
    from scipy.signal.windows import hann

    w = np.outer(hann(g.shape[0], sym=False), hann(g.shape[1], sym=False)) * g
    yy, xx = np.indices(g.shape)
    return (cols.start + (xx * w).sum() / w.sum(), rows.start + (yy * w).sum() / w.sum())


def _fit_similarity(u, shifts, fit_scale, center):
    """Least-squares similarity ``G(x) = m (x - c) + c + d`` to ``G(x_k) - x_k``, outliers removed.

    ``u = x_k - c``; ``m = [[1 + a, -b], [b, 1 + a]]`` (``a = 0`` without
    scale). Tiles more than 3 robust sigma (and 0.2 px) off the fit are
    dropped once.
    """
    keep = np.ones(len(u), bool)
    for _ in range(2):
        design = _design(u[keep], fit_scale)
        params = np.linalg.lstsq(design, shifts[keep].ravel(), rcond=None)[0]
        resid = np.hypot(*(shifts - (_design(u, fit_scale) @ params).reshape(-1, 2)).T)
        sigma = 1.4826 * np.median(resid[keep])
        new = resid <= max(3.0 * sigma, 0.2)
        if new.sum() < 3 or np.array_equal(new, keep):
            break
        keep = new
    a = params[3] if fit_scale else 0.0
    b, dx, dy = params[:3]
    return Similarity(dx, dy, np.rad2deg(np.arctan2(b, 1.0 + a)), np.hypot(1.0 + a, b),
                      center=center)


def _design(u, fit_scale):
    """Rows ``(dx, dy)`` of the linear model: columns ``b, d_x, d_y`` (and ``a``)."""
    n = len(u)
    rows = np.zeros((2 * n, 4 if fit_scale else 3))
    rows[0::2, 0], rows[1::2, 0] = -u[:, 1], u[:, 0]
    rows[0::2, 1], rows[1::2, 2] = 1.0, 1.0
    if fit_scale:
        rows[0::2, 3], rows[1::2, 3] = u[:, 0], u[:, 1]
    return rows


def _compose(sim, g):
    """``sim ∘ g`` (both about the same centre): rotations add, scales multiply."""
    d = np.array([sim.dx, sim.dy]) + sim.matrix @ np.array([g.dx, g.dy])
    return Similarity(d[0], d[1], sim.rotation + g.rotation, sim.scale * g.scale,
                      center=sim.center)
