"""Output files all or nothing (`astrosr.files`), SIGTERM as an exception, model files checked."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from astrosr import files
from astrosr.files import Terminated, replacing, sigterm_exits


def _supports_o_tmpfile(folder):
    try:
        os.close(os.open(folder, os.O_TMPFILE | os.O_RDWR, 0o600))
    except (AttributeError, OSError):
        return False
    return os.path.isdir("/proc/self/fd")


@pytest.fixture(params=["unnamed", "named"])
def way(request, tmp_path, monkeypatch):
    """Both ways of writing: the unnamed file (Linux), and the portable named temporary."""
    if request.param == "named":
        monkeypatch.setattr(files, "_unnamed_file", lambda path: None)
    elif not _supports_o_tmpfile(tmp_path):
        pytest.skip("no O_TMPFILE here")
    return request.param


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------- replacing

def test_writers_write_through_the_name_of_the_target(tmp_path, way):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.arange(20.0).reshape(4, 5)
    with replacing(tmp_path / "image.fits.gz") as tmp:
        assert tmp.name == "image.fits.gz" if way == "unnamed" else tmp.name.endswith(".gz")
        fits.PrimaryHDU(data).writeto(tmp, overwrite=True)
    assert (tmp_path / "image.fits.gz").read_bytes()[:2] == b"\x1f\x8b"    # gzip, by the name
    np.testing.assert_array_equal(fits.getdata(tmp_path / "image.fits.gz"), data)
    table = Table({"dx": [0.5, -1.25], "dy": [2.0, 0.0]})
    for name, fmt in (("shifts.fits", "fits"), ("shifts.ecsv", "ascii.ecsv")):
        with replacing(tmp_path / name) as tmp:   # astropy's FITS table writer replaces the link
            table.write(tmp, format=fmt, overwrite=True)
        assert Table.read(tmp_path / name)["dx"].tolist() == [0.5, -1.25]
    fig = plt.figure()
    with replacing(tmp_path / "figure.png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    assert (tmp_path / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "figure.png", "image.fits.gz", "shifts.ecsv", "shifts.fits"]


def test_nothing_is_visible_in_the_folder_while_writing(tmp_path, way):
    with replacing(tmp_path / "out.fits") as tmp:
        fits.PrimaryHDU(np.ones((64, 64))).writeto(tmp)
        visible = sorted(p.name for p in tmp_path.iterdir())
        assert visible == ([] if way == "unnamed" else [tmp.name])
    assert [p.name for p in tmp_path.iterdir()] == ["out.fits"]
    if way == "unnamed":
        assert not tmp.parent.exists()          # the link's private folder is gone


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_interrupted_block_leaves_nothing(tmp_path, way, error):
    with pytest.raises(error):
        with replacing(tmp_path / "out.fits") as tmp:
            with open(tmp, "wb") as f:
                f.write(b"SIMPLE  =                    T" + b" " * 10000)
            raise error()
    assert list(tmp_path.iterdir()) == []
    assert not os.path.lexists(tmp) and not (way == "unnamed" and tmp.parent.exists())


def test_failed_write_keeps_the_old_file(tmp_path, way):
    path = tmp_path / "out.fits"
    fits.PrimaryHDU(np.zeros((3, 3))).writeto(path)
    before = _sha256(path)
    with pytest.raises(ValueError, match="boom"):
        with replacing(path, overwrite=True) as tmp:
            fits.PrimaryHDU(np.ones((3, 3))).writeto(tmp, overwrite=True)
            raise ValueError("boom")
    assert _sha256(path) == before and [p.name for p in tmp_path.iterdir()] == ["out.fits"]


def test_existing_file_is_refused_and_kept_byte_identical(tmp_path, way):
    path = tmp_path / "out.fits"
    fits.PrimaryHDU(np.zeros((3, 3))).writeto(path)
    before, mtime = _sha256(path), path.stat().st_mtime_ns
    with pytest.raises(FileExistsError, match=r"out\.fits exists: pass overwrite=True"):
        with replacing(path):
            raise AssertionError("the block must not run")  # pragma: no cover
    assert _sha256(path) == before and path.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == ["out.fits"]


def test_file_appearing_while_writing_is_kept_unless_overwrite(tmp_path, way):
    path = tmp_path / "out.fits"
    with pytest.raises(FileExistsError, match=r"out\.fits exists"):
        with replacing(path) as tmp:
            fits.PrimaryHDU(np.ones((3, 3))).writeto(tmp, overwrite=True)
            path.write_bytes(b"someone else's")
    assert path.read_bytes() == b"someone else's"
    assert [p.name for p in tmp_path.iterdir()] == ["out.fits"]
    with replacing(path, overwrite=True) as tmp:
        fits.PrimaryHDU(np.full((3, 3), 7.0)).writeto(tmp, overwrite=True)
    assert fits.getdata(path)[0, 0] == 7.0 and [p.name for p in tmp_path.iterdir()] == ["out.fits"]


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_mode_follows_the_umask(tmp_path, way, mask, mode):
    old = os.umask(mask)
    try:
        for overwrite in (False, True):
            with replacing(tmp_path / "out.fits", overwrite=overwrite) as tmp:
                fits.PrimaryHDU(np.ones((3, 3))).writeto(tmp, overwrite=True)
            assert (tmp_path / "out.fits").stat().st_mode & 0o777 == mode
    finally:
        os.umask(old)


def test_file_system_refusing_hard_links_still_gets_the_file(tmp_path, monkeypatch):
    if not _supports_o_tmpfile(tmp_path):
        pytest.skip("no O_TMPFILE here")

    def refuse(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)
    for overwrite in (False, True):
        with replacing(tmp_path / "out.fits", overwrite=overwrite) as tmp:
            fits.PrimaryHDU(np.full((3, 3), float(overwrite))).writeto(tmp, overwrite=True)
        assert fits.getdata(tmp_path / "out.fits")[0, 0] == float(overwrite)
        assert [p.name for p in tmp_path.iterdir()] == ["out.fits"]


def test_bad_targets_are_refused_before_writing(tmp_path, way):
    with pytest.raises(FileNotFoundError, match=r"folder .*missing does not exist"):
        with replacing(tmp_path / "missing" / "out.fits"):
            pass  # pragma: no cover
    (tmp_path / "taken").mkdir()
    with pytest.raises(IsADirectoryError, match=r"taken is a folder"):
        with replacing(tmp_path / "taken", overwrite=True):
            pass  # pragma: no cover


# ---------------------------------------------------------------- killed while writing

WRITER = textwrap.dedent("""
    import contextlib, sys, time
    import numpy as np
    from astropy.io import fits
    from astrosr import files

    target, helper, way = sys.argv[1:4]
    if way == "named":
        files._unnamed_file = lambda path: None
    header = fits.Header([("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 2),
                          ("NAXIS1", 4096), ("NAXIS2", 4096)])        # 64 MiB of data
    rows = np.ones((16, 4096), np.float32)
    with files.sigterm_exits() if helper == "helper" else contextlib.nullcontext():
        with files.replacing(target) as tmp:
            hdu = fits.StreamingHDU(tmp, header)
            hdu.write(rows)
            print("writing", tmp, flush=True)
            for _ in range(255):
                time.sleep(0.05)
                hdu.write(rows)
            hdu.close()
""")

REPO = Path(__file__).resolve().parents[1]
KILLS = [("SIGKILL", "none", "unnamed"), ("SIGTERM", "none", "unnamed"),
         ("SIGTERM", "helper", "unnamed"), ("SIGTERM", "helper", "named")]


@pytest.fixture(scope="module")
def writers(tmp_path_factory):
    """The killed writers, started together (each takes seconds to import astrosr)."""
    started = {}
    for kill in KILLS:
        folder = tmp_path_factory.mktemp("_".join(kill))
        if kill[2] == "unnamed" and not _supports_o_tmpfile(folder):
            continue
        started[kill] = folder, subprocess.Popen(
            [sys.executable, "-c", WRITER, str(folder / "big.fits"), kill[1], kill[2]],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    yield started
    for _, proc in started.values():
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def _ready(proc, timeout=60):
    """The writer's first line (its temporary path) once it has started writing."""
    line = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not line or not line[0].startswith("writing "):
        proc.kill()
        pytest.fail(f"the writer did not start: {proc.stderr.read()[-2000:]}")
    return Path(line[0].split(" ", 1)[1].strip())


@pytest.mark.parametrize("kill", KILLS, ids=["-".join(k) for k in KILLS])
def test_killed_writer_leaves_no_file_in_the_folder(writers, kill):
    if kill not in writers:
        pytest.skip("no O_TMPFILE here")
    folder, proc = writers[kill]
    tmp = _ready(proc)
    if kill[2] == "unnamed":
        assert list(folder.iterdir()) == []     # even mid-write: the data have no name yet
    proc.send_signal(getattr(signal, kill[0]))
    status = proc.wait(timeout=60)
    assert status == (143 if kill[1] == "helper" else -getattr(signal, kill[0]))
    assert list(folder.iterdir()) == []
    if kill[2] == "unnamed":
        if kill[1] == "helper":
            assert not tmp.parent.exists()       # cleaned up on the way out
        else:
            # killed outright, the writer leaves its link's private folder in the system's
            # temporary directory (a dangling link, no data): tidy it here
            assert [p.is_symlink() for p in tmp.parent.iterdir()] == [True]
            shutil.rmtree(tmp.parent)


# ---------------------------------------------------------------- SIGTERM as an exception

def test_sigterm_raises_terminated_and_the_handler_is_restored():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only: a SIGTERM here would end the run")
    before = signal.getsignal(signal.SIGTERM)
    cleaned = []
    with pytest.raises(Terminated) as info:
        with sigterm_exits():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(500):       # the handler runs at the next instruction
                    time.sleep(0.01)
            finally:
                cleaned.append(True)
    assert cleaned == [True]
    assert isinstance(info.value, SystemExit) and not isinstance(info.value, Exception)
    assert info.value.code == 143 and str(info.value) == "terminated by SIGTERM"
    assert signal.getsignal(signal.SIGTERM) == before


def test_sigterm_exits_respects_an_ignored_sigterm_and_other_threads():
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with sigterm_exits():
            assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)
    seen = []

    def in_a_thread():
        with sigterm_exits():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert seen == [previous]


# ---------------------------------------------------------------- model files

@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny saved model (TensorFlow is imported once, here)."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("keras")
    from astrosr.models import SRModel

    folder = tmp_path_factory.mktemp("model")
    weights, card = SRModel("srcnn", scale=2, filters=(4, 4), name="tiny").save(folder / "tiny")
    return weights, card, json.loads(card.read_text())["weights"]["sha256"]


@pytest.fixture
def model_copy(saved_model, tmp_path):
    weights, card, expected = saved_model
    return (Path(shutil.copy(weights, tmp_path)), Path(shutil.copy(card, tmp_path)), expected)


def test_intact_model_loads(model_copy):
    from astrosr.models import SRModel

    weights, _, _ = model_copy
    assert SRModel.load(weights).name == "tiny"


def test_missing_weights_name_the_file_and_the_expected_sha256(model_copy):
    from astrosr.models import SRModel
    from astrosr.models.model import get_model

    weights, card, expected = model_copy
    weights.unlink()
    match = (rf"no such model file: {weights}, the weights of the model card {card} \(expected "
             rf"sha256 {expected}\); copy the weights file again")
    with pytest.raises(FileNotFoundError, match=match):
        SRModel.load(weights.parent / "tiny")
    with pytest.raises(FileNotFoundError, match=match):   # not hidden behind "no such model"
        get_model(str(weights.parent / "tiny"))


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_weights_name_the_file_and_both_sha256(model_copy, damage):
    from astrosr.models import SRModel

    weights, card, expected = model_copy
    data = bytearray(weights.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        del data[len(data) // 2:]
    weights.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    match = (rf"sha256 of {weights} is {actual} but the model card {card} says {expected}: the "
             r"weights file is corrupt or does not belong to this card; copy the weights file")
    with pytest.raises(ValueError, match=match):
        SRModel.load(card)


def test_missing_card_or_its_sha256_is_named(model_copy):
    from astrosr.models import SRModel

    weights, card, _ = model_copy
    record = json.loads(card.read_text())
    del record["weights"]["sha256"]
    card.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=rf"model card {card} records no sha256 of its weights"):
        SRModel.load(weights)
    card.unlink()
    with pytest.raises(FileNotFoundError, match=rf"no such model file: {card}, the model card of "
                                                rf"{weights}"):
        SRModel.load(weights)


def test_shipped_model_without_its_weights_says_reinstall(model_copy, monkeypatch):
    from astrosr.models import SRModel
    from astrosr.models import model as model_module

    weights, _, expected = model_copy
    monkeypatch.setattr(model_module, "DATA_DIR", weights.parent.resolve())
    weights.unlink()
    from astrosr.models.model import get_model

    for load in (SRModel.pretrained, get_model):
        with pytest.raises(FileNotFoundError, match=rf"tiny\.weights\.h5.*expected sha256 "
                                                    rf"{expected}\); reinstall astrosr"):
            load("tiny")
