"""Networks, the intensity transform and the model wrapper (needs TensorFlow)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from astrosr.models import transform

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from astrosr.models import (SRGAN, SRModel, build_discriminator, build_finegrid,  # noqa: E402
                            build_generator, build_srcnn, build_vdsr, discriminator_features,
                            fast_generator)
from astrosr.models import model as model_module  # noqa: E402
from astrosr.models._layers import PixelShuffle  # noqa: E402

TINY = {"n_blocks": 1, "filters": 8}


def _run(net, x):
    return keras.ops.convert_to_numpy(net(np.asarray(x, np.float32), training=False))


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_generator_output_shapes(scale):
    net = build_generator(scale, **TINY)
    assert _run(net, np.zeros((2, 6, 7, 1))).shape == (2, 6 * scale, 7 * scale, 1)
    # Any image size: the same network on another shape.
    assert _run(net, np.zeros((1, 5, 9, 1))).shape == (1, 5 * scale, 9 * scale, 1)


@pytest.mark.parametrize("builder,kwargs", [(build_srcnn, {"filters": (8, 4)}),
                                            (build_vdsr, {"depth": 3, "filters": 8})])
@pytest.mark.parametrize("scale", [1, 2, 4])
def test_baseline_output_shapes(builder, kwargs, scale):
    out = _run(builder(scale, **kwargs), np.zeros((2, 5, 6, 1)))
    assert out.shape == (2, 5 * scale, 6 * scale, 1)


def test_generator_learns_a_residual_from_bicubic():
    net = build_generator(4, **TINY)
    tail = net.get_layer("tail_conv")
    tail.set_weights([np.zeros_like(w) for w in tail.get_weights()])
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 1)).astype(np.float32)
    bicubic = keras.layers.UpSampling2D(4, interpolation="bicubic")(x)
    np.testing.assert_allclose(_run(net, x), keras.ops.convert_to_numpy(bicubic), atol=1e-6)
    # A fresh network starts close to bicubic (small last layer).
    fresh = build_generator(4, **TINY)
    assert np.abs(_run(fresh, x) - keras.ops.convert_to_numpy(bicubic)).max() < 0.5


@pytest.mark.parametrize("scale,channels", [(4, 1), (2, 2), (1, 1)])
def test_fast_generator_equals_the_network(scale, channels):
    # The sub-pixel form of the tail is a rewrite, not an approximation:
    # random (not small) weights in every layer, odd and unequal sizes.
    net = build_generator(scale, channels=channels, **TINY)
    rng = np.random.default_rng(3)
    for w in net.weights:
        w.assign(rng.normal(0, 0.3, w.shape).astype(np.float32))
    x = rng.normal(size=(2, 7, 10, channels)).astype(np.float32)
    fast = fast_generator(net)
    want = _run(net, x)
    atol = 1e-5 * np.abs(want).max()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fast(x)), want, rtol=0, atol=atol)
    # It reads the variables at each call, so it follows training.
    net.get_layer("tail_conv").bias.assign(np.full(channels, 5.0, np.float32))
    changed = _run(net, x)
    assert np.abs(changed - want).max() > 1
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fast(x)), changed, rtol=0, atol=atol)


def test_hr_convs_add_fine_grid_layers_and_keep_the_plain_forward():
    plain, hr = build_generator(4, **TINY), build_generator(4, hr_convs=2, **TINY)
    # Two conv 3x3 (8 -> 8 channels, with bias) and two PReLU (8 slopes) more.
    assert hr.count_params() - plain.count_params() == 2 * (9 * 8 * 8 + 8 + 8)
    assert _run(hr, np.zeros((1, 5, 6, 1))).shape == (1, 20, 24, 1)
    # The tail no longer follows the shuffle: no sub-pixel rewrite.
    assert fast_generator(hr) is hr and fast_generator(plain) is not plain
    assert SRGAN(4, hr_convs=1, **TINY).config["hr_convs"] == 1


def test_pixel_shuffle_order():
    x = np.arange(4, dtype=np.float32).reshape(1, 1, 1, 4)
    out = keras.ops.convert_to_numpy(PixelShuffle(2)(x))
    np.testing.assert_array_equal(out[0, :, :, 0], [[0, 1], [2, 3]])
    y = np.random.default_rng(1).normal(size=(2, 3, 4, 12)).astype(np.float32)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(PixelShuffle(2)(y)),
                                  tf.nn.depth_to_space(y, 2).numpy())


def test_discriminator_logit_and_features():
    disc = build_discriminator(32, filters=4, n_levels=3)
    assert _run(disc, np.zeros((3, 32, 32, 1))).shape == (3, 1)
    feats = discriminator_features(disc)(np.zeros((2, 32, 32, 1), np.float32))
    assert [tuple(f.shape) for f in feats] == [(2, 16, 16, 4), (2, 8, 8, 8), (2, 4, 4, 16), (2, 1)]
    with pytest.raises(ValueError, match="patch_size"):
        build_discriminator(8, n_levels=4)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="scale must be one of"):
        build_generator(3)
    with pytest.raises(ValueError, match="filters"):
        build_vdsr(2, filters=0)
    with pytest.raises(ValueError, match="architecture must be one of"):
        SRModel("unet")
    with pytest.raises(TypeError, match="unknown option"):
        SRModel("srcnn", n_blocks=3)


def test_transform_round_trip_and_dtype():
    s = 2.5
    x = s * np.array([-1e6, -1e4, -3.5, -1e-3, 0.0, 1e-3, 0.5, 7.0, 1e3, 1e5, 1e6])
    y = transform.forward(x, s)
    assert y.dtype == np.float32
    back = transform.inverse(y, s)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, x, rtol=1e-6, atol=0)
    # Far beyond any detector: no overflow, no clipping, float32 precision of the asinh value.
    huge = np.array([-1e30, 1e30, 3e35], dtype=np.float32)
    np.testing.assert_allclose(transform.inverse(transform.forward(huge, s), s), huge, rtol=1e-5)
    # Linear near zero (noise keeps its shape), logarithmic far above.
    np.testing.assert_allclose(transform.forward([1e-3 * s], s), [1e-3], rtol=1e-6)
    np.testing.assert_allclose(transform.forward([1e6 * s], s), [np.log(2e6)], rtol=1e-6)
    # Per-sample softening broadcasts.
    many = transform.forward(np.ones((3, 2, 2)), np.array([1.0, 2.0, 4.0])[:, None, None])
    np.testing.assert_allclose(many[:, 0, 0], np.arcsinh([1.0, 0.5, 0.25]), rtol=1e-6)


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan, np.inf])
def test_transform_rejects_bad_softening(bad):
    with pytest.raises(ValueError, match="softening must be positive"):
        transform.forward([1.0], bad)


def test_noise_sigma_ignores_sources():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:128, :128]
    galaxy = 200 * np.exp(-((yy - 60) ** 2 + (xx - 40) ** 2) / 50.0)
    image = rng.normal(0.0, 3.0, (128, 128)) + 0.5 * xx + galaxy
    image[10, 10] = 1e6
    assert transform.noise_sigma(image) == pytest.approx(3.0, rel=0.05)
    assert transform.noise_sigma(np.zeros((8, 8))) == 1.0  # noise-free: a floor, never 0


def test_predict_array_units_and_inputs():
    model = SRGAN(2, **TINY)
    tail = model.network.get_layer("tail_conv")
    tail.set_weights([np.zeros_like(w) for w in tail.get_weights()])
    # Bicubic of flat sky: each fine pixel holds a quarter of the coarse pixel's flux.
    out = model.predict_array(np.full((6, 8), 40.0), softening=2.0)
    assert out.shape == (12, 16) and out.dtype == np.float32
    np.testing.assert_allclose(out, 10.0, rtol=1e-5)
    with pytest.raises(ValueError, match="NaN or inf"):
        model.predict_array(np.array([[1.0, np.nan], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="2-D"):
        model.predict_array(np.zeros((2, 3, 3)))


def test_save_load_round_trip(tmp_path):
    model = SRGAN(2, name="tiny", **TINY)
    image = np.random.default_rng(4).gamma(2.0, 10.0, (12, 10)).astype(np.float32)
    weights, card_path = model.save(tmp_path / "sub" / "tiny")
    assert weights.name == "tiny.weights.h5" and card_path.name == "tiny.json"
    card = json.loads(card_path.read_text())
    assert card["weights"]["sha256"] == model_module.sha256(weights)
    assert card["architecture"] == {"architecture": "srresnet", "scale": 2, "n_blocks": 1,
                                    "filters": 8, "batch_norm": False, "channels": 1,
                                    "hr_convs": 0}
    assert card["intensity_transform"]["name"] == "asinh"
    loaded = SRGAN.load(tmp_path / "sub" / "tiny.json")
    np.testing.assert_array_equal(loaded.predict_array(image), model.predict_array(image))
    assert loaded.card == card and loaded.scale == 2
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(tmp_path / "sub" / "tiny")
    model.save(tmp_path / "sub" / "tiny", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["tiny.json", "tiny.weights.h5"]
    with pytest.raises(FileNotFoundError, match="no such model file"):
        SRModel.load(tmp_path / "missing")


def test_sha256_mismatch_raises(tmp_path):
    weights, _ = SRModel("vdsr", scale=2, depth=2, filters=4).save(tmp_path / "m")
    with open(weights, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match="sha256 of .* but the model card .* says"):
        SRModel.load(tmp_path / "m")


def test_pretrained_from_the_data_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(model_module, "DATA_DIR", tmp_path)
    with pytest.raises(ValueError, match="unknown pretrained model 'x'; available: none"):
        SRGAN.pretrained("x")
    SRGAN(2, **TINY).save(tmp_path / "tiny-x2")
    SRModel("srcnn", scale=2, filters=(4, 4)).save(tmp_path / "cnn")
    listing = "unknown pretrained model 'nope'; available: cnn, tiny-x2"
    with pytest.raises(ValueError, match=listing):
        SRGAN.pretrained("nope")
    model = SRGAN.pretrained("tiny-x2")
    assert isinstance(model, SRGAN) and model.name == "tiny-x2"
    (tmp_path / "cnn.weights.h5").write_bytes(b"not the shipped weights")
    with pytest.raises(ValueError, match="sha256"):
        SRModel.pretrained("cnn")


def test_lazy_names_and_light_imports():
    import astrosr

    assert astrosr.SRGAN is SRGAN and "SRGAN" in dir(astrosr)
    code = ("import sys, astrosr, astrosr.training, astrosr.models; "
            "print([m for m in ('tensorflow', 'keras') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


FINE_TINY = {"coarse_blocks": 1, "coarse_filters": 8, "fine_blocks": 1, "fine_filters": 4}


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_finegrid_shapes_and_its_bicubic_residual(scale):
    net = build_finegrid(scale, **FINE_TINY)
    x = np.random.default_rng(0).normal(size=(2, 6, 7, 1)).astype(np.float32)
    assert _run(net, x).shape == (2, 6 * scale, 7 * scale, 1)
    assert _run(net, x[:1, :5, :4]).shape == (1, 5 * scale, 4 * scale, 1)
    # Fine-grid blocks of fine_filters channels: three fine features and the bicubic image.
    assert net.get_layer("fine0_conv1").kernel.shape == (3, 3, 4, 4)
    assert net.get_layer("with_bicubic").output.shape[-1] == 4
    assert not any("batch_norm" in lay.name for lay in net.layers)
    tail = net.get_layer("tail_conv")
    tail.set_weights([np.zeros_like(w) for w in tail.get_weights()])
    smooth = x if scale == 1 else keras.layers.UpSampling2D(scale, interpolation="bicubic")(x)
    np.testing.assert_allclose(_run(net, x), keras.ops.convert_to_numpy(smooth), atol=1e-6)
    assert fast_generator(net) is net  # nothing to rewrite: the tail already is on the fine grid


def test_finegrid_model_card_round_trip_and_inference(tmp_path):
    model = SRModel("finegrid", scale=2, **FINE_TINY)
    assert model.name == "finegrid-x2" and model.card["parameters"] == model.network.count_params()
    assert model.config == {"architecture": "finegrid", "scale": 2, **FINE_TINY, "channels": 1}
    image = np.random.default_rng(4).gamma(2.0, 10.0, (16, 16)).astype(np.float32)
    out = model.predict_array(image)
    assert out.shape == (32, 32) and out.dtype == np.float32
    model.save(tmp_path / "fg")
    loaded = SRModel.load(tmp_path / "fg")
    np.testing.assert_array_equal(loaded.predict_array(image), out)
    raw = loaded.enhance(image, consistency=None, ensemble=1, tile=8, overlap=4)  # 12x12 tiles
    assert raw.shape == (32, 32) and np.isfinite(np.asarray(raw.data)).all()
    with pytest.raises(ValueError, match="fine_filters must be an integer >= 2"):
        build_finegrid(4, fine_filters=1)
    with pytest.raises(TypeError, match="unknown option"):
        SRModel("finegrid", n_blocks=3)
