"""Per-frame geometry: where the pixels of each frame of a stack lie on the output grid.

A frame's geometry maps the pixels of the **reference** (the frame whose
shift is zero) to its own pixels. DESIGN.md's convention: a source at
``p = (x, y)`` of the reference appears at ``s R(rotation) (p - c) + c + (dx, dy)``
in frame i, about the frame centre ``c = ((nx-1)/2, (ny-1)/2)`` (0-based pixel
centres, ``R`` counter-clockwise, ``rotation`` in degrees, ``s`` the column
``scale``). A pure shift has rotation 0 and scale 1. The geometry ``"wcs"``
maps each frame pixel through its own WCS to the sky and back through the
reference's (any APE-14 WCS: SIP, TPV, TPD/DSS plates, lookup tables).

The output grid (`OutputGrid`) is by default the reference's grid ``scale``
times finer (0-based pixel centre ``p`` at ``scale*(p + 0.5) - 0.5``), or any
WCS and shape (``output_wcs=``, ``shape_out=``, as reproject's output
projection). `pixel_map` and `corner_map` compose the two: the output
coordinates of each frame pixel's centre (the drizzle package's ``pixmap``)
or of its corners (its footprint, for the exact overlaps of
`astrosr.forward.PixmapOperator`).
"""

import numpy as np
from astropy import units as u
from astropy.table import QTable

from .nddata import rescale_wcs, shift_array

__all__ = ["low_level", "Similarity", "WCSTransform", "Corrected", "OutputGrid", "Placement",
           "geometry_table", "frame_transforms", "pixel_map", "corner_map", "footprint_areas",
           "fitted_wcs", "local_area", "carries_wcs", "frame_centre",
           "GEOMETRY_COLUMNS", "SHIFT_TOLERANCE"]

#: Columns of a geometry table beside ``frame``: shifts, and rotation and scale where present.
GEOMETRY_COLUMNS = ("dx", "dy", "rotation", "scale")


class Similarity:
    """Reference pixel -> frame pixel: ``q = s R(rotation) (p - c) + c + (dx, dy)``.

    Parameters
    ----------
    dx, dy : float
        Shift in the frame's input pixels.
    rotation : float
        Counter-clockwise rotation in degrees.
    scale : float
        Frame pixels per reference pixel (1 for a rigid transform).
    center : tuple of float
        ``c = (cx, cy)``, the frame centre ``((nx-1)/2, (ny-1)/2)``.
    """

    def __init__(self, dx, dy, rotation=0.0, scale=1.0, *, center=(0.0, 0.0)):
        self.dx, self.dy = float(dx), float(dy)
        self.rotation, self.scale = float(rotation), float(scale)
        self.center = tuple(float(c) for c in center)
        t = np.deg2rad(self.rotation)
        self.matrix = self.scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        self._inverse = np.linalg.inv(self.matrix)

    @property
    def is_shift(self):
        """True when the transform is a pure translation."""
        return self.rotation == 0.0 and self.scale == 1.0

    def reference_to_frame(self, x, y):
        """Frame pixel coordinates of reference pixel coordinates ``(x, y)``."""
        cx, cy = self.center
        u_, v_ = np.asarray(x, float) - cx, np.asarray(y, float) - cy
        m = self.matrix
        return m[0, 0] * u_ + m[0, 1] * v_ + cx + self.dx, m[1, 0] * u_ + m[1, 1] * v_ + cy + self.dy

    def frame_to_reference(self, x, y):
        """Reference pixel coordinates of frame pixel coordinates ``(x, y)``."""
        cx, cy = self.center
        u_, v_ = np.asarray(x, float) - self.dx - cx, np.asarray(y, float) - self.dy - cy
        m = self._inverse
        return m[0, 0] * u_ + m[0, 1] * v_ + cx, m[1, 0] * u_ + m[1, 1] * v_ + cy

    def __repr__(self):
        return (f"Similarity(dx={self.dx:.4g}, dy={self.dy:.4g}, rotation={self.rotation:.4g}, "
                f"scale={self.scale:.6g})")


class WCSTransform:
    """Frame pixel -> sky (the frame's WCS) -> reference pixel (the reference's WCS).

    Any WCS with the APE-14 interface (``pixel_to_world_values``,
    ``world_to_pixel_values``): FITS WCS with its distortions (SIP, TPV,
    TPD, lookup tables), gwcs, sliced WCS.
    """

    is_shift = False

    def __init__(self, frame_wcs, reference_wcs):
        self.frame_wcs, self.reference_wcs = low_level(frame_wcs), low_level(reference_wcs)

    def frame_to_reference(self, x, y):
        """Reference pixel coordinates of frame pixel coordinates ``(x, y)``."""
        world = self.frame_wcs.pixel_to_world_values(np.asarray(x, float), np.asarray(y, float))
        return self.reference_wcs.world_to_pixel_values(*world)

    def reference_to_frame(self, x, y):
        """Frame pixel coordinates of reference pixel coordinates ``(x, y)``."""
        world = self.reference_wcs.pixel_to_world_values(np.asarray(x, float),
                                                         np.asarray(y, float))
        return self.frame_wcs.world_to_pixel_values(*world)

    def __repr__(self):
        return "WCSTransform(frame WCS -> reference WCS)"


class Corrected:
    """A transform followed by a small `Similarity` correction in the reference's pixel plane.

    Frame pixel ``q`` lies at ``correction.frame_to_reference(*transform.frame_to_reference(q))``
    of the reference: a WCS (``transform``, a `WCSTransform`) refined by
    registration (``use_wcs=True`` of `astrosr.register_stack`).
    """

    is_shift = False

    def __init__(self, transform, correction):
        self.transform, self.correction = transform, correction

    def frame_to_reference(self, x, y):
        """Reference pixel coordinates of frame pixel coordinates ``(x, y)``."""
        return self.correction.frame_to_reference(*self.transform.frame_to_reference(x, y))

    def reference_to_frame(self, x, y):
        """Frame pixel coordinates of reference pixel coordinates ``(x, y)``."""
        return self.transform.reference_to_frame(*self.correction.reference_to_frame(x, y))

    def __repr__(self):
        return f"Corrected({self.transform!r}, {self.correction!r})"


def frame_centre(shape):
    """The centre of rotation ``c = ((nx-1)/2, (ny-1)/2)`` of a frame of ``shape = (ny, nx)``."""
    ny, nx = shape[-2:]
    return (nx - 1) / 2.0, (ny - 1) / 2.0


def low_level(wcs):
    """The APE-14 low-level interface of a WCS (a FITS WCS is its own; NDData wraps others)."""
    return getattr(wcs, "low_level_wcs", wcs)


def geometry_table(geometry, n):
    """A geometry as a `~astropy.table.QTable`: ``frame, dx, dy`` (+ ``rotation``, ``scale``).

    Parameters
    ----------
    geometry : table with ``dx``, ``dy`` (and optionally ``rotation`` in deg, ``scale``), or (n, 2) array
        As returned by `astrosr.register_stack`; a plain ``(n, 2)`` array or
        list of ``(dx, dy)`` is a pure shift.
    n : int
        Number of frames.

    Raises
    ------
    ValueError
        Wrong shape or row count, missing columns, non-finite or masked
        values, or a scale that is not positive.
    TypeError
        Shifts that are not numbers (see `astrosr.nddata.shift_array`).
    astropy.units.UnitsError
        A column whose unit does not convert (``dx``, ``dy``: pixels;
        ``rotation``: an angle; ``scale``: dimensionless). A plain
        `~astropy.table.Table` column's unit counts as a Quantity's.
    """
    shifts = shift_array(geometry, n)
    table = QTable({"frame": np.arange(n), "dx": shifts[:, 0] * u.pix, "dy": shifts[:, 1] * u.pix})
    if hasattr(geometry, "colnames"):
        for name, unit in (("rotation", u.deg), ("scale", u.dimensionless_unscaled)):
            if name in geometry.colnames:
                table[name] = _column(geometry[name], unit, name)
    if "scale" in table.colnames and np.any(table["scale"] <= 0):
        raise ValueError("geometry column 'scale' must be > 0 (frame pixels per reference pixel)")
    return table


def _column(col, unit, name):
    if np.any(getattr(col, "mask", False)):
        raise ValueError(f"geometry column {name!r} has masked values: give every frame one")
    # A Quantity, or a Table column with a unit (a plain Table keeps it beside the values).
    has_unit = getattr(col, "unit", None) is not None
    try:
        values = u.Quantity(col).to(unit) if has_unit else np.asarray(col, float) * unit
    except u.UnitsError:
        raise u.UnitsError(f"geometry column {name!r} must be in {unit} (or plain numbers), "
                           f"got unit {col.unit}") from None
    if not np.all(np.isfinite(values)):
        raise ValueError(f"geometry column {name!r} contains NaN or inf")
    return values


def frame_transforms(geometry, shape, wcs=None, *, reference=0):
    """One transform (reference pixel <-> frame pixel) per frame.

    Parameters
    ----------
    geometry : table, (n, 2) array, or ``"wcs"``
        See `geometry_table`; ``"wcs"`` maps through each frame's WCS (a frame
        whose WCS differs from the reference's by a translation only gets a
        `Similarity` shift), as does a table with a column ``wcs`` (the
        corrected WCS of ``register_stack(..., use_wcs=True)``) through those.
    shape : tuple of int
        ``(ny, nx)`` of the frames (for the centre ``c``).
    wcs : list, optional
        Each frame's WCS (required for ``"wcs"``).
    reference : int
        ``"wcs"``: index of the reference frame.

    Returns
    -------
    list of `Similarity` or `WCSTransform`
    """
    if isinstance(geometry, str):
        if geometry != "wcs":
            raise ValueError(f"geometry must be a table, an (n, 2) array of shifts or 'wcs', "
                             f"got {geometry!r}")
        return [_as_shift(t, shape) for t in _wcs_transforms(wcs, reference)]
    if carries_wcs(geometry):
        return [_as_shift(t, shape) for t in _wcs_transforms(list(geometry["wcs"]), reference)]
    n = len(wcs) if wcs is not None else len(geometry)
    table = geometry_table(geometry, n)
    center = frame_centre(shape)
    rot = table["rotation"].to_value(u.deg) if "rotation" in table.colnames else np.zeros(n)
    scl = table["scale"].to_value(u.one) if "scale" in table.colnames else np.ones(n)
    return [Similarity(dx, dy, r, s, center=center)
            for dx, dy, r, s in zip(table["dx"].to_value(u.pix), table["dy"].to_value(u.pix),
                                    rot, scl)]


def carries_wcs(geometry):
    """True for a geometry table with a ``wcs`` column (each frame's corrected WCS)."""
    return hasattr(geometry, "colnames") and "wcs" in geometry.colnames


def _wcs_transforms(wcs, reference):
    missing = "all" if wcs is None else [i for i, w in enumerate(wcs) if w is None]
    if missing:
        raise ValueError(f"geometry='wcs' needs a WCS on every frame; frames without one: "
                         f"{missing}. Register the stack instead (astrosr.register_stack)")
    if not 0 <= reference < len(wcs):
        raise ValueError(f"reference must index a frame (0..{len(wcs) - 1}), got {reference}")
    return [WCSTransform(w, wcs[reference]) for w in wcs]


#: A WCS geometry within this many pixels of a translation everywhere on the frame is one.
SHIFT_TOLERANCE = 1e-5


def _as_shift(transform, shape, points=7):
    """A `WCSTransform` that is a translation everywhere on the frame, as a `Similarity` shift.

    Frames that differ only by a pointing offset (even on a distorted plate,
    where the distortion is fixed to the detector) then take the exact fast
    paths of pure shifts. Checked on ``points x points`` positions across the
    frame, to `SHIFT_TOLERANCE` pixels.
    """
    ny, nx = shape
    y, x = np.meshgrid(np.linspace(-0.5, ny - 0.5, points), np.linspace(-0.5, nx - 0.5, points),
                       indexing="ij")
    rx, ry = transform.frame_to_reference(x.ravel(), y.ravel())
    dx, dy = x.ravel() - rx, y.ravel() - ry
    if not (np.all(np.isfinite(dx)) and np.all(np.isfinite(dy))):
        return transform
    if np.ptp(dx) > 2 * SHIFT_TOLERANCE or np.ptp(dy) > 2 * SHIFT_TOLERANCE:
        return transform
    return Similarity(np.mean(dx), np.mean(dy), center=frame_centre(shape))


class OutputGrid:
    """The output pixels, and the map from reference pixels onto them.

    Parameters
    ----------
    reference_shape : tuple of int
        ``(ny, nx)`` of the reference frame.
    scale : float or None
        Output pixels per input pixel (the default grid's sampling). None
        with ``output_wcs``: that grid's own sampling, the square root of its
        pixel area in reference pixels at the reference's centre.
    reference_wcs : WCS, optional
        The reference frame's WCS (APE-14); required with ``output_wcs``.
    output_wcs : WCS, optional
        Any output projection (an APE-14 celestial WCS, e.g. north up at a
        chosen pixel scale). Default: the reference's grid ``scale`` times finer.
    shape_out : tuple of int, optional
        ``(ny, nx)`` of the output; required with ``output_wcs`` unless it
        has a ``pixel_shape``.
    """

    def __init__(self, reference_shape, scale, *, reference_wcs=None, output_wcs=None,
                 shape_out=None):
        self._reference_shape = tuple(int(n) for n in reference_shape)
        self.reference_wcs, self.output_wcs = reference_wcs, output_wcs
        if output_wcs is None:
            self.scale = scale
            self.shape = self._default_shape() if shape_out is None else _shape(shape_out)
            return
        if reference_wcs is None:
            raise ValueError("output_wcs needs frames with a WCS (the reference frame has none): "
                             "add one, or leave output_wcs out for the reference's grid")
        if shape_out is None:
            if getattr(output_wcs, "pixel_shape", None) is None:
                raise ValueError("shape_out is required with an output_wcs without pixel_shape")
            shape_out = tuple(output_wcs.pixel_shape)[::-1]
        self.shape = _shape(shape_out)
        self.scale = _sampling(self.pixel_area()) if scale is None else scale

    def _default_shape(self):
        return tuple(int(round(n * self.scale)) for n in self._reference_shape)

    @property
    def is_default(self):
        """True for the reference's own grid, ``scale`` times finer, of the default shape."""
        return self.output_wcs is None and self.shape == self._default_shape()

    def from_reference(self, x, y):
        """Output pixel coordinates of reference pixel coordinates ``(x, y)``."""
        x, y = np.asarray(x, float), np.asarray(y, float)
        if self.output_wcs is None:
            return self.scale * (x + 0.5) - 0.5, self.scale * (y + 0.5) - 0.5
        world = low_level(self.reference_wcs).pixel_to_world_values(x, y)
        return low_level(self.output_wcs).world_to_pixel_values(*world)

    def fits_wcs(self):
        """The output's FITS WCS (CCDData holds no other), or None without a reference WCS.

        The reference's FITS WCS rescaled (`astrosr.nddata.rescale_wcs`), the
        ``output_wcs`` given, or a TAN-SIP WCS fitted to either where it is
        another APE-14 WCS (`fitted_wcs`).
        """
        from astropy.wcs import WCS

        if self.output_wcs is not None:
            if isinstance(self.output_wcs, WCS):
                return self.output_wcs.deepcopy()
            return fitted_wcs(self.output_wcs, lambda x, y: (x, y), self.shape)
        ref, s = self.reference_wcs, self.scale
        if ref is None or isinstance(ref, WCS):
            return rescale_wcs(ref, s)
        return fitted_wcs(ref, lambda x, y: ((x + 0.5) / s - 0.5, (y + 0.5) / s - 0.5), self.shape)

    def pixel_area(self):
        """Output pixels per reference pixel (area), at the reference's centre."""
        if self.output_wcs is None:
            return float(self.scale) ** 2
        return local_area(self.from_reference, self.reference_centre)

    @property
    def reference_centre(self):
        """Centre of the reference frame ``(x, y)``, where pixel areas are compared."""
        return frame_centre(self._reference_shape)


def _sampling(area):
    """Linear sampling of a grid from its pixel area; an integer when within 1e-6 of one."""
    s = float(np.sqrt(area))
    return float(round(s)) if abs(s - round(s)) < 1e-6 else s


def _shape(shape_out):
    shape = tuple(int(n) for n in shape_out)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape_out must be (ny, nx) with positive sizes, got {shape_out}")
    return shape


def local_area(mapping, point, h=0.5):
    """Area scale of ``mapping`` at ``point``: the determinant of its Jacobian."""
    x, y = point
    xs, ys = mapping(np.array([x - h, x + h, x, x]), np.array([y, y, y - h, y + h]))
    jac = np.array([[xs[1] - xs[0], xs[3] - xs[2]], [ys[1] - ys[0], ys[3] - ys[2]]]) / (2 * h)
    return float(abs(np.linalg.det(jac)))


def _to_output(transform, grid, x, y):
    return grid.from_reference(*transform.frame_to_reference(x, y))


def pixel_map(transform, shape, grid):
    """Output coordinates of a frame's pixel centres: ``(ny, nx, 2)``, ``[..., 0]`` = x.

    The ``pixmap`` of the ``drizzle`` package.
    """
    y, x = np.indices(shape, dtype=float)
    ox, oy = _to_output(transform, grid, x, y)
    return np.dstack([ox, oy])


def corner_map(transform, shape, grid):
    """Output coordinates of a frame's pixel corners: ``(ny+1, nx+1, 2)``.

    Corner ``[j, i]`` is frame point ``(i - 0.5, j - 0.5)``: the footprint
    of pixel ``(r, c)`` is the quadrilateral of corners ``[r, c]``,
    ``[r, c+1]``, ``[r+1, c+1]``, ``[r+1, c]``. Each corner is mapped exactly
    (distortion included), not interpolated from the centres.
    """
    y, x = np.indices((shape[0] + 1, shape[1] + 1), dtype=float) - 0.5
    ox, oy = _to_output(transform, grid, x, y)
    return np.dstack([ox, oy])


def footprint_areas(corners):
    """Area (output pixels) of each frame pixel's footprint, from `corner_map`: ``(ny, nx)``."""
    a, b = corners[:-1, :-1], corners[:-1, 1:]
    c, d = corners[1:, 1:], corners[1:, :-1]
    # Shoelace formula over the quadrilateral a-b-c-d.
    twice = sum(p[..., 0] * q[..., 1] - q[..., 0] * p[..., 1]
                for p, q in ((a, b), (b, c), (c, d), (d, a)))
    return np.abs(twice) / 2.0


class Placement:
    """Where the pixels of every frame land on the output grid.

    Pure shifts onto the reference's own grid take the fast paths (separable
    drizzle, the FFT observation operator); any other geometry or output
    grid goes through each frame's pixel map (the drizzle package) and
    pixel footprints (`astrosr.forward.PixmapOperator`).

    Parameters
    ----------
    transforms : list of `Similarity` or `WCSTransform`
        Reference pixel <-> frame pixel, one per frame (`frame_transforms`).
    shape : tuple of int
        ``(ny, nx)`` of the frames.
    grid : `OutputGrid`
    """

    def __init__(self, transforms, shape, grid):
        self.transforms, self.shape, self.grid = list(transforms), tuple(shape), grid
        self.is_shift = grid.is_default and all(t.is_shift for t in self.transforms)
        self.shifts = (np.array([(t.dx, t.dy) for t in self.transforms])
                       if all(isinstance(t, Similarity) for t in self.transforms) else None)
        self._pixmaps = self._corners = None

    def __len__(self):
        return len(self.transforms)

    @property
    def out_shape(self):
        """``(ny, nx)`` of the output grid."""
        return self.grid.shape

    def pixmaps(self):
        """Each frame's `pixel_map` on the output grid."""
        if self._pixmaps is None:
            self._pixmaps = [pixel_map(t, self.shape, self.grid) for t in self.transforms]
        return self._pixmaps

    def corners(self):
        """Each frame's `corner_map` on the output grid."""
        if self._corners is None:
            self._corners = [corner_map(t, self.shape, self.grid) for t in self.transforms]
        return self._corners

    def areas(self):
        """Output pixels covered by each input pixel ``(n, ny, nx)`` (``scale**2`` for shifts)."""
        if self.is_shift:
            return np.full((len(self),) + self.shape, float(self.grid.scale) ** 2)
        return np.array([footprint_areas(c) for c in self.corners()])

    def snapped(self):
        """Shifts rounded to whole output pixels (shift-and-add); other geometries as they are."""
        if not self.is_shift:
            return self
        s = self.grid.scale
        snapped = [Similarity(round(t.dx * s) / s, round(t.dy * s) / s, center=t.center)
                   for t in self.transforms]
        return Placement(snapped, self.shape, self.grid)

    def strip(self, first, stop):
        """The frame rows that land on reference rows ``first:stop``, and their placement there.

        For pure shifts only: returns ``(rows, placement)``, ``rows`` a slice
        of the frames' rows (those that can reach the strip, one pixel of
        slack on each side) and ``placement`` their shifts onto an output
        grid of the strip (``scale`` times reference rows ``first:stop``,
        every column), so that work on the output can go strip by strip.
        """
        if not self.is_shift:
            raise ValueError("strip() needs pure shifts onto the reference's grid")
        dy = self.shifts[:, 1]
        lo = max(int(np.floor(first + dy.min())) - 1, 0)
        hi = min(int(np.ceil(stop + dy.max())) + 2, self.shape[0])
        moved = [Similarity(t.dx, t.dy + first - lo, center=t.center) for t in self.transforms]
        grid = OutputGrid((stop - first, self.shape[1]), self.grid.scale)
        return slice(lo, max(hi, lo)), Placement(moved, (max(hi, lo) - lo, self.shape[1]), grid)

    def drizzle(self, data, weight, var, pixfrac):
        """Square-kernel drizzle: ``(mean, variance, weight)`` (`astrosr.resample`)."""
        from .resample import drizzle_pixmaps, drizzle_shifts

        if self.is_shift:
            return drizzle_shifts(data, weight, var, self.shifts, self.out_shape, self.grid.scale,
                                  pixfrac)
        return drizzle_pixmaps(data, weight, var, self.pixmaps(), self.out_shape, pixfrac)

    def operator(self, psf=None, *, scale, single=True):
        """The observation operator (PSF, geometry, pixel integration) onto this grid."""
        from .forward import ObservationOperator, PixmapOperator

        if self.is_shift:
            return ObservationOperator(self.shape, self.shifts, scale=scale, psf=psf,
                                       single=single)
        return PixmapOperator(self.corners(), self.out_shape, scale=scale, psf=psf, single=single)


def fitted_wcs(wcs, to_wcs_pixels, shape, *, sip_degree=3, points=15):
    """A FITS (TAN-SIP) WCS of a grid whose pixel ``(x, y)`` is pixel ``to_wcs_pixels(x, y)`` of ``wcs``.

    Used where a result needs a FITS WCS (CCDData holds no other) but the
    frames carry another APE-14 WCS, or where the reference grid is a
    rotated frame's: ``points x points`` positions across the grid are
    mapped to the sky and fitted (`astropy.wcs.utils.fit_wcs_from_points`).
    """
    from astropy.wcs.utils import fit_wcs_from_points
    from astropy.wcs.wcsapi import HighLevelWCSWrapper

    high = wcs if hasattr(wcs, "pixel_to_world") else HighLevelWCSWrapper(wcs)
    ny, nx = shape
    y, x = np.meshgrid(np.linspace(-0.5, ny - 0.5, points), np.linspace(-0.5, nx - 0.5, points),
                       indexing="ij")
    x, y = x.ravel(), y.ravel()
    sky = high.pixel_to_world(*to_wcs_pixels(x, y))
    fitted = fit_wcs_from_points((x, y), sky, projection="TAN", sip_degree=sip_degree)
    fitted.pixel_shape = (nx, ny)
    return fitted
