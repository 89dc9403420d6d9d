"""Images held as dask arrays: `enhance_blocks`, `fuse_blocks`, `BlockImage`.

`astrosr.enhance` and `astrosr.fuse` block by block: the local steps run on
blocks (with halos for the network, strips of output rows for drizzle), the
numbers that couple the whole image are computed once before the blocks.
"""

import dataclasses
import inspect
import numbers
import os
import re
import threading
import types
import uuid
import warnings
import weakref

import numpy as np
from astropy import units as u
from astropy.nddata import CCDData, NDData, VarianceUncertainty
from astropy.stats import sigma_clipped_stats

from ..geometry import OutputGrid
from ..nddata import (SATURATION_KEYS, add_history, header_saturation_level, is_clipping_level,
                      saturated_pixels, variance_of, white_noise_variance)
from ..output import ResultImage, is_surface_brightness, uncertainty_like
from ..stack import FrameStack
from .stacks import DASK_INSTALL

__all__ = ["enhance_blocks", "fuse_blocks", "BlockImage", "is_dask_backed",
           "DEFAULT_SAMPLE", "FILL_REACH", "SATURATION_REACH", "STRIP_METHODS"]

# =========================================================================== dask arrays
#
# Images larger than one machine's memory: `enhance_blocks` and `fuse_blocks` take dask-backed
# CCDData and return `BlockImage` results whose arrays are dask arrays, computed on any
# scheduler. The local steps run block by block; the global numbers (sky level, softening,
# noise, saturation, per-frame weights) are computed once, before the blocks, and given to each.

#: Pixels (of an image, or of one frame) from which the global statistics of `enhance_blocks`
#: and `fuse_blocks` are computed: every pixel up to this size (the numbers are then those of
#: the whole-image call), else evenly spaced whole rows of about this many pixels.
DEFAULT_SAMPLE = 2 ** 24

#: Input pixels reached by the fill of masked pixels (`astrosr.inference.fill_masked`: a
#: Gaussian of sigma 2 pixels, truncated at 4 sigma).
FILL_REACH = 8
#: Input pixels reached by the growth of saturated pixels (`astrosr.nddata.saturated_pixels`,
#: ``grow=1`` as `astrosr.nddata.frame_arrays` calls it).
SATURATION_REACH = 1

#: Parameters of `astrosr.enhance` that are not options passed on to it.
_ENHANCE_ARGS = ("ccd", "model", "chunks")


def _is_dask(value):
    return hasattr(value, "dask") and hasattr(value, "chunks") and hasattr(value, "compute")


def is_dask_backed(value):
    """Whether an image or a stack is held as dask arrays: what `enhance_blocks` takes.

    Parameters
    ----------
    value : object
        An image (an array, CCDData or NDData) or frames (a sequence of
        them, a 3-D array).

    Returns
    -------
    bool
        True for a dask array, an NDData whose data is one, or a sequence
        holding such a frame. Dask is not imported.
    """
    def held(item):
        return _is_dask(item) or (isinstance(item, NDData) and _is_dask(item.data))

    if held(value):
        return True
    return isinstance(value, (list, tuple)) and any(held(item) for item in value)


def _import_dask_array():
    try:
        import dask.array as da
    except ImportError as exc:
        raise ImportError(f"astrosr.parallel needs dask.array ({exc}): {DASK_INSTALL}") from None
    return da


class BlockImage(ResultImage):
    """A result whose arrays are dask arrays, computed when asked.

    What `enhance_blocks` and `fuse_blocks` return: a
    `~astrosr.output.ResultImage` (so a `~astropy.nddata.CCDData`) whose
    ``data``, ``uncertainty.array``, ``mask`` and, for fusion, ``weight`` and
    ``rejected`` are `dask.array.Array` objects; unit, WCS and header are
    those of the whole-image result. Nothing runs until `compute` (or
    ``dask.compute`` of the arrays, or a writer that stores them block by
    block) asks for it.

    Parameters
    ----------
    *args, **kwargs
        As `~astrosr.output.ResultImage`; ``mask``, ``weight`` and
        ``rejected`` may be dask arrays (a plain CCDData would compute the
        mask at once).

    Notes
    -----
    The data, uncertainty and mask come from the same blocks: computed one at
    a time, each runs them again. `compute` computes them together, once;
    `persist` keeps them computed by the scheduler (on a cluster, in the
    workers' memory).
    """

    def __init__(self, *args, weight=None, rejected=None, **kwargs):
        source = args[0] if args else kwargs.get("data")
        if isinstance(source, ResultImage):
            weight = source.weight if weight is None else weight
            rejected = source.rejected if rejected is None else rejected
        CCDData.__init__(self, *args, **kwargs)  # not ResultImage's: it computes the weight
        self.weight, self.rejected = weight, rejected

    @property
    def mask(self):
        """The mask: a dask array of bool, or as `~astropy.nddata.CCDData` keeps one."""
        return CCDData.mask.fget(self)

    @mask.setter
    def mask(self, value):
        if _is_dask(value):
            if tuple(value.shape) != tuple(self.data.shape):
                raise ValueError(f"dimensions of mask {value.shape} and data {self.data.shape} "
                                 "do not match")
            NDData.mask.fset(self, value.astype(bool))  # kept as it is, as NDData keeps it
        else:
            CCDData.mask.fset(self, value)

    def _arrays(self):
        unc = self.uncertainty
        parts = {"data": self.data, "uncertainty": None if unc is None else unc.array,
                 "mask": self.mask, "weight": self.weight, "rejected": self.rejected}
        return {k: v for k, v in parts.items() if v is not None}

    def persist(self, **kwargs):
        """The same result with its arrays computed and kept by the scheduler (``dask.persist``).

        On a `distributed.Client`, the blocks stay in the workers' memory,
        ready for further work; with the local schedulers, in this process.

        Parameters
        ----------
        **kwargs
            Options of ``dask.persist``.

        Returns
        -------
        `BlockImage`
        """
        import dask

        return self._evaluated(BlockImage, dask.persist, kwargs)

    def compute(self, **kwargs):
        """Compute every array at once: a `~astrosr.output.ResultImage` of numpy arrays.

        Parameters
        ----------
        **kwargs
            Options of ``dask.compute`` (``scheduler="synchronous"``,
            ``"threads"``, ``"processes"``; with a `distributed.Client`
            active, its cluster by default).

        Returns
        -------
        `~astrosr.output.ResultImage`
        """
        import dask

        return self._evaluated(ResultImage, dask.compute, kwargs)

    def _evaluated(self, cls, evaluate, kwargs):
        """A ``cls`` image of every array through ``evaluate`` (``dask.compute`` or ``persist``)."""
        parts = self._arrays()
        got = dict(zip(parts, evaluate(*parts.values(), **kwargs)))
        unc = self.uncertainty
        return cls(got["data"], unit=self.unit, wcs=self.wcs, meta=self.meta.copy(),
                   uncertainty=None if unc is None else type(unc)(got["uncertainty"]),
                   mask=got.get("mask"), weight=got.get("weight"), rejected=got.get("rejected"))


# --------------------------------------------------------------------------- inputs


@dataclasses.dataclass
class _Lazy:
    """One image as dask arrays, with what describes it (``kind``: how it was given)."""

    data: object
    unc: object  # the uncertainty's array (dask), or None
    mask: object  # dask bool, or None
    unit: object
    meta: object
    wcs: object
    unc_type: type | None
    unc_unit: object
    kind: str  # "ccd", "nddata" or "array"

    def variance(self):
        """The variance as a dask array (float64), or None without uncertainty."""
        if self.unc is None:
            return None
        return self.unc.map_blocks(_block_variance, self.unc_type, dtype=float)

    def computed(self):
        """The image in memory, as it was given (CCDData, NDData or an array)."""
        import dask

        data, unc, mask = dask.compute(self.data, self.unc, self.mask)
        if self.kind == "array":
            return data
        uncertainty = None if unc is None else self.unc_type(unc, unit=self.unc_unit)
        cls = CCDData if self.kind == "ccd" else NDData
        return cls(data, unit=self.unit, uncertainty=uncertainty, mask=mask, wcs=self.wcs,
                   meta=self.meta)


def _block_variance(array, unc_type):
    """`astrosr.nddata.variance_of` on one block of an uncertainty's array."""
    holder = types.SimpleNamespace(uncertainty=unc_type(array), data=array)
    return np.asarray(variance_of(holder), dtype=float)


def _checked_chunks(chunks):
    """``chunks=`` as ``(rows, columns)`` of input pixels per block, or None."""
    if chunks is None:
        return None
    values = (chunks, chunks) if _is_int(chunks) else tuple(chunks) \
        if isinstance(chunks, (tuple, list)) else ()
    if len(values) != 2 or not all(_is_int(v) and v >= 1 for v in values):
        raise ValueError(f"chunks must be one or two positive integers (rows, columns of input "
                         f"pixels per block), got {chunks!r}")
    return tuple(int(v) for v in values)


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _checked_sample(sample):
    if not _is_int(sample) or sample < 1:
        raise ValueError(f"sample must be a positive integer (pixels), got {sample!r}")
    return int(sample)


def _lazy(item, chunks, name, kind=None, hint="chunks=(rows, columns) of input pixels per block"):
    """``item`` (NDData, or a 2-D dask or numpy array) as a `_Lazy` with blocks ``chunks``."""
    da = _import_dask_array()
    if isinstance(item, NDData):
        data, unc, mask = item.data, item.uncertainty, item.mask
        unit = item.unit if item.unit is not None else u.dimensionless_unscaled
        meta, wcs = item.meta, item.wcs
        kind = kind or ("ccd" if isinstance(item, CCDData) else "nddata")
    else:
        data, unc, mask, unit, meta, wcs = item, None, None, u.dimensionless_unscaled, {}, None
        kind = kind or "array"
    if not _is_dask(data):
        if chunks is None:
            raise ValueError(f"{name} is in memory (a numpy array): give {hint}, or make its "
                             "data a dask array")
        data = np.asarray(data)
    if len(data.shape) != 2:
        raise ValueError(f"{name} must be a 2-D image, got shape {tuple(data.shape)}")
    data = da.asarray(data, chunks=chunks) if not _is_dask(data) else \
        (data.rechunk(chunks) if chunks is not None else data)

    def like(array, dtype=None):
        array = da.asarray(array) if _is_dask(array) else da.from_array(np.asarray(array))
        array = da.broadcast_to(array, data.shape) if array.shape != data.shape else array
        return array.rechunk(data.chunks).astype(dtype or array.dtype)

    if unc is not None:
        variance_of(types.SimpleNamespace(uncertainty=type(unc)(np.ones(1)), data=np.ones(1)))
    return _Lazy(data=data, unc=None if unc is None else like(unc.array),
                 mask=None if mask is None else like(mask, bool), unit=unit, meta=meta,
                 wcs=wcs, unc_type=None if unc is None else type(unc),
                 unc_unit=None if unc is None else unc.unit, kind=kind)


def _sample_rows(shape, sample):
    """Every ``k``-th row: all rows when the image has at most ``sample`` pixels."""
    ny, nx = shape
    return max(1, -(-ny * nx // sample))


# --------------------------------------------------------------------------- good pixels


def _saturation_rules(images):
    """How `astrosr.nddata.frame_arrays` would find each image's saturated pixels, for blocks.

    One per image: ``("header", cards)``, the header's level (each block applies it);
    ``("clipped", value)``, the pixels at the image's maximum, shared by 3 to 1% of its
    pixels (found on the whole image, applied to each block); or ``("none", None)``.
    """
    import dask

    da = _import_dask_array()
    rules, pending = [], []
    for image in images:
        cards = {k: image.meta[k] for k in SATURATION_KEYS if k in image.meta}
        if header_saturation_level(cards) is not None:
            rules.append(("header", cards))
        else:
            rules.append(None)
            pending.append(image)
    goods = [_first_good(image) for image in pending]
    tops = dask.compute(*[(da.where(g, f.data, -np.inf).max(), g.sum())
                          for f, g in zip(pending, goods)])
    counts = dask.compute(*[(g & (f.data == top)).sum() for f, g, (top, _) in
                            zip(pending, goods, tops)])
    # The rule of astrosr.nddata.saturated_pixels, on counts reduced over the whole image, which
    # no block sees alone.
    found = iter([("clipped", float(top)) if is_clipping_level(int(c), int(n))
                  else ("none", None) for (top, n), c in zip(tops, counts)])
    return [rule if rule is not None else next(found) for rule in rules]


def _first_good(image):
    """Finite and not masked: the pixels the saturation rule looks at."""
    da = _import_dask_array()
    good = da.isfinite(image.data)
    return good if image.mask is None else good & ~image.mask


def _good_pixels(data, mask, var, rule):
    """The good pixels of a block, as `astrosr.nddata.frame_arrays` defines them."""
    data = np.asarray(data, dtype=float)
    good = np.isfinite(data) & ~mask
    kind, value = rule
    if kind == "header":
        good &= ~saturated_pixels(np.where(good, data, np.nan), value, grow=SATURATION_REACH)
    elif kind == "clipped":
        clipped = (good & (data == value)).astype(float)
        good &= ~saturated_pixels(clipped, level=1.0, grow=SATURATION_REACH)
    return good & np.isfinite(var) & (var > 0)


def _block_inputs(image, var):
    """``(data, mask, variance)`` as dask arrays of the same blocks (no mask: all False)."""
    da = _import_dask_array()
    mask = image.mask if image.mask is not None else da.zeros(image.data.shape, dtype=bool,
                                                               chunks=image.data.chunks)
    if not _is_dask(var):
        var = da.full(image.data.shape, float(var), chunks=image.data.chunks)
    return image.data, mask, var


def _good_map(inputs, rule):
    da = _import_dask_array()
    return da.map_overlap(_good_pixels, *inputs, depth=SATURATION_REACH, boundary="none",
                          rule=rule, dtype=bool, meta=np.empty((0, 0), bool))


def _estimated_variance(data0, good):
    """The white-noise variance of an image without uncertainty, as `astrosr.FrameStack` does."""
    var = white_noise_variance(data0, good)
    return var if var > 0 else 1.0


def _merged(chunks, size):
    """Chunk sizes along one axis, neighbours merged until each holds at least ``size``."""
    out = []
    for c in chunks:
        if out and out[-1] < size:
            out[-1] += c
        else:
            out.append(c)
    if len(out) > 1 and out[-1] < size:
        out[-2] += out.pop()
    return tuple(out)


# --------------------------------------------------------------------------- the network


class _ModelSource:
    """A network that travels to the workers: by name, or as its weights and card.

    In the process that made it, `get` returns the model itself; a worker builds it once
    (by name: `astrosr.models.get_model`; else from the weights) and keeps it.
    """

    _cache = {}
    _lock = threading.Lock()
    #: One token per model object, so that a worker builds it once for all the calls.
    _tokens = weakref.WeakKeyDictionary()

    def __init__(self, model, given):
        self.spec = os.fspath(given) if isinstance(given, (str, os.PathLike)) else None
        if self.spec is not None:
            self.token = f"spec:{self.spec}"
        else:
            self.token = self._tokens.setdefault(model, uuid.uuid4().hex)
        self._model = model

    def __getstate__(self):
        state = {"token": self.token, "spec": self.spec, "model": None}
        if self.spec is None:  # sent again by a worker: what it was sent
            state["model"] = self._state if self._model is None else (
                self._model.config, dict(self._model.card), self._model.network.get_weights())
        return state

    def __setstate__(self, state):
        self.token, self.spec, self._model = state["token"], state["spec"], None
        self._state = state["model"]

    def get(self):
        """The model (`astrosr.SRModel`)."""
        if self._model is not None:
            return self._model
        with self._lock:
            model = self._cache.get(self.token)
            if model is None:
                model = self._built()
                if len(self._cache) >= 4:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[self.token] = model
        return model

    def _built(self):
        from ..models import SRModel, get_model

        if self.spec is not None:
            return get_model(self.spec)
        config, card, weights = self._state
        options = {k: v for k, v in config.items() if k not in ("architecture", "scale")}
        model = SRModel(config["architecture"], scale=config["scale"], name=card["name"],
                        **options)
        model.network.set_weights(weights)
        model.card = card
        return model


def _enhance_block(data, mask, var, *, rule, level, softening, source, halo, tile, overlap,
                   members, consistency, surface, block_info=None):
    """One block of `enhance_blocks`: ``(3, s*h, s*w)`` float32 data, variance, mask (0/1).

    The block comes with a halo of ``halo`` input pixels on each side that has a neighbour
    (none at the image's edges): the network runs on all of it, and only the core is kept.
    """
    from .. import inference

    (iy, ix), (nby, nbx) = block_info[0]["chunk-location"], block_info[0]["num-chunks"]
    top, left = halo * (iy > 0), halo * (ix > 0)
    bottom, right = data.shape[0] - halo * (iy < nby - 1), data.shape[1] - halo * (ix < nbx - 1)
    # (an axis of one block has no halo: there both ends are the image's edges)
    good = _good_pixels(data, mask, var, rule)
    data0 = np.where(good, np.asarray(data, dtype=float), 0.0)
    model = source.get()
    s = model.scale
    mean, spread = inference.run_network(model, inference.fill_masked(data0 - level, good), tile,
                                         overlap, members, softening=softening)
    fine_core = slice(s * top, s * bottom), slice(s * left, s * right)
    core = slice(top, bottom), slice(left, right)
    fine, spread = mean[fine_core] + level / s ** 2, spread[fine_core]
    good, data0, var = good[core], data0[core], np.asarray(var, dtype=float)[core]
    if consistency == "pixel":
        fine = inference.pixel_consistency(fine, data0, good, s)
    per_fine = np.where(good, var, np.inf) / s ** 4
    total = np.repeat(np.repeat(per_fine, s, 0), s, 1) + spread
    if surface:
        fine, total = fine * s ** 2, total * s ** 4
    masked = np.repeat(np.repeat(~good, s, 0), s, 1) | ~np.isfinite(total)
    out = np.empty((3,) + fine.shape, dtype=np.float32)
    out[0] = np.where(masked, 0.0, fine)
    out[1] = np.where(masked, 0.0, total)
    out[2] = masked
    return out


def _filled_block(data, mask, var, *, rule, level):
    """The network's input on one block: sky-subtracted, masked pixels filled."""
    from ..inference import fill_masked

    good = _good_pixels(data, mask, var, rule)
    return fill_masked(np.where(good, np.asarray(data, dtype=float), 0.0) - level, good)


def _enhance_options(options):
    """The options of `astrosr.enhance`, with its defaults, checked as it checks them."""
    from ..inference import CONSISTENCY_MODES, STOP_RULES, enhance, ensemble_size

    params = {k: p.default for k, p in inspect.signature(enhance).parameters.items()
              if k not in _ENHANCE_ARGS}
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise TypeError(f"enhance_blocks: unknown option(s) {unknown}: the options are those of "
                        f"astrosr.enhance ({', '.join(params)})")
    opts = {**params, **options}
    if opts["consistency"] not in CONSISTENCY_MODES:
        raise ValueError(f"consistency must be one of {CONSISTENCY_MODES}, got "
                         f"{opts['consistency']!r}")
    if opts["stop"] not in STOP_RULES:
        raise ValueError(f"stop must be one of {tuple(STOP_RULES)}, got {opts['stop']!r}")
    if int(opts["tile"]) < 8 or int(opts["overlap"]) < 0:
        raise ValueError(f"tile must be >= 8 and overlap >= 0, got {opts['tile']}, "
                         f"{opts['overlap']}")
    ensemble_size(opts["ensemble"])
    return options, opts


def enhance_blocks(ccd, model="srresnet-x4", *, chunks=None, sample=DEFAULT_SAMPLE,
                   **enhance_options):
    """`astrosr.enhance` on a dask-backed image, block by block: a lazy result.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`, `~astropy.nddata.NDData` or 2-D array
        The image. Its ``data`` (and uncertainty's array, and mask) may be
        dask arrays, whose blocks are the blocks of the work; a numpy image
        needs ``chunks``.
    model : str, Path or `~astrosr.SRModel`
        As for `astrosr.enhance`. On a cluster, a name or path is best: each
        worker loads the model once (a model object travels as its weights).
    chunks : int or (int, int), optional
        Rows and columns of input pixels per block: the image is rechunked
        to them (a numpy image is made a dask array of them). Default: the
        dask array's own blocks.
    sample : int
        Pixels from which the global numbers are computed (`DEFAULT_SAMPLE`;
        see Notes).
    **enhance_options
        Options of `astrosr.enhance` (``consistency``, ``ensemble``,
        ``tile``, ``overlap``, ``psf``, ``stop``...), checked as it checks
        them.

    Returns
    -------
    `BlockImage`
        The result of `astrosr.enhance`: the same unit, WCS of the finer
        grid, header (with one more HISTORY card saying how it was
        computed), `~astropy.nddata.VarianceUncertainty` and mask, as dask
        arrays in blocks ``scale`` times the input blocks (``chunks``).

    Raises
    ------
    ValueError
        Bad ``chunks`` (not one or two positive integers) or ``sample``, a
        numpy image without ``chunks``, an image with no usable pixel, or
        an option value that `astrosr.enhance` refuses.
    TypeError
        An option that `astrosr.enhance` does not have.
    ImportError
        If dask is not installed.

    Notes
    -----
    ``consistency=None`` and ``"pixel"`` are local, so they run block by
    block (``dask.array.map_overlap``, ``boundary="none"``): each block
    comes with a halo of ``overlap`` input pixels (the network's margin,
    `astrosr.inference.DEFAULT_OVERLAP` by default; it must exceed the
    network's receptive radius, as for `astrosr.enhance`'s own tiles) plus
    `FILL_REACH` + `SATURATION_REACH` pixels for the fill of masked pixels
    and the growth of saturated ones; the network runs on the block and its
    halo, and only the core is kept. Blocks smaller than the halo are
    merged with their neighbours for the work (the result keeps the blocks
    asked for). What couples the whole image is computed once, before the
    blocks, and given to every block, so that blocks agree and leave no
    seam: the saturation level, the sky level (sigma-clipped median), the
    noise of an image without uncertainty and the softening of the
    network's intensity transform (`astrosr.models.transform.noise_sigma`).
    From all the pixels when the image has at most ``sample`` of them: the
    result is then the whole-image call's to float32 rounding. From evenly
    spaced whole rows of about ``sample`` pixels beyond that: the result
    then differs from a whole-image call by the sampling error of those
    numbers (not by seams).

    ``consistency="observation"`` (the default) fits the whole image at
    once: its Richardson-Lucy iterations share one step size and one
    stopping rule, so a fit per block would change the answer at the
    block borders. It computes the image, calls `astrosr.enhance` on it in
    memory (network and fit) and wraps the result in dask arrays: use it
    on images that fit in memory, or ``"pixel"`` for larger ones.

    ``progress`` shows the bars of `astrosr.enhance` with ``"observation"``
    only; for blocks, use Dask's (``dask.diagnostics.ProgressBar``, the
    dashboard of a `distributed.Client`). ``output`` writes the result to
    that FITS file as `astrosr.enhance` does (with ``"observation"``, by
    `astrosr.enhance` itself; for blocks, a row of blocks at a time, each
    computed once), and the `BlockImage` returned reads it, memory-mapped.

    Examples
    --------
    >>> import dask.array as da
    >>> from astrosr.parallel import enhance_blocks
    >>> ccd.data = da.from_array(ccd.data, chunks=(2048, 2048))       # doctest: +SKIP
    >>> sr = enhance_blocks(ccd, consistency="pixel")                  # doctest: +SKIP
    >>> sr = sr.compute()                                              # doctest: +SKIP
    """
    import dask

    from ..inference import enhance_history, ensemble_size, result_meta
    from ..models import get_model
    from ..models.transform import noise_sigma

    da = _import_dask_array()
    given, opts = _enhance_options(enhance_options)
    image = _lazy(ccd, _checked_chunks(chunks), "ccd")
    sample = _checked_sample(sample)
    net = get_model(model)
    s = net.scale
    out_chunks = tuple(tuple(s * c for c in cs) for cs in image.data.chunks)
    if opts["consistency"] == "observation":
        return _enhance_whole(image, net, given, out_chunks)

    rule, = _saturation_rules([image])
    var = image.variance()
    k = _sample_rows(image.data.shape, sample)
    inputs = _block_inputs(image, 1.0 if var is None else var)
    good = _good_map(inputs, rule)
    data0 = da.where(good, image.data.astype(float), 0.0)
    n_good, good_s, data_s = dask.compute(good.sum(), good[::k], data0[::k])
    if n_good == 0:
        raise ValueError("ccd has no usable pixel (all masked, NaN or inf)")
    if var is None:
        var = _estimated_variance(data_s, good_s)
        inputs = _block_inputs(image, var)
    _, level, _ = sigma_clipped_stats(data_s[good_s])
    level = float(level)
    filled = da.map_overlap(_filled_block, *inputs, depth=FILL_REACH + SATURATION_REACH,
                            boundary="none", rule=rule, level=level, dtype=float,
                            meta=np.empty((0, 0)))
    softening = noise_sigma(filled[::k].compute())

    halo = int(opts["overlap"]) + FILL_REACH + SATURATION_REACH
    work = tuple(_merged(cs, halo) for cs in image.data.chunks)
    inputs = tuple(a.rechunk(work) for a in inputs)
    fine = tuple(tuple(s * c for c in cs) for cs in work)
    members = ensemble_size(opts["ensemble"])
    depth = {axis: halo if len(cs) > 1 else 0 for axis, cs in enumerate(work)}
    stacked = da.map_overlap(
        _enhance_block, *inputs, depth=depth, boundary="none", trim=False, allow_rechunk=False,
        new_axis=0, chunks=((3,),) + fine, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32),
        rule=rule, level=level, softening=softening, source=_ModelSource(net, model), halo=halo,
        tile=int(opts["tile"]), overlap=int(opts["overlap"]), members=members,
        consistency=opts["consistency"], surface=is_surface_brightness(image.unit))
    if work != image.data.chunks:
        stacked = stacked.rechunk(((3,),) + out_chunks)
    notes = enhance_history(net, tile=opts["tile"], overlap=opts["overlap"], members=members,
                            consistency=opts["consistency"])
    notes.append(f"astrosr.parallel.enhance_blocks: dask blocks of {_block_text(image.data)} "
                 f"input pixels, halo {halo}; sky level and softening from "
                 f"{_sample_text(k, image.data.shape)}")
    meta = result_meta(image, s, notes, {})
    wcs = OutputGrid(image.data.shape, s, reference_wcs=image.wcs).fits_wcs()
    result = BlockImage(stacked[0], unit=image.unit, wcs=wcs, meta=meta,
                        uncertainty=VarianceUncertainty(stacked[1]), mask=stacked[2] > 0.5)
    if opts["output"] is None:
        return result
    return _written(result, opts["output"], bool(opts["overwrite"]))


def _written(result, path, overwrite):
    """``result`` written to ``path`` a row of blocks at a time, then opened memory-mapped.

    As `astrosr.enhance` writes ``output=`` (`astrosr.blocks.BlockWriter`: primary data,
    ``MASK``, ``UNCERT``); each row of blocks is computed once, its three planes together.
    """
    import dask

    from ..blocks import BlockWriter

    with BlockWriter(path, shape=result.shape, unit=result.unit, header=result.meta,
                     wcs=result.wcs, uncertainty="var", mask=True, overwrite=overwrite) as out:
        first = 0
        for rows in result.data.chunks[0]:
            region = np.s_[first:first + rows, :]
            data, var, mask = dask.compute(result.data[region],
                                           result.uncertainty.array[region], result.mask[region])
            out.write(region, data, uncertainty=var, mask=mask)
            first += rows
    done = CCDData.read(path, hdu_uncertainty="UNCERT", hdu_mask="MASK", memmap=True)
    return _wrapped(done, result.data.chunks)


def _block_text(array):
    rows, cols = array.chunks
    return f"{max(rows)}x{max(cols)}"


def _sample_text(k, shape):
    if k == 1:
        return f"all {shape[0] * shape[1]} pixels"
    return f"one row in {k} ({-(-shape[0] // k) * shape[1]} pixels)"


def _enhance_whole(image, net, options, out_chunks):
    """``consistency="observation"``: `astrosr.enhance` on the image in memory, wrapped."""
    from ..inference import enhance

    result = enhance(image.computed(), net, **options)
    add_history(result.meta, "astrosr.parallel.enhance_blocks: consistency=observation fits "
                "the whole image at once (one stopping rule): computed in memory, then "
                "wrapped in dask arrays")
    return _wrapped(result, out_chunks)


def _wrapped(result, out_chunks, rejected_chunks=None):
    """A result in memory as a `BlockImage` of dask arrays of blocks ``out_chunks``."""
    da = _import_dask_array()
    unc = result.uncertainty

    def lazy(a, chunks=out_chunks):
        return None if a is None else da.from_array(np.asarray(a), chunks=chunks)

    rejected = getattr(result, "rejected", None)
    return BlockImage(lazy(result.data), unit=result.unit, wcs=result.wcs, meta=result.meta,
                      uncertainty=None if unc is None else type(unc)(lazy(unc.array)),
                      mask=lazy(result.mask), weight=lazy(getattr(result, "weight", None)),
                      rejected=None if rejected is None else lazy(rejected, rejected_chunks))


# --------------------------------------------------------------------------- fusion

#: Methods that `fuse_blocks` runs strip by strip (with pure shifts and no rejection).
STRIP_METHODS = ("drizzle", "shift_and_add")
#: Rows of the stand-in frames on which `fuse_blocks` asks `astrosr.fuse` for the header.
_PROBE_ROWS = 8


def fuse_blocks(frames, geometry=None, *, scale=None, method="drizzle", chunks=None,
                sample=DEFAULT_SAMPLE, **fuse_options):
    """`astrosr.fuse` on dask-backed frames, strip by strip of the output: a lazy result.

    Parameters
    ----------
    frames : list of CCDData/NDData, or 3-D array ``(n, ny, nx)``
        The frames; their data (and uncertainties' arrays, and masks) may be
        dask arrays. Frames in memory (numpy, or anything else
        `astrosr.fuse` reads, such as FITS paths) need ``chunks``.
    geometry : table, (n, 2) array, or ``"wcs"``
        As for `astrosr.fuse`.
    scale : number
        As for `astrosr.fuse`.
    method : {"drizzle", "shift_and_add", "reconstruct"}
        As for `astrosr.fuse`.
    chunks : int, optional
        Reference rows (input pixels) per strip of the output. Default: the
        rows of the first block of the first frame's dask array.
    sample : int
        Pixels of each frame from which its global numbers are computed
        (`DEFAULT_SAMPLE`; see Notes).
    **fuse_options
        Options of `astrosr.fuse` (``pixfrac``, ``weights``, ``reject``,
        ``psf``...), checked as it checks them.

    Returns
    -------
    `BlockImage`
        The result of `astrosr.fuse`: unit, WCS, header (``NCOMBINE``,
        ``FUSEMETH``..., with ``time=lazy`` in its HISTORY and one more
        HISTORY card saying how it was computed), uncertainty of the input's
        class, mask, ``weight`` and ``rejected``, as dask arrays: the image's
        blocks are strips of ``scale * chunks`` output rows, every column.

    Raises
    ------
    ValueError
        Bad ``chunks`` or ``sample``, frames in memory without ``chunks``,
        a frame with no usable pixel, or what `astrosr.fuse` refuses.
    TypeError
        An option that `astrosr.fuse` does not have, or what it refuses.
    ImportError
        If dask is not installed.

    Notes
    -----
    ``"drizzle"`` and ``"shift_and_add"`` with pure shifts onto the
    reference's grid (an integer ``scale``), without outlier rejection
    (``reject=False``, or ``"auto"`` with fewer than 3 frames), run strip by
    strip: output rows ``scale*[r0, r1)`` depend only on the frame rows
    within the largest ``|dy|`` + 1 of ``[r0, r1)``
    (`astrosr.geometry.Placement.strip`), which each strip's task reads (a
    ``dask.delayed`` task per strip, assembled with
    ``dask.array.concatenate``: ``map_blocks`` over rows of blocks). Each
    strip is drizzled with the weights of the whole frames, computed once,
    before the strips: the inverse background variance of each frame (the
    median variance of its good pixels, DrizzlePac's IVM), or those given.
    So are the saturation level of each frame and the noise of a frame
    without uncertainty. From all the pixels of a frame when it has at most
    ``sample`` of them (the result is then the whole call's to float
    rounding), else from evenly spaced rows of about ``sample`` pixels. The
    header comes from `astrosr.fuse` itself, called on small stand-in frames
    with the frames' headers, units, uncertainty classes and WCS.

    Everything else is computed in memory by `astrosr.fuse` and wrapped in
    dask arrays: ``"reconstruct"`` (its Richardson-Lucy iterations share one
    step size and one stopping rule over the whole image), outlier rejection
    (it fits provisional models to the whole stack and per-frame noise
    models), rotations, scales and distorted WCS geometries, ``output_wcs``
    and ``shape_out``, a non-integer scale, frames with a WCS other than a
    FITS WCS. The HISTORY says which.

    Examples
    --------
    >>> from astrosr.parallel import fuse_blocks
    >>> hr = fuse_blocks(frames, shifts, scale=4, reject=False, chunks=512)  # doctest: +SKIP
    >>> hr = hr.compute()                                                    # doctest: +SKIP
    """
    import dask

    from ..fusion import METHODS, fuse
    from ..geometry import Placement, frame_transforms

    da = _import_dask_array()
    _fuse_option_names(fuse_options)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    rows = _strip_rows(chunks)
    sample = _checked_sample(sample)
    if geometry is None and isinstance(frames, FrameStack):
        geometry = frames.geometry
    lazy, cube = _lazy_frames(frames, rows, fuse_options.get("hdu"))
    n, shape = len(lazy), tuple(lazy[0].data.shape)
    rows = rows or int(lazy[0].data.chunks[0][0])
    call = dict(geometry=geometry, scale=scale, method=method, options=fuse_options, rows=rows)
    reason = _whole_fusion_reason(method, fuse_options, lazy)
    if reason:
        return _fuse_whole(lazy, cube, call, reason)

    k = _sample_rows(shape, sample)
    raw = _raw_frames(lazy, k)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        probe = fuse(_stand_ins(lazy, raw, cube), geometry, scale=scale, method=method,
                     **_probe_options(fuse_options, n))
    scale_out = float(probe.meta["FUSESCAL"])
    transforms = frame_transforms(geometry, shape, [f.wcs for f in lazy],
                                  reference=fuse_options.get("reference", 0))
    placement = Placement(transforms, shape, OutputGrid(shape, int(scale_out))) \
        if scale_out.is_integer() else None
    if placement is None or not placement.is_shift:
        why = ("a non-integer scale" if placement is None else
               "a geometry other than pure shifts onto the reference's grid")
        return _fuse_whole(lazy, cube, call, why)
    for w in said:
        warnings.warn(w.message, w.category, stacklevel=2)
    s = int(scale_out)
    if method == "shift_and_add":
        placement = placement.snapped()

    rules = _saturation_rules(lazy)
    variances = [f.variance() for f in lazy]
    inputs = [_block_inputs(f, 1.0 if v is None else v) for f, v in zip(lazy, variances)]
    goods = [_good_map(x, rule) for x, rule in zip(inputs, rules)]
    stats = dask.compute(*[(g.sum(), g[::k], da.where(g, f.data.astype(float), 0.0)[::k],
                            None if v is None else v[::k],
                            da.where(g, f.data, np.inf).min(), da.where(g, f.data, -np.inf).max())
                           for f, g, v in zip(lazy, goods, variances)])
    _check_frames(stats)
    for i, (_, good_s, data_s, _, _, _) in enumerate(stats):
        if variances[i] is None:
            variances[i] = _estimated_variance(data_s, good_s)
            inputs[i] = _block_inputs(lazy[i], variances[i])
    weights = _strip_weights(fuse_options.get("weights"), stats, variances, goods, shape)

    bounds = _strip_bounds(shape[0], rows)
    template = type(probe.uncertainty)(np.zeros(1))
    pixfrac = float(probe.meta.get("PIXFRAC", 1.0))
    surface = is_surface_brightness(probe.unit)
    cubes = [da.stack([frame[j] for frame in inputs]) for j in range(3)]
    per_pixel = None if weights[1] is None else da.stack(weights[1])
    blocks = []
    for first, stop in bounds:
        lines, part = placement.strip(first, stop)
        a, b = max(lines.start - SATURATION_REACH, 0), min(lines.stop + SATURATION_REACH,
                                                           shape[0])
        task = dask.delayed(_fuse_strip, pure=True)(
            *[c[:, a:b] for c in cubes], None if per_pixel is None else per_pixel[:, a:b],
            rules=rules, frame_weights=weights[0], part=part,
            trim=(lines.start - a, b - lines.stop), pixfrac=pixfrac, surface=surface,
            pixel_area=float(s) ** 2, template=template)
        blocks.append(da.from_delayed(task, shape=(4, s * (stop - first), s * shape[1]),
                                      dtype=float, meta=np.empty((0, 0, 0))))
    out = da.concatenate(blocks, axis=1)
    meta = _lazy_time(probe.meta)
    add_history(meta, f"astrosr.parallel.fuse_blocks: strips of {rows} reference rows (dask); "
                f"frame weights, saturation and noise from the whole frames "
                f"({_sample_text(k, shape)} each)")
    row_blocks = tuple(stop - first for first, stop in bounds)
    rejected = da.zeros((n,) + shape, dtype=bool, chunks=((1,) * n, row_blocks, (shape[1],)))
    return BlockImage(out[0], unit=probe.unit, uncertainty=type(probe.uncertainty)(out[1]),
                      mask=out[2] > 0.5, wcs=probe.wcs, meta=meta, weight=out[3],
                      rejected=rejected)


def _fuse_option_names(options):
    from ..fusion import fuse

    params = [k for k in inspect.signature(fuse).parameters
              if k not in ("frames", "geometry", "scale", "method", "chunks")]
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise TypeError(f"fuse_blocks: unknown option(s) {unknown}: the options are those of "
                        f"astrosr.fuse ({', '.join(params)})")


def _strip_rows(chunks):
    if chunks is None:
        return None
    if not _is_int(chunks) or chunks < 1:
        raise ValueError(f"chunks must be a positive integer (reference rows per strip of the "
                         f"output), got {chunks!r}")
    return int(chunks)


def _lazy_frames(frames, rows, hdu):
    """The frames as `_Lazy` images, and whether they were given as one 3-D array."""
    from ..nddata import as_frames

    if _is_dask(frames) or isinstance(frames, np.ndarray):
        if len(frames.shape) != 3:
            raise ValueError("frames as an array must be 3-D (n_frames, ny, nx), got "
                             f"{len(frames.shape)}-D")
        items, cube = [frames[i] for i in range(frames.shape[0])], True
    elif isinstance(frames, (list, tuple)) and all(
            isinstance(f, NDData) or _is_dask(f) or isinstance(f, np.ndarray) for f in frames):
        items, cube = list(frames), False
    else:
        items, cube = as_frames(frames, hdu=hdu), False  # paths, patterns: read in memory
    if not items:
        raise ValueError("frames is empty: pass at least one frame")
    lazy = []
    for i, item in enumerate(items):
        data = item.data if isinstance(item, NDData) else item
        width = data.shape[-1] if len(data.shape) else 1
        chunks = None if _is_dask(data) or rows is None else (rows, width)
        lazy.append(_lazy(item, chunks, f"frames[{i}]", hint="chunks=ROWS"))
    shapes = {tuple(f.data.shape) for f in lazy}
    if len(shapes) > 1:
        raise ValueError(f"frames must all have the same shape, got {sorted(shapes)}")
    return lazy, cube


def _whole_fusion_reason(method, options, lazy):
    """Why the fusion cannot go strip by strip (None: it can)."""
    from astropy.wcs import WCS

    if method not in STRIP_METHODS:
        return f"method={method!r} iterates over the whole image (one stopping rule)"
    reject = options.get("reject")
    reject = "auto" if reject is None else reject
    if reject not in ("auto", True, False):
        raise ValueError(f"reject must be 'auto', True or False, got {reject!r}")
    if reject is True or (reject == "auto" and len(lazy) >= 3):
        return ("outlier rejection fits provisional models to the whole stack (reject=False "
                "goes strip by strip)")
    if options.get("output_wcs") is not None or options.get("shape_out") is not None:
        return "an output grid other than the reference's (output_wcs, shape_out)"
    if any(f.wcs is not None and not isinstance(f.wcs, WCS) for f in lazy):
        return "a frame WCS that is not a FITS WCS"
    return None


def _fuse_whole(lazy, cube, call, reason):
    """`astrosr.fuse` on the frames in memory, wrapped in dask arrays."""
    from ..fusion import fuse

    frames = [f.computed() for f in lazy]
    frames = np.stack(frames) if cube else frames
    result = fuse(frames, call["geometry"], scale=call["scale"], method=call["method"],
                  **call["options"])
    add_history(result.meta, f"astrosr.parallel.fuse_blocks: {reason}: computed in memory, "
                "then wrapped in dask arrays")
    ny, nx = lazy[0].data.shape
    rows_out = max(1, int(round(call["rows"] * result.data.shape[0] / ny)))
    return _wrapped(result, (rows_out, result.data.shape[1]), (1, call["rows"], nx))


def _raw_frames(lazy, k):
    """Whether each frame looks raw (`astrosr.calibration.is_raw`), judged on its sample rows."""
    import dask

    from ..calibration import is_raw

    # is_raw of a toy frame of whole numbers: True when the unit and the uncertainty allow it.
    maybe = [is_raw(CCDData(np.array([[0.0, 1.0]]), unit=f.unit)) and f.unc is None
             for f in lazy]
    samples = dask.compute(*[f.data[::k] if m else None for f, m in zip(lazy, maybe)])
    return [m and is_raw(CCDData(np.asarray(d, dtype=float), unit=f.unit))
            for f, m, d in zip(lazy, maybe, samples)]


def _stand_ins(lazy, raw, cube):
    """Small frames with the frames' headers, units, uncertainty classes and WCS."""
    ny, nx = lazy[0].data.shape
    i, j = np.indices((min(ny, _PROBE_ROWS), nx))
    pattern = ((i + 2 * j) % 5).astype(float)
    frames = []
    for f, is_raw_frame in zip(lazy, raw):
        # Whole numbers for a raw frame (astrosr.fuse warns as for the frame); else tiny
        # values below any saturation level.
        data = 1.0 + pattern if is_raw_frame else 1e-6 * (1.25 + pattern)
        if cube or f.kind == "array":
            frames.append(data)
            continue
        unc = None if f.unc_type is None else f.unc_type(np.ones_like(data), unit=f.unc_unit)
        cls = CCDData if f.kind == "ccd" else NDData
        frames.append(cls(data, unit=f.unit, uncertainty=unc, meta=f.meta, wcs=f.wcs))
    return np.stack(frames) if cube else frames


def _probe_options(options, n):
    probe = dict(options)
    if probe.get("weights") is not None:
        probe["weights"] = np.ones(n)  # per-pixel weights are checked here, on the frames
    return probe


def _check_frames(stats):
    """What `astrosr.FrameStack` refuses: a frame with no usable pixel, or a constant one."""
    for i, (n_good, *_rest) in enumerate(stats):
        if n_good == 0:
            raise ValueError(f"frames[{i}] has no usable pixel (all masked, NaN or inf): drop "
                             "it from frames and shifts")
    constant = [i for i, st in enumerate(stats) if st[4] == st[5]]
    if constant and len(constant) < len(stats):
        raise ValueError(f"frames[{constant[0]}] is constant (every usable pixel is "
                         f"{stats[constant[0]][4]:g}): it holds no image of the sky; drop it "
                         "from frames and shifts")


def _strip_weights(weights, stats, variances, goods, shape):
    """``(per_frame, per_pixel)``: one weight per frame (n,), or per-pixel weight arrays."""
    import dask

    da = _import_dask_array()
    n = len(stats)
    if weights is None:
        bkg = np.array([np.median(v[g]) if _is_dask(var) else var
                        for (_, g, _, v, _, _), var in zip(stats, variances)])
        return (1.0 / bkg if np.all(bkg > 0) else np.ones(n)), None
    if not _is_dask(weights):
        weights = np.asarray(weights, dtype=float)
    if tuple(weights.shape) == (n,):
        w = np.asarray(weights, dtype=float)
        ok = bool(np.all(np.isfinite(w)) and np.all(w >= 0))
        per_frame, per_pixel, nonzero = w, None, w > 0
    elif tuple(weights.shape) == (n,) + shape:
        w = da.asarray(weights).astype(float)
        ok, nonzero = dask.compute(da.all(da.isfinite(w) & (w >= 0)),
                                   [da.any(g & (w[i] > 0)) for i, g in enumerate(goods)])
        per_frame, per_pixel = None, [w[i] for i in range(n)]
    else:
        raise ValueError(f"weights must have shape ({n},) or {(n,) + shape}, got "
                         f"{tuple(weights.shape)}")
    if not ok:
        raise ValueError("weights must be finite and >= 0")
    for i in range(n):
        if not nonzero[i]:
            raise ValueError(f"weights of frame {i} are all zero: drop the frame instead")
    return per_frame, per_pixel


def _strip_bounds(ny, rows):
    return [(first, min(first + rows, ny)) for first in range(0, ny, rows)]


def _fuse_strip(data, mask, var, per_pixel, *, rules, frame_weights, part, trim, pixfrac,
                surface, pixel_area, template):
    """One strip of `fuse_blocks`: ``(4, s*h, s*nx)`` data, uncertainty, mask (0/1), weight.

    ``data``, ``mask``, ``var`` (and ``per_pixel`` weights): cubes of the frame rows that reach
    the strip, with `SATURATION_REACH` more rows each side where the frames have them
    (``trim``), so that the good pixels are those of the whole frames.
    """
    data, var = np.asarray(data, dtype=float), np.asarray(var, dtype=float)
    keep = slice(trim[0], data.shape[1] - trim[1])
    good = np.array([_good_pixels(d, m, v, rule)[keep]
                     for d, m, v, rule in zip(data, np.asarray(mask), var, rules)])
    data, var = data[:, keep], var[:, keep]
    weight = (np.asarray(frame_weights, dtype=float)[:, None, None] if per_pixel is None
              else np.asarray(per_pixel, dtype=float)[:, keep])
    weight = np.where(good, weight, 0.0)
    area = part.areas()
    mean, variance, wht = part.drizzle(np.where(good, data, 0.0) / area, weight,
                                       np.where(good, var, np.inf) / area ** 2, pixfrac)
    if surface:
        mean, variance = mean * pixel_area, variance * pixel_area ** 2
    masked = ~np.isfinite(variance)
    variance = np.where(masked, 0.0, variance)
    return np.stack([np.where(masked, 0.0, mean), uncertainty_like(variance, template).array,
                     masked, wht]).astype(float)


def _lazy_time(meta):
    """The probe's header, its HISTORY's ``time=`` (of the stand-in frames) made ``time=lazy``."""
    meta = meta.copy()
    cards = [re.sub(r"\btime=[0-9.]+s\b", "time=lazy", str(c)) for c in meta.get("HISTORY", [])]
    if "HISTORY" in meta:
        meta.remove("HISTORY", remove_all=True)
    for card in cards:
        meta.add_history(card)
    return meta
