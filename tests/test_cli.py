import subprocess
import sys

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.table import Table
from astropy.wcs import WCS

from astrosr import cli, psf, simulate
from astrosr.nddata import write_fits

PSF = psf.GaussianPSF(1.0)


def _run(*args):
    """The command in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "astrosr", *map(str, args)], capture_output=True,
                          text=True)


@pytest.fixture(scope="module")
def frame_files(tmp_path_factory, extended_sky):
    """6 dithered FITS frames (sky subtracted) and the simulated stack."""
    folder = tmp_path_factory.mktemp("frames")
    wcs = WCS(naxis=2)
    wcs.wcs.ctype, wcs.wcs.crval = ["RA---TAN", "DEC--TAN"], [10.0, -30.0]
    wcs.wcs.crpix, wcs.wcs.cdelt = [64.5, 64.5], [-1e-5, 1e-5]
    truth = CCDData(extended_sky[:128, :128], unit=u.electron, wcs=wcs)
    stack = simulate.observe(truth, n_frames=6, psf=PSF, sky=20.0, seed=5)
    for i, frame in enumerate(stack.frames):
        frame = frame.subtract(20.0 * u.electron, propagate_uncertainties=False)
        frame.uncertainty = stack.frames[i].uncertainty
        write_fits(frame, folder / f"f{i}.fits")
    return folder, stack


def test_demo_writes_frames_results_and_figure(tmp_path, capsys):
    pytest.importorskip("keras")
    out = tmp_path / "demo"
    assert cli.main(["demo", "--size", "128", "--frames", "6", "--seed", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert float(text.split("RMS error")[1].split()[0]) < 0.05
    for name in ("pipeline", "reconstruct", "drizzle", "bicubic"):
        assert name in text
    assert len(list((out / "frames").glob("frame_*.fits"))) == 6
    for name in ("drizzle", "reconstruct", "pipeline", "truth"):
        assert CCDData.read(out / f"{name}.fits").shape == (128, 128)
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A second run into the same folder needs --overwrite.
    assert cli.main(["demo", "--size", "128", "--frames", "6", "--out", str(out)]) == 3


def test_stack_by_the_frames_wcs_onto_a_given_output_grid(tmp_path, frame_files):
    """--geometry wcs aligns by the frames' WCS; --output-wcs sets the output grid."""
    folder, stack = frame_files
    by_wcs, by_table, onto = tmp_path / "wcs.fits", tmp_path / "table.fits", tmp_path / "o.fits"
    table = tmp_path / "geo.ecsv"
    stack.shifts.write(table)
    common = ("--method", "drizzle", "--reject", "off", "--quiet", "--allow-misfit")
    assert _run("stack", folder / "f*.fits", "--geometry", "wcs", "-o", by_wcs, *common
                ).returncode == 0
    assert _run("stack", folder / "f*.fits", "--geometry", table, "-o", by_table, *common
                ).returncode == 0
    a, b = CCDData.read(by_wcs), CCDData.read(by_table)
    np.testing.assert_allclose(a.data, b.data, atol=1e-5 * np.abs(b.data).max())
    assert a.header["FUSEGEOM"] == "wcs" and b.header["FUSEGEOM"] == "shift"
    grid = b.wcs[10:90, 20:120]            # a cut-out of the fine grid as the output grid
    fits.PrimaryHDU(np.zeros((80, 100), np.float32), header=grid.to_header()).writeto(
        tmp_path / "grid.fits")
    proc = _run("stack", folder / "f*.fits", "--geometry", table, "--output-wcs",
                tmp_path / "grid.fits", "-o", onto, *common)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(CCDData.read(onto).data, b.data[10:90, 20:120],
                               atol=1e-4 * np.abs(b.data).max())
    proc = _run("stack", folder / "f*.fits", "--geometry", table, "--shifts", table, "-o",
                tmp_path / "x.fits", "--quiet")
    assert proc.returncode == 2 and "give --geometry or --shifts, not both" in proc.stderr
    proc = _run("stack", folder / "f*.fits", "--pixfrac", "0.5", "-o", tmp_path / "y.fits",
                "--quiet", "--psf", "gaussian:1.0")
    assert proc.returncode == 2 and "pixfrac" in proc.stderr


def test_register_fits_files_to_a_table(tmp_path, frame_files):
    folder, stack = frame_files
    out = tmp_path / "shifts.ecsv"
    assert cli.main(["register", str(folder / "f*.fits"), "-o", str(out)]) == 0
    table = Table.read(out)
    np.testing.assert_allclose(table["dx"], stack.shifts["dx"].value, atol=0.05)
    # Never over an existing file without --overwrite.
    assert cli.main(["register", str(folder / "f*.fits"), "-o", str(out)]) == 3
    assert cli.main(["register", str(folder / "f*.fits"), "-o", str(out), "--overwrite"]) == 0


def test_stack_writes_a_fused_mef_that_ccddata_reads(tmp_path, frame_files):
    folder, stack = frame_files
    out = tmp_path / "fused.fits"
    proc = _run("stack", folder / "f*.fits", "--psf", "gaussian:1.0", "-o", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    ccd = CCDData.read(out)
    assert ccd.shape == (128, 128) and ccd.unit == u.electron and ccd.wcs is not None
    assert ccd.uncertainty is not None and ccd.mask is not None
    assert sorted(h.name for h in fits.open(out)[1:]) == ["MASK", "REJECT", "UNCERT", "WHT"]
    assert ccd.header["FUSEMETH"] == "reconstruct" and ccd.header["NCOMBINE"] == 6
    # Fused flux per pixel adds up to a frame's total.
    assert ccd.data[16:-16, 16:-16].sum() == pytest.approx(
        stack.truth.data[16:-16, 16:-16].sum(), rel=0.02)


def test_stack_with_given_shifts_and_drizzle(tmp_path, frame_files):
    folder, stack = frame_files
    shifts = tmp_path / "shifts.ecsv"
    stack.shifts.write(shifts)
    out = tmp_path / "drz.fits"
    assert cli.main(["stack", *sorted(map(str, folder.glob("f*.fits"))), "--shifts", str(shifts),
                     "--method", "drizzle", "--pixfrac", "0.8", "-o", str(out), "--quiet"]) == 0
    assert CCDData.read(out).header["PIXFRAC"] == 0.8


def test_pipeline_without_refinement_and_evaluate(tmp_path, frame_files):
    folder, stack = frame_files
    out, truth = tmp_path / "sr.fits", tmp_path / "truth.fits"
    assert cli.main(["pipeline", str(folder / "f*.fits"), "--psf", "gaussian:1.0", "--refine",
                     "none", "-o", str(out), "--quiet"]) == 0
    header = CCDData.read(out).header
    assert "astrosr.MultiFrameSR" in "".join(header["HISTORY"])
    # The held-out scores survive the round trip through FITS.
    assert header["NFOLDS"] == 4 and header["CANDIDAT"] == "fusion"
    assert 0.5 < header["PCHI2FUS"] < 2.0 and 0.5 < header["PCHI2DIS"] < 2.0
    quick = tmp_path / "quick.fits"
    assert cli.main(["pipeline", str(folder / "f*.fits"), "--psf", "gaussian:1.0", "--refine",
                     "none", "--folds", "0", "--consistency", "observation", "-o", str(quick),
                     "--quiet"]) == 0
    assert "NFOLDS" not in CCDData.read(quick).header
    write_fits(stack.truth, truth)
    proc = _run("evaluate", out, "--truth", truth, "--json")
    assert proc.returncode == 0, proc.stderr
    import json

    result = json.loads(proc.stdout)
    assert result["psnr_db"] > 20 and 0.9 < result["flux_ratio"] < 1.1


def test_enhance_one_image(tmp_path, frame_files):
    pytest.importorskip("keras")
    folder, _ = frame_files
    out = tmp_path / "x4.fits"
    assert cli.main(["enhance", str(folder / "f0.fits"), "--consistency", "pixel", "--no-ensemble",
                     "-o", str(out), "--quiet"]) == 0
    ccd, frame = CCDData.read(out), CCDData.read(folder / "f0.fits")
    assert ccd.shape == (128, 128)
    sums = ccd.data.reshape(32, 4, 32, 4).sum(axis=(1, 3))
    np.testing.assert_allclose(sums, frame.data, rtol=1e-4, atol=1e-3)


def test_enhance_writes_a_large_output_band_by_band(tmp_path, frame_files, monkeypatch):
    pytest.importorskip("keras")
    folder, _ = frame_files
    args = ["enhance", str(folder / "f0.fits"), "--psf", "gaussian:1.0", "--no-ensemble",
            "--quiet", "--allow-misfit"]
    whole, banded = tmp_path / "whole.fits", tmp_path / "banded.fits"
    assert cli.main(args + ["-o", str(whole)]) == 0
    monkeypatch.setattr(cli, "STREAM_PIXELS", 0)  # every output is "large"
    assert cli.main(args + ["-o", str(banded)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["banded.fits", "whole.fits"]
    a, b = CCDData.read(whole), CCDData.read(banded)
    assert np.abs(a.data - b.data).max() < 1e-4 * np.abs(a.data).max()
    assert a.header["CHI2RED"] == pytest.approx(b.header["CHI2RED"], abs=1e-3)
    # Misfit without --allow-misfit: exit 5 and nothing written, no partial file left.
    wrong = tmp_path / "wrong.fits"
    assert cli.main(args[:-1] + ["--psf", "gaussian:3.0", "-o", str(wrong)]) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["banded.fits", "whole.fits"]


def test_info_lists_versions_and_models(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("astrosr ") and "astropy" in out and "srresnet-x4" in out


def _bad_inputs(tmp_path, folder):
    table = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(Table({"a": [1, 2]}))]).writeto(table)
    cube = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.zeros((3, 8, 8))).writeto(cube)
    small = tmp_path / "small.fits"
    fits.PrimaryHDU(np.zeros((16, 16))).writeto(small)
    f0 = str(folder / "f0.fits")
    return {
        "missing file": ([str(tmp_path / "nope.fits"), f0], "no such FITS file"),
        "non-image HDU": ([str(table), str(table), "--hdu", "1"], "is a table, not an image"),
        "table file": ([str(table), f0], "no image HDU|table"),
        "cube": ([str(cube), f0], "3-D"),
        "two sizes": ([str(small), f0], "same shape"),
    }


@pytest.mark.parametrize("case", ["missing file", "non-image HDU", "table file", "cube",
                                  "two sizes"])
def test_bad_input_gives_one_line_exit_2_and_no_file(tmp_path, frame_files, case):
    folder, _ = frame_files
    args, match = _bad_inputs(tmp_path, folder)[case]
    out = tmp_path / "out.fits"
    proc = _run("stack", *args, "--psf", "gaussian:1.0", "-o", out)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    import re

    assert re.search(match, proc.stderr), proc.stderr
    assert not out.exists()


def test_output_in_a_missing_folder_is_refused_before_any_work(tmp_path, frame_files):
    folder, _ = frame_files
    proc = _run("pipeline", folder / "f*.fits", "-o", tmp_path / "no" / "sr.fits")
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_existing_output_exits_3_and_is_kept(tmp_path, frame_files):
    folder, _ = frame_files
    out = tmp_path / "fused.fits"
    out.write_bytes(b"keep me")
    proc = _run("stack", folder / "f*.fits", "--psf", "gaussian:1.0", "-o", out)
    assert proc.returncode == 3 and "--overwrite" in proc.stderr
    assert out.read_bytes() == b"keep me"


@pytest.mark.parametrize("command", ["demo", "register", "stack", "enhance", "pipeline", "train",
                                     "evaluate", "info"])
def test_help_has_an_example(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    assert "example" in capsys.readouterr().out


def test_python_dash_m_runs_the_command():
    proc = _run("info")
    assert proc.returncode == 0 and proc.stdout.startswith("astrosr ")


# --------------------------------------------------------------------------- issue 12


def _forbid(monkeypatch, *names):
    """Make the heavy steps fail loudly: a check that must come first proves it did."""
    import astrosr

    def boom(*args, **kwargs):
        raise AssertionError("heavy work started before the input was checked")

    for name in names:
        monkeypatch.setattr(astrosr, name, boom)


def test_version(capsys):
    import astrosr

    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"astrosr {astrosr.__version__}\n"


@pytest.mark.parametrize("command", ["stack", "pipeline"])
@pytest.mark.parametrize("scale", ["0", "-2", "two"])
def test_bad_scale_is_refused_at_once(tmp_path, frame_files, monkeypatch, capsys, command, scale):
    _forbid(monkeypatch, "register_stack", "fuse")
    folder, _ = frame_files
    with pytest.raises(SystemExit) as exc:
        cli.main([command, str(folder / "f*.fits"), "--scale", scale, "-o",
                  str(tmp_path / "out.fits")])
    assert exc.value.code == 2
    assert "argument --scale" in capsys.readouterr().err
    assert not (tmp_path / "out.fits").exists()


@pytest.mark.parametrize("command", ["stack", "pipeline", "enhance"])
@pytest.mark.parametrize("psf, match", [
    ("gauss:1.2", "'gauss' is not a PSF kind"),
    ("gaussian:", "gaussian takes SIGMA"),
    ("gaussian:1,2", "gaussian takes SIGMA"),
    ("moffat:x", r"moffat takes FWHM\[,BETA\]"),
    ("no_such_psf.fits", "no such PSF file"),
])
def test_malformed_psf_is_refused_before_registration(tmp_path, frame_files, monkeypatch, capsys,
                                                      command, psf, match):
    import re

    _forbid(monkeypatch, "register_stack", "fuse", "enhance")
    folder, _ = frame_files
    frames = [str(folder / "f0.fits")] if command == "enhance" else [str(folder / "f*.fits")]
    assert cli.main([command, *frames, "--psf", psf, "-o", str(tmp_path / "o.fits")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(match, err), err
    # The message lists what is accepted.
    for form in ("estimate", "gaussian:SIGMA", "moffat:FWHM[,BETA]", "FITS file"):
        assert form in err


def test_psf_values_out_of_range_name_the_parameter(tmp_path, frame_files, capsys):
    folder, _ = frame_files
    assert cli.main(["stack", str(folder / "f*.fits"), "--psf", "moffat:2,0.5", "-o",
                     str(tmp_path / "o.fits")]) == 2
    assert "beta must be > 1" in capsys.readouterr().err


def test_memory_estimate_grows_with_the_run_and_refuses_scale_16():
    from astrosr import resources

    small = resources.estimate_memory((1000, 1000), n_frames=4, scale=4)
    assert resources.estimate_memory((1000, 1000), n_frames=8, scale=4) > small
    assert resources.estimate_memory((1000, 1000), n_frames=4, scale=8) > 3 * small
    assert resources.estimate_memory((1000, 1000), method="enhance", tile=64) < \
        resources.estimate_memory((1000, 1000), method="enhance", tile=256)
    # The case: five 1392x1040 frames at x16 (died with a 6.78 GiB allocation): 370
    # million output pixels, about eight float32 images of them in the fit and the float64
    # output besides.
    assert resources.estimate_memory((1040, 1392), n_frames=5, scale=16) > 30 * 2 ** 30
    with pytest.raises(MemoryError, match=r"needs about .* GiB .* but 8\.0 GiB is available: "
                                          r"use a smaller"):
        resources.check_memory((1040, 1392), n_frames=5, scale=16, available=8 * 2 ** 30)
    assert resources.check_memory((10, 10), n_frames=2, scale=2, available=2 ** 40) > 0
    with pytest.raises(ValueError, match="method must be one of"):
        resources.estimate_memory((10, 10), method="magic")
    assert resources.available_memory() > 0


@pytest.mark.parametrize("command", ["stack", "pipeline", "enhance"])
def test_run_too_big_for_the_memory_is_refused_before_any_work(tmp_path, frame_files,
                                                               monkeypatch, capsys, command):
    from astrosr import resources

    _forbid(monkeypatch, "register_stack", "fuse", "enhance")
    monkeypatch.setattr(resources, "available_memory", lambda: 100 * 2 ** 20)
    folder, _ = frame_files
    frames = [str(folder / "f0.fits")] if command == "enhance" else [str(folder / "f*.fits")]
    out = tmp_path / "o.fits"
    assert cli.main([command, *frames, "--psf", "gaussian:1.0", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "needs about" in err and "100 MiB is available" in err
    assert "--scale" in err and "--tile" in err
    assert not out.exists()


def test_memory_error_anywhere_exits_2_with_one_line(tmp_path, frame_files, monkeypatch, capsys):
    import astrosr

    def fuse(*args, **kwargs):
        raise MemoryError("Unable to allocate 6.78 GiB for an array with shape (16640, 22272) "
                          "and data type float64")

    monkeypatch.setattr(astrosr, "fuse", fuse)
    folder, stack = frame_files
    shifts = tmp_path / "shifts.ecsv"
    stack.shifts.write(shifts)
    out = tmp_path / "o.fits"
    assert cli.main(["stack", str(folder / "f*.fits"), "--shifts", str(shifts), "--psf",
                     "gaussian:1.0", "-o", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "not enough memory (Unable to allocate 6.78 GiB" in err and "--scale" in err
    assert not out.exists()


@pytest.mark.parametrize("command", ["stack", "pipeline"])
def test_a_single_frame_gets_a_warning(tmp_path, frame_files, capsys, command):
    folder, stack = frame_files
    shifts = tmp_path / "shifts.ecsv"
    stack.shifts[:1].write(shifts)
    method = ["--method", "drizzle"] if command == "stack" else ["--fusion", "drizzle",
                                                                  "--refine", "none"]
    out = tmp_path / "one.fits"
    assert cli.main([command, str(folder / "f0.fits"), "--shifts", str(shifts), *method,
                     "--psf", "gaussian:1.0", "-o", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning: 1 frame: nothing is stacked" in err
    assert CCDData.read(out).shape == (128, 128)
    # Several frames: no such warning.
    assert cli.main([command, str(folder / "f*.fits"), *method, "--psf", "gaussian:1.0",
                     "-o", str(tmp_path / "six.fits"), "--quiet"]) == 0
    assert "nothing is stacked" not in capsys.readouterr().err


def _misfit_result(shape=(16, 16), chi2=7.5):
    """A result as the library returns it when it does not fit its input (it warns too)."""
    from astrosr.misfit import record_fit

    ccd = CCDData(np.ones(shape), unit="electron", meta=fits.Header())
    record_fit(ccd.meta, chi2, what="the frames", hint="give the PSF with --psf", stacklevel=2)
    return ccd


@pytest.mark.parametrize("command", ["stack", "enhance", "pipeline"])
def test_misfit_exits_5_and_writes_nothing_unless_allowed(tmp_path, frame_files, monkeypatch,
                                                          capsys, command):
    import astrosr
    from astrosr.pipeline import MultiFrameSR

    def run(self, frames, shifts=None):
        self.timings_ = {"fuse": 0.0}
        return _misfit_result()

    monkeypatch.setattr(astrosr, "fuse", lambda *a, **k: _misfit_result())
    monkeypatch.setattr(astrosr, "enhance", lambda *a, **k: _misfit_result())
    monkeypatch.setattr(MultiFrameSR, "run", run)
    monkeypatch.setattr(cli, "_quiet_tensorflow", lambda: None)
    folder, _ = frame_files
    frames = [str(folder / "f0.fits")] if command == "enhance" else [str(folder / "f*.fits")]
    out = tmp_path / "o.fits"
    args = [command, *frames, "--psf", "gaussian:1.0", "-o", str(out), "--quiet"]
    if command == "pipeline":
        args += ["--refine", "none"]
    import warnings

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        assert cli.main(args) == cli.EXIT_MISFIT == 5
    err = capsys.readouterr().err
    assert not out.exists()
    # One line, once: the figure, the bound, what it means, the library's hint and the way out;
    # not a Python warning.
    assert err.count("\n") == 1, err
    assert err.startswith(f"astrosr {command}: error: reduced chi-square 7.5 > bound 1.3: the "
                          "result does not reproduce the input within its noise; give the PSF "
                          "with --psf; pass --allow-misfit to write it anyway")
    assert "MisfitWarning" not in err and not shown
    assert cli.main(args + ["--allow-misfit"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning: reduced chi-square 7.5 > bound 1.3" in err
    assert "written anyway" in err
    assert CCDData.read(out).header["CHI2OK"] is False


def test_stack_with_a_wrong_psf_exits_5(tmp_path, frame_files, capsys):
    folder, stack = frame_files
    shifts = tmp_path / "shifts.ecsv"
    stack.shifts.write(shifts)
    out = tmp_path / "wide.fits"
    args = ["stack", str(folder / "f*.fits"), "--shifts", str(shifts), "--psf", "gaussian:3.0",
            "-o", str(out), "--quiet"]
    assert cli.main(args) == 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not reproduce the input within its noise" in err
    assert not out.exists()
    assert cli.main(args + ["--allow-misfit"]) == 0
    header = CCDData.read(out).header
    assert header["CHI2OK"] is False and header["CHI2RED"] > header["CHI2MAX"]


def test_passing_fit_is_written_with_its_keys(tmp_path, frame_files, monkeypatch, capsys):
    import astrosr
    from astrosr.misfit import record_fit

    def fuse(*args, **kwargs):
        ccd = CCDData(np.ones((8, 8)), unit="electron", meta=fits.Header())
        record_fit(ccd.meta, 1.02, what="the frames", hint="-")
        return ccd

    monkeypatch.setattr(astrosr, "fuse", fuse)
    folder, _ = frame_files
    out = tmp_path / "o.fits"
    assert cli.main(["stack", str(folder / "f*.fits"), "--psf", "gaussian:1.0", "-o", str(out),
                     "--quiet"]) == 0
    header = CCDData.read(out).header
    assert header["CHI2OK"] is True and header["CHI2RED"] == 1.02 and header["CHI2MAX"] == 1.3
    assert capsys.readouterr().err == ""


def test_reject_off_turns_rejection_off(tmp_path, frame_files, monkeypatch):
    import astrosr

    folder, stack = frame_files
    shifts = tmp_path / "shifts.ecsv"
    stack.shifts.write(shifts)
    hit = tmp_path / "hit"
    hit.mkdir()
    for i, path in enumerate(sorted(folder.glob("f*.fits"))):
        frame = CCDData.read(path)
        if i == 2:
            frame.data[10:12, 12:14] += 5e4  # a cosmic ray (frames are 32x32)
        write_fits(frame, hit / path.name)
    seen = {}
    fuse = astrosr.fuse

    def spy(*args, **kwargs):
        seen["reject"] = kwargs["reject"]
        return fuse(*args, **kwargs)

    monkeypatch.setattr(astrosr, "fuse", spy)
    common = [str(hit / "f*.fits"), "--shifts", str(shifts), "--method", "drizzle", "--psf",
              "gaussian:1.0", "--quiet"]
    assert cli.main(["stack", *common, "--reject", "on", "-o", str(tmp_path / "on.fits")]) == 0
    assert seen["reject"] is True
    assert CCDData.read(tmp_path / "on.fits").header["NREJECT"] > 0
    assert cli.main(["stack", *common, "--reject", "off", "-o", str(tmp_path / "off.fits")]) == 0
    assert seen["reject"] is False
    assert CCDData.read(tmp_path / "off.fits").header["NREJECT"] == 0


def test_registration_shows_a_progress_bar_unless_quiet(tmp_path, frame_files, capsys):
    folder, _ = frame_files
    assert cli.main(["register", str(folder / "f*.fits"), "-o", str(tmp_path / "s.ecsv")]) == 0
    err = capsys.readouterr().err
    assert "registering" in err and "frame" in err and "<" in err  # elapsed<remaining: the ETA
    assert cli.main(["register", str(folder / "f*.fits"), "-o", str(tmp_path / "q.ecsv"),
                     "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_progress_bar_helper_and_the_network_tiles(capsys):
    from astrosr import inference
    from astrosr.progress import progress_bar

    assert list(progress_bar(range(3), desc="quiet", enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""
    assert sum(progress_bar(range(4), desc="steps", enabled=True)) == 6
    assert "steps" in capsys.readouterr().err

    class Identity:
        scale = 1

        def predict_array(self, tile, softening):
            return tile

    image = np.random.default_rng(0).normal(size=(20, 12))
    mean, spread = inference.run_network(Identity(), image, 8, 2, 2, softening=1.0, progress=True)
    np.testing.assert_allclose(mean, image)
    err = capsys.readouterr().err
    assert "network" in err and "/12 " in err  # 3 x 2 tiles, 2 members
    inference.run_network(Identity(), image, 8, 2, 2, softening=1.0)
    assert capsys.readouterr().err == ""


def test_tensorflow_start_up_noise_is_filtered_but_real_lines_pass(capfd):
    import os

    from astrosr.progress import _STARTUP_NOISE, _stderr_filtered

    with _stderr_filtered(_STARTUP_NOISE):
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
                    b"written to STDERR\n")
        os.write(2, b"I0000 00:00:1796118949.682925    4933 cudart_stub.cc:31] Could not find "
                    b"cuda drivers on your machine, GPU will not be used.\n")
        os.write(2, b"a real problem\n")
    assert capfd.readouterr().err == "a real problem\n"


def test_enhance_prints_no_tensorflow_noise(tmp_path, frame_files):
    pytest.importorskip("keras")
    folder, _ = frame_files
    out = tmp_path / "x4.fits"
    proc = _run("enhance", folder / "f0.fits", "--no-ensemble", "--consistency", "pixel", "-o",
                out)
    assert proc.returncode == 0, proc.stderr
    for noise in ("cuInit", "E0000", "I0000", "absl::InitializeLog", "cudart_stub",
                  "cpu_feature_guard", "retracing", "Warning"):
        assert noise not in proc.stderr, proc.stderr
    assert proc.stdout.splitlines()[-1].startswith(f"Wrote {out} (128x128)")


def test_psf_estimate_options_are_checked_before_any_work(tmp_path, capsys):
    from astrosr.cli import main

    code = main(["stack", str(tmp_path / "missing_*.fits"), "--psf", "gaussian:1.2",
                 "--psf-snr", "10", "-o", str(tmp_path / "out.fits")])
    assert code == 2
    assert "--psf-snr and --fwhm-guess tune the PSF estimate" in capsys.readouterr().err


@pytest.fixture(scope="module")
def raw_files(tmp_path_factory, extended_sky):
    """4 raw camera frames (uint16 ADU, written with BZERO) and a master bias."""
    from astrosr.camera import Camera

    folder = tmp_path_factory.mktemp("raw")
    stack = simulate.observe(extended_sky[:192, :192], shifts=[[0, 0], [3.2, 1.1], [-2.4, 2.7],
                                                               [1.6, -3.3]],
                             psf=PSF, sky=200.0, seed=2, camera=Camera(trails=0.0))
    for i, frame in enumerate(stack.frames):
        fits.PrimaryHDU(frame.data, header=fits.Header(frame.meta)).writeto(folder / f"r{i}.fits")
    fits.PrimaryHDU(stack.camera.bias[0].astype(np.float32)).writeto(folder / "bias.fits")
    return folder


def test_stack_calibrates_raw_frames_and_takes_a_bias(tmp_path, raw_files):
    frames = sorted(map(str, raw_files.glob("r*.fits")))
    out = tmp_path / "raw.fits"
    assert cli.main(["stack", *frames, "--method", "drizzle", "-o", str(out), "--quiet"]) == 0
    history = "".join(CCDData.read(out).header["HISTORY"])
    assert "raw frames calibrated" in history and "no calibration frames" in history
    out = tmp_path / "raw_bias.fits"
    assert cli.main(["stack", *frames, "--bias", str(raw_files / "bias.fits"), "--method",
                     "drizzle", "-o", str(out), "--quiet"]) == 0
    assert "(bias)" in "".join(CCDData.read(out).header["HISTORY"])


def test_no_calibrate_with_a_bias_is_refused(tmp_path, raw_files, capsys):
    frames = sorted(map(str, raw_files.glob("r*.fits")))
    code = cli.main(["stack", *frames, "--bias", str(raw_files / "bias.fits"), "--no-calibrate",
                     "-o", str(tmp_path / "x.fits"), "--quiet"])
    assert code == 2
    assert "--no-calibrate) with calibration frames" in capsys.readouterr().err
    assert not (tmp_path / "x.fits").exists()


@pytest.mark.parametrize("command", ["enhance", "evaluate"])
def test_a_folder_where_one_image_is_wanted_is_refused(tmp_path, command, capsys):
    args = [command, str(tmp_path)] + (["--truth", str(tmp_path)] if command == "evaluate"
                                       else ["-o", str(tmp_path / "x.fits")])
    assert cli.main(args) == 2
    assert "is a folder" in capsys.readouterr().err
