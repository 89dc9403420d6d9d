"""The observation model as a fast linear operator on a fine grid.

A frame ``i`` sees the fine-grid sky ``x`` through the PSF, shifted by its
dither ``(dx_i, dy_i)``, integrated over its detector pixels::

    y_i[p] = sum over the fine pixels k of detector pixel p of (PSF * x)(k - s d_i)

This is the same model as `astrosr.simulate.render`. Here it is evaluated in
Fourier space so that one FFT of the sky serves every frame: the PSF and the
pixel box are one common transfer function, a dither is a phase ramp, and
integration over ``s x s`` blocks followed by decimation is the sum of the
``s**2`` aliases of the spectrum (the spectrum "folded" onto the coarse grid).
The adjoint replicates the coarse spectrum instead. Both cost one fine FFT,
one coarse FFT per frame and a few passes over the fine spectrum per frame;
the fold is written here because no library offers it.

The fine grid is padded so that the periodic FFT does not wrap the sky at one
edge onto the other: frames are embedded at an offset ``margin`` in a coarse
grid of ``shape_padded`` whose extra pixels carry no weight. Fractional fine
shifts are band-limited (Fourier) shifts of the PSF, exact for PSFs sampled
at or above the Nyquist rate of the fine grid.

`PixmapOperator` is the same model for frames of any geometry (rotation,
scale change, distortion): each frame is a sparse matrix of the exact areas
of overlap of its pixels' footprints (quadrilaterals on the fine grid, from
`pixel_overlaps`) with the fine pixels, applied after a convolution with the
PSF, as in drizzle's square kernel with ``pixfrac=1``.
"""

import numpy as np
from scipy import fft, signal, sparse

from .psf import as_psf

__all__ = ["ObservationOperator", "PixmapOperator", "pixel_overlaps"]


class ObservationOperator:
    """Fine sky -> the frames of a dithered stack, and its adjoint.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of each frame (input pixels).
    shifts : array_like, shape (n, 2)
        ``(dx, dy)`` of each frame in input pixels (DESIGN.md sign: a source
        at ``(x, y)`` of the reference appears at ``(x + dx, y + dy)``).
    scale : int
        Fine pixels per input pixel.
    psf : `~astrosr.psf.PSF` or array or None
        PSF (an array is sampled on the fine grid). None: no blur, only the
        integration over the input pixels.
    margin : int, optional
        Unobserved input pixels added on each side. Default: enough for the
        largest shift and the PSF's radius.
    single : bool
        Compute in single precision (float32, complex64): twice as fast and
        half the memory, relative accuracy ~1e-6, enough for iterative
        reconstruction.

    Attributes
    ----------
    shape_padded : tuple of int
        Coarse shape of the padded grid; the fine grid is ``scale`` times it.
    margin : int
        Offset of the frames (input pixels) and of the output (``scale *
        margin`` fine pixels) in the padded grids.
    real_dtype : numpy dtype
        The precision of the results (float32 with ``single``).

    Notes
    -----
    Real FFTs throughout: the sky and the frames are real, so only half of
    each spectrum is stored (`scipy.fft.rfft2`). The folding onto the coarse
    grid and its adjoint take the other half from the Hermitian symmetry. A
    shift's phase ramp is made real at the Nyquist frequency (its cosine), so
    that every spectrum stays the spectrum of a real image and the adjoint is
    exact. Per frame, the temporary arrays are ``1 / scale`` of the fine
    grid's half spectrum at most; the one fine-grid spectrum is shared by all
    frames.
    """

    def __init__(self, shape, shifts, *, scale, psf=None, margin=None, single=False):
        self.scale = s = int(scale)
        self.shape = tuple(int(n) for n in shape)
        self.shifts = np.atleast_2d(np.asarray(shifts, dtype=float))
        self._kernel = (np.ones((1, 1)) if psf is None
                        else as_psf(psf, oversampling=s).kernel(s))
        if margin is None:
            reach = max(self._kernel.shape) // 2 / s
            margin = int(np.ceil(np.abs(self.shifts).max() + reach)) + 2
        self.margin = int(margin)
        self.shape_padded = tuple(_fast_multiple(n + 2 * self.margin, s) for n in self.shape)
        self.fine_shape = tuple(s * n for n in self.shape_padded)
        self.real_dtype = self._real = np.float32 if single else np.float64
        self._complex = np.complex64 if single else np.complex128
        self._transfers = {}  # computed on first use (`strip_operator` needs only the shapes)
        self._ramps = [self._phase_ramps(dx, dy) for dx, dy in self.shifts]
        self._rowflip = -np.arange(self.shape_padded[0]) % self.shape_padded[0]

    def __len__(self):
        return len(self.shifts)

    @property
    def reach(self):
        """Coarse rows a predicted row depends on, each side: largest shift, PSF radius, pixel."""
        radius = max(self._kernel.shape) // 2 / self.scale
        return int(np.ceil(np.abs(self.shifts).max() + radius)) + 2

    def strip_operator(self, rows):
        """The same model on a strip of ``rows`` coarse rows of the padded grid, every column.

        Periodic over the padded width as this operator is, and not padded
        (`astrosr.strips.Strips` gives each strip its halo).
        """
        return ObservationOperator((int(rows), self.shape_padded[1]), self.shifts,
                                   scale=self.scale, psf=self._kernel, margin=0,
                                   single=self._real == np.float32)

    # ------------------------------------------------------------------ grids
    def embed_frames(self, cube, dtype=float):
        """Put frame values into the padded coarse grid (zeros around): cube ``(n, *shape_padded)``.

        ``cube`` is an array ``(n, ny, nx)`` or any iterable of the ``n``
        frames (a generator builds the result frame by frame, without a
        temporary cube).
        """
        out = np.zeros((len(self),) + self.shape_padded, dtype=dtype)
        m = self.margin
        for i, frame in enumerate(cube):
            out[i, m:m + self.shape[0], m:m + self.shape[1]] = frame
        return out

    def crop_frames(self, cube):
        """The frames' own pixels of a padded coarse cube."""
        m = self.margin
        return cube[..., m:m + self.shape[0], m:m + self.shape[1]]

    def embed_image(self, image):
        """Put a fine image of the unpadded field into the padded fine grid."""
        out = np.zeros(self.fine_shape)
        o = self.margin * self.scale
        out[o:o + image.shape[0], o:o + image.shape[1]] = image
        return out

    def crop_image(self, image):
        """The unpadded field (``scale`` times the frame shape) of a padded fine image."""
        o = self.margin * self.scale
        return image[o:o + self.scale * self.shape[0], o:o + self.scale * self.shape[1]]

    # -------------------------------------------------------------- operators
    def forward(self, image, *, squared=False):
        """Frames predicted from a padded fine image: cube ``(n, *shape_padded)``.

        With ``squared=True`` the kernel (PSF times pixel box) is squared:
        used to propagate variances through the model.
        """
        otf = self._transfer_of(squared)
        spec = fft.rfft2(np.asarray(image, dtype=self._real), workers=-1)
        spec *= otf
        out = np.empty((len(self),) + self.shape_padded, dtype=self._real)
        for i, (ry, rx, _, _) in enumerate(self._ramps):
            out[i] = fft.irfft2(self._fold(spec, ry, rx), s=self.shape_padded, workers=-1,
                                overwrite_x=True)
        return out

    def adjoint(self, cube, *, squared=False):
        """Adjoint of `forward`: padded coarse cube -> padded fine image."""
        otf = self._transfer_of(squared)
        s = self.scale
        my, mx = self.shape_padded
        total = np.zeros((self.fine_shape[0], self.fine_shape[1] // 2 + 1), dtype=self._complex)
        # The spectrum of a frame put on every s-th fine pixel (the adjoint of
        # taking every s-th) is the frame's spectrum repeated s times per axis.
        columns = np.arange(total.shape[1]) % mx
        for frame, (_, _, ry_conj, rx_conj) in zip(cube, self._ramps):
            full = self._full_columns(fft.rfft2(np.asarray(frame, dtype=self._real), workers=-1))
            rows = full[:, columns]
            rows *= rx_conj
            for a in range(s):
                total[a * my:(a + 1) * my] += rows * ry_conj[a * my:(a + 1) * my, None]
        # total * conj(otf), in place: conj(conj(total) * otf).
        np.conjugate(total, out=total)
        total *= otf
        np.conjugate(total, out=total)
        return fft.irfft2(total, s=self.fine_shape, workers=-1, overwrite_x=True)

    def _fold(self, spec, ry, rx):
        """Half spectrum of one frame (its shift applied) from the fine half spectrum ``spec``.

        Integration over the pixels is in the transfer function, so the frame
        is every ``s``-th fine pixel: its spectrum is the sum of the ``s``
        aliases of each frequency, per axis, over ``s**2``.
        """
        s = self.scale
        my, mx = self.shape_padded
        nx = self.fine_shape[1]
        rows = np.zeros((my, spec.shape[1]), dtype=spec.dtype)
        for a in range(s):
            rows += spec[a * my:(a + 1) * my] * ry[a * my:(a + 1) * my, None]
        rows *= rx
        half = mx // 2 + 1
        out = np.zeros((my, half), dtype=spec.dtype)
        for b in range(s):
            first = b * mx
            direct = min(half, nx // 2 + 1 - first)  # aliases held in the half spectrum
            if direct > 0:
                out[:, :direct] += rows[:, first:first + direct]
            start = max(direct, 0)
            if start < half:
                # The others from the Hermitian symmetry: conj of (-ky, nx - kx).
                mirror = rows[self._rowflip, nx - first - half + 1:nx - first - start + 1]
                out[:, start:] += np.conj(mirror[:, ::-1])
        out /= s * s
        return out

    def _full_columns(self, half):
        """The coarse spectrum ``(my, mx)`` from its half ``(my, mx // 2 + 1)``."""
        my, mx = self.shape_padded
        full = np.empty((my, mx), dtype=half.dtype)
        n = half.shape[1]
        full[:, :n] = half
        if mx > n:
            full[:, n:] = np.conj(half[self._rowflip, mx - n:0:-1])
        return full

    def _transfer_of(self, squared):
        """The half spectrum of the kernel (squared or not), computed on first use."""
        if squared not in self._transfers:
            kernel = _transfer(self._kernel, self.fine_shape, self.scale, squared)
            self._transfers[squared] = kernel.astype(self._complex)
        return self._transfers[squared]

    def _phase_ramps(self, dx, dy):
        # A shift of s*d fine pixels, with signed frequencies so that
        # fractional shifts are band-limited, not wrapped.
        ny, nx = self.fine_shape
        ry = _ramp(fft.fftfreq(ny), self.scale * dy).astype(self._complex)
        rx = _ramp(fft.rfftfreq(nx), self.scale * dx).astype(self._complex)
        return ry, rx, np.conj(ry), np.conj(rx)


def _ramp(freq, shift):
    """``exp(-2 pi i f shift)``, real (the cosine) at the Nyquist frequency ``|f| = 1/2``.

    A real image's spectrum is Hermitian; a complex ramp at Nyquist would
    break that, and the real inverse transform would drop its imaginary part.
    """
    ramp = np.exp(-2j * np.pi * freq * shift)
    nyquist = np.abs(freq) == 0.5
    ramp[nyquist] = np.cos(np.pi * shift)
    return ramp


def _transfer(kernel, shape, scale, squared=False):
    """Half spectrum of the PSF kernel convolved with the detector pixel box.

    A detector pixel ``p`` sums fine pixels ``s p .. s p + s - 1``, so the box
    is the kernel ``g[t] = 1`` for ``t = -(s-1) .. 0``.
    """
    box = np.ones((scale, scale))
    full = signal.convolve2d(kernel, box, mode="full")
    if squared:
        full = full ** 2
    arr = np.zeros(shape)
    ky, kx = full.shape
    arr[:ky, :kx] = full
    # Kernel index (cy, cx) is lag 0: the PSF centre, offset by the box's extent.
    cy = kernel.shape[0] // 2 + scale - 1
    cx = kernel.shape[1] // 2 + scale - 1
    return fft.rfft2(np.roll(arr, (-cy, -cx), axis=(0, 1)), workers=-1)


def _fast_multiple(n, s):
    """Smallest m >= n such that s*m is a fast FFT length."""
    m = int(n)
    while fft.next_fast_len(s * m) != s * m:
        m += 1
    return m


# ------------------------------------------------------------ general geometry
# The overlap weights are computed here because the drizzle package's C kernel
# (``cdrizzle.tdriz``) only accumulates drizzled images and weight maps: it
# never returns the areas of overlap themselves, which a linear operator and
# its exact adjoint need.

#: Elements of the temporary arrays of `pixel_overlaps`: small enough to stay in
#: the CPU's cache (3x faster than 2**20).
_CHUNK_ELEMENTS = 2 ** 16
#: Overlaps at or below this area (fine pixels) are rounding noise, not stored.
_TINY_AREA = 1e-12
#: Relative mismatch of a row's sum and its footprint's area allowed in `inside`.
_INSIDE_RTOL = 1e-9


def pixel_overlaps(corners, fine_shape):
    """Areas of overlap of a frame's pixel footprints with the pixels of a fine grid.

    Exact for any footprint polygon (the clipped-trapezoid sum of drizzle's
    ``boxer``, Fruchter & Hook 2002), vectorised over the footprints; the
    candidates of a footprint are the fine pixels of its bounding box.

    Parameters
    ----------
    corners : array_like, shape (ny + 1, nx + 1, 2)
        ``(x, y)`` on the fine grid of the corners of the pixels of a frame of
        shape ``(ny, nx)``: ``corners[j, i]`` is the frame point
        ``(i - 0.5, j - 0.5)``. Frame pixel ``(r, c)`` is the quadrilateral
        ``corners[r, c], corners[r, c + 1], corners[r + 1, c + 1],
        corners[r + 1, c]``, in either orientation. A footprint with a
        non-finite corner is empty.
    fine_shape : tuple of int
        ``(height, width)`` of the fine grid; fine pixel ``(r, c)`` covers
        ``[c - 0.5, c + 0.5] x [r - 0.5, r + 0.5]``.

    Returns
    -------
    scipy.sparse.csr_matrix, shape (ny * nx, height * width)
        Entry ``[p, k]``: area (in fine pixels) of footprint ``p`` inside fine
        pixel ``k``, both in C order. Parts outside the fine grid are dropped.
    """
    quads = _quads(corners)
    height, width = (int(n) for n in fine_shape)
    quads[~np.isfinite(quads).all(axis=(1, 2))] = -10.0  # empty: outside the grid
    first = np.maximum(np.floor(quads.min(axis=1) + 0.5), 0).astype(np.int64)
    last = np.floor(quads.max(axis=1) + 0.5).astype(np.int64)
    last = np.minimum(last, [width - 1, height - 1])
    bw, bh = (int(n) for n in np.maximum((last - first).max(axis=0, initial=0) + 1, 1))
    n, step = len(quads), max(1, _CHUNK_ELEMENTS // (bw * bh))
    itype = np.int32 if max(n * bw * bh, height * width) < 2 ** 31 else np.int64
    # Filled at an upper bound of the entries, then shrunk in place: no copies.
    data, cols = np.empty(n * bw * bh), np.empty(n * bw * bh, dtype=itype)
    indptr, filled = np.zeros(n + 1, dtype=itype), 0
    for a in range(0, n, step):
        d, c, k = _box_overlaps(quads[a:a + step], first[a:a + step], (bh, bw), (height, width))
        data[filled:filled + len(d)], cols[filled:filled + len(d)] = d, c
        indptr[a + 1:a + 1 + len(k)] = filled + np.cumsum(k)
        filled += len(d)
    data.resize(filled, refcheck=False)
    cols.resize(filled, refcheck=False)
    return sparse.csr_matrix((data, cols, indptr), shape=(n, height * width), copy=False)


def _quads(corners):
    """The footprints ``(ny * nx, 4, 2)`` of the pixels from their corners (float copy)."""
    c = np.array(corners, dtype=float)
    if c.ndim != 3 or c.shape[2] != 2 or min(c.shape[:2]) < 2:
        raise ValueError(f"corners must have shape (ny + 1, nx + 1, 2), got {c.shape}")
    quad = np.stack([c[:-1, :-1], c[:-1, 1:], c[1:, 1:], c[1:, :-1]], axis=2)
    return quad.reshape(-1, 4, 2)


def _quad_areas(quads):
    """Areas of quadrilaterals ``(n, 4, 2)`` (shoelace formula, either orientation)."""
    x, y = quads[..., 0], quads[..., 1]
    return 0.5 * np.abs(np.sum(x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y, axis=1))


def _box_overlaps(quads, first, box, shape):
    """Overlaps of ``m`` footprints with the ``box = (bh, bw)`` fine pixels from ``first``.

    Returns the kept areas, their flat fine indices and the count per
    footprint, in row-major order (footprint, fine row, fine column): sorted
    CSR rows.
    """
    cols = first[:, 0, None] + np.arange(box[1])  # (m, bw)
    rows = first[:, 1, None] + np.arange(box[0])  # (m, bh)
    area = np.zeros((len(quads),) + tuple(box))
    for e in range(4):
        area += _edge_areas(quads[:, e], quads[:, (e + 1) % 4], cols - 0.5, rows - 0.5)
    area = np.abs(area)
    keep = (area > _TINY_AREA) & (rows[:, :, None] < shape[0]) & (cols[:, None, :] < shape[1])
    index = rows[:, :, None] * shape[1] + cols[:, None, :]
    return area[keep], index[keep], keep.sum(axis=(1, 2))


def _edge_areas(p, q, left, bottom):
    """Signed area between edge ``p -> q`` and the bottom of each unit square.

    The edge is clipped to the square's x-range ``[left, left + 1]`` and its
    height above ``bottom`` to ``[0, 1]``; summed over a closed polygon's
    edges this is minus (counter-clockwise) or plus the area of the polygon
    inside the square. ``p, q``: ``(m, 2)``; ``left``: ``(m, bw)``;
    ``bottom``: ``(m, bh)``; result ``(m, bh, bw)``.
    """
    x0, y0, x1, y1 = p[:, 0, None], p[:, 1, None], q[:, 0, None], q[:, 1, None]
    xa = np.clip(x0, left, left + 1.0)
    xb = np.clip(x1, left, left + 1.0)
    width = xb - xa
    dx = x1 - x0
    slope = (y1 - y0) / np.where(dx == 0, 1.0, dx)  # unused where dx == 0 (no width)
    ya, yb = y0 + (xa - x0) * slope, y0 + (xb - x0) * slope
    low = np.minimum(ya, yb)[:, None, :] - bottom[:, :, None]
    return _mean_clipped(low, np.abs(yb - ya)[:, None, :]) * width[:, None, :]


def _mean_clipped(low, span):
    """Mean of ``clip(t, 0, 1)`` over ``t`` in ``[low, low + span]`` (``span`` may be 0).

    Written without differences of nearly equal numbers: an edge that is
    horizontal up to rounding (``span`` ~ 1e-12, from a WCS) must give the
    same area as an exactly horizontal one.
    """
    high = low + span
    below = np.clip(-low, 0.0, span)         # length below 0
    above = np.clip(high - 1.0, 0.0, span)   # length above 1
    mid = 0.5 * (np.clip(low, 0.0, 1.0) + np.clip(high, 0.0, 1.0))
    positive = span > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = ((span - below - above) * mid + above) / np.where(positive, span, 1.0)
    return np.where(positive, mean, np.clip(low, 0.0, 1.0))


class PixmapOperator:
    """Fine sky -> frames of any geometry, and its adjoint (drizzle's square kernel).

    Frame ``i`` is ``y_i = A_i (K * x)``: the fine image convolved with the
    PSF kernel ``K``, then integrated over each frame pixel's footprint
    (``A_i`` from `pixel_overlaps`, exact areas of overlap). The interface is
    that of `ObservationOperator`, but the frames are not padded
    (``shape_padded == shape``); the fine grid is the output grid with ``pad``
    fine pixels around.

    Parameters
    ----------
    corners : sequence of array_like, each (ny + 1, nx + 1, 2)
        Per frame, the ``(x, y)`` of its pixel corners on the output grid
        (unpadded, 0-based pixel centres), as in `pixel_overlaps`.
    out_shape : tuple of int
        Shape of the output (fine) grid.
    scale : int
        Nominal output pixels per input pixel (samples the PSF).
    psf : `~astrosr.psf.PSF` or array or None
        PSF (an array is sampled on the fine grid). None: no blur.
    pad : int, optional
        Fine pixels added on each side; rounded up to a multiple of ``scale``
        (so that ``margin * scale == pad``). Default: the kernel's half-width
        plus 2.
    single : bool
        Float32 matrices and FFTs: faster, relative accuracy ~1e-6.

    Attributes
    ----------
    shape, shape_padded : tuple of int
        Frame shape (the same: frames are not padded).
    fine_shape : tuple of int
        The padded fine grid.
    pad, margin : int
        Offset of the output grid in the fine grid, in fine and input pixels.
    inside : numpy.ndarray of bool, shape (n, ny, nx)
        Frame pixels whose footprint lies entirely inside the padded fine grid;
        the others are truncated and should be ignored.
    real_dtype : numpy dtype
        The precision of the results (float32 with ``single``).

    Notes
    -----
    ``squared=True`` (variance propagation) is an approximation of the
    element-wise square of ``A_i K``: ``A_i (Q * x)`` with ``Q = alpha K**2``
    and ``alpha = sum((B * K)**2) / (scale**2 sum(K**2))``, ``B`` the
    ``scale x scale`` box. For fine-aligned shifts it gives the exact row
    sums and stays within a few percent of `ObservationOperator`'s exact
    squares once the PSF is resolved (Gaussian sigma >= 0.5 input pixel:
    < 5%); a narrower PSF is seen at its mean over the sub-pixel phases. On
    rotated frames the partial overlaps enter unsquared, right for a PSF much
    wider than a fine pixel. Without a PSF it is exact (``A_i`` squared
    element-wise).
    """

    def __init__(self, corners, out_shape, *, scale, psf=None, pad=None, single=False):
        self.scale = s = int(scale)
        self.out_shape = tuple(int(n) for n in out_shape)
        frames = [np.asarray(c, dtype=float) for c in corners]
        if not frames or any(f.shape != frames[0].shape for f in frames):
            raise ValueError("corners must be a non-empty list of arrays of one shape")
        self.shape = self.shape_padded = tuple(n - 1 for n in frames[0].shape[:2])
        kernel = None if psf is None else as_psf(psf, oversampling=s).kernel(s)
        half = 0 if kernel is None else max(kernel.shape) // 2
        self.margin = -(-(half + 2 if pad is None else int(pad)) // s)
        self.pad = self.margin * s
        self.fine_shape = tuple(n + 2 * self.pad for n in self.out_shape)
        self.real_dtype = self._real = np.float32 if single else np.float64
        self._build(frames)
        self._psf = self._psf_sq = None
        if kernel is not None:
            self._psf = _Convolution(kernel, self.fine_shape, self._real)
            self._psf_sq = _Convolution(_squared_kernel(kernel, s), self.fine_shape, self._real)
        self._mats_sq = None

    def _build(self, frames):
        self._mats, inside = [], []
        for c in frames:
            shifted = c + self.pad
            a = pixel_overlaps(shifted, self.fine_shape)
            area = _quad_areas(_quads(shifted))
            rows = np.asarray(a.sum(axis=1)).ravel()
            inside.append((area > 0) & (np.abs(rows - area) <= _INSIDE_RTOL * area))
            self._mats.append(a.astype(self._real, copy=False))
        self.inside = np.stack(inside).reshape((len(frames),) + self.shape)

    def __len__(self):
        return len(self._mats)

    # ------------------------------------------------------------------ grids
    def embed_frames(self, cube, dtype=float):
        """The frames themselves (they are not padded), as an array of ``dtype``.

        ``cube`` is an array ``(n, ny, nx)`` or any iterable of the ``n`` frames.
        """
        out = np.empty((len(self),) + self.shape, dtype=dtype)
        for i, frame in enumerate(cube):
            out[i] = frame
        return out

    def crop_frames(self, cube):
        """The frames themselves (they are not padded): the cube itself, as the other operator's
        crop is a view of it (`astrosr.reconstruct` writes through it)."""
        return np.asarray(cube)

    def embed_image(self, image):
        """Put an image of the output grid into the padded fine grid (zeros around)."""
        image = np.asarray(image, dtype=float)
        out = np.zeros(self.fine_shape)
        o = self.pad
        out[o:o + image.shape[0], o:o + image.shape[1]] = image
        return out

    def crop_image(self, image):
        """The output grid (``out_shape``) of a padded fine image."""
        o = self.pad
        return image[o:o + self.out_shape[0], o:o + self.out_shape[1]]

    # -------------------------------------------------------------- operators
    def forward(self, image, *, squared=False):
        """Frames predicted from a padded fine image: cube ``(n, ny, nx)``.

        With ``squared=True``, the approximate element-wise square of the
        operator (class Notes), to propagate variances.
        """
        x = np.asarray(image, dtype=self._real)
        if x.shape != self.fine_shape:
            raise ValueError(f"image must have shape {self.fine_shape}, got {x.shape}")
        conv = self._psf_sq if squared else self._psf
        flat = (x if conv is None else conv.apply(x)).ravel()
        out = np.empty((len(self),) + self.shape, dtype=self._real)
        for i, a in enumerate(self._matrices(squared)):
            out[i] = (a @ flat).reshape(self.shape)
        return out

    def adjoint(self, cube, *, squared=False):
        """Adjoint of `forward`: cube ``(n, ny, nx)`` -> padded fine image."""
        cube = np.asarray(cube, dtype=self._real).reshape(len(self), -1)
        total = np.zeros(int(np.prod(self.fine_shape)), dtype=self._real)
        for a, y in zip(self._matrices(squared), cube):
            total += a.T @ y
        total = total.reshape(self.fine_shape)
        conv = self._psf_sq if squared else self._psf
        return total if conv is None else conv.adjoint(total)

    def frame_adjoint(self, i, frame):
        """``A_i^T frame`` on the padded fine grid: frame ``i`` drizzled (pixfrac 1,
        not normalised), without the PSF."""
        y = np.asarray(frame, dtype=self._real).ravel()
        return (self._mats[i].T @ y).reshape(self.fine_shape)

    def _matrices(self, squared):
        if not squared or self._psf is not None:
            return self._mats
        if self._mats_sq is None:  # no PSF: the exact squares
            self._mats_sq = [a.multiply(a).tocsr() for a in self._mats]
        return self._mats_sq


def _squared_kernel(kernel, scale):
    """``alpha K**2``, the kernel of the ``squared`` operators (see `PixmapOperator`)."""
    boxed = signal.convolve2d(kernel, np.ones((scale, scale)), mode="full")
    alpha = np.sum(boxed ** 2) / (scale ** 2 * np.sum(kernel ** 2))
    return alpha * kernel ** 2


class _Convolution:
    """Linear convolution ``mode="same"`` with a centred odd kernel on one grid, and its adjoint.

    Zero-padded FFTs of a fast length at least ``shape + kernel - 1``: no wrap.
    """

    def __init__(self, kernel, shape, dtype):
        self.shape = tuple(shape)
        self.half = tuple(n // 2 for n in kernel.shape)
        self.size = tuple(fft.next_fast_len(n + k - 1, real=True)
                          for n, k in zip(self.shape, kernel.shape))
        self.dtype = dtype
        self.otf = fft.rfft2(np.asarray(kernel, dtype=dtype), s=self.size)
        self.otf_conj = np.conj(self.otf)

    def apply(self, image):
        spec = fft.rfft2(image, s=self.size, workers=-1) * self.otf
        full = fft.irfft2(spec, s=self.size, workers=-1, overwrite_x=True)
        (hy, hx), (ny, nx) = self.half, self.shape
        return full[hy:hy + ny, hx:hx + nx]

    def adjoint(self, image):
        (hy, hx), (ny, nx) = self.half, self.shape
        padded = np.zeros(self.size, dtype=self.dtype)
        padded[hy:hy + ny, hx:hx + nx] = image
        spec = fft.rfft2(padded, workers=-1) * self.otf_conj
        return fft.irfft2(spec, s=self.size, workers=-1, overwrite_x=True)[:ny, :nx]
