"""Property-based tests (hypothesis) of the public API over awkward inputs.

Inputs: frame shapes from 1x1, 1xN and Nx1 up to 48x64; int16, uint16 (values that need BZERO
in FITS), float32, float64 and big-endian data; NaN, +-inf and masks (random, a fully masked
frame, one good pixel); per-pixel and surface-brightness units, mixed across frames; shift
tables as lists of pairs, arrays, Table and QTable with and without units.

Properties:

* only the documented exceptions (ValueError, TypeError, UnitsError, FileNotFoundError,
  OSError, FileExistsError), each with a message of its own: never an IndexError,
  ZeroDivisionError, KeyError, numpy's LinAlgError, a numpy RuntimeWarning, or a bare
  Python/numpy message ("max() arg is an empty sequence");
* flux: drizzle (pixfrac 1) and shift-and-add keep the total flux of frames in per-pixel
  units, exactly; surface-brightness units keep the surface brightness; a flat sky stays flat
  at any pixfrac, shift and scale;
* observe -> register_stack / register recovers the known shifts within a few sigma;
* fuse of one frame at scale 1 returns the frame (data, mask, unit, uncertainty);
* determinism: the same input gives the same output, bit for bit;
* inputs (arrays, CCDData, tables, truths) are never modified.

Random arrays come from a numpy generator seeded by hypothesis (fast to draw, and shrinkable
through the seed); every test is derandomized, so CI runs the same examples each time.
"""

import copy
import os
import shutil
import tempfile
import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, InverseVariance, NDData, StdDevUncertainty, \
    VarianceUncertainty
from astropy.table import MaskedColumn, QTable, Table
from astropy.utils.exceptions import AstropyUserWarning
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import astrosr
from astrosr import simulate
from astrosr.geometry import geometry_table
from astrosr.nddata import as_frames, shift_array, write_fits
from astrosr.psf import GaussianPSF

#: What the docstrings' Raises sections allow.
DOCUMENTED = (ValueError, TypeError, u.UnitsError, FileNotFoundError, OSError, FileExistsError)
#: Messages of Python and numpy internals: an error that reaches the user with one of these
#: was not anticipated (a ValueError from ``max([])`` is a crash, not a check).
INTERNAL = ("empty sequence", "could not convert", "setting an array element",
            "could not be broadcast", "zero-size array", "cannot reshape", "is out of bounds",
            "unsupported operand", "'NoneType'", "has no len()", "unsized object",
            "inhomogeneous", "too many indices")

DTYPES = ("int16", "uint16", "float32", "float64", ">f4", ">i2", ">f8")
PER_PIXEL = ("adu", "electron", "count", "Jy/pixel", "")
SURFACE = ("MJy/sr", "erg / (s cm2 arcsec2)")
UNITS = PER_PIXEL + SURFACE
TINY = ((1, 1), (1, 2), (2, 1), (1, 7), (7, 1), (2, 2), (3, 5), (5, 3), (1, 40), (40, 1))

PROPS = dict(derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def documented_outcome(call):
    """``call()``'s result, or None when it raised a documented exception with a clear message.

    A numpy RuntimeWarning (division by zero, mean of an empty slice) counts as a crash.
    Astropy user warnings (a misfit reported by reconstruct) are expected outcomes.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        warnings.simplefilter("ignore", AstropyUserWarning)
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - judged below
            check_documented(exc)
            return None


def check_documented(exc):
    assert isinstance(exc, DOCUMENTED) and not isinstance(exc, np.linalg.LinAlgError), \
        f"undocumented {type(exc).__name__}: {exc}"
    message = str(exc).strip()
    assert message, f"{type(exc).__name__} without a message"
    assert not any(p in message for p in INTERNAL), \
        f"{type(exc).__name__} with an internal message: {message}"


# --------------------------------------------------------------------------- strategies


shapes = st.one_of(st.sampled_from(TINY),
                   st.tuples(st.integers(1, 48), st.integers(1, 64)))
seeds = st.integers(0, 2 ** 32 - 1)


def random_data(rng, shape, dtype):
    """Frames' values in ``dtype``: uint16 mostly above 32767 (BZERO in FITS)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "u":
        values = rng.normal(40000.0, 8000.0, shape)
    elif dtype.kind == "i":
        values = rng.normal(0.0, 2000.0, shape)
    else:
        values = rng.normal(100.0, 30.0, shape)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = np.clip(np.round(values), info.min, info.max)
    return values.astype(dtype)


def bad_pixels(rng, shape, pattern):
    """A mask: none, random, the whole frame, or all but one pixel."""
    if pattern == "random":
        return rng.random(shape) < rng.uniform(0.0, 0.5)
    if pattern == "all":
        return np.ones(shape, bool)
    if pattern == "one good":
        mask = np.ones(shape, bool)
        mask[rng.integers(shape[0]), rng.integers(shape[1])] = False
        return mask
    return np.zeros(shape, bool)


def uncertainty(kind, data, rng):
    sigma = np.abs(rng.normal(5.0, 1.0, data.shape)) + 0.1
    return {"none": None, "var": VarianceUncertainty(sigma ** 2), "std": StdDevUncertainty(sigma),
            "ivar": InverseVariance(1.0 / sigma ** 2)}[kind]


@st.composite
def stacks(draw, max_frames=4, shape=shapes, containers=("cube", "arrays", "ccd", "nddata")):
    """A stack as users pass it, with its awkward pixels and units."""
    n = draw(st.integers(1, max_frames))
    ny, nx = draw(shape)
    dtype = draw(st.sampled_from(DTYPES))
    container = draw(st.sampled_from(containers))
    unit = draw(st.sampled_from(UNITS))
    units = [unit] * n
    if n > 1 and draw(st.integers(0, 9)) == 0:  # mixed units, now and then
        units[-1] = draw(st.sampled_from(UNITS))
    rng = np.random.default_rng(draw(seeds))
    data = [random_data(rng, (ny, nx), dtype) for _ in range(n)]
    if np.dtype(dtype).kind == "f" and draw(st.booleans()):
        for d in data:
            flat = d.reshape(-1)
            k = rng.integers(0, max(1, flat.size // 4) + 1)
            flat[rng.integers(0, flat.size, k)] = rng.choice([np.nan, np.inf, -np.inf], k)
    if container == "cube":  # arrays carry no unit: dimensionless
        return np.array(data), ""
    if container == "arrays":
        return data, ""
    patterns = [draw(st.sampled_from(("none", "none", "random", "random", "one good")))
                for _ in range(n)]
    if draw(st.integers(0, 9)) == 0:  # a fully masked frame, now and then
        patterns[draw(st.integers(0, n - 1))] = "all"
    unc = draw(st.sampled_from(("none", "var", "std", "ivar")))
    cls = CCDData if container == "ccd" else NDData
    return [cls(d, unit=un, mask=bad_pixels(rng, d.shape, p), uncertainty=uncertainty(unc, d, rng))
            for d, un, p in zip(data, units, patterns)], units[0]


@st.composite
def geometries(draw, n):
    """A geometry for ``n`` frames in any accepted form (sometimes a wrong one)."""
    rng = np.random.default_rng(draw(seeds))
    reach = draw(st.sampled_from((0.0, 1.5, 1.5, 4.0, 200.0)))  # 200: frames that do not overlap
    d = rng.uniform(-reach, reach, (n, 2))
    d[0] = 0.0
    rows = n if draw(st.integers(0, 9)) else n + draw(st.sampled_from((-1, 1)))
    rows = rows if rows >= 1 else n + 1
    d = d[:rows] if rows <= n else np.vstack([d, d[:1]])
    form = draw(st.sampled_from(("pairs", "array", "table", "qtable", "rigid", "similarity",
                                 "nan")))
    if form == "pairs":
        return [tuple(p) for p in d]
    if form == "array":
        return d
    if form == "nan":
        d[-1, 0] = np.nan
        return d
    if form == "table":
        return Table({"dx": d[:, 0], "dy": d[:, 1]})
    table = QTable({"dx": d[:, 0] * u.pix, "dy": d[:, 1] * u.pix})
    if form in ("rigid", "similarity"):
        table["rotation"] = rng.uniform(-3.0, 3.0, len(d)) * u.deg
    if form == "similarity":
        table["scale"] = rng.uniform(0.98, 1.02, len(d))
    return table


def snapshot(obj):
    """A deep copy of what a caller passed, to check it is left alone."""
    return copy.deepcopy(obj)


def assert_unchanged(before, after):
    """``after`` (what was passed) equals ``before`` (its snapshot), arrays bit for bit."""
    if isinstance(before, np.ndarray):
        assert after.dtype == before.dtype and after.shape == before.shape
        assert np.array_equal(after, before, equal_nan=after.dtype.kind == "f")
    elif isinstance(before, NDData):
        assert type(after) is type(before) and after.unit == before.unit
        assert_unchanged(np.asarray(before.data), np.asarray(after.data))
        assert (after.mask is None) == (before.mask is None)
        if before.mask is not None:
            assert_unchanged(np.asarray(before.mask), np.asarray(after.mask))
        if before.uncertainty is None:
            assert after.uncertainty is None
        else:
            assert type(after.uncertainty) is type(before.uncertainty)
            assert_unchanged(before.uncertainty.array, after.uncertainty.array)
        assert dict(after.meta) == dict(before.meta)
    elif isinstance(before, Table):
        assert type(after) is type(before) and after.colnames == before.colnames
        for name in before.colnames:
            assert_unchanged(np.asarray(before[name]), np.asarray(after[name]))
            assert getattr(after[name], "unit", None) == getattr(before[name], "unit", None)
    elif isinstance(before, (list, tuple)):
        assert type(after) is type(before) and len(after) == len(before)
        for b, a in zip(before, after):
            assert_unchanged(b, a)
    else:
        assert after == before


def expected_unit(unit):
    return u.Unit(unit) if unit else u.dimensionless_unscaled


# --------------------------------------------------------------------------- frames in


@settings(max_examples=40, **PROPS)
@given(stack=stacks())
def test_as_frames_and_framestack_accept_or_refuse_cleanly(stack):
    frames, unit = stack
    before = snapshot(frames)
    out = documented_outcome(lambda: as_frames(frames))
    assert_unchanged(before, frames)
    if out is None:
        return
    assert len(out) == len(frames)
    for ccd, given_frame in zip(out, frames):
        assert isinstance(ccd, CCDData)
        assert ccd.data.dtype == np.float64 and ccd.data.dtype.isnative
        source = np.asarray(getattr(given_frame, "data", given_frame))
        assert np.array_equal(ccd.data, source.astype(float), equal_nan=True)
    assert out[0].unit == expected_unit(unit)
    stack_ = documented_outcome(lambda: astrosr.FrameStack(frames))
    assert_unchanged(before, frames)
    if stack_ is None:
        return
    assert len(stack_) == len(frames) and stack_.shape == out[0].data.shape
    assert astrosr.FrameStack.parse(stack_) is stack_
    good = stack_.good
    assert good.any(axis=(1, 2)).all()  # a frame with no usable pixel is refused
    assert np.all(stack_.data[~good] == 0.0) and np.all(np.isinf(stack_.var[~good]))
    assert np.all(np.isfinite(stack_.data)) and np.all(stack_.var[good] > 0)
    assert np.all(np.isfinite(stack_.var[good]))
    cube = np.array([c.data for c in out])
    assert not np.any(good & ~np.isfinite(cube))


@pytest.mark.parametrize("make", [
    lambda d: [CCDData(d, unit="adu"), CCDData(d, unit="electron")],
    lambda d: [CCDData(d, unit="Jy/pixel"), CCDData(d, unit="mJy/pixel")],
    lambda d: [NDData(d, unit="MJy/sr"), NDData(d, unit="adu"), NDData(d, unit="MJy/sr")],
])
def test_mixed_units_are_refused_everywhere(make):
    frames = make(np.random.default_rng(0).normal(100.0, 5.0, (16, 16)))
    for call in (lambda: as_frames(frames), lambda: astrosr.FrameStack(frames),
                 lambda: astrosr.fuse(frames, np.zeros((len(frames), 2)), scale=2),
                 lambda: astrosr.register_stack(frames)):
        with pytest.raises(u.UnitsError, match="same unit"):
            call()


def test_a_fully_masked_frame_is_refused():
    data = np.ones((5, 6))
    frames = [CCDData(data, unit="adu"), CCDData(data, unit="adu", mask=np.ones((5, 6), bool))]
    with pytest.raises(ValueError, match=r"frames\[1\] has no usable pixel"):
        astrosr.FrameStack(frames)
    with pytest.raises(ValueError, match=r"frames\[1\] has no usable pixel"):
        astrosr.fuse(frames, [(0, 0), (0, 0)], scale=2)


#: Integer dtypes and the BZERO astropy writes for them (None: stored as they are).
FITS_INTEGERS = (("uint16", 32768), ("int16", None), (">i2", None), ("uint32", 2 ** 31),
                 ("int8", -128), ("uint8", None))


@settings(max_examples=20, **PROPS)
@given(kind=st.sampled_from(FITS_INTEGERS + (("float32", None), (">f4", None))),
       shape=st.sampled_from(((1, 1), (1, 9), (9, 1), (6, 7), (33, 20))), seed=seeds,
       bunit=st.sampled_from((("ADU", u.adu), ("ELECTRONS", u.electron), ("e-", u.electron),
                              ("counts", u.count), ("MJy/sr", u.MJy / u.sr), ("", u.one))),
       blank=st.booleans())
def test_fits_round_trip_through_as_frames(kind, shape, seed, bunit, blank):
    """Integers that need BZERO (uint16 above 32767) and big-endian data read back exactly."""
    dtype, bzero = kind
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is not None:
        arrays = [rng.integers(info.min, int(info.max) + 1, shape, dtype=np.int64).astype(dtype)
                  for _ in range(2)]
    else:
        arrays = [rng.normal(0.0, 1e3, shape).astype(dtype) for _ in range(2)]
        arrays[0].reshape(-1)[0] = np.nan
    folder = tempfile.mkdtemp()
    try:
        paths = []
        for i, a in enumerate(arrays):
            hdu = fits.PrimaryHDU(a.copy(), uint=True)
            hdu.header["BUNIT"] = bunit[0]
            if blank and info is not None and bzero is None:
                hdu.header["BLANK"] = int(a.reshape(-1)[0])
            paths.append(os.path.join(folder, f"frame_{i}.fits"))
            hdu.writeto(paths[-1])
        header = fits.getheader(paths[0])
        assert header.get("BZERO") == bzero
        for frames in (as_frames(paths), as_frames(os.path.join(folder, "frame_*.fits"))):
            for ccd, a in zip(frames, arrays):
                expected = a.astype(float)
                if blank and info is not None and bzero is None:
                    expected[a == a.reshape(-1)[0]] = np.nan
                assert ccd.data.dtype == np.float64 and ccd.data.dtype.isnative
                assert np.array_equal(ccd.data, expected, equal_nan=True)
                assert ccd.unit == bunit[1]
    finally:
        shutil.rmtree(folder)


def test_file_errors_are_the_documented_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such FITS file"):
        as_frames([tmp_path / "missing.fits"])
    with pytest.raises(FileNotFoundError, match="matches"):
        as_frames(str(tmp_path / "none_*.fits"))
    text = tmp_path / "notes.fits"
    text.write_text("not a FITS file\n" * 200)
    with pytest.raises(OSError, match="not a FITS file"):
        as_frames([text])
    ccd = CCDData(np.ones((3, 4)), unit="adu")
    write_fits(ccd, tmp_path / "out.fits")
    with pytest.raises(FileExistsError):
        write_fits(ccd, tmp_path / "out.fits")
    with pytest.raises(FileNotFoundError):
        write_fits(ccd, tmp_path / "no" / "such" / "folder.fits")
    with pytest.raises(TypeError, match="not a single frame"):
        as_frames(ccd)


# --------------------------------------------------------------------------- shift tables


@settings(max_examples=30, **PROPS)
@given(n=st.integers(1, 6), seed=seeds)
def test_every_accepted_shift_table_means_the_same_shifts(n, seed):
    """Lists of pairs, arrays, Table and QTable (units in pix, mpix or none) agree."""
    d = np.random.default_rng(seed).uniform(-3.0, 3.0, (n, 2))
    rot = np.random.default_rng(seed + 1).uniform(-0.05, 0.05, n)
    forms = [
        [tuple(p) for p in d], tuple(map(list, d)), d, d.astype(">f8"),
        Table({"dx": d[:, 0], "dy": d[:, 1]}),
        Table({"dx": d[:, 0], "dy": d[:, 1]}, units={"dx": u.pix, "dy": u.pix}),
        Table({"dx": d[:, 0] * 1e3, "dy": d[:, 1] * 1e3}, units={"dx": u.mpix, "dy": u.mpix}),
        QTable({"dx": d[:, 0] * u.pix, "dy": d[:, 1] * u.pix}),
        QTable({"frame": np.arange(n), "dx": d[:, 0] * u.pix, "dy": d[:, 1] * u.pix,
                "dx_err": np.zeros(n) * u.pix}),
    ]
    for form in forms:
        before = snapshot(form)
        table = geometry_table(form, n)
        assert_unchanged(before, form)
        assert table.colnames[:3] == ["frame", "dx", "dy"]
        np.testing.assert_allclose(table["dx"].to_value(u.pix), d[:, 0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(table["dy"].to_value(u.pix), d[:, 1], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(shift_array(form, n), d, rtol=1e-12, atol=1e-12)
    # A rotation column: deg as numbers or Quantity, or radians in a Table column's unit.
    for rotation in (np.rad2deg(rot), np.rad2deg(rot) * u.deg, rot * u.rad):
        table = geometry_table(QTable({"dx": d[:, 0], "dy": d[:, 1], "rotation": rotation}), n)
        np.testing.assert_allclose(table["rotation"].to_value(u.deg), np.rad2deg(rot), atol=1e-12)
    table = geometry_table(Table({"dx": d[:, 0], "dy": d[:, 1], "rotation": rot},
                                 units={"rotation": u.rad}), n)
    np.testing.assert_allclose(table["rotation"].to_value(u.deg), np.rad2deg(rot), atol=1e-12)


#: What geometry_table refuses, with the exception and the message.
REFUSED = [
    ("list of dicts", [{"dx": 0.0, "dy": 0.0}] * 3, TypeError, "array of numbers"),
    ("dict of columns", {"dx": [0, 1, 2], "dy": [0, 0, 0]}, TypeError, "array of numbers"),
    ("strings", [("a", "b")] * 3, TypeError, "array of numbers"),
    ("ragged rows", [(0, 0), (1,), (2, 2)], TypeError, "array of numbers"),
    ("None", None, ValueError, r"\(n, 2\) array"),
    ("flat list", [0.0] * 6, ValueError, r"\(n, 2\) array"),
    ("three columns", np.zeros((3, 3)), ValueError, r"\(n, 2\) array"),
    ("too few rows", np.zeros((2, 2)), ValueError, "2 rows but there are 3 frames"),
    ("NaN", [(0, 0), (np.nan, 0), (0, 0)], ValueError, "NaN or inf"),
    ("inf", [(0, 0), (0, np.inf), (0, 0)], ValueError, "NaN or inf"),
    ("no dy", Table({"dx": [0.0, 1, 2]}), ValueError, r"lacks column\(s\) \['dy'\]"),
    ("masked dx", Table({"dx": MaskedColumn([0.0, 1, 2], mask=[0, 1, 0]), "dy": [0.0, 0, 0]}),
     ValueError, "masked"),
    ("masked array", np.ma.array(np.zeros((3, 2)), mask=[[0, 0], [1, 0], [0, 0]]), ValueError,
     "masked"),
    ("arcsec QTable", QTable({"dx": [0, 1, 2] * u.arcsec, "dy": [0, 0, 0] * u.arcsec}),
     u.UnitsError, "must be in pixels"),
    ("arcsec Table", Table({"dx": [0.0, 1, 2], "dy": [0.0, 0, 0]},
                           units={"dx": u.arcsec, "dy": u.arcsec}), u.UnitsError,
     "must be in pixels"),
    ("rotation in m", QTable({"dx": [0.0] * 3, "dy": [0.0] * 3, "rotation": [0, 1, 2] * u.m}),
     u.UnitsError, "'rotation' must be in deg"),
    ("NaN rotation", QTable({"dx": [0.0] * 3, "dy": [0.0] * 3, "rotation": [0, np.nan, 0]}),
     ValueError, "'rotation' contains NaN"),
    ("masked rotation", Table({"dx": [0.0] * 3, "dy": [0.0] * 3,
                               "rotation": MaskedColumn([0.0, 1, 2], mask=[0, 0, 1])}),
     ValueError, "'rotation' has masked"),
    ("negative scale", QTable({"dx": [0.0] * 3, "dy": [0.0] * 3, "scale": [1.0, -1, 1]}),
     ValueError, "'scale' must be > 0"),
]


@pytest.mark.parametrize("label, geometry, error, match", REFUSED, ids=[r[0] for r in REFUSED])
def test_geometry_table_refuses_with_a_clear_error(label, geometry, error, match):
    with pytest.raises(error, match=match) as info:
        geometry_table(geometry, 3)
    check_documented(info.value)
    frames = [CCDData(np.ones((4, 5)), unit="adu") for _ in range(3)]
    with pytest.raises(DOCUMENTED) as info:
        astrosr.fuse(frames, geometry, scale=2)
    check_documented(info.value)


# --------------------------------------------------------------------------- fuse: any input


METHOD_OPTIONS = st.sampled_from((
    ("drizzle", {}), ("drizzle", {"pixfrac": 0.5}), ("drizzle", {"pixfrac": 0.01}),
    ("shift_and_add", {}),
    ("reconstruct", {"psf": GaussianPSF(0.8), "max_iter": 15}),
    ("reconstruct", {"psf": np.array([[1.0]]), "max_iter": 15}),
))


@settings(max_examples=80, **PROPS)
@given(data=st.data(), method=METHOD_OPTIONS,
       scale=st.sampled_from((1, 2, 3, 1.5)), reject=st.sampled_from((None, False)))
def test_fuse_returns_a_clean_result_or_a_documented_error(data, method, scale, reject):
    method, options = method
    small = st.one_of(st.sampled_from(TINY), st.tuples(st.integers(1, 20), st.integers(1, 24)))
    frames, unit = data.draw(stacks(shape=small if method == "reconstruct" else shapes))
    geometry = data.draw(geometries(len(frames)))
    if reject is not None:
        options = {**options, "reject": reject}
    before, geometry_before = snapshot(frames), snapshot(geometry)
    out = documented_outcome(lambda: astrosr.fuse(frames, geometry, scale=scale, method=method,
                                                  **options))
    assert_unchanged(before, frames)
    assert_unchanged(geometry_before, geometry)
    if out is None:
        return
    ny, nx = np.shape(getattr(frames[0], "data", frames[0]))
    assert out.shape == (int(round(ny * scale)), int(round(nx * scale)))
    assert out.unit == expected_unit(unit)
    assert np.all(np.isfinite(out.data)) and np.all(out.data[out.mask] == 0.0)
    var = out.uncertainty.array
    assert np.all(np.isfinite(var)) and np.all(var >= 0)
    assert out.meta["NCOMBINE"] == len(frames)
    assert out.weight.shape == out.shape and out.rejected.shape == (len(frames), ny, nx)


def test_drizzle_of_one_pixel_wide_frames_with_rotation_says_why():
    frames = [CCDData(np.ones((1, 6)), unit="adu") for _ in range(2)]
    geometry = QTable({"dx": [0.0, 0.2], "dy": [0.0, 0.0], "rotation": [0.0, 1.0] * u.deg})
    with pytest.raises(ValueError, match="at least 2 pixels along each axis"):
        astrosr.fuse(frames, geometry, scale=2)
    # Pure shifts take any shape.
    assert astrosr.fuse(frames, [(0, 0), (0.2, 0)], scale=2).shape == (2, 12)


# --------------------------------------------------------------------------- flux


def bordered_frames(rng, n, shape, border):
    """Frames whose light lies ``border`` pixels inside their edges (zero around it)."""
    ny, nx = shape
    cube = np.zeros((n, ny + 2 * border, nx + 2 * border))
    cube[:, border:-border, border:-border] = rng.normal(50.0, 30.0, (n, ny, nx))
    return cube


@settings(max_examples=30, **PROPS)
@given(n=st.integers(1, 5), shape=st.tuples(st.integers(1, 30), st.integers(1, 40)), seed=seeds,
       method=st.sampled_from(("drizzle", "shift_and_add")), scale=st.sampled_from((1, 2, 3, 2.5)),
       unit=st.sampled_from(UNITS), weighted=st.booleans())
def test_shift_fusion_keeps_the_total_flux(n, shape, seed, method, scale, unit, weighted):
    """Drizzle (pixfrac 1) and shift-and-add conserve flux exactly.

    The frames' light lies 5 pixels inside their edges and the shifts are within 1.5 pixels:
    every output pixel within a pixel of any frame's footprint edge has no light in any frame,
    and elsewhere every frame covers each output pixel fully (pixfrac 1 drops tile the grid),
    so the output is the weighted mean of the frames' fluxes pixel by pixel, and its total the
    weighted mean of their totals (per-pixel units) or ``scale**2`` times that (surface
    brightness: each output pixel keeps the surface brightness). Float64 throughout: 1e-10.
    """
    if method == "shift_and_add" and scale != int(scale):
        scale = int(scale)
    rng = np.random.default_rng(seed)
    cube = bordered_frames(rng, n, shape, border=5)
    shifts = rng.uniform(-1.5, 1.5, (n, 2))
    shifts[0] = 0.0
    weights = rng.uniform(0.2, 5.0, n) if weighted else np.ones(n)
    frames = [CCDData(c, unit=unit) for c in cube]
    out = astrosr.fuse(frames, shifts, scale=scale, method=method, weights=weights, reject=False)
    totals = cube.sum(axis=(1, 2))
    expected = np.sum(weights * totals) / np.sum(weights)
    area = 1.0 if expected_unit(unit) in map(u.Unit, PER_PIXEL) else scale ** 2
    got = out.data[~out.mask].sum()
    assert got == pytest.approx(expected * area, rel=1e-10, abs=1e-10 * np.abs(cube).sum() * area)
    assert np.all(out.data[out.mask] == 0.0)


@settings(max_examples=15, **PROPS)
@given(n=st.integers(2, 4), seed=seeds, scale=st.sampled_from((2, 3)),
       kind=st.sampled_from(("rigid", "similarity")), unit=st.sampled_from(("electron", "MJy/sr")))
def test_drizzle_keeps_the_flux_of_rotated_frames(n, seed, scale, kind, unit):
    """The drizzle package's kernel (rotation, scale): flux kept to its single precision.

    Footprints of pixfrac-1 drops tile the plane whatever the rotation, each input pixel's
    flux is spread over its footprint's area, and the light lies 8 pixels inside the frames
    (rotations of 3 degrees move a 30-pixel frame's corners by under 1.1 pixels): the same
    argument as for shifts. A frame's weight is per input pixel (`astrosr.resample`: the
    output weight is ``sum w a / drop area``, the drizzle package's), so per output pixel a
    frame of footprint area ``A_i`` weighs ``w_i / A_i``: the total is the mean of the frames'
    totals with those weights (frames of one sky have one total, whatever the weights).
    Single precision sums: 1e-5 of the total.
    """
    rng = np.random.default_rng(seed)
    cube = bordered_frames(rng, n, (14, 14), border=8)
    table = QTable({"dx": rng.uniform(-1, 1, n) * u.pix, "dy": rng.uniform(-1, 1, n) * u.pix,
                    "rotation": rng.uniform(-3, 3, n) * u.deg})
    if kind == "similarity":
        table["scale"] = rng.uniform(0.98, 1.02, n)
    table["dx"][0] = table["dy"][0] = 0.0 * u.pix
    table["rotation"][0] = 0.0 * u.deg
    if kind == "similarity":
        table["scale"][0] = 1.0
    frames = [CCDData(c, unit=unit) for c in cube]
    out = astrosr.fuse(frames, table, scale=scale, method="drizzle", weights=np.ones(n),
                       reject=False)
    geo_scale = table["scale"] if kind == "similarity" else np.ones(n)
    weight = 1.0 / (scale / geo_scale) ** 2  # per output pixel: w_i / A_i, with w_i = 1
    expected = np.sum(weight * cube.sum(axis=(1, 2))) / np.sum(weight)
    expected *= 1.0 if unit == "electron" else scale ** 2
    got = out.data[~out.mask].sum()
    assert got == pytest.approx(expected, rel=1e-5)


@settings(max_examples=30, **PROPS)
@given(data=st.data(), method=st.sampled_from(("drizzle", "shift_and_add")),
       pixfrac=st.floats(0.05, 1.0), scale=st.sampled_from((1, 2, 3, 1.7)),
       unit=st.sampled_from(UNITS), level=st.floats(1e-3, 1e4), sign=st.sampled_from((1, -1)))
def test_a_flat_sky_stays_flat(data, method, pixfrac, scale, unit, level, sign):
    """Constant frames (any mask, NaN, shift, pixfrac, scale) give a constant output.

    Every covered output pixel is a weighted mean of drops that all carry ``level`` per input
    pixel: ``level / scale**2`` per output pixel in per-pixel units (the flux of one input
    pixel is spread over ``scale**2`` output pixels), ``level`` in surface-brightness units.
    """
    if method == "shift_and_add":
        scale, options = int(scale), {}
    else:
        options = {"pixfrac": pixfrac}
    level *= sign
    n = data.draw(st.integers(1, 4))
    ny, nx = data.draw(shapes)
    rng = np.random.default_rng(data.draw(seeds))
    frames = []
    for i in range(n):
        d = np.full((ny, nx), level)
        mask = bad_pixels(rng, d.shape, "random" if i else "none")
        d[rng.random(d.shape) < 0.1] = np.nan
        d.reshape(-1)[0], mask.reshape(-1)[0] = level, False  # one good pixel at least
        frames.append(CCDData(d, unit=unit, mask=mask))
    shifts = rng.uniform(-2.0, 2.0, (n, 2))
    shifts[0] = 0.0
    out = astrosr.fuse(frames, shifts, scale=scale, method=method, reject=False, **options)
    per_pixel = expected_unit(unit) in map(u.Unit, PER_PIXEL)
    expected = level / scale ** 2 if per_pixel else level
    covered = out.data[~out.mask]
    assert covered.size > 0
    np.testing.assert_allclose(covered, expected, rtol=1e-10)


# --------------------------------------------------------------------------- registration


@pytest.fixture(scope="module")
def sky():
    return simulate.make_sky((96, 96), n_stars=25, n_galaxies=2, nebula=True, nebula_flux=20.0,
                             star_flux=(2e3, 3e4), seed=3)


@settings(max_examples=8, **PROPS)
@given(seed=seeds, n=st.integers(2, 4), form=st.sampled_from(("array", "pairs", "qtable")))
def test_observe_then_register_recovers_the_shifts(sky, seed, n, form):
    """A frame dithered by a known sub-pixel shift registers back to it within 5 sigma."""
    rng = np.random.default_rng(seed)
    true = rng.uniform(-1.5, 1.5, (n, 2))
    true[0] = 0.0
    shifts = {"array": true, "pairs": [tuple(p) for p in true],
              "qtable": QTable({"dx": true[:, 0] * u.pix, "dy": true[:, 1] * u.pix})}[form]
    before = snapshot(sky), snapshot(shifts)
    stack = simulate.observe(sky, shifts=shifts, scale=3, psf=GaussianPSF(1.5), seed=seed)
    assert_unchanged(before[0], sky)
    assert_unchanged(before[1], shifts)
    assert len(stack) == n and stack.frames[0].shape == (32, 32)
    np.testing.assert_allclose(np.column_stack([stack.shifts["dx"].to_value(u.pix),
                                                stack.shifts["dy"].to_value(u.pix)]), true)
    frames_before = snapshot(stack.frames)
    table = astrosr.register_stack(stack.frames)
    assert_unchanged(frames_before, stack.frames)
    got = np.column_stack([table["dx"].to_value(u.pix), table["dy"].to_value(u.pix)])
    err = np.column_stack([table["dx_err"].to_value(u.pix), table["dy_err"].to_value(u.pix)])
    assert np.all(got[0] == 0.0) and np.all(err[0] == 0.0)
    assert np.all(np.isfinite(err[1:])) and np.all(err[1:] > 0)
    assert np.all(np.abs(got - true) <= 5.0 * err + 1e-3), (got - true) / np.maximum(err, 1e-9)
    one = astrosr.register(stack.frames[1], stack.frames[0])
    assert abs(one.dx - true[1, 0]) <= 5.0 * one.dx_err + 1e-3
    assert abs(one.dy - true[1, 1]) <= 5.0 * one.dy_err + 1e-3


@settings(max_examples=40, **PROPS)
@given(stack=stacks(max_frames=3, shape=st.one_of(st.sampled_from(TINY),
                                                  st.tuples(st.integers(1, 24),
                                                            st.integers(1, 24)))),
       reference=st.sampled_from((0, -1, 5)), transform=st.sampled_from(("shift", "rigid")))
def test_registration_returns_a_table_or_a_documented_error(stack, reference, transform):
    frames, _ = stack
    before = snapshot(frames)
    table = documented_outcome(lambda: astrosr.register_stack(
        frames, reference=reference, transform=transform, method="correlation", max_iter=3))
    assert_unchanged(before, frames)
    if table is not None:
        assert len(table) == len(frames)
        assert np.all(np.isfinite(table["dx"])) and np.all(np.isfinite(table["dx_err"]))
    if len(frames) >= 2:
        pair = documented_outcome(lambda: astrosr.register(frames[1], frames[0]))
        assert_unchanged(before, frames)
        if pair is not None:
            assert np.isfinite([pair.dx, pair.dy, pair.dx_err, pair.dy_err]).all()


def test_registration_of_tiny_frames_refuses_without_numpy_warnings():
    cube = np.random.default_rng(0).normal(100.0, 30.0, (3, 4, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(ValueError, match="do not overlap"):
            astrosr.register_stack(cube)


# --------------------------------------------------------------------------- geometry helpers


@settings(max_examples=30, **PROPS)
@given(dx=st.floats(-50, 50), dy=st.floats(-50, 50), rotation=st.floats(-180, 180),
       scale=st.floats(0.5, 2.0), shape=shapes, seed=seeds)
def test_similarity_maps_back_and_forth(dx, dy, rotation, scale, shape, seed):
    """DESIGN.md's convention: frame_to_reference inverts reference_to_frame, and a pure shift
    moves a source at (x, y) to (x + dx, y + dy)."""
    from astrosr.geometry import Similarity, frame_centre

    t = Similarity(dx, dy, rotation, scale, center=frame_centre(shape))
    x, y = np.random.default_rng(seed).uniform(-10, 60, (2, 25))
    qx, qy = t.reference_to_frame(x, y)
    bx, by = t.frame_to_reference(qx, qy)
    np.testing.assert_allclose(bx, x, atol=1e-9)
    np.testing.assert_allclose(by, y, atol=1e-9)
    sx, sy = Similarity(dx, dy, center=frame_centre(shape)).reference_to_frame(x, y)
    np.testing.assert_allclose(sx, x + dx, atol=1e-12)
    np.testing.assert_allclose(sy, y + dy, atol=1e-12)


@settings(max_examples=20, **PROPS)
@given(dx=st.floats(-20, 20), dy=st.floats(-20, 20), seed=seeds, cd=st.booleans())
def test_shift_wcs_moves_sources_by_the_shift(dx, dy, seed, cd):
    """A source of the reference at pixel (x, y) is at (x + dx, y + dy) of the shifted WCS."""
    from astropy.wcs import WCS

    from astrosr.nddata import shift_wcs

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval, w.wcs.crpix = [150.0, 2.0], [20.5, 10.5]
    if cd:
        w.wcs.cd = np.array([[-1e-4, 2e-5], [1e-5, 1e-4]])
    else:
        w.wcs.cdelt = [-1e-4, 1e-4]
    header = w.to_header_string()
    x, y = np.random.default_rng(seed).uniform(0, 40, (2, 10))
    shifted = shift_wcs(w, dx, dy)
    assert w.to_header_string() == header  # the input WCS is left alone
    sky = w.pixel_to_world_values(x, y)
    px, py = shifted.world_to_pixel_values(*sky)
    np.testing.assert_allclose(px, x + dx, atol=1e-7)
    np.testing.assert_allclose(py, y + dy, atol=1e-7)


# --------------------------------------------------------------------------- identity


@settings(max_examples=30, **PROPS)
@given(shape=shapes, seed=seeds, unit=st.sampled_from(UNITS),
       unc=st.sampled_from(("none", "var", "std", "ivar")),
       method=st.sampled_from((("drizzle", {}), ("drizzle", {"pixfrac": 0.3}),
                               ("shift_and_add", {}))),
       masked=st.booleans())
def test_one_frame_at_scale_one_is_returned_as_it_is(shape, seed, unit, unc, method, masked):
    rng = np.random.default_rng(seed)
    data = rng.normal(100.0, 30.0, shape)
    mask = bad_pixels(rng, shape, "random" if masked else "none")
    mask.reshape(-1)[0] = False
    frame = CCDData(data, unit=unit, mask=mask, uncertainty=uncertainty(unc, data, rng))
    out = astrosr.fuse([frame], [(0.0, 0.0)], scale=1, method=method[0], **method[1])
    assert out.unit == frame.unit and out.shape == shape
    np.testing.assert_array_equal(out.mask, mask)
    good = ~mask
    np.testing.assert_allclose(out.data[good], data[good], rtol=1e-6, atol=0)
    if frame.uncertainty is not None:
        assert type(out.uncertainty) is type(frame.uncertainty)
        np.testing.assert_allclose(out.uncertainty.array[good], frame.uncertainty.array[good],
                                   rtol=1e-6)


@settings(max_examples=10, **PROPS)
@given(shape=st.one_of(st.sampled_from(((1, 1), (1, 9), (9, 1), (2, 2))),
                       st.tuples(st.integers(1, 20), st.integers(1, 20))),
       seed=seeds, unit=st.sampled_from(UNITS),
       unc=st.sampled_from(("none", "constant", "poisson")))
def test_reconstruct_of_one_frame_with_a_delta_psf_is_the_frame(shape, seed, unit, unc):
    """At scale 1 with a delta PSF the observation model is the identity, and the maximum-
    likelihood image is the frame itself where it is positive and not a flat sky (no
    pedestal): Richardson-Lucy run to convergence returns it, to its single precision.

    The frame is a ramp from 1 to 100 with noise of 0.3: structure far above the noise,
    so no pedestal is taken off (a frame of pure noise is a flat sky, whose pixels below
    the sky the non-negative image cannot follow). Its variance is none, constant or
    Poisson-like (``data + 4``). (Per-pixel variances unrelated to the data make the noise
    model fit a chance slope with a background far above the data: the iterations then
    crawl, and 500 of them stop short of the frame by up to the 0.2 sigma.)
    """
    rng = np.random.default_rng(seed)
    y, x = np.indices(shape)
    ramp = (x / max(shape[1] - 1, 1) + y / max(shape[0] - 1, 1)) / 2
    data = 1.0 + 99.0 * ramp + np.abs(rng.normal(0.0, 0.3, shape))
    var = {"none": None, "constant": VarianceUncertainty(np.full(shape, 4.0)),
           "poisson": VarianceUncertainty(data + 4.0)}[unc]
    frame = CCDData(data, unit=unit, uncertainty=var)
    out = documented_outcome(lambda: astrosr.fuse(
        [frame], [(0.0, 0.0)], scale=1, method="reconstruct", psf=np.array([[1.0]]), tol=1e-12,
        max_iter=500))
    assert out is not None
    assert out.unit == frame.unit and not out.mask.any()
    np.testing.assert_allclose(out.data, data, rtol=1e-5, atol=1e-5 * data.max())


# --------------------------------------------------------------------------- determinism


@pytest.mark.filterwarnings("ignore:the frames are not reproduced")  # random frames: no one sky
@settings(max_examples=10, **PROPS)
@given(seed=seeds, n=st.integers(1, 4), method=st.sampled_from(
    (("drizzle", {"pixfrac": 0.6}), ("shift_and_add", {}),
     ("reconstruct", {"psf": GaussianPSF(1.0), "max_iter": 20}))),
    geometry=st.sampled_from(("shift", "rigid")))
def test_the_same_input_gives_the_same_output(seed, n, method, geometry):
    rng = np.random.default_rng(seed)
    cube = rng.normal(100.0, 10.0, (n, 12, 14))
    cube[:, 4:7, 5:8] += 500.0
    frames = [CCDData(c, unit="electron", uncertainty=VarianceUncertainty(np.full(c.shape, 100.0)))
              for c in cube]
    table = QTable({"dx": rng.uniform(-1, 1, n) * u.pix, "dy": rng.uniform(-1, 1, n) * u.pix})
    if geometry == "rigid":
        table["rotation"] = rng.uniform(-2, 2, n) * u.deg
    first, second = (astrosr.fuse(frames, table, scale=2, method=method[0], **method[1])
                     for _ in range(2))
    assert np.array_equal(first.data, second.data)
    assert np.array_equal(first.uncertainty.array, second.uncertainty.array)
    assert np.array_equal(first.mask, second.mask)
    assert np.array_equal(first.weight, second.weight)
    assert np.array_equal(first.rejected, second.rejected)


@settings(max_examples=5, **PROPS)
@given(seed=seeds)
def test_observe_and_register_are_deterministic(sky, seed):
    a, b = (simulate.observe(sky, n_frames=3, scale=3, psf=GaussianPSF(1.5), seed=seed)
            for _ in range(2))
    for fa, fb in zip(a.frames, b.frames):
        assert np.array_equal(fa.data, fb.data) and np.array_equal(fa.mask, fb.mask)
    first, second = (astrosr.register_stack(a.frames) for _ in range(2))
    for name in ("dx", "dy", "dx_err", "dy_err"):
        assert np.array_equal(first[name], second[name])


# --------------------------------------------------------------------------- simulate


@settings(max_examples=20, **PROPS)
@given(shape=st.tuples(st.integers(1, 12), st.integers(1, 12)), scale=st.integers(1, 4),
       n=st.integers(1, 3), seed=seeds, bad=st.sampled_from((0.0, 0.1)))
def test_observe_gives_frames_of_the_detector_grid(shape, scale, n, seed, bad):
    truth = np.random.default_rng(seed).uniform(0.0, 50.0, (shape[0] * scale, shape[1] * scale))
    before = truth.copy()
    stack = simulate.observe(truth, n_frames=n, scale=scale, seed=seed, bad_pixel_fraction=bad)
    assert np.array_equal(truth, before)
    assert len(stack.frames) == n == len(stack.shifts)
    for f in stack.frames:
        assert f.shape == shape and f.unit == u.electron
        assert np.all(np.isfinite(f.data)) and np.all(f.uncertainty.array > 0)
    assert stack.truth.shape == truth.shape


@pytest.mark.parametrize("truth, options, match", [
    (np.ones((5, 8)), {"scale": 2}, "divisible by scale"),
    (-np.ones((4, 4)), {"scale": 2}, "non-negative"),
    (np.ones((4, 4)), {"scale": 2, "sky": -1.0}, "sky must be finite"),
    (np.ones((4, 4)), {"scale": 2, "gain": 0.0}, "gain must be > 0"),
    (np.ones((4, 4)), {"scale": 2, "shifts": [(0, 0, 0)]}, r"\(n, 2\)"),
    (np.ones((4, 4)), {"scale": 2, "n_frames": 0}, "n_frames must be >= 1"),
])
def test_observe_refuses_bad_input(truth, options, match):
    with pytest.raises(ValueError, match=match) as info:
        simulate.observe(truth, **options)
    check_documented(info.value)
