"""Train a tiny super-resolution network, save it, load it back and use it.

A toy run of `astrosr.training.train` that finishes in about a minute on two
CPU cores: an SRResNet of 2 residual blocks x 8 filters (scale 4) trained for
50 steps on the Hubble Deep Field (scikit-image) and 2 synthetic skies, with
the pixel losses of stage 1. Training pairs are made on the fly: random crops
observed through `astrosr.simulate.observe` with a PSF, sky, read noise and
flux drawn from `astrosr.training.Degradation`, fresh noise every batch.
Checkpoints and the metrics CSV go to a temporary folder (a run cut short
would resume from them). The model is saved (``NAME.weights.h5`` and the
model card ``NAME.json`` with the weights' sha256), loaded back with
`astrosr.SRModel.load` (which checks the sha256), and applied to a simulated
frame with `astrosr.enhance`, held to the data.

Fifty steps teach a network little: the point is the workflow. For a real
model see ``examples/train_srresnet_x4.py`` (the recipe of the shipped
``srresnet-x4``) and the "Training your own model" page of the documentation.

TensorFlow and Keras 3 come with a plain ``pip install astrosr-gan``. Run
with::

    python examples/train_small_model.py
    python examples/train_small_model.py --steps 200 --keep my_models/tiny-x4
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np

import astrosr
from astrosr._data import hubble_deep_field
from astrosr.psf import GaussianPSF
from astrosr.training import Degradation, train


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=50, help="training steps (default 50)")
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow threads (default 2)")
    parser.add_argument("--keep", metavar="STEM",
                        help="also save the model as STEM.weights.h5 + STEM.json")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = train(
            "srresnet", scale=4, model_options={"n_blocks": 2, "filters": 8},
            steps=args.steps, batch_size=8, patch=16, learning_rate=1e-3,
            include_hdf=True, n_synthetic=2,                  # the truths
            degradation=Degradation(psf_sigma=(0.8, 1.5)),    # how they are observed
            n_val=8, steps_per_epoch=25,                      # a CSV row + validation every 25
            checkpoint_dir=tmp / "ckpt", checkpoint_every=25,  # resumable
            seed=0, threads=args.threads, progress=False)
        m = model.card["metrics"]
        print(f"trained {model.card['training']['steps']} steps in "
              f"{model.card['training']['wall_time_s']:.1f} s: validation PSNR (asinh scale) "
              f"{m['val_psnr']:.2f} dB, bicubic {m['val_psnr_bicubic']:.2f} dB")
        print("checkpoints:", sorted(p.name for p in (tmp / "ckpt").iterdir()))

        weights, card = model.save(tmp / "tiny-x4")
        print(f"saved {weights.name} and {card.name}")
        if args.keep:
            model.save(args.keep, overwrite=True)
            print(f"kept a copy as {args.keep}.weights.h5 + {args.keep}.json")

        loaded = astrosr.SRModel.load(tmp / "tiny-x4")  # checks the weights' sha256
        print(f"loaded {loaded!r}")

    # Use it: one simulated, sky-subtracted frame, x4, held to the data.
    psf = GaussianPSF(1.2)
    stack = astrosr.simulate.observe(hubble_deep_field(128), n_frames=1, shifts=[[0.0, 0.0]],
                                     scale=4, psf=psf, sky=100.0, read_noise=5.0, seed=3)
    frame = stack.frames[0]
    frame.data = frame.data - 100.0
    sr = astrosr.enhance(frame, model=loaded, psf=psf)
    print(f"enhanced {frame.shape[1]}x{frame.shape[0]} -> {sr.shape[1]}x{sr.shape[0]}, "
          f"CHI2RED {sr.meta['CHI2RED']:.3f}, flux ratio "
          f"{sr.data.sum(dtype=np.float64) / frame.data.sum():.4f}")
    print("HISTORY:\n  " + "\n  ".join(str(h) for h in sr.meta["HISTORY"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
