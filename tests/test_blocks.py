"""Images larger than memory written block by block (`astrosr.blocks`)."""
import os
import tracemalloc

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, InverseVariance, StdDevUncertainty, VarianceUncertainty
from astropy.wcs import WCS

from astrosr import files
from astrosr.blocks import CHUNK_BYTES, BlockWriter, read_block
from astrosr.nddata import fits_header, read_fits, write_fits
from astrosr.output import ResultImage

NY, NX = 300, 257
UNCERTAINTY = {"var": VarianceUncertainty, "std": StdDevUncertainty, "ivar": InverseVariance}


def _wcs():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.1, 2.2]
    w.wcs.crpix = [120.5, 140.0]
    w.wcs.cd = [[-1e-4, 2e-6], [3e-6, 1e-4]]
    w.wcs.set()
    return w


def _header():
    hdr = _wcs().to_header()
    hdr["OBJECT"] = ("COSMOS", "target")
    hdr["EXPTIME"] = 1200.0
    hdr.add_history("astrosr.fuse: method=drizzle scale=4 frames=16")
    hdr.add_comment("written block by block")
    return hdr


def _planes(seed=0, shape=(NY, NX)):
    rng = np.random.default_rng(seed)
    data = rng.normal(100.0, 10.0, shape).astype(np.float32)
    data[3, 5] = np.nan  # a NaN pixel is written as it is
    var = rng.uniform(1.0, 5.0, shape).astype(np.float32)
    mask = rng.uniform(size=shape) < 0.1
    weight = rng.uniform(0.0, 2.0, shape).astype(np.float32)
    return data, var, mask, weight


def _tiles(shape, tile, seed=1):
    """Regions of ``tile`` (the last ones partial), in a shuffled order."""
    (ny, nx), (ty, tx) = shape, tile
    regions = [np.s_[y:min(y + ty, ny), x:min(x + tx, nx)]
               for y in range(0, ny, ty) for x in range(0, nx, tx)]
    order = np.random.default_rng(seed).permutation(len(regions))
    return [regions[i] for i in order]


def _write_tiles(path, planes, *, tile=(64, 50), uncertainty="var", mask=True, weight=True,
                 **options):
    data, var, msk, wht = planes
    with BlockWriter(path, shape=data.shape, uncertainty=uncertainty, mask=mask, weight=weight,
                     **options) as out:
        for r in _tiles(data.shape, tile):
            out.write(r, data[r], uncertainty=var[r] if uncertainty else None,
                      mask=msk[r] if mask else None, weight=wht[r] if weight else None)
    return path


def _assert_same_file(path, expected):
    """Every HDU's header card by card and data array, then the bytes themselves."""
    with fits.open(path) as got, fits.open(expected) as want:
        assert [h.name for h in got] == [h.name for h in want]
        for g, w in zip(got, want):
            assert [tuple(c) for c in g.header.cards] == [tuple(c) for c in w.header.cards]
            assert g.header.tostring() == w.header.tostring(), g.name
            assert g.data.dtype == w.data.dtype, g.name
            np.testing.assert_array_equal(g.data, w.data, err_msg=g.name)
    assert path.read_bytes() == expected.read_bytes()


@pytest.mark.parametrize("wcs_as", ["header", "object"])
def test_shuffled_tiles_read_back_as_write_fits_writes(tmp_path, wcs_as):
    data, var, mask, weight = planes = _planes()
    if wcs_as == "header":
        header, wcs = _header(), None
    else:  # the WCS given as an object, the header without it
        wcs_keys = _wcs().to_header()
        header = fits.Header([c for c in _header().cards if c.keyword not in wcs_keys])
        wcs = _wcs()
    path = _write_tiles(tmp_path / "blocks.fits", planes, header=header, wcs=wcs,
                        unit="electron")

    back = CCDData.read(path)  # the defaults: hdu_uncertainty="UNCERT", hdu_mask="MASK"
    np.testing.assert_array_equal(back.data, data)
    assert back.data.dtype.type is np.float32
    assert type(back.uncertainty) is VarianceUncertainty
    np.testing.assert_array_equal(back.uncertainty.array, var)
    np.testing.assert_array_equal(back.mask, mask)
    assert back.unit == u.electron
    assert back.header["OBJECT"] == "COSMOS" and back.header["EXPTIME"] == 1200.0
    assert list(back.header["HISTORY"]) == ["astrosr.fuse: method=drizzle scale=4 frames=16"]
    yy, xx = np.mgrid[0:NY:37, 0:NX:41]
    np.testing.assert_allclose(back.wcs.pixel_scale_matrix, _wcs().pixel_scale_matrix,
                               rtol=1e-12)
    assert tuple(back.wcs.wcs.ctype) == ("RA---TAN", "DEC--TAN")
    assert back.wcs.pixel_to_world(xx, yy).separation(
        _wcs().pixel_to_world(xx, yy)).max().to_value(u.arcsec) < 1e-9

    ours = read_fits(path)
    assert isinstance(ours, ResultImage)
    np.testing.assert_array_equal(ours.weight, weight)

    # The same image written whole by write_fits: the same file, card for card, byte for byte.
    whole = ResultImage(data, unit="electron", uncertainty=VarianceUncertainty(var), mask=mask,
                        meta=header, wcs=wcs, weight=weight)
    expected = write_fits(whole, tmp_path / "whole.fits")
    _assert_same_file(path, expected)
    with fits.open(path) as hdul:
        assert hdul["WHT"].data.dtype == np.dtype(">f4")
        assert hdul["MASK"].data.dtype == np.uint8
        assert hdul["UNCERT"].header["UTYPE"] == "VarianceUncertainty"
        assert "CHECKSUM" not in hdul[0].header and "DATASUM" not in hdul[0].header


@pytest.mark.parametrize("kind", ["std", "ivar"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_other_uncertainties_and_float64(tmp_path, kind, dtype):
    data, var, mask, weight = _planes(seed=2)
    data, unc = data.astype(dtype), np.sqrt(var).astype(dtype)
    path = _write_tiles(tmp_path / "b.fits", (data, unc, mask, weight), tile=(77, 100),
                        uncertainty=kind, weight=False, unit="adu", dtype=dtype,
                        header=_header())
    back = CCDData.read(path)
    assert type(back.uncertainty) is UNCERTAINTY[kind]
    assert back.data.dtype.type is dtype and back.uncertainty.array.dtype.type is dtype
    np.testing.assert_array_equal(back.uncertainty.array, unc)
    whole = CCDData(data, unit="adu", uncertainty=UNCERTAINTY[kind](unc), mask=mask,
                    meta=_header())
    _assert_same_file(path, write_fits(whole, tmp_path / "whole.fits"))


def test_uncertainty_class_and_quantities_are_accepted(tmp_path):
    data, var, mask, _ = _planes(seed=3, shape=(20, 30))
    with BlockWriter(tmp_path / "q.fits", shape=(20, 30), unit="electron",
                     uncertainty=StdDevUncertainty, mask=False) as out:
        out.write(np.s_[:10, :], data[:10] * u.electron,
                  uncertainty=StdDevUncertainty(np.sqrt(var[:10])))
        out.write(np.s_[10:, :], (data[10:] * u.electron).to(u.Unit("1000 electron")),
                  uncertainty=np.sqrt(var[10:]) * u.electron)
    back = CCDData.read(tmp_path / "q.fits")
    np.testing.assert_allclose(back.data, data, rtol=1e-6)
    np.testing.assert_allclose(back.uncertainty.array, np.sqrt(var), rtol=1e-6)


def test_no_mask_no_uncertainty_dimensionless(tmp_path):
    data = _planes(seed=4)[0]
    with BlockWriter(tmp_path / "plain.fits", shape=data.shape, unit="", mask=False) as out:
        assert out.extensions == ()
        for r in _tiles(data.shape, (128, 300)):
            out.write(r, data[r])
    back = CCDData.read(tmp_path / "plain.fits")  # BUNIT = '': no unit= needed
    assert back.unit == u.dimensionless_unscaled
    assert back.uncertainty is None and back.mask is None
    with fits.open(tmp_path / "plain.fits") as hdul:
        assert len(hdul) == 1 and "EXTEND" not in hdul[0].header
    expected = write_fits(CCDData(data, unit=""), tmp_path / "whole.fits")
    _assert_same_file(tmp_path / "plain.fits", expected)


def test_unit_from_the_header_and_dict_meta(tmp_path):
    data = _planes(seed=5, shape=(6, 7))[0]
    meta = {"BUNIT": "adu", "OBJECT": "M31", "HISTORY": ["step one", "step two"]}
    with BlockWriter(tmp_path / "d.fits", shape=(6, 7), header=meta, mask=False) as out:
        out.write(np.s_[:, :], data)
    assert CCDData.read(tmp_path / "d.fits").unit == u.adu
    assert list(fits.getheader(tmp_path / "d.fits")["HISTORY"]) == ["step one", "step two"]
    # write_fits of a dict meta with a short HISTORY list (to_hdu alone fails on it).
    expected = write_fits(CCDData(data, unit="adu", meta=meta), tmp_path / "whole.fits")
    _assert_same_file(tmp_path / "d.fits", expected)
    assert meta["HISTORY"] == ["step one", "step two"]  # the input is not changed


def test_header_copied_from_an_input_file(tmp_path):
    """Structural cards of a raw frame (int16, BZERO, EXTEND) are the output's, as write_fits."""
    raw = fits.PrimaryHDU(np.zeros((10, 12), np.int16))
    raw.header["BZERO"] = 32768
    raw.header["EXTEND"] = True
    raw.header["OBJECT"] = "M51"
    data = _planes(seed=10, shape=(5, 6))[0]
    with BlockWriter(tmp_path / "b.fits", shape=(5, 6), unit="adu", header=raw.header) as out:
        out.write(np.s_[:, :], data, mask=data > 100)
    hdr = fits.getheader(tmp_path / "b.fits")
    assert (hdr["BITPIX"], hdr["NAXIS1"], hdr["NAXIS2"], hdr["OBJECT"]) == (-32, 6, 5, "M51")
    assert "BZERO" not in hdr
    expected = write_fits(CCDData(data, unit="adu", meta=raw.header, mask=data > 100),
                          tmp_path / "whole.fits")
    _assert_same_file(tmp_path / "b.fits", expected)


def test_fits_header_drops_stale_checksums():
    hdr = fits.Header([("CHECKSUM", "0000"), ("DATASUM", "1"), ("OBJECT", "x")])
    out = fits_header(CCDData(np.broadcast_to(np.float32(0), (4000, 5000)), unit="adu",
                              meta=hdr))
    assert (out["NAXIS1"], out["NAXIS2"], out["BITPIX"]) == (5000, 4000, -32)
    assert "CHECKSUM" not in out and "DATASUM" not in out and out["OBJECT"] == "x"
    assert "CHECKSUM" in hdr  # the meta is left as it was


def test_unwritten_pixels_are_nan_masked_and_without_weight(tmp_path):
    data, var, mask, weight = _planes(seed=6, shape=(40, 50))
    with BlockWriter(tmp_path / "gap.fits", shape=(40, 50), unit="adu", uncertainty="var",
                     weight=True) as out:
        out.write(np.s_[10:20, 5:45], data[10:20, 5:45], uncertainty=var[10:20, 5:45],
                  mask=mask[10:20, 5:45], weight=weight[10:20, 5:45])
    back = read_fits(tmp_path / "gap.fits")
    gap = np.ones((40, 50), bool)
    gap[10:20, 5:45] = False
    assert np.isnan(back.data[gap]).all() and np.isnan(back.uncertainty.array[gap]).all()
    assert back.mask[gap].all() and (back.weight[gap] == 0).all()
    np.testing.assert_array_equal(back.data[~gap], data[10:20, 5:45].ravel())
    np.testing.assert_array_equal(back.mask[~gap], mask[10:20, 5:45].ravel())


def test_read_block_is_the_region_of_ccddata_read(tmp_path):
    planes = _planes(seed=7)
    path = _write_tiles(tmp_path / "b.fits", planes, header=_header(), unit="electron")
    region = np.s_[101:163, 17:250]
    part = read_block(path, region)
    whole = read_fits(path)
    assert isinstance(part, ResultImage) and part.unit == u.electron
    np.testing.assert_array_equal(part.data, whole.data[region])
    np.testing.assert_array_equal(part.uncertainty.array, whole.uncertainty.array[region])
    assert type(part.uncertainty) is VarianceUncertainty
    np.testing.assert_array_equal(part.mask, whole.mask[region])
    np.testing.assert_array_equal(part.weight, whole.weight[region])
    assert dict(part.meta) == dict(whole.meta)
    yy, xx = np.mgrid[0:62:9, 0:233:31]
    sep = part.wcs.pixel_to_world(xx, yy).separation(whole.wcs.pixel_to_world(xx + 17, yy + 101))
    assert sep.max().to_value(u.arcsec) < 1e-9


def test_exception_inside_the_block_leaves_no_file(tmp_path):
    data = _planes(seed=8, shape=(10, 10))[0]
    with pytest.raises(RuntimeError, match="stop"):
        with BlockWriter(tmp_path / "x.fits", shape=(10, 10), unit="adu", mask=False) as out:
            out.write(np.s_[:5, :], data[:5])
            raise RuntimeError("stop")
    assert os.listdir(tmp_path) == []
    # Nor does a bad block (an error raised by write itself) over an existing file.
    old = write_fits(CCDData(np.zeros((2, 2)), unit="adu"), tmp_path / "x.fits")
    before = old.read_bytes()
    with pytest.raises(ValueError, match="shape"):
        with BlockWriter(old, shape=(10, 10), unit="adu", mask=False, overwrite=True) as out:
            out.write(np.s_[:5, :], data)
    assert os.listdir(tmp_path) == ["x.fits"] and old.read_bytes() == before


def test_overwrite(tmp_path):
    path = write_fits(CCDData(np.zeros((2, 2)), unit="adu"), tmp_path / "o.fits")
    before = path.read_bytes()
    writer = BlockWriter(path, shape=(3, 4), unit="adu", mask=False)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        with writer:
            pass
    assert path.read_bytes() == before
    with BlockWriter(path, shape=(3, 4), unit="adu", mask=False, overwrite=True) as out:
        out.write(np.s_[:, :], np.ones((3, 4)))
    np.testing.assert_array_equal(CCDData.read(path).data, np.ones((3, 4)))
    with pytest.raises(ValueError, match="already used"):
        with writer:
            pass


def test_named_temporary_where_there_is_no_o_tmpfile(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_unnamed_file", lambda path: None)
    planes = _planes(seed=9, shape=(30, 20))
    path = _write_tiles(tmp_path / "n.fits", planes, tile=(7, 9), unit="adu")
    whole = ResultImage(planes[0], unit="adu", uncertainty=VarianceUncertainty(planes[1]),
                        mask=planes[2], weight=planes[3])
    _assert_same_file(path, write_fits(whole, tmp_path / "whole.fits"))
    with pytest.raises(KeyError):
        with BlockWriter(tmp_path / "k.fits", shape=(3, 3), unit="adu", mask=False):
            raise KeyError("interrupted")
    assert sorted(os.listdir(tmp_path)) == ["n.fits", "whole.fits"]


@pytest.mark.parametrize("region, match", [
    (np.s_[250:310, 0:10], r"rows \(y\) 250:310 is not inside the image's 0:300"),
    (np.s_[0:10, 200:258], r"columns \(x\) 200:258 is not inside the image's 0:257"),
    (np.s_[-10:, :], r"rows \(y\) -10:300 is not inside"),
    (np.s_[5:5, :], "or is empty"),
    (np.s_[0:10:2, :], "give a step of 1"),
])
def test_region_outside_the_image_is_refused(tmp_path, region, match):
    with BlockWriter(tmp_path / "r.fits", shape=(NY, NX), unit="adu", mask=False) as out:
        with pytest.raises(ValueError, match=match):
            out.write(region, np.zeros((10, 10)))
        out.write(np.s_[:, :], np.zeros((NY, NX)))  # the writer is still usable
    with pytest.raises(ValueError, match="not inside"):
        read_block(tmp_path / "r.fits", np.s_[0:301, :])


def test_region_must_be_two_slices(tmp_path):
    with BlockWriter(tmp_path / "r.fits", shape=(4, 4), unit="adu", mask=False) as out:
        for region in [(0, 4), np.s_[0:4], (slice(0, 2), slice(0, 2), slice(0, 1)),
                       np.s_[0:2.5, 0:2]]:
            with pytest.raises(TypeError, match="region"):
                out.write(region, np.zeros((2, 2)))


@pytest.mark.parametrize("blocks, match", [
    ({"data": np.zeros((10, 11)), "mask": np.zeros((10, 10))},
     r"data block has shape \(10, 11\), but the region is 10 x 10: give an array of shape "
     r"\(10, 10\)"),
    ({"data": np.zeros((10, 10)), "mask": np.zeros((10,))}, r"mask block has shape \(10,\)"),
    ({"data": np.zeros((10, 10))}, "mask is missing: this file has a MASK extension"),
    ({"data": np.zeros((10, 10)), "mask": np.zeros((10, 10)), "weight": np.ones((10, 10))},
     "weight was given, but this file has no WHT extension: make the BlockWriter with "
     "weight=True"),
    ({"data": np.zeros((10, 10)), "mask": np.zeros((10, 10)), "uncertainty": np.ones((10, 10))},
     "uncertainty was given, but this file has no UNCERT extension"),
])
def test_blocks_are_checked_before_writing(tmp_path, blocks, match):
    with BlockWriter(tmp_path / "s.fits", shape=(20, 20), unit="adu") as out:
        with pytest.raises(ValueError, match=match):
            out.write(np.s_[0:10, 0:10], **blocks)
    assert np.isnan(CCDData.read(tmp_path / "s.fits").data).all()  # nothing was written


def test_wrong_kinds_of_block(tmp_path):
    with BlockWriter(tmp_path / "k.fits", shape=(2, 2), unit="adu", uncertainty="var",
                     mask=False) as out:
        with pytest.raises(TypeError, match="array of numbers"):
            out.write(np.s_[:, :], np.array([["a", "b"], ["c", "d"]]), uncertainty=np.ones((2, 2)))
        with pytest.raises(TypeError, match="StdDevUncertainty, but this file's is "
                                            "VarianceUncertainty"):
            out.write(np.s_[:, :], np.ones((2, 2)), uncertainty=StdDevUncertainty(np.ones((2, 2))))
        with pytest.raises(u.UnitsError):
            out.write(np.s_[:, :], np.ones((2, 2)) * u.s, uncertainty=np.ones((2, 2)))
        out.write(np.s_[:, :], np.ones((2, 2)), uncertainty=np.ones((2, 2)))
    with pytest.raises(ValueError, match="not open: call write"):
        out.write(np.s_[:, :], np.ones((2, 2)), uncertainty=np.ones((2, 2)))


@pytest.mark.parametrize("options, err, match", [
    ({"shape": (10,)}, ValueError, "shape must be two positive integers"),
    ({"shape": (0, 5)}, ValueError, "shape must be two positive integers"),
    ({"shape": "big"}, ValueError, "shape must be two positive integers"),
    ({"dtype": np.int16}, ValueError, "dtype must be numpy.float32 or numpy.float64"),
    ({"uncertainty": "variance"}, ValueError, "uncertainty must be None, 'var', 'std' or"),
    ({"unit": None}, ValueError, "unit is needed: pass unit="),
    ({"mask": np.zeros((4, 4))}, TypeError, "mask must be True or False.*give the blocks to "
                                            r"write\(\)"),
    ({"overwrite": "yes"}, TypeError, "overwrite must be True or False"),
])
def test_bad_options(tmp_path, options, err, match):
    kwargs = {"shape": (4, 4), "unit": "adu", **options}
    with pytest.raises(err, match=match):
        BlockWriter(tmp_path / "bad.fits", **kwargs)
    assert os.listdir(tmp_path) == []


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        with BlockWriter(tmp_path / "no" / "x.fits", shape=(4, 4), unit="adu"):
            pass


def _strip_values(y0, y1, nx, out=None):
    """Pixel values ``y + 1e-3 x`` of rows ``y0:y1``, float32 (the same whoever computes them)."""
    return np.add.outer(np.arange(y0, y1, dtype=np.float32),
                        np.arange(nx, dtype=np.float32) * np.float32(1e-3), out=out)


def test_image_larger_than_the_strips_in_memory(tmp_path):
    n, rows = 4096, 512
    strip_bytes = rows * n * 4  # 8 MiB: a plane is 64 MiB, the file 208 MiB
    row_mask = np.arange(n) % 7 == 0
    path = tmp_path / "big.fits"
    tracemalloc.start()
    try:
        buf = np.empty((rows, n), np.float32)
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        with BlockWriter(path, shape=(n, n), unit="electron", uncertainty="var",
                         weight=True) as out:
            for y0 in range(0, n, rows):
                _strip_values(y0, y0 + rows, n, out=buf)
                out.write(np.s_[y0:y0 + rows, :], buf,
                          uncertainty=np.broadcast_to(np.float32(y0), (rows, n)),
                          mask=np.broadcast_to(row_mask, (rows, n)),
                          weight=np.broadcast_to(np.float32(2.0), (rows, n)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    try:
        # The writer's own memory is a few chunks, whatever the image: below one strip...
        assert peak - baseline < min(strip_bytes, 4 * CHUNK_BYTES), peak - baseline
        # ... and all of it, the caller's strip included, below three.
        assert peak < 3 * strip_bytes, peak
        assert path.stat().st_size == out.size > 3 * n * n * 4
        with fits.open(path, memmap=True) as hdul:
            assert [h.name for h in hdul] == ["PRIMARY", "MASK", "UNCERT", "WHT"]
            for y0, y1, x0, x1 in [(0, 3, 0, 4096), (1000, 1100, 2000, 2050),
                                   (4090, 4096, 4000, 4096), (511, 513, 7, 9)]:
                np.testing.assert_array_equal(hdul[0].section[y0:y1, x0:x1],
                                              _strip_values(y0, y1, n)[:, x0:x1])
                np.testing.assert_array_equal(hdul["MASK"].section[y0:y1, x0:x1],
                                              np.broadcast_to(row_mask[x0:x1], (y1 - y0, x1 - x0)))
                np.testing.assert_array_equal(hdul["UNCERT"].section[y0:y1, x0:x1][:, 0],
                                              (np.arange(y0, y1) // rows * rows))
                assert (hdul["WHT"].section[y0:y1, x0:x1] == 2.0).all()
        part = read_block(path, np.s_[2047:2049, 4000:4010])
        np.testing.assert_array_equal(part.data, _strip_values(2047, 2049, n)[:, 4000:4010])
        np.testing.assert_array_equal(part.mask, np.broadcast_to(row_mask[4000:4010], (2, 10)))
    finally:
        path.unlink(missing_ok=True)
