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
    assert sorted(h.name for h in fits.open(out)[1:]) == ["MASK", "UNCERT", "WHT"]
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
    assert "astrosr.MultiFrameSR" in "".join(CCDData.read(out).header["HISTORY"])
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
