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
#: With ``output=``, the fine-grid pixels of one strip of the consistency fit
#: (its memory: a few arrays of this many float32 values).
STRIP_PIXELS = 2 ** 24
#: Input rows of one band of the output without a fit.
_BAND_ROWS = 256
#: What to check when the output, observed again, does not reproduce the input.
_MISFIT_HINT = ("the PSF (psf=, --psf) or the noise (the image's uncertainty) is probably wrong, "
                "or saturated pixels are not masked")


def enhance(ccd, model="srresnet-x4", *, psf=None, tile=DEFAULT_TILE, overlap=DEFAULT_OVERLAP,
            consistency="observation", ensemble=DEFAULT_ENSEMBLE, stop="discrepancy",
            max_iter=None, progress=False, psf_options=None, output=None, overwrite=False,
            chunks=None):
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
    output : str or path-like, optional
        Write the result to this FITS file (primary: data; ``MASK`` and
        ``UNCERT`` extensions) band by band, for outputs larger than memory:
        the network's output and the images of the consistency fit are kept
        in temporary files in the same folder, the fit's operator applied
        strip by strip (`astrosr.strips`), so memory stays at a few strips
        whatever the size. The result is the same as without ``output``.
    overwrite : bool
        Replace an existing ``output``.
    chunks : int or tuple, optional
        Process as dask arrays in these blocks; see
        `astrosr.parallel.enhance_blocks`. A dask-backed input goes there too
        (the result is then a lazy `astrosr.parallel.BlockImage`).

    Returns
    -------
    `~astropy.nddata.CCDData`
        The image ``scale`` times finer: same unit, WCS of the finer grid,
        `~astropy.nddata.VarianceUncertainty`, mask (fine pixels of masked
        input pixels), HISTORY (model name and weights sha256, consistency,
        PSF source), ``CHI2RED`` for ``"observation"``. With ``output``, read
        back from the file, data and uncertainty memory-mapped.
    """
    from .models import get_model

    if consistency not in CONSISTENCY_MODES:
        raise ValueError(f"consistency must be one of {CONSISTENCY_MODES}, got {consistency!r}")
    if stop not in STOP_RULES:
        raise ValueError(f"stop must be one of {tuple(STOP_RULES)}, got {stop!r}")
    max_iter = STOP_RULES[stop] if max_iter is None else int(max_iter)
    folder = None if output is None else _output_folder(output, overwrite)
    given, model = model, get_model(model)
    if int(tile) < 8 or int(overlap) < 0:
        raise ValueError(f"tile must be >= 8 and overlap >= 0, got {tile}, {overlap}")
    members = ensemble_size(ensemble)
    from .parallel import is_dask_backed

    if chunks is not None or is_dask_backed(ccd):
        from .parallel import enhance_blocks

        # The name, not the model: dask workers build a named model themselves.
        return enhance_blocks(ccd, given, chunks=chunks, psf=psf, tile=tile, overlap=overlap,
                              consistency=consistency, ensemble=ensemble, stop=stop,
                              max_iter=max_iter, progress=progress, psf_options=psf_options,
                              output=output, overwrite=overwrite)
    frame = _as_frame(ccd)
    ccd, scale = frame.ccds[0], model.scale
    data, var, good = frame.data[0], frame.var[0], frame.good[0]
    _, level, _ = sigma_clipped_stats(data[good])
    filled = fill_masked(data - level, good)
    mean, spread = _network_stores(model, filled, level, int(tile), int(overlap), members,
                                   progress, folder)
    keys = {}
    if consistency == "observation":
        psf, psf_source = _choose_psf(psf, ccd, model, scale, psf_options or {})
        bands, info = _observation_consistency(mean, frame, level, scale, psf, stop, max_iter,
                                               progress, folder)
        chi2 = info["chi2"]
        how = (f"observation psf={psf!r} ({psf_source}) "
               f"Richardson-Lucy iterations={info['iterations']} chi2_red={chi2:.3f} "
               f"chi2_red(sources)={info['chi2_sources']} stop={info['stopped']}")
        record_fit(keys, chi2, what="the input pixels", hint=_MISFIT_HINT, stacklevel=3)
        keys["CONSTOP"] = (stop, "stopping rule of the consistency fit")
        if info["chi2_sources"] is not None:
            keys["CHI2SRC"] = (round(info["chi2_sources"], 4), "same, on source pixels only")
    else:
        bands = _local_bands(mean, data, var, good, scale, consistency)
        how = consistency
    notes = enhance_history(model, tile=tile, overlap=overlap, members=members, consistency=how)
    wcs = OutputGrid(data.shape, scale, reference_wcs=frame.wcs[0]).fits_wcs()
    meta = result_meta(ccd, scale, notes, keys)
    with_spread = ((lo, hi, fine, var + spread.read(lo, hi)) for lo, hi, fine, var in bands)
    if output is None:
        return _result(ccd, with_spread, good, scale, meta, wcs)
    return _write_result(output, overwrite, ccd, with_spread, good, scale, meta, wcs)


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
    s = model.scale
    softening = network_softening(image) if softening is None else softening
    mean = np.empty((s * image.shape[0], s * image.shape[1]))
    spread = np.empty_like(mean)
    for (y0, y1), (m, v) in network_bands(model, image, tile, overlap, ensemble, softening,
                                          progress):
        mean[s * y0:s * y1], spread[s * y0:s * y1] = m, v
    return mean, spread


def network_softening(image):
    """The softening of the network's intensity transform: one value for the whole image.

    Every tile and every block of a large image must use the same, or their
    outputs would not join.
    """
    from .models.transform import noise_sigma

    return noise_sigma(image)


def network_bands(model, image, tile, overlap, ensemble, softening, progress=False):
    """The network's output band by band of ``tile`` input rows: yields ``((y0, y1), (mean, var))``.

    Each tile is taken with ``overlap`` input pixels of context on each side
    (wider than the network's receptive radius, so that the tiled output
    equals the whole-image output) and run through every self-ensemble
    member (flips and rotations of the tile); the mean and the sample
    variance (ddof 1; zero for one member) of its centre are kept. Memory:
    one band of the output.
    """
    from .progress import progress_bar

    n = ensemble_size(ensemble)
    s, (ny, nx) = model.scale, image.shape
    tiles = -(-ny // tile) * -(-nx // tile)
    with progress_bar(total=n * tiles, desc="network", unit="tile", enabled=progress) as bar:
        for y0 in range(0, ny, tile):
            y1 = min(y0 + tile, ny)
            mean = np.empty((s * (y1 - y0), s * nx))
            spread = np.zeros_like(mean)
            for x0 in range(0, nx, tile):
                x1 = min(x0 + tile, nx)
                ya, xa = max(0, y0 - overlap), max(0, x0 - overlap)
                patch = image[ya:min(ny, y1 + overlap), xa:min(nx, x1 + overlap)]
                core = (slice(s * (y0 - ya), s * (y1 - ya)), slice(s * (x0 - xa), s * (x1 - xa)))
                outs = np.array([_member(model, patch, k, softening)[core]
                                 for k in _MEMBER_ORDER[:n]], dtype=np.float64)
                mean[:, s * x0:s * x1] = outs.mean(axis=0)
                if n > 1:
                    spread[:, s * x0:s * x1] = outs.var(axis=0, ddof=1)
                bar.update(n)
            yield (y0, y1), (mean, spread)


def _member(model, patch, k, softening):
    """The network on self-ensemble member ``k`` of ``patch`` (flip, rot = divmod(k, 4)), undone."""
    flip, rot = divmod(k, 4)
    t = np.rot90(patch[:, ::-1] if flip else patch, rot)
    y = np.rot90(model.predict_array(np.ascontiguousarray(t), softening=softening), -rot)
    return y[:, ::-1] if flip else y


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


def _observation_consistency(fine, stack, level, scale, psf, stop, max_iter, progress,
                             folder=None):
    """Richardson-Lucy from the network's output until the data are reproduced.

    ``fine`` is the network's output (a `~astrosr.strips.FineStore`). With a
    ``folder`` the fine grid's images are kept there and the operator applied
    strip by strip (`astrosr.strips`): the iterations, and so the result,
    are the same. Returns the output as bands ``(lo, hi, image, variance)``
    of fine rows (a generator; the variance is the inverse Fisher diagonal)
    and the fit's information.
    """
    from .forward import ObservationOperator
    from .reconstruct import PoissonNoise, richardson_lucy, start_image
    from .strips import Strips

    data, var, good = stack.data[0], stack.var[0], stack.good[0]
    op = ObservationOperator(data.shape, [[0.0, 0.0]], scale=scale, psf=psf, single=True)
    rows = None if folder is None else max(1, STRIP_PIXELS // (scale ** 2 * op.shape_padded[1]))
    strips = Strips(op, rows=rows, folder=folder)
    noise = PoissonNoise(stack)
    start = start_image(op, fine, stack, good[None], noise, strips)
    fine.close()
    sources = _sources(data - level, var, good)[None]
    image, info = richardson_lucy(op, stack, good[None], noise, start, None, max_iter, stop=stop,
                                  sources=sources, progress=progress, strips=strips)
    image = image if not isinstance(image, np.ndarray) else strips.store(image)
    inv_var = op.embed_frames(np.where(good, 1.0 / var, 0.0)[None], op.real_dtype)
    return _fitted_bands(strips, image, inv_var, noise.mean_pedestal() / scale ** 2), info


def _fitted_bands(strips, image, inv_var, pedestal):
    """The fitted image and its variance (inverse Fisher diagonal), band by band of the field."""
    op = strips.op
    o, (fy, fx) = op.margin * op.scale, (op.scale * n for n in op.shape)
    for first, stop in strips.bounds:
        lo, hi = strips.fine_rows(first, stop)
        a, b = max(lo, o), min(hi, o + fy)
        if b <= a:
            continue
        fisher = strips.adjoint(inv_var, first, stop, squared=True)[a - lo:b - lo, o:o + fx]
        with np.errstate(divide="ignore"):
            cond_var = np.where(fisher > 0, 1.0 / fisher, np.inf)
        yield a - o, b - o, image.read(a, b)[:, o:o + fx] + pedestal, cond_var


def _local_bands(fine, data, var, good, scale, consistency):
    """Bands ``(lo, hi, image, variance)`` of the output without a fit (``"pixel"`` or None)."""
    for first in range(0, data.shape[0], _BAND_ROWS):
        stop = min(first + _BAND_ROWS, data.shape[0])
        lo, hi = scale * first, scale * stop
        image = fine.read(lo, hi).astype(float)
        part = data[first:stop], good[first:stop]
        if consistency == "pixel":
            image = pixel_consistency(image, part[0], part[1], scale)
        per_fine = np.where(part[1], var[first:stop], np.inf) / scale ** 4
        yield lo, hi, image, np.repeat(np.repeat(per_fine, scale, 0), scale, 1)


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


def pixel_consistency(fine, data, good, scale):
    """Shift each ``scale x scale`` footprint by a constant so it sums exactly to its input pixel."""
    ny, nx = data.shape
    sums = fine.reshape(ny, scale, nx, scale).sum(axis=(1, 3))
    correction = np.where(good, (data - sums) / scale ** 2, 0.0)
    return fine + np.repeat(np.repeat(correction, scale, 0), scale, 1)


# --------------------------------------------------------------------------- output


def enhance_history(model, *, tile, overlap, members, consistency):
    """The HISTORY notes of `enhance`: model, tiles, ensemble, consistency, uncertainty.

    Parameters
    ----------
    model : `~astrosr.models.SRModel`
        The network (its name and the sha256 of its weights are noted).
    tile, overlap : int
        Tile size and overlap of the tiled inference, in input pixels.
    members : int
        Size of the self-ensemble.
    consistency : str or None
        What follows ``consistency=``: the mode, or the mode and what its
        fit found.

    Returns
    -------
    list of str
        The notes, in the order `enhance` writes them.
    """
    return [f"astrosr.enhance: model={model.name} sha256={weights_hash(model)[:16]} "
            f"tile={tile} overlap={overlap} ensemble={members}-fold",
            f"astrosr.enhance: consistency={consistency}",
            "astrosr.enhance: uncertainty = input noise on the fine grid + "
            "self-ensemble variance"]


def result_meta(ccd, scale, notes, keys):
    """The header of a result of `enhance`: the input's, for a grid ``scale`` times finer.

    Parameters
    ----------
    ccd : `~astropy.nddata.NDData`
        The input image (its ``meta``).
    scale : int
        Output pixels per input pixel (``SRSCALE``).
    notes : iterable of str
        HISTORY notes to add.
    keys : dict
        More cards (``{key: (value, comment)}``).

    Returns
    -------
    `~astropy.io.fits.Header`
    """
    meta = output_header(ccd.meta)
    meta["SRSCALE"] = (scale, "output pixels per input pixel")
    meta.update(keys)
    for note in notes:
        add_history(meta, note)
    return meta


def _band_output(unit, image, var, good, scale):
    """One band of the output: ``(data, variance, mask)`` in float32, masked pixels 0."""
    if is_surface_brightness(unit):
        image, var = image * scale ** 2, var * scale ** 4
    mask = np.repeat(np.repeat(~good, scale, 0), scale, 1) | ~np.isfinite(var)
    return (np.where(mask, 0.0, image).astype(np.float32),
            np.where(mask, 0.0, var).astype(np.float32), mask)


def _result(ccd, bands, good, scale, meta, wcs):
    shape = tuple(scale * n for n in good.shape)
    data, var = np.empty(shape, np.float32), np.empty(shape, np.float32)
    mask = np.empty(shape, bool)
    for lo, hi, image, band_var in bands:
        rows = good[lo // scale:hi // scale]
        data[lo:hi], var[lo:hi], mask[lo:hi] = _band_output(ccd.unit, image, band_var, rows, scale)
    return CCDData(data, unit=ccd.unit, uncertainty=VarianceUncertainty(var), mask=mask, wcs=wcs,
                   meta=meta)


def _write_result(path, overwrite, ccd, bands, good, scale, meta, wcs):
    """The output written to ``path`` band by band (`astrosr.blocks.BlockWriter`), then opened.

    The returned CCDData's data and uncertainty are memory-mapped from the file.
    """
    from .blocks import BlockWriter

    shape = tuple(scale * n for n in good.shape)
    with BlockWriter(path, shape=shape, unit=ccd.unit, header=meta, wcs=wcs, uncertainty="var",
                     mask=True, overwrite=overwrite) as out:
        for lo, hi, image, band_var in bands:
            rows = good[lo // scale:hi // scale]
            data, var, mask = _band_output(ccd.unit, image, band_var, rows, scale)
            out.write(np.s_[lo:hi, :], data, uncertainty=var, mask=mask)
    return CCDData.read(path, hdu_uncertainty="UNCERT", hdu_mask="MASK", memmap=True)


def _output_folder(path, overwrite):
    """The folder of ``output``, checked before any work: where the fine grid's images go."""
    from pathlib import Path

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"output {path} exists: pass overwrite=True to replace it")
    if not path.parent.resolve().is_dir():
        raise FileNotFoundError(f"the folder of output {path} does not exist")
    return path.parent.resolve()


def _network_stores(model, filled, level, tile, overlap, members, progress, folder):
    """The network's output (``+ level``) and its self-ensemble variance, as fine-grid stores."""
    from .strips import FineStore

    s = model.scale
    shape = (s * filled.shape[0], s * filled.shape[1])
    # In float32 in memory too (the network's own precision), so that both give the same result.
    mean = FineStore(shape, np.float32, folder=folder)
    spread = FineStore(shape, np.float32, folder=folder)
    for (y0, y1), (m, v) in network_bands(model, filled, tile, overlap, members,
                                          network_softening(filled), progress):
        mean.write(s * y0, m + level / s ** 2)
        spread.write(s * y0, v)
    return mean, spread
