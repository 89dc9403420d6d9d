"""`SRModel`: a Keras network with its model card, saved, loaded and shipped together.

A model is two files side by side: ``<name>.weights.h5`` (Keras weights) and
``<name>.json``, the model card: the architecture (enough to rebuild the
network), the intensity transform, how it was trained (data, steps, losses,
learning rate, wall time, hardware, the command that reproduces it), its
validation metrics, and the sha256 of the weights file, checked on loading.
"""

import datetime
import hashlib
import inspect
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .baselines import build_srcnn, build_vdsr
from .srgan import build_finegrid, build_generator, fast_generator
from .transform import forward, inverse, noise_sigma

__all__ = ["SRModel", "SRGAN", "available_models", "DEFAULT_MODEL", "ARCHITECTURES"]

#: Builders of the networks, by the architecture name the model card records.
ARCHITECTURES = {"srresnet": build_generator, "finegrid": build_finegrid, "srcnn": build_srcnn,
                 "vdsr": build_vdsr}

#: Name of the model `SRGAN.pretrained` loads by default.
DEFAULT_MODEL = "srgan-x4"

#: Where shipped models live (``astrosr/data``).
DATA_DIR = Path(__file__).resolve().parents[1] / "data"

CARD_FORMAT = "astrosr-model-card"
CARD_VERSION = 1

#: The intensity transform, as the model card states it.
TRANSFORM = {
    "name": "asinh",
    "forward": "y = asinh(x / softening)",
    "inverse": "x = softening * sinh(y)",
    "softening": "robust sky-noise sigma of each input image, "
                 "astrosr.models.transform.noise_sigma: 1.4826 MAD of horizontal neighbour "
                 "differences / sqrt(2), in the units of the input",
    "fine_values": "network outputs are fluxes per fine pixel times scale**2 "
                   "(flux per coarse-pixel area), so smooth sky has the same value on both grids",
    "dtype": "float32",
    "clipping": "none",
}


class SRModel:
    """A super-resolution network and its model card.

    Parameters
    ----------
    architecture : {"srresnet", "finegrid", "srcnn", "vdsr"}
        Network (see `ARCHITECTURES`): ``"finegrid"`` is the fine-grid
        SRGAN generator (`~astrosr.models.build_finegrid`).
    scale : {1, 2, 4}
        Upsampling factor.
    name : str, optional
        Name of the model (file names, card); default ``<architecture>-x<scale>``.
    **options
        Keyword options of the architecture's builder (e.g. ``n_blocks``,
        ``filters``; ``coarse_blocks``, ``fine_filters``... for ``"finegrid"``).

    Attributes
    ----------
    network : keras.Model
        The network, on the asinh scale (see `astrosr.models.transform`).
    card : dict
        The model card (see the module notes).
    """

    def __init__(self, architecture="srresnet", *, scale=4, name=None, **options):
        config = _full_config(architecture, scale, options)
        self._setup(config, _new_card(name or f"{architecture}-x{scale}", config))

    def _setup(self, config, card):
        import keras

        options = {k: v for k, v in config.items() if k not in ("architecture", "scale")}
        self.network = ARCHITECTURES[config["architecture"]](config["scale"], **options)
        self.card = card
        self.card["parameters"] = int(sum(int(np.prod(w.shape)) for w in self.network.weights))
        self.card.setdefault("software", {})["keras"] = keras.__version__

    def _inference(self, x):
        """The network in inference mode, as a compiled graph (1.5x faster than eager on CPU).

        Traced once per input shape (tiles have few shapes): the bicubic
        skip needs static shapes, so the shape cannot be left open. The
        generator's fine-grid tail runs in its faster sub-pixel form
        (`~astrosr.models.fast_generator`).
        """
        if getattr(self, "_graph", None) is None:
            import tensorflow as tf

            fast = fast_generator(self.network)
            self._graph = tf.function(lambda t: fast(t, training=False))
        return self._graph(x)

    # ------------------------------------------------------------------ properties

    @property
    def name(self):
        """Name of the model (the card's ``name``)."""
        return self.card["name"]

    @property
    def scale(self):
        """Upsampling factor."""
        return self.card["architecture"]["scale"]

    @property
    def config(self):
        """Architecture configuration (a copy of the card's ``architecture``)."""
        return dict(self.card["architecture"])

    def __repr__(self):
        arch = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({arch}, name={self.name!r})"

    # ------------------------------------------------------------------ inference

    def predict_array(self, coarse, *, softening=None):
        """Apply the raw network to an image: transform, network, inverse transform.

        No tiling and no consistency with the data: this is the network
        alone (`astrosr.enhance` adds both).

        Parameters
        ----------
        coarse : array_like
            2-D sky-subtracted image, finite (fill or mask NaNs first).
        softening : float, optional
            Softening of the asinh transform; default: `noise_sigma` of
            ``coarse`` (pass the whole image's value when calling tile by
            tile).

        Returns
        -------
        numpy.ndarray
            float32 image ``scale`` times finer, flux per fine pixel (same
            units as ``coarse`` per pixel: ``scale x scale`` blocks add up
            to the coarse pixel's flux when the network conserves it).
        """
        import keras

        a = np.asarray(coarse, dtype=np.float32)
        if a.ndim != 2:
            raise ValueError(f"coarse must be a 2-D image, got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError("coarse has NaN or inf pixels: fill or mask them first")
        s = noise_sigma(a) if softening is None else softening
        y = keras.ops.convert_to_numpy(self._inference(forward(a, s)[None, :, :, None]))
        return inverse(y[0, :, :, 0], s) / np.float32(self.scale ** 2)

    def enhance(self, ccd, **options):
        """Super-resolve an image with this model, held to the data.

        The same as ``astrosr.enhance(ccd, model=self, **options)``: see
        `astrosr.enhance` for the options (keyword-only) and what each
        consistency mode guarantees.
        """
        from ..inference import enhance

        return enhance(ccd, self, **options)

    # ------------------------------------------------------------------ files

    def save(self, path, *, overwrite=False):
        """Write ``<path>.weights.h5`` and the model card ``<path>.json``.

        Parameters
        ----------
        path : str or Path
            File stem (``models/mine`` writes ``models/mine.weights.h5`` and
            ``models/mine.json``); a trailing ``.weights.h5`` or ``.json`` is
            dropped. The stem's name becomes the model's name.
        overwrite : bool
            Replace existing files. Both files are written to temporary
            names first, so a failed save leaves nothing behind.

        Returns
        -------
        tuple of Path
            ``(weights_path, card_path)``.
        """
        weights, card_path = model_paths(path)
        for p in (weights, card_path):
            if p.exists() and not overwrite:
                raise FileExistsError(f"{p} exists: pass overwrite=True to replace it")
        weights.parent.mkdir(parents=True, exist_ok=True)
        tmp_weights = _temp_name(weights, ".weights.h5")
        tmp_card = _temp_name(card_path, ".json")
        try:
            self.network.save_weights(tmp_weights)
            self.card.update(name=weights.name[:-len(".weights.h5")],
                             saved=_now(), weights={"file": weights.name,
                                                    "sha256": sha256(tmp_weights)})
            tmp_card.write_text(json.dumps(self.card, indent=2, default=_json_default) + "\n")
            os.replace(tmp_weights, weights)
            os.replace(tmp_card, card_path)
        finally:
            for tmp in (tmp_weights, tmp_card):
                tmp.unlink(missing_ok=True)
        return weights, card_path

    @classmethod
    def load(cls, path):
        """Load a model saved by `save`, checking the weights' sha256.

        Parameters
        ----------
        path : str or Path
            File stem, or the ``.weights.h5`` or ``.json`` file.

        Raises
        ------
        FileNotFoundError
            If the card is missing, or the weights file is (the message
            names it and the sha256 its card expects).
        ValueError
            If the card is not an astrosr model card or records no sha256,
            the weights file's sha256 differs from the card's (a corrupt or
            replaced file: the message names the file and both sha256), or
            the weights do not fit the network the card describes.
        """
        weights, card_path = model_paths(path)
        if not card_path.is_file():
            beside = (f", the model card of {weights} (it records the network and the sha256 "
                      "of the weights): copy it beside them" if weights.is_file() else "")
            raise FileNotFoundError(f"no such model file: {card_path}{beside}")
        card = _read_card(card_path)
        expected = (card.get("weights") or {}).get("sha256")
        fix = _weights_fix(weights)
        if not weights.is_file():
            raise FileNotFoundError(f"no such model file: {weights}, the weights of the model card "
                                    f"{card_path} (expected sha256 {expected}); {fix}")
        if not expected:
            raise ValueError(f"the model card {card_path} records no sha256 of its weights "
                             f"{weights}: it was not written by SRModel.save; save the model "
                             "again")
        actual = sha256(weights)
        if expected != actual:
            raise ValueError(f"sha256 of {weights} is {actual} but the model card {card_path} "
                             f"says {expected}: the weights file is corrupt or does not belong "
                             f"to this card; {fix}")
        model = cls.__new__(cls)
        model._setup(_full_config(card["architecture"].get("architecture"),
                                  card["architecture"].get("scale"), _options(card)), card)
        try:
            model.network.load_weights(weights)
        except (ValueError, OSError, KeyError) as exc:
            raise ValueError(f"the weights {weights} (sha256 {actual}) do not fit the network "
                             f"that the model card {card_path} describes ({exc}); {fix}") from exc
        return model

    @classmethod
    def pretrained(cls, name=DEFAULT_MODEL):
        """Load a model shipped with astrosr (``astrosr/data/<name>``), offline.

        Parameters
        ----------
        name : str
            Model name; `available_models` lists them.

        Raises
        ------
        FileNotFoundError
            If the model's card ships but its weights file is missing (a
            broken installation: the message names the file and its sha256).
        ValueError
            If no model of that name ships with astrosr (the message lists
            those that do), or its weights fail the sha256 check.
        """
        names = available_models()
        if name not in names and not (DATA_DIR / f"{name}.json").is_file():
            listed = ", ".join(names) if names else "none are installed"
            raise ValueError(f"unknown pretrained model {name!r}; available: {listed}")
        return cls.load(DATA_DIR / name)


class SRGAN(SRModel):
    """The SRGAN generator (`astrosr.models.build_generator`) with its model card.

    Trained in two stages by `astrosr.training.train`: ``stage="pixel"``
    (SRResNet, pixel losses), then ``stage="gan"`` (content and adversarial
    losses).

    Parameters
    ----------
    scale : {1, 2, 4}
        Upsampling factor.
    n_blocks : int
        Residual blocks.
    filters : int
        Feature channels.
    batch_norm : bool
        Batch normalisation in the blocks (off by default, see
        `build_generator`).
    hr_convs : int
        Convolutions on the fine grid before the last layer (0 in SRGAN).
    name : str, optional
        Model name, default ``srgan-x<scale>``.
    """

    def __init__(self, scale=4, *, n_blocks=8, filters=32, batch_norm=False, hr_convs=0,
                 name=None):
        super().__init__("srresnet", scale=scale, name=name or f"srgan-x{scale}",
                         n_blocks=n_blocks, filters=filters, batch_norm=batch_norm,
                         hr_convs=hr_convs)


def get_model(model):
    """A model from what users pass: a model, a shipped model's name, or a saved model's path.

    Parameters
    ----------
    model : `SRModel`, str or Path
        Returned as is if a model; a name in `available_models` loads the
        shipped weights (`SRModel.pretrained`); anything else is a saved
        model's stem or file (`SRModel.load`).
    """
    if isinstance(model, SRModel):
        return model
    if isinstance(model, str) and (model in available_models()
                                   or (DATA_DIR / f"{model}.json").is_file()):
        return SRModel.pretrained(model)  # a shipped card without weights says so there
    try:
        return SRModel.load(model)
    except FileNotFoundError:
        if any(p.exists() for p in model_paths(model)):
            raise  # half a saved model: the message names the missing file
        raise FileNotFoundError(f"{model!r} is neither a shipped model ("
                                f"{', '.join(available_models()) or 'none installed'}) nor a "
                                "saved model (NAME.weights.h5 + NAME.json)") from None


def available_models():
    """Names of the models shipped in ``astrosr/data`` (weights and card both present)."""
    if not DATA_DIR.is_dir():
        return []
    return sorted(p.name[:-len(".weights.h5")] for p in DATA_DIR.glob("*.weights.h5")
                  if (DATA_DIR / (p.name[:-len(".weights.h5")] + ".json")).is_file())


def sha256(path):
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------- helpers


def _full_config(architecture, scale, options):
    """Architecture name, scale and every builder option (defaults filled in)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)}, "
                         f"got {architecture!r}")
    params = inspect.signature(ARCHITECTURES[architecture]).parameters
    unknown = set(options) - set(params) - {"scale"}
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)} for architecture {architecture!r}; "
                        f"it takes {sorted(k for k in params if k != 'scale')}")
    config = {"architecture": architecture, "scale": scale}
    for key, p in params.items():
        if key != "scale":
            value = options.get(key, p.default)
            config[key] = list(value) if isinstance(value, tuple) else value
    return config


def _options(card):
    return {k: v for k, v in card["architecture"].items() if k not in ("architecture", "scale")}


def _new_card(name, config):
    import platform

    from .. import __version__

    return {
        "format": CARD_FORMAT,
        "format_version": CARD_VERSION,
        "name": name,
        "created": _now(),
        "architecture": config,
        "intensity_transform": dict(TRANSFORM),
        "software": {"astrosr": __version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "training": None,
        "metrics": {},
    }


def _read_card(path):
    try:
        card = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not a JSON model card: {exc}") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise ValueError(f"{path} is not an astrosr model card (format {CARD_FORMAT!r})")
    if card.get("format_version", 0) > CARD_VERSION:
        raise ValueError(f"{path} has model-card format {card['format_version']}; this astrosr "
                         f"reads up to {CARD_VERSION}: upgrade astrosr")
    return card


def model_paths(path):
    """The weights file and model card paths of a saved model's stem (suffixes stripped)."""
    p = Path(path)
    for suffix in (".weights.h5", ".json"):
        if p.name.endswith(suffix):
            p = p.with_name(p.name[:-len(suffix)])
    if not p.name:
        raise ValueError(f"path must name a file stem, got {str(path)!r}")
    return p.with_name(p.name + ".weights.h5"), p.with_name(p.name + ".json")


def _weights_fix(weights):
    """What to do about a missing or corrupt weights file."""
    if Path(weights).resolve().parent == DATA_DIR:
        return "reinstall astrosr (pip install --force-reinstall astrosr-gan) to restore it"
    return "copy the weights file again from where the model was saved, or save it again"


def _temp_name(target, suffix):
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    os.unlink(tmp)  # Keras refuses to write over an existing file only in some versions
    return Path(tmp)


def _now():
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
