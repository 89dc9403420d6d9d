"""Frame-stack input, uncertainties, WCS for finer grids, and history.

Everything astrosr does takes and returns `astropy.nddata.CCDData`; this
module turns what users pass (CCDData, NDData, FITS paths, arrays) into a
uniform list of frames, and keeps WCS and history right on new grids.
"""

import copy
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.nddata import (CCDData, InverseVariance, NDData, StdDevUncertainty,
                            VarianceUncertainty)
from astropy.wcs import WCS

__all__ = ["as_frames", "frame_arrays", "variance_of", "white_noise_variance", "write_fits",
           "read_fits", "rescale_wcs", "shift_wcs",
           "add_history"]


def as_frames(frames, *, hdu=None, unit=None):
    """Return a list of `~astropy.nddata.CCDData` from what the user passed.

    Parameters
    ----------
    frames : list of CCDData/NDData/str/Path, or 3-D array
        The stack: frames as NDData objects, paths of FITS files, or a cube
        ``(n_frames, ny, nx)``.
    hdu : int or str, optional
        HDU to read from FITS files (default: the first image HDU).
    unit : str or `~astropy.units.Unit`, optional
        Unit for arrays or files without BUNIT (default: dimensionless).

    Raises
    ------
    ValueError
        If the stack is empty, a frame is not 2-D, or frames differ in shape.
    """
    if isinstance(frames, np.ndarray):
        if frames.ndim != 3:
            raise ValueError(f"frames as an array must be 3-D (n_frames, ny, nx), got {frames.ndim}-D")
        frames = list(frames)
    elif isinstance(frames, (NDData, str, Path)):
        raise TypeError("frames must be a sequence of frames (or a 3-D array), not a single frame")
    out = [_as_ccd(f, hdu=hdu, unit=unit, index=i) for i, f in enumerate(frames)]
    if not out:
        raise ValueError("frames is empty: pass at least one frame")
    shapes = {f.data.shape for f in out}
    if len(shapes) > 1:
        raise ValueError(f"frames must all have the same shape, got {sorted(shapes)}")
    units = {f.unit for f in out}
    if len(units) > 1:
        raise u.UnitsError(f"frames must all have the same unit, got {sorted(map(str, units))}")
    return out


def _as_ccd(frame, *, hdu, unit, index):
    if isinstance(frame, (str, Path)):
        return _read_fits(Path(frame), hdu=hdu, unit=unit)
    if isinstance(frame, CCDData):
        ccd = frame
    elif isinstance(frame, NDData):
        ccd = CCDData(frame.data, unit=frame.unit or unit or u.dimensionless_unscaled,
                      uncertainty=frame.uncertainty, mask=frame.mask, wcs=frame.wcs,
                      meta=frame.meta)
    else:
        data = np.asarray(frame, dtype=float)
        ccd = CCDData(data, unit=unit or u.dimensionless_unscaled)
    if ccd.data.ndim != 2:
        raise ValueError(f"frames[{index}] must be 2-D, got shape {ccd.data.shape}")
    return ccd


def _read_fits(path, *, hdu, unit):
    from astropy.io import fits

    if not path.exists():
        raise FileNotFoundError(f"no such FITS file: {path}")
    with fits.open(path) as hdul:
        if hdu is None:
            hdu = next((i for i, h in enumerate(hdul)
                        if h.is_image and h.data is not None and h.data.ndim >= 2), None)
            if hdu is None:
                raise ValueError(f"{path} has no image HDU")
    kwargs = {} if unit is None else {"unit": unit}
    try:
        ccd = CCDData.read(path, hdu=hdu, **kwargs)
    except ValueError as exc:
        if "unit" not in str(exc).lower():
            raise
        ccd = CCDData.read(path, hdu=hdu, unit=u.dimensionless_unscaled)
    if ccd.data.ndim != 2:
        raise ValueError(f"{path}[{hdu}] is not a 2-D image (shape {ccd.data.shape})")
    return ccd


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

    ``good`` is False where the mask is set or the data or variance are not
    finite; there ``data`` is 0 so it can go through FFTs. ``variance`` is
    None when the frame has no uncertainty.
    """
    data = np.array(ccd.data, dtype=float)
    good = np.isfinite(data)
    if ccd.mask is not None:
        good &= ~np.broadcast_to(np.asarray(ccd.mask, dtype=bool), data.shape)
    var = variance_of(ccd)
    if var is not None:
        var = np.array(var, dtype=float)
        good &= np.isfinite(var) & (var > 0)
        var[~good] = np.inf
    data[~good] = 0.0
    return data, var, good


def white_noise_variance(data, good):
    """Variance of a frame's white noise from neighbour differences (robust to sources).

    Used where a frame has no uncertainty: differences of adjacent pixels
    cancel smooth structure, and the MAD ignores the few that cross stars.
    """
    from astropy.stats import mad_std

    diffs = np.diff(np.where(good, data, np.nan), axis=1)
    sigma = mad_std(diffs, ignore_nan=True) / np.sqrt(2.0)
    if not sigma > 0:
        values = data[good]
        sigma = mad_std(values) or np.std(values)
    return float(sigma) ** 2


def rescale_wcs(wcs, factor):
    """WCS of a grid ``factor`` times finer (``factor < 1``: coarser).

    Pixel centre ``p`` (0-based) of the old grid maps to
    ``factor * (p + 0.5) - 0.5`` of the new one, so ``CRPIX' = factor *
    (CRPIX - 0.5) + 0.5``. The linear matrix is divided by ``factor``: ``CD``
    when present, else ``PC`` with ``CDELT`` unchanged (wcslib applies
    distortions such as TPD between PC and CDELT). SIP coefficients are
    rescaled as ``A_pq' = A_pq * factor**(1 - p - q)`` (same for B, AP, BP).

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


def shift_wcs(wcs, dx, dy):
    """WCS of a frame in which a source of the reference appears at ``(x + dx, y + dy)``."""
    if wcs is None:
        return None
    new = copy.deepcopy(wcs)
    new.wcs.crpix = np.asarray(wcs.wcs.crpix) + np.array([dx, dy])
    if wcs.sip is not None:
        from astropy.wcs import Sip
        s = wcs.sip
        new.sip = Sip(s.a, s.b, s.ap, s.bp, new.wcs.crpix)
    new.wcs.set()
    return new


def add_history(meta, text):
    """Append a FITS HISTORY card (long text is wrapped by astropy)."""
    from astropy.io import fits

    if isinstance(meta, fits.Header):
        meta.add_history(text)
    else:
        meta.setdefault("HISTORY", [])
        hist = meta["HISTORY"]
        if isinstance(hist, str):
            meta["HISTORY"] = [hist, text]
        else:
            hist.append(text)
    return meta


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
    and ``WHT`` the weight map when ``ccd`` has a ``weight`` attribute. The
    file is written to a temporary name in the same folder and renamed, so a
    failed write leaves no partial file.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    FileNotFoundError
        If the folder of ``path`` does not exist.
    """
    import os
    import tempfile

    from astropy.io import fits

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists: pass overwrite=True to replace it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} does not exist")
    hdul = ccd.to_hdu(hdu_mask="MASK", hdu_uncertainty="UNCERT")
    weight = getattr(ccd, "weight", None)
    if weight is not None:
        hdul.append(fits.ImageHDU(np.asarray(weight, dtype=np.float32), name="WHT"))
    fd, tmp = tempfile.mkstemp(suffix=".fits", dir=path.parent)
    os.close(fd)
    try:
        hdul.writeto(tmp, overwrite=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_fits(path, *, hdu=None, unit=None):
    """Read a FITS image as CCDData (first image HDU by default), with ``weight`` from ``WHT``."""
    from astropy.io import fits

    ccd = _read_fits(Path(path), hdu=hdu, unit=unit)
    with fits.open(path) as hdul:
        if "WHT" in hdul:
            ccd.weight = np.asarray(hdul["WHT"].data, dtype=float)
    return ccd
