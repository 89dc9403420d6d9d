"""The end-to-end multi-frame pipeline: register, fuse, refine, hold to the data.

`MultiFrameSR` runs the steps an astronomer would otherwise chain by hand:

1. **register** the frames (`astrosr.register_stack`), unless shifts are given;
2. **PSF**: the one given, or one measured on the stars of the stack
   (`astrosr.psf.stack_psf`: an effective PSF, photutils' ePSF builder with
   the pixel response removed, else a Gaussian or Moffat profile fitted to
   every star of every frame); a field without usable isolated stars raises
   a `ValueError` asking for ``psf=``;
3. **fuse** onto the finer grid (`astrosr.fuse`, reconstruct by default, with
   outlier rejection);
4. **refine** the fused image on its own grid with a scale-1 generator
   (``refine-x1``: the SRGAN residual architecture without upsampling,
   trained on fused images of simulated stacks against their truths);
5. **hold the result to the data** (``consistency="observation"``): the
   refined image starts a multi-frame Richardson-Lucy fit that stops at the
   first iterate reproducing every frame, at its own shift, through the PSF
   and the input pixels, within its noise (the discrepancy principle). So the
   network may sharpen, but cannot add or remove light the frames do not
   allow; the reduced chi-square against the stack is written to ``CHI2RED``;
6. **validate** without a truth (``folds``, `astrosr.validation`): every
   candidate (the fusion, the refined image, the fit stopped by the
   discrepancy principle or at convergence) is made again without each
   fold of frames and scored on how well it predicts them; by default
   (``consistency="heldout"``) the fusion is returned unless another
   candidate predicts them significantly better, and the fold images give its uncertainty
   (jackknife plus the spread of the candidates held to the frames) and
   that of aperture sums (`MultiFrameSR.photometry`). See the
   :doc:`/validation` page.

The fusion and the final image are checked against the frames
(`astrosr.misfit`): a reduced chi-square above `astrosr.misfit.CHI2_BOUND`
gets a `~astrosr.misfit.MisfitWarning` (the PSF or the shifts are wrong) and
``CHI2OK = False`` in the header.

Every step's parameters go into HISTORY.
"""

import contextlib
import os
import time
import warnings

import numpy as np
from astropy.stats import sigma_clipped_stats
from astropy.utils.exceptions import AstropyUserWarning

from .calibration import calibrated_stack
from .fusion import fuse
from .inference import ensemble_size
from .misfit import fit_passed
from .nddata import add_history, variance_of
from .output import uncertainty_like
from .psf import PSF
from .registration import register_stack
from .resources import check_memory
from .validation import HeldOutScores, aperture_errors, fold_variance, frame_folds, \
    heldout_chi2, held_out

__all__ = ["MultiFrameSR", "DEFAULT_REFINE_MODEL"]

#: The shipped refinement network.
DEFAULT_REFINE_MODEL = "refine-x1"

FUSIONS = ("reconstruct", "drizzle", "shift_and_add")
CONSISTENCY_MODES = ("heldout", "observation", "converged", None)

#: What the pipeline can return: the fusion, the refined image, and the fit to the frames
#: started from the refined image, stopped by the discrepancy principle or at convergence.
CANDIDATES = ("fusion", "refined", "discrepancy", "converged")
_CONSISTENCY_CANDIDATE = {"observation": "discrepancy", "converged": "converged",
                          None: "refined"}
#: The candidates that reproduce the frames within their noise (the fusion when it is the
#: reconstruction): their spread is error, where the frames cannot decide between them.
HELD_TO_DATA = ("fusion", "discrepancy", "converged")
#: ``consistency="heldout"`` returns the first of these that predicts the held-out frames
#: as well as the best (within 2 standard errors): the fusion, unless the frames say that a
#: fit from the refined image predicts them better.
PREFERENCE = ("fusion", "discrepancy", "converged", "refined")
#: The header key of each candidate's held-out reduced chi-square.
SCORE_KEYS = {"fusion": "PCHI2FUS", "refined": "PCHI2REF", "discrepancy": "PCHI2DIS",
              "converged": "PCHI2CON"}


class MultiFrameSR:
    """Multi-frame super-resolution: register, fuse, refine, consistent with the frames.

    Parameters
    ----------
    scale : int
        Output pixels per input pixel.
    fusion : {"reconstruct", "drizzle", "shift_and_add"}
        Fusion method (`astrosr.fuse`).
    refine : str, `~astrosr.SRModel` or None
        Scale-1 refinement network: a shipped model's name, the stem of a
        saved model, a model, or None to stop after fusion.
    psf : None, "estimate", `~astrosr.psf.PSF`, array or str
        The PSF: None or ``"estimate"`` builds it from the stars of the stack
        (`astrosr.psf.estimate_stack_psf`); an array is sampled on the output
        grid (odd, centred); a string other than "estimate" is a FITS file
        holding the PSF. Drizzle and shift-and-add use it only to judge
        outliers; reconstruct and the consistency step need it.
    output_wcs, shape_out : optional
        Any output grid (see `astrosr.fuse`); default: the reference frame's
        grid ``scale`` times finer.
    psf_options : dict, optional
        Options of the PSF estimate (``psf=None``), passed to
        `astrosr.psf.stack_psf`: ``fwhm_guess``, ``snr``, ``max_stars``,
        ``saturation``.
    reference : int
        Index of the reference frame: the output is on its grid.
    consistency : {"heldout", "observation", "converged", None}
        What is returned (the candidates of `CANDIDATES`): ``"heldout"``
        (default) the fusion, unless another candidate predicts frames it
        was not fitted to (k-fold validation over the frames, ``folds``)
        better by more than 2 standard errors; then the first of
        `PREFERENCE` within 2 standard errors of the best predictor;
        ``"observation"`` the refined image held to the frames, stopped by
        the discrepancy principle (see the module notes); ``"converged"``
        that fit run to convergence; None the raw network output (for study
        only). Without ``refine``, the fusion.
    folds : int
        Folds of the held-out validation: each fold's frames are left out,
        every candidate is made from the others and scored on how well it
        predicts them (reduced chi-square through the observation model,
        `astrosr.validation`), so the run costs about ``folds + 1`` times
        one without it. The scores go into the header (``PCHI2FUS``,
        ``PCHI2REF``, ``PCHI2DIS``, ``PCHI2CON``, ``NFOLDS``, ``CANDIDAT``)
        and the fold images give the uncertainty. 0: no validation
        (``consistency="heldout"`` then needs another choice). At most the
        number of frames.
    pixfrac : float, optional
        Drizzle's drop size (``fusion="drizzle"`` only; default 1).
    reject : {"auto", True, False}
        Outlier rejection in the fusion.
    ensemble : bool or {1, 2, 4, 8}
        Average the refinement over that many flips and rotations (True: all
        8; that many times the network's cost) and add their spread to the
        uncertainty.
    tile, overlap : int
        Tiles of the refinement network (fine pixels).
    max_iter : int
        Safety cap on the consistency iterations.
    hdu : int or str, optional
        HDU to read when the frames are FITS paths.
    bias, dark, flat : `~astropy.nddata.CCDData` or path, optional
        Master calibration frames (`astrosr.calibration.calibrate`).
    calibrate : {"auto", True, False}
        Calibrate the frames (`astrosr.calibration.calibrated_stack`):
        ``"auto"`` when calibration frames are given or the frames are raw
        (whole numbers without uncertainty).
    progress : bool
        Print each step, with progress bars (and ETA) over the frames of the
        registration, the iterations of the fits and the network's tiles.

    Attributes
    ----------
    shifts_ : `~astropy.table.QTable`
        The registration of the last `run`.
    psf_ : `~astrosr.psf.PSF`
        The PSF used by the last `run`.
    fused_ : `~astropy.nddata.CCDData`
        The fused image of the last `run` (before refinement).
    timings_ : dict
        Seconds spent in each step of the last `run`.
    scores_ : `~astrosr.validation.HeldOutScores` or None
        The held-out scores of the last `run` (None with ``folds=0`` or one frame).
    fold_images_ : dict
        Each candidate's images made without each fold of frames.
    candidate_ : str
        The candidate the last `run` returned (one of `CANDIDATES`).
    result_ : `~astropy.nddata.CCDData`
        What the last `run` returned.

    Examples
    --------
    >>> import astrosr
    >>> sr = astrosr.MultiFrameSR(scale=4)            # doctest: +SKIP
    >>> hr = sr.run("frames/*.fits")                  # doctest: +SKIP
    >>> hr.meta["CHI2RED"], sr.shifts_                # doctest: +SKIP
    """

    def __init__(self, scale=4, *, fusion="reconstruct", refine=DEFAULT_REFINE_MODEL, psf=None,
                 reference=0, consistency="heldout", folds=4, pixfrac=None,
                 reject="auto", ensemble=False, tile=256, overlap=32, max_iter=300, hdu=None,
                 progress=False, psf_options=None, output_wcs=None, shape_out=None, bias=None,
                 dark=None, flat=None, calibrate="auto"):
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if consistency not in CONSISTENCY_MODES:
            raise ValueError(f"consistency must be one of {CONSISTENCY_MODES}, got {consistency!r}")
        if int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
        if int(folds) != folds or folds < 0 or folds == 1:
            raise ValueError(f"folds must be 0 (no validation) or an integer >= 2, got {folds!r}")
        if consistency == "heldout" and not folds and refine is not None:
            raise ValueError("consistency='heldout' chooses by the held-out validation: give "
                             "folds >= 2, or choose consistency='observation'")
        self.folds = int(folds)
        self.scale, self.fusion, self.refine, self.psf = int(scale), fusion, refine, psf
        self.reference, self.consistency, self.pixfrac, self.reject = (reference, consistency,
                                                                       pixfrac, reject)
        self.ensemble, self.tile, self.overlap, self.max_iter = ensemble, tile, overlap, max_iter
        self.hdu, self.progress = hdu, progress
        if calibrate not in ("auto", True, False):
            raise ValueError(f"calibrate must be 'auto', True or False, got {calibrate!r}")
        self.calibration = {"bias": bias, "dark": dark, "flat": flat, "when": calibrate}
        self.grid = {k: v for k, v in (("output_wcs", output_wcs), ("shape_out", shape_out))
                     if v is not None}
        if pixfrac is not None and fusion != "drizzle":
            raise ValueError(f"pixfrac is a drizzle option; fusion={fusion!r} does not use it: "
                             "leave it out")
        self.psf_options = dict(psf_options or {})
        if self.psf_options and psf not in (None, "estimate"):
            raise ValueError("psf_options apply to the PSF estimate only: give psf=None (or "
                             "'estimate') with them, or drop them")

    def __repr__(self):
        return (f"MultiFrameSR(scale={self.scale}, fusion={self.fusion!r}, "
                f"refine={getattr(self.refine, 'name', self.refine)!r}, "
                f"psf={_describe(self.psf)})")

    def run(self, frames, geometry=None, *, shifts=None):
        """Run the pipeline on a stack.

        Parameters
        ----------
        frames : list of CCDData/NDData/paths, glob pattern, 3-D array, or `~astrosr.FrameStack`
            The dithered frames (`astrosr.nddata.as_frames`), parsed once for
            every step. Their sky may or may not have been subtracted.
        geometry : table, array (n, 2), or ``"wcs"``, optional
            Known geometry (a table with ``dx``, ``dy`` and optionally
            ``rotation``, ``scale``; shifts; or the frames' WCS; see
            `astrosr.fuse`); default: `astrosr.register_stack`.
        shifts : optional
            The same as ``geometry`` (the name of earlier versions); give one of them.

        Returns
        -------
        `~astropy.nddata.CCDData`
            The image ``scale`` times finer on the reference frame's grid,
            with uncertainty (the input's class), mask, ``weight``, WCS and
            HISTORY of every step; ``CHI2RED`` is the reduced chi-square of
            the frames against the returned image.
        """
        self.timings_ = {}
        if shifts is not None:
            if geometry is not None:
                raise TypeError("give geometry or shifts, not both")
            geometry = shifts
        frames, calibrated = calibrated_stack(frames, hdu=self.hdu, **self.calibration)
        notes = [calibrated] if calibrated else []
        check_memory(frames[0].shape, n_frames=len(frames), scale=self.scale, method="pipeline",
                     ensemble=ensemble_size(self.ensemble), tile=self.tile, overlap=self.overlap,
                     refine=self.refine is not None,
                     advice="use a smaller scale, fewer frames or a smaller tile")
        if len(frames) == 1:
            text = ("1 frame: nothing is stacked; the result is that frame on the finer grid "
                    "(astrosr.enhance super-resolves a single image)")
            warnings.warn(text, AstropyUserWarning, stacklevel=2)
            notes.append(f"WARNING: {text}")
        with self._step("register"):
            if geometry is None:
                geometry = register_stack(frames, reference=self.reference,
                                          psf=self.psf if isinstance(self.psf, PSF) else None,
                                          progress=self.progress)
                notes.append(f"registered {len(frames)} frames with register_stack "
                             f"(reference {self.reference}; "
                             f"{geometry.meta['registration']})")
            else:
                notes.append("geometry given by the caller"
                             + (" (the frames' WCS)" if isinstance(geometry, str) else ""))
            self.shifts_ = shifts = geometry
        with self._step("psf"):
            self.psf_, psf_note = _choose_psf(self.psf, frames, shifts, self.scale, self.hdu,
                                              self.psf_options)
            notes.append(f"PSF: {psf_note}")
        with self._step("fuse"):
            self.fused_ = fuse(frames, shifts, reject=self.reject, progress=self.progress,
                               **self._fusion_options())
            if not fit_passed(self.fused_.meta):
                notes.append(f"WARNING: the frames do not fit the fusion (reduced chi-square "
                             f"{self.fused_.meta['CHI2RED']:.3f})")
        chain = _Chain(self, frames.with_rejected(self.fused_.rejected), shifts)
        folds = min(self.folds, len(frames)) if len(frames) > 1 else 0
        self.scores_, self.fold_images_ = None, {}
        if folds:
            with self._step("validate"):
                self.scores_, self.fold_images_ = chain.validate(folds)
        self.candidate_ = self._choice()
        self.result_, spread = chain.result(self.candidate_, self.fused_, notes)
        if folds:
            self._record_validation(folds, notes)
        return self._finish(self.result_, notes, spread)

    def _record_validation(self, folds, notes):
        """The folds' uncertainty (of a deconvolution) and the scores, into the result."""
        out, name = self.result_, self.candidate_
        if name != "fusion" or self.fusion == "reconstruct":
            # Drizzle's own variance is calibrated already; a deconvolution's is not.
            out.uncertainty = uncertainty_like(np.where(out.mask, 0.0, self._fold_variance()),
                                               out.uncertainty)
            notes.append(f"uncertainty: the jackknife over the {folds} folds plus the spread of "
                         f"the deconvolutions held to the frames, averaged over a Gaussian of "
                         f"sigma {self.scale / 2:g} output pixels")
        scores = self.scores_.reduced()
        _record_scores(out.meta, scores, folds, name)
        notes.append(f"held-out validation over {folds} folds of frames: reduced chi-square "
                     + ", ".join(f"{k} {v:.5f}" for k, v in scores.items())
                     + f"; returned: {name}")

    def photometry(self, apertures):
        """Aperture sums of the last `run`'s result, with errors from its held-out folds.

        Parameters
        ----------
        apertures : photutils aperture
            Any ``photutils.aperture`` aperture, in the result's pixel
            coordinates.

        Returns
        -------
        `~astropy.table.QTable`
            `photutils.aperture.aperture_photometry`'s table with
            ``aperture_sum_err`` (`astrosr.validation.aperture_errors`: the
            jackknife over the folds plus the candidates' spread; it holds
            the correlations between the result's pixels that a sum of
            per-pixel variances would miss).

        Raises
        ------
        RuntimeError
            Before a `run`, or after one with ``folds=0``.
        """
        from photutils.aperture import aperture_photometry

        if not getattr(self, "fold_images_", None):
            raise RuntimeError("photometry needs the held-out folds of a run: call run() "
                               "first, with folds >= 2")
        out = self.result_
        table = aperture_photometry(np.asarray(out.data, dtype=float), apertures)
        sums, errors = aperture_errors(out, self.fold_images_[self.candidate_], apertures,
                                       self._alternatives())
        table["aperture_sum"] = sums * out.unit
        table["aperture_sum_err"] = errors * out.unit
        return table

    def _alternatives(self):
        """The fold images of the other deconvolutions held to the frames (none for drizzle)."""
        if self.fusion != "reconstruct" and self.candidate_ == "fusion":
            return []  # a drizzled image differs from a deconvolution by the PSF, not by error
        held = HELD_TO_DATA if self.fusion == "reconstruct" else HELD_TO_DATA[1:]
        return [self.fold_images_[c] for c in held
                if c in self.fold_images_ and c != self.candidate_]

    def _fold_variance(self):
        """The returned candidate's variance from the folds (`astrosr.validation.fold_variance`).

        No pixel claims less than a thousandth of the median pixel's variance:
        where every fold agrees exactly (a blank patch held at zero), the
        folds are too few to say how much less.
        """
        var = fold_variance(self.fold_images_[self.candidate_], self._alternatives(),
                            width=self.scale / 2)
        return np.maximum(var, 1e-3 * np.median(var[~self.result_.mask]))

    def _fusion_options(self):
        """`astrosr.fuse`'s options of the fusion step (the grid included)."""
        drizzle = {"pixfrac": self.pixfrac} if self.fusion == "drizzle" else {}
        return dict(scale=self.scale, method=self.fusion, psf=self.psf_, reference=self.reference,
                    **drizzle, **self.grid)

    def _choice(self):
        """The candidate to return: the held-out choice (`PREFERENCE`), or the one asked for."""
        if self.refine is None:
            return "fusion"
        if self.consistency == "heldout":
            if self.scores_ is None:
                return "discrepancy"  # one frame: nothing to hold out
            return self.scores_.choose(PREFERENCE)
        return _CONSISTENCY_CANDIDATE[self.consistency]

    def _finish(self, out, notes, spread=None):
        if spread is not None and out.uncertainty is not None:
            # The self-ensemble's spread: the model's own scatter, added in variance.
            out.uncertainty = uncertainty_like(variance_of(out) + spread, out.uncertainty)
        out.meta["PIPELINE"] = ("astrosr.MultiFrameSR", "astrosr pipeline")
        if self.refine is not None:
            out.meta["REFMODEL"] = (str(getattr(self.refine, "name", self.refine)),
                                    "refinement network")
        out.meta["CONSIST"] = (str(self.consistency), "consistency with the frames")
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in self.timings_.items())
        for note in [f"astrosr.MultiFrameSR: {self!r}"] + notes + [f"timings: {steps}"]:
            add_history(out.meta, note if note.startswith("astrosr") else
                        f"astrosr.MultiFrameSR: {note}")
        return out

    @contextlib.contextmanager
    def _step(self, name):
        """Time a step into ``timings_``; announce it with ``progress``."""
        if self.progress:
            print(f"[astrosr] {name}...", flush=True)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings_[name] = time.perf_counter() - start


def _choose_psf(psf, frames, shifts, scale, hdu, options):
    """The PSF to use, and a note saying where it came from."""
    from . import psf as psf_models

    if psf is None or (isinstance(psf, str) and psf == "estimate"):
        return psf_models.stack_psf(frames, shifts, scale=scale, hdu=hdu, **options)
    how = f"read from {psf}" if isinstance(psf, (str, os.PathLike)) else f"given ({_describe(psf)})"
    return psf_models.as_psf(psf, oversampling=scale), how


def _load_model(refine):
    from .models import get_model

    model = get_model(refine)
    if model.scale != 1:
        raise ValueError(f"the refinement model must work at scale 1 (same grid), "
                         f"{model.name} is scale {model.scale}")
    return model


class _Chain:
    """The candidates of a run, from the whole stack or from the stack less a fold of frames.

    ``frames`` is the stack with the fusion's outliers rejected: every
    candidate after the fusion, and every fold, uses that rejection.
    """

    def __init__(self, sr, frames, geometry):
        self.sr, self.frames, self.geometry = sr, frames, geometry
        self.model = None if sr.refine is None else _load_model(sr.refine)
        self.softening = None
        if self.model is not None:
            from .models.transform import stack_softening

            # The network saw the asinh of fused images on the scale of their frames' noise.
            # Bad and rejected pixels (zeros in the stack) are NaN: noise_sigma leaves them out.
            self.softening = stack_softening(list(np.where(frames.good, frames.data, np.nan)),
                                             sr.scale)
        self.grid = dict(sr.grid, reference=sr.reference)

    @property
    def names(self):
        """The candidates scored: without a network, the fusion and the discrepancy fit.

        A drizzled or shift-and-added fusion holds the PSF and the pixels
        already: observed again through them it would be blurred twice, so it
        is not scored (nor chosen by the scores).
        """
        names = CANDIDATES if self.model is not None else ("fusion", "discrepancy")
        return names if self.sr.fusion == "reconstruct" else names[1:]

    def validate(self, k):
        """Held-out reduced chi-square of the candidates over ``k`` folds, and the fold images."""
        scores = HeldOutScores(self.names)
        images = {}
        for held in frame_folds(len(self.frames), k):
            found = self._fold(held_out(self.frames, held), len(self.frames) - len(held))
            maps = {}
            for name, image in found.items():
                images.setdefault(name, []).append(image)
                if name in self.names:
                    maps[name], blocks, n_frames = heldout_chi2(
                        image, self.frames, self.geometry, held, psf=self.sr.psf_,
                        scale=self.sr.scale, **self.grid)
            scores.add(maps, blocks, n_frames)
        return scores, images

    def _fold(self, stack, n_used):
        """Every candidate's image from ``stack`` (a fold held out), ``n_used`` frames in it."""
        sr = self.sr
        with warnings.catch_warnings():
            # The whole stack's run has said what these would repeat (misfits, raw frames).
            warnings.simplefilter("ignore", AstropyUserWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            fused = fuse(stack, self.geometry, reject=False, **sr._fusion_options())
            found = {"fusion": fused.data}
            refined = None
            if self.model is not None:
                refined, _, _ = self._refine(fused, n_used)
                found["refined"] = refined
            for stop in ("discrepancy", "converged"):
                if stop in self.names:
                    found[stop] = self._consistent(stack, refined, stop).data
        return found

    def result(self, name, fused, notes):
        """The candidate ``name`` from the whole stack, with its ensemble spread (or None)."""
        if name == "fusion":
            return fused.copy(), None  # fused_ keeps its own uncertainty
        refined = spread = None
        if self.model is not None:
            with self.sr._step("refine"):
                refined, spread, note = self._refine(fused, len(self.frames))
                notes.append(note)
        if name == "refined":
            out = fused.copy()
            out.data = refined
            for key in ("CHI2RED", "CHI2MAX", "CHI2OK", "RLSTOP"):
                out.meta.pop(key, None)  # those of the fusion, not of this image
            notes.append("returned the refined image: the raw network output, not held to "
                         "the data")
            return out, spread
        with self.sr._step("consistency"):
            out = self._consistent(self.frames, refined, name, progress=self.sr.progress)
        out.rejected = self.frames.rejected
        out.meta["NREJECT"] = fused.meta["NREJECT"]
        notes.append("fused: " + "".join(fused.meta["HISTORY"]))
        start = "a flat image" if refined is None else "the refined image"
        notes.append(f"consistency: Richardson-Lucy from {start}, stop={name}, to "
                     f"chi2_red={out.meta['CHI2RED']:.3f} (stop: {out.meta['RLSTOP']})")
        return out, spread

    def _consistent(self, stack, refined, stop, progress=False):
        """The multi-frame fit from the refined image (None: a flat one), stopped by ``stop``."""
        sr = self.sr
        return fuse(stack, self.geometry, scale=sr.scale, method="reconstruct", psf=sr.psf_,
                    reject=False, stop=stop, start=refined, max_iter=sr.max_iter,
                    progress=progress, **self.grid)

    def _refine(self, fused, n_used):
        """The network on a fused image (sky level removed and restored); mean, spread, note."""
        from .inference import fill_masked, run_network, weights_hash

        sr = self.sr
        good = ~np.asarray(fused.mask, dtype=bool)  # fuse always sets the mask
        data = np.asarray(fused.data, dtype=float)
        _, level, _ = sigma_clipped_stats(data[good])
        # A fold's fusion has fewer frames, so its noise is that much higher.
        softening = self.softening * np.sqrt(len(self.frames) / n_used)
        members = ensemble_size(sr.ensemble)
        mean, spread = run_network(self.model, fill_masked(data - level, good), int(sr.tile),
                                   int(sr.overlap), members, softening=softening,
                                   progress=sr.progress and n_used == len(self.frames))
        note = (f"refined with {self.model.name} sha256={weights_hash(self.model)[:16]} "
                f"tile={sr.tile} overlap={sr.overlap} ensemble={members}-fold")
        return np.where(good, mean + level, 0.0), (spread if members > 1 else None), note


def _record_scores(meta, scores, folds, name):
    """The held-out scores, one key per candidate, and the candidate returned, into ``meta``."""
    meta["NFOLDS"] = (int(folds), "frame folds of the held-out validation")
    for candidate, value in scores.items():
        if np.isfinite(value):
            meta[SCORE_KEYS[candidate]] = (round(float(value), 5),
                                           f"held-out reduced chi2: {candidate}")
    meta["CANDIDAT"] = (name, "candidate returned (astrosr.MultiFrameSR)")


def _describe(psf):
    """A one-line printable description of a PSF option (an array's repr spans many lines)."""
    if isinstance(psf, np.ndarray):
        return f"<array {psf.shape[1]}x{psf.shape[0]} sum={float(np.sum(psf)):.4g}>"
    return repr(psf)
