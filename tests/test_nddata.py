import warnings
from pathlib import Path

import astropy
import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, NDData, StdDevUncertainty
from astropy.wcs import WCS

from astrosr import nddata


def _sip_wcs():
    hdr = fits.Header()
    hdr.update({"CTYPE1": "RA---TAN-SIP", "CTYPE2": "DEC--TAN-SIP", "CRVAL1": 150.0,
                "CRVAL2": 2.0, "CRPIX1": 100.3, "CRPIX2": 80.7, "CD1_1": -1e-4, "CD1_2": 2e-6,
                "CD2_1": 1e-6, "CD2_2": 1e-4, "A_ORDER": 2, "B_ORDER": 2, "A_2_0": 3e-5,
                "A_1_1": -2e-5, "A_0_2": 1e-5, "B_2_0": -1e-5, "B_1_1": 2e-5, "B_0_2": 4e-5,
                "NAXIS1": 200, "NAXIS2": 160})
    return WCS(hdr)


def _check_sky_positions_kept(old, new, factor, shape):
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, shape[1] - 0.5, 200)
    y = rng.uniform(-0.5, shape[0] - 0.5, 200)
    before = old.pixel_to_world(x, y)
    after = new.pixel_to_world(factor * (x + 0.5) - 0.5, factor * (y + 0.5) - 0.5)
    # A thousandth of an input pixel.
    pix = np.sqrt(abs(np.linalg.det(old.pixel_scale_matrix))) * 3600
    assert before.separation(after).arcsec.max() < 1e-3 * pix


@pytest.mark.parametrize("factor", [4, 2, 0.25])
def test_rescaled_sip_wcs_keeps_every_sky_position(factor):
    w = _sip_wcs()
    _check_sky_positions_kept(w, nddata.rescale_wcs(w, factor), factor, (160, 200))


def test_rescaled_real_plate_keeps_sky_positions(shared_data):
    for name in ("gc_2mass_k.fits", "spitzer_example_image.fits"):
        w = WCS(fits.getheader(shared_data / name))
        _check_sky_positions_kept(w, nddata.rescale_wcs(w, 4), 4, (500, 500))


def test_rescale_follows_the_design_formulae():
    w = _sip_wcs()
    new = nddata.rescale_wcs(w, 4)
    np.testing.assert_allclose(new.wcs.crpix, 4 * (w.wcs.crpix - 0.5) + 0.5)
    np.testing.assert_allclose(new.wcs.cd, w.wcs.cd / 4)
    assert new.sip.a[2, 0] == pytest.approx(w.sip.a[2, 0] / 4)
    assert new.pixel_shape == (800, 640)


def test_pc_cdelt_wcs_divides_pc_not_cdelt():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cdelt = [-1e-4, 1e-4]
    w.wcs.crpix = [10, 10]
    new = nddata.rescale_wcs(w, 3)
    np.testing.assert_allclose(new.wcs.cdelt, w.wcs.cdelt)
    np.testing.assert_allclose(new.wcs.get_pc(), np.eye(2) / 3)


def test_shift_wcs_follows_the_sign_convention():
    w = _sip_wcs()
    shifted = nddata.shift_wcs(w, 1.25, -0.5)
    sky = w.pixel_to_world(40.0, 30.0)
    x, y = shifted.world_to_pixel(sky)
    assert x == pytest.approx(41.25, abs=1e-6) and y == pytest.approx(29.5, abs=1e-6)


def test_as_frames_accepts_cubes_nddata_and_fits(tmp_path):
    cube = np.random.default_rng(0).normal(size=(3, 8, 9))
    frames = nddata.as_frames(cube)
    assert len(frames) == 3 and frames[0].shape == (8, 9)
    nd = NDData(cube[0], unit="adu", uncertainty=StdDevUncertainty(np.full((8, 9), 2.0)))
    ccd = nddata.as_frames([nd])[0]
    np.testing.assert_allclose(nddata.variance_of(ccd), 4.0)
    path = tmp_path / "frame.fits"
    CCDData(cube[1], unit="electron").write(path)
    read = nddata.as_frames([path, path])
    assert read[0].unit == u.electron
    np.testing.assert_allclose(read[1].data, cube[1])


def test_frame_arrays_drop_masked_and_nan_pixels():
    data = np.arange(12.0).reshape(3, 4)
    data[0, 0] = np.nan
    mask = np.zeros((3, 4), bool)
    mask[1, 1] = True
    d, var, good = nddata.frame_arrays(CCDData(data, unit="adu", mask=mask))
    assert var is None
    assert not good[0, 0] and not good[1, 1] and good.sum() == 10
    assert d[0, 0] == 0.0


@pytest.mark.parametrize("frames, err, match", [
    ([np.zeros((4, 4)), np.zeros((5, 4))], ValueError, "same shape"),
    ([], ValueError, "empty"),
    (np.zeros((4, 4)), ValueError, "3-D"),
    ([np.zeros((2, 2, 2))], ValueError, r"frames\[0\] must be 2-D"),
    ([CCDData(np.zeros((4, 4)), unit="adu"), CCDData(np.zeros((4, 4)), unit="electron")],
     u.UnitsError, "same unit"),
    (["/no/such/file.fits"], FileNotFoundError, "no such FITS file"),
])
def test_as_frames_rejects_bad_stacks(frames, err, match):
    with pytest.raises(err, match=match):
        nddata.as_frames(frames)


def test_add_history_to_header_and_dict():
    hdr = nddata.add_history(fits.Header(), "step one")
    assert "step one" in str(hdr["HISTORY"])
    meta = nddata.add_history({}, "a")
    nddata.add_history(meta, "b")
    assert meta["HISTORY"] == ["a", "b"]


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_file_follows_the_umask(tmp_path, umask, mode):
    import os

    from astrosr import files

    old = os.umask(umask)
    try:
        path = nddata.write_fits(CCDData(np.ones((4, 4)), unit="adu"), tmp_path / "out.fits")
        assert files._umask() == umask
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == mode


def test_dimensionless_output_reopens_with_ccddata_read(tmp_path):
    data = np.arange(12.0).reshape(3, 4)
    # A BUNIT left in the meta by the input must not contradict the unit.
    ccd = CCDData(data, unit=u.dimensionless_unscaled, meta={"BUNIT": "adu"},
                  uncertainty=StdDevUncertainty(np.ones((3, 4))))
    path = nddata.write_fits(ccd, tmp_path / "out.fits")
    assert fits.getheader(path)["BUNIT"] == ""
    back = CCDData.read(path)  # no unit given
    assert back.unit == u.dimensionless_unscaled
    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_array_equal(back.uncertainty.array, 1.0)


def test_output_from_input_without_bunit_reopens_with_ccddata_read(tmp_path):
    raw = tmp_path / "raw.fits"
    fits.PrimaryHDU(np.full((5, 6), 3.0, dtype=np.float32)).writeto(raw)
    with pytest.raises(ValueError, match="a unit for CCDData must be specified"):
        CCDData.read(raw)  # what astropy does with such a file
    (frame,) = nddata.as_frames([raw])
    out = nddata.write_fits(frame, tmp_path / "out.fits")
    back = CCDData.read(out)
    assert back.unit == u.dimensionless_unscaled and back.shape == (5, 6)
    # And with a unit: the unit is written as it is.
    out = nddata.write_fits(CCDData(np.ones((2, 2)), unit="electron"), tmp_path / "e.fits")
    assert CCDData.read(out).unit == u.electron


_LONG = ("astrosr.fuse: method=reconstruct scale=4 frames=16 psf=GaussianPSF(sigma=1.0) "
         "Richardson-Lucy iterations=137 stop=converged chi2_red=1.0123 the data fit within "
         "their noise; frame variance estimated from pixel differences of each frame")


def _check_word_boundaries(cards, text):
    assert "".join(cards) == text  # nothing lost, no space added
    assert all(len(c) <= nddata.HISTORY_WIDTH for c in cards)
    for before, after in zip(cards, cards[1:]):
        # A boundary falls on a space: never between two letters of a word.
        assert after.startswith(" ") or before.endswith(" "), (before, after)


@pytest.mark.parametrize("meta", [fits.Header(), {}], ids=["header", "dict"])
def test_history_is_split_at_word_boundaries_in_the_file(tmp_path, meta):
    ccd = CCDData(np.ones((2, 2)), unit="adu", meta=meta)
    nddata.add_history(ccd.meta, "short")
    nddata.add_history(ccd.meta, _LONG)
    assert len(ccd.meta["HISTORY"]) > 3
    path = nddata.write_fits(ccd, tmp_path / "h.fits")
    cards = list(CCDData.read(path).header["HISTORY"])
    assert cards[0] == "short"
    _check_word_boundaries(cards[1:], _LONG)


def test_history_cuts_only_a_word_longer_than_a_card():
    text = "sha256=" + "x" * 100 + " done"
    assert nddata._history_cards(text) == [text[:72], text[72:]]
    assert nddata._history_cards("a " + "x" * 80) == ["a", " " + "x" * 71, "x" * 9]
    assert nddata._history_cards("two\nlines") == ["two lines"]


def test_reading_frames_does_not_report_astropys_header_fixes(tmp_path):
    from astropy.wcs import FITSFixedWarning

    hdr = fits.Header({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 10.0,
                       "CRVAL2": 20.0, "CRPIX1": 4.0, "CRPIX2": 4.0, "CDELT1": -1e-4,
                       "CDELT2": 1e-4, "DATE-OBS": "2020-01-02T03:04:05", "BUNIT": "adu"})
    path = tmp_path / "frame.fits"
    fits.PrimaryHDU(np.ones((8, 8)), hdr).writeto(path)
    with pytest.warns(FITSFixedWarning, match="datfix"):
        CCDData.read(path)  # astropy alone: one notice per frame
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frames = nddata.as_frames([path, path])
    assert not [w for w in caught if issubclass(w.category, FITSFixedWarning)]
    assert frames[0].wcs is not None and frames[0].unit == u.adu


def test_saturated_pixels_from_the_header_or_clipping_but_not_datamax():
    data = np.arange(100.0).reshape(10, 10)
    assert nddata.saturated_pixels(data, {"SATURATE": 90.0}).sum() == 100 - 81
    assert nddata.saturated_pixels(data, {"SATURATE": 90.0}, level=1000.0).sum() == 0
    # DATAMAX is often the actual maximum: not a saturation level.
    assert not nddata.saturated_pixels(data, {"DATAMAX": 99.0}).any()
    clipped = np.minimum(np.arange(1600.0).reshape(40, 40), 1597.0)  # 3 share the maximum
    assert nddata.saturated_pixels(clipped).sum() == 3
    assert nddata.saturated_pixels(clipped, grow=1).sum() > 3
    assert not nddata.saturated_pixels(np.ones((10, 10))).any()  # a constant image
    with_nan = clipped.copy()
    with_nan[0, 0] = np.nan  # NaN pixels are not saturated, and do not hide the clipping
    assert not nddata.saturated_pixels(with_nan)[0, 0]
    assert nddata.saturated_pixels(with_nan).sum() == 3


_LOOKUP = Path(astropy.__file__).parent / "wcs" / "tests" / "data" / "dist_lookup.fits.gz"


@pytest.mark.skipif(not _LOOKUP.exists(), reason="astropy's test data (dist_lookup) is absent")
def test_finer_and_shifted_wcs_keep_lookup_table_distortion():
    """HST-style CPDIS/D2IM lookup tables move and scale with the grid (they were left as they were)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(_LOOKUP) as hdul:
            w = WCS(hdul[1].header, hdul)
    assert w.cpdis1 is not None and w.det2im1 is not None
    x, y = np.meshgrid(np.arange(0, 100, 9.0), np.arange(0, 100, 9.0))
    world = w.pixel_to_world_values(x, y)
    for factor in (4, 2.5):
        fx, fy = nddata.rescale_wcs(w, factor).world_to_pixel_values(*world)
        assert np.hypot(fx - (factor * (x + 0.5) - 0.5), fy - (factor * (y + 0.5) - 0.5)).max() < 1e-4
    sx, sy = nddata.shift_wcs(w, 0.5, -0.3).world_to_pixel_values(*world)
    assert np.hypot(sx - (x + 0.5), sy - (y - 0.3)).max() < 1e-4
