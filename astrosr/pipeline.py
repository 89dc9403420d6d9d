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
   allow; the reduced chi-square against the stack is written to ``CHI2RED``.

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

__all__ = ["MultiFrameSR", "DEFAULT_REFINE_MODEL"]

#: The shipped refinement network.
DEFAULT_REFINE_MODEL = "refine-x1"

FUSIONS = ("reconstruct", "drizzle", "shift_and_add")
CONSISTENCY_MODES = ("observation", None)


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
    consistency : {"observation", None}
        ``"observation"``: the refined image is held to the frames (see the
        module notes). None: the raw network output (for study only).
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

    Examples
    --------
    >>> import astrosr
    >>> sr = astrosr.MultiFrameSR(scale=4)            # doctest: +SKIP
    >>> hr = sr.run("frames/*.fits")                  # doctest: +SKIP
    >>> hr.meta["CHI2RED"], sr.shifts_                # doctest: +SKIP
    """

    def __init__(self, scale=4, *, fusion="reconstruct", refine=DEFAULT_REFINE_MODEL, psf=None,
                 reference=0, consistency="observation", pixfrac=None, reject="auto",
                 ensemble=False, tile=256, overlap=32, max_iter=300, hdu=None, progress=False,
                 psf_options=None, output_wcs=None, shape_out=None, bias=None, dark=None,
                 flat=None, calibrate="auto"):
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if consistency not in CONSISTENCY_MODES:
            raise ValueError(f"consistency must be one of {CONSISTENCY_MODES}, got {consistency!r}")
        if int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
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
            drizzle = {"pixfrac": self.pixfrac} if self.fusion == "drizzle" else {}
            self.fused_ = fuse(frames, shifts, scale=self.scale, method=self.fusion,
                               psf=self.psf_, reject=self.reject, progress=self.progress,
                               reference=self.reference, **drizzle, **self.grid)
            if not fit_passed(self.fused_.meta):
                notes.append(f"WARNING: the frames do not fit the fusion (reduced chi-square "
                             f"{self.fused_.meta['CHI2RED']:.3f})")
        if self.refine is None:
            return self._finish(self.fused_, notes)
        with self._step("refine"):
            model = _load_model(self.refine)
            refined, spread, note = _refine(self.fused_, frames, model, self.scale, self.tile,
                                             self.overlap, self.ensemble, self.progress)
            notes.append(note)
        if self.consistency is None:
            out = self.fused_.copy()
            out.data = refined
            for key in ("CHI2RED", "CHI2MAX", "CHI2OK", "RLSTOP"):
                out.meta.pop(key, None)  # those of the fusion, not of this image
            notes.append("consistency=None: the raw network output, not held to the data")
            return self._finish(out, notes, spread)
        with self._step("consistency"):
            frames = frames.with_rejected(self.fused_.rejected)
            out = fuse(frames, shifts, scale=self.scale, method="reconstruct", psf=self.psf_,
                       reject=False, stop="discrepancy", start=refined, max_iter=self.max_iter,
                       progress=self.progress, reference=self.reference, **self.grid)
            out.rejected = frames.rejected
            out.meta["NREJECT"] = self.fused_.meta["NREJECT"]
            notes.append("fused: " + "".join(self.fused_.meta["HISTORY"]))
            notes.append(f"consistency=observation: Richardson-Lucy from the refined image "
                         f"to chi2_red={out.meta['CHI2RED']:.3f} (stop: {out.meta['RLSTOP']})")
        return self._finish(out, notes, spread)

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


def _refine(fused, frames, model, scale, tile, overlap, ensemble, progress):
    """The network on the fused image (sky level removed and restored); mean, spread, note."""
    from .inference import fill_masked, run_network, weights_hash
    from .models.transform import stack_softening

    good = ~np.asarray(fused.mask, dtype=bool)  # fuse always sets the mask
    data = np.asarray(fused.data, dtype=float)
    _, level, _ = sigma_clipped_stats(data[good])
    # The network saw the asinh of fused images on the scale of their frames' noise.
    softening = stack_softening([f.data for f in frames], scale)
    members = ensemble_size(ensemble)
    mean, spread = run_network(model, fill_masked(data - level, good), int(tile), int(overlap), members,
                            softening=softening, progress=progress)
    note = (f"refined with {model.name} sha256={weights_hash(model)[:16]} tile={tile} "
            f"overlap={overlap} ensemble={members}-fold")
    return np.where(good, mean + level, 0.0), (spread if members > 1 else None), note


def _describe(psf):
    """A one-line printable description of a PSF option (an array's repr spans many lines)."""
    if isinstance(psf, np.ndarray):
        return f"<array {psf.shape[1]}x{psf.shape[0]} sum={float(np.sum(psf)):.4g}>"
    return repr(psf)
