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
"""

import numpy as np
from scipy import fft, signal

from .psf import as_psf

__all__ = ["ObservationOperator"]


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
        Compute in single precision (complex64): twice as fast, relative
        accuracy ~1e-6, enough for iterative reconstruction.

    Attributes
    ----------
    shape_padded : tuple of int
        Coarse shape of the padded grid; the fine grid is ``scale`` times it.
    margin : int
        Offset of the frames (input pixels) and of the output (``scale *
        margin`` fine pixels) in the padded grids.
    """

    def __init__(self, shape, shifts, *, scale, psf=None, margin=None, single=False):
        self.scale = s = int(scale)
        self.shape = tuple(int(n) for n in shape)
        self.shifts = np.atleast_2d(np.asarray(shifts, dtype=float))
        kernel = np.ones((1, 1)) if psf is None else as_psf(psf, oversampling=s).kernel(s)
        if margin is None:
            reach = max(kernel.shape) // 2 / s
            margin = int(np.ceil(np.abs(self.shifts).max() + reach)) + 2
        self.margin = int(margin)
        self.shape_padded = tuple(_fast_multiple(n + 2 * self.margin, s) for n in self.shape)
        self.fine_shape = tuple(s * n for n in self.shape_padded)
        self._real = np.float32 if single else np.float64
        ctype = np.complex64 if single else np.complex128
        self._otf = _transfer(kernel, self.fine_shape, s).astype(ctype)
        self._otf_sq = _transfer(kernel, self.fine_shape, s, squared=True).astype(ctype)
        self._otf_conj, self._otf_sq_conj = np.conj(self._otf), np.conj(self._otf_sq)
        self._ramps = [tuple(r.astype(ctype) for r in self._phase_ramps(dx, dy))
                       for dx, dy in self.shifts]

    def __len__(self):
        return len(self.shifts)

    # ------------------------------------------------------------------ grids
    def embed_frames(self, cube):
        """Put a cube ``(n, ny, nx)`` of frame values into the padded coarse grid (zeros around)."""
        out = np.zeros((len(cube),) + self.shape_padded)
        m = self.margin
        out[:, m:m + self.shape[0], m:m + self.shape[1]] = cube
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
        spec = fft.fft2(np.asarray(image, dtype=self._real), workers=-1)
        spec *= self._otf_sq if squared else self._otf
        folded = np.empty((len(self),) + self.shape_padded, dtype=spec.dtype)
        for i, (ry, rx) in enumerate(self._ramps):
            folded[i] = self._fold(spec, ry, rx)
        return fft.ifft2(folded, axes=(-2, -1), workers=-1).real

    def adjoint(self, cube, *, squared=False):
        """Adjoint of `forward`: padded coarse cube -> padded fine image."""
        s = self.scale
        my, mx = self.shape_padded
        specs = fft.fft2(np.asarray(cube, dtype=self._real), axes=(-2, -1), workers=-1)
        # Replicating the coarse spectrum over its s x s aliases in the fine one
        # is the adjoint of folding them: fine index (a*my + y, b*mx + x) takes
        # coarse (y, x). Broadcast on a 4-D view: no tiled copies (2x faster).
        total = np.zeros((s, my, s, mx), dtype=self._otf.dtype)
        for spec, (ry, rx) in zip(specs, self._ramps):
            rows = spec[None, :, None, :] * np.conj(ry).reshape(s, my, 1, 1)
            total += rows * np.conj(rx).reshape(1, 1, s, mx)
        total = total.reshape(self.fine_shape)
        total *= self._otf_sq_conj if squared else self._otf_conj
        return fft.ifft2(total, workers=-1, overwrite_x=True).real

    def _fold(self, spec, ry, rx):
        s = self.scale
        my, mx = self.shape_padded
        half = (spec * rx[None, :]).reshape(spec.shape[0], s, mx).sum(axis=1)
        return (half * ry[:, None]).reshape(s, my, mx).sum(axis=0) / s ** 2

    def _phase_ramps(self, dx, dy):
        # A shift of s*d fine pixels, with signed frequencies so that
        # fractional shifts are band-limited, not wrapped.
        ny, nx = self.fine_shape
        ry = np.exp(-2j * np.pi * fft.fftfreq(ny) * self.scale * dy)
        rx = np.exp(-2j * np.pi * fft.fftfreq(nx) * self.scale * dx)
        return ry, rx


def _transfer(kernel, shape, scale, squared=False):
    """Transfer function of the PSF kernel convolved with the detector pixel box.

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
    return fft.fft2(np.roll(arr, (-cy, -cx), axis=(0, 1)), workers=-1)


def _fast_multiple(n, s):
    """Smallest m >= n such that s*m is a fast FFT length."""
    m = int(n)
    while fft.next_fast_len(s * m) != s * m:
        m += 1
    return m
