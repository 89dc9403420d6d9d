import subprocess
import sys

import numpy as np
import pytest
from astropy.table import Table

from astrosr import cli, psf, simulate


def test_demo_runs_and_reports_small_errors(capsys):
    assert cli.main(["demo", "--size", "256", "--frames", "4", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    rms = float(out.split("RMS error")[1].split()[0])
    assert rms < 0.02


def test_register_fits_files_to_a_table(tmp_path, extended_sky):
    stack = simulate.observe(extended_sky, n_frames=3, psf=psf.GaussianPSF(1.0), seed=5)
    paths = []
    for i, frame in enumerate(stack.frames):
        paths.append(str(tmp_path / f"f{i}.fits"))
        frame.write(paths[-1])
    out = tmp_path / "shifts.ecsv"
    assert cli.main(["register", *paths, "-o", str(out)]) == 0
    table = Table.read(out)
    np.testing.assert_allclose(table["dx"], stack.shifts["dx"].value, atol=0.05)
    # Never over an existing file without --overwrite.
    assert cli.main(["register", *paths, "-o", str(out)]) == 3
    assert cli.main(["register", *paths, "-o", str(out), "--overwrite"]) == 0


def test_missing_file_gives_one_line_and_nonzero_exit(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "astrosr", "register", str(tmp_path / "no.fits"),
                           str(tmp_path / "no2.fits")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "no such FITS file" in proc.stderr


@pytest.mark.parametrize("command", ["demo", "register", "train", "info"])
def test_help(command):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
