"""``astrosr demo``: a failed run leaves nothing behind, the PSF fallback is said, the figure.

The whole demo, networks included, runs in tests/test_cli.py; here the
pipeline step is replaced by a quick drizzle so that failures at every stage
can be tried in seconds.
"""
from types import SimpleNamespace

import numpy as np
import pytest
from astropy.nddata import CCDData

from astrosr import _demo, cli, fuse, register_stack

ARGS = ["demo", "--size", "128", "--frames", "4", "--seed", "1"]


def quick_process(frames, say):
    """_demo._process's results, from a drizzle instead of the pipeline."""
    shifts = register_stack(frames)
    drz = fuse(frames, shifts, scale=_demo.SCALE, method="drizzle", pixfrac=0.7)
    times = {"register": 0.1, "psf": 0.0, "fuse": 0.1, "pipeline": 0.2, "reconstruct": 0.2,
             "drizzle": 0.1}
    return {"drizzle": drz, "reconstruct": drz, "pipeline": drz}, times, SimpleNamespace(
        shifts_=shifts)


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setattr(_demo, "_process", quick_process)


def fail(*args, **kwargs):
    raise RuntimeError("step failed")


def test_quick_demo_writes_everything_and_no_work_folder(tmp_path, quick):
    out = tmp_path / "demo"
    assert cli.main([*ARGS, "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(("frames", *_demo._FILES))
    assert len(list((out / "frames").iterdir())) == 4


@pytest.mark.parametrize("step", ["_process", "_metrics", "_figure", "_publish"])
def test_a_failed_demo_leaves_nothing_and_the_next_run_needs_no_overwrite(tmp_path, quick,
                                                                          monkeypatch, step):
    out = tmp_path / "demo"
    with monkeypatch.context() as m:
        m.setattr(_demo, step, fail)
        with pytest.raises(RuntimeError, match="step failed"):
            _demo.run_demo(out, size=128, n_frames=4, say=lambda *a: None)
    assert not out.exists()  # it created the folder, so it removed it
    assert cli.main([*ARGS, "--out", str(out), "--quiet"]) == 0  # no --overwrite needed
    assert (out / "demo.png").is_file()


def test_a_failed_demo_keeps_a_folder_it_did_not_create_and_what_was_there(tmp_path, quick,
                                                                           monkeypatch):
    out = tmp_path / "demo"
    out.mkdir()
    monkeypatch.setattr(_demo, "_figure", fail)
    with pytest.raises(RuntimeError):
        _demo.run_demo(out, size=128, n_frames=4, say=lambda *a: None)
    assert out.is_dir() and list(out.iterdir()) == []
    # Over an earlier demo, with --overwrite: a failure leaves the earlier files as they were.
    monkeypatch.undo()
    monkeypatch.setattr(_demo, "_process", quick_process)
    assert cli.main([*ARGS, "--out", str(out), "--quiet"]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    monkeypatch.setattr(_demo, "_figure", fail)
    with pytest.raises(RuntimeError):
        _demo.run_demo(out, size=128, n_frames=3, overwrite=True, say=lambda *a: None)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_an_interrupted_demo_leaves_nothing(tmp_path, quick, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_demo, "_metrics", interrupt)
    with pytest.raises(KeyboardInterrupt):
        _demo.run_demo(tmp_path / "demo", size=128, n_frames=4, say=lambda *a: None)
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_the_frames_of_an_earlier_run(tmp_path, quick):
    out = tmp_path / "demo"
    assert cli.main([*ARGS, "--out", str(out), "--quiet"]) == 0
    assert cli.main([*ARGS, "--out", str(out), "--quiet"]) == 3  # needs --overwrite
    assert cli.main(["demo", "--size", "128", "--frames", "3", "--out", str(out), "--quiet",
                     "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "frames").iterdir()) == [
        "frame_00.fits", "frame_01.fits", "frame_02.fits"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_a_leftover_work_folder_does_not_block_a_run(tmp_path, quick):
    out = tmp_path / "demo"
    (out / f"{_demo._WORK_PREFIX}killed").mkdir(parents=True)  # a run killed with SIGKILL
    assert cli.main([*ARGS, "--out", str(out), "--quiet"]) == 0


def test_psf_fallback_is_announced(tmp_path, monkeypatch, capsys):
    """When the PSF estimate raises ValueError, the demo says so, loudly, and goes on."""
    import astrosr.pipeline

    class FakeMultiFrameSR:
        def __init__(self, *, scale, psf):
            self.psf = psf

        def run(self, frames):
            if self.psf == "estimate":
                raise ValueError("fewer than 3 isolated stars")
            self.shifts_ = register_stack(frames)
            self.fused_ = fuse(frames, self.shifts_, scale=_demo.SCALE, method="drizzle")
            self.timings_ = {"register": 0.1, "psf": 0.0, "fuse": 0.1}
            self.scores_ = None  # as MultiFrameSR with folds=0
            return self.fused_

    monkeypatch.setattr(astrosr.pipeline, "MultiFrameSR", FakeMultiFrameSR)
    assert cli.main([*ARGS, "--out", str(tmp_path / "demo")]) == 0
    text = capsys.readouterr().out
    assert "WARNING: the PSF estimate from the stars of the frames failed" in text
    assert "fewer than 3 isolated stars" in text
    assert "falling back to the PSF the demo simulated (Gaussian, sigma 1.2" in text


def test_figure_has_zoom_pixel_labels_and_unit(tmp_path, quick, monkeypatch):
    import astrosr.visualization

    figures = []
    real = astrosr.visualization.compare

    def recording(*args, **kwargs):
        figures.append(real(*args, **kwargs))
        return figures[-1]

    monkeypatch.setattr(astrosr.visualization, "compare", recording)
    assert cli.main([*ARGS, "--out", str(tmp_path / "demo"), "--quiet"]) == 0
    fig, = figures
    panels = [ax for ax in fig.axes if ax.images]
    images = [ax for ax in panels if ax.get_title() != "zoom"]
    zooms = [ax for ax in panels if ax.get_title() == "zoom"]
    assert len(images) == len(zooms) == 6  # raw, bicubic, drizzle, reconstruct, pipeline, truth
    assert images[0].get_title() == "raw frame (1 of 4)"
    # The raw frame in its input pixels (32 across), the fine images in fine pixels (128).
    assert images[0].get_xlabel() == "x [input pixel]"
    assert images[0].images[0].get_extent() == [-0.5, 31.5, -0.5, 31.5]
    assert {ax.get_xlabel() for ax in images[1:]} == {"x [fine pixel]"}
    assert images[1].images[0].get_extent() == [-0.5, 127.5, -0.5, 127.5]
    # Every zoom shows the same sky: 12 input pixels = 48 fine pixels at most, a quarter here.
    x0, x1 = zooms[1].get_xlim()
    assert x1 - x0 == 32
    np.testing.assert_allclose(zooms[0].get_xlim(), ((x0 + 0.5) / 4 - 0.5, (x1 + 0.5) / 4 - 0.5))
    assert {ax.get_xlim() for ax in zooms[1:]} == {(x0, x1)}
    cbar, = [ax for ax in fig.axes if not ax.images]
    assert cbar.get_ylabel() == "electron / fine pixel"


def test_zoom_region_is_inside_and_on_structure():
    truth = np.zeros((128, 128))
    truth[100, 20] = 1000.0  # a point source near the edge
    x, y, size = _demo._zoom(CCDData(truth, unit="electron"))
    assert size == 32
    assert 16 <= x <= 112 and 16 <= y <= 112  # the window lies inside the image
    assert abs(x - 20) <= size / 2 and abs(y - 100) <= size / 2  # and holds the source
