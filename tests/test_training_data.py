"""Training truths of every class, the degradations, and holding out by whole image (NumPy only)."""
import numpy as np
import pytest
from astropy.io import fits

from astrosr.psf import GaussianPSF, MoffatPSF
from astrosr.training import data
from astrosr.training.data import (SYNTHETIC_CLASSES, Degradation, ImageLabel, hold_out,
                                   leave_one_out, split_validation, synthetic_sky,
                                   training_images, training_pairs)


@pytest.mark.parametrize("kind", SYNTHETIC_CLASSES)
def test_every_synthetic_class_is_a_seeded_non_negative_sky(kind):
    sky = synthetic_sky(np.random.default_rng(3), 64, kind=kind)
    assert sky.shape == (64, 64) and sky.dtype == np.float32
    assert np.all(sky >= 0) and sky.sum() > 0
    np.testing.assert_array_equal(sky, synthetic_sky(np.random.default_rng(3), 64, kind=kind))


def test_synthetic_sky_rejects_an_unknown_class():
    with pytest.raises(ValueError, match="kind must be one of"):
        synthetic_sky(np.random.default_rng(0), 64, kind="quasar")
    with pytest.raises(ValueError, match="classes must be"):
        training_images(include_hdf=False, n_synthetic=2, classes=("survey", "quasar"))


def test_training_images_are_labelled_by_class(tmp_path):
    fits.PrimaryHDU(50.0 + np.random.default_rng(0).normal(0, 1, (40, 40))).writeto(
        tmp_path / "m31.fits")
    images, labels = training_images({"nebula": tmp_path}, include_hdf=True, n_synthetic=6,
                                     synthetic_size=64, labels=True)
    assert len(images) == len(labels) == 8
    assert all(isinstance(lab, ImageLabel) for lab in labels)
    assert [lab.kind for lab in labels] == ["nebula", "hdf", *SYNTHETIC_CLASSES,
                                            *SYNTHETIC_CLASSES[:2]]
    assert labels[0].name == f"fits:{tmp_path / 'm31.fits'}"
    assert len({lab.name for lab in labels}) == 8
    # Without labels, the same images (the earlier API).
    plain = training_images({"nebula": tmp_path}, include_hdf=True, n_synthetic=6,
                            synthetic_size=64)
    assert all(np.array_equal(a, b) for a, b in zip(plain, images, strict=True))
    _, described = data.collect_images(None, False, 6, 64, 0)
    assert described[0]["classes"] == {"survey": 2, "crowded_field": 2,
                                       "filamentary_nebula": 1, "spiral_galaxy": 1}


def test_survey_only_gives_the_skies_of_earlier_versions():
    # classes=("survey",) draws exactly as synthetic_sky(rng, size) always has.
    images = training_images(include_hdf=False, n_synthetic=3, synthetic_size=64, seed=4,
                             classes=("survey",))
    rng = np.random.default_rng(4)
    for im in images:
        np.testing.assert_array_equal(im, synthetic_sky(rng, 64))


def test_degradation_spans_fwhm_1_to_4_gaussian_and_moffat_and_all_noise_regimes():
    rng = np.random.default_rng(0)
    draws = [Degradation().draw(rng) for _ in range(500)]
    psfs = [d[0] for d in draws]
    fwhm = np.array([p.fwhm for p in psfs])
    assert 1.0 <= fwhm.min() < 1.05 and 3.95 < fwhm.max() <= 4.0
    moffat = [p for p in psfs if isinstance(p, MoffatPSF)]
    assert 0.4 < len(moffat) / len(psfs) < 0.6
    assert all(isinstance(p, GaussianPSF) for p in psfs if not isinstance(p, MoffatPSF))
    beta = np.array([p.beta for p in moffat])
    assert 2.5 <= beta.min() < 2.55 and 4.45 < beta.max() <= 4.5
    sky, read = np.array([d[1] for d in draws]), np.array([d[2] for d in draws])
    assert np.any(sky < 1.0) and np.any(sky > 5e3)
    assert np.any(sky < read ** 2 / 10)  # photon-starved: read noise dominates the sky's
    assert np.any(sky > 100 * read ** 2)  # bright: the sky's photon noise dominates


def test_legacy_degradation_draws_as_before():
    old = Degradation.legacy()
    assert old.psf_sigma == (0.5, 1.5) and old.moffat_fraction == 0.3
    assert old.sky == (10.0, 1000.0) and old.read_noise == (2.0, 10.0)
    assert Degradation.legacy(moffat_fraction=0.0).moffat_fraction == 0.0
    assert Degradation(**old.to_dict()).draw(np.random.default_rng(1))[1:] == \
        old.draw(np.random.default_rng(1))[1:]


def test_hold_out_and_leave_one_out_by_image():
    images = [np.full((4, 4), float(i)) for i in range(4)]
    labels = [ImageLabel("a", "x"), ImageLabel("a", "y"), ImageLabel("b", "z"),
              ImageLabel("b", "w")]
    train, held = hold_out(images, ["y", 3], labels=labels)
    assert [im[0, 0] for im in train] == [0.0, 2.0] and [im[0, 0] for im in held] == [1.0, 3.0]
    folds = list(leave_one_out(images, labels=labels))
    assert [name for name, _, _ in folds] == ["x", "y", "z", "w"]
    for name, train, held in folds:
        assert len(train) == 3 and not any(im is held for im in train)
    with pytest.raises(ValueError, match="not among"):
        hold_out(images, ["v"], labels=labels)
    with pytest.raises(ValueError, match="one entry per image"):
        hold_out(images, [0], labels=labels[:2])
    with pytest.raises(ValueError, match="at least two"):
        next(leave_one_out(images[:1]))


def _disjoint_images(n, size=96):
    """Images whose pixel values tell which image they came from: image i in [100 i, 100 i + 50]."""
    rng = np.random.default_rng(9)
    return [(100.0 * i + rng.uniform(0, 50, (size, size))).astype(np.float32) for i in range(n)]


def _source(values, n):
    """Indices of the images of `_disjoint_images(n)` that values could come from."""
    return set(np.unique(np.floor(np.asarray(values) / 100.0)).astype(int)) & set(range(n))


def test_split_validation_holds_out_whole_images_one_per_class():
    images = _disjoint_images(5)
    labels = [ImageLabel(k, f"{k}:{i}") for i, k in enumerate("aabbc")]
    train, val = split_validation(images, 40, labels=labels)
    assert [_source(v, 5) for v in val] == [{1}, {3}]  # the last of each class that has two
    assert {i for t in train for i in _source(t, 5)} == {0, 2, 4}
    # Without labels: the last image. With a single image: its bottom band, as before.
    train, val = split_validation(images, 40)
    assert len(train) == 4 and _source(val[0], 5) == {4}
    train, val = split_validation(images[:1], 30)
    assert train[0].shape == (66, 96) and val[0].shape == (30, 96)


def test_no_crop_of_a_held_out_image_reaches_the_training_pairs():
    images = _disjoint_images(4)
    labels = [ImageLabel("survey", f"s{i}") for i in range(4)]
    train, val = split_validation(images, 40, labels=labels)
    flat = Degradation(flux_scale=(1.0, 1.0), psf_sigma=(0.6, 0.8), moffat_fraction=0.0)
    pairs = training_pairs(train, 40, scale=2, patch=12, degradation=flat, seed=0)
    seen = set()
    for fine in pairs.fine:  # the truth crop itself (flux scale 1): its values name its image
        seen |= _source(fine, 4)
    assert seen == {0, 1, 2} and _source(val[0], 4) == {3}
    val_pairs = training_pairs(val, 10, scale=2, patch=12, degradation=flat, seed=1)
    assert all(_source(f, 4) == {3} for f in val_pairs.fine)


def test_the_training_loop_validates_on_whole_held_out_images():
    from astrosr.training import loop

    deg = Degradation(flux_scale=(1.0, 1.0), psf_sigma=(0.6, 0.8), moffat_fraction=0.0)
    d = loop._Data(_disjoint_images(3), None, False, 0, 0, 2, 12, deg, 4)
    assert "whole images held out" in d.validation and "image 2" in d.validation
    assert len(d.train_images) == 2
    assert {i for t in d.train_images for i in _source(t, 3)} == {0, 1}
    assert all(_source(f, 3) == {2} for f in d.val.fine)
    assert all(_source(f, 3) <= {0, 1} for f in d.batch(20, np.random.default_rng(0)).fine)
