"""The general-geometry observation operator (`astrosr.forward.PixmapOperator`).

Its pixel overlaps are checked against the drizzle package (square kernel),
against `ObservationOperator` for fine-aligned shifts, and for adjointness,
flux conservation and edge flags.
"""
import numpy as np
import pytest
from drizzle.resample import Drizzle

from astrosr.forward import ObservationOperator, PixmapOperator, pixel_overlaps
from astrosr.psf import GaussianPSF


def _affine(shape, matrix, centre):
    """Map frame points ``(X, Y)`` to ``matrix @ (X - c, Y - c) + centre`` (c: frame centre)."""
    matrix = np.asarray(matrix, dtype=float)
    mid = np.array([(shape[1] - 1) / 2, (shape[0] - 1) / 2])

    def mapping(x, y):
        return np.stack([x - mid[0], y - mid[1]], axis=-1) @ matrix.T + np.asarray(centre)
    return mapping


def _rotation(scale, degrees, flip=False):
    t = np.deg2rad(degrees)
    m = scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return m @ np.diag([-1.0, 1.0]) if flip else m


def _corners(shape, mapping):
    """Corners ``(ny + 1, nx + 1, 2)``: frame points ``(i - 0.5, j - 0.5)`` mapped."""
    j, i = np.mgrid[0:shape[0] + 1, 0:shape[1] + 1] - 0.5
    return mapping(i, j)


def _pixmap(shape, mapping):
    """drizzle's pixmap ``(ny, nx, 2)``: the frame's pixel centres ``(i, j)`` mapped."""
    j, i = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    return mapping(i, j)


def _shift_corners(shape, shift, scale):
    """Corners of a frame shifted by ``(dx, dy)`` input pixels (DESIGN.md convention).

    A source at reference pixel ``p`` appears at ``p + d`` in the frame, and
    reference pixel ``p`` is at fine ``scale * (p + 0.5) - 0.5``: frame corner
    ``q`` is at fine ``scale * (q - d + 0.5) - 0.5``.
    """
    j, i = np.mgrid[0:shape[0] + 1, 0:shape[1] + 1] - 0.5
    return np.stack([scale * (i - shift[0] + 0.5) - 0.5,
                     scale * (j - shift[1] + 0.5) - 0.5], axis=-1)


SHIFTS = np.array([(0.25, -0.5), (0.0, 0.0), (-0.75, 1.25), (0.5, 0.5)])


def _shift_pair(psf, shape=(16, 18), scale=4, single=False):
    obs = ObservationOperator(shape, SHIFTS, scale=scale, psf=psf)
    corners = [_shift_corners(shape, d, scale) for d in SHIFTS]
    pix = PixmapOperator(corners, (scale * shape[0], scale * shape[1]), scale=scale, psf=psf,
                         single=single)
    return obs, pix


def test_adjoint_dot_product_rotated_frames():
    rng = np.random.default_rng(1)
    shape, scale, out = (12, 14), 3, (48, 50)
    corners = [_corners(shape, _affine(shape, _rotation(scale * z, a, f), (24.3 + dx, 23.8)))
               for a, z, f, dx in [(0, 1.0, False, 0.0), (17, 1.05, False, 1.3),
                                   (-41, 0.95, True, -0.6)]]
    for psf in (GaussianPSF(0.7), None):
        op = PixmapOperator(corners, out, scale=scale, psf=psf)
        assert op.shape == op.shape_padded == shape and len(op) == 3
        assert op.margin * op.scale == op.pad
        assert op.fine_shape == (48 + 2 * op.pad, 50 + 2 * op.pad)
        x = rng.random(op.fine_shape)
        y = rng.random((3,) + shape)
        for squared in (False, True):
            lhs = np.vdot(op.forward(x, squared=squared), y)
            rhs = np.vdot(x, op.adjoint(y, squared=squared))
            assert lhs == pytest.approx(rhs, rel=1e-10)
    # Without a PSF the adjoint is the sum of the drizzled frames.
    total = sum(op.frame_adjoint(i, y[i]) for i in range(len(op)))
    np.testing.assert_allclose(total, op.adjoint(y), rtol=1e-12, atol=1e-12)


def test_pure_shifts_match_observation_operator():
    rng = np.random.default_rng(2)
    psf = GaussianPSF(0.6)
    obs, pix = _shift_pair(psf)
    image = rng.random((64, 72)) + 0.1
    expected = obs.crop_frames(obs.forward(obs.embed_image(image)))
    got = pix.crop_frames(pix.forward(pix.embed_image(image)))
    assert pix.inside.all()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9 * expected.max())
    np.testing.assert_allclose(pix.crop_image(pix.embed_image(image)), image)
    # Adjoint too, on the output field.
    cube = rng.random(got.shape)
    np.testing.assert_allclose(pix.crop_image(pix.adjoint(cube)),
                               obs.crop_image(obs.adjoint(obs.embed_frames(cube))),
                               rtol=1e-6, atol=1e-9)
    single = _shift_pair(psf, single=True)[1]
    fast = single.forward(single.embed_image(image))
    assert fast.dtype == np.float32
    np.testing.assert_allclose(fast, got, rtol=1e-5)


def test_overlaps_match_drizzle_square_kernel():
    """drizzle (3.0) with ``kernel="square", pixfrac=1`` as the oracle.

    drizzle's pixmap holds the output coordinates of the input pixel
    *centres*; it finds the corners ``(i +- 0.5, j +- 0.5)`` by bilinear
    interpolation (linear extrapolation at the edges) of the pixmap, exact for
    an affine map. Each overlap is divided by the footprint's area (its
    Jacobian, ``dover /= jaco`` in ``do_kernel_square``): ``out_wht`` sums
    *fractions* of input pixels, ``(A.T @ 1) / scale**2`` for this map, and
    ``out_img`` is the overlap-weighted mean of the data.
    """
    rng = np.random.default_rng(3)
    shape, scale, out = (14, 17), 2.5, (60, 64)
    mapping = _affine(shape, _rotation(scale, 30), (31.8, 29.6))
    data = (rng.random(shape) + 0.5).astype(np.float32)
    driz = Drizzle(kernel="square", out_shape=out)
    driz.add_image(data, exptime=1.0, pixmap=_pixmap(shape, mapping), pixfrac=1.0,
                   in_units="cps")
    a = pixel_overlaps(_corners(shape, mapping), out)
    assert a.shape == (np.prod(shape), np.prod(out))
    cover = (a.T @ np.ones(a.shape[0])).reshape(out)
    np.testing.assert_allclose(driz.out_wht, cover / scale ** 2, rtol=1e-5, atol=1e-7)
    covered = cover > 0
    assert covered.sum() > 1000 and np.all(driz.out_wht[~covered] == 0)
    mean = (a.T @ data.ravel().astype(float)).reshape(out)[covered] / cover[covered]
    np.testing.assert_allclose(driz.out_img[covered], mean, rtol=1e-5)


@pytest.mark.parametrize("flip", [False, True])
def test_flux_is_conserved(flip):
    rng = np.random.default_rng(4)
    shape, scale, out = (20, 20), 4, (120, 120)
    mapping = _affine(shape, _rotation(scale, 20, flip), (59.7, 60.2))
    a = pixel_overlaps(_corners(shape, mapping), out)
    np.testing.assert_allclose(np.asarray(a.sum(axis=1)).ravel(), scale ** 2, rtol=1e-9)
    # A source well inside the frame's footprint: all its light is seen.
    yy, xx = np.mgrid[0:out[0], 0:out[1]]
    disk = (xx - 59.7) ** 2 + (yy - 60.2) ** 2 < 30 ** 2
    x = np.where(disk, rng.random(out), 0.0)
    cover = (a.T @ np.ones(a.shape[0])).reshape(out)
    np.testing.assert_allclose(cover[disk], 1.0, rtol=1e-9)
    assert np.sum(a @ x.ravel()) == pytest.approx(np.sum(x), rel=1e-9)
    op = PixmapOperator([_corners(shape, mapping)], out, scale=scale, pad=4)
    assert op.inside.all()
    assert np.sum(op.forward(op.embed_image(x))) == pytest.approx(np.sum(x), rel=1e-9)


def test_inside_flags_footprints_crossing_the_grid_edge():
    shape, scale, out = (10, 10), 3, (30, 30)
    mapping = _affine(shape, _rotation(scale, 10), (0.37, 14.6))
    corners = _corners(shape, mapping)
    op = PixmapOperator([corners], out, scale=scale, pad=3)
    padded = corners + op.pad
    quads = np.stack([padded[:-1, :-1], padded[:-1, 1:], padded[1:, 1:], padded[1:, :-1]], 2)
    limit = np.array(op.fine_shape[::-1]) - 0.5
    expected = np.all((quads >= -0.5) & (quads <= limit), axis=(2, 3))
    assert expected.any() and not expected.all()
    np.testing.assert_array_equal(op.inside[0], expected)
    rows = np.asarray(op._mats[0].sum(axis=1)).reshape(shape)
    assert np.all(rows[~expected] < scale ** 2 * (1 - 1e-6))
    # A footprint with an undefined corner is empty, and flagged.
    corners[3, 4] = np.nan
    a = pixel_overlaps(corners + 3, op.fine_shape)
    assert a[3 * 10 + 4].nnz == 0 and a[2 * 10 + 3].nnz == 0 and a[3 * 10 + 5].nnz > 0
    assert not PixmapOperator([corners], out, scale=scale, pad=3).inside[0, 2, 3]


def test_squared_approximates_observation_operator():
    """The squared operators are an approximation: within 10% of
    `ObservationOperator`'s exact squares for fine-aligned shifts, exact
    on a constant image (the row sums)."""
    rng = np.random.default_rng(6)
    obs, pix = _shift_pair(GaussianPSF(0.5))
    for image, tol in ((rng.random((64, 72)) + 0.1, 0.1), (np.ones((64, 72)), 1e-6)):
        exact = obs.crop_frames(obs.forward(obs.embed_image(image), squared=True))
        approx = pix.forward(pix.embed_image(image), squared=True)
        np.testing.assert_allclose(approx[:, 3:-3, 3:-3], exact[:, 3:-3, 3:-3], rtol=tol)
    weights = rng.uniform(0.5, 1.5, (len(SHIFTS), 16, 18))
    exact = obs.crop_image(obs.adjoint(obs.embed_frames(weights), squared=True))
    approx = pix.crop_image(pix.adjoint(weights, squared=True))
    np.testing.assert_allclose(approx[12:-12, 12:-12], exact[12:-12, 12:-12], rtol=0.1)
