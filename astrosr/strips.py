"""The fine grid strip by strip: bounded memory for images of any size (core layer).

`astrosr.reconstruct.richardson_lucy` holds a handful of images of the padded
fine grid (the iterate, the one before, two steps, the extrapolated point,
the inverse coverage). At 16384² output pixels each is 1 GiB of float32. With
`Strips`, those images are `FineStore` objects, numpy arrays or, when a
``folder`` is given, raw float32 files read and written by rows, and the
observation operator is applied strip by strip: each strip of coarse rows is
computed with a halo wide enough for the PSF, the pixel and the largest
shift (`astrosr.forward.ObservationOperator.reach`), so that it equals the
same rows of the whole-grid operator. The iterations stay global (one step
size, one stopping rule for the whole image), so the result does not depend
on the strips and there is no seam between them. Memory is one strip (a few
tens of MB) plus the coarse cubes of the frames.

Band-limited fractional shifts are not compactly supported: strips are exact
for whole fine-pixel shifts (one frame, as `astrosr.enhance` fits, has none)
and for PSFs sampled above the fine grid's Nyquist rate; the ringing of a
sharper kernel beyond the halo is left out.
"""

import os
import tempfile

import numpy as np

__all__ = ["FineStore", "Strips"]


class FineStore:
    """One image of the fine grid, read and written by rows, in memory or in a file.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``.
    dtype : numpy dtype
        Element type.
    folder : str or path-like, optional
        Where to keep the image: an unnamed temporary file in that folder,
        removed when the store is closed or collected. None: in memory.
    array : numpy.ndarray, optional
        An in-memory image to wrap (not copied).
    """

    def __init__(self, shape, dtype=np.float32, *, folder=None, array=None):
        self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        self._array, self._file = array, None
        if array is None and folder is None:
            self._array = np.zeros(self.shape, dtype=self.dtype)
        elif array is None:
            self._file = tempfile.TemporaryFile(dir=folder)
            self._file.truncate(int(np.prod(self.shape)) * self.dtype.itemsize)
        self._row_bytes = self.shape[1] * self.dtype.itemsize

    @property
    def in_memory(self):
        """Whether the image is a numpy array (`array` returns it without a copy)."""
        return self._array is not None

    def array(self):
        """The whole image (a view of the store in memory; read from the file otherwise)."""
        return self._array if self.in_memory else self.read(0, self.shape[0])

    def read(self, first, stop):
        """Rows ``first:stop``, zeros for rows outside the image; do not modify the result."""
        ny = self.shape[0]
        lo, hi = max(first, 0), min(stop, ny)
        if self.in_memory and lo == first and hi == stop:
            return self._array[first:stop]
        out = np.zeros((stop - first, self.shape[1]), dtype=self.dtype)
        if hi > lo:
            out[lo - first:hi - first] = self._rows(lo, hi)
        return out

    def write(self, first, block):
        """Put ``block`` at rows ``first:first + len(block)``."""
        block = np.asarray(block, dtype=self.dtype)
        if self.in_memory:
            if first == 0 and block.shape == self.shape:
                self._array = block  # a whole new image: kept, not copied
            else:
                self._array[first:first + len(block)] = block
            return
        os.pwrite(self._file.fileno(), np.ascontiguousarray(block).tobytes(),
                  first * self._row_bytes)

    def close(self):
        """Release the image (the file is removed)."""
        if self._file is not None:
            self._file.close()
        self._array = self._file = None

    def _rows(self, lo, hi):
        if self.in_memory:
            return self._array[lo:hi]
        raw = os.pread(self._file.fileno(), (hi - lo) * self._row_bytes, lo * self._row_bytes)
        return np.frombuffer(raw, dtype=self.dtype).reshape(hi - lo, self.shape[1])


class Strips:
    """An operator's padded grid cut into strips of coarse rows, each applied with its halo.

    Parameters
    ----------
    op : `~astrosr.forward.ObservationOperator` or `~astrosr.forward.PixmapOperator`
        The whole-grid operator. Only an `ObservationOperator` is cut; any
        other is one strip.
    rows : int, optional
        Coarse rows per strip (at least the halo). None: one strip, the
        whole grid, with the operator itself.
    folder : str or path-like, optional
        Where `store` keeps its images (`FineStore`); None: in memory.
    """

    def __init__(self, op, *, rows=None, folder=None):
        self.op, self.folder = op, folder
        self.scale = op.scale
        n_rows = op.shape_padded[0]
        cut = rows is not None and int(rows) < n_rows and hasattr(op, "strip_operator")
        self.halo = op.reach if cut else 0
        step = max(int(rows), self.halo) if cut else n_rows
        self.bounds = [(r, min(r + step, n_rows)) for r in range(0, n_rows, step)]
        self._strip = op.strip_operator(step + 2 * self.halo) if cut else None

    def __len__(self):
        return len(self.bounds)

    def store(self, array=None):
        """A new `FineStore` of the padded fine grid (wrapping ``array`` when given)."""
        if array is not None:
            return FineStore(array.shape, array.dtype, array=array)
        return FineStore(self.op.fine_shape, self.op.real_dtype,
                         folder=self.folder if len(self) > 1 else None)

    def fine_rows(self, first, stop):
        """The fine rows of coarse rows ``first:stop`` (one strip: every fine row)."""
        if self._strip is None:
            return 0, self.op.fine_shape[0]
        return self.scale * first, self.scale * stop

    def forward(self, store, *, squared=False):
        """The frames predicted from a fine `FineStore`: cube ``(n, *shape_padded)``."""
        if self._strip is None:
            return self.op.forward(store.array(), squared=squared)
        s, h = self.scale, self.halo
        out = np.empty((len(self.op),) + self.op.shape_padded, dtype=self.op.real_dtype)
        fine = np.zeros(self._strip.fine_shape, dtype=self.op.real_dtype)
        for first, stop in self.bounds:
            rows = s * (stop - first + 2 * h)
            fine[:rows] = store.read(s * (first - h), s * (stop + h))
            fine[rows:] = 0.0
            out[:, first:stop] = self._strip.forward(fine, squared=squared)[:, h:h + stop - first]
        return out

    def adjoint(self, cube, first, stop, *, squared=False):
        """The fine rows of coarse rows ``first:stop`` of the adjoint of a padded coarse cube."""
        if self._strip is None:
            return self.op.adjoint(cube, squared=squared)
        s, h = self.scale, self.halo
        n_rows = cube.shape[1]
        lo, hi = max(first - h, 0), min(stop + h, n_rows)
        part = np.zeros((len(cube),) + self._strip.shape_padded, dtype=self.op.real_dtype)
        part[:, lo - (first - h):hi - (first - h)] = cube[:, lo:hi]
        back = self._strip.adjoint(part, squared=squared)
        return back[s * h:s * (h + stop - first)]
