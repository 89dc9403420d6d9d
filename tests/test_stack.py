"""FrameStack (parsed once), results that keep what they carry, options checked per method."""

import numpy as np
import pytest
from astropy import units as u
from astropy.nddata import CCDData, NDData
from astropy.wcs import WCS
from astropy.wcs.wcsapi import SlicedLowLevelWCS

import astrosr
from astrosr import simulate
from astrosr.nddata import read_fits, write_fits
from astrosr.output import ResultImage
from astrosr.psf import GaussianPSF
from astrosr.stack import FrameStack

PSF = GaussianPSF(1.2)


@pytest.fixture(scope="module")
def stack():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval, w.wcs.crpix, w.wcs.cdelt = [30.0, -10.0], [64.5, 64.5], [-2.5e-5, 2.5e-5]
    w.wcs.set()
    truth = CCDData(simulate.make_sky((128, 128), n_stars=25, n_galaxies=2, seed=4),
                    unit="electron", wcs=w)
    st = simulate.observe(truth, n_frames=5, scale=4, psf=PSF, sky=30.0, seed=3,
                          cosmic_ray_rate=0.002)
    for f in st.frames:
        f.data = f.data - 30.0
    return st


def test_a_stack_is_parsed_once_into_cubes(stack):
    fs = FrameStack(stack.frames)
    assert len(fs) == 5 and fs.shape == (32, 32) and fs.unit == u.electron
    assert fs.data.shape == fs.var.shape == fs.good.shape == (5, 32, 32)
    assert FrameStack.parse(fs) is fs and astrosr.FrameStack is FrameStack
    assert all(w is f.wcs for w, f in zip(fs.wcs, stack.frames))
    assert fs.var_given.all() and not fs.var_estimated
    cube = FrameStack(np.array([f.data for f in stack.frames]))
    assert cube.var_estimated and np.all(np.isfinite(cube.var[cube.good]))
    assert "5 frames of 32x32" in repr(fs)
    rejected = np.zeros(fs.data.shape, bool)
    rejected[1, 3, 4] = True
    less = fs.with_rejected(rejected)
    assert not less.good[1, 3, 4] and fs.good[1, 3, 4] and less.rejected.sum() == 1
    assert less.var[1, 3, 4] == np.inf and less.data[1, 3, 4] == 0.0
    with pytest.raises(ValueError, match="rejected must have the stack's shape"):
        fs.with_rejected(rejected[0])


def test_the_pipeline_parses_its_frames_once(stack, monkeypatch):
    import astrosr.stack as stack_module

    calls = []
    original = stack_module.frame_arrays
    monkeypatch.setattr(stack_module, "frame_arrays", lambda c: calls.append(1) or original(c))
    astrosr.MultiFrameSR(scale=4, psf=PSF, refine=None).run(stack.frames)
    assert len(calls) == len(stack.frames)  # registration, fusion and all: one parse


def test_an_ape14_wcs_is_accepted_and_the_output_keeps_sky_positions(stack):
    """A sliced WCS (APE-14, not a FITS WCS): CCDData refuses it, FrameStack keeps it."""
    frames = [NDData(f.data, uncertainty=f.uncertainty, unit=f.unit,
                     wcs=SlicedLowLevelWCS(f.wcs, [slice(None), slice(None)])) for f in stack.frames]
    fs = FrameStack(frames)
    assert not isinstance(fs.wcs[0], WCS) and fs.ccds[0].wcs is None
    out = astrosr.fuse(fs, "wcs", scale=4, method="drizzle")
    ref = astrosr.fuse(stack.frames, stack.shifts, scale=4, method="drizzle")
    np.testing.assert_allclose(out.data, ref.data, atol=1e-5 * ref.data.max())
    yy, xx = np.mgrid[0:128:9, 0:128:13]
    sep = out.wcs.pixel_to_world(xx, yy).separation(ref.wcs.pixel_to_world(xx, yy))
    # 0.01 input pixel = 0.025 arcsec * 4 * 0.01
    assert sep.max().to_value(u.arcsec) < 0.01 * 0.09


def test_what_a_result_carries_survives_copy_and_fits(stack, tmp_path):
    out = astrosr.fuse(stack.frames, stack.shifts, scale=4, method="drizzle")
    assert isinstance(out, ResultImage) and isinstance(out, CCDData)
    assert out.rejected.sum() == out.meta["NREJECT"] > 0  # the cosmic rays
    copy = out.copy()
    np.testing.assert_array_equal(copy.weight, out.weight)
    np.testing.assert_array_equal(copy.rejected, out.rejected)
    copy.weight[0, 0] = -1.0
    assert out.weight[0, 0] != -1.0  # a copy, not a view
    back = read_fits(write_fits(out, tmp_path / "fused.fits"))
    np.testing.assert_allclose(back.weight, out.weight, rtol=1e-6)
    np.testing.assert_array_equal(back.rejected, out.rejected)
    out.write(tmp_path / "astropy.fits")  # CCDData's own writer keeps them too
    from astropy.io import fits

    with fits.open(tmp_path / "astropy.fits") as hdul:
        assert "WHT" in hdul and "REJECT" in hdul
    assert CCDData.read(tmp_path / "fused.fits").shape == out.shape


def test_options_are_checked_for_the_method(stack):
    frames, shifts = stack.frames, stack.shifts
    with pytest.raises(ValueError, match="reject must be 'auto', True or False, got 'off'"):
        astrosr.fuse(frames, shifts, scale=4, reject="off")
    with pytest.raises(ValueError, match=r"\['stop'\] are not used by method='drizzle'"):
        astrosr.fuse(frames, shifts, scale=4, stop="discrepancy")
    with pytest.raises(ValueError, match=r"\['pixfrac', 'weights'\] are not used by "
                                         r"method='reconstruct'"):
        astrosr.fuse(frames, shifts, scale=4, method="reconstruct", psf=PSF, pixfrac=0.5,
                     weights=[1] * 5)
    with pytest.raises(ValueError, match="pixfrac is a drizzle option"):
        astrosr.MultiFrameSR(scale=4, pixfrac=0.7)
    with pytest.raises(TypeError, match="geometry is required"):
        astrosr.fuse(frames, scale=4)
    with pytest.raises(TypeError, match="scale is required"):
        astrosr.fuse(frames, shifts)


def test_a_zero_background_is_a_given_background(stack):
    out = astrosr.fuse(stack.frames, stack.shifts, scale=4, method="reconstruct", psf=PSF,
                       background=0.0, max_iter=20)
    assert "noise=background=" in "".join(out.meta["HISTORY"])
    fitted = astrosr.fuse(stack.frames, stack.shifts, scale=4, method="reconstruct", psf=PSF,
                          max_iter=20)
    assert "noise=variance vs data fit" in "".join(fitted.meta["HISTORY"])


def test_the_pipeline_takes_a_psf_array_and_writes_printable_history(stack, tmp_path):
    kernel = PSF.kernel(4)
    out = astrosr.MultiFrameSR(scale=4, psf=kernel, refine=None).run(stack.frames,
                                                                     stack.shifts)
    history = "".join(out.meta["HISTORY"])
    assert f"<array {kernel.shape[1]}x{kernel.shape[0]} sum=1>" in history
    assert all(32 <= ord(c) < 127 for c in history)
    write_fits(out, tmp_path / "p.fits")
