"""The Richardson-Lucy engine: noise model, start, stopping rules, outliers (core layer).

Plain arrays in, plain arrays out: a *stack* here is anything with cubes
``data``, ``var`` and ``good`` of shape ``(n, ny, nx)`` (`astrosr.FrameStack`,
or one frame), and an *operator* is `astrosr.forward.ObservationOperator`
(shifts, FFT) or `astrosr.forward.PixmapOperator` (any geometry): the
observation model with its exact adjoint. `astrosr.fuse` (reconstruct),
`astrosr.enhance` (observation consistency) and `astrosr.MultiFrameSR` call
these public names.

Multi-frame Richardson-Lucy is the maximum-likelihood estimator for Poisson
data; each frame is put on a count scale from its variance (`PoissonNoise`),
accelerated as Biggs & Andrews (1997). Outliers (`clean_mask`) are judged
against the model observed through each frame's geometry, as DrizzlePac's
``driz_cr``.
"""

import warnings

import numpy as np
from astropy.stats import sigma_clipped_stats
from scipy import ndimage

from .progress import progress_bar
from .strips import FineStore, Strips

__all__ = ["PoissonNoise", "richardson_lucy", "start_image", "clean_mask", "median_model",
           "reject_against", "CONVERGED_TOL"]

#: Reconstruct's default stopping rule: converged when an iteration moves less
#: than this fraction of the image's structure.
CONVERGED_TOL = 1e-4
# Rejection: a frame pixel is an outlier when |data - model| exceeds
# kappa * sigma + _DERIV_SCALE * (local spread of the model), DrizzlePac's form.
_DERIV_SCALE = 0.7
# Rounds of rejection against provisional models of this many iterations.
_REJECT_ROUNDS = 3
_PROVISIONAL_ITER = 30
# Fine pixels (in the unobserved margin) seen with less than this fraction of
# the best coverage are not solved for: RL is unstable where the data barely
# constrain the sky.
_MIN_COVERAGE = 1e-3
# Frames with a flat variance are modelled as Poisson counts with this many
# counts on the sky (1/10 relative noise): nearly Gaussian, yet quick to converge.
_FLAT_COUNTS = 100.0
# ... and so are frames whose variance changes by less than this fraction across their data.
_FLAT_CHANGE = 1e-3
# The discrepancy rule gives up when the chi-square has not fallen for this many iterations.
_STALL_ITER = 30
# Rows of an image read at once for its statistics.
_STAT_ROWS = 1024


# --------------------------------------------------------------------------- outliers


def median_model(singles):
    """Robust first model from per-frame fine images ``(n, NY, NX)`` (NaN where a frame is absent).

    The median over frames, so that a cosmic ray in one frame cannot hide;
    returns ``(image, covered)``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels off the field
        model = np.nanmedian(singles, axis=0)
    return np.nan_to_num(model), np.isfinite(model)


def reject_against(stack, plain, model, kappa):
    """Outliers against a fine model ``(image, covered)`` observed without PSF by ``plain``.

    Only frame pixels that the model covers entirely are judged; the limit
    allows for the blurred model's error at sharp features.
    """
    image, covered = model
    predicted = plain.crop_frames(plain.forward(plain.embed_image(image)))
    judged = plain.crop_frames(plain.forward(plain.embed_image(covered.astype(float)))) > 0.999
    limit = kappa * np.sqrt(np.where(stack.good, stack.var, np.inf))
    limit = limit + _DERIV_SCALE * _local_spread(predicted)
    return stack.good & judged & (np.abs(stack.data - predicted) > limit)


def _local_spread(cube):
    """Largest difference of each pixel from its 8 neighbours (the model's sharpness)."""
    size = (1, 3, 3)
    return np.maximum(ndimage.maximum_filter(cube, size=size) - cube,
                      cube - ndimage.minimum_filter(cube, size=size))


def clean_mask(stack, op, noise, kappa, first):
    """Good-pixel mask without outliers, and the provisional model it was judged by.

    ``first`` is the first guess of the outliers, judged against the median of
    the frames on the fine grid (`median_model`, `reject_against`: robust,
    but blurred, hence the allowance for sharp features). Then provisional models are fitted
    and each frame is compared with its prediction: outliers beyond ``kappa``
    sigma are flagged, and pixels flagged before come back if the model fits
    them. Stops when the mask no longer changes.
    """
    good = stack.good & ~first
    # Only pixels whose footprint the model fully covers are judged: at the
    # frames' edges the sky beyond the field is barely constrained.
    observed = _inverse_coverage(Strips(op), stack.good).array() > 0
    judged = op.crop_frames(op.forward(observed.astype(op.real_dtype))) > 0.999
    image = None
    for _ in range(_REJECT_ROUNDS):
        image, _info = richardson_lucy(op, stack, good, noise, image, -np.inf, _PROVISIONAL_ITER)
        resid = noise.above(stack.data) - op.crop_frames(op.forward(image))
        new = stack.good & ~(judged & (np.abs(resid) > kappa * np.sqrt(stack.var)))
        if np.array_equal(new, good):
            break
        good = new
    return good, image


class PoissonNoise:
    """Frames as scaled Poisson counts: ``variance = gain_f * (model + pedestal_f + b_f)``.

    Richardson-Lucy is the maximum-likelihood estimator for Poisson data, so
    each frame is put on a count scale: ``gain_f`` and the effective
    background ``b_f`` (sky plus read-noise variance, in data units; the
    standard shift of Snyder et al. 1993 for read noise) come from a straight
    line fitted to the variance against the data. ``background`` (one value
    per frame, 0 included) given by the user replaces ``b_f``; None: fitted.

    A frame whose sky level departs from zero by more than its noise (a sky
    or bias pedestal that was not subtracted, or an over-subtracted one) has
    that level, less one sigma of slack, as its ``pedestal``: a known
    background of the Poisson model, not light of the image. The image then
    holds only the light above the sky, as for sky-subtracted frames, so the
    iterations converge on the sources and the stopping rules measure them,
    not the pedestal; the mean pedestal is added back to the result.
    """

    def __init__(self, stack, background=None):
        n = len(stack)
        self.gain, self.background, self.pedestal = np.ones(n), np.zeros(n), np.zeros(n)
        given = background is not None
        # A frame with no good pixel (all outside a rotated output grid) is not fitted.
        self.fitted = np.array([g.any() for g in stack.good])
        for i, (d, v, g) in enumerate(zip(stack.data, stack.var, stack.good)):
            if not self.fitted[i]:
                continue
            sigma = float(np.sqrt(np.median(v[g])))
            floor = _sky_floor(d, g, sigma)
            line = None if given else _variance_line(d[g], v[g])
            if line is None and not given:
                # Flat variance (no Poisson term seen, e.g. a frame without
                # uncertainty): Gaussian noise, as Poisson counts of
                # _FLAT_COUNTS on the sky, in any unit.
                self.gain[i] = sigma / np.sqrt(_FLAT_COUNTS)
                self.pedestal[i] = _pedestal(floor, sigma, np.inf)
                self.background[i] = np.sqrt(_FLAT_COUNTS) * sigma - self.pedestal[i]
                continue
            self.gain[i], self.background[i] = line if line is not None else (1.0, background[i])
            self.pedestal[i] = _pedestal(floor, sigma, floor[0] + self.background[i])
        self.source = "background=" if given else "variance vs data fit"

    def above(self, data):
        """The frames ``(n, ny, nx)`` less their pedestals."""
        return data - self.pedestal[:, None, None]

    def mean_pedestal(self):
        """The pedestal restored to the result: the mean over the fitted frames, per input pixel."""
        return float(np.mean(self.pedestal[self.fitted])) if self.fitted.any() else 0.0


def _sky_floor(frame, good, sigma, box=5):
    """A frame's darkest level, and whether most of the frame is one flat sky at that level.

    The darkest level is the 1st percentile of the ``box x box`` local means
    (they average the noise down). Where it lies within 2 sigma of the
    frame's sigma-clipped median, most of the frame is one flat sky. The box
    is no larger than the frame: in a frame of 2 or 4 pixels across, a 5-pixel
    box (with its reflections) would make every local mean the frame's mean.
    """
    size = tuple(min(box, n) for n in frame.shape)
    num = ndimage.uniform_filter(np.where(good, frame, 0.0), size)
    den = ndimage.uniform_filter(good.astype(float), size)
    inner = good & (den > 0.5)
    low = float(np.percentile((num / np.maximum(den, 1e-12))[inner if inner.any() else good], 1.0))
    _, median, _ = sigma_clipped_stats(frame[good], sigma=3.0, maxiters=5)
    return low, bool(median - low < 2.0 * sigma)


def _pedestal(floor, sigma, sky_counts):
    """A frame's pedestal from its darkest level ``(low, flat)``: ``low`` less one sigma, or 0.

    A frame whose darkest light lies below zero beyond the noise (an
    over-subtracted bias or sky) needs one, or a non-negative image could not
    fit it. One whose flat sky lies above zero beyond the noise (a sky or bias
    pedestal) gets one. Sky-subtracted frames (the darkest light within the
    noise of zero) and fields filled with emission (no flat sky: the finer
    grid may hold darker sky between the sources than any frame pixel shows)
    get none. ``sky_counts`` is the Poisson mean of the darkest sky without
    the pedestal (in data units); the pedestal leaves at least a tenth of
    it, so the model stays positive.
    """
    low, flat = floor
    wanted = low < -2.0 * sigma or (flat and low > sigma)
    if not wanted or not sky_counts > 0:
        return 0.0
    return float(max(low - sigma, low - 0.9 * sky_counts))


def _variance_line(data, var):
    """Fit ``var = gain * (data + b)`` robustly: ``(gain, b)``, or None for a flat variance."""
    lo, hi = np.percentile(data, [5, 99.5])
    edges = np.linspace(lo, hi, 21)
    idx = np.digitize(data, edges)
    x, y = [], []
    for k in range(1, len(edges)):
        sel = idx == k
        if sel.sum() >= 10:
            x.append(np.median(data[sel]))
            y.append(np.median(var[sel]))
    if len(x) >= 3:
        slope, intercept = np.polyfit(x, y, 1)
        # A variance that changes by less than _FLAT_CHANGE over the data's range is flat: a
        # constant uncertainty fits a round-off slope (1e-17), whose background (1e16) would
        # leave the iterations at their start, "converged".
        if slope * (x[-1] - x[0]) > _FLAT_CHANGE * np.median(y) and intercept > 0:
            return float(slope), float(intercept / slope)
    return None


def richardson_lucy(op, stack, good, noise, start, tol, max_iter, stop="discrepancy",
                     sources=None, progress=False, strips=None):
    """Multi-frame Richardson-Lucy with Biggs-Andrews acceleration.

    The image is the light above each frame's pedestal (`PoissonNoise`).
    Stopping rules: ``"discrepancy"`` stops at the first iterate whose model
    reproduces the frames with reduced chi-square <= 1 + tol (default tol:
    3 standard deviations of a perfect model's reduced chi-square), the
    smallest departure from the start that the data allow. With ``sources``
    (a mask of the frames' pixels), the chi-square over those pixels alone
    must also pass, with its own tolerance: over a whole image the sky's
    many pixels hide misfits of the sources (a star's flux), which are what
    photometry measures. When the frames cannot be fitted that well (a wrong
    PSF), it ends when the chi-square has stopped falling for `_STALL_ITER`
    iterations, or at ``max_iter``, and returns the iterate that fitted best.
    ``"converged"`` runs to the maximum-likelihood solution: it stops when an
    iteration moves less than ``tol`` (default `CONVERGED_TOL`) of the
    image's structure (its flux above its own median: what the data
    constrain, never a sky pedestal). The returned ``chi2`` is that of the
    returned image.

    ``strips`` (`astrosr.strips.Strips`) applies the operator strip by strip
    with the images of the fine grid in `~astrosr.strips.FineStore` objects
    (on disk if it says so); ``start`` may then be a store, and the result is
    one unless the strips keep their images in memory. Default: one strip,
    in memory.

    Raises
    ------
    ValueError
        When no good pixel is left to fit.
    """
    if not np.any(good):
        raise ValueError("no frame pixel is left to fit: all are masked, outside the output "
                         "grid, or rejected as outliers (frames that disagree everywhere: "
                         "check the geometry and the uncertainty, or pass reject=False)")
    strips = Strips(op) if strips is None else strips
    inv_gain = 1.0 / noise.gain
    # Held through the iterations: the frames above their pedestals and their
    # inverse variances (`_FitMeasure`) and the predicted frames, in the
    # operator's precision; the counts are formed frame by frame from them.
    offset = noise.background + noise.pedestal
    inv_norm = _inverse_coverage(strips, (np.where(g, w, 0.0) for g, w in zip(good, inv_gain)))
    fit = _FitMeasure(op, noise, stack, good, sources)
    if tol is None:
        tol = 3.0 * np.sqrt(2.0 / fit.n_pix) if stop == "discrepancy" else CONVERGED_TOL
    if start is None:
        level = max(fit.total_above() / fit.n_pix / op.scale ** 2, 1e-3)
        start = strips.store(np.where(inv_norm.array() > 0, level, 0.0).astype(op.real_dtype))
    elif not isinstance(start, FineStore):
        start = strips.store(np.asarray(start, dtype=op.real_dtype))
    iterates = _Iterates(strips, start, inv_norm, structure=stop == "converged")
    best, stopped, x = (np.inf, None, None), "max_iter", start
    bar = progress_bar(total=int(max_iter), desc="Richardson-Lucy", unit="iteration",
                       enabled=progress)
    for it in range(1, int(max_iter) + 1):
        bar.update()
        y = iterates.extrapolated()
        predicted = strips.forward(y)
        chi2, chi2_src = fit.chi2(predicted)
        if stop == "discrepancy":
            if chi2 <= 1.0 + tol and chi2_src <= 1.0 + fit.tol_src:
                x, stopped = y, "discrepancy"
                break
            if chi2 < best[0] * (1.0 - 1e-4):
                best = (chi2, y, it)
            elif it - best[2] >= _STALL_ITER:
                stopped = "stalled"
                break
        x = iterates.update(y, fit.count_ratio(predicted, good, offset, inv_gain))
        # In float64: the floor 1e-300 is 0 in the single precision of the step.
        if stop == "converged" and iterates.change < tol:
            stopped = "converged"
            break
    bar.close()
    if stop == "discrepancy" and stopped != "discrepancy":
        x = best[1] if best[1] is not None else x  # the iterate that fitted best
    if stopped != "discrepancy":
        chi2, chi2_src = fit.chi2(strips.forward(x))
    info = {"chi2": chi2, "iterations": it, "stopped": stopped, "noise": noise.source,
            "chi2_sources": chi2_src if fit.n_src else None}
    return (x.array() if x.in_memory else x), info


class _Iterates:
    """The Biggs-Andrews iterates of Richardson-Lucy, strip by strip (`astrosr.strips`).

    Holds the iterate, the one before and the last two steps as
    `~astrosr.strips.FineStore` images; `extrapolated` gives the point at
    which the next RL step is taken, `update` takes it from the frames'
    count ratios. Sums over the image (the step sizes' dot products, the
    change and the image's structure for the convergence rule) add up over
    the strips, so they are those of the whole image.
    """

    def __init__(self, strips, start, inv_norm, structure):
        self.strips, self.inv_norm, self.track = strips, inv_norm, structure
        self.x, self.previous, self.step, self.taken = start, None, None, 0
        self.cross = self.step_norm = self.before_norm = 0.0
        self.change = np.inf
        self._median = 0.0

    def extrapolated(self):
        """Biggs & Andrews (1997) vector extrapolation of the iterates, kept >= 0."""
        if self.taken < 2:
            y = self.x
        else:
            alpha = min(max(self.cross / max(self.before_norm, 1e-300), 0.0), 0.98)
            y = self.strips.store()
            for first, stop in self._fine_bounds():
                x = self.x.read(first, stop)
                out = x - self.previous.read(first, stop)
                out *= alpha
                out += x
                y.write(first, np.maximum(out, 0.0, out=out))
        if self.track:
            self._median = self._sample_median(y)
        return y

    def update(self, y, ratio):
        """The next iterate from ``y`` and the frames' count ratios (a padded coarse cube)."""
        new, step = self.strips.store(), self.strips.store()
        cross = step_norm = change = structure = 0.0
        for (first, stop), (lo, hi) in zip(self.strips.bounds, self._fine_bounds()):
            back = self.strips.adjoint(ratio, first, stop)
            at = y.read(lo, hi)
            back *= at
            back *= self.inv_norm.read(lo, hi)
            diff = back - at
            flat = diff.ravel()
            step_norm += float(np.dot(flat, flat))
            if self.step is not None:
                cross += float(np.dot(flat, self.step.read(lo, hi).ravel()))
            if self.track:
                change += float(np.sum(np.abs(diff), dtype=float))
                values = at[self.inv_norm.read(lo, hi) > 0]
                structure += float(np.sum(np.abs(values - self._median), dtype=float))
            new.write(lo, back)
            step.write(lo, diff)
        self.previous, self.x, self.step, self.taken = self.x, new, step, self.taken + 1
        self.before_norm, self.step_norm, self.cross = self.step_norm, step_norm, cross
        self.change = change / max(structure, 1e-300)
        return new

    def _fine_bounds(self):
        return [self.strips.fine_rows(first, stop) for first, stop in self.strips.bounds]

    def _sample_median(self, y):
        """The median of every 16th observed pixel, in the order of the whole image's pixels."""
        samples, seen = [], 0
        for lo, hi in self._fine_bounds():
            values = y.read(lo, hi)[self.inv_norm.read(lo, hi) > 0]
            samples.append(values[(-seen) % 16::16])
            seen += values.size
        return float(np.median(np.concatenate(samples)))


def _inverse_coverage(strips, weights):
    """``1 / A^T w`` on the fine pixels the frames constrain well enough to be solved for, else 0.

    ``weights`` are the frames' weights (an iterable of ``(ny, nx)``); RL is
    unstable where the data barely constrain the sky (`_MIN_COVERAGE`).
    """
    op = strips.op
    cube = op.embed_frames(weights, op.real_dtype)
    norm, peak = strips.store(), 0.0
    for first, stop in strips.bounds:
        rows = strips.adjoint(cube, first, stop)
        peak = max(peak, float(rows.max()))
        norm.write(strips.fine_rows(first, stop)[0], rows)
    for first, stop in strips.bounds:
        lo, hi = strips.fine_rows(first, stop)
        rows = norm.read(lo, hi)
        observed = rows > _MIN_COVERAGE * peak
        norm.write(lo, np.where(observed, 1.0 / np.where(observed, rows, 1.0), 0.0))
    return norm


class _FitMeasure:
    """Reduced chi-square of the frames (and of their source pixels) against a model.

    Works frame by frame on the stack's own arrays: the frames above their
    pedestals are never held as a cube of their own.
    """

    def __init__(self, op, noise, stack, good, sources):
        self.op, self.stack, self.good, self.pedestal = op, stack, good, noise.pedestal
        self.n_pix = int(good.sum())
        self.sources = None if sources is None else sources & good
        self.n_src = 0 if self.sources is None else int(self.sources.sum())
        self.tol_src = 3.0 * np.sqrt(2.0 / max(self.n_src, 1))

    def above(self, i):
        """Frame ``i`` less its pedestal."""
        return self.stack.data[i] - self.pedestal[i]

    def total_above(self):
        """The frames' total above their pedestals, over the good pixels."""
        return sum(float(np.sum(self.above(i)[g])) for i, g in enumerate(self.good))

    def chi2(self, predicted):
        """``(chi2_red, chi2_red of the source pixels or 0)`` of a predicted padded cube."""
        inner = self.op.crop_frames(predicted)
        total = on_sources = 0.0
        for i, (g, v) in enumerate(zip(self.good, self.stack.var)):
            chi2_map = np.where(g, (self.above(i) - inner[i]) ** 2 / np.where(g, v, 1.0), 0.0)
            total += float(np.sum(chi2_map))
            if self.n_src:
                on_sources += float(np.sum(chi2_map[self.sources[i]]))
        return total / self.n_pix, (on_sources / self.n_src if self.n_src else 0.0)

    def count_ratio(self, predicted, good, offset, inv_gain):
        """In place: each frame's counts over its predicted counts, over its gain; 0 off ``good``.

        The counts are the data plus ``offset`` (background and pedestal), and
        so is the model. A model below zero (the ringing of a band-limited
        shift of a kernel sampled below Nyquist) counts as zero: with the
        background, the ratio stays bounded.
        """
        inner = self.op.crop_frames(predicted)
        for i, (g, b, w) in enumerate(zip(good, offset, inv_gain)):
            model = np.maximum(inner[i], 0.0)
            model += b
            np.maximum(model, 1e-12, out=model)
            ratio = np.clip(self.above(i) + b, 0.0, None)
            ratio *= w
            ratio /= model
            predicted[i] = 0.0
            inner[i] = np.where(g, ratio, 0.0)
        return predicted


def start_image(op, fine, stack, good, noise, strips=None):
    """A positive first iterate on the padded grid from an image of the field.

    The iterations work on the light above the frames' pedestals
    (`PoissonNoise`), so the mean pedestal per fine pixel is taken off
    ``fine`` (per-pixel flux on the output grid) first. Richardson-Lucy keeps
    zeros at zero, so pixels are raised to a small floor; the unobserved
    margin starts at the image's mean level. Raising negative noise adds
    light, so the start is scaled to give, observed, the frames' total flux
    above their pedestals (which the iterations then keep).

    ``fine`` is an array of the unpadded field or, with ``strips``
    (`astrosr.strips.Strips`), a `~astrosr.strips.FineStore` of it; the
    start is then built strip by strip, in a store.
    """
    strips = Strips(op) if strips is None else strips
    fine = fine if isinstance(fine, FineStore) else FineStore(fine.shape, float, array=fine)
    pedestal = noise.mean_pedestal() / op.scale ** 2
    total = total_abs = 0.0
    for first in range(0, fine.shape[0], _STAT_ROWS):
        rows = fine.read(first, min(first + _STAT_ROWS, fine.shape[0])) - pedestal
        total, total_abs = total + float(np.sum(rows)), total_abs + float(np.sum(np.abs(rows)))
    size = float(np.prod(fine.shape))
    floor = 1e-3 * max(total_abs / size, 1e-12)
    margin = max(total / size, floor)
    start = strips.store()
    o = op.margin * op.scale
    for first, stop in strips.bounds:
        lo, hi = strips.fine_rows(first, stop)
        rows = np.full((hi - lo, op.fine_shape[1]), margin, dtype=op.real_dtype)
        a, b = max(lo, o), min(hi, o + fine.shape[0])
        if b > a:
            rows[a - lo:b - lo, o:o + fine.shape[1]] = np.clip(fine.read(a - o, b - o) - pedestal,
                                                                floor, None)
        start.write(lo, rows)
    predicted = op.crop_frames(strips.forward(start))
    factor = float(np.sum(noise.above(stack.data)[good])) / max(float(np.sum(predicted[good])),
                                                                1e-300)
    for first, stop in strips.bounds:
        lo, hi = strips.fine_rows(first, stop)
        start.write(lo, start.read(lo, hi) * factor)
    return start.array() if start.in_memory else start
