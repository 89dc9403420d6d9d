"""Opening a FITS file to read: damage recognised, the image HDU chosen and checked.

`image_hdu` opens a file read-only and says which HDU `~astrosr.reading.read_image`
reads, after checking that the file is FITS and whole: empty, not FITS,
truncated (data or an extension header cut short, a compressed stream that
ends early) or corrupt (undecodable headers or compressed data, a failing
gzip or bzip2 checksum, data not matching their DATASUM) files raise
`OSError` naming the file and the fix. `damage_reported` turns what astropy
raises while reading a damaged file into such an `OSError`.
"""

import bz2
import contextlib
import gzip
import warnings
import zlib

from astropy.utils.exceptions import AstropyUserWarning

from .header import wcs_check

__all__ = ["image_hdu", "damage_reported", "TRUNCATION_NOTICE"]


#: What astropy warns, once per seek, when a file is shorter than its padded size.
TRUNCATION_NOTICE = "File may have been truncated"
_BLOCK = 2880


def image_hdu(path, hdu):
    """The image to read: its index, header, primary header (None if it is the primary), WCS check.

    The WCS check is `wcs_check` of the image's header, made while the file
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
        with damage_reported(path, compression), \
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
    """`image_hdu` once the file is open, its headers read, and astropy's notices recorded."""
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
        with damage_reported(path, compression):
            intact = hdul[index].verify_datasum()
        if intact == 0:
            raise OSError(f"{path} is damaged: the data of HDU {index} do not match their "
                          "DATASUM checksum; copy or download it again")
    header = hdul[index].header.copy()
    primary = hdul[0].header.copy() if index else None
    return index, header, primary, wcs_check(header, hdul)


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
                  and not str(n.message).startswith(TRUNCATION_NOTICE)]
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
def damage_reported(path, compression=None):
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
