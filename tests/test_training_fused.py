"""Refinement training pairs: fused images of simulated stacks and their truths."""
import numpy as np
import pytest

from astrosr import simulate
from astrosr.training import Degradation
from astrosr.training.fused import FusedPairs

DEG = Degradation(psf_sigma=(1.0, 1.2), moffat_fraction=0.0, sky=(50.0, 100.0),
                  flux_scale=(1.0, 2.0))


@pytest.fixture(scope="module")
def pairs():
    sky = simulate.make_sky((96, 96), n_stars=15, n_galaxies=2, nebula=True, seed=31)
    return FusedPairs.simulate([sky], 3, n_frames=6, size=12, degradation=DEG, seed=1)


def test_pairs_are_fused_stacks_of_their_truths(pairs):
    assert pairs.fused.shape == pairs.truth.shape == (3, 48, 48)
    assert pairs.fused.dtype == np.float32 and np.all(pairs.softening > 0)
    # The fusion conserves flux: the interior's total matches the truth's to a few %.
    ratio = pairs.fused.sum(axis=(1, 2)) / pairs.truth.sum(axis=(1, 2))
    np.testing.assert_allclose(ratio, 1.0, atol=0.05)
    # ...and, on the scale of the frame pixels, explains most of the truth's variance.
    blocks = [a.reshape(3, 12, 4, 12, 4).sum(axis=(2, 4)) for a in (pairs.fused, pairs.truth)]
    mse = ((blocks[0] - blocks[1]) ** 2).mean(axis=(1, 2))
    assert np.all(mse < 0.75 * blocks[1].var(axis=(1, 2)))


def test_pairs_are_seeded_and_round_trip_through_npz(pairs, tmp_path):
    sky = simulate.make_sky((96, 96), n_stars=15, n_galaxies=2, nebula=True, seed=31)
    again = FusedPairs.simulate([sky], 3, n_frames=6, size=12, degradation=DEG, seed=1)
    np.testing.assert_array_equal(again.fused, pairs.fused)
    pairs.save(tmp_path / "p.npz")
    back = FusedPairs.load(tmp_path / "p.npz")
    np.testing.assert_array_equal(back.truth, pairs.truth)
    assert back.meta["n_frames"] == 6 and back.meta["fusion"] == "reconstruct"


def test_batches_crop_input_and_target_alike(pairs):
    b = pairs.batch(5, 16, 0)
    assert b.coarse.shape == b.fine.shape == (5, 16, 16) and b.scale == 1
    # Each crop is one of the 8 symmetries of a window of one pair, the same for both.
    for x, y in zip(b.coarse, b.fine):
        assert any(_contains(pairs.fused[i], pairs.truth[i], x, y) for i in range(len(pairs)))


def _contains(fused, truth, x, y):
    for k in range(8):
        t = np.rot90(x, -(k % 4)) if k < 4 else np.rot90(x[:, ::-1], -(k % 4))
        u = np.rot90(y, -(k % 4)) if k < 4 else np.rot90(y[:, ::-1], -(k % 4))
        for y0 in range(fused.shape[0] - 15):
            for x0 in range(fused.shape[1] - 15):
                if np.array_equal(fused[y0:y0 + 16, x0:x0 + 16], t):
                    return np.array_equal(truth[y0:y0 + 16, x0:x0 + 16], u)
    return False


def test_bad_arguments(pairs):
    with pytest.raises(ValueError, match="n_val must be smaller"):
        pairs.split(3)
    with pytest.raises(ValueError, match="larger than the pairs"):
        pairs.batch(2, 64, 0)
    with pytest.raises(ValueError, match="at least"):
        FusedPairs.simulate([np.ones((32, 32))], 1, size=12)
    with pytest.raises(ValueError, match="one shape"):
        FusedPairs(np.zeros((2, 8, 8)), np.zeros((2, 8, 9)), np.ones(2))


def test_a_refinement_model_trains_on_them(pairs):
    pytest.importorskip("keras")
    from astrosr.training import train

    model = train("srresnet", scale=1, model_options={"n_blocks": 1, "filters": 4}, steps=3,
                  batch_size=2, patch=16, pairs=pairs, n_val=4, steps_per_epoch=3,
                  progress=False)
    assert model.scale == 1
    card = model.card["training"]
    assert card["data"]["sources"][0]["source"].endswith("FusedPairs")
    assert card["degradation"]["psf_sigma"] == [1.0, 1.2]
    assert "val_psnr" in model.card["metrics"]


def test_split_holds_out_whole_images(tmp_path):
    # Image i has values in [100 i, 100 i + 50]: a truth crop's values name its image.
    rng = np.random.default_rng(2)
    images = [100.0 * i + rng.uniform(0, 50, (64, 64)) for i in range(3)]
    flat = Degradation(psf_sigma=(0.8, 0.8), moffat_fraction=0.0, flux_scale=(1.0, 1.0))
    pairs = FusedPairs.simulate(images, 6, n_frames=2, size=4, method="drizzle",
                                degradation=flat, seed=3, labels=["a", "b", "c"])
    assert pairs.meta["images"] == ["a", "b", "c"] and pairs.n_images >= 2
    for t, i in zip(pairs.truth, pairs.image_index, strict=True):
        assert np.all(np.floor(t / 100) == i)
    train, val = pairs.split(1)
    assert set(train.image_index).isdisjoint(val.image_index)
    assert len(train) + len(val) == 6 and set(val.image_index) == {pairs.image_index[-1]}
    held = set(val.image_index)
    assert all(not set(np.unique(np.floor(t / 100)).astype(int)) & held for t in train.truth)
    assert len(pairs.split(1, by="pair")[1]) == 1
    pairs.save(tmp_path / "p.npz")
    np.testing.assert_array_equal(FusedPairs.load(tmp_path / "p.npz").image_index,
                                  pairs.image_index)
    with pytest.raises(ValueError, match="by must be"):
        pairs.split(1, by="crop")


def test_split_by_image_needs_two_images(pairs, tmp_path):
    assert pairs.n_images == 1
    with pytest.raises(ValueError, match="two images or more"):
        pairs.split(1)
    assert len(pairs.split(1, by="pair")[0]) == 2
    # Pairs saved without image_index (earlier versions) load, with the images unknown.
    np.savez_compressed(tmp_path / "old.npz", fused=pairs.fused, truth=pairs.truth,
                        softening=pairs.softening, meta="{}")
    assert FusedPairs.load(tmp_path / "old.npz").n_images is None


def test_pairs_of_one_dominant_image_fall_back_to_held_out_pairs():
    """19 pairs of one image and 1 of another: whole images would leave nothing to train on."""
    from astrosr.training.loop import _PairData

    rng = np.random.default_rng(0)
    pairs = FusedPairs(rng.random((20, 16, 16)), rng.random((20, 16, 16)), np.ones(20),
                       meta={"scale": 4}, image_index=np.array([0] * 19 + [1]))
    data = _PairData(pairs, 1, 8, 16)
    assert len(data.pairs) == 16 and "their images may also give training pairs" in data.validation
