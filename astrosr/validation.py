"""Held-out frames: how well a result predicts frames it never saw, and errors from the folds.

A dithered stack carries its own test set. Split its frames into ``k``
folds (`frame_folds`); fit each fold's result to the other frames
(`held_out` takes a fold's pixels out of a stack, so the grid, the
reference and the operator stay those of the whole stack); and observe
the result at the held-out frames' geometry through the same model
(`astrosr.fusion.predict_frames`). The reduced chi-square of the
held-out frames against that prediction (`heldout_chi2`, summed over the
folds by `HeldOutScores`) is a score without a truth: noise cannot be
predicted, so a result that fits the noise of its own frames (or invents
structure) predicts other frames worse than one that holds only what the
frames share. `astrosr.MultiFrameSR` uses it to choose between its
candidates (the fusion, the refined image, the consistency fits).

The fold results also give the result's errors (`fold_variance` per
pixel, `aperture_errors` for aperture sums, which hold the correlations
between pixels that a per-pixel variance cannot): the delete-a-group
jackknife of the fold results (Efron & Stein 1981; Shao & Wu 1989), the
noise's part, plus the spread between the candidates that all reproduce
the frames, the part the frames cannot decide.
"""

from itertools import combinations

import numpy as np
from scipy import ndimage

__all__ = ["frame_folds", "held_out", "HeldOutScores", "heldout_chi2", "jackknife_variance",
           "fold_variance", "aperture_errors", "BLOCK"]

#: Side (frame pixels) of the blocks that are the independent units of the paired test:
#: larger than the PSF and than most sources' errors, small enough to give a frame of
#: 128 x 128 pixels 64 of them.
BLOCK = 16


def frame_folds(n, k):
    """``k`` folds of ``n`` frames: arrays of frame indices, interleaved (fold ``j``: j, j+k, ...).

    Interleaving spreads every fold over the dither pattern (frames taken in
    sequence walk through it), so each fold's complement still samples all
    of it.

    Raises
    ------
    ValueError
        ``k`` < 2 or more than ``n``.
    """
    n, k = int(n), int(k)
    if not 2 <= k <= n:
        raise ValueError(f"k-fold validation needs 2 <= folds <= frames ({n}), got {k}")
    return [np.arange(j, n, k) for j in range(k)]


def held_out(stack, held):
    """``stack`` (`astrosr.FrameStack`) with no good pixel in the frames ``held`` (indices)."""
    keep = np.ones(stack.data.shape, dtype=bool)
    keep[np.asarray(held, dtype=int)] = False
    return stack.restricted(keep)


class HeldOutScores:
    """Held-out chi-square of candidate images, scored on the same pixels, summed over folds.

    Besides each candidate's reduced chi-square, it keeps the differences
    between every two candidates summed over blocks of `BLOCK` x `BLOCK`
    frame pixels, so that a difference is judged against its own noise (a
    paired test): two images that differ only where the frames cannot see
    (finer than the PSF and the pixels allow) predict them equally well.
    Blocks, not pixels, are the independent units: two images' errors are
    correlated over the PSF and over the sources they share, and per-pixel
    differences would make every small difference look significant.

    Parameters
    ----------
    names : sequence of str
        The candidates.
    """

    def __init__(self, names):
        self.names = tuple(names)
        self.chi2 = dict.fromkeys(self.names, 0.0)
        self.n = self.n_blocks = 0
        self._pairs = {pair: [0.0, 0.0] for pair in combinations(self.names, 2)}

    def add(self, maps, blocks, n_fitted=0):
        """Add a fold: ``{name: per-pixel chi-square}`` on the same pixels.

        ``blocks`` labels each pixel's block (integers, as `heldout_chi2`
        gives them); ``n_fitted`` constants were fitted to the pixels.
        """
        blocks = np.unique(np.asarray(blocks), return_inverse=True)[1]
        for name in self.names:
            self.chi2[name] += float(np.sum(maps[name]))
        for (a, b), sums in self._pairs.items():
            per_block = np.bincount(blocks, weights=maps[a] - maps[b])
            sums[0] += float(np.sum(per_block))
            sums[1] += float(np.sum(per_block ** 2))
        self.n += len(maps[self.names[0]]) - int(n_fitted)
        self.n_blocks += int(blocks.max()) + 1 if blocks.size else 0

    def reduced(self):
        """``{name: reduced chi-square}`` (NaN before any pixel was scored)."""
        return {name: (c / self.n if self.n > 0 else float("nan")) for name, c in self.chi2.items()}

    def significance(self, a, b):
        """How many standard errors candidate ``a``'s chi-square lies above ``b``'s (paired)."""
        if a == b:
            return 0.0
        (first, second), sign = ((a, b), 1.0) if (a, b) in self._pairs else ((b, a), -1.0)
        total, squares = self._pairs[(first, second)]
        m = float(self.n_blocks)
        spread = np.sqrt(max(squares - total * total / m, 0.0)) if m > 1 else 0.0
        return sign * total / spread if spread > 0 else 0.0

    def choose(self, preference, threshold=2.0):
        """The first of ``preference`` within ``threshold`` standard errors of the best predictor.

        The best predictor is the candidate of least held-out chi-square; a
        candidate not significantly worse than it is an equally good
        predictor, and the order of ``preference`` breaks the tie.
        """
        scores = self.reduced()
        best = min(self.names, key=scores.get)
        for name in preference:
            if name in self.names and self.significance(name, best) < threshold:
                return name
        return best


def heldout_chi2(image, stack, geometry, held, *, psf, scale, **grid):
    """Per-pixel chi-square of the frames ``held`` of ``stack`` predicted by ``image``.

    Each held-out frame is predicted through the observation model
    (`astrosr.fusion.predict_frames`: PSF, geometry, pixel) and scored on
    its good pixels whose light the output grid holds, after one constant
    fitted per frame (the weighted mean residual): the frames' sky
    pedestals need not be the image's.

    Parameters
    ----------
    image : array_like or NDData
        An image of the output grid of `astrosr.fuse` for these arguments.
    stack : `astrosr.FrameStack`
        The whole stack (the held frames' pixels included).
    geometry, psf, scale, **grid
        As for `astrosr.fusion.predict_frames`.
    held : sequence of int
        The frames to score.

    Returns
    -------
    chi2 : numpy.ndarray
        ``(data - prediction - constant)**2 / variance`` of the scored pixels,
        frame after frame (the same pixels for any image of this grid).
    blocks : numpy.ndarray of int
        The `BLOCK` x `BLOCK` block of its frame each scored pixel lies in,
        a different label for every block of every frame.
    n_frames : int
        The frames scored (one constant fitted to each).
    """
    from .fusion import predict_frames

    predicted, modelled = predict_frames(image, stack, geometry, psf=psf, scale=scale, **grid)
    maps, labels = [], []
    ny, nx = stack.shape
    yy, xx = np.mgrid[:ny, :nx]
    per_frame = ((ny + BLOCK - 1) // BLOCK) * ((nx + BLOCK - 1) // BLOCK)
    block = (yy // BLOCK) * ((nx + BLOCK - 1) // BLOCK) + xx // BLOCK
    for i in np.asarray(held, dtype=int):
        use = stack.good[i] & modelled[i]
        if use.sum() < 2:
            continue
        w = 1.0 / stack.var[i][use]
        resid = stack.data[i][use] - predicted[i][use]
        resid -= np.sum(w * resid) / np.sum(w)
        maps.append(w * resid ** 2)
        labels.append(block[use] + i * per_frame)
    if not maps:
        return np.zeros(0), np.zeros(0, dtype=int), 0
    return np.concatenate(maps), np.concatenate(labels), len(maps)


def jackknife_variance(folds):
    """Delete-a-group jackknife variance of an estimate from its ``k`` fold estimates.

    ``(k - 1) / k * sum_j (x_j - mean)**2`` over the estimates ``x_j``, each
    made without fold ``j`` (Shao & Wu 1989): per pixel of images, or per
    value of any array. The formula is that of folds of equal size; folds
    that differ by one frame (``n`` not a multiple of ``k``) make it an
    approximation.
    """
    folds = np.asarray(folds, dtype=float)
    k = len(folds)
    if k < 2:
        raise ValueError(f"the jackknife needs 2 or more folds, got {k}")
    return (k - 1) / k * np.sum((folds - folds.mean(axis=0)) ** 2, axis=0)


def fold_variance(folds, alternatives=(), *, width=0.0):
    """The variance of a result from its fold estimates and its equally good alternatives.

    The jackknife variance of the fold estimates (`jackknife_variance`: the
    noise's part) plus the mean squared difference between the fold means
    of each alternative and of the result: images that all reproduce the
    frames within their noise, which the frames do not decide between (they
    differ where the PSF and the pixels hide the sky), so their differences
    are part of the error.

    Parameters
    ----------
    folds : sequence of arrays
        The result made without each fold of frames.
    alternatives : sequence of sequences of arrays
        The fold estimates of each alternative (the same folds).
    width : float
        Sigma (pixels) of a Gaussian that averages the variance over
        neighbouring pixels: the jackknife of ``k`` folds has ``k - 1``
        degrees of freedom per pixel, too few to divide by alone. 0: none.
    """
    folds = np.asarray(folds, dtype=float)
    var = jackknife_variance(folds)
    centre = folds.mean(axis=0)
    for other in alternatives:
        var += (np.mean(np.asarray(other, dtype=float), axis=0) - centre) ** 2 / len(alternatives)
    return ndimage.gaussian_filter(var, width) if width > 0 else var


def aperture_errors(image, folds, apertures, alternatives=()):
    """Aperture sums of ``image`` and their errors from its fold images.

    Parameters
    ----------
    image : array_like or NDData
        The result.
    folds : sequence of arrays
        The result made without each fold of frames (`held_out`).
    apertures : photutils aperture
        Any ``photutils.aperture`` aperture (pixel coordinates of ``image``).
    alternatives : sequence of sequences of arrays
        Fold images of equally good alternatives (see `fold_variance`).

    Returns
    -------
    sums, errors : numpy.ndarray
        One per aperture position: the sums of ``image``, and the square
        root of `fold_variance` of the folds' sums. The errors hold the
        correlations between the result's pixels, which a sum of per-pixel
        variances would miss.
    """
    from photutils.aperture import aperture_photometry

    def sums(data):
        table = aperture_photometry(np.asarray(getattr(data, "data", data), dtype=float),
                                    apertures)
        return np.asarray(table["aperture_sum"], dtype=float)

    spread = fold_variance([sums(f) for f in folds], [[sums(f) for f in other]
                                                      for other in alternatives])
    return sums(image), np.sqrt(spread)
