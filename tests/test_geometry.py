"""Geometry: transforms, pixel maps, fusion of rotated/scaled/distorted frames, any output grid."""

import gzip
import warnings
from pathlib import Path

import astropy
import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.table import QTable
from astropy.wcs import WCS, FITSFixedWarning

import astrosr
import astrosr.misfit
from astrosr import simulate
from astrosr.forward import PixmapOperator
from astrosr.metrics import psnr as psnr_of
from astrosr.geometry import (OutputGrid, Similarity, corner_map, footprint_areas,
                              frame_transforms, geometry_table, pixel_map)
from astrosr._data import hubble_deep_field
from astrosr.psf import GaussianPSF

S = 4
PSF = GaussianPSF(1.2)
ASTROPY_WCS_DATA = Path(astropy.__file__).parent / "wcs" / "tests" / "data"


def _truth_wcs(n_fine, arcsec=0.1):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [n_fine / 2 + 0.5, n_fine / 2 + 0.5]
    w.wcs.cdelt = [-arcsec / 3600, arcsec / 3600]
    w.wcs.set()
    return w


def _rotated_geometry(n, seed=1, scale_jitter=0.0):
    rng = np.random.default_rng(seed)
    rot = np.r_[0.0, rng.uniform(-20, 20, n - 3), 90.0, 183.0]
    geo = QTable({"dx": np.r_[0.0, rng.uniform(-1, 1, n - 1)] * u.pix,
                  "dy": np.r_[0.0, rng.uniform(-1, 1, n - 1)] * u.pix,
                  "rotation": rot * u.deg})
    if scale_jitter:
        geo["scale"] = np.r_[1.0, rng.uniform(1 - scale_jitter, 1 + scale_jitter, n - 1)]
    return geo


@pytest.fixture(scope="module")
def rotated():
    """12 frames of 64x64 of the HDF, rotated (+-20 deg, 90, 183), with WCS, sky subtracted."""
    truth = CCDData(hubble_deep_field(256), unit="electron", wcs=_truth_wcs(256))
    geo = _rotated_geometry(12)
    st = simulate.observe(truth, scale=S, psf=PSF, geometry=geo, sky=100.0, seed=0)
    for f in st.frames:
        f.data = f.data - 100.0
    return st, geo


# --------------------------------------------------------------------------- transforms


def test_similarity_follows_the_design_convention():
    c = (10.0, 20.0)
    t = Similarity(1.0, 2.0, rotation=90.0, scale=1.0, center=c)
    # A source one pixel right of the centre appears one pixel above it (counter-clockwise),
    # then shifted by (dx, dy).
    x, y = t.reference_to_frame(c[0] + 1.0, c[1])
    np.testing.assert_allclose([x, y], [c[0] + 1.0, c[1] + 1.0 + 2.0], atol=1e-12)
    s = Similarity(0.3, -0.7, rotation=33.0, scale=1.02, center=c)
    px, py = np.random.default_rng(0).uniform(0, 40, (2, 50))
    np.testing.assert_allclose(s.frame_to_reference(*s.reference_to_frame(px, py)), [px, py],
                               atol=1e-12)
    np.testing.assert_allclose(np.hypot(*np.subtract(s.reference_to_frame(px[0] + 1, py[0]),
                                                     s.reference_to_frame(px[0], py[0]))), 1.02)


def test_geometry_table_accepts_lists_and_refuses_bad_columns():
    table = geometry_table([[0, 0], [0.5, -1.0]], 2)
    assert table["dx"].unit == u.pix and table["dy"][1] == -1.0 * u.pix
    good = QTable({"dx": [0.0, 1.0], "dy": [0.0, 0.0], "rotation": [0.0, 0.5] * u.rad})
    np.testing.assert_allclose(geometry_table(good, 2)["rotation"].to_value(u.deg)[1],
                               np.degrees(0.5))
    with pytest.raises(ValueError, match="'scale' must be > 0"):
        geometry_table(QTable({"dx": [0.0], "dy": [0.0], "scale": [0.0]}), 1)
    with pytest.raises(ValueError, match="'rotation' contains NaN"):
        geometry_table(QTable({"dx": [0.0], "dy": [0.0], "rotation": [np.nan]}), 1)
    with pytest.raises(ValueError, match="geometry must be a table"):
        frame_transforms("affine", (4, 4))
    with pytest.raises(ValueError, match="needs a WCS on every frame"):
        frame_transforms("wcs", (4, 4), [None, None])


def test_footprints_of_a_similarity_have_its_area():
    t = Similarity(0.2, 0.1, rotation=25.0, scale=1.02, center=(7.5, 5.5))
    grid = OutputGrid((12, 16), S)
    corners = corner_map(t, (12, 16), grid)
    np.testing.assert_allclose(footprint_areas(corners), S ** 2 / 1.02 ** 2, rtol=1e-12)
    centres = pixel_map(t, (12, 16), grid)
    np.testing.assert_allclose(centres, 0.25 * (corners[:-1, :-1] + corners[1:, 1:]
                                                + corners[:-1, 1:] + corners[1:, :-1]), atol=1e-9)


# --------------------------------------------------------------------------- forward model


def test_general_operator_matches_an_independent_renderer():
    """PixmapOperator (exact overlaps) against simulate.render_geometry (midpoint quadrature)."""
    truth = simulate.make_sky((96, 96), n_stars=15, n_galaxies=2, seed=3)
    geo = _rotated_geometry(4, seed=4, scale_jitter=0.02)
    rendered = simulate.render_geometry(truth, geo, scale=S, psf=PSF, edge="zero",
                                        subsamples=64)
    transforms = frame_transforms(geo, (24, 24))
    grid = OutputGrid((24, 24), S)
    op = PixmapOperator([corner_map(t, (24, 24), grid) for t in transforms], grid.shape,
                        scale=S, psf=PSF)
    model = op.forward(op.embed_image(truth))
    # Pixels whose footprint sees only the truth (the renderer loses light blurred off its edge).
    centres = np.array([pixel_map(t, (24, 24), grid) for t in transforms])
    inner = op.inside & np.all((centres > 12) & (centres < 84), axis=-1)
    err = np.abs(model - rendered)[inner]
    assert err.max() < 0.02 * rendered.max()
    assert np.median(err) < 2e-3 * rendered.max()


def test_render_geometry_equals_render_for_fine_aligned_shifts():
    truth = simulate.make_sky((64, 64), n_stars=10, n_galaxies=1, seed=5)
    shifts = np.array([[0.0, 0.0], [0.25, -0.5], [1.0, 0.75]])
    np.testing.assert_allclose(simulate.render_geometry(truth, shifts, scale=S, psf=PSF),
                               simulate.render(truth, shifts, scale=S, psf=PSF), rtol=0,
                               atol=1e-9 * truth.max())


# --------------------------------------------------------------------------- fusion


def _drizzle_package(frames, pixmaps, out_shape, pixfrac, area, pad=8):
    """The drizzle package onto the output grid (padded by ``pad``, then cropped).

    The package leaves out input pixels whose centre falls beyond its output
    grid, so the edge pixels of an unpadded grid miss parts of their drops.
    """
    from drizzle.resample import Drizzle

    shape = (out_shape[0] + 2 * pad, out_shape[1] + 2 * pad)
    driz = Drizzle(kernel="square", out_shape=shape, fillval=0.0, disable_ctx=True)
    for f, pm in zip(frames, pixmaps):
        w = 1.0 / np.median(f.uncertainty.array)
        driz.add_image((f.data / area).astype(np.float32), exptime=1.0, pixmap=pm + pad,
                       weight_map=np.full(f.shape, w, np.float32), pixfrac=pixfrac,
                       in_units="cps")
    crop = (slice(pad, pad + out_shape[0]), slice(pad, pad + out_shape[1]))
    return np.asarray(driz.out_img, float)[crop], np.asarray(driz.out_wht, float)[crop]


def test_drizzle_of_rotated_frames_equals_the_drizzle_package(rotated):
    st, geo = rotated
    out = astrosr.fuse(st.frames, geo, scale=S, method="drizzle", pixfrac=0.7, reject=False)
    transforms = frame_transforms(geo, st.frames[0].shape)
    grid = OutputGrid(st.frames[0].shape, S)
    pixmaps = [pixel_map(t, st.frames[0].shape, grid) for t in transforms]
    image, wht = _drizzle_package(st.frames, pixmaps, grid.shape, 0.7, S ** 2)
    covered = wht > 0
    np.testing.assert_array_equal(~out.mask, covered)
    np.testing.assert_allclose(out.data[covered], image[covered], rtol=1e-5,
                               atol=1e-5 * np.abs(image).max())
    np.testing.assert_allclose(out.weight, wht, rtol=1e-5)
    assert out.meta["FUSEGEOM"] == "similarity"
    assert abs(out.data.sum() / image.sum() - 1) < 1e-6


def test_reconstruct_of_rotated_frames_beats_drizzle(rotated):
    """On a rotated stack the PSF-aware fit gains over drizzle (it lost 6 dB when rotation was ignored)."""
    st, geo = rotated
    truth = st.truth.data[16:-16, 16:-16]
    drz = astrosr.fuse(st.frames, geo, scale=S, method="drizzle", pixfrac=0.7)
    rec = astrosr.fuse(st.frames, geo, scale=S, method="reconstruct", psf=PSF)
    with pytest.warns(astrosr.misfit.MisfitWarning):
        ignored = astrosr.fuse(st.frames, np.column_stack([geo["dx"].value, geo["dy"].value]),
                               scale=S, method="reconstruct", psf=PSF, max_iter=100)

    def psnr(img):
        return psnr_of(img.data[16:-16, 16:-16], truth)

    assert psnr(rec) > psnr(drz) + 3.0
    assert psnr(rec) > psnr(ignored) + 6.0
    assert rec.meta["CHI2OK"] and rec.meta["CHI2RED"] < 1.3
    assert abs(rec.data.sum() / st.truth.data.sum() - 1) < 0.03


def _assert_same_fusion(a, b, method):
    """Drizzle: equal to 1e-4 of the peak. Reconstruct: equal in what the frames constrain.

    A reconstruction run to convergence is not unique beyond the band the
    frames constrain: a change of 1e-7 input px in the geometry (the
    precision of a WCS round trip) moves single pixels by ~1% of the peak,
    the same change whatever the path (measured: 0.8% raw, 4e-5 once blurred
    by the PSF). So reconstructions are compared through the PSF, as the
    frames see them.
    """
    da, db = np.asarray(a.data, float), np.asarray(b.data, float)
    if method == "reconstruct":
        from scipy import signal

        kernel = PSF.kernel(S)
        da, db = (signal.fftconvolve(d, kernel, mode="same") for d in (da, db))
    np.testing.assert_allclose(da, db, rtol=0, atol=1e-4 * np.abs(db).max())


@pytest.mark.parametrize("method", ["drizzle", "reconstruct"])
def test_wcs_geometry_equals_the_table(rotated, method):
    st, geo = rotated
    options = {"psf": PSF} if method == "reconstruct" else {"pixfrac": 0.8}
    by_table = astrosr.fuse(st.frames, geo, scale=S, method=method, **options)
    by_wcs = astrosr.fuse(st.frames, "wcs", scale=S, method=method, **options)
    assert by_wcs.meta["FUSEGEOM"] == "wcs"
    _assert_same_fusion(by_wcs, by_table, method)
    # The output grid keeps sky positions: both WCS agree with the truth's everywhere.
    yy, xx = np.mgrid[0:256:17, 0:256:23]
    for w in (by_table.wcs, by_wcs.wcs):
        sep = w.pixel_to_world(xx, yy).separation(st.truth.wcs.pixel_to_world(xx, yy))
        assert sep.max().to_value(u.arcsec) < 0.01 * 0.4


def _dss_wcs():
    with warnings.catch_warnings():
        # The plate's header has a non-standard SKEW card, fixed on reading.
        warnings.simplefilter("ignore", FITSFixedWarning)
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        with gzip.open(ASTROPY_WCS_DATA / "dss.14.29.56-62.41.05.fits.gz") as fh:
            header = fits.Header.fromstring(fh.read(2880 * 40), sep="")
        return WCS(header)


@pytest.mark.skipif(not (ASTROPY_WCS_DATA / "dss.14.29.56-62.41.05.fits.gz").exists(),
                    reason="astropy's test data (a DSS plate header) is not installed")
def test_frames_translated_through_a_distorted_plate_wcs_take_the_shift_path():
    """A DSS plate solution (polynomial distortion): pointing offsets only, through the WCS."""
    plate = _dss_wcs()
    shifts = np.array([[0.0, 0.0], [0.37, -0.81], [-1.13, 0.52], [0.66, 1.21]])
    truth = simulate.make_sky((128, 128), n_stars=20, n_galaxies=2, seed=6)
    st = simulate.observe(truth, scale=S, psf=PSF, shifts=shifts, sky=20.0, seed=1)
    frames = []
    for f, (dx, dy) in zip(st.frames, shifts):
        w = plate.deepcopy()
        w.wcs.crpix = np.asarray(plate.wcs.crpix) + [dx, dy]
        w.wcs.set()
        frames.append(CCDData(f.data - 20.0, unit=f.unit, uncertainty=f.uncertainty, wcs=w))
    # The WCS really maps a reference pixel to itself plus the shift, distortion included.
    x, y = frames[2].wcs.world_to_pixel(frames[0].wcs.pixel_to_world(10.0, 20.0))
    np.testing.assert_allclose([x - 10.0, y - 20.0], shifts[2], atol=1e-6)
    # The same number of iterations on both paths: where the convergence rule stops depends on
    # rounding (the geometries differ by 1e-7 px after the WCS round trip: 315 against 336
    # iterations), and what is compared here is the geometry, not the stopping rule.
    fixed = {"psf": PSF, "tol": 1e-12, "max_iter": 150}
    for method, options in (("drizzle", {"pixfrac": 0.7}), ("reconstruct", fixed)):
        by_wcs = astrosr.fuse(frames, "wcs", scale=S, method=method, **options)
        by_shift = astrosr.fuse(frames, shifts, scale=S, method=method, **options)
        assert "geometry=wcs" in by_wcs.meta["HISTORY"][0] and by_wcs.meta["FUSEGEOM"] == "wcs"
        _assert_same_fusion(by_wcs, by_shift, method)


def test_output_onto_a_north_up_grid_keeps_sky_positions(rotated):
    """Any output grid (as reproject's output projection): a rotated reference onto north up."""
    st, geo = rotated
    frames = st.frames[1:]          # the reference is now frame 1, rotated
    out_wcs = _truth_wcs(160, arcsec=0.1)
    out_wcs.wcs.crpix = [80.5, 80.5]
    out_wcs.wcs.crval = st.truth.wcs.wcs.crval
    out = astrosr.fuse(frames, geo[1:], method="drizzle", output_wcs=out_wcs,
                       shape_out=(160, 160), pixfrac=1.0)
    assert out.shape == (160, 160) and out.meta["FUSESCAL"] == pytest.approx(S, rel=1e-6)
    # The same sky on both grids: resample the truth onto the output grid by pixel centres.
    yy, xx = np.mgrid[0:160, 0:160]
    tx, ty = st.truth.wcs.world_to_pixel(out_wcs.pixel_to_world(xx, yy))
    from scipy import ndimage

    blurred = ndimage.gaussian_filter(st.truth.data, S * 1.0)
    expected = ndimage.map_coordinates(blurred, [ty, tx], order=1)
    got = ndimage.gaussian_filter(out.data, 0.0)
    inner = (slice(30, 130), slice(30, 130))
    # Registered to the truth within 0.01 input px: cross-correlation peak at zero lag.
    from skimage.registration import phase_cross_correlation

    shift, _, _ = phase_cross_correlation(ndimage.gaussian_filter(expected[inner], 2.0),
                                          ndimage.gaussian_filter(got[inner], 2.0),
                                          upsample_factor=200)
    assert np.hypot(*shift) < 0.01 * S


@pytest.mark.parametrize("method", ["drizzle", "reconstruct"])
def test_similarity_stacks_conserve_flux(method):
    truth = np.pad(simulate.make_sky((64, 64), n_stars=8, n_galaxies=1, seed=8), 32)
    geo = _rotated_geometry(5, seed=9, scale_jitter=0.02)
    st = simulate.observe(truth, scale=S, psf=PSF, geometry=geo, sky=0.0, read_noise=1.0,
                          edge="zero", seed=2)
    options = {"psf": PSF} if method == "reconstruct" else {}
    out = astrosr.fuse(st.frames, geo, scale=S, method=method, reject=False, **options)
    # All the light lies well inside every frame: the output holds all of it.
    assert abs(out.data.sum() / truth.sum() - 1) < 0.01
