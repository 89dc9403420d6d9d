"""Images larger than memory, written to FITS block by block.

`BlockWriter` lays out a whole multi-extension FITS file when it is entered
(every header, every data area at its final size) and then writes each block
of the image, a rectangle of pixels, at its place in the file, a row segment
at a time: the memory it takes is that of the block given, plus a few
buffers of `CHUNK_BYTES`, whatever the size of the image. The file is the one
`astrosr.nddata.write_fits` would write for the same image, byte for byte
once every pixel has been written (the same types given): the primary HDU holds the data and the
header (with the WCS and HISTORY), ``MASK`` the mask (``uint8``),
``UNCERT`` the uncertainty (its class in ``UTYPE``, as astropy writes it)
and ``WHT`` the weight map (``float32``). So ``CCDData.read(path)`` and
`astrosr.nddata.read_fits` open it as they open any other output.

Reading it back without loading it all: ``astropy.io.fits.open(path,
memmap=True)`` and the ``.section[y0:y1, x0:x1]`` of each HDU read only the
rows they need; `read_block` does so for every extension at once and returns
the region as CCDData, its WCS moved to the region.

Not written: ``CHECKSUM`` and ``DATASUM`` (they need the whole data, which is
never in memory; `~astrosr.nddata.write_fits` writes none either), and the
``REJECT`` extension of a `~astrosr.output.ResultImage` (rejected pixels of
the input stack, not a plane of the output).
"""

import operator
import os
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import (CCDData, InverseVariance, NDUncertainty, StdDevUncertainty,
                            VarianceUncertainty)

from .files import replacing
from .nddata import fits_header

__all__ = ["BlockWriter", "read_block", "CHUNK_BYTES", "FITS_BLOCK"]

#: Bytes of a FITS logical record: every header and data area is padded to a multiple.
FITS_BLOCK = 2880
#: Bytes converted to FITS order and written at a time (also the size of the fill buffer).
CHUNK_BYTES = 1 << 20

_UNCERTAINTIES = {"var": VarianceUncertainty, "std": StdDevUncertainty, "ivar": InverseVariance}
#: Power of the data unit that each uncertainty class is in.
_UNCERTAINTY_POWER = {VarianceUncertainty: 2, StdDevUncertainty: 1, InverseVariance: -2}


class _Area:
    """One HDU of the file: its header bytes, where its data start, their type and fill."""

    def __init__(self, name, header, dtype, fill, offset, shape):
        self.name = name
        self.header = header
        self.header_bytes = header.tostring().encode("ascii")
        self.dtype = np.dtype(dtype)
        self.fill = fill
        self.offset = offset
        self.data_offset = offset + len(self.header_bytes)
        self.nbytes = int(np.prod(shape)) * self.dtype.itemsize
        self.end = self.data_offset + _padded(self.nbytes)


class BlockWriter:
    """Write a FITS image larger than memory, block by block.

    A context manager. Entering it lays the whole file out: the primary
    header (``BITPIX``, ``NAXISn``, ``BUNIT``, and the cards of ``header``
    and ``wcs``: WCS, HISTORY, COMMENT), then the ``MASK``, ``UNCERT`` and
    ``WHT`` extensions asked for, in that order (the order of
    `~astrosr.nddata.write_fits`), each data area at its full size and
    padded to 2880-byte FITS records. Until a block is written there, the
    data and uncertainty read as NaN, the mask as 1 (masked) and the weight
    as 0, so a region never written is an honest gap, not zeros. (Those
    values are written when the writer is entered: a first pass over the
    data, uncertainty and mask areas, `CHUNK_BYTES` at a time; the weight's
    zeros are left to the file system, sparse where it allows.)

    `write` then puts each block in place, row segment by row segment,
    big-endian, through one open file. On leaving the block without an
    exception the file gets its name, atomically (``astrosr.files.replacing``);
    an exception (Ctrl-C too) leaves no file, and an existing file as it
    was. Once complete, the file is byte for byte what
    `~astrosr.nddata.write_fits` writes for the same image in the same types
    (data and uncertainty of ``dtype``, a boolean mask; no ``CHECKSUM`` or
    ``DATASUM``: they would need the whole data at once).

    Parameters
    ----------
    path : str or path-like
        The FITS file to write.
    shape : tuple of int
        ``(ny, nx)`` of the image.
    unit : `~astropy.units.Unit` or str, optional
        Unit of the data (``''`` for dimensionless). Default: the ``BUNIT``
        of ``header``; one or the other is needed.
    header : `~astropy.io.fits.Header` or dict, optional
        Cards of the primary header (a CCDData's ``meta``): keywords, WCS,
        HISTORY and COMMENT (a dict's lists of entries become one card each,
        as `~astrosr.nddata.write_fits` writes them). Structural keywords
        (``BITPIX``, ``NAXISn``) are set from ``shape`` and ``dtype``, and
        ``BUNIT`` from ``unit``.
    wcs : `~astropy.wcs.WCS`, optional
        The image's WCS, written over any WCS cards of ``header``.
    uncertainty : {None, 'var', 'std', 'ivar'} or uncertainty class, optional
        Write an ``UNCERT`` extension of this kind
        (`~astropy.nddata.VarianceUncertainty`,
        `~astropy.nddata.StdDevUncertainty`,
        `~astropy.nddata.InverseVariance`), in the type of the data.
    mask : bool
        Write a ``MASK`` extension (``uint8``, 1 where masked).
    weight : bool
        Write a ``WHT`` extension (``float32``), the weight map of a
        `~astrosr.output.ResultImage`.
    dtype : {numpy.float32, numpy.float64}
        Type of the data (and uncertainty) in the file.
    overwrite : bool
        Replace an existing file.

    Raises
    ------
    ValueError
        A ``shape`` that is not two positive integers, a ``dtype`` that is
        not float32 or float64, an unknown ``uncertainty``, no ``unit``.
    TypeError
        ``mask``, ``weight`` or ``overwrite`` not True or False.
    FileExistsError
        On entering, if ``path`` exists and ``overwrite`` is False.
    FileNotFoundError
        On entering, if the folder of ``path`` does not exist.

    See Also
    --------
    read_block : Read a region of such a file (of any FITS image) as CCDData.
    astrosr.nddata.write_fits : Write an image that fits in memory.

    Notes
    -----
    Where ``O_TMPFILE`` is available (Linux), the file is written unnamed in
    the folder of ``path`` and gets its name only when complete; elsewhere
    it is a hidden temporary file beside ``path`` (see ``astrosr.files``).
    Blocks may be written in any order and may overlap (the last one
    written wins); a writer writes one file, once.

    Examples
    --------
    >>> import numpy as np
    >>> from astrosr.blocks import BlockWriter
    >>> with BlockWriter("big.fits", shape=(4096, 4096), unit="electron",
    ...                  uncertainty="var", mask=True) as out:  # doctest: +SKIP
    ...     for y0 in range(0, 4096, 512):
    ...         region = np.s_[y0:y0 + 512, :]
    ...         data, var, bad = compute(region)  # the user's own step
    ...         out.write(region, data, uncertainty=var, mask=bad)
    """

    def __init__(self, path, *, shape, unit=None, header=None, wcs=None, uncertainty=None,
                 mask=True, weight=False, dtype=np.float32, overwrite=False):
        for name, value in (("mask", mask), ("weight", weight), ("overwrite", overwrite)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {type(value).__name__}"
                                + (": give the blocks to write(), not to BlockWriter()"
                                   if name != "overwrite" else ""))
        self.path = Path(path)
        self.shape = _shape(shape)
        self.dtype = _float_dtype(dtype)
        self.unit = _unit(unit, header)
        self.uncertainty = _uncertainty_class(uncertainty)
        self.overwrite = bool(overwrite)
        template = CCDData(np.broadcast_to(np.zeros((), self.dtype), self.shape),
                           unit=self.unit, meta=header if header is not None else {}, wcs=wcs)
        primary = fits_header(template)  # zero-stride data: only its shape and type are read
        planes = []
        if mask:
            planes.append(("MASK", np.uint8, 1, ()))
        if self.uncertainty is not None:
            planes.append(("UNCERT", self.dtype, np.nan, [("UTYPE", self.uncertainty.__name__)]))
        if weight:
            planes.append(("WHT", np.float32, 0, ()))
        if planes:  # as HDUList.writeto does (update_extend)
            primary.set("EXTEND", True, after=f"NAXIS{len(self.shape)}")
        self._areas = {"data": _Area("PRIMARY", primary, self.dtype.newbyteorder(">"), np.nan,
                                     0, self.shape)}
        argument = {"MASK": "mask", "UNCERT": "uncertainty", "WHT": "weight"}
        for name, dt, fill, cards in planes:
            hdu = fits.ImageHDU(np.broadcast_to(np.zeros((), dt), self.shape),
                                fits.Header(list(cards)), name=name)
            offset = list(self._areas.values())[-1].end
            self._areas[argument[name]] = _Area(name, hdu.header,
                                                np.dtype(dt).newbyteorder(">"), fill, offset,
                                                self.shape)
        self._stack = None
        self._file = None
        self._used = False

    @property
    def extensions(self):
        """Names of the extensions after the primary HDU, in file order (tuple of str)."""
        return tuple(area.name for area in self._areas.values())[1:]

    @property
    def header(self):
        """A copy of the primary header written (`~astropy.io.fits.Header`)."""
        return self._areas["data"].header.copy()

    @property
    def size(self):
        """Size of the file in bytes (int)."""
        return list(self._areas.values())[-1].end

    def __enter__(self):
        if self._used:
            raise ValueError("this BlockWriter was already used: a BlockWriter writes one file, "
                             "once; make a new one")
        self._used = True
        with ExitStack() as stack:  # an error while laying out leaves no file
            tmp = stack.enter_context(replacing(self.path, overwrite=self.overwrite))
            # Written through the yielded path, by name, as replacing() asks.
            self._file = stack.enter_context(open(tmp, "r+b", buffering=0))
            self._file.truncate(self.size)
            for area in self._areas.values():
                _write_at(self._file, area.offset, area.header_bytes)
                if area.fill != 0:  # zeros (the weight's) are the truncated file's own
                    _fill(self._file, area)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, exc_type, exc, tb):
        stack, self._stack, self._file = self._stack, None, None
        # Closes the file, then names it (no exception) or removes it (an exception).
        stack.__exit__(exc_type, exc, tb)
        return False

    def write(self, region, data, *, uncertainty=None, mask=None, weight=None):
        """Write one block: the pixels of ``region`` in every extension.

        Every extension of the file gets its block at once: ``uncertainty``
        is needed when the writer was made with ``uncertainty=``, ``mask``
        with ``mask=True``, ``weight`` with ``weight=True`` (and refused
        otherwise). All blocks are checked before any is written.

        Parameters
        ----------
        region : tuple of two slices
            ``(slice(y0, y1), slice(x0, x1))`` (``numpy.s_[y0:y1, x0:x1]``),
            inside the image, steps of 1; ``None`` bounds are the image's
            edges.
        data : array_like or `~astropy.units.Quantity`, shape of the region
            The image's pixels (a Quantity is converted to the writer's unit).
        uncertainty : array_like, `~astropy.units.Quantity` or `~astropy.nddata.NDUncertainty`
            Of the writer's uncertainty class (a variance for ``'var'``).
        mask : array_like of bool
            True (non-zero) where masked; written as 1.
        weight : array_like
            The weight map's pixels.

        Raises
        ------
        ValueError
            A region outside the image or empty, a block of another shape
            than the region, a missing or unexpected block, the writer not
            entered (or already left).
        TypeError
            A region that is not two slices, a block that is not numbers, an
            uncertainty of another class.
        astropy.units.UnitsError
            A Quantity in a unit that does not convert.
        """
        if self._file is None:
            raise ValueError("the BlockWriter is not open: call write() inside "
                             "'with BlockWriter(...) as out:'")
        (y0, y1), (x0, x1) = _region_bounds(region, self.shape)
        blocks = {"data": data, "uncertainty": uncertainty, "mask": mask, "weight": weight}
        arrays = {}
        for name, block in blocks.items():
            if name not in self._areas:
                if block is not None:
                    raise ValueError(f"{name} was given, but this file has no "
                                     f"{_EXTENSION[name]} extension: make the BlockWriter with "
                                     f"{name}={'True' if name != 'uncertainty' else repr('var')}"
                                     ", or leave it out")
                continue
            if block is None and name == "data":
                raise ValueError("data is missing: give the image's pixels of the region")
            if block is None:
                raise ValueError(f"{name} is missing: this file has a {_EXTENSION[name]} "
                                 f"extension, so give {name}= for every block (or make the "
                                 f"BlockWriter without it)")
            arrays[name] = self._as_array(name, block, (y1 - y0, x1 - x0))
        for name, array in arrays.items():
            self._write_block(self._areas[name], array, y0, x0)

    def _as_array(self, name, block, shape):
        if name == "uncertainty" and isinstance(block, NDUncertainty):
            if not isinstance(block, self.uncertainty):
                raise TypeError(f"uncertainty is a {type(block).__name__}, but this file's is "
                                f"{self.uncertainty.__name__}: convert it, or make the "
                                "BlockWriter with that uncertainty")
            block = block.array if block.unit is None else block.quantity
        if isinstance(block, u.Quantity) and name in ("data", "uncertainty"):
            power = 1 if name == "data" else _UNCERTAINTY_POWER[self.uncertainty]
            block = block.to_value(self.unit ** power)
        array = np.asarray(block)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be an array of numbers, got dtype {array.dtype}")
        if array.shape != shape:
            raise ValueError(f"{name} block has shape {array.shape}, but the region is "
                             f"{shape[0]} x {shape[1]}: give an array of shape {shape}")
        return array

    def _write_block(self, area, array, y0, x0):
        """Write ``array`` at ``(y0, x0)`` of ``area``, a few rows at a time, in row order."""
        nx = self.shape[1]
        height, width = array.shape
        row_bytes = width * area.dtype.itemsize
        rows = max(1, CHUNK_BYTES // row_bytes)
        for r0 in range(0, height, rows):
            piece = array[r0:r0 + rows]
            if area.name == "MASK":
                piece = piece != 0
            buf = np.ascontiguousarray(piece, dtype=area.dtype).reshape(-1).view(np.uint8)
            start = area.data_offset + ((y0 + r0) * nx + x0) * area.dtype.itemsize
            if width == nx:  # whole rows: one contiguous stretch of the file
                _write_at(self._file, start, buf)
                continue
            for r in range(len(piece)):
                _write_at(self._file, start + r * nx * area.dtype.itemsize,
                          buf[r * row_bytes:(r + 1) * row_bytes])


_EXTENSION = {"data": "primary", "uncertainty": "UNCERT", "mask": "MASK", "weight": "WHT"}
#: Cards of the WCS that stay in the meta (as CCDData.read keeps them): dates, not geometry.
_KEEP_IN_META = ("DATE-OBS", "MJD-OBS", "JD-OBS")


def _region_bounds(region, shape):
    """The ``((y0, y1), (x0, x1))`` of a region, checked to be inside an image of ``shape``.

    Parameters
    ----------
    region : tuple of two slices
        ``(slice(y0, y1), slice(x0, x1))``, as ``numpy.s_[y0:y1, x0:x1]``
        gives; ``None`` bounds are the edges, steps must be 1, negative
        bounds are refused (not counted from the end).
    shape : tuple of int
        ``(ny, nx)`` of the image.

    Returns
    -------
    tuple
        ``((y0, y1), (x0, x1))``, with ``0 <= y0 < y1 <= ny`` and
        ``0 <= x0 < x1 <= nx``.

    Raises
    ------
    TypeError
        ``region`` not two slices, bounds not integers.
    ValueError
        A step other than 1, an empty region, bounds outside the image.
    """
    if not (isinstance(region, tuple) and len(region) == 2
            and all(isinstance(s, slice) for s in region)):
        raise TypeError("region must be two slices (rows, columns), e.g. (slice(y0, y1), "
                        f"slice(x0, x1)) or numpy.s_[y0:y1, x0:x1]; got {region!r:.80}")
    bounds = []
    for s, n, axis in zip(region, shape, ("rows (y)", "columns (x)")):
        try:
            start = 0 if s.start is None else operator.index(s.start)
            stop = n if s.stop is None else operator.index(s.stop)
            step = 1 if s.step is None else operator.index(s.step)
        except TypeError:
            raise TypeError(f"region {axis} bounds must be integers, got {s!r}") from None
        if step != 1:
            raise ValueError(f"region {axis} has step {step}: a block is a whole rectangle, "
                             "give a step of 1 (or none)")
        if not 0 <= start < stop <= n:
            raise ValueError(f"region {axis} {start}:{stop} is not inside the image's 0:{n} "
                             f"(shape {tuple(shape)}) or is empty: give 0 <= start < stop <= {n}")
        bounds.append((start, stop))
    return tuple(bounds)


def read_block(path, region):
    """Read a region of a FITS image, with its uncertainty, mask and weight, as CCDData.

    Only the rows of the region are read (``section`` of a memory-mapped
    file), from the primary HDU and the ``UNCERT``, ``MASK`` and ``WHT``
    extensions present, as `~astropy.nddata.CCDData.read` and
    `astrosr.nddata.read_fits` would read them for the whole image: the
    uncertainty class from ``UTYPE`` (`~astropy.nddata.StdDevUncertainty`
    without one), the unit from ``BUNIT``. The WCS is the file's, moved to
    the region (its pixel ``(0, 0)`` is the region's first), and its cards
    are left out of ``meta``, as ``CCDData.read`` does.

    Parameters
    ----------
    path : str or path-like
        A file written by `BlockWriter` or `~astrosr.nddata.write_fits`
        (any FITS file with a 2-D primary image and a ``BUNIT``).
    region : tuple of two slices
        As for `BlockWriter.write`.

    Returns
    -------
    `~astropy.nddata.CCDData`
        A `~astrosr.output.ResultImage` carrying ``weight`` when the file has
        a ``WHT`` extension.

    Raises
    ------
    ValueError
        A primary HDU that is not a 2-D image, a region outside it.
    """
    from astropy.wcs import WCS

    from .output import ResultImage

    with fits.open(path, memmap=True) as hdul:
        primary = hdul[0]
        header = primary.header.copy()
        shape = tuple(header.get(f"NAXIS{i}", 0) for i in (2, 1))
        if header.get("NAXIS") != 2:
            raise ValueError(f"{path}: the primary HDU is not a 2-D image (NAXIS = "
                             f"{header.get('NAXIS')}): read_block reads 2-D images")
        (y0, y1), (x0, x1) = _region_bounds(region, shape)

        def section(name, dtype=None):
            if name not in hdul:
                return None
            block = np.asarray(hdul[name].section[y0:y1, x0:x1])
            return block if dtype is None else block.astype(dtype)

        data = section(0)
        mask = section("MASK", bool)
        uncertainty = section("UNCERT")
        if uncertainty is not None:
            kind = hdul["UNCERT"].header.get("UTYPE", "StdDevUncertainty")
            classes = {cls.__name__: cls for cls in _UNCERTAINTY_POWER}
            if kind not in classes:
                raise ValueError(f"{path}: UNCERT has UTYPE = {kind!r}, not one of "
                                 f"{sorted(classes)}")
            uncertainty = classes[kind](uncertainty)
        weight = section("WHT", float)
    wcs = WCS(header)
    if wcs.wcs.ctype[0]:
        for key in wcs.to_header(relax=True):
            if key not in _KEEP_IN_META:
                header.remove(key, ignore_missing=True)
        wcs = wcs.slice((slice(y0, y1), slice(x0, x1)))
    else:
        wcs = None
    ccd = CCDData(data, unit=header.get("BUNIT"), meta=header, wcs=wcs, mask=mask,
                  uncertainty=uncertainty)
    return ResultImage(ccd, weight=weight) if weight is not None else ccd


def _write_at(file, offset, buf):
    """Write all of ``buf`` at byte ``offset`` of the open raw ``file``."""
    view = memoryview(buf).cast("B")
    while view.nbytes:
        if hasattr(os, "pwrite"):
            n = os.pwrite(file.fileno(), view, offset)
        else:  # pragma: no cover - Windows
            file.seek(offset)
            n = file.write(view)
        view = view[n:]
        offset += n


def _fill(file, area):
    """Write ``area.fill`` over the whole data area (not its padding), a chunk at a time."""
    count = min(CHUNK_BYTES // area.dtype.itemsize, area.nbytes // area.dtype.itemsize)
    pattern = np.full(count, area.fill, dtype=area.dtype).view(np.uint8)
    for start in range(0, area.nbytes, pattern.nbytes):
        n = min(pattern.nbytes, area.nbytes - start)
        _write_at(file, area.data_offset + start, pattern[:n])


def _padded(nbytes):
    return -(-nbytes // FITS_BLOCK) * FITS_BLOCK


def _shape(shape):
    try:
        dims = tuple(operator.index(n) for n in shape)
    except TypeError:
        dims = ()
    if len(dims) != 2 or min(dims) < 1:
        raise ValueError(f"shape must be two positive integers (ny, nx), got {shape!r:.60}")
    return dims


def _float_dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.kind != "f" or dt.itemsize not in (4, 8):
        raise ValueError(f"dtype must be numpy.float32 or numpy.float64 (unwritten pixels are "
                         f"NaN), got {dtype!r}")
    return dt.newbyteorder("=")


def _unit(unit, header):
    if unit is None and header is not None:
        unit = next((v for k, v in header.items() if str(k).upper() == "BUNIT"), None)
    if unit is None:
        raise ValueError("unit is needed: pass unit= (e.g. unit='electron', or unit='' for "
                         "dimensionless), or a header with BUNIT")
    return u.Unit(unit)


def _uncertainty_class(uncertainty):
    if uncertainty is None:
        return None
    if isinstance(uncertainty, type) and uncertainty in _UNCERTAINTY_POWER:
        return uncertainty
    if isinstance(uncertainty, str) and uncertainty in _UNCERTAINTIES:
        return _UNCERTAINTIES[uncertainty]
    raise ValueError(f"uncertainty must be None, 'var', 'std' or 'ivar' (or "
                     f"VarianceUncertainty, StdDevUncertainty, InverseVariance), "
                     f"got {uncertainty!r:.60}")
