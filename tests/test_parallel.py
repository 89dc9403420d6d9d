"""astrosr.parallel.process_stacks and ``astrosr batch`` on a real dask.distributed cluster."""
import os
import subprocess
import sys

import numpy as np
import pytest
from astropy import units as u
from astropy.nddata import CCDData

import astrosr
from astrosr import cli, psf, simulate
from astrosr.nddata import write_fits
from astrosr.parallel import StackResult, process_stacks, stack_names, worker_environment

distributed = pytest.importorskip("distributed")

PSF = psf.GaussianPSF(1.0)
#: Fast pipeline options: the PSF given, no network.
OPTIONS = dict(scale=4, psf=PSF, refine=None, folds=0)  # validation is tested elsewhere


@pytest.fixture(scope="module")
def cluster():
    """Two one-thread worker processes, as the brief of the module asks for."""
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=":0") as lc:
        yield lc


@pytest.fixture(scope="module")
def client(cluster):
    with distributed.Client(cluster) as c:
        yield c


def _stack(seed):
    """4 frames of 24x24 (scale 4) of a small seeded sky."""
    truth = simulate.make_sky((96, 96), n_stars=8, n_galaxies=1, nebula=False,
                              star_flux=(2e3, 5e4), seed=seed)
    return simulate.observe(CCDData(truth, unit=u.electron), n_frames=4, scale=4, psf=PSF,
                            sky=20.0, read_noise=5.0, seed=seed + 1).frames


@pytest.fixture(scope="module")
def stacks():
    return {"a": _stack(3), "b": _stack(5)}


@pytest.fixture(scope="module")
def expected(stacks):
    """The pipeline run here, in this process, on the same stacks."""
    return {name: astrosr.MultiFrameSR(**OPTIONS).run(frames) for name, frames in stacks.items()}


@pytest.fixture(scope="module")
def folders(tmp_path_factory, stacks):
    """Folders m31/ and m33/ of good FITS frames, and broken/ with a truncated frame."""
    root = tmp_path_factory.mktemp("stacks")
    paths = {}
    for folder, frames in (("m31", stacks["a"]), ("m33", stacks["b"]), ("broken", stacks["a"])):
        (root / folder).mkdir()
        for i, frame in enumerate(frames):
            write_fits(frame, root / folder / f"frame_{i}.fits")
        paths[folder] = root / folder
    damaged = paths["broken"] / "frame_2.fits"
    damaged.write_bytes(damaged.read_bytes()[:5000])
    return paths


def _stack_tasks(client):
    """The stack tasks the scheduler has ever seen (keys ``_run_stack-...`` in its log)."""
    def seen(dask_scheduler):
        return len({str(entry[0]) for entry in dask_scheduler.transition_log
                    if str(entry[0]).startswith("_run_stack")})

    return client.run_on_scheduler(seen)


def test_results_equal_the_pipeline_run_in_process(client, stacks, expected):
    records = process_stacks(stacks, client=client, progress=False, **OPTIONS)
    assert [r.name for r in records] == ["a", "b"]
    for record in records:
        assert isinstance(record, StackResult) and record.ok, record.error
        ref = expected[record.name]
        np.testing.assert_allclose(record.result.data, ref.data, rtol=1e-6,
                                   atol=1e-6 * np.abs(ref.data).max())
        assert record.result.weight is not None  # what the result carries survives the trip
        assert record.chi2red == pytest.approx(float(ref.meta["CHI2RED"]))
        assert record.fit_ok is True and record.path is None and record.seconds > 0
        assert record.summary().startswith(f"{record.name}: ok, chi2_red ")
    # A plain list: names by position, results in input order (b before a).
    records = process_stacks([stacks["b"], np.array([f.data for f in stacks["a"]])],
                             client=client, progress=False, **OPTIONS)
    assert [r.name for r in records] == ["stack-000", "stack-001"]
    assert stack_names(["data/m31", "data/m33/*.fits", stacks["a"]]) == ["m31", "m33",
                                                                           "stack-002"]
    np.testing.assert_allclose(records[0].result.data, expected["b"].data, rtol=1e-6,
                               atol=1e-6 * np.abs(expected["b"].data).max())
    assert records[1].ok and records[1].result.shape == (96, 96)


def test_a_broken_stack_fails_alone(client, folders):
    records = process_stacks([folders["m31"], folders["broken"], folders["m33"], [folders["m31"]
                             / "frame_0.fits"]], client=client, progress=False, **OPTIONS)
    assert [r.name for r in records] == ["m31", "broken", "m33", "stack-003"]
    good, broken, other, single = records
    assert good.ok and other.ok
    assert not broken.ok and broken.error_type == "OSError"
    assert "frame_2.fits" in broken.error and "Traceback" in broken.traceback
    assert broken.summary().startswith("broken: FAILED (OSError: ")
    # One frame is not an error: the pipeline says so, and the record keeps what it said.
    assert single.ok and any("1 frame: nothing is stacked" in w for w in single.warnings)


def test_output_dir_writes_one_fits_per_stack(client, folders, expected, tmp_path):
    out = tmp_path / "sr"  # created by the workers
    stacks = [folders["m31"], folders["m33"]]
    records = process_stacks(stacks, client=client, output_dir=out, progress=False, **OPTIONS)
    assert all(r.ok for r in records), [r.error for r in records]
    assert sorted(p.name for p in out.iterdir()) == ["m31.fits", "m33.fits"]
    for record, ref in zip(records, (expected["a"], expected["b"])):
        assert record.result is None and record.path == out / f"{record.name}.fits"
        ccd = CCDData.read(record.path)
        np.testing.assert_allclose(ccd.data, ref.data, rtol=1e-5,
                                   atol=1e-5 * np.abs(ref.data).max())
        assert ccd.header["CHI2OK"] is True
    before = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    again = process_stacks(stacks, client=client, output_dir=out, progress=False, **OPTIONS)
    for record in again:
        assert not record.ok and record.error_type == "FileExistsError"
        assert str(out / f"{record.name}.fits") in record.error
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == before
    replaced = process_stacks(stacks, client=client, output_dir=out, overwrite=True,
                              progress=False, **OPTIONS)
    assert all(r.ok for r in replaced)


def test_a_misfit_can_be_refused(client, stacks, tmp_path):
    wrong = dict(OPTIONS, psf=psf.GaussianPSF(2.0))  # twice too wide: the frames misfit
    records = process_stacks({"a": stacks["a"]}, client=client, output_dir=tmp_path,
                             allow_misfit=False, progress=False, **wrong)
    (record,) = records
    assert not record.ok and record.error_type == "MisfitWarning" and record.fit_ok is False
    assert "reduced chi-square" in record.error and not list(tmp_path.iterdir())
    (kept,) = process_stacks({"a": stacks["a"]}, client=client, progress=False, **wrong)
    assert kept.ok and kept.fit_ok is False and any("MisfitWarning" in w for w in kept.warnings)


def test_options_are_checked_before_any_task(client, stacks):
    count = _stack_tasks(client)
    with pytest.raises(TypeError, match="unknown pipeline option 'scael'.*scale"):
        process_stacks(stacks, client=client, scael=4, psf=PSF)
    with pytest.raises(ValueError, match="fusion must be one of"):
        process_stacks(stacks, client=client, fusion="median", **OPTIONS)
    with pytest.raises(ValueError, match="pixfrac is a drizzle option"):
        process_stacks(stacks, client=client, pixfrac=0.5, **OPTIONS)
    with pytest.raises(ValueError, match="leave workers out"):
        process_stacks(stacks, client=client, workers=2, **OPTIONS)
    with pytest.raises(ValueError, match="'m31' more than once"):
        process_stacks(["x/m31", "y/m31"], client=client, **OPTIONS)
    with pytest.raises(TypeError, match="one stack .* goes in a list"):
        process_stacks(stacks["a"][0].data, client=client, **OPTIONS)
    with pytest.raises(TypeError, match="client must be"):
        process_stacks(stacks, client=8786, **OPTIONS)
    assert _stack_tasks(client) == count


def test_the_scheduler_address_is_enough(cluster, stacks, expected):
    (record,) = process_stacks({"b": stacks["b"]}, client=cluster.scheduler_address,
                               progress=False, **OPTIONS)
    assert record.ok
    np.testing.assert_allclose(record.result.data, expected["b"].data, rtol=1e-6,
                               atol=1e-6 * np.abs(expected["b"].data).max())


def test_a_local_cluster_is_started_and_closed(stacks, monkeypatch):
    import distributed

    keys = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTHONHASHSEED",
            "TF_NUM_INTRAOP_THREADS", "MALLOC_TRIM_THRESHOLD_")
    before = {k: os.environ.get(k) for k in keys}
    seen = {}
    local_cluster = distributed.LocalCluster

    def recording(**kwargs):  # the worker's environment, as the cluster it starts gives it
        cluster = local_cluster(**kwargs)
        with distributed.Client(cluster) as client:
            seen.update(client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")))
        return cluster

    monkeypatch.setattr(distributed, "LocalCluster", recording)
    (record,) = process_stacks({"a": stacks["a"]}, workers=1, progress=False, **OPTIONS)
    assert record.ok
    assert {k: os.environ.get(k) for k in keys} == before
    # Not Dask's default 65536 (much slower for the pipeline): glibc's, or the caller's own.
    assert list(seen.values()) == [before["MALLOC_TRIM_THRESHOLD_"]]
    env = worker_environment(3)
    assert env["OMP_NUM_THREADS"] == env["TF_NUM_INTRAOP_THREADS"] == "3"
    with pytest.raises(ValueError, match="threads"):
        worker_environment(0)


def test_batch_command(cluster, folders, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["batch", str(folders["m31"]), str(folders["broken"]), "--output-dir", str(out),
            "--scheduler", cluster.scheduler_address, "--psf", "gaussian:1.0", "--refine",
            "none", "--quiet"]
    assert cli.main(argv) == cli.EXIT_STACK_FAILED == 6
    assert [p.name for p in out.iterdir()] == ["m31.fits"]
    assert CCDData.read(out / "m31.fits").shape == (96, 96)
    err = capsys.readouterr().err
    assert "broken: FAILED (OSError: " in err and "frame_2.fits" in err
    argv = ["batch", str(folders["m33"]), "--output-dir", str(out), "--scheduler",
            cluster.scheduler_address, "--psf", "gaussian:1.0", "--refine", "none"]
    assert cli.main(argv) == 0
    assert "m33: ok, chi2_red" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["m31.fits", "m33.fits"]
    assert cli.main(["batch", str(tmp_path / "nowhere"), "--output-dir", str(out)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    # An existing result is refused before any work (exit 3), as every command does.
    assert cli.main(["batch", str(folders["m33"]), "--output-dir", str(out)]) == 3
    assert f"{out / 'm33.fits'} exists: pass --overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["batch", str(folders["m31"]), "--output-dir", str(out), "--workers", "2",
                  "--scheduler", cluster.scheduler_address])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_without_dask_the_message_says_what_to_install(monkeypatch, stacks, folders, tmp_path,
                                                      capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    with pytest.raises(ImportError, match=r'pip install "astrosr-gan\[dask\]"'):
        process_stacks(stacks, **OPTIONS)
    argv = ["batch", str(folders["m31"]), "--output-dir", str(tmp_path), "--refine", "none"]
    assert cli.main(argv) == 4
    assert 'pip install "astrosr-gan[dask]"' in capsys.readouterr().err


def test_importing_the_module_starts_neither_dask_nor_tensorflow():
    code = ("import astrosr, astrosr.parallel, sys; "
            "print([m for m in ('tensorflow', 'keras', 'dask', 'distributed') "
            "if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
