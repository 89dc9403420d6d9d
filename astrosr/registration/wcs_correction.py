"""Corrected WCS of a frame: its WCS with the registration's correction folded in.

Registration with ``use_wcs=True`` starts from the frames' WCS: frame pixel
``q`` lies at reference pixel ``W(q)``, through the frame's WCS to the sky
and back through the reference's (`wcs_pixel_map`). It then measures a small
**correction** ``K``, an `astrosr.geometry.Similarity` in the reference's pixel
plane, so that the true reference position of ``q`` is
``p_true(q) = K.frame_to_reference(*W(q))``. `corrected_wcs` gives, as
TweakReg does, a WCS ``w_new`` of the frame with
``w_new.pixel_to_world(q) == reference_wcs.pixel_to_world(p_true(q))``.

For a celestial 2-D `~astropy.wcs.WCS` only the linear part changes, as in
TweakReg: CRPIX and the distortion (SIP, lookup tables, TPV/TPD) are kept,
the tangent point CRVAL moves and the linear matrix (``CD``, or ``PC`` with
``CDELT`` unchanged) is rotated and scaled: four parameters, fitted by least
squares (`scipy.optimize.least_squares`) on a 15 x 15 grid across the frame,
in reference pixels. The rotation/scale act on the frame's focal plane as
the correction's similarity, carried through the mean Jacobian of ``W``
(so frames whose pixels are skewed or flipped relative to the reference's
are handled). For an undistorted TAN WCS this is exact to ~1e-8 px (poles
included) for corrections of a few pixels, < 1 deg, < 3 % in scale.

With a distortion it cannot be exact: the correction moves the frame's
pixels over a distortion that stays where it was, and of the change of the
distortion's displacement only a similarity can be followed by four linear
parameters (where wcslib applies the distortion after the matrix, as TPV,
the rotation also turns the polynomial's argument). For a 128 x 128 frame
and a (0.5 px, 0.1 deg) correction that leaves 3e-4 px (TPV) to 3e-3 px
(HST ACS lookup tables); the residual returned says how far the result is.

Any other WCS (gwcs, a sliced WCS: no FITS linear part to adjust) is
replaced by `astrosr.geometry.fitted_wcs`, a TAN-SIP fitted to the target.
"""

import numpy as np
from astropy.wcs import WCS

from ..geometry import WCSTransform, fitted_wcs, low_level

__all__ = ["corrected_wcs", "wcs_pixel_map"]

#: Points per axis of the grid the linear part is fitted on.
GRID_POINTS = 15
#: Points per axis of the grid the residual is measured on (finer: lookup tables vary on a
#: pixel scale, which a 15 x 15 grid under-samples).
CHECK_POINTS = 41


def wcs_pixel_map(frame_wcs, reference_wcs, x, y):
    """``W``: frame pixel coordinates -> reference pixel coordinates through both WCS.

    Parameters
    ----------
    frame_wcs, reference_wcs : APE-14 WCS
        Any WCS with ``pixel_to_world_values`` / ``world_to_pixel_values``
        (FITS WCS with its distortions, gwcs, sliced WCS), or an object with
        a ``low_level_wcs``.
    x, y : array_like
        0-based frame pixel coordinates.

    Returns
    -------
    px, py : `~numpy.ndarray`
        Reference pixel coordinates, shaped as ``x``.
    """
    px, py = WCSTransform(frame_wcs, reference_wcs).frame_to_reference(x, y)
    return np.asarray(px, float), np.asarray(py, float)


def corrected_wcs(frame_wcs, reference_wcs, correction, shape):
    """A copy of ``frame_wcs`` whose pixel -> sky map includes ``correction``.

    Parameters
    ----------
    frame_wcs : APE-14 WCS
        The frame's WCS (not modified).
    reference_wcs : APE-14 WCS
        The reference frame's WCS.
    correction : `astrosr.geometry.Similarity`
        ``K`` in the reference pixel plane: the true reference position of
        frame pixel ``q`` is ``K.frame_to_reference(*W(q))``.
    shape : tuple of int
        ``(ny, nx)`` of the frame.

    Returns
    -------
    new_wcs : `~astropy.wcs.WCS`
        For a celestial 2-D FITS WCS, a deep copy with CRVAL and the linear
        matrix adjusted (CRPIX and distortion kept); otherwise a fitted
        TAN-SIP WCS (`astrosr.geometry.fitted_wcs`).
    residual_px : float
        Largest distance, in reference pixels, over a 41 x 41 grid covering
        the frame between where ``new_wcs`` puts a frame pixel on the
        reference and where the correction says it is.

    Raises
    ------
    ValueError
        Fewer than 3 grid points of the frame land on the reference through
        the two WCS.
    """
    mapping = corrected_map(frame_wcs, reference_wcs, correction)
    grid, target = grid_targets(mapping, frame_grid(shape))
    frame = low_level(frame_wcs)
    if is_fits_celestial(frame):
        new = refitted_linear_part(frame, reference_wcs, correction, grid, target)
    else:
        new = fitted_wcs(reference_wcs, mapping, shape, points=GRID_POINTS)
    return new, residual_px(new, reference_wcs, mapping, shape)


def residual_px(new_wcs, reference_wcs, mapping, shape):
    """Largest offset (reference px) of ``new_wcs``'s mapping from ``mapping`` on the check grid."""
    grid, target = grid_targets(mapping, frame_grid(shape, CHECK_POINTS))
    return float(np.max(np.hypot(*mismatch(new_wcs, reference_wcs, grid, target))))


def grid_targets(mapping, grid):
    """The points of ``grid`` that ``mapping`` takes somewhere finite, and where it takes them."""
    x, y = grid
    target = np.array(mapping(x, y))
    good = np.all(np.isfinite(target), axis=0)
    if good.sum() < 3:
        raise ValueError("fewer than 3 points of the frame map onto the reference through the WCS")
    return (x[good], y[good]), target[:, good]


def frame_grid(shape, points=GRID_POINTS):
    """``points x points`` frame pixel positions from edge to edge (flattened ``x, y``)."""
    ny, nx = shape
    y, x = np.meshgrid(np.linspace(-0.5, ny - 0.5, points), np.linspace(-0.5, nx - 0.5, points),
                       indexing="ij")
    return x.ravel(), y.ravel()


def corrected_map(frame_wcs, reference_wcs, correction):
    """``p_true``: frame pixel -> corrected reference pixel, as a function of ``(x, y)``."""
    def mapping(x, y):
        return correction.frame_to_reference(*wcs_pixel_map(frame_wcs, reference_wcs, x, y))
    return mapping


def mismatch(new_wcs, reference_wcs, grid, target):
    """Reference-pixel offsets ``(dx, dy)`` of ``new_wcs``'s mapping of ``grid`` from ``target``."""
    px, py = wcs_pixel_map(new_wcs, reference_wcs, *grid)
    return px - target[0], py - target[1]


def is_fits_celestial(wcs):
    """Whether ``wcs`` is a 2-D `~astropy.wcs.WCS` whose two axes are celestial."""
    return isinstance(wcs, WCS) and wcs.naxis == 2 and wcs.has_celestial


# --------------------------------------------------------------------------- linear part


def refitted_linear_part(frame, reference_wcs, correction, grid, target):
    """Deep copy of ``frame`` with CRVAL and its linear matrix fitted to map ``grid`` to ``target``.

    Parameters are ``(a, b, rotation, log_scale)``: the tangent point moves
    by ``(a, b)`` frame pixels (through the pixel scale matrix, on the
    sphere), and the linear matrix becomes ``M @ L`` with ``L = B^-1 S B``,
    ``S`` the similarity ``exp(log_scale) R(rotation)`` and ``B`` the mean
    Jacobian of ``W`` over the grid (see `jacobian`). The derivatives are
    central differences with fixed steps (`PARAMETER_STEPS`), not
    scipy's default relative ones: those are ~1e-8 of a parameter, where
    the round-off of WCS values (largest near a pole, where CRVAL's
    longitude moves fast) is a large part of the change.
    """
    from scipy.optimize import least_squares

    new = frame.deepcopy()
    update = LinearUpdate(new, jacobian(frame, reference_wcs, grid))

    def residuals(p):
        update.apply(p)
        return np.concatenate(mismatch(new, reference_wcs, grid, target))

    p0 = np.array([0.0, 0.0, -correction.rotation, -np.log(correction.scale)])
    fit = least_squares(residuals, p0, jac=central_differences(residuals), method="lm",
                        x_scale="jac", xtol=1e-12, ftol=1e-12)
    update.apply(fit.x)
    return new


#: Steps of the 4 parameters for derivatives: each moves the frame's edge by ~1e-3 px.
PARAMETER_STEPS = np.array([1e-3, 1e-3, 1e-3, 1e-5])


def central_differences(fun, steps=PARAMETER_STEPS):
    """A Jacobian function of ``fun`` by central differences with absolute ``steps``."""
    def jac(p):
        columns = []
        for i, h in enumerate(steps):
            dp = np.zeros_like(p)
            dp[i] = h
            columns.append((fun(p + dp) - fun(p - dp)) / (2.0 * h))
        return np.column_stack(columns)
    return jac


def jacobian(frame, reference_wcs, grid):
    """``B``: the mean Jacobian (2 x 2) of ``W`` with respect to the frame's focal plane.

    An affine least-squares fit over ``grid`` of the reference pixels ``W(q)``
    against the focal-plane coordinates of ``q``.

    The focal plane (`~astropy.wcs.WCS.pix2foc`: pixels with SIP, lookup
    tables and detector-to-image corrections applied) is what the linear
    matrix multiplies, so a change ``L`` of the matrix acts on it; its own
    linear part (large for some lookup tables) must be in ``B``.
    """
    x, y = grid
    foc = frame.pix2foc(np.column_stack([x, y]), 0)
    design = np.column_stack([foc, np.ones_like(x)])
    mapped = np.column_stack(wcs_pixel_map(frame, reference_wcs, x, y))
    coef = np.linalg.lstsq(design, mapped, rcond=None)[0]
    return coef[:2].T


class LinearUpdate:
    """Writes the 4 parameters into a WCS (modified in place) from its starting linear part.

    The matrix written is ``CD`` where the WCS uses CD (wcslib ignores CD
    when PC is also given), else ``PC`` with ``CDELT`` left alone (so a
    distortion applied between PC and CDELT, as TPD, sees the same scale);
    a CROTA-only WCS becomes PC (``get_pc``), which wcslib then prefers.
    ``to_header(relax=True)`` writes either form.

    Moving the tangent point with LONPOLE kept turns the intermediate plane
    by the change of direction of north between the two points (large near
    a pole); the plane is turned back by that angle, so that the move is a
    rigid rotation of the sky and the four parameters stay independent.
    """

    def __init__(self, wcs, b):
        self.wcs = wcs
        self.uses_cd = wcs.wcs.has_cd() and not wcs.wcs.has_pc()
        self.matrix = np.array(wcs.wcs.cd if self.uses_cd else wcs.wcs.get_pc(), float)
        self.cdelt = np.ones(2) if self.uses_cd else np.array(wcs.wcs.cdelt, float)
        self.crval = np.array(wcs.wcs.crval, float)
        self.b, self.b_inv = np.asarray(b, float), np.linalg.inv(b)

    def apply(self, p):
        """Set CRVAL and the linear matrix for parameters ``(a, b, rotation_deg, log_scale)``."""
        a, b, rotation, log_scale = p
        w = self.wcs.wcs
        scaled = self.cdelt[:, None] * self.matrix  # pixels -> intermediate world
        xi, eta = scaled @ np.array([a, b])
        crval, turn = moved_tangent_point(self.crval, w.lng, w.lat, xi, eta)
        similarity = np.exp(log_scale) * rotation_matrix(rotation)
        m = rotation_matrix(-turn) @ scaled @ self.b_inv @ similarity @ self.b
        m /= self.cdelt[:, None]
        if self.uses_cd:
            w.cd = m
        else:
            w.pc = m
        w.crval = crval
        w.set()


def rotation_matrix(deg):
    """Counter-clockwise rotation by ``deg`` degrees, 2 x 2."""
    t = np.deg2rad(deg)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def moved_tangent_point(crval, lng, lat, xi, eta):
    """CRVAL moved by gnomonic standard coordinates ``(xi, eta)`` (deg), and how north turned.

    Returns the new CRVAL and `north_turn` from the old to the new point:
    with LONPOLE kept, the sky that the old intermediate plane had in
    direction ``(0, 1)`` is now in ``(sin turn, cos turn)``, so the
    intermediate plane is to be turned by ``-turn`` (counter-clockwise);
    valid at the poles. Written out in vectors rather than through
    `~astropy.coordinates.SkyCoord`, which is called tens of times per fit
    and would dominate its cost.
    """
    lon0, lat0 = np.deg2rad(crval[lng]), np.deg2rad(crval[lat])
    xi, eta = np.deg2rad(xi), np.deg2rad(eta)
    rho = np.sqrt(1.0 + xi ** 2 + eta ** 2)
    lat1 = np.arcsin((np.sin(lat0) + eta * np.cos(lat0)) / rho)
    lon1 = lon0 + np.arctan2(xi, np.cos(lat0) - eta * np.sin(lat0))
    out = np.array(crval, float)
    out[lat], out[lng] = np.rad2deg(lat1), np.rad2deg(lon1)
    return out, north_turn(lon0, lat0, lon1, lat1)


def north_turn(lon0, lat0, lon1, lat1):
    """Angle (deg) from north at point 1, towards east, of north at point 0 carried there.

    North at point 0 is carried to point 1 along the great circle (the
    rotation of the sphere that takes one point to the other); about
    ``(lon1 - lon0) sin(lat)`` for short moves.
    """
    p0, p1 = unit_vector(lon0, lat0), unit_vector(lon1, lat1)
    k, c = np.cross(p0, p1), float(p0 @ p1)  # |k| = sin(separation), c = cos(separation)
    n0 = north(p0)
    carried = n0 * c + np.cross(k, n0) + k * (k @ n0) / (1.0 + c)  # Rodrigues, p0 -> p1
    n1 = north(p1)
    e1 = np.cross(n1, p1)
    return float(np.rad2deg(np.arctan2(carried @ e1, carried @ n1)))


def unit_vector(lon, lat):
    """Cartesian unit vector of a direction (radians)."""
    return np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])


def north(p):
    """Unit vector towards the north pole in the plane tangent at ``p`` (zero at a pole)."""
    n = np.array([0.0, 0.0, 1.0]) - p[2] * p
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else n
