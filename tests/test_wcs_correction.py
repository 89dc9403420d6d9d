"""Corrected WCS of a frame (`astrosr.registration.wcs_correction`).

The target: ``w_new.pixel_to_world(q) == reference.pixel_to_world(K(W(q)))``
for every frame pixel ``q``, ``W`` the frame -> reference map through both
WCS and ``K`` the registration's correction (a `Similarity` in the
reference's pixel plane). It is checked on random points off the fitting
grid, in reference pixels.

For distorted headers only CRVAL and the linear matrix change (TweakReg's
scheme), while the correction moves the frame's pixels over its fixed
distortion: the part of the distortion's change that is not a similarity
(`similarity_floor`) is beyond the 4 parameters, and sets the bound there.
"""
import os
import warnings

import astropy.wcs
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales
from astropy.wcs.wcsapi import SlicedLowLevelWCS

from astrosr.geometry import Similarity
from astrosr.nddata import shift_wcs
from astrosr.registration.wcs_correction import corrected_wcs, frame_grid, wcs_pixel_map

DATA = os.path.join(os.path.dirname(astropy.wcs.__file__), "tests", "data")
FRAME = 128
SHAPE = (FRAME, FRAME)
CENTRE = ((FRAME - 1) / 2.0, (FRAME - 1) / 2.0)


# --------------------------------------------------------------------------- helpers


def rotation(deg):
    t = np.deg2rad(deg)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def tan_wcs(crval=(150.0, 45.0), rot=30.0, scale=1e-4, flip=True, pc=False, crpix=(60.3, 70.1)):
    """An undistorted TAN WCS, its matrix as CD or as PC with CDELT."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval, w.wcs.crpix = crval, crpix
    m = rotation(rot) @ np.diag([-1.0 if flip else 1.0, 1.0])
    if pc:
        w.wcs.pc, w.wcs.cdelt = m, [scale, scale * 1.01]
    else:
        w.wcs.cd = scale * m
    w.wcs.set()
    return w


def rotated(w, deg):
    """``w`` with its linear matrix rotated on the sky by ``deg`` (a copy)."""
    new = w.deepcopy()
    if new.wcs.has_cd() and not new.wcs.has_pc():
        new.wcs.cd = rotation(deg) @ new.wcs.cd
    else:
        new.wcs.pc = rotation(deg) @ new.wcs.get_pc()
    new.wcs.set()
    return new


def header_wcs(filename):
    """WCS of an astropy test header, translated so a 128x128 frame is centred on CRPIX.

    As benchmarks/geometry.py: the image centre where CRPIX is off the
    header's image (TPV), lookup tables read from the file's extensions.
    """
    path = os.path.join(DATA, filename)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        if filename.endswith(".hdr"):
            header = fits.Header.fromstring(open(path).read())
            w = WCS(header)
        else:
            with fits.open(path) as hdul:
                hdu = hdul["SCI", 1] if "SCI" in hdul else hdul[0]
                header = hdu.header.copy()
                w = WCS(header, hdul).deepcopy()
    centre = np.asarray(w.wcs.crpix, float) - 1.0
    nx, ny = header.get("NAXIS1", 0), header.get("NAXIS2", 0)
    if nx > 1 and ny > 1 and not (0 <= centre[0] < nx and 0 <= centre[1] < ny):
        centre = np.array([(nx - 1) / 2.0, (ny - 1) / 2.0])
    return shift_wcs(w, *(np.array(CENTRE) - centre))


def random_points(shape, n=400, seed=3):
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.5, shape[1] - 0.5, n), rng.uniform(-0.5, shape[0] - 0.5, n)


def error_px(new, frame, reference, correction, shape=SHAPE):
    """Max distance (reference px) of ``new``'s mapping from the target, at random points."""
    x, y = random_points(shape)
    tx, ty = correction.frame_to_reference(*wcs_pixel_map(frame, reference, x, y))
    px, py = wcs_pixel_map(new, reference, x, y)
    return float(np.max(np.hypot(px - tx, py - ty)))


def linear_twin(w):
    """A TAN WCS with ``w``'s CRPIX, CRVAL and linear matrix, without its distortion."""
    twin = WCS(naxis=2)
    twin.wcs.crpix, twin.wcs.crval = w.wcs.crpix, w.wcs.crval
    twin.wcs.cd = w.pixel_scale_matrix
    twin.wcs.ctype = [c.split("-")[0].ljust(4, "-") + "-TAN" for c in w.wcs.ctype]
    twin.wcs.set()
    return twin


def similarity_floor(frame, reference, correction, shape=SHAPE):
    """What keeping the distortion fixed costs: the non-similarity part of its change (px).

    The correction moves frame pixel ``q`` to ``q'`` (the frame pixel now
    seen where ``q`` is); the distortion's displacement there,
    ``d(q') - d(q)`` (``d``: full WCS against its undistorted twin), would
    have to be followed by the new WCS. A change of CRVAL and a rotation/
    scale of the matrix follows only its best-fitting similarity.
    """
    x, y = frame_grid(shape, 41)
    twin = linear_twin(frame)

    def d(qx, qy):
        return np.array(wcs_pixel_map(frame, twin, qx, qy)) - np.array([qx, qy])

    p = correction.frame_to_reference(*wcs_pixel_map(frame, reference, x, y))
    e = d(*wcs_pixel_map(reference, frame, *p)) - d(x, y)
    z, ez = x + 1j * y, e[0] + 1j * e[1]
    design = np.column_stack([z, np.ones_like(z)])
    coef = np.linalg.lstsq(design, ez, rcond=None)[0]
    return float(np.max(np.abs(ez - design @ coef)))


def same_mapping_px(a, b, shape=SHAPE):
    """Max sky distance, in ``b``'s pixels, between two WCS's positions of the frame's pixels.

    Compared on the sky (no iterative inversion of a distortion, whose
    tolerance is ~1e-8 px).
    """
    x, y = random_points(shape, seed=11)
    pa = unit_vectors(*a.pixel_to_world_values(x, y))
    pb = unit_vectors(*b.pixel_to_world_values(x, y))
    angle = np.rad2deg(np.linalg.norm(pa - pb, axis=0))
    return float(np.max(angle) / np.mean(proj_plane_pixel_scales(b)))


def unit_vectors(lon, lat):
    lon, lat = np.deg2rad(lon), np.deg2rad(lat)
    return np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])


# --------------------------------------------------------------------------- undistorted TAN


@pytest.mark.parametrize("pc", [False, True], ids=["CD", "PC+CDELT"])
@pytest.mark.parametrize("dec", [45.0, -89.99], ids=["dec45", "pole"])
def test_tan_correction_is_exact(pc, dec):
    frame = tan_wcs(crval=(150.0, dec), pc=pc)
    reference = rotated(tan_wcs(crval=(150.0, dec), crpix=(20.0, 95.0), rot=28.0, pc=pc), 0.7)
    before = frame.to_header_string(relax=True)
    k = Similarity(0.5, -0.3, 0.1, 1.002, center=CENTRE)
    new, residual = corrected_wcs(frame, reference, k, SHAPE)
    assert residual < 1e-4
    assert error_px(new, frame, reference, k) < 1e-4
    assert frame.to_header_string(relax=True) == before  # input untouched
    assert new is not frame and new.wcs is not frame.wcs
    np.testing.assert_array_equal(new.wcs.crpix, frame.wcs.crpix)
    assert new.wcs.has_pc() == pc and new.wcs.has_cd() == (not pc)
    if pc:
        np.testing.assert_array_equal(new.wcs.cdelt, frame.wcs.cdelt)
    # the correction really did something
    assert error_px(frame, frame, reference, k) > 0.3


def test_identity_correction_gives_the_input_mapping():
    frame = tan_wcs()
    reference = rotated(tan_wcs(crpix=(20.0, 95.0)), 0.7)
    new, residual = corrected_wcs(frame, reference, Similarity(0, 0, center=CENTRE), SHAPE)
    assert residual < 1e-9
    assert same_mapping_px(new, frame) < 1e-9


def test_non_square_frame_and_rectangular_grid():
    shape = (90, 150)
    centre = ((shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0)
    frame, reference = tan_wcs(), rotated(tan_wcs(crpix=(100.0, 40.0)), -0.4)
    k = Similarity(-1.5, 2.0, -0.3, 0.99, center=centre)
    new, residual = corrected_wcs(frame, reference, k, shape)
    assert residual < 1e-4
    assert error_px(new, frame, reference, k, shape) < 1e-4


def test_wcs_pixel_map_arrays():
    frame, reference = tan_wcs(), shift_wcs(tan_wcs(), 2.5, -1.0)
    x, y = np.arange(6.0).reshape(2, 3), np.ones((2, 3))
    px, py = wcs_pixel_map(frame, reference, x, y)
    assert px.shape == py.shape == (2, 3)
    np.testing.assert_allclose(px, x + 2.5, atol=1e-9)
    np.testing.assert_allclose(py, y - 1.0, atol=1e-9)


def test_frames_that_do_not_overlap_raise():
    frame, elsewhere = tan_wcs(), tan_wcs(crval=(330.0, -45.0))
    with pytest.raises(ValueError, match="fewer than 3 points"):
        corrected_wcs(frame, elsewhere, Similarity(0, 0, center=CENTRE), SHAPE)


# --------------------------------------------------------------------------- distorted headers

HEADERS = ["irac_sip.hdr", "tpvonly.hdr", "dist_lookup.fits.gz"]


def distorted_case(filename):
    frame = header_wcs(filename)
    reference = rotated(shift_wcs(frame, 3.2, -2.1), 0.3)
    return frame, reference, Similarity(0.5, 0.0, 0.1, center=CENTRE)


@pytest.mark.parametrize("filename", HEADERS)
def test_distorted_header_correction(filename):
    frame, reference, k = distorted_case(filename)
    before = frame.to_header_string(relax=True)
    new, residual = corrected_wcs(frame, reference, k, SHAPE)
    # Measured: irac_sip 9.2e-4, tpvonly 2.9e-4, dist_lookup 2.8e-3 px; similarity floors
    # 1.1e-3, 1.9e-3, 3.1e-3 px: within 1e-3 px, or near what 4 linear parameters can reach.
    assert residual < max(1e-3, 1.5 * similarity_floor(frame, reference, k))
    assert error_px(new, frame, reference, k) < 1.5 * residual + 1e-6
    assert residual < 0.01 * error_px(frame, frame, reference, k)
    assert frame.to_header_string(relax=True) == before
    np.testing.assert_array_equal(new.wcs.crpix, frame.wcs.crpix)
    if frame.sip is not None:
        np.testing.assert_array_equal(new.sip.a, frame.sip.a)
        np.testing.assert_array_equal(new.sip.crpix, frame.sip.crpix)
    if frame.cpdis1 is not None:
        np.testing.assert_array_equal(new.cpdis1.data, frame.cpdis1.data)


def test_distorted_identity_correction():
    frame, reference, _ = distorted_case("irac_sip.hdr")
    new, residual = corrected_wcs(frame, reference, Similarity(0, 0, center=CENTRE), SHAPE)
    assert residual < 1e-9
    assert same_mapping_px(new, frame) < 1e-9


# --------------------------------------------------------------------------- FITS round trip


@pytest.mark.parametrize("filename", [None, "irac_sip.hdr", "tpvonly.hdr"])
def test_header_round_trip(filename):
    if filename is None:
        frame, reference = tan_wcs(), rotated(tan_wcs(crpix=(20.0, 95.0)), 0.7)
        k = Similarity(0.5, -0.3, 0.1, 1.002, center=CENTRE)
    else:
        frame, reference, k = distorted_case(filename)
    new, _ = corrected_wcs(frame, reference, k, SHAPE)
    header = fits.Header.fromstring(new.to_header_string(relax=True))
    back = WCS(header)
    # to_header writes 14 significant digits: ~1e-8 px at a CRVAL of 150 deg and 0.36"/px
    assert same_mapping_px(back, new) < 1e-7
    assert error_px(back, frame, reference, k) < error_px(new, frame, reference, k) + 1e-7


@pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")  # primary HDU has NAXIS=0
def test_lookup_tables_round_trip_through_fits():
    """Lookup tables live in extensions: a header alone drops them, ``to_fits`` keeps them."""
    frame, reference, k = distorted_case("dist_lookup.fits.gz")
    new, _ = corrected_wcs(frame, reference, k, SHAPE)
    hdul = new.to_fits(relax=True)
    back = WCS(hdul[0].header, hdul)
    assert back.cpdis1 is not None and back.det2im1 is not None
    assert same_mapping_px(back, new) < 1e-7
    header_only = WCS(fits.Header.fromstring(new.to_header_string(relax=True)))
    assert header_only.cpdis1 is None and same_mapping_px(header_only, new) > 1e-2


# --------------------------------------------------------------------------- fallback


def test_non_fits_wcs_takes_the_fitted_fallback():
    frame = header_wcs("irac_sip.hdr")
    reference = rotated(shift_wcs(frame, 3.2, -2.1), 0.3)
    sliced = SlicedLowLevelWCS(frame, [slice(None), slice(None)])
    k = Similarity(0.5, 0.0, 0.1, center=CENTRE)
    new, residual = corrected_wcs(sliced, reference, k, SHAPE)
    assert isinstance(new, WCS) and new.sip is not None  # a fitted TAN-SIP
    assert residual < 1e-2
    assert error_px(new, frame, reference, k) < 1e-2


def test_fallback_from_a_cube_plane():
    cube = WCS(naxis=3)
    cube.wcs.ctype = ["RA---TAN", "DEC--TAN", "FREQ"]
    cube.wcs.crval, cube.wcs.crpix = [150.0, 45.0, 1.4e9], [60.0, 70.0, 1.0]
    cube.wcs.cdelt = [-1e-4, 1e-4, 1e6]
    cube.wcs.set()
    plane = SlicedLowLevelWCS(cube, [2, slice(None), slice(None)])
    reference = rotated(tan_wcs(rot=0.0, crpix=(20.0, 95.0)), 0.7)
    k = Similarity(0.5, -0.3, 0.1, 1.002, center=CENTRE)
    new, residual = corrected_wcs(plane, reference, k, SHAPE)
    assert residual < 1e-2
    assert error_px(new, plane, reference, k) < 1e-2
