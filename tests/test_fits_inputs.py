"""FITS files as frames: damaged files, folders, compression, WCS checks, inputs left untouched.

Glob patterns, HDU choice, plain integer scaling, units and headers are in
test_frames_input.py.
"""
import gzip
import hashlib
import os
import re
import shutil
import warnings
from pathlib import Path

import astropy
import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS

from astrosr import nddata, psf, register_stack, simulate
from astrosr.reading import FITS_SUFFIXES, read_image

RNG = np.random.default_rng(2024)


def _image(shape=(40, 50)):
    return RNG.normal(100.0, 5.0, size=shape).astype(np.float32)


def _write(path, *hdus):
    fits.HDUList(list(hdus) or [fits.PrimaryHDU(_image())]).writeto(path)
    return path


def _gzip(path):
    """``path`` gzip-compressed as ``path.gz`` (``path`` removed)."""
    out = path.with_name(path.name + ".gz")
    out.write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    return out


def _packed(path, data, **options):
    """A tile-compressed image behind an empty primary, as fpack writes it."""
    return _write(path, fits.PrimaryHDU(), fits.CompImageHDU(data, name="SCI", **options))


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ---------------------------------------------------------------- damaged files

def test_file_cut_in_the_middle_of_the_data_is_truncated(tmp_path):
    path = _write(tmp_path / "cut.fits")
    full = path.read_bytes()
    path.write_bytes(full[:2880 + 3000])
    need = 2880 + 40 * 50 * 4
    match = (rf"cut\.fits is truncated \(HDU 0 needs {need} bytes but the file has 5880: the "
             r"copy or the write was cut short\); copy or download it again")
    with pytest.raises(OSError, match=match):
        nddata.as_frames([path])


def test_compressed_files_cut_short_are_truncated(tmp_path):
    plain = _write(tmp_path / "g.fits")
    stream = gzip.compress(plain.read_bytes())
    cut = tmp_path / "cut.fits.gz"
    cut.write_bytes(stream[:len(stream) // 2])
    with pytest.raises(OSError, match=r"cut\.fits\.gz is gzip-compressed and truncated: .*"
                                      r"copy or download it again"):
        nddata.as_frames([cut])
    packed = _packed(tmp_path / "p.fits.fz", _image((120, 100)), quantize_level=0.0)
    data = packed.read_bytes()
    packed.write_bytes(data[:len(data) - 4000])
    with pytest.raises(OSError, match=r"p\.fits\.fz is truncated \(HDU 1 needs at least"):
        nddata.as_frames([packed])
    packed.write_bytes(data[:2880 + 1000])     # in the header of the compressed image
    with pytest.raises(OSError, match=r"p\.fits\.fz is truncated or damaged \(the header of "
                                      r"HDU 1, at byte 2880, is cut short\)"):
        nddata.as_frames([packed])


def test_file_short_of_its_last_padding_reads_without_a_notice(tmp_path, no_warnings):
    data = _image()
    path = _write(tmp_path / "nopad.fits", fits.PrimaryHDU(data))
    path.write_bytes(path.read_bytes()[:2880 + data.nbytes])
    np.testing.assert_array_equal(nddata.as_frames([path])[0].data, data)


def test_truncated_hdu_after_the_image_warns_and_the_image_reads(tmp_path):
    data = _image()
    path = _write(tmp_path / "tail.fits", fits.PrimaryHDU(data),
                  fits.ImageHDU(_image((200, 200)), name="EXTRA"))
    path.write_bytes(path.read_bytes()[:-50000])
    with pytest.warns(AstropyUserWarning, match=r"tail\.fits is truncated \(HDU 1 needs .*HDU 0, "
                                                r"read here, is complete"):
        ccd = nddata.as_frames([path])[0]
    np.testing.assert_array_equal(ccd.data, data)
    with pytest.raises(OSError, match=r"tail\.fits is truncated \(HDU 1 needs"):
        nddata.as_frames([path], hdu="EXTRA")


def _card(data, i, text):
    """``data`` with its header card ``i`` replaced by ``text``."""
    return data[:80 * i] + text.ljust(80).encode() + data[80 * (i + 1):]


@pytest.mark.parametrize("damage, match", [
    (lambda b: os.urandom(5760), r"is not a FITS file$"),
    (lambda b: b[:1000], r"is damaged: it cannot be read as FITS"),             # header cut
    (lambda b: b.replace(b"END" + b" " * 77, b" " * 80, 1), r"is damaged: .*END card"),
    (lambda b: _card(b, 3, "NAXIS1  = 'many'"), r"is damaged: "),
    (lambda b: _card(b, 2, "NAXIS   =                    3"), r"is damaged: "),
])
def test_corrupt_file_names_the_file_and_what_to_do(tmp_path, damage, match):
    path = _write(tmp_path / "bad.fits")
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(OSError, match=r"bad\.fits " + match) as info:
        nddata.as_frames([path])
    if "damaged" in match:
        assert str(info.value).endswith("copy or download it again")


def test_corrupt_compressed_data_is_damaged(tmp_path):
    stream = bytearray(gzip.compress(_write(tmp_path / "g.fits").read_bytes()))
    stream[300:700] = os.urandom(400)
    gz = tmp_path / "bad.fits.gz"
    gz.write_bytes(bytes(stream))
    with pytest.raises(OSError, match=r"bad\.fits\.gz is a damaged gzip-compressed file.*\(.*"
                                      r"\); copy or download it again"):
        nddata.as_frames([gz])
    path = _packed(tmp_path / "p.fits.fz", _image((120, 100)), quantize_level=0.0)
    packed = bytearray(path.read_bytes())
    middle = 5760 + (len(packed) - 5760) // 2                      # in the compressed tiles
    packed[middle:middle + 1000] = bytes(b ^ 0x5A for b in packed[middle:middle + 1000])
    path.write_bytes(bytes(packed))
    with pytest.raises(OSError, match=r"p\.fits\.fz is damaged: it cannot be read as FITS"):
        nddata.as_frames([tmp_path / "p.fits.fz"])


def test_data_not_matching_their_datasum_are_damaged(tmp_path):
    data = _image()
    path = tmp_path / "sum.fits"
    fits.PrimaryHDU(data).writeto(path, checksum=True)
    with fits.open(path, mode="update") as hdul:  # a header edited after: CHECKSUM stale only
        hdul[0].header["OBSERVER"] = "someone"
    np.testing.assert_array_equal(nddata.as_frames([path])[0].data, data)
    damaged = bytearray(path.read_bytes())
    damaged[-3000] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(OSError, match=r"sum\.fits is damaged: the data of HDU 0 do not match "
                                      r"their DATASUM checksum; copy or download it again"):
        nddata.as_frames([path])


def test_non_standard_fits_is_refused(tmp_path):
    path = _write(tmp_path / "ns.fits")
    data = path.read_bytes()
    path.write_bytes(_card(data, 0, "SIMPLE  =                    F"))
    with pytest.raises(OSError, match=r"ns\.fits does not follow the FITS standard \(SIMPLE = F\)"):
        nddata.as_frames([path])


@pytest.mark.parametrize("name, content", [("empty.fits", b""), ("empty.fits.gz", b""),
                                           ("nothing.fits.gz", gzip.compress(b""))])
def test_empty_file_is_not_a_fits_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    match = re.escape(name) + (r" is not a FITS file: it is empty \(0 bytes\)" if not content
                               else r" is (not a FITS file|a damaged gzip)")
    with pytest.raises(OSError, match=match):
        nddata.as_frames([path])
    with pytest.raises(OSError, match=re.escape(name)):
        nddata.read_fits(path)


# ---------------------------------------------------------------- folders

@pytest.fixture
def folder(tmp_path):
    """frame_1, frame_2 (gzip), frame_10 (fpack), and what a folder read leaves out."""
    d = tmp_path / "night"
    d.mkdir()
    _write(d / "frame_1.fits", fits.PrimaryHDU(np.full((4, 5), 1.0)))
    _gzip(_write(d / "frame_2.fits", fits.PrimaryHDU(np.full((4, 5), 2.0))))
    _packed(d / "frame_10.FITS.fz", np.full((4, 5), 10.0), quantize_level=0.0)
    (d / "notes.txt").write_text("seeing 1.2 arcsec\n")
    (d / "._frame_1.fits").write_bytes(b"\0\5\26\7 AppleDouble")   # a hidden file
    (d / "calib").mkdir()
    _write(d / "calib" / "bias.fits", fits.PrimaryHDU(np.full((4, 5), -1.0)))
    return d


@pytest.mark.parametrize("as_given", [lambda d: d, str, lambda d: [d], lambda d: [str(d)]])
def test_folder_reads_its_fits_files_sorted_as_patterns_are(folder, as_given):
    frames = nddata.as_frames(as_given(folder))
    assert [f.data[0, 0] for f in frames] == [1.0, 2.0, 10.0]


def test_folder_mixes_with_files_and_patterns(folder, tmp_path):
    ref = _write(tmp_path / "ref.fits", fits.PrimaryHDU(np.full((4, 5), -5.0)))
    frames = nddata.as_frames([ref, folder, str(folder / "calib" / "*.fits")])
    assert [f.data[0, 0] for f in frames] == [-5.0, 1.0, 2.0, 10.0, -1.0]
    # a pattern matching folders reads the FITS files in each
    assert [f.data[0, 0] for f in nddata.as_frames(str(tmp_path / "nig*"))] == [1.0, 2.0, 10.0]


def test_folder_without_fits_is_an_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "run.log").write_text("ok\n")
    (tmp_path / "logs" / ".hidden.fits").write_bytes(b"")
    for d in (empty, tmp_path / "logs"):
        with pytest.raises(FileNotFoundError, match=rf"folder .*{d.name} holds no FITS file "
                                                    r"\(names ending in \.fits, .*\.fz\)"):
            nddata.as_frames([d])
    assert ".fits.gz" in FITS_SUFFIXES and ".fz" in FITS_SUFFIXES


def test_read_image_of_a_folder_says_it_is_a_folder(folder):
    with pytest.raises(IsADirectoryError, match=r"night is a folder, not a FITS file"):
        read_image(folder, hdu=None, unit=None)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        nddata.read_fits(folder)


# ---------------------------------------------------------------- compression

def test_gzip_file_reads_as_the_plain_file(tmp_path, no_warnings):
    data = _image()
    ext = fits.ImageHDU(data, name="SCI")
    ext.header["BUNIT"] = "electron"
    gz = _gzip(_write(tmp_path / "img.fits", fits.PrimaryHDU(), ext))
    for hdu in (None, "SCI", 1):
        ccd = nddata.as_frames([gz], hdu=hdu)[0]
        assert ccd.data.dtype == np.float64 and ccd.unit == u.electron
        np.testing.assert_array_equal(ccd.data, data.astype(np.float64))


def test_tile_compressed_image_is_found_behind_the_empty_primary(tmp_path, no_warnings):
    data = _image()
    path = _packed(tmp_path / "img.fits.fz", data, quantize_level=0.0,
                   compression_type="GZIP_2")
    for hdu in (None, "SCI", 1, "1"):
        np.testing.assert_array_equal(nddata.as_frames([path], hdu=hdu)[0].data, data)
    with pytest.raises(ValueError, match=r"img\.fits\.fz\[0\] holds no data"):
        nddata.as_frames([path], hdu=0)


def test_quantized_tile_compressed_floats_read_as_astropy_decompresses_them(tmp_path):
    path = _packed(tmp_path / "q.fits.fz", _image())              # fpack's default: quantized
    with fits.open(path) as hdul:
        expected = hdul["SCI"].data.astype(np.float64)
    np.testing.assert_array_equal(nddata.as_frames([path])[0].data, expected)


def _stored(dtype):
    info = np.iinfo(dtype)
    stored = RNG.integers(info.min, info.max, size=(20, 30), dtype=dtype, endpoint=True)
    stored[0, :2] = [info.min, info.max]
    return stored


def _compressed(stored, cards):
    """A tile-compressed HDU storing the integers ``stored`` as they are, with ``cards``."""
    comp = fits.CompImageHDU(stored, name="SCI")
    comp.header.update(cards)
    return comp


def _container(tmp_path, stored, cards, kind):
    if kind == "gzip":
        hdu = fits.PrimaryHDU(stored)
        hdu.header.update(cards)
        return _gzip(_write(tmp_path / "i.fits", hdu))
    path = _write(tmp_path / "i.fits.fz", fits.PrimaryHDU(), _compressed(stored, cards))
    if cards:
        with fits.open(path, do_not_scale_image_data=True) as hdul:   # stored as given
            np.testing.assert_array_equal(hdul[1].data, stored)
    return path


@pytest.mark.parametrize("kind", ["gzip", "fpack"])
@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.int8, np.uint32])
def test_compressed_integers_are_exact_float64(tmp_path, kind, dtype):
    stored = _stored(dtype)
    path = _container(tmp_path, stored, {}, kind)
    data = nddata.as_frames([path])[0].data
    assert data.dtype == np.float64 and data.dtype.isnative
    np.testing.assert_array_equal(data, stored.astype(np.float64))


@pytest.mark.parametrize("kind", ["gzip", "fpack"])
@pytest.mark.parametrize("bscale, bzero", [(2.0, 32768.0), (0.001, 1234.5)])
def test_compressed_bscale_bzero_and_blank_are_scaled_in_float64(tmp_path, kind, bscale, bzero):
    stored = _stored(np.int16)
    stored[1, 1] = -999
    cards = {"BSCALE": bscale, "BZERO": bzero, "BLANK": -999}
    data = nddata.as_frames([_container(tmp_path, stored, cards, kind)])[0].data
    expected = stored.astype(np.float64) * bscale + bzero
    expected[stored == -999] = np.nan
    np.testing.assert_array_equal(data, expected)
    assert np.isnan(data[1, 1])


def test_uint8_and_uint32_plain_files_are_exact(tmp_path):
    for dtype in (np.uint8, np.uint32):
        stored = _stored(dtype)
        path = _write(tmp_path / f"{np.dtype(dtype).name}.fits", fits.PrimaryHDU(stored))
        np.testing.assert_array_equal(nddata.as_frames([path])[0].data,
                                      stored.astype(np.float64))


# ---------------------------------------------------------------- tables and cubes

def test_compressed_table_is_not_an_image(tmp_path):
    table = fits.BinTableHDU.from_columns([fits.Column(name="x", format="E", array=np.ones(3))],
                                          name="CAT")
    gz = _gzip(_write(tmp_path / "cat.fits", fits.PrimaryHDU(), table))
    with pytest.raises(ValueError, match=r"cat\.fits\.gz has no image HDU"):
        nddata.as_frames([gz])
    with pytest.raises(ValueError, match=r"cat\.fits\.gz\['CAT'\] is a table, not an image"):
        nddata.as_frames([gz], hdu="CAT")


def test_cube_names_the_2d_image_of_the_file(tmp_path):
    path = _write(tmp_path / "cube.fits", fits.PrimaryHDU(),
                  fits.CompImageHDU(np.zeros((3, 8, 9), np.float32), name="CUBE"),
                  fits.ImageHDU(_image((8, 9)), name="WHITE"))
    with pytest.raises(ValueError, match=r"cube\.fits\[1\] is a 3-D image of shape \(3, 8, 9\), "
                                         r"not a 2-D frame: .* or pass hdu=2, a 2-D image"):
        nddata.as_frames([path])
    assert nddata.as_frames([path], hdu="WHITE")[0].shape == (8, 9)


# ---------------------------------------------------------------- WCS

def _celestial(**cards):
    header = fits.Header()
    header.update(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1=150.0, CRVAL2=2.0,
                  CRPIX1=20.5, CRPIX2=25.5, CUNIT1="deg", CUNIT2="deg")
    header.update(cards)
    return header


CD = {"CD1_1": -1e-4, "CD1_2": 2e-5, "CD2_1": 2e-5, "CD2_2": 1e-4}


def _with_header(tmp_path, header, name="w.fits"):
    return _write(tmp_path / name, fits.PrimaryHDU(_image(), header=header))


def test_file_without_wcs_reads_without_one_and_without_notice(tmp_path, no_warnings):
    header = fits.Header({"EXPTIME": 30.0, "OBJECT": "M31"})
    assert nddata.as_frames([_with_header(tmp_path, header)])[0].wcs is None


@pytest.mark.parametrize("cards", [
    CD,
    {"CDELT1": -1e-4, "CDELT2": 1e-4, "PC1_1": 0.98, "PC1_2": -0.2, "PC2_1": 0.2, "PC2_2": 0.98},
    {"CDELT1": -1e-4, "CDELT2": 1e-4, "CROTA2": 12.0},
    # the same matrix twice, and CDELT beside CD alone (ignored, as the standard says)
    {**CD, "CDELT1": -1e-4, "CDELT2": 1e-4, "PC1_1": 1.0, "PC1_2": -0.2, "PC2_1": 0.2,
     "PC2_2": 1.0},
    {**CD, "CDELT1": 3.0, "CDELT2": 3.0},
])
def test_consistent_wcs_is_kept(tmp_path, no_warnings, cards):
    header = _celestial(**cards)
    ccd = nddata.as_frames([_with_header(tmp_path, header)])[0]
    np.testing.assert_allclose(ccd.wcs.pixel_to_world_values([0, 39], [0, 49]),
                               WCS(header).pixel_to_world_values([0, 39], [0, 49]), rtol=1e-12)


@pytest.mark.parametrize("cards, match", [
    ({**CD, "PC1_1": 1.0, "PC2_2": 1.0}, r"both a CD matrix .* and PC/CDELT giving .* disagree"),
    ({**CD, "CDELT1": -2e-4, "CDELT2": 2e-4, "PC1_1": 1.0, "PC1_2": 0.0, "PC2_1": 0.0,
      "PC2_2": 1.0}, r"both a CD matrix"),
    ({"CDELT1": -1e-4, "CDELT2": 1e-4, "CROTA2": 10.0, "PC1_1": 1.0, "PC2_2": 1.0},
     r"PC matrix .* disagrees with CROTA2 = 10.0"),
    ({"CD1_1": 0.0, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": 0.0}, r"CD matrix .* is singular"),
    ({"CDELT1": 0.0, "CDELT2": 1e-4}, r"astropy cannot build its WCS \(SingularMatrixError"),
    ({"CTYPE2": "RA---TAN", "CDELT1": -1e-4, "CDELT2": 1e-4},
     r"cannot build its WCS \(InconsistentAxisTypesError: Inconsistent projection"),
    ({"CTYPE1": "RA---XYZ", "CTYPE2": "DEC--XYZ", "CDELT1": -1e-4, "CDELT2": 1e-4},
     r"Unrecognized projection code"),
    ({"CRPIX1": "twenty", "CDELT1": -1e-4, "CDELT2": 1e-4},
     r"a WCS card cannot be read \(CRPIX1 = 'twenty ?'.*floating-point value was expected"),
])
def test_contradictory_or_broken_wcs_warns_and_reads_without_it(tmp_path, cards, match):
    path = _with_header(tmp_path, _celestial(**cards), "bad_wcs.fits")
    with pytest.warns(AstropyUserWarning, match=r"bad_wcs\.fits: .*" + match + r".*reading it "
                                                 r"without a WCS \(fix the header, or pass"):
        ccd = nddata.as_frames([path])[0]
    assert ccd.wcs is None
    assert not [k for k in ccd.meta if re.match(r"^(CTYPE|CRPIX|CRVAL|CDELT|CD|PC)\d", k)]
    np.testing.assert_array_equal(ccd.data, fits.getdata(path))


def test_broken_wcs_leaves_no_coarse_wcs_in_a_written_result(tmp_path):
    path = _with_header(tmp_path, _celestial(CTYPE2="RA---TAN", CDELT1=-1e-4, CDELT2=1e-4))
    with pytest.warns(AstropyUserWarning, match="reading it without a WCS"):
        ccd = nddata.as_frames([path])[0]
    out = nddata.write_fits(ccd, tmp_path / "out.fits")
    header = fits.getheader(out)
    assert "CRPIX1" not in header and "CTYPE2" not in header


SIP = {"CTYPE1": "RA---TAN-SIP", "CTYPE2": "DEC--TAN-SIP", **CD, "A_ORDER": 2, "B_ORDER": 2,
       "A_2_0": 2e-5, "A_1_1": -3e-6, "A_0_2": 1e-6, "B_2_0": 4e-6, "B_0_2": -2e-5,
       "AP_ORDER": 2, "BP_ORDER": 2, "AP_2_0": -2e-5, "BP_0_2": 2e-5}


@pytest.mark.parametrize("pack", [False, True])
def test_sip_distortion_is_kept(tmp_path, no_warnings, pack):
    header = _celestial(**SIP)
    data = _image()
    if pack:
        path = _write(tmp_path / "sip.fits.fz", fits.PrimaryHDU(),
                      fits.CompImageHDU(data, header=header, quantize_level=0.0))
    else:
        path = _write(tmp_path / "sip.fits", fits.PrimaryHDU(data, header=header))
    wcs = nddata.as_frames([path])[0].wcs
    assert wcs.sip is not None and wcs.sip.a[2, 0] == 2e-5 and wcs.sip.b[0, 2] == -2e-5
    assert wcs.sip.ap[2, 0] == -2e-5
    x, y = np.meshgrid([0.0, 13.3, 49.0], [0.0, 21.7, 39.0])
    truth = WCS(header)
    np.testing.assert_allclose(wcs.pixel_to_world_values(x, y), truth.pixel_to_world_values(x, y),
                               rtol=1e-12)
    moved = wcs.sip_pix2foc(np.array([[49.0, 39.0]]), 0) - [[49.0, 39.0]]
    assert np.abs(moved).max() > 0.01                    # the distortion is applied, in pixels


LOOKUP_FILE = Path(astropy.__file__).parent / "wcs" / "tests" / "data" / "dist_lookup.fits.gz"


@pytest.mark.skipif(not LOOKUP_FILE.exists(), reason="astropy's test data are not installed")
def test_lookup_table_distortions_are_read_from_the_file(tmp_path, no_warnings):
    # CCDData.read alone builds no WCS here (lookup tables need the open file)
    path = Path(shutil.copy(LOOKUP_FILE, tmp_path))
    ccd = nddata.as_frames([path])[0]
    assert ccd.wcs.cpdis1 is not None and ccd.wcs.det2im1 is not None and ccd.wcs.sip is not None
    assert not [k for k in ccd.meta if re.match(r"^(CPDIS\d|DP\d|D2IM|A_\d|CRPIX\d$)", k)]
    with fits.open(path) as hdul:
        truth = WCS(hdul["SCI"].header, hdul)
        x, y = np.meshgrid([0.0, 37.5, 99.0], [0.0, 61.2, 99.0])
        np.testing.assert_allclose(ccd.wcs.all_pix2world(x, y, 0), truth.all_pix2world(x, y, 0),
                                   rtol=0, atol=1e-12)


# ---------------------------------------------------------------- inputs never change

def _many_kinds(tmp_path):
    """Files of every kind the reader handles, in their own folder."""
    d = tmp_path / "inputs"
    d.mkdir()
    stored = _stored(np.int16)
    scaled = fits.PrimaryHDU(stored)
    scaled.header.update({"BSCALE": 0.5, "BZERO": 100.0, "BLANK": int(stored[0, 0])})
    _write(d / "a_scaled.fits", scaled)
    _gzip(_write(d / "b_scaled.fits", fits.PrimaryHDU(stored, header=scaled.header)))
    _write(d / "c_packed.fits.fz", fits.PrimaryHDU(),
           _compressed(stored, {k: scaled.header[k] for k in ("BSCALE", "BZERO", "BLANK")}))
    _write(d / "d_sip.fits", fits.PrimaryHDU(_image((20, 30)), header=_celestial(**SIP)))
    _write(d / "e_uint.fits", fits.PrimaryHDU(_stored(np.uint16)))
    return d


def test_reading_leaves_every_input_byte_identical(tmp_path):
    d = _many_kinds(tmp_path)
    before = {p.name: (_sha256(p), p.stat().st_mtime_ns) for p in d.iterdir()}
    frames = nddata.as_frames(d)
    for f in frames:  # what a caller may do to the frames must not reach the files
        f.data[...] = -1.0
    for p in d.iterdir():
        nddata.read_fits(p)
    with fits.open(d / "d_sip.fits", memmap=True) as hdul:   # read-only memory map
        ccd = CCDData(hdul[0].data, unit="adu")
        nddata.as_frames([ccd])[0].data[...] = 0.0
    assert {p.name: (_sha256(p), p.stat().st_mtime_ns) for p in d.iterdir()} == before
    assert sorted(p.name for p in d.iterdir()) == sorted(before)   # nothing added beside them


def test_register_stack_leaves_its_files_and_memory_mapped_frames_unchanged(tmp_path, star_field):
    stack = simulate.observe(star_field, n_frames=3, psf=psf.GaussianPSF(1.0), seed=3)
    paths = [_write(tmp_path / f"obs_{i}.fits", fits.PrimaryHDU(np.asarray(f.data, ">f4")))
             for i, f in enumerate(stack.frames)]
    before = [_sha256(p) for p in paths]
    table = register_stack([str(p) for p in paths])
    assert [_sha256(p) for p in paths] == before
    # frames memory-mapped by the caller, the files opened for update: still untouched
    hduls = [fits.open(p, mode="update", memmap=True) for p in paths]
    try:
        # the unit the files give (no BUNIT): the same frames, so the same (raw) handling
        frames = [CCDData(h[0].data, unit="") for h in hduls]
        copies = [f.data.copy() for f in frames]
        again = register_stack(frames)
        for frame, copy in zip(frames, copies):
            np.testing.assert_array_equal(frame.data, copy)
    finally:
        for h in hduls:
            h.close()
    assert [_sha256(p) for p in paths] == before
    np.testing.assert_allclose(np.asarray(again["dx"]), np.asarray(table["dx"]), atol=1e-6)
