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

import bz2
import contextlib
import glob
import gzip
import logging
import os
import re
import warnings
import zlib
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.nddata import CCDData, NDData
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import FITSFixedWarning

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
    index, header, primary, (problem, lookup_wcs) = _image_hdu(path, hdu)
    if primary is not None:
        header = _merged_header(header, primary)
    if unit is None:
        unit = _bunit(header, path)
    with _damage_reported(path), _astropy_notices_silenced(), warnings.catch_warnings():
        # Astropy reports each header fix it makes while building the WCS (a
        # 'datfix' MJD-OBS from DATE-OBS on nearly every camera's frames): one
        # notice per frame, about a fix already made. `_wcs_check` has
        # looked at the WCS already; errors still raise.
        warnings.simplefilter("ignore", FITSFixedWarning)
        warnings.filterwarnings("ignore", _TRUNCATION_NOTICE, AstropyUserWarning)
        ccd = CCDData.read(path, hdu=index, unit=unit)
        data = _physical_data(ccd.data, header, path, index)
    if primary is not None:
        ccd.meta = _merged_header(ccd.meta, primary)
    if problem:
        warnings.warn(f"{path}: {problem}; reading it without a WCS (fix the header, or pass the "
                      "frame as CCDData with wcs=)", AstropyUserWarning, stacklevel=3)
        ccd.wcs = None
    elif lookup_wcs is not None:  # CCDData.read builds no WCS with lookup tables (no HDUList)
        ccd.wcs = lookup_wcs
    if problem or lookup_wcs is not None:  # as CCDData.read leaves a WCS it built: not in meta
        for key in [k for k in ccd.meta if _WCS_CARD.match(k) or _LOOKUP_CARD.match(k)]:
            with contextlib.suppress(KeyError):
                del ccd.meta[key]
    return _with_native_data(ccd, data)


#: What astropy warns, once per seek, when a file is shorter than its padded size.
_TRUNCATION_NOTICE = "File may have been truncated"
_BLOCK = 2880


def _image_hdu(path, hdu):
    """The image to read: its index, header, primary header (None if it is the primary), WCS check.

    The WCS check is `_wcs_check` of the image's header, made while the file
    is open (lookup-table distortions are read from its extensions).
    """
    from astropy.io import fits

    size = path.stat().st_size
    if size == 0:
        raise OSError(f"{path} is not a FITS file: it is empty (0 bytes); copy or write it again")
    compression, start = _fits_start(path)
    if start is not None and not start.startswith(b"SIMPLE"):
        raise OSError(f"{path} is not a FITS file")
    # astropy leaves the file open when it fails to open it: open it here, and close it
    with open(path, "rb") as raw:
        with _damage_reported(path, compression), \
                warnings.catch_warnings(record=True) as notices:
            warnings.simplefilter("always")
            hdul = fits.open(raw)
            try:
                hdul.readall()  # every header now
            except BaseException:
                hdul.close()
                raise
        with hdul:
            return _chosen_image(hdul, hdu, path, size, compression, notices)


def _chosen_image(hdul, hdu, path, size, compression, notices):
    """`_image_hdu` once the file is open, its headers read, and astropy's notices recorded."""
    if hdul[0].header.get("SIMPLE") is False:
        raise OSError(f"{path} does not follow the FITS standard (SIMPLE = F): convert it to "
                      "standard FITS first")
    damage = _damage(hdul, path, size, compression, notices)
    for notice in notices:  # astropy's other notices, as they were
        warnings.warn(notice.message, notice.category, stacklevel=5)
    try:
        index = _hdu_index(hdul, hdu, path)
    except ValueError:
        if damage:  # the HDU may be the one cut off
            raise OSError(damage[1]) from None
        raise
    named = isinstance(hdu, str) and not hdu.strip().isdigit()
    _check_image(hdul, index, f"{path}[{hdu if named else index!r}]")
    if damage and (damage[0] == index or damage[2] in ("UNCERT", "MASK", "PSFIMAGE")):
        raise OSError(damage[1])  # CCDData.read reads those extensions too
    if damage:
        warnings.warn(f"{damage[1].removesuffix('; copy or download it again')}; HDU {index}, "
                      "read here, is complete", AstropyUserWarning, stacklevel=5)
    if "DATASUM" in hdul[index].header:
        with _damage_reported(path, compression):
            intact = hdul[index].verify_datasum()
        if intact == 0:
            raise OSError(f"{path} is damaged: the data of HDU {index} do not match their "
                          "DATASUM checksum; copy or download it again")
    header = hdul[index].header.copy()
    primary = hdul[0].header.copy() if index else None
    return index, header, primary, _wcs_check(header, hdul)


def _fits_start(path):
    """Compression of a file (None, 'gzip', 'bzip2' or 'zip') and its first bytes, uncompressed.

    The bytes are None where they cannot be had here (a zip archive, or a
    compressed stream too damaged to start): astropy then has its say.
    """
    with open(path, "rb") as f:
        magic = f.read(80)
    if magic.startswith(b"\x1f\x8b"):
        compression, opener = "gzip", gzip.open
    elif magic.startswith(b"BZh"):
        compression, opener = "bzip2", bz2.open
    elif magic.startswith(b"PK\x03\x04"):
        return "zip", None
    else:
        return None, magic
    try:
        with opener(path, "rb") as f:
            return compression, f.read(80)
    except (OSError, EOFError, zlib.error, ValueError):
        return compression, None


def _damage(hdul, path, size, compression, notices):
    """``(hdu index, message, EXTNAME)`` of the first HDU a file lacks in part; None if complete.

    An uncompressed file is measured: an HDU whose data run past the end of
    the file, or an extension header cut off at the end (astropy drops such
    an HDU with a notice, taken off ``notices`` here). A compressed stream
    that ends early is truncated too. A file short only of the padding of
    its last 2880-byte block is complete (some writers leave it out).
    """
    from astropy.io import fits

    dropped = [n for n in notices if "Error validating header for HDU" in str(n.message)]
    notices[:] = [n for n in notices if n not in dropped
                  and not str(n.message).startswith(_TRUNCATION_NOTICE)]
    fix = "copy or download it again"
    if compression is not None:
        problem = _stream_problem(path, compression)
        if problem:
            raise OSError(f"{path} is {problem}; {fix}")
        notices.extend(dropped)
        return None
    end = 0
    for i, h in enumerate(hdul):
        info = hdul.fileinfo(i)
        if isinstance(h, fits.CompImageHDU):  # its size is the image's: use the stored span
            need, least = info["datLoc"] + max(info["datSpan"] - _BLOCK + 1, 0), "at least "
        else:
            need, least = info["datLoc"] + h.size, ""
        if need > size:
            return (i, f"{path} is truncated (HDU {i} needs {least}{need} bytes but the file has "
                       f"{size}: the copy or the write was cut short); {fix}", h.name)
        end = info["datLoc"] + info["datSpan"]
    if dropped and size > end:
        with open(path, "rb") as f:
            f.seek(end)
            cut = f.read(8) == b"XTENSION"
        if cut:
            what = "is cut short" if size - end < _BLOCK else "cannot be read"
            return (len(hdul), f"{path} is truncated or damaged (the header of HDU {len(hdul)}, "
                               f"at byte {end}, {what}); {fix}", None)
    notices.extend(dropped)
    return None


@contextlib.contextmanager
def _damage_reported(path, compression=None):
    """Turn what astropy raises on a damaged file into an `OSError` naming it and the fix.

    Any error of astropy's reading counts (a damaged tile-compressed image
    raises cfitsio's own exception class, derived from `Exception` alone),
    except running out of memory, permission errors and a file vanishing,
    which pass as they are. The block holds only astropy's reading: the
    errors astrosr raises itself are raised outside.
    """
    try:
        yield
    except (MemoryError, PermissionError, FileNotFoundError, IsADirectoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - see above
        chain, cause = [], exc
        while cause is not None and len(chain) < 10:
            chain.append(cause)
            cause = cause.__cause__ or cause.__context__
        detail = next((str(e).splitlines()[0] for e in chain if str(e).strip()),
                      type(exc).__name__)
        if (any(isinstance(e, EOFError) or "buffer is too small" in str(e) for e in chain)
                or _stream_ends_early(path, compression)):
            kind = f"{compression}-compressed and truncated" if compression else "truncated"
        else:
            kind = f"a damaged {compression}-compressed file" if compression else "damaged"
        raise OSError(f"{path} is {kind}: it cannot be read as FITS ({detail}); copy or "
                      "download it again") from exc


def _stream_problem(path, compression):
    """What is wrong with a gzip or bzip2 file's stream, read to its end; None if intact.

    Reading to the end checks the stream's length and checksum (CRC), which
    astropy, reading no further than the data it needs, does not.
    """
    opener = {"gzip": gzip.open, "bzip2": bz2.open}.get(compression)
    if opener is None:
        return None
    try:
        with opener(path, "rb") as f:
            while f.read(1 << 24):
                pass
    except EOFError:
        return f"{compression}-compressed and truncated (the compressed stream ends early)"
    except (OSError, zlib.error, ValueError) as exc:
        return f"a damaged {compression}-compressed file ({exc})"
    return None


def _stream_ends_early(path, compression):
    """Whether a gzip or bzip2 file's stream stops before its end marker."""
    return "truncated" in (_stream_problem(path, compression) or "")


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


def _check_image(hdul, index, label):
    from astropy.io import fits

    h = hdul[index]
    if not h.is_image:
        kind = "a table" if isinstance(h, (fits.BinTableHDU, fits.TableHDU)) else type(h).__name__
        raise ValueError(f"{label} is {kind}, not an image: pass hdu= naming an image HDU")
    naxis = h.header.get("NAXIS", 0)
    shape = tuple(h.header.get(f"NAXIS{k}", 0) for k in range(naxis, 0, -1))
    if not naxis:
        raise ValueError(f"{label} holds no data: pass hdu= naming an image HDU")
    if naxis != 2:
        flat = next((i for i, other in enumerate(hdul)
                     if other.is_image and other.header.get("NAXIS", 0) == 2), None)
        hint = f" or pass hdu={flat}, a 2-D image of this file" if flat is not None else ""
        raise ValueError(f"{label} is a {naxis}-D image of shape {shape}, not a 2-D frame: "
                         f"pass the frames as separate 2-D images (files, or a 3-D array){hint}")


#: Cards of the primary WCS (no alternate letter), SIP included.
_WCS_CARD = re.compile(
    r"^(WCSAXES|WCSNAME|CTYPE\d+|CRPIX\d+|CRVAL\d+|CDELT\d+|CUNIT\d+|CROTA\d+|CD\d+_\d+|"
    r"PC\d+_\d+|PV\d+_\d+|PS\d+_\d+|(A|B|AP|BP)_(ORDER|DMAX|\d+_\d+)|LONPOLE|LATPOLE)$")


#: Cards of lookup-table distortions (the tables are in extensions of the file).
_LOOKUP_CARD = re.compile(r"^(CPDIS\d+|CPERR\d+|DP\d+(\..+)?|D2IMDIS\d+|D2IMERR\d+|"
                          r"D2IM\d+(\..+)?|D2IMEXT|AXISCORR)$")


def _wcs_check(header, hdul):
    """``(problem, wcs)`` of an image header's WCS; ``problem`` None when it can be trusted.

    ``wcs`` is the WCS built with the file's lookup-table distortions or
    ``-TAB`` coordinate tables when the header has any (which
    `~astropy.nddata.CCDData.read` cannot build), else None. ``hdul`` is the
    open file.
    """
    from astropy.wcs import WCS

    needs_file = (any(_LOOKUP_CARD.match(k) for k in header if k)
                  or any("-TAB" in str(header.get(f"CTYPE{i}", "")) for i in (1, 2)))
    lookup = hdul if needs_file else None
    problem = _wcs_problem(header, lookup)
    if problem or lookup is None:
        return problem, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return None, WCS(header, lookup)


def _wcs_problem(header, hdul=None):
    """Why the celestial WCS of ``header`` cannot be trusted, or None (also without a WCS).

    Problems: astropy cannot build it (with the lookup tables of ``hdul``,
    if given), one of its cards cannot be parsed (astropy drops such a card
    with a notice), a singular CD matrix (which wcslib would replace by the
    identity, one degree per pixel), or CDi_j and PCi_j both present and
    disagreeing (wcslib silently takes PCi_j), or PCi_j and CROTA2.
    """
    from astropy.wcs import WCS

    keys = {k for k in header if k}
    if not any(re.match(r"^(CTYPE|CRVAL|CRPIX|CDELT)\d+$|^(CD|PC)\d+_\d+$", k) for k in keys):
        return None
    cd = _matrix(header, "CD", 0.0) if any(re.match(r"^CD\d+_\d+$", k) for k in keys) else None
    if cd is not None and not np.all(np.isfinite(cd)):
        return "its CD matrix has a value that is not a number"
    if cd is not None and abs(np.linalg.det(cd)) == 0:
        return f"its CD matrix {cd.tolist()} is singular"
    has_pc = any(re.match(r"^PC\d+_\d+$", k) for k in keys)
    cdelt = np.array([_number(header.get(f"CDELT{i}", 1.0)) for i in (1, 2)])
    if cd is not None and has_pc:
        pc = cdelt[:, None] * _matrix(header, "PC", None)
        if not np.allclose(pc, cd, rtol=1e-6, atol=0.0):
            return (f"it has both a CD matrix {cd.tolist()} and PC/CDELT giving {pc.tolist()}, "
                    "which disagree (keep one of them)")
    rho = np.radians(_number(header.get("CROTA2", 0.0)))
    if cd is None and has_pc and rho:
        c, s, ratio = np.cos(rho), np.sin(rho), cdelt[1] / cdelt[0]
        crota = np.array([[c, -s * ratio], [s / ratio, c]])
        pc = _matrix(header, "PC", None)
        if not np.allclose(pc, crota, rtol=1e-6, atol=1e-9):
            return (f"its PC matrix {pc.tolist()} disagrees with CROTA2 = "
                    f"{header['CROTA2']} (keep one of them)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            WCS(header, hdul)
        except Exception as exc:  # wcslib's errors have many classes; any means no WCS
            reason = " ".join(str(exc).split("\n")[1:2]).strip() or str(exc).splitlines()[0]
            return f"astropy cannot build its WCS ({type(exc).__name__}: {reason})"
    unread = [" ".join(str(w.message).split()) for w in caught
              if issubclass(w.category, FITSFixedWarning)
              and "value was expected" in str(w.message)]
    if unread:
        return f"a WCS card cannot be read ({unread[0]})"
    return None


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan


def _matrix(header, prefix, default):
    """The 2x2 matrix of the ``prefix`` i_j cards; missing: identity (``default`` None), else it."""
    out = np.eye(2) if default is None else np.full((2, 2), default)
    for i in (1, 2):
        for j in (1, 2):
            if f"{prefix}{i}_{j}" in header:
                out[i - 1, j - 1] = _number(header[f"{prefix}{i}_{j}"])
    return out


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
    WCS could not be built (`_wcs_problem` warns, naming the file).
    """
    from astropy import log

    flt = _NoticeFilter()
    log.addFilter(flt)
    try:
        yield
    finally:
        log.removeFilter(flt)


def _physical_data(data, header, path, index):
    """Float64 physical values ``BSCALE * stored + BZERO`` of an image, BLANK pixels NaN.

    Astropy scales 8- and 16-bit integers in float32 and leaves BLANK in
    unscaled ones, so such images are scaled again from the stored values
    (read unscaled: the same for a plain, a gzip-compressed or a
    tile-compressed HDU, whose header is the image's).
    """
    from astropy.io import fits

    if header.get("BITPIX", -32) < 0 or (data.dtype.kind in "iu" and "BLANK" not in header):
        return data
    raw = fits.getdata(path, index, do_not_scale_image_data=True)
    out = raw * float(header.get("BSCALE", 1.0)) + float(header.get("BZERO", 0.0))
    if "BLANK" in header:
        out[raw == header["BLANK"]] = np.nan
    return out
