"""Reading the frames of a stack: CCDData, NDData, FITS paths, glob patterns, cubes.

`as_frames` (also reached as `astrosr.nddata.as_frames`) turns what users
pass into a uniform list of `~astropy.nddata.CCDData` with native float64
data; `read_image` reads one FITS image (integers scaled by BSCALE/BZERO,
BLANK to NaN, the unit from BUNIT). `astrosr.FrameStack` builds on them.

Files are only ever read (opened read-only; memory maps are copy-on-write),
never modified. Plain, gzip-compressed (``.fits.gz``) and tile-compressed
(fpack, ``.fits.fz``) images read alike. A file that is empty, not FITS,
truncated or corrupt raises `OSError` naming it; a WCS that astropy cannot
build, or that contradicts itself, warns and the frame is read without one.
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

from .hdus import TRUNCATION_NOTICE, damage_reported, image_hdu
from .header import LOOKUP_CARD, WCS_CARD, merged_header, physical_data, unit_from_bunit

__all__ = ["as_frames", "read_image", "FITS_SUFFIXES"]

#: File name endings (any case) of the FITS files `as_frames` reads from a folder.
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fz")


def as_frames(frames, *, hdu=None, unit=None):
    """Return a list of `~astropy.nddata.CCDData` from what the user passed.

    Every frame out has native-endian float64 data (FITS is big-endian on
    disk; integer images are scaled by BSCALE/BZERO to physical values).

    Parameters
    ----------
    frames : list of CCDData/NDData/str/Path, str, 3-D array, or `~astrosr.FrameStack`
        The stack: frames as NDData objects, paths of FITS files, glob
        patterns of FITS files (``"data/frame_*.fits"``), folders (alone or
        in the list), or a cube ``(n_frames, ny, nx)``. A pattern expands to
        the matching files sorted by name, numbers compared by value
        (``frame_2`` before ``frame_10``). A folder, given or matched by a
        pattern, expands to the FITS files in it (names ending in one of
        `FITS_SUFFIXES`, any case; hidden files such as ``._x.fits`` and
        sub-folders are left out), sorted the same way.
    hdu : int or str, optional
        HDU to read from FITS files, by index or EXTNAME (default: the first
        image HDU holding data).
    unit : str or `~astropy.units.Unit`, optional
        Unit of the frames; for files it overrides BUNIT (default: BUNIT,
        else dimensionless).

    Raises
    ------
    TypeError
        If ``frames`` is a single frame or a single path that is neither a
        pattern nor a folder.
    FileNotFoundError
        If a file does not exist, a pattern matches no file or a folder holds
        no FITS file.
    OSError
        If a file is empty, not FITS, truncated or corrupt (see `read_image`).
    ValueError
        If the stack is empty, a frame is not 2-D, frames differ in shape, or
        a file lacks the HDU asked for or holds a table or cube there.
    """
    from ..stack import FrameStack  # here, not at the top: stack.py builds on this package

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
            raise ValueError("frames as an array must be 3-D (n_frames, ny, nx), "
                             f"got {frames.ndim}-D")
        return list(frames)
    if isinstance(frames, (str, Path)) and (_is_pattern(frames) or os.path.isdir(frames)):
        frames = [frames]
    elif isinstance(frames, (NDData, str, Path)):
        raise TypeError("frames must be a sequence of frames (or a 3-D array), not a single frame: "
                        "pass a list such as [frame], a glob pattern such as 'frame_*.fits' or "
                        "a folder")
    return _expand_patterns(frames)


def _is_pattern(path):
    """True for a glob pattern (``*?[``) that is not the name of an existing file."""
    text = os.fspath(path)
    return any(c in text for c in "*?[") and not os.path.exists(text)


def _natural_key(name):
    parts = re.split(r"(\d+)", name)
    return [int(p) if i % 2 else p for i, p in enumerate(parts)], name


def _expand_patterns(frames):
    """Replace glob patterns and folders in ``frames`` by their files, sorted by name."""
    out = []
    for frame in frames:
        if isinstance(frame, (str, Path)) and _is_pattern(frame):
            matches = sorted(glob.glob(os.fspath(frame)), key=_natural_key)
            if not matches:
                raise FileNotFoundError(f"no FITS file matches {os.fspath(frame)!r}")
            for match in matches:
                out.extend(_folder_files(match) if os.path.isdir(match) else [match])
        elif isinstance(frame, (str, Path)) and os.path.isdir(frame):
            out.extend(_folder_files(frame))
        else:
            out.append(frame)
    return out


def _folder_files(folder):
    """The FITS files of a folder (not hidden, not in sub-folders), sorted as patterns are."""
    folder = os.fspath(folder)
    names = [n for n in os.listdir(folder) if not n.startswith(".")
             and n.lower().endswith(FITS_SUFFIXES) and os.path.isfile(os.path.join(folder, n))]
    if not names:
        raise FileNotFoundError(f"folder {folder} holds no FITS file (names ending in "
                                f"{', '.join(FITS_SUFFIXES)}): pass the files, a glob pattern "
                                "or another folder")
    return sorted((os.path.join(folder, n) for n in names), key=_natural_key)


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

    The file is only read. Gzip- (``.fits.gz``) and bzip2-compressed files
    and tile-compressed (fpack) images read like plain ones: the default HDU
    choice finds a compressed image behind its empty primary, and integers
    are scaled exactly in float64 whatever the container.

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
        nor WCS (the extension's cards win). Its ``wcs`` is the header's WCS
        (SIP and other distortions kept), or None when the header has none.
        A WCS that astropy cannot build (an unknown projection, a singular
        matrix, a card it cannot parse), or whose CDi_j and PCi_j/CDELTi
        matrices disagree, warns (`~astropy.utils.exceptions.AstropyUserWarning`)
        and the frame is read without a WCS, its WCS cards dropped from the
        meta, so that no wrong WCS reaches a result. CDELTi beside CDi_j
        without PCi_j is ignored, as the FITS standard and wcslib do.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    IsADirectoryError
        If ``path`` is a folder (`as_frames` reads the FITS files of a folder).
    OSError
        If ``path`` is empty, not a FITS file, truncated (its data end before
        the size its header gives, or its compressed stream ends early) or
        corrupt (a header or compressed data that cannot be decoded, a gzip
        or bzip2 checksum that fails, or image data that do not match their
        DATASUM card); the message names the file and says what to do. A
        file short only of its last block's padding reads; another HDU cut
        off than the one read (and its UNCERT or MASK extensions) warns.
    ValueError
        If the HDU does not exist, is a table or holds no 2-D image.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such FITS file: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a FITS file: name one of its files, or "
                                "pass the folder in the frames of a stack to read all its FITS "
                                "files")
    if unit is not None:
        unit = u.Unit(unit)  # a bad unit is the caller's error, not the file's
    index, header, primary, (problem, lookup_wcs) = image_hdu(path, hdu)
    if primary is not None:
        header = merged_header(header, primary)
    if unit is None:
        unit = unit_from_bunit(header, path)
    with damage_reported(path), _astropy_notices_silenced(), warnings.catch_warnings():
        # Astropy reports each header fix it makes while building the WCS (a
        # 'datfix' MJD-OBS from DATE-OBS on nearly every camera's frames): one
        # notice per frame, about a fix already made. `wcs_check` has
        # looked at the WCS already; errors still raise.
        warnings.simplefilter("ignore", FITSFixedWarning)
        warnings.filterwarnings("ignore", TRUNCATION_NOTICE, AstropyUserWarning)
        ccd = CCDData.read(path, hdu=index, unit=unit)
        data = physical_data(ccd.data, header, path, index)
    if primary is not None:
        ccd.meta = merged_header(ccd.meta, primary)
    if problem:
        warnings.warn(f"{path}: {problem}; reading it without a WCS (fix the header, or pass the "
                      "frame as CCDData with wcs=)", AstropyUserWarning, stacklevel=3)
        ccd.wcs = None
    elif lookup_wcs is not None:  # CCDData.read builds no WCS with lookup tables (no HDUList)
        ccd.wcs = lookup_wcs
    if problem or lookup_wcs is not None:  # as CCDData.read leaves a WCS it built: not in meta
        for key in [k for k in ccd.meta if WCS_CARD.match(k) or LOOKUP_CARD.match(k)]:
            with contextlib.suppress(KeyError):
                del ccd.meta[key]
    return _with_native_data(ccd, data)


class _NoticeFilter(logging.Filter):
    NOTICES = ("passed to the FITS reader instead",
               "An exception happened while extracting WCS information")

    def filter(self, record):
        message = record.getMessage()
        return not any(notice in message for notice in self.NOTICES)


@contextlib.contextmanager
def _astropy_notices_silenced():
    """Drop astropy's INFO notices that astrosr handles itself while reading a file.

    That ``unit=`` replaces BUNIT (astrosr reads BUNIT itself), and that the
    WCS could not be built (`wcs_check` finds why; `read_image` warns, naming the file).
    """
    from astropy import log

    flt = _NoticeFilter()
    log.addFilter(flt)
    try:
        yield
    finally:
        log.removeFilter(flt)
