"""The headers of FITS images: WCS consistency, BUNIT, the merged primary, physical data.

`wcs_check` says whether an image header's WCS can be trusted (and builds it
when it needs the file's lookup tables); `unit_from_bunit` reads BUNIT, common
non-standard spellings included; `merged_header` adds the primary header's
cards to an extension's; `physical_data` scales integer images exactly
(BSCALE/BZERO in float64, BLANK to NaN). `WCS_CARD` and `LOOKUP_CARD` match
the cards of a WCS.
"""

import re
import warnings

import numpy as np
from astropy import units as u
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import FITSFixedWarning

__all__ = ["wcs_check", "unit_from_bunit", "merged_header", "physical_data", "WCS_CARD",
           "LOOKUP_CARD"]


#: Cards of the primary WCS (no alternate letter), SIP included.
WCS_CARD = re.compile(
    r"^(WCSAXES|WCSNAME|CTYPE\d+|CRPIX\d+|CRVAL\d+|CDELT\d+|CUNIT\d+|CROTA\d+|CD\d+_\d+|"
    r"PC\d+_\d+|PV\d+_\d+|PS\d+_\d+|(A|B|AP|BP)_(ORDER|DMAX|\d+_\d+)|LONPOLE|LATPOLE)$")


#: Cards of lookup-table distortions (the tables are in extensions of the file).
LOOKUP_CARD = re.compile(r"^(CPDIS\d+|CPERR\d+|DP\d+(\..+)?|D2IMDIS\d+|D2IMERR\d+|"
                          r"D2IM\d+(\..+)?|D2IMEXT|AXISCORR)$")


def wcs_check(header, hdul):
    """``(problem, wcs)`` of an image header's WCS; ``problem`` None when it can be trusted.

    ``wcs`` is the WCS built with the file's lookup-table distortions or
    ``-TAB`` coordinate tables when the header has any (which
    `~astropy.nddata.CCDData.read` cannot build), else None. ``hdul`` is the
    open file.
    """
    from astropy.wcs import WCS

    needs_file = (any(LOOKUP_CARD.match(k) for k in header if k)
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


def merged_header(header, primary):
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


def unit_from_bunit(header, path):
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


def physical_data(data, header, path, index):
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
