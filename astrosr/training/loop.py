"""The training loop: two stages, learning-rate decay, validation, checkpoints, model card.

Stage ``"pixel"`` trains the SRGAN generator as SRResNet (or SRCNN / VDSR)
with L1 on the asinh scale + L1 on the linear scale; stage ``"gan"`` adds a
discriminator and trains on content loss + 1e-3 x non-saturating adversarial
loss, the content being VGG19 features (from a local weights file) or the
discriminator's own features (feature matching); the discriminator can be
held back by one-sided label smoothing, the R1 gradient penalty and a lower
learning rate than the generator's. Either stage can add a consistency term:
the output observed again through the degradation against the noisy input,
in units of its noise.
"""

import csv as _csv
import datetime
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np

from .data import (CONSISTENCY_RADIUS, VAL_SEED, Degradation, check_int, collect_images,
                   split_validation, synthetic_sky, training_pairs, validation_images)

__all__ = ["train", "STAGES", "MODELS", "LOSS_WEIGHTS"]

#: Training stages.
STAGES = ("pixel", "gan")
#: Model names `train` builds: the SRGAN generator (as SRResNet or SRGAN), its fine-grid form
#: (`~astrosr.models.build_finegrid`) and the baselines.
MODELS = ("srresnet", "srgan", "finegrid", "srcnn", "vdsr")
#: Default loss weights of each stage (``linear`` weighs the linear L1 inside the pixel loss).
LOSS_WEIGHTS = {
    "pixel": {"linear": 1.0, "consistency": 0.0},
    "gan": {"content": 1.0, "adversarial": 1e-3, "pixel": 0.0, "linear": 1.0, "consistency": 0.0,
            "label_smoothing": 0.0, "r1": 0.0},
}
#: Learning-rate schedules.
SCHEDULES = ("cosine", "step", "constant")


def train(model="srresnet", *, stage=None, steps=1000, batch_size=16, patch=24, scale=4,
          model_options=None, learning_rate=1e-4, lr_schedule="cosine", final_lr_fraction=0.01,
          images=None, paths=None, include_hdf=True, n_synthetic=8, degradation=None,
          loss_weights=None, d_lr_ratio=None, vgg19_weights=None, seed=0, checkpoint_dir=None,
          checkpoint_every=500, resume=True, csv=None, steps_per_epoch=100, n_val=32,
          threads=None, progress=True, command=None, pairs=None, max_minutes=None):
    """Train a super-resolution network; return it with its model card filled in.

    Parameters
    ----------
    model : str or `~astrosr.models.SRModel`
        A model to train further (e.g. a stage-1 SRResNet for stage 2), or a
        name in `MODELS`: ``"srresnet"`` and ``"srgan"`` build the SRGAN
        generator (`~astrosr.models.SRGAN`), ``"finegrid"`` its fine-grid
        form (`~astrosr.models.build_finegrid`), ``"srcnn"`` and ``"vdsr"``
        the baselines, with ``scale`` and ``model_options``.
    stage : {"pixel", "gan"}, optional
        Losses (see the module notes); default ``"gan"`` for ``"srgan"``,
        else ``"pixel"``.
    steps : int
        Total optimisation steps (a resumed run continues up to it).
    batch_size, patch : int
        Pairs per step; side of the coarse patches.
    scale : int
        Upsampling factor of a model built by name.
    model_options : dict, optional
        Builder options of a model built by name (``n_blocks``, ``filters``...).
    learning_rate : float
        Initial learning rate (Adam, beta_1 = 0.9).
    lr_schedule : {"cosine", "step", "constant"}
        Decay over ``steps``: cosine to ``final_lr_fraction`` of the initial
        rate, or divided by 10 at 50 % and again at 75 % of the steps.
        Decaying was worth 1-5 dB in an earlier experiment.
    final_lr_fraction : float
        End of the cosine decay, as a fraction of ``learning_rate``.
    images : list of array_like, optional
        Truths to train on; default ``training_images(paths, include_hdf=...,
        n_synthetic=..., seed=seed)``.
    paths, include_hdf, n_synthetic
        Passed to `training_images` when ``images`` is not given.
    degradation : Degradation, optional
        Ranges of PSF, noise and flux of the pairs.
    loss_weights : dict, optional
        Overrides of `LOSS_WEIGHTS` for the stage: ``linear`` (linear L1 in
        the pixel loss), ``consistency`` (chi-square of the re-observed output;
        0 = off), and for stage ``"gan"`` ``content``, ``adversarial``,
        ``pixel`` and ``label_smoothing`` (the discriminator's target for real
        patches is ``1 - label_smoothing``: one-sided smoothing, Salimans et
        al. 2016, which keeps the discriminator from winning outright) and
        ``r1``, the R1 gradient penalty's ``gamma`` (Mescheder et al. 2018:
        the discriminator's loss gains ``gamma / 2 * E_real ||grad_x D(x)||**2``,
        `~astrosr.models.losses.r1_penalty`; 0 = off), all recorded in the
        model card's ``loss_weights``.
    d_lr_ratio : float, optional
        Stage ``"gan"`` only: the discriminator's learning rate as a fraction
        of the generator's, at every step of the same schedule (default 1).
        Below 1 the discriminator learns more slowly, so it does not win the
        first steps while the generator still makes bicubic-like patches.
        Recorded in the card as ``optimizer.learning_rate.discriminator_ratio``.
    vgg19_weights : str or Path, optional
        Local Keras VGG19 weights file (no top) for the content loss of stage
        ``"gan"``; without it the content loss is discriminator feature
        matching. Nothing is downloaded.
    seed : int
        Seeds Python, NumPy and TensorFlow (`keras.utils.set_random_seed`)
        and the pair generator.
    checkpoint_dir : str or Path, optional
        Where checkpoints go (every ``checkpoint_every`` steps and at the end);
        with ``resume``, training continues from the latest one there.
    checkpoint_every : int
        Steps between checkpoints.
    resume : bool
        Continue from the latest checkpoint in ``checkpoint_dir`` if any;
        with False, ``checkpoint_dir`` must hold none (no runs mixed up).
    csv : str or Path, optional
        Metrics file, a row per epoch; default ``checkpoint_dir/metrics.csv``
        when there is a checkpoint directory. A resumed run keeps the rows up
        to its checkpoint and appends; a fresh run refuses an existing file.
    steps_per_epoch : int
        Steps between rows of metrics (validation runs at each row).
    n_val : int
        Pairs of the validation set (fixed seed `VAL_SEED`, held out).
    threads : int, optional
        TensorFlow threads (intra- and inter-op); must be set before
        TensorFlow starts.
    progress : bool
        Show a tqdm progress bar.
    command : str, optional
        The command line that reproduces this run, for the model card
        (the ``astrosr train`` command fills it in).
    pairs : `~astrosr.training.fused.FusedPairs`, optional
        Ready-made pairs to crop batches from instead of observing truths on
        the fly: fused images of simulated stacks and their truths, for the
        scale-1 refinement network of `astrosr.MultiFrameSR`. The last pairs
        (``n_val // 4``, at most a fifth) are held out, and ``n_val`` crops
        of them validate; ``images``, ``paths`` and ``degradation`` do not
        apply.
    max_minutes : float, optional
        Stop after the first step that ends this many minutes (wall clock)
        after this call's training loop began, with a checkpoint when there is a
        ``checkpoint_dir``: the same call again continues from it, so a run
        longer than one sitting (or one fixed-length GPU slot) is done in
        pieces. The card's ``steps`` is the steps done, ``planned_steps``
        the target.

    Returns
    -------
    `~astrosr.models.SRModel`
    """
    call = {k: v for k, v in locals().items()}
    _set_threads(threads)
    import keras

    stage = _check_stage(model, stage)
    weights = _loss_weights(stage, loss_weights)
    d_lr_ratio = _check_d_lr_ratio(stage, d_lr_ratio)
    steps, batch_size, patch = (check_int(steps, "steps"), check_int(batch_size, "batch_size"),
                                check_int(patch, "patch", minimum=4))
    if lr_schedule not in SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {lr_schedule!r}")
    keras.utils.set_random_seed(seed)
    model = _resolve_model(model, scale, model_options)
    if pairs is not None:
        data = _PairData(pairs, model.scale, patch, check_int(n_val, "n_val"))
    else:
        data = _Data(images, paths, include_hdf, n_synthetic, seed, model.scale, patch,
                     degradation or Degradation(), check_int(n_val, "n_val"))
    lr = {"initial": float(learning_rate), "schedule": lr_schedule,
          "final_fraction": float(final_lr_fraction), "decay_steps": steps,
          **({} if d_lr_ratio is None else {"discriminator_ratio": d_lr_ratio})}
    trainer = _Trainer(model, stage, weights, lr, vgg19_weights, patch)
    rng = np.random.default_rng(seed)
    ckpt = _Checkpoints(checkpoint_dir, model.config, stage) if checkpoint_dir else None
    state = _start(ckpt, resume, trainer, rng)
    csv_path = Path(csv) if csv else (ckpt.directory / "metrics.csv" if ckpt else None)
    _prepare_csv(csv_path, state["step"])
    loop = {"steps": steps, "batch_size": batch_size,
            "steps_per_epoch": check_int(steps_per_epoch, "steps_per_epoch"),
            "checkpoint_every": check_int(checkpoint_every, "checkpoint_every"),
            "max_seconds": None if max_minutes is None else _check_minutes(max_minutes) * 60.0}
    metrics, last = _run(trainer, data, rng, state, loop, ckpt, csv_path, progress)
    model.card["training"] = _training_card(
        model, stage, weights, data, state, loop, patch, lr, vgg19_weights, seed, last,
        command or _python_command(call), csv_path, checkpoint_dir)
    model.card["metrics"] = metrics
    return model


def _start(ckpt, resume, trainer, rng):
    """Restore the latest checkpoint, or start afresh where no earlier run would be mixed in."""
    if ckpt and ckpt.exists():
        if not resume:
            raise ValueError(f"checkpoint_dir {ckpt.directory} has checkpoints of an earlier run: "
                             "resume it, or give an empty directory")
        return ckpt.restore(trainer, rng)
    return {"step": 0, "wall_time_s": 0.0}


def _prepare_csv(path, step):
    """Keep the rows up to ``step`` (later ones belong to progress lost since the checkpoint)."""
    if path is None or not path.is_file() or not path.stat().st_size:
        return
    if step == 0:
        raise FileExistsError(f"metrics file {path} exists and there is no checkpoint to resume: "
                              "remove it or name another file")
    with open(path, newline="") as f:
        rows = list(_csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= step]
    if len(kept) < len(rows):
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            _csv.writer(f).writerows(kept)
        os.replace(tmp, path)


def _set_threads(threads):
    if threads is None:
        return
    import warnings

    import tensorflow as tf

    threads = check_int(threads, "threads")
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        warnings.warn("TensorFlow has already started: threads is ignored", RuntimeWarning,
                      stacklevel=3)


def _check_stage(model, stage):
    if stage is None:
        stage = "gan" if isinstance(model, str) and model == "srgan" else "pixel"
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    return stage


def _loss_weights(stage, overrides):
    weights = dict(LOSS_WEIGHTS[stage])
    unknown = set(overrides or {}) - set(weights)
    if unknown:
        raise ValueError(f"unknown loss_weights {sorted(unknown)} for stage {stage!r}; "
                         f"known: {sorted(weights)}")
    weights.update({k: float(v) for k, v in (overrides or {}).items()})
    if not 0.0 <= weights.get("label_smoothing", 0.0) < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {weights['label_smoothing']}")
    if not weights.get("r1", 0.0) >= 0.0:
        raise ValueError(f"r1 (the R1 penalty's gamma) must be >= 0, got {weights['r1']}")
    return weights


def _check_minutes(minutes):
    if not float(minutes) > 0:
        raise ValueError(f"max_minutes must be positive, got {minutes!r}")
    return float(minutes)


def _check_d_lr_ratio(stage, ratio):
    """The discriminator's learning-rate ratio: 1 by default in stage "gan", none in "pixel"."""
    if stage != "gan":
        if ratio is not None:
            raise ValueError(f"d_lr_ratio applies to stage 'gan' only, not {stage!r}")
        return None
    ratio = 1.0 if ratio is None else float(ratio)
    if not 0.0 < ratio <= 100.0:
        raise ValueError(f"d_lr_ratio must be in (0, 100], got {ratio}")
    return ratio


def _resolve_model(model, scale, options):
    from ..models import SRGAN, SRModel

    if isinstance(model, SRModel):
        return model
    if model not in MODELS:
        raise ValueError(f"model must be an SRModel or one of {MODELS}, got {model!r}")
    options = dict(options or {})
    if model in ("srresnet", "srgan"):
        return SRGAN(scale, name=f"{model}-x{scale}", **options)
    return SRModel(model, scale=scale, **options)


class _Data:
    """Training truths, the held-out validation pairs, and their description."""

    def __init__(self, images, paths, include_hdf, n_synthetic, seed, scale, patch, deg, n_val):
        if images is not None and paths is not None:
            raise ValueError("give images (arrays) or paths (FITS files), not both")
        labels = None
        if images is None:
            images, self.described, labels = collect_images(paths, include_hdf, n_synthetic, 256,
                                                            seed, labels=True)
        else:
            images = [np.asarray(im, dtype=np.float32) for im in images]
            self.described = [{"source": "arrays", "n": len(images),
                               "shapes": [list(im.shape) for im in images]}]
        self.scale, self.patch, self.deg = scale, patch, deg
        self.degradation = deg.to_dict()
        crop = (patch + 2 * deg.max_margin) * scale
        self.train_images, val_images = split_validation(images, crop, labels=labels)
        self.validation = _validation_text(images, val_images, labels, crop)
        if not val_images:
            size = max(256, 2 * crop)
            val_images = [synthetic_sky(np.random.default_rng(VAL_SEED), size)]
            self.validation = f"a synthetic sky ({size}x{size}, seed {VAL_SEED}) never trained on"
        self.val = training_pairs(val_images, n_val, scale=scale, patch=patch, degradation=deg,
                                  seed=VAL_SEED)
        self.val_xy = self.val.network_arrays()

    def batch(self, n, rng):
        return training_pairs(self.train_images, n, scale=self.scale, patch=self.patch,
                              degradation=self.deg, seed=rng)


def _validation_text(images, val_images, labels, crop):
    """How the validation images were held out, for the model card."""
    if not val_images:
        return ""
    held = validation_images(images, crop, labels=labels)
    if not held:
        return f"bottom bands of {len(val_images)} image(s), never trained on"
    names = [labels[i].name if labels else f"image {i}" for i in held]
    return f"whole images held out, never trained on: {', '.join(names)}"


class _PairData:
    """Ready-made pairs (`FusedPairs`): held-out validation crops and random training crops."""

    def __init__(self, pairs, scale, patch, n_val):
        if scale != pairs.scale:
            raise ValueError(f"the pairs are for a scale-{pairs.scale} model, "
                             f"got a scale-{scale} one")
        n_held = max(1, min(n_val // 4, len(pairs) // 5))
        by = "image" if (pairs.n_images or 0) >= 2 else "pair"
        try:
            self.pairs, val_pairs = pairs.split(n_held, by=by)
        except ValueError:  # whole images would leave nothing to train on (one big image)
            by = "pair"
            self.pairs, val_pairs = pairs.split(n_held, by=by)
        self.patch, self.scale = patch, scale
        self.val = val_pairs.batch(n_val, patch, VAL_SEED)
        self.val_xy = self.val.network_arrays()
        self.described = [{"source": "astrosr.training.fused.FusedPairs", "n": len(pairs),
                           **pairs.meta}]
        self.validation = (f"crops of the {len(val_pairs)} pairs of {val_pairs.n_images} whole "
                           "image(s) held out, never trained on" if by == "image" else
                           f"crops of the last {len(val_pairs)} pairs, never trained on (their "
                           "images may also give training pairs)")
        self.degradation = dict(pairs.meta.get("degradation", {}))

    def batch(self, n, rng):
        return self.pairs.batch(n, self.patch, rng)


def _schedule(lr):
    import keras

    if lr["schedule"] == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr["initial"], lr["decay_steps"],
                                                      alpha=lr["final_fraction"])
    if lr["schedule"] == "step":
        n = lr["decay_steps"]
        return keras.optimizers.schedules.PiecewiseConstantDecay(
            [max(1, n // 2), max(2, 3 * n // 4)], [lr["initial"], lr["initial"] / 10,
                                                   lr["initial"] / 100])
    return lr["initial"]


class _Trainer:
    """The networks, their optimisers and one compiled training step of a stage."""

    def __init__(self, model, stage, weights, lr, vgg19_weights, patch):
        import keras
        import tensorflow as tf

        from ..models.srgan import fast_generator

        self.net, self.scale, self.stage, self.weights = model.network, model.scale, stage, weights
        self.forward = fast_generator(self.net)  # the same network, its tail 2-3x faster
        self.border = min(CONSISTENCY_RADIUS, (patch - 1) // 2)
        self.opt = keras.optimizers.Adam(_schedule(lr), beta_1=0.9)
        self.opt.build(self.net.trainable_variables)
        self.disc = self.d_opt = self.vgg = None
        if stage == "gan":
            self._build_gan(lr, vgg19_weights, patch * self.scale)
        self._step = tf.function(self._gan_step if stage == "gan" else self._pixel_step)

    def _build_gan(self, lr, vgg19_weights, fine_patch):
        import keras

        from ..models.losses import VGGContentLoss
        from ..models.srgan import build_discriminator, discriminator_features

        self.disc = build_discriminator(fine_patch, filters=32)
        self.features = discriminator_features(self.disc)
        ratio = lr.get("discriminator_ratio", 1.0)
        self.d_opt = keras.optimizers.Adam(_schedule({**lr, "initial": lr["initial"] * ratio}),
                                           beta_1=0.9)
        self.d_opt.build(self.disc.trainable_variables)
        if vgg19_weights:
            if fine_patch < 32:
                raise ValueError(f"the VGG19 content loss needs fine patches of at least 32 "
                                 f"pixels, got patch*scale = {fine_patch}")
            self.vgg = VGGContentLoss(vgg19_weights)

    def step(self, pairs):
        """One optimisation step on a batch of `TrainingPairs`; the loss terms as floats."""
        x, y = pairs.network_arrays()
        out = self._step(x, y, pairs.coarse[..., None], pairs.variance[..., None], pairs.psf,
                         pairs.softening)
        return {k: float(v) for k, v in out.items()}

    def _pixel_terms(self, p, y, coarse, variance, psf, softening):
        from ..models import losses

        terms = losses.pixel_loss(p, y, linear_weight=self.weights["linear"])
        if self.weights["consistency"]:
            terms["consistency"] = losses.consistency_loss(p, coarse, variance, psf, softening,
                                                           self.scale, border=self.border)
        return terms

    def _pixel_step(self, x, y, coarse, variance, psf, softening):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            p = self.forward(x, training=True)
            terms = self._pixel_terms(p, y, coarse, variance, psf, softening)
            loss = terms["pixel"] + self.weights["consistency"] * terms.get("consistency", 0.0)
        variables = self.net.trainable_variables
        grads = tape.gradient(loss, variables)
        self.opt.apply_gradients(zip(grads, variables, strict=True))
        return {"loss": loss, **terms}

    def _gan_step(self, x, y, coarse, variance, psf, softening):
        import tensorflow as tf

        from ..models import losses

        w = self.weights
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            p = self.forward(x, training=True)
            # One pass over real and generated patches together.
            both = self.features(tf.concat([y, p], axis=0), training=True)
            real, fake = zip(*(tf.split(f, 2, axis=0) for f in both), strict=True)
            d_loss = losses.discriminator_loss(real[-1], fake[-1],
                                               real_label=1.0 - w["label_smoothing"])
            r1 = {} if not w["r1"] else {"r1": losses.r1_penalty(self.disc, y)}
            d_loss += 0.5 * w["r1"] * r1.get("r1", 0.0)
            content = (self.vgg(p, y) if self.vgg
                       else losses.feature_matching_loss(real[:-1], fake[:-1]))
            terms = {"content": content, "adversarial": losses.generator_adversarial_loss(fake[-1])}
            loss = w["content"] * content + w["adversarial"] * terms["adversarial"]
            if w["pixel"] or w["consistency"]:
                terms.update(self._pixel_terms(p, y, coarse, variance, psf, softening))
                loss += w["pixel"] * terms["pixel"]
                loss += w["consistency"] * terms.get("consistency", 0.0)
        g_vars, d_vars = self.net.trainable_variables, self.disc.trainable_variables
        g_grads, d_grads = g_tape.gradient(loss, g_vars), d_tape.gradient(d_loss, d_vars)
        self.opt.apply_gradients(zip(g_grads, g_vars, strict=True))
        self.d_opt.apply_gradients(zip(d_grads, d_vars, strict=True))
        return {"loss": loss, **terms, "d_loss": d_loss, **r1}

    def learning_rate(self):
        """Learning rate of the generator now."""
        lr = self.opt.learning_rate
        return float(lr(self.opt.iterations) if callable(lr) else lr)

    def groups(self):
        """Variables saved by a checkpoint, by group."""
        out = {"network": self.net.weights, "optimizer": self.opt.variables}
        if self.disc is not None:
            out.update(discriminator=self.disc.weights, d_optimizer=self.d_opt.variables)
        return out

    def evaluate(self, x, y, *, batch=32):
        """PSNR and L1 of the network on the asinh scale (see `_psnr`)."""
        import keras

        pred = np.concatenate([keras.ops.convert_to_numpy(self.net(x[i:i + batch], training=False))
                               for i in range(0, len(x), batch)])
        return {"val_psnr": _psnr(pred, y), "val_l1": float(np.mean(np.abs(pred - y)))}

    def bicubic(self, x, y):
        """The same metrics for bicubic upsampling, the baseline to beat."""
        import keras

        up = x if self.scale == 1 else keras.ops.convert_to_numpy(
            keras.layers.UpSampling2D(self.scale, interpolation="bicubic")(x))
        return {"val_psnr_bicubic": _psnr(up, y), "val_l1_bicubic": float(np.mean(np.abs(up - y)))}


def _psnr(pred, target):
    """Mean over patches of 10 log10(range**2 / MSE), range = each target patch's max - min."""
    axes = tuple(range(1, target.ndim))
    rng = target.max(axis=axes) - target.min(axis=axes)
    mse = np.mean((pred - target) ** 2, axis=axes)
    return float(np.mean(10.0 * np.log10(np.maximum(rng, 1e-12) ** 2 / np.maximum(mse, 1e-30))))


def _run(trainer, data, rng, state, loop, ckpt, csv_path, progress):
    """Train up to ``loop["steps"]``; return the final metrics and the last epoch's mean losses."""
    from tqdm.auto import tqdm

    t0, wall0 = time.perf_counter(), state["wall_time_s"]
    sums, count, last = {}, 0, {}
    spe, every, steps = loop["steps_per_epoch"], loop["checkpoint_every"], loop["steps"]
    with tqdm(total=steps, initial=state["step"], disable=not progress, unit="step",
              desc=f"train ({trainer.stage})") as bar:
        for step in range(state["step"] + 1, steps + 1):
            terms = trainer.step(data.batch(loop["batch_size"], rng))
            if not math.isfinite(terms["loss"]):
                raise FloatingPointError(f"training diverged at step {step} "
                                         f"(loss {terms['loss']}): lower the learning rate")
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            state.update(step=step, wall_time_s=wall0 + time.perf_counter() - t0)
            bar.update(1)
            bar.set_postfix(loss=f"{terms['loss']:.4g}", refresh=False)
            if step % spe == 0 or step == steps:
                last = {k: v / count for k, v in sums.items()}
                _write_row(csv_path, {"step": step, "epoch": math.ceil(step / spe),
                                      "learning_rate": trainer.learning_rate(), **last,
                                      **trainer.evaluate(*data.val_xy),
                                      "wall_time_s": state["wall_time_s"]})
                sums, count = {}, 0
            out_of_time = loop["max_seconds"] and time.perf_counter() - t0 > loop["max_seconds"]
            if ckpt and (step % every == 0 or step == steps or out_of_time):
                ckpt.save(trainer, rng, state)
            if out_of_time:
                last = {k: v / count for k, v in sums.items()} if count else last
                break
    metrics = {**trainer.evaluate(*data.val_xy), **trainer.bicubic(*data.val_xy),
               "n_val": len(data.val), "scale_of_metrics": "asinh"}
    return metrics, last


def _write_row(path, row):
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(row)
    if path.exists() and path.stat().st_size:
        with open(path, newline="") as f:
            fields = next(_csv.reader(f), fields)
        fields += [k for k in row if k not in fields]  # new terms go last (rare)
    new = not (path.exists() and path.stat().st_size)
    with open(path, "a", newline="") as f:
        writer = _csv.DictWriter(f, fieldnames=fields, restval="", extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


class _Checkpoints:
    """``ckpt-<step>.npz`` (all variables) + ``ckpt-<step>.json`` (step, RNG, wall time).

    Written to temporary names then renamed, the JSON last: a checkpoint is
    complete when its JSON exists. The ``keep`` latest are kept.
    """

    def __init__(self, directory, config, stage, *, keep=2):
        self.directory, self.config, self.stage, self.keep = Path(directory), config, stage, keep

    def exists(self):
        """Whether the directory holds a complete checkpoint."""
        return bool(self._all())

    def _all(self):
        return sorted(self.directory.glob("ckpt-*.json")) if self.directory.is_dir() else []

    def save(self, trainer, rng, state):
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = self.directory / f"ckpt-{state['step']:08d}"
        arrays = {f"{group}/{i}": np.asarray(v) for group, variables in trainer.groups().items()
                  for i, v in enumerate(variables)}
        meta = {"step": state["step"], "wall_time_s": state["wall_time_s"],
                "rng": rng.bit_generator.state, "architecture": self.config, "stage": self.stage,
                "written": _now()}
        tmp_npz, tmp_json = stem.with_suffix(".npz.tmp"), stem.with_suffix(".json.tmp")
        with open(tmp_npz, "wb") as f:
            np.savez(f, **arrays)
        tmp_json.write_text(json.dumps(meta, indent=1))
        os.replace(tmp_npz, stem.with_suffix(".npz"))
        os.replace(tmp_json, stem.with_suffix(".json"))
        for old in self._all()[:-self.keep]:
            old.unlink()
            old.with_suffix(".npz").unlink(missing_ok=True)

    def restore(self, trainer, rng):
        """Load the latest checkpoint into ``trainer`` and ``rng``; its state, or None."""
        found = self._all()
        if not found:
            return None
        meta = json.loads(found[-1].read_text())
        if meta["architecture"] != self.config or meta["stage"] != self.stage:
            raise ValueError(f"the checkpoint {found[-1]} is of another model or stage "
                             f"({meta['architecture']}, stage {meta['stage']!r}): use another "
                             "checkpoint_dir, or resume=False")
        with np.load(found[-1].with_suffix(".npz")) as arrays:
            for group, variables in trainer.groups().items():
                for i, v in enumerate(variables):
                    v.assign(arrays[f"{group}/{i}"])
        rng.bit_generator.state = meta["rng"]
        return {"step": meta["step"], "wall_time_s": meta["wall_time_s"]}


def _training_card(model, stage, weights, data, state, loop, patch, lr, vgg19_weights, seed, last,
                   command, csv_path, checkpoint_dir):
    previous = model.card.get("training")
    history = ([] if not previous else previous.get("history", []) + [
        {k: v for k, v in previous.items() if k != "history"}])
    return {
        "stage": stage,
        "steps": state["step"],
        "planned_steps": loop["steps"],
        "batch_size": loop["batch_size"],
        "patch": patch,
        "fine_patch": patch * model.scale,
        "data": {"sources": data.described, "validation": data.validation,
                 "n_val": len(data.val), "validation_seed": VAL_SEED},
        "degradation": data.degradation,
        "optimizer": {"name": "Adam", "beta_1": 0.9, "learning_rate": lr},
        "loss_weights": weights,
        "content_loss": (None if stage == "pixel" else
                         "vgg19" if vgg19_weights else "discriminator feature matching"),
        "vgg19_weights": None if not vgg19_weights else str(vgg19_weights),
        "final_losses": last,
        "wall_time_s": round(state["wall_time_s"], 3),
        "hardware": _hardware(),
        "software": _software(),
        "seed": seed,
        "command": command,
        "metrics_csv": None if csv_path is None else str(csv_path),
        "checkpoint_dir": None if checkpoint_dir is None else str(checkpoint_dir),
        "finished": _now(),
        "history": history,
    }


def _hardware():
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    threads = tf.config.threading.get_intra_op_parallelism_threads() or "all"
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return (f"{cpu}; {os.cpu_count()} logical CPUs; TensorFlow intra-op threads: {threads}; "
            f"GPUs: {', '.join(gpus) or 'none'}; {platform.system()} {platform.release()}")


def _software():
    import keras
    import tensorflow as tf

    from .. import __version__

    return {"astrosr": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def _python_command(call):
    """``astrosr.training.train(...)`` with this call's non-default arguments."""
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(train).parameters.items()}
    model = call.pop("model")
    args = [repr(model) if isinstance(model, str) else f"<SRModel {model.name!r}: {model.config}>"]
    for k, v in call.items():
        if v is None and defaults[k] is None or k != "images" and v == defaults[k]:
            continue
        if k == "images":
            v = f"<{len(v)} arrays>"
        elif isinstance(v, Degradation):
            v = f"Degradation(**{v.to_dict()})"
        else:
            v = repr(str(v) if isinstance(v, Path) else v)
        args.append(f"{k}={v}")
    return f"astrosr.training.train({', '.join(args)})"


def _now():
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
