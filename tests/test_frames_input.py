"""Frame input from FITS files: glob patterns, HDU choice, scaling, byte order, units, headers."""
import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, NDData, StdDevUncertainty

from astrosr import nddata, psf, simulate
from astrosr.registration import register_stack

RNG = np.random.default_rng(42)


def _image(shape=(6, 7), dtype=np.float32):
    return RNG.normal(100.0, 5.0, size=shape).astype(dtype)


def _write(path, *hdus):
    fits.HDUList(list(hdus)).writeto(path)
    return path


def _extension_file(path, data, *, name="SCI", primary_cards=None, ext_cards=None):
    primary = fits.PrimaryHDU()
    primary.header.update(primary_cards or {})
    ext = fits.ImageHDU(data, name=name)
    ext.header.update(ext_cards or {})
    return _write(path, primary, ext)


# ---------------------------------------------------------------- glob patterns

def test_pattern_expands_to_files_sorted_by_name_numbers_by_value(tmp_path):
    for i in (10, 2, 1):
        _write(tmp_path / f"frame_{i}.fits", fits.PrimaryHDU(np.full((4, 5), float(i))))
    frames = nddata.as_frames(str(tmp_path / "frame_*.fits"))
    assert [f.data[0, 0] for f in frames] == [1.0, 2.0, 10.0]


def test_pattern_of_zero_padded_names_keeps_name_order(tmp_path):
    for i in (3, 0, 11, 2):
        _write(tmp_path / f"img{i:03d}.fits", fits.PrimaryHDU(np.full((4, 5), float(i))))
    frames = nddata.as_frames(tmp_path / "img0?[0-9].fits")
    assert [f.data[0, 0] for f in frames] == [0.0, 2.0, 3.0, 11.0]


def test_list_mixes_paths_and_patterns_in_order(tmp_path):
    for name, value in (("ref.fits", -1.0), ("a_2.fits", 2.0), ("a_1.fits", 1.0)):
        _write(tmp_path / name, fits.PrimaryHDU(np.full((3, 3), value)))
    frames = nddata.as_frames([tmp_path / "ref.fits", str(tmp_path / "a_*.fits")])
    assert [f.data[1, 1] for f in frames] == [-1.0, 1.0, 2.0]


def test_literal_name_with_brackets_is_read_as_is(tmp_path):
    path = _write(tmp_path / "img[1].fits", fits.PrimaryHDU(np.full((3, 3), 7.0)))
    assert nddata.as_frames([str(path)])[0].data[0, 0] == 7.0


def test_pattern_matching_nothing_is_an_error(tmp_path):
    pattern = str(tmp_path / "nothing_*.fits")
    with pytest.raises(FileNotFoundError, match=r"no FITS file matches '.*nothing_\*\.fits'"):
        nddata.as_frames(pattern)
    with pytest.raises(FileNotFoundError, match="no FITS file matches"):
        nddata.as_frames([pattern])


def test_single_path_that_is_not_a_pattern_is_a_type_error(tmp_path):
    path = _write(tmp_path / "one.fits", fits.PrimaryHDU(np.zeros((3, 3))))
    for single in (str(path), path):
        with pytest.raises(TypeError, match=r"not a single frame: pass a list .* glob pattern"):
            nddata.as_frames(single)


# ---------------------------------------------------------------- HDU choice

@pytest.fixture
def multi_ext(tmp_path):
    """Empty primary, two image extensions (SCI, ERR) and a table (CAT)."""
    sci, err = _image(), _image()
    table = fits.BinTableHDU.from_columns([fits.Column(name="x", format="E", array=np.ones(3))],
                                          name="CAT")
    path = _write(tmp_path / "multi.fits", fits.PrimaryHDU(), fits.ImageHDU(sci, name="SCI"),
                  fits.ImageHDU(err, name="ERR"), table)
    return path, sci, err


def test_empty_primary_is_skipped_by_default(multi_ext):
    path, sci, _ = multi_ext
    np.testing.assert_array_equal(nddata.as_frames([path])[0].data, sci)


@pytest.mark.parametrize("hdu", [2, "ERR", "err", "2"])
def test_hdu_by_index_or_name(multi_ext, hdu):
    path, _, err = multi_ext
    np.testing.assert_array_equal(nddata.as_frames([path], hdu=hdu)[0].data, err)


@pytest.mark.parametrize("hdu, match", [
    ("SCIX", r"multi\.fits has no HDU 'SCIX'"),
    (7, r"multi\.fits has no HDU 7"),
    (3, r"multi\.fits\[3\] is a table, not an image"),
    ("CAT", r"multi\.fits\['CAT'\] is a table, not an image"),
    (0, r"multi\.fits\[0\] holds no data"),
])
def test_bad_hdu_names_the_file_and_the_hdu(multi_ext, hdu, match):
    with pytest.raises(ValueError, match=match):
        nddata.as_frames([multi_ext[0]], hdu=hdu)


def test_file_without_image_is_an_error(tmp_path):
    table = fits.BinTableHDU.from_columns([fits.Column(name="x", format="E", array=np.ones(2))])
    path = _write(tmp_path / "cat.fits", fits.PrimaryHDU(), table)
    with pytest.raises(ValueError, match=r"cat\.fits has no image HDU"):
        nddata.as_frames([path])


@pytest.mark.parametrize("shape", [(3, 4, 5), (9,)])
def test_cube_or_spectrum_asks_for_separate_2d_frames(tmp_path, shape):
    path = _write(tmp_path / "cube.fits", fits.PrimaryHDU(np.zeros(shape, np.float32)))
    match = rf"cube\.fits\[0\] is a {len(shape)}-D image of shape {shape}.*separate 2-D images"
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace(")", r"\)")):
        nddata.as_frames([path])


# ---------------------------------------------------------------- data values and byte order

def test_int16_with_bzero_bscale_gives_exact_float64_physical_values(tmp_path):
    stored = RNG.integers(-32768, 32767, size=(5, 6), dtype=np.int16)
    stored[0, :3] = [-32768, 0, 32767]
    hdu = fits.PrimaryHDU(stored)
    hdu.header["BSCALE"], hdu.header["BZERO"] = 2.0, 32768.0
    path = _write(tmp_path / "i16.fits", hdu)
    ccd = nddata.as_frames([path])[0]
    assert ccd.data.dtype == np.float64 and ccd.data.dtype.isnative
    np.testing.assert_array_equal(ccd.data, 2.0 * stored.astype(np.float64) + 32768.0)
    np.testing.assert_array_equal(ccd.data[0, :3], [-32768.0, 32768.0, 98302.0])
    assert "BZERO" not in ccd.meta and "BSCALE" not in ccd.meta


def test_int16_with_fractional_bscale_is_scaled_in_float64(tmp_path):
    # astropy alone scales 16-bit integers in float32 (7 digits); astrosr keeps float64.
    stored = RNG.integers(-30000, 30000, size=(5, 6), dtype=np.int16)
    stored[0, 0] = -999
    hdu = fits.PrimaryHDU(stored)
    hdu.header.update({"BSCALE": 0.001, "BZERO": 1234.5, "BLANK": -999})
    path = _write(tmp_path / "frac.fits", hdu)
    data = nddata.as_frames([path])[0].data
    expected = stored.astype(np.float64) * 0.001 + 1234.5
    expected[0, 0] = np.nan
    np.testing.assert_array_equal(data, expected)


def test_uint16_reads_exact(tmp_path):
    stored = np.array([[0, 1, 40000], [65535, 32768, 7]], dtype=np.uint16)
    path = _write(tmp_path / "u16.fits", fits.PrimaryHDU(stored))
    data = nddata.as_frames([path])[0].data
    assert data.dtype == np.float64
    np.testing.assert_array_equal(data, stored.astype(np.float64))


def test_unscaled_integer_blank_pixels_become_nan(tmp_path):
    stored = np.arange(12, dtype=np.int32).reshape(3, 4) - 5
    stored[1, 2] = -1
    hdu = fits.PrimaryHDU(stored)
    hdu.header["BLANK"] = -1
    data = nddata.as_frames([_write(tmp_path / "blank.fits", hdu)])[0].data
    expected = stored.astype(np.float64)
    expected[stored == -1] = np.nan
    np.testing.assert_array_equal(data, expected)
    assert np.isnan(data).sum() == 2


def test_big_endian_file_comes_out_native(tmp_path):
    data = _image(dtype=">f4")
    path = _extension_file(tmp_path / "be.fits", data)
    with fits.open(path) as hdul:
        assert not hdul["SCI"].data.dtype.isnative   # FITS is big-endian on disk
    ccd = nddata.as_frames([path])[0]
    assert ccd.data.dtype == np.float64 and ccd.data.dtype.isnative
    np.testing.assert_array_equal(ccd.data, data.astype(np.float64))


def test_big_endian_arrays_in_memory_come_out_native():
    cube = RNG.normal(size=(3, 4, 5)).astype(">f4")
    for frames in (cube, [CCDData(cube[0], unit="adu")], [NDData(cube[0], unit="adu")],
                   [cube[0]], [cube[0].astype(">f8")]):
        ccd = nddata.as_frames(frames)[0]
        assert ccd.data.dtype == np.float64 and ccd.data.dtype.isnative
        np.testing.assert_array_equal(ccd.data, cube[0].astype(np.float64))


def test_big_endian_uncertainty_comes_out_native():
    unc = StdDevUncertainty(np.full((4, 5), 3.0, dtype=">f4"))
    ccd = nddata.as_frames([CCDData(np.ones((4, 5), ">f4"), unit="electron", uncertainty=unc)])[0]
    assert ccd.uncertainty.array.dtype.isnative and isinstance(ccd.uncertainty, StdDevUncertainty)
    np.testing.assert_array_equal(ccd.uncertainty.array, 3.0)
    assert ccd.uncertainty.unit == u.electron


def test_native_float64_ccd_is_passed_through():
    ccd = CCDData(np.ones((4, 5)), unit="adu")
    assert nddata.as_frames([ccd])[0] is ccd


def test_written_file_round_trips_with_uncertainty_and_mask(tmp_path):
    data = _image(dtype=np.float64)
    mask = np.zeros(data.shape, bool)
    mask[2, 3] = True
    ccd = CCDData(data, unit="MJy/sr", uncertainty=StdDevUncertainty(np.full(data.shape, 0.5)),
                  mask=mask)
    back = nddata.as_frames([nddata.write_fits(ccd, tmp_path / "rt.fits")])[0]
    np.testing.assert_array_equal(back.data, data)
    assert back.unit == u.MJy / u.sr and back.mask.sum() == 1 and back.mask[2, 3]
    assert back.uncertainty.array.dtype.isnative
    np.testing.assert_array_equal(nddata.variance_of(back), 0.25)


# ---------------------------------------------------------------- units

@pytest.mark.parametrize("bunit, unit", [
    ("ELECTRONS", u.electron), ("electron", u.electron), ("e-", u.electron),
    ("ELECTRONS/S", u.electron / u.s), ("e-/s", u.electron / u.s),
    ("counts", u.count), ("COUNTS/S", u.count / u.s), ("ADU", u.adu), ("adu", u.adu),
    ("MJy/sr", u.MJy / u.sr), ("DN", u.dn), ("Jy/pixel", u.Jy / u.pix),
])
def test_bunit_becomes_the_unit(tmp_path, bunit, unit):
    hdu = fits.PrimaryHDU(_image())
    hdu.header["BUNIT"] = bunit
    path = _write(tmp_path / "b.fits", hdu)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert nddata.as_frames([path])[0].unit == unit


def test_unknown_bunit_warns_and_reads_dimensionless(tmp_path):
    hdu = fits.PrimaryHDU(_image())
    hdu.header["BUNIT"] = "furlongs"
    path = _write(tmp_path / "odd.fits", hdu)
    with pytest.warns(UserWarning, match=r"odd\.fits: BUNIT 'furlongs' is not a unit"):
        ccd = nddata.as_frames([path])[0]
    assert ccd.unit == u.dimensionless_unscaled


def test_unit_argument_overrides_bunit(tmp_path):
    paths = []
    for bunit in ("furlongs", "adu"):
        hdu = fits.PrimaryHDU(_image())
        hdu.header["BUNIT"] = bunit
        paths.append(_write(tmp_path / f"{bunit}.fits", hdu))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frames = nddata.as_frames(paths, unit="electron")
    assert [f.unit for f in frames] == [u.electron, u.electron]


def test_missing_bunit_is_dimensionless(tmp_path):
    path = _write(tmp_path / "plain.fits", fits.PrimaryHDU(_image()))
    assert nddata.as_frames([path])[0].unit == u.dimensionless_unscaled


def test_bunit_in_the_primary_applies_to_an_extension_without_one(tmp_path):
    path = _extension_file(tmp_path / "pb.fits", _image(), primary_cards={"BUNIT": "ELECTRONS"})
    assert nddata.as_frames([path])[0].unit == u.electron


# ---------------------------------------------------------------- headers

def test_primary_keywords_reach_the_meta_of_an_extension_image(tmp_path):
    path = _extension_file(
        tmp_path / "hdr.fits", _image(),
        primary_cards={"EXPTIME": 300.0, "DATE-OBS": "2024-01-02T03:04:05", "OBJECT": "M31",
                       "CTYPE1": "RA---TAN"},
        ext_cards={"OBJECT": "M31 field 2", "GAIN": 1.5})
    for hdu in (None, 1, "SCI"):
        meta = nddata.as_frames([path], hdu=hdu)[0].meta
        assert meta["EXPTIME"] == 300.0 and meta["DATE-OBS"] == "2024-01-02T03:04:05"
        assert meta["OBJECT"] == "M31 field 2"          # the extension wins
        assert meta["GAIN"] == 1.5 and meta["NAXIS"] == 2
        assert "CTYPE1" not in meta and "SIMPLE" not in meta and "EXTEND" not in meta


def test_primary_image_meta_is_its_own_header(tmp_path):
    hdu = fits.PrimaryHDU(_image())
    hdu.header["EXPTIME"] = 12.5
    path = _write(tmp_path / "p.fits", hdu, fits.ImageHDU(_image(), name="OTHER"))
    assert nddata.as_frames([path])[0].meta["EXPTIME"] == 12.5


# ---------------------------------------------------------------- files that are not FITS

def test_text_file_is_not_a_fits_file(tmp_path):
    path = tmp_path / "notes.fits"
    path.write_text("exposure log\nframe 1 ok\n")
    with pytest.raises(OSError, match=r"notes\.fits is not a FITS file$"):
        nddata.as_frames([path])
    empty = tmp_path / "empty.fits"
    empty.write_bytes(b"")
    with pytest.raises(OSError, match=r"empty\.fits is not a FITS file"):
        nddata.read_fits(empty)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such FITS file: .*absent\.fits"):
        nddata.as_frames([tmp_path / "absent.fits"])


# ---------------------------------------------------------------- end to end

def test_register_stack_reads_a_pattern_of_extension_files(tmp_path, star_field):
    stack = simulate.observe(star_field, n_frames=3, psf=psf.GaussianPSF(1.0), seed=7)
    for i, frame in enumerate(stack.frames):
        _extension_file(tmp_path / f"obs_{i}.fits", np.asarray(frame.data, dtype=">f4"),
                        primary_cards={"EXPTIME": 60.0, "BUNIT": "ELECTRONS"})
    table = register_stack(str(tmp_path / "obs_*.fits"), hdu="SCI")
    for col in ("dx", "dy"):
        np.testing.assert_allclose(u.Quantity(table[col], u.pix).value,
                                   u.Quantity(stack.shifts[col], u.pix).value, atol=0.05)
