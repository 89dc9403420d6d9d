"""Reading the frames of a stack: CCDData, NDData, FITS paths, glob patterns, cubes.

`as_frames` (also reached as `astrosr.nddata.as_frames`) turns what users
pass into a uniform list of `~astropy.nddata.CCDData` with native float64
data; `read_image` reads one FITS image (integers scaled by BSCALE/BZERO,
BLANK to NaN, the unit from BUNIT). `astrosr.FrameStack` builds on them.
"""

import contextlib
import glob
import logging
import os
import re
import warnings
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.nddata import CCDData, NDData
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import FITSFixedWarning

__all__ = ["as_frames", "read_image"]


def as_frames(frames, *, hdu=None, unit=None):
    """Return a list of `~astropy.nddata.CCDData` from what the user passed.

    Every frame out has native-endian float64 data (FITS is big-endian on
    disk; integer images are scaled by BSCALE/BZERO to physical values).

    Parameters
    ----------
    frames : list of CCDData/NDData/str/Path, str, 3-D array, or `~astrosr.FrameStack`
        The stack: frames as NDData objects, paths of FITS files, glob
        patterns of FITS files (``"data/frame_*.fits"``, alone or in the
        list), or a cube ``(n_frames, ny, nx)``. A pattern expands to the
        matching files sorted by name, numbers compared by value
        (``frame_2`` before ``frame_10``).
    hdu : int or str, optional
        HDU to read from FITS files, by index or EXTNAME (default: the first
        image HDU holding data).
    unit : str or `~astropy.units.Unit`, optional
        Unit of the frames; for files it overrides BUNIT (default: BUNIT,
        else dimensionless).

    Raises
    ------
    TypeError
        If ``frames`` is a single frame or a single path that is not a pattern.
    FileNotFoundError
        If a file does not exist or a pattern matches no file.
    OSError
        If a file is not FITS.
    ValueError
        If the stack is empty, a frame is not 2-D, frames differ in shape, or
        a file lacks the HDU asked for or holds a table or cube there.
    """
    from .stack import FrameStack  # here, not at the top: stack.py builds on this module

    if isinstance(frames, FrameStack):
        return list(frames.ccds)
    out = [_as_ccd(f, hdu=hdu, unit=unit, index=i) for i, f in enumerate(_frame_list(frames))]
    if not out:
        raise ValueError("frames is empty: pass at least one frame")
    shapes = {f.data.shape for f in out}
    if len(shapes) > 1:
        raise ValueError(f"frames must all have the same shape, got {sorted(shapes)}")
    units = {f.unit for f in out}
    if len(units) > 1:
        raise u.UnitsError(f"frames must all have the same unit, got {sorted(map(str, units))}")
    return out


def _frame_list(frames):
    """``frames`` as a list: a cube split into frames, glob patterns expanded."""
    if isinstance(frames, np.ndarray):
        if frames.ndim != 3:
            raise ValueError(f"frames as an array must be 3-D (n_frames, ny, nx), got {frames.ndim}-D")
        return list(frames)
    if isinstance(frames, (str, Path)) and _is_pattern(frames):
        frames = [frames]
    elif isinstance(frames, (NDData, str, Path)):
        raise TypeError("frames must be a sequence of frames (or a 3-D array), not a single frame: "
                        "pass a list such as [frame] or a glob pattern such as 'frame_*.fits'")
    return _expand_patterns(frames)


def _is_pattern(path):
    """True for a glob pattern (``*?[``) that is not the name of an existing file."""
    text = os.fspath(path)
    return any(c in text for c in "*?[") and not os.path.exists(text)


def _natural_key(name):
    parts = re.split(r"(\d+)", name)
    return [int(p) if i % 2 else p for i, p in enumerate(parts)], name


def _expand_patterns(frames):
    """Replace glob patterns in ``frames`` by the files they match, sorted by name."""
    out = []
    for frame in frames:
        if isinstance(frame, (str, Path)) and _is_pattern(frame):
            matches = sorted(glob.glob(os.fspath(frame)), key=_natural_key)
            if not matches:
                raise FileNotFoundError(f"no FITS file matches {os.fspath(frame)!r}")
            out.extend(matches)
        else:
            out.append(frame)
    return out


def _as_ccd(frame, *, hdu, unit, index):
    if isinstance(frame, (str, Path)):
        return read_image(Path(frame), hdu=hdu, unit=unit)
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
    return _with_native_data(ccd)


def _native64(array):
    """``array`` as native-endian float64 (no copy when it already is)."""
    return np.asarray(array, dtype=np.float64)


def _with_native_data(ccd, data=None):
    """``ccd`` with native float64 data (``data`` if given) and uncertainty.

    Returns ``ccd`` itself when nothing needs converting.
    """
    unc = ccd.uncertainty
    native_unc = unc is None or np.asarray(unc.array).dtype.isnative
    if data is None and ccd.data.dtype == np.float64 and native_unc:
        return ccd
    if not native_unc:
        unc = type(unc)(_native64(unc.array), unit=unc.unit)
    return CCDData(_native64(ccd.data if data is None else data), unit=ccd.unit,
                   uncertainty=unc, mask=ccd.mask, wcs=ccd.wcs, meta=ccd.meta,
                   flags=ccd.flags, psf=ccd.psf)


def read_image(path, *, hdu, unit):
    """Read one 2-D image of a FITS file as CCDData with native float64 physical data.

    Parameters
    ----------
    path : `~pathlib.Path`
        The file.
    hdu : int, str or None
        Index or EXTNAME of the HDU (a string of digits is an index, as the
        command line passes it); None: the first image HDU holding data.
    unit : str, `~astropy.units.Unit` or None
        Overrides BUNIT; None: BUNIT (common spellings such as ``ELECTRONS``,
        ``e-``, ``counts``, ``ADU`` understood; an unknown one warns and
        reads as dimensionless), else dimensionless.

    Returns
    -------
    `~astropy.nddata.CCDData`
        Its meta holds the image HDU's header and, when the image is in an
        extension, the primary header's cards that are neither structural
        nor WCS (the extension's cards win).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    OSError
        If ``path`` is not a FITS file.
    ValueError
        If the HDU does not exist, is a table or holds no 2-D image.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such FITS file: {path}")
    index, header, primary = _image_hdu(path, hdu)
    if primary is not None:
        header = _merged_header(header, primary)
    if unit is None:
        unit = _bunit(header, path)
    with _unit_notice_silenced(), warnings.catch_warnings():
        # Astropy reports each header fix it makes while building the WCS (a
        # 'datfix' MJD-OBS from DATE-OBS on nearly every camera's frames): one
        # notice per frame, about a fix already made. Errors still raise.
        warnings.simplefilter("ignore", FITSFixedWarning)
        ccd = CCDData.read(path, hdu=index, unit=unit)
    if primary is not None:
        ccd.meta = _merged_header(ccd.meta, primary)
    return _with_native_data(ccd, _physical_data(ccd.data, header, path, index))


def _image_hdu(path, hdu):
    """Index, header and primary header (None if the image is the primary) of the image to read."""
    from astropy.io import fits

    try:
        hdul = fits.open(path)
    except OSError as exc:
        raise OSError(f"{path} is not a FITS file") from exc
    with hdul:
        index = _hdu_index(hdul, hdu, path)
        named = isinstance(hdu, str) and not hdu.strip().isdigit()
        _check_image(hdul[index], f"{path}[{hdu if named else index!r}]")
        header = hdul[index].header.copy()
        primary = hdul[0].header.copy() if index else None
    return index, header, primary


def _hdu_index(hdul, hdu, path):
    if hdu is None:
        index = next((i for i, h in enumerate(hdul) if h.is_image and h.header.get("NAXIS", 0)),
                     None)
        if index is None:
            raise ValueError(f"{path} has no image HDU")
        return index
    if isinstance(hdu, str) and hdu.strip().isdigit():
        hdu = int(hdu)
    try:
        return hdul.index(hdul[hdu])
    except (KeyError, IndexError):
        raise ValueError(f"{path} has no HDU {hdu!r}") from None


def _check_image(h, label):
    from astropy.io import fits

    if not h.is_image:
        kind = "a table" if isinstance(h, (fits.BinTableHDU, fits.TableHDU)) else type(h).__name__
        raise ValueError(f"{label} is {kind}, not an image: pass hdu= naming an image HDU")
    naxis = h.header.get("NAXIS", 0)
    shape = tuple(h.header.get(f"NAXIS{k}", 0) for k in range(naxis, 0, -1))
    if not naxis:
        raise ValueError(f"{label} holds no data: pass hdu= naming an image HDU")
    if naxis != 2:
        raise ValueError(f"{label} is a {naxis}-D image of shape {shape}, not a 2-D frame: "
                         "pass the frames as separate 2-D images (files, or a 3-D array)")


_STRUCTURAL = re.compile(
    r"^(SIMPLE|XTENSION|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|BSCALE|BZERO|BLANK|EXTNAME|EXTVER|"
    r"EXTLEVEL|CHECKSUM|DATASUM|INHERIT|WCSAXES|WCSNAME|CTYPE\d+|CRPIX\d+|CRVAL\d+|"
    r"CDELT\d+|CUNIT\d+|CROTA\d+|CD\d+_\d+|PC\d+_\d+|PV\d+_\d+|PS\d+_\d+|"
    r"(A|B|AP|BP)_(ORDER|DMAX|\d+_\d+)|LONPOLE|LATPOLE|RADESYS|EQUINOX)$")


def _merged_header(header, primary):
    """``header`` with the primary header's non-structural, non-WCS cards it lacks."""
    from astropy.io import fits

    out = fits.Header(header, copy=True)
    keep = fits.Header([c for c in primary.cards
                        if c.keyword and not _STRUCTURAL.match(c.keyword)])
    out.extend(keep, unique=True)
    return out


_BUNIT_ALIASES = {
    "electrons": "electron", "electron": "electron", "e-": "electron", "elec": "electron",
    "counts": "count", "count": "count", "cts": "count", "ct": "count", "adu": "adu",
    "adus": "adu", "dn": "DN", "photons": "photon", "s": "s", "sec": "s",
    "pixel": "pix", "pixels": "pix", "pix": "pix",
}


def _bunit(header, path):
    """Unit of a BUNIT card (common non-standard spellings understood); dimensionless if absent."""
    text = str(header.get("BUNIT", "")).strip()
    if not text:
        return u.dimensionless_unscaled
    fixed = re.sub(r"[A-Za-z]+-?", lambda m: _BUNIT_ALIASES.get(m.group().lower(), m.group()),
                   text)
    unit = u.Unit(fixed, parse_strict="silent")
    if isinstance(unit, u.UnrecognizedUnit):
        warnings.warn(f"{path}: BUNIT {text!r} is not a unit astropy knows; reading the data as "
                      "dimensionless (pass unit= to set it)", AstropyUserWarning, stacklevel=2)
        return u.dimensionless_unscaled
    return unit


class _UnitNoticeFilter(logging.Filter):
    def filter(self, record):
        return "passed to the FITS reader instead" not in record.getMessage()


@contextlib.contextmanager
def _unit_notice_silenced():
    """Drop astropy's INFO notice that ``unit=`` replaces BUNIT (astrosr reads BUNIT itself)."""
    from astropy import log

    flt = _UnitNoticeFilter()
    log.addFilter(flt)
    try:
        yield
    finally:
        log.removeFilter(flt)


def _physical_data(data, header, path, index):
    """Float64 physical values ``BSCALE * stored + BZERO`` of an image, BLANK pixels NaN.

    Astropy scales 8- and 16-bit integers in float32 and leaves BLANK in
    unscaled ones, so such images are scaled again from the stored values.
    """
    from astropy.io import fits

    if header.get("BITPIX", -32) < 0 or (data.dtype.kind in "iu" and "BLANK" not in header):
        return data
    raw = fits.getdata(path, index, do_not_scale_image_data=True)
    out = raw * float(header.get("BSCALE", 1.0)) + float(header.get("BZERO", 0.0))
    if "BLANK" in header:
        out[raw == header["BLANK"]] = np.nan
    return out
