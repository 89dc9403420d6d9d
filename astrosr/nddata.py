"""Frames, uncertainties, WCS for finer grids, history and FITS output.

Everything astrosr does takes and returns `astropy.nddata.CCDData`; this
module turns what users pass (CCDData, NDData, FITS paths, arrays) into a
uniform list of frames (`as_frames`, from `astrosr.reading`), defines a good
pixel (`frame_arrays`), and keeps WCS and history right on new grids.
"""

import copy
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.nddata import InverseVariance, StdDevUncertainty, VarianceUncertainty
from astropy.wcs import WCS

from .reading import as_frames, read_image

__all__ = ["as_frames", "shift_array", "frame_arrays", "variance_of", "white_noise_variance",
           "write_fits", "read_fits", "fits_header", "rescale_wcs", "shift_wcs", "add_history",
           "saturated_pixels", "header_saturation_level", "is_clipping_level"]


def shift_array(shifts, n):
    """The shifts of ``n`` frames as an ``(n, 2)`` float array of ``(dx, dy)`` in input pixels.

    Parameters
    ----------
    shifts : `~astropy.table.Table` with ``dx``, ``dy`` columns, or array_like ``(n, 2)``
        As returned by `astrosr.register_stack` (Quantity columns in pix or
        plain numbers), one row per frame in the order of the frames.
    n : int
        Number of frames.

    Raises
    ------
    ValueError
        A table without ``dx``/``dy``, an array not ``(n, 2)``, a row count
        other than ``n``, non-finite or masked shifts.
    TypeError
        Shifts that are not numbers (a dict, strings, ragged rows).
    astropy.units.UnitsError
        A ``dx``/``dy`` column with a unit other than pixels.
    """
    if hasattr(shifts, "colnames"):
        missing = {"dx", "dy"} - set(shifts.colnames)
        if missing:
            raise ValueError(f"shifts table lacks column(s) {sorted(missing)}: "
                             "pass the table from astrosr.register_stack")
        arr = np.column_stack([_in_pix(shifts[name], name) for name in ("dx", "dy")])
    else:
        if np.any(getattr(shifts, "mask", False)):
            raise ValueError("shifts has masked values: give every frame a shift, or drop the "
                             "frames without one")
        try:
            arr = np.asarray(shifts, dtype=float)
        except (TypeError, ValueError):
            raise TypeError(f"shifts must be a table with dx, dy or an (n, 2) array of numbers, "
                            f"got {type(shifts).__name__} {shifts!r:.60}") from None
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"shifts must be a table with dx, dy or an (n, 2) array, "
                             f"got shape {arr.shape}")
    if len(arr) != n:
        raise ValueError(f"shifts has {len(arr)} rows but there are {n} frames: "
                         "give one (dx, dy) per frame, in the order of frames")
    if not np.all(np.isfinite(arr)):
        raise ValueError("shifts contains NaN or inf")
    return arr


def _in_pix(col, name):
    """A shift column in pixels: a Quantity, or a Table column with or without a unit."""
    if np.any(getattr(col, "mask", False)):
        raise ValueError(f"shifts column {name!r} has masked values: give every frame a shift, "
                         "or drop the frames without one")
    if getattr(col, "unit", None) is not None:
        try:
            return u.Quantity(col).to_value(u.pix)
        except u.UnitsError:
            raise u.UnitsError(f"shifts column {name!r} must be in pixels (or plain numbers), "
                               f"got unit {col.unit}") from None
    return np.asarray(col, dtype=float)


def variance_of(ccd):
    """Variance array of a frame's uncertainty, or None if it has none.

    Accepts `~astropy.nddata.VarianceUncertainty`,
    `~astropy.nddata.StdDevUncertainty` and `~astropy.nddata.InverseVariance`.
    """
    unc = ccd.uncertainty
    if unc is None:
        return None
    a = np.asarray(unc.array, dtype=float)
    if isinstance(unc, VarianceUncertainty):
        var = a
    elif isinstance(unc, StdDevUncertainty):
        var = a ** 2
    elif isinstance(unc, InverseVariance):
        with np.errstate(divide="ignore"):
            var = 1.0 / a
    else:
        raise TypeError(f"unsupported uncertainty type {type(unc).__name__}")
    return np.broadcast_to(var, ccd.data.shape)


def frame_arrays(ccd):
    """Return ``(data, variance, good)`` float arrays of one frame.

    The one definition of a good pixel: ``good`` is False where the mask is
    set, the data or variance are not finite, or the pixel is saturated or
    beside a saturated one (`saturated_pixels`; saturated stars are masked,
    not fitted). There ``data`` is 0 so it can go through FFTs.
    ``variance`` is None when the frame has no uncertainty.
    """
    data = np.array(ccd.data, dtype=float)
    good = np.isfinite(data)
    if ccd.mask is not None:
        good &= ~np.broadcast_to(np.asarray(ccd.mask, dtype=bool), data.shape)
    good &= ~saturated_pixels(np.where(good, data, np.nan), getattr(ccd, "meta", None), grow=1)
    var = variance_of(ccd)
    if var is not None:
        var = np.array(var, dtype=float)
        good &= np.isfinite(var) & (var > 0)
        var[~good] = np.inf
    data[~good] = 0.0
    return data, var, good


#: Header keywords read as the saturation level (data units), in this order.
#: Not DATAMAX: many files give their actual maximum there, and masking near
#: it would mask the brightest star of every such image.
SATURATION_KEYS = ("SATURATE", "SATLEVEL", "SATURATION")
#: Fraction of the saturation level above which a pixel counts as saturated.
SATURATION_FRACTION = 0.9
#: The image's maximum is a clipping level when at least this many pixels share it...
_MIN_CLIPPED = 3
#: ... but at most this fraction of the pixels (a constant image is not saturated).
_MAX_CLIPPED_FRACTION = 0.01


def saturated_pixels(data, meta=None, level=None, *, grow=0):
    """Boolean map of the saturated pixels of an image.

    A pixel is saturated at or above 90% of the saturation level: ``level``,
    else the header's ``SATURATE``, ``SATLEVEL`` or ``SATURATION``. Without
    a level, the pixels at the image's maximum are saturated when several
    share it (at least 3, at most 1% of the pixels): the camera or the
    reduction clipped them. NaN pixels are never saturated.

    Parameters
    ----------
    data : array_like
    meta : dict or `~astropy.io.fits.Header`, optional
    level : float, optional
        The saturation level, in the data's units.
    grow : int
        Also flag the pixels within this many pixels of a saturated one
        (bleeding, the non-linear wings of a clipped core).
    """
    data = np.asarray(data, dtype=float)
    saturated = np.zeros(data.shape, dtype=bool)
    level = header_saturation_level(meta or {}) if level is None else float(level)
    finite = np.isfinite(data)
    if level is not None:
        saturated[finite] = data[finite] >= SATURATION_FRACTION * level
    elif finite.any():
        clipped = finite & (data == np.max(data[finite]))
        if is_clipping_level(np.count_nonzero(clipped), finite.sum()):
            saturated = clipped
    if grow and saturated.any():
        from scipy import ndimage

        saturated = ndimage.binary_dilation(saturated, iterations=int(grow))
    return saturated


def is_clipping_level(n_at_maximum, n_pixels):
    """Whether an image's maximum is a clipping level (the rule of `saturated_pixels`).

    Parameters
    ----------
    n_at_maximum : int
        Pixels (finite, not masked) whose value is the image's maximum.
    n_pixels : int
        Pixels looked at (finite, not masked).

    Returns
    -------
    bool
        True when at least 3 and at most 1% of the pixels share the maximum:
        the camera or the reduction clipped them (a constant image is not
        saturated).
    """
    return bool(n_pixels and _MIN_CLIPPED <= n_at_maximum <= _MAX_CLIPPED_FRACTION * n_pixels)


def header_saturation_level(meta):
    """The saturation level a header gives, as `saturated_pixels` reads it.

    Parameters
    ----------
    meta : dict or `~astropy.io.fits.Header`
        The header: the first of `SATURATION_KEYS` whose value is a finite
        positive number is the level.

    Returns
    -------
    float or None
        The level, in the data's units, or None when the header gives none.
    """
    for key in SATURATION_KEYS:
        if key in meta:
            try:
                value = float(meta[key])
            except (TypeError, ValueError):
                continue
            if np.isfinite(value) and value > 0:
                return value
    return None


def white_noise_variance(data, good):
    """Variance of a frame's white noise from neighbour differences (robust to sources).

    Used where a frame has no uncertainty: differences of adjacent pixels
    cancel smooth structure, and the MAD ignores the few that cross stars.
    """
    from astropy.stats import mad_std

    # Along x, or along y for a one-column frame; only pairs of good pixels.
    diffs = np.diff(np.where(good, data, np.nan), axis=1 if data.shape[1] > 1 else 0)
    diffs = diffs[np.isfinite(diffs)]
    sigma = _dithered_mad_std(diffs) / np.sqrt(2.0) if diffs.size else 0.0
    if not sigma > 0:
        values = data[good]
        sigma = (mad_std(values) or np.std(values)) if values.size else 0.0
    return float(sigma) ** 2


def _dithered_mad_std(values):
    """The MAD's standard deviation of ``values``, exact for whole numbers too.

    The MAD of whole numbers (raw ADU, and their differences) is itself a
    whole or half number: for noise of 22 ADU it reads 1.5% low, which over
    a million pixels is a chi-square 26 sigmas off. Values that are whole
    numbers, or nearly (raw frames less a smooth background), get a
    triangular dither of variance 1/6 first (the difference of two uniform
    draws in (-1/2, 1/2), from a fixed seed: the same input, the same
    answer), taken out of the result.
    """
    from astropy.stats import mad_std

    spread = mad_std(values) if values.size else 0.0
    if not spread or np.median(np.abs(values - np.round(values))) > 0.05:
        return spread  # no noise (a constant frame) is no noise, dithered or not
    rng = np.random.default_rng(0)
    dither = rng.uniform(-0.5, 0.5, values.size) - rng.uniform(-0.5, 0.5, values.size)
    return float(np.sqrt(max(mad_std(values + dither) ** 2 - 1.0 / 6.0, 0.0)))


def rescale_wcs(wcs, factor):
    """WCS of a grid ``factor`` times finer (``factor < 1``: coarser).

    Pixel centre ``p`` (0-based) of the old grid maps to
    ``factor * (p + 0.5) - 0.5`` of the new one, so ``CRPIX' = factor *
    (CRPIX - 0.5) + 0.5``. The linear matrix is divided by ``factor``: ``CD``
    when present, else ``PC`` with ``CDELT`` unchanged (wcslib applies
    distortions such as TPD between PC and CDELT). SIP coefficients are
    rescaled as ``A_pq' = A_pq * factor**(1 - p - q)`` (same for B, AP, BP).
    Distortion lookup tables (``CPDIS``, ``D2IM``: HST ACS, WFC3) keep their
    values on the new pixels: each table's offsets are multiplied by
    ``factor``, its step ``CDELT`` too, and its image reference pixel
    ``CRVAL`` moves as CRPIX does.

    Parameters
    ----------
    wcs : `~astropy.wcs.WCS` or None
    factor : float
        Linear sampling factor (4 for a grid four times finer).
    """
    if wcs is None:
        return None
    new = copy.deepcopy(wcs)
    new.wcs.crpix = factor * (np.asarray(wcs.wcs.crpix) - 0.5) + 0.5
    if wcs.wcs.has_cd():
        new.wcs.cd = np.asarray(wcs.wcs.cd) / factor
    else:
        new.wcs.pc = np.asarray(wcs.wcs.get_pc()) / factor
    if wcs.sip is not None:
        new.sip = _rescaled_sip(wcs.sip, factor, new.wcs.crpix)
    _map_lookup_tables(wcs, new, lambda crval: factor * (crval - 0.5) + 0.5, factor)
    if wcs.pixel_shape is not None:
        new.pixel_shape = tuple(int(round(n * factor)) for n in wcs.pixel_shape)
    new.wcs.set()
    return new


def _rescaled_sip(sip, factor, crpix):
    from astropy.wcs import Sip

    def scaled(m):
        if m is None:
            return None
        p, q = np.indices(m.shape)
        return m * factor ** (1.0 - p - q)

    return Sip(scaled(sip.a), scaled(sip.b), scaled(sip.ap), scaled(sip.bp), crpix)


def _map_lookup_tables(old, new, move, factor=1.0):
    """``new``'s distortion lookup tables: ``old``'s with ``CRVAL -> move(CRVAL)``, offsets and step x factor."""
    from astropy.wcs import DistortionLookupTable

    for name in ("cpdis1", "cpdis2", "det2im1", "det2im2"):
        table = getattr(old, name, None)
        if table is None:
            continue
        moved = DistortionLookupTable(np.asarray(table.data, np.float32) * factor,
                                      tuple(table.crpix),
                                      tuple(move(np.asarray(table.crval, float))),
                                      tuple(np.asarray(table.cdelt, float) * factor))
        setattr(new, name, moved)


def shift_wcs(wcs, dx, dy):
    """WCS of a frame in which a source of the reference appears at ``(x + dx, y + dy)``.

    The whole pixel-to-sky mapping is translated, distortion included (SIP
    about the moved CRPIX, lookup tables at a moved CRVAL).
    """
    if wcs is None:
        return None
    new = copy.deepcopy(wcs)
    new.wcs.crpix = np.asarray(wcs.wcs.crpix) + np.array([dx, dy])
    if wcs.sip is not None:
        from astropy.wcs import Sip
        s = wcs.sip
        new.sip = Sip(s.a, s.b, s.ap, s.bp, new.wcs.crpix)
    _map_lookup_tables(wcs, new, lambda crval: crval + np.array([dx, dy]))
    new.wcs.set()
    return new


#: Characters of text a HISTORY card holds (80 minus the keyword field).
HISTORY_WIDTH = 72


def add_history(meta, text):
    """Append ``text`` as FITS HISTORY, split at word boundaries into cards.

    Text longer than a card (72 characters) is broken at spaces, never inside
    a word (only a word longer than a card is cut); each continuation card
    starts with the space it was broken at, so ``"".join(meta["HISTORY"])``
    gives the text back. Newlines become spaces.

    Parameters
    ----------
    meta : `~astropy.io.fits.Header` or dict
        The header (or a CCDData's dict meta, where ``HISTORY`` is a list).
    text : str

    Returns
    -------
    meta
    """
    from astropy.io import fits

    cards = _history_cards(text)
    if isinstance(meta, fits.Header):
        for card in cards:
            meta.add_history(card)
    else:
        meta.setdefault("HISTORY", [])
        hist = meta["HISTORY"]
        if isinstance(hist, str):
            meta["HISTORY"] = [hist, *cards]
        else:
            hist.extend(cards)
    return meta


def _history_cards(text, width=HISTORY_WIDTH):
    """``text`` in pieces of at most ``width`` characters, broken before spaces."""
    text = " ".join(str(text).splitlines())
    cards = []
    while len(text) > width:
        cut = text.rfind(" ", 1, width + 1)  # text[:cut] has at most width characters
        if cut <= 0:
            cut = width  # one word longer than a card
        cards.append(text[:cut])
        text = text[cut:]
    cards.append(text)
    return cards


def wcs_from(obj):
    """The WCS of an NDData object (or a WCS itself), else None."""
    if obj is None:
        return None
    if isinstance(obj, WCS):
        return obj
    w = getattr(obj, "wcs", None)
    return w if isinstance(w, WCS) else None


def write_fits(ccd, path, *, overwrite=False):
    """Write a CCDData as multi-extension FITS that `~astropy.nddata.CCDData.read` opens.

    Extensions: the primary HDU holds the data and header (with the WCS),
    ``UNCERT`` the uncertainty, ``MASK`` the mask (as astropy writes them),
    and, for a `~astrosr.output.ResultImage`, ``WHT`` the weight map and
    ``REJECT`` the rejected input pixels. The
    file is written to a temporary name in the same folder and renamed, so a
    failed write leaves no partial file; its mode follows the umask (0644
    for most users), as a file made by ``open`` does. ``BUNIT`` is always
    written (an empty string for a dimensionless image, which astropy leaves
    out), so the file reopens with ``CCDData.read(path)`` without ``unit=``.
    The primary header is `fits_header`'s: a ``CHECKSUM`` or ``DATASUM``
    left in the meta by an input is dropped (none is written).

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    FileNotFoundError
        If the folder of ``path`` does not exist.

    See Also
    --------
    astrosr.blocks.BlockWriter : The same file for an image larger than memory, block by block.
    """
    from .files import replacing

    path = Path(path)
    hdul = _without_commentary(ccd).to_hdu(hdu_mask="MASK", hdu_uncertainty="UNCERT")
    _finish_header(hdul[0].header, ccd)
    with replacing(path, overwrite=overwrite) as tmp:
        hdul.writeto(tmp, overwrite=True)
    return path


def fits_header(ccd):
    """The primary FITS header that `write_fits` writes for ``ccd``.

    The header `~astropy.nddata.CCDData.to_hdu` makes (the meta's cards,
    the WCS, ``BITPIX`` and ``NAXISn`` of the data's type and shape), with
    what `write_fits` sets: ``BUNIT`` always (``''`` for a dimensionless
    image), the HISTORY and COMMENT entries of a dict meta one card each
    (broken at word boundaries), and no ``CHECKSUM`` or ``DATASUM`` carried
    over from an input (they described other data). ``EXTEND`` is not in it:
    writing adds ``EXTEND = T`` after the ``NAXISn`` cards when extensions
    follow. Only the shape and type of ``ccd.data`` are used, so a
    zero-stride array (`numpy.broadcast_to`) of the output's shape gives the
    header of an image larger than memory (`astrosr.blocks.BlockWriter`
    does so).

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The image: its meta, WCS, unit, and the shape and type of its data.

    Returns
    -------
    `~astropy.io.fits.Header`
    """
    from astropy.nddata import CCDData

    hdul = CCDData.to_hdu(_without_commentary(ccd), hdu_mask=None, hdu_uncertainty=None)
    return _finish_header(hdul[0].header, ccd)


def _without_commentary(ccd):
    """``ccd``, or a shallow copy without the HISTORY and COMMENT lists of a dict meta.

    ``CCDData.to_hdu`` fails on a list that fits one card (``Illegal value:
    ['a', 'b']``); `_set_commentary` writes those entries instead.
    """
    from astropy.io import fits

    meta = ccd.meta
    if isinstance(meta, fits.Header):
        return ccd
    lists = {k for k, v in meta.items()
             if str(k).upper() in ("HISTORY", "COMMENT") and isinstance(v, (list, tuple))}
    if not lists:
        return ccd
    shallow = copy.copy(ccd)  # shares the arrays: nothing is copied but the meta
    shallow.meta = {k: v for k, v in meta.items() if k not in lists}
    return shallow


def _finish_header(header, ccd):
    """What `write_fits` sets on the primary header that ``to_hdu`` made."""
    _set_bunit(header, ccd.unit)
    _set_commentary(header, ccd.meta)
    for key in ("CHECKSUM", "DATASUM"):
        header.remove(key, ignore_missing=True, remove_all=True)
    return header


def _set_bunit(header, unit):
    """BUNIT of ``unit`` in ``header``; ``''`` for dimensionless (astropy writes none).

    Set from the unit always: a BUNIT left in the meta by the input must not
    contradict the data's unit.
    """
    if unit is None or unit == u.dimensionless_unscaled:
        header["BUNIT"] = ("", "dimensionless")
    else:
        header["BUNIT"] = unit.to_string()


def _set_commentary(header, meta):
    """HISTORY and COMMENT cards of a dict meta, one per entry (astropy writes the list's repr)."""
    from astropy.io import fits

    if isinstance(meta, fits.Header):
        return
    for key in ("HISTORY", "COMMENT"):
        entries = next((v for k, v in meta.items() if str(k).upper() == key), None)
        if not isinstance(entries, (list, tuple)):
            continue
        header.remove(key, ignore_missing=True, remove_all=True)
        for entry in entries:
            for card in _history_cards(entry):
                header.add_history(card) if key == "HISTORY" else header.add_comment(card)


def read_fits(path, *, hdu=None, unit=None):
    """Read a FITS image as CCDData (first image HDU by default).

    A file with ``WHT`` or ``REJECT`` extensions (written by `write_fits`)
    comes back as a `~astrosr.output.ResultImage` carrying them.
    """
    from astropy.io import fits

    from .output import ResultImage

    ccd = read_image(Path(path), hdu=hdu, unit=unit)
    with fits.open(path) as hdul:
        extra = {key: np.asarray(hdul[name].data) for key, name in
                 (("weight", "WHT"), ("rejected", "REJECT")) if name in hdul}
    return ResultImage(ccd, **extra) if extra else ccd
