"""Applying a super-resolution network to an image: tiles, uncertainty, consistency.

`enhance` (also `SRModel.enhance`) turns one image into one ``scale`` times
finer: the network runs tile by tile with overlapping margins wider than its
receptive field, so the tiled result equals the whole-image result; masked
and NaN pixels are filled for the network and masked in the output; the
output is then held to the data (`DESIGN.md`, Conventions):

``consistency="observation"`` (default)
    The network's output starts a Richardson-Lucy fit through the
    observation model (`astrosr.forward.ObservationOperator`: PSF, then
    integration over the input pixels), stopped by the discrepancy principle
    as soon as the output, observed again, reproduces the input within its
    noise: over the whole image (reduced chi-square written to ``CHI2RED``)
    and over the pixels on significant sources alone (``CHI2SRC``; the sky's
    many pixels would otherwise hide a misfit of a star's flux). No source is
    created or lost, and photometry holds, to the noise. With
    ``stop="converged"`` the fit runs on to the maximum-likelihood image
    that the iterations reach from the network's output (the data cannot
    choose among the many images they fit equally well; the network's
    output chooses). That is what isolated point sources need: on a
    simulated star field it is about 5 dB closer to the truth, with stars
    half as wide, at the cost of hundreds of iterations (seconds, not a
    fraction of one); on galaxies and nebulae it fits part of the noise
    (``srresnet-x4``: 1.3 dB lost on a galaxy field, 0.35 dB on a nebula;
    ``benchmarks/single_frame.py``).
``consistency="pixel"``
    Each input pixel's ``scale x scale`` footprint is shifted by a constant
    so that it sums exactly to that pixel: light never leaves its pixel, so
    nothing is deconvolved.
``consistency=None``
    The raw network (the mean of its self-ensemble), for study.

The uncertainty is the input noise propagated to the fine grid (the
conditional variance of each fine pixel, the inverse diagonal of the Fisher
matrix of the consistency fit: a lower bound, as errors of a deconvolution
are correlated) plus the sample variance of the self-ensemble (the network's
own spread under flips and rotations of its input; with 2 members an estimate
with one degree of freedom per pixel, with all 8 a steadier one), documented
in HISTORY.
"""

import warnings

import numpy as np
from astropy import units as u
from astropy.nddata import CCDData, NDData, VarianceUncertainty
from astropy.stats import sigma_clipped_stats
from astropy.utils.exceptions import AstropyUserWarning
from scipy import ndimage

from .misfit import record_fit
from .geometry import OutputGrid
from .nddata import add_history
from .output import is_surface_brightness, output_header
from .psf import GaussianPSF, as_psf

__all__ = ["enhance", "CONSISTENCY_MODES"]

CONSISTENCY_MODES = ("observation", "pixel", None)
#: Stopping rules of the observation-consistency fit and their default caps.
STOP_RULES = {"discrepancy": 100, "converged": 3000}

#: Default tile (input pixels) and margin on each side; the margin must exceed
#: the network's receptive radius (~22 input pixels for 8 blocks). Larger tiles
#: waste less on margins (a 512x512 image: 1.7 output Mpix/s with 256, 1.1 with
#: 128, on 2 cores) but hold more memory (about 1.7 GB at 256 for srresnet-x4).
DEFAULT_TILE = 256
DEFAULT_OVERLAP = 32
#: Default number of self-ensemble members: the fewest that estimate the
#: network's spread (each member is one network pass).
DEFAULT_ENSEMBLE = 2
#: What to check when the output, observed again, does not reproduce the input.
_MISFIT_HINT = ("the PSF (psf=, --psf) or the noise (the image's uncertainty) is probably wrong, "
                "or saturated pixels are not masked")


def enhance(ccd, model="srresnet-x4", *, psf=None, tile=DEFAULT_TILE, overlap=DEFAULT_OVERLAP,
            consistency="observation", ensemble=DEFAULT_ENSEMBLE, stop="discrepancy",
            max_iter=None, progress=False, psf_options=None):
    """Super-resolve one image with a network, held to the data.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`, `~astropy.nddata.NDData` or array
        The image (per-pixel flux; surface-brightness units are handled as
        in `astrosr.fuse`). Its uncertainty, when present, sets the noise of
        the consistency step; otherwise the white noise is estimated.
    model : str, Path or `~astrosr.SRModel`
        A shipped model's name (`astrosr.models.available_models`), a saved
        model's stem, or a model.
    psf : `~astrosr.psf.PSF` or array, optional
        PSF for ``consistency="observation"`` (an array is sampled on the
        output grid). Default: a Gaussian fitted to the stars of the image
        (`astrosr.psf.estimate_psf`), else the model card's training PSF,
        with a warning.
    psf_options : dict, optional
        Options of that estimate (``psf=None``), passed to
        `astrosr.psf.estimate_psf`: ``fwhm_guess``, ``snr``, ``max_stars``,
        ``min_stars``, ``saturation``.
    tile, overlap : int
        Tile side and the margin added on each side (input pixels).
    consistency : {"observation", "pixel", None}
        See the module notes.
    ensemble : bool or {1, 2, 4, 8}
        Number of flips/rotations of the input to average (True: all 8,
        False: 1), each one network pass; with 2 or more their spread goes
        into the uncertainty.
    stop : {"discrepancy", "converged"}
        When ``consistency="observation"`` ends its Richardson-Lucy fit: at
        the first iterate that reproduces the data within the noise (the
        smallest change to the network's output), or at the
        maximum-likelihood image reached from it (an iteration moves less
        than `astrosr.fusion.CONVERGED_TOL` of the image's structure; best for star
        fields, see the module notes).
    max_iter : int, optional
        Cap on the consistency iterations: 100 for ``"discrepancy"``, 3000
        for ``"converged"`` by default.
    progress : bool
        Show progress bars (with ETA; `astrosr.progress.progress_bar`) over
        the network's tiles and the consistency iterations.

    Returns
    -------
    `~astropy.nddata.CCDData`
        The image ``scale`` times finer: same unit, WCS of the finer grid,
        `~astropy.nddata.VarianceUncertainty`, mask (fine pixels of masked
        input pixels), HISTORY (model name and weights sha256, consistency,
        PSF source), ``CHI2RED`` for ``"observation"``.
    """
    from .models import get_model

    if consistency not in CONSISTENCY_MODES:
        raise ValueError(f"consistency must be one of {CONSISTENCY_MODES}, got {consistency!r}")
    if stop not in STOP_RULES:
        raise ValueError(f"stop must be one of {tuple(STOP_RULES)}, got {stop!r}")
    max_iter = STOP_RULES[stop] if max_iter is None else int(max_iter)
    model = get_model(model)
    if int(tile) < 8 or int(overlap) < 0:
        raise ValueError(f"tile must be >= 8 and overlap >= 0, got {tile}, {overlap}")
    members = ensemble_size(ensemble)
    frame = _as_frame(ccd)
    ccd, scale = frame.ccds[0], model.scale
    data, var, good = frame.data[0], frame.var[0], frame.good[0]
    _, level, _ = sigma_clipped_stats(data[good])
    filled = fill_masked(data - level, good)
    mean, spread = run_network(model, filled, int(tile), int(overlap), members, progress=progress)
    fine = mean + level / scale ** 2
    notes = [f"astrosr.enhance: model={model.name} sha256={weights_hash(model)[:16]} "
             f"tile={tile} overlap={overlap} ensemble={members}-fold"]
    keys = {}
    if consistency == "observation":
        psf, psf_source = _choose_psf(psf, ccd, model, scale, psf_options or {})
        fine, cond_var, chi2, info = _observation_consistency(fine, frame, level, scale, psf,
                                                              stop, max_iter, progress)
        notes.append(f"astrosr.enhance: consistency=observation psf={psf!r} ({psf_source}) "
                     f"Richardson-Lucy iterations={info['iterations']} chi2_red={chi2:.3f} "
                     f"chi2_red(sources)={info['chi2_sources']} stop={info['stopped']}")
        record_fit(keys, chi2, what="the input pixels", hint=_MISFIT_HINT, stacklevel=3)
        keys["CONSTOP"] = (stop, "stopping rule of the consistency fit")
        if info["chi2_sources"] is not None:
            keys["CHI2SRC"] = (round(info["chi2_sources"], 4), "same, on source pixels only")
    else:
        if consistency == "pixel":
            fine = _pixel_consistency(fine, data, good, scale)
        per_fine = np.where(good, var, np.inf) / scale ** 4
        cond_var = np.repeat(np.repeat(per_fine, scale, 0), scale, 1)
        notes.append(f"astrosr.enhance: consistency={consistency}")
    notes.append("astrosr.enhance: uncertainty = input noise on the fine grid + "
                 "self-ensemble variance")
    wcs = OutputGrid(data.shape, scale, reference_wcs=frame.wcs[0]).fits_wcs()
    return _result(ccd, fine, cond_var + spread, good, scale, notes, keys, wcs)


# --------------------------------------------------------------------------- input


def _as_frame(ccd):
    """The image as a one-frame `~astrosr.FrameStack` (any APE-14 WCS kept beside it)."""
    from .stack import FrameStack

    if not isinstance(ccd, NDData):
        arr = np.asarray(ccd, dtype=float)
        if arr.ndim != 2:
            raise ValueError(f"ccd must be a 2-D image, got shape {arr.shape}")
        ccd = CCDData(arr, unit=u.dimensionless_unscaled)
    try:
        return FrameStack([ccd])
    except ValueError as err:
        if "no usable pixel" in str(err):
            raise ValueError("ccd has no usable pixel (all masked, NaN or inf)") from None
        raise


def fill_masked(data, good):
    """Masked pixels filled by normalised convolution (a local weighted mean) for the network."""
    if good.all():
        return data
    w = good.astype(float)
    num = ndimage.gaussian_filter(np.where(good, data, 0.0), 2.0)
    den = ndimage.gaussian_filter(w, 2.0)
    fill = np.where(den > 1e-3, num / np.maximum(den, 1e-3), 0.0)
    return np.where(good, data, fill)


# --------------------------------------------------------------------------- network


#: Order in which self-ensemble members are taken (k -> flip, rot = divmod(k, 4)):
#: the identity, then a diagonal mirror, which swaps and reverses both axes.
_MEMBER_ORDER = (0, 5, 2, 7, 1, 4, 3, 6)


def ensemble_size(ensemble):
    """Number of self-ensemble members: True -> 8, False -> 1, or 1, 2, 4 or 8."""
    n = (8 if ensemble else 1) if isinstance(ensemble, bool) else ensemble
    if n not in (1, 2, 4, 8):
        raise ValueError(f"ensemble must be True, False, 1, 2, 4 or 8, got {ensemble!r}")
    return int(n)


def run_network(model, image, tile, overlap, ensemble, softening=None, progress=False):
    """Mean and sample variance over the self-ensemble of the tiled network output.

    ``progress``: one progress bar over the tiles of all the members.
    """
    from .models.transform import noise_sigma
    from .progress import progress_bar

    if softening is None:
        softening = noise_sigma(image)  # one value for the whole image, so tiles agree
    n = ensemble_size(ensemble)
    tiles = -(-image.shape[0] // tile) * -(-image.shape[1] // tile)  # the same for a rotation
    outs = []
    with progress_bar(total=n * tiles, desc="network", unit="tile", enabled=progress) as bar:
        for k in _MEMBER_ORDER[:n]:
            flip, rot = divmod(k, 4)
            t = np.rot90(image[:, ::-1] if flip else image, rot)
            y = _tiled(model, np.ascontiguousarray(t), tile, overlap, softening, bar=bar)
            y = np.rot90(y, -rot)
            outs.append(y[:, ::-1] if flip else y)
    outs = np.array(outs, dtype=np.float64)
    return outs.mean(axis=0), (outs.var(axis=0, ddof=1) if n > 1 else np.zeros(outs.shape[1:]))


def _tiled(model, image, tile, overlap, softening, bar=None):
    """The network tile by tile; each tile keeps only its centre, so seams vanish.

    ``bar``: a `astrosr.progress.progress_bar` advanced by one per tile.
    """
    s = model.scale
    ny, nx = image.shape
    out = np.empty((s * ny, s * nx), dtype=np.float32)
    for y0 in range(0, ny, tile):
        for x0 in range(0, nx, tile):
            y1, x1 = min(y0 + tile, ny), min(x0 + tile, nx)
            ya, xa = max(0, y0 - overlap), max(0, x0 - overlap)
            yb, xb = min(ny, y1 + overlap), min(nx, x1 + overlap)
            pred = model.predict_array(image[ya:yb, xa:xb], softening=softening)
            out[s * y0:s * y1, s * x0:s * x1] = pred[s * (y0 - ya):s * (y1 - ya),
                                                     s * (x0 - xa):s * (x1 - xa)]
            if bar is not None:
                bar.update(1)
    return out


def weights_hash(model):
    """The sha256 of a model's shipped weights (from its card), or ``"unsaved"``."""
    return str(model.card.get("weights", {}).get("sha256", "unsaved"))


# --------------------------------------------------------------------------- consistency


def _choose_psf(psf, ccd, model, scale, options):
    if psf is not None:
        if options:
            raise ValueError("psf_options apply to the PSF estimate only: give psf=None with "
                             "them, or drop them")
        return as_psf(psf, oversampling=scale), "given"
    from .psf import estimate_psf

    try:
        return estimate_psf(ccd, **options), "fitted to stars in the image"
    except ValueError as exc:
        sigma = (model.card.get("training") or {}).get("psf_sigma")
        sigma = 1.0 if sigma is None else float(sigma)
        warnings.warn(f"{exc}; using the model card's training PSF, a Gaussian of sigma "
                      f"{sigma:g} input pixels, which may not be the image's",
                      AstropyUserWarning, stacklevel=4)
        return GaussianPSF(sigma), "model card's training PSF (no usable stars)"


def _observation_consistency(fine, stack, level, scale, psf, stop, max_iter, progress):
    """Richardson-Lucy from the network's output until the data are reproduced."""
    from .forward import ObservationOperator
    from .reconstruct import PoissonNoise, richardson_lucy, start_image

    data, var, good = stack.data[0], stack.var[0], stack.good[0]
    op = ObservationOperator(data.shape, [[0.0, 0.0]], scale=scale, psf=psf, single=True)
    noise = PoissonNoise(stack)
    start = start_image(op, fine, stack, good[None], noise)
    sources = _sources(data - level, var, good)[None]
    image, info = richardson_lucy(op, stack, good[None], noise, start, None, max_iter, stop=stop,
                                   sources=sources, progress=progress)
    fisher = op.crop_image(op.adjoint(op.embed_frames(np.where(good, 1.0 / var, 0.0)[None]),
                                      squared=True))
    with np.errstate(divide="ignore"):
        cond_var = np.where(fisher > 0, 1.0 / fisher, np.inf)
    return op.crop_image(image) + noise.mean_pedestal() / scale ** 2, cond_var, info["chi2"], info


def _sources(above_sky, var, good, nsigma=5.0):
    """Input pixels on or beside a significant source, for the consistency stop.

    Detected on the 3x3 box mean of the sky-subtracted image (5 sigma of that
    mean), so a pixel is not chosen for its own noise, whose residual would
    then be large whatever the model; grown by one pixel to include the
    sources' edges.
    """
    box = ndimage.uniform_filter(np.where(good, above_sky, 0.0), size=3)
    # (the filter's rounding can leave -1e-17 where the neighbours are all masked)
    sigma = np.sqrt(np.maximum(ndimage.uniform_filter(np.where(good, var, 0.0), size=3), 0.0) / 9.0)
    return ndimage.binary_dilation(good & (box > nsigma * sigma)) & good


def _pixel_consistency(fine, data, good, scale):
    """Shift each footprint by a constant so it sums exactly to its input pixel."""
    ny, nx = data.shape
    sums = fine.reshape(ny, scale, nx, scale).sum(axis=(1, 3))
    correction = np.where(good, (data - sums) / scale ** 2, 0.0)
    return fine + np.repeat(np.repeat(correction, scale, 0), scale, 1)


# --------------------------------------------------------------------------- output


def _result(ccd, fine, var, good, scale, notes, keys, wcs=None):
    if is_surface_brightness(ccd.unit):
        fine, var = fine * scale ** 2, var * scale ** 4
    mask = np.repeat(np.repeat(~good, scale, 0), scale, 1) | ~np.isfinite(var)
    meta = output_header(ccd.meta)
    meta["SRSCALE"] = (scale, "output pixels per input pixel")
    meta.update(keys)
    for note in notes:
        add_history(meta, note)
    return CCDData(np.where(mask, 0.0, fine).astype(np.float32), unit=ccd.unit,
                   uncertainty=VarianceUncertainty(np.where(mask, 0.0, var).astype(np.float32)),
                   mask=mask, wcs=wcs,
                   meta=meta)
