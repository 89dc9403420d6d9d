"""`FrameStack`: the frames of a stack, parsed once.

Every public function that takes frames (`astrosr.register_stack`,
`astrosr.fuse`, `astrosr.MultiFrameSR`, the PSF estimators) turns what the
user gave into one `FrameStack` at its top (reproject's ``parse_input_data``,
ccdproc's ``Combiner``: validate a collection once), and works on its cubes.
Given a `FrameStack`, they use it as it is: `MultiFrameSR.run` parses its
input once for all its steps.
"""

import numpy as np
from astropy.nddata import NDData
from astropy.wcs import WCS

from .nddata import as_frames, frame_arrays, white_noise_variance

__all__ = ["FrameStack"]


class FrameStack:
    """Frames with their cubes of data, variance and good pixels, unit, WCS and geometry.

    Parameters
    ----------
    frames : list of CCDData/NDData/paths, glob pattern, 3-D array, or FrameStack
        The stack (see `astrosr.nddata.as_frames`). An NDData may carry any
        WCS with the APE-14 interface (gwcs, a sliced WCS): it is kept in
        `wcs`, beside the frame.
    hdu : int or str, optional
        HDU to read when ``frames`` are paths.
    unit : str or `~astropy.units.Unit`, optional
        Unit of the frames (see `astrosr.nddata.as_frames`).
    geometry : table, optional
        Each frame's geometry (``dx, dy`` and optionally ``rotation``,
        ``scale``; `astrosr.geometry.geometry_table`), e.g. from
        `astrosr.register_stack`.

    Attributes
    ----------
    ccds : list of `~astropy.nddata.CCDData`
        The frames (native float64 data).
    data, var, good : ndarray ``(n, ny, nx)``
        Data (0 at bad pixels), variance (``inf`` at bad pixels; estimated
        from pixel differences for a frame without uncertainty) and the good
        pixels (`astrosr.nddata.frame_arrays`, the one definition of a good
        pixel, less any rejected pixels).
    var_given : ndarray of bool ``(n,)``
        Whether each frame had an uncertainty.
    unit : `~astropy.units.Unit`
    wcs : list
        Each frame's WCS (a FITS WCS or any APE-14 WCS), or None.
    rejected : ndarray of bool ``(n, ny, nx)``
        Pixels flagged as outliers by an earlier step (no longer good).
    geometry : `~astropy.table.QTable` or None
    """

    def __init__(self, frames, *, hdu=None, unit=None, geometry=None):
        items, wcs = _split_wcs(frames)
        self.ccds = as_frames(items, hdu=hdu, unit=unit)
        self.wcs = [c.wcs for c in self.ccds] if wcs is None else \
            [w if w is not None else c.wcs for w, c in zip(wcs, self.ccds)]
        arrays = [frame_arrays(c) for c in self.ccds]
        self.data = np.array([a[0] for a in arrays])
        self.good = np.array([a[2] for a in arrays])
        for i, g in enumerate(self.good):
            if not g.any():
                raise ValueError(f"frames[{i}] has no usable pixel (all masked, NaN or inf): "
                                 "drop it from frames and shifts")
        _check_not_constant(self.data, self.good)
        self.var_given = np.array([a[1] is not None for a in arrays])
        self.var = np.array([v if v is not None else np.where(g, _estimated_variance(d, g), np.inf)
                             for d, v, g in arrays])
        self.unit = self.ccds[0].unit
        self.rejected = np.zeros(self.data.shape, dtype=bool)
        self.geometry = geometry

    @classmethod
    def parse(cls, frames, *, hdu=None, unit=None):
        """``frames`` as a FrameStack: itself when it already is one."""
        if isinstance(frames, cls):
            return frames
        return cls(frames, hdu=hdu, unit=unit)

    def __len__(self):
        return len(self.ccds)

    def __getitem__(self, index):
        return self.ccds[index]

    def __iter__(self):
        return iter(self.ccds)

    def __repr__(self):
        return f"<FrameStack: {len(self)} frames of {self.shape[1]}x{self.shape[0]} [{self.unit}]>"

    @property
    def shape(self):
        """``(ny, nx)`` of each frame."""
        return self.data.shape[1:]

    @property
    def var_estimated(self):
        """True when any frame's variance was estimated (it had no uncertainty)."""
        return not bool(np.all(self.var_given))

    def background_variance(self):
        """Per-frame inverse-variance weights: the median variance of the good pixels.

        A frame without a good pixel (held out, or all off the output grid) has an
        infinite variance: no weight.
        """
        return np.array([np.median(v[g]) if g.any() else np.inf
                         for v, g in zip(self.var, self.good)])

    def with_rejected(self, rejected):
        """A stack sharing these frames, with the pixels ``rejected`` no longer good."""
        rejected = np.asarray(rejected, dtype=bool)
        if rejected.shape != self.data.shape:
            raise ValueError(f"rejected must have the stack's shape {self.data.shape}, "
                             f"got {rejected.shape}")
        new = self.restricted(~rejected)
        new.rejected = self.rejected | rejected
        return new

    def restricted(self, keep):
        """A stack sharing these frames, good only where ``keep`` (n, ny, nx) is also True."""
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != self.data.shape:
            raise ValueError(f"the pixel selection must have the stack's shape {self.data.shape}, "
                             f"got {keep.shape}")
        new = self._copy()
        new.good = self.good & keep
        new.data = np.where(new.good, self.data, 0.0)
        new.var = np.where(new.good, self.var, np.inf)
        return new

    def _copy(self):
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new


def _split_wcs(frames):
    """``frames`` with APE-14 WCS taken off their NDData (CCDData takes FITS WCS only), and those WCS.

    The WCS list is None when no frame carries a non-FITS WCS.
    """
    if isinstance(frames, FrameStack):
        return frames.ccds, frames.wcs
    if isinstance(frames, (np.ndarray, str)) or not hasattr(frames, "__iter__"):
        return frames, None
    items, wcs = [], []
    for f in frames:
        w = getattr(f, "wcs", None) if isinstance(f, NDData) else None
        if w is not None and not isinstance(w, WCS):
            f = NDData(f.data, unit=f.unit, uncertainty=f.uncertainty, mask=f.mask, meta=f.meta)
        else:
            w = None
        items.append(f)
        wcs.append(w)
    return items, (wcs if any(w is not None for w in wcs) else None)


def _check_not_constant(data, good):
    """Refuse a constant frame (a dead read-out, all zeros) among frames that show the sky: it
    holds no image, and with no noise of its own it would outweigh all the others."""
    constant = [i for i, (d, g) in enumerate(zip(data, good)) if np.ptp(d[g]) == 0]
    if constant and len(constant) < len(data):
        i = constant[0]
        value = data[i][good[i]][0]
        raise ValueError(f"frames[{i}] is constant (every usable pixel is {value:g}): it holds "
                         "no image of the sky; drop it from frames and shifts")


def _estimated_variance(data, good):
    """White-noise variance of a frame without uncertainty; 1 (equal weights) if it has no noise."""
    var = white_noise_variance(data, good)
    return var if var > 0 else 1.0
