"""The fine grid strip by strip (`astrosr.strips`): the same operator, the same fit, no seams.

Strips keep the memory of the Richardson-Lucy fits bounded whatever the image
size; they must not change the answer. The truth here is the whole-grid
operator and the whole-image fit, computed on the same seeded data.
"""

import os

import numpy as np
import pytest
from astropy.nddata import CCDData

from astrosr import simulate
from astrosr.forward import ObservationOperator
from astrosr.psf import GaussianPSF
from astrosr.reconstruct import PoissonNoise, richardson_lucy
from astrosr.stack import FrameStack
from astrosr.strips import FineStore, Strips

S = 4


def _operator(shifts, shape=(70, 41)):
    return ObservationOperator(shape, shifts, scale=S, psf=GaussianPSF(1.2), single=True)


def _fill(strips, image):
    store = strips.store()
    for first, stop in strips.bounds:
        lo, hi = strips.fine_rows(first, stop)
        store.write(lo, image[lo:hi])
    return store


@pytest.mark.parametrize("shifts", [[[0.0, 0.0]], [[0.0, 0.0], [0.25, -0.5], [1.0, 0.75]]])
@pytest.mark.parametrize("on_disk", [False, True])
def test_strips_apply_the_whole_operator(shifts, on_disk, tmp_path):
    op = _operator(shifts)
    rng = np.random.default_rng(1)
    x = rng.random(op.fine_shape).astype(np.float32)
    cube = rng.random((len(op),) + op.shape_padded).astype(np.float32)
    strips = Strips(op, rows=9, folder=tmp_path if on_disk else None)
    assert len(strips) > 5 and strips.halo == op.reach
    predicted = strips.forward(_fill(strips, x))
    back = np.concatenate([strips.adjoint(cube, a, b) for a, b in strips.bounds])
    # On every pixel of the frames and of the field (the padded margin is
    # periodic in the whole operator, zero beyond the strips: it carries no weight).
    whole = op.forward(x)
    assert np.abs(op.crop_frames(predicted - whole)).max() < 1e-5 * np.abs(whole).max()
    whole = op.adjoint(cube)
    assert np.abs(op.crop_image(back - whole)).max() < 1e-5 * np.abs(whole).max()


def test_a_file_store_reads_back_with_zero_halos_and_leaves_no_file(tmp_path):
    rng = np.random.default_rng(2)
    image = rng.random((37, 11)).astype(np.float32)
    store = FineStore(image.shape, np.float32, folder=tmp_path)
    assert not store.in_memory and os.listdir(tmp_path) == []  # an unnamed file
    store.write(0, image[:20])
    store.write(20, image[20:])
    np.testing.assert_array_equal(store.array(), image)
    part = store.read(-3, 5)
    np.testing.assert_array_equal(part[:3], 0.0)
    np.testing.assert_array_equal(part[3:], image[:5])
    np.testing.assert_array_equal(store.read(35, 40)[2:], 0.0)
    store.close()
    assert os.listdir(tmp_path) == []


@pytest.fixture(scope="module")
def one_frame():
    truth = simulate.make_sky((160, 120), n_stars=25, n_galaxies=2, star_flux=(2e3, 1e5),
                              seed=3)
    obs = simulate.observe(truth, n_frames=1, scale=S, psf=GaussianPSF(1.2), seed=4)
    return FrameStack(obs.frames)


@pytest.mark.parametrize("stop", ["discrepancy", "converged"])
def test_the_fit_by_strips_is_the_whole_fit(one_frame, stop, tmp_path):
    # In double precision, so that the comparison is of the algorithm: in single
    # precision the FFTs' rounding (which differs with their sizes) grows over
    # the iterations to 1e-5..5e-4 of the peak, less than single precision's
    # own departure from double.
    op = ObservationOperator(one_frame.shape, [[0.0, 0.0]], scale=S, psf=GaussianPSF(1.2))
    noise = PoissonNoise(one_frame)
    args = (op, one_frame, one_frame.good, noise, None, None, 60)
    whole, info = richardson_lucy(*args, stop=stop)
    strips = Strips(op, rows=7, folder=tmp_path)
    assert len(strips) >= 4
    parts, info_strips = richardson_lucy(*args, stop=stop, strips=strips)
    assert isinstance(parts, FineStore)
    assert info_strips["iterations"] == info["iterations"] > 3
    assert info_strips["chi2"] == pytest.approx(info["chi2"], rel=1e-10)
    field = op.crop_image(whole)
    assert np.abs(op.crop_image(parts.array()) - field).max() < 1e-10 * field.max()


def _model_rows(op, image):
    return op.crop_frames(op.forward(op.embed_image(image)))[0]


def test_enhance_to_a_file_equals_enhance_in_memory_without_seams(one_frame, tmp_path,
                                                                   monkeypatch):
    pytest.importorskip("tensorflow")
    import keras

    from astrosr import inference
    from astrosr.models import SRModel

    keras.utils.set_random_seed(5)
    model = SRModel("srresnet", scale=S, n_blocks=1, filters=8)
    frame = one_frame.ccds[0]
    options = dict(psf=GaussianPSF(1.2), ensemble=2, tile=48, overlap=24)
    whole = inference.enhance(frame, model, **options)
    op = ObservationOperator(one_frame.shape, [[0.0, 0.0]], scale=S, psf=GaussianPSF(1.2))
    rows = 7
    monkeypatch.setattr(inference, "STRIP_PIXELS", S ** 2 * op.shape_padded[1] * rows)
    path = tmp_path / "sr.fits"
    streamed = inference.enhance(frame, model, output=path, **options)
    assert sorted(os.listdir(tmp_path)) == ["sr.fits"]  # no temporary file left
    assert streamed.meta["CHI2RED"] == pytest.approx(whole.meta["CHI2RED"], abs=1e-3)
    # Single precision: the FFTs' rounding, which differs with their sizes, grows
    # over the iterations to a few 1e-5 of the peak (1e-10 in double precision:
    # test_the_fit_by_strips_is_the_whole_fit).
    assert np.abs(streamed.data - whole.data).max() < 1e-4 * np.abs(whole.data).max()
    np.testing.assert_allclose(streamed.uncertainty.array, whole.uncertainty.array, rtol=1e-5,
                               atol=1e-6 * whole.uncertainty.array.max())
    np.testing.assert_array_equal(streamed.mask, whole.mask)
    read = CCDData.read(path, hdu_uncertainty="UNCERT", hdu_mask="MASK")
    np.testing.assert_array_equal(read.data, streamed.data)
    # No seam: the input pixels next to the strips' borders are fitted as well as the others.
    chi2 = ((one_frame.data[0] - _model_rows(op, streamed.data)) ** 2 / one_frame.var[0])
    per_row = chi2.mean(axis=1)
    borders = [b - op.margin for b, _ in Strips(op, rows=rows).bounds[1:]]
    borders = [r for r in borders if 0 < r < chi2.shape[0]]
    assert len(borders) >= 3
    near = np.concatenate([per_row[r - 1:r + 1] for r in borders])
    spread = per_row.std() / np.sqrt(len(near))
    assert abs(near.mean() - per_row.mean()) < 4 * spread
    # ... and the image steps across them as the whole-image result does.
    at = [S * r - 1 for r in borders]
    steps = [np.abs(np.diff(ccd.data, axis=0))[at].mean(axis=1) for ccd in (streamed, whole)]
    np.testing.assert_allclose(steps[0], steps[1], rtol=1e-3)


def test_enhance_refuses_an_existing_output_before_any_work(one_frame, tmp_path):
    pytest.importorskip("tensorflow")
    from astrosr import inference

    path = tmp_path / "sr.fits"
    path.write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        inference.enhance(one_frame.ccds[0], "no-such-model-is-loaded-first", output=path)
    assert path.read_bytes() == b"keep"
