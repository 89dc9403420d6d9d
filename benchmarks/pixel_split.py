"""Benchmark: can a pixel split (Noise2Self) choose between single-frame candidates?

A single frame has no other frames to hold out, but it has other pixels:
split the input pixels into the two colours of a checkerboard; make each
candidate from one colour alone (the other masked: ``astrosr.enhance`` fills
masked pixels before the network and leaves them out of its fit, the
Richardson-Lucy fits leave them out); predict the held colour through the
observation model (`astrosr.fusion.predict_frames`) and score its reduced
chi-square (one constant fitted); swap the colours and add. The prediction
of a held pixel never sees that pixel's noise (Batson & Royer 2019's
J-invariance), so the score rewards what the image holds, not its noise.

Candidates: the network (``--model``, default srresnet-x4, one ensemble
member) in each consistency mode of ``astrosr.enhance`` ("obs-disc":
observation, discrepancy stop; "obs-conv": observation, converged; "pixel";
"none"), ``astrosr.fuse`` reconstruct of the one frame (converged and
discrepancy: "RL-conv", "RL-disc") and bicubic. Beside each score: the
PSNR against the truth of the candidate made from the whole frame. Images:
those of ``benchmarks/single_frame.py`` (scale 4, Gaussian PSF sigma 1.2
input px, sky 100 e- subtracted, read noise 5 e-); spitzer and 2mass are
real images no shipped network was trained on.

Run from the repository root (about 2 minutes an image on 2 cores)::

    python benchmarks/pixel_split.py
    python benchmarks/pixel_split.py --images stars --model srgan-x4
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import astrosr
from astrosr.fusion import predict_frames
from astrosr.inference import fill_masked
from astrosr.metrics import psnr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PSF, available, make_truth  # noqa: E402
from single_frame import IMAGES, MARGIN, bicubic, observed_frame  # noqa: E402

MODES = {"obs-disc": dict(consistency="observation"),
         "obs-conv": dict(consistency="observation", stop="converged"),
         "pixel": dict(consistency="pixel"), "none": dict(consistency=None)}
EDGE = 6  # input pixels of the border left unscored (the model cannot see past it)


def candidates(model, frame):
    """Every candidate made from ``frame`` (its masked pixels unused)."""
    out = {k: model.enhance(frame, psf=PSF, ensemble=1, **o).data for k, o in MODES.items()}
    for stop, key in (("converged", "RL-conv"), ("discrepancy", "RL-disc")):
        out[key] = astrosr.fuse([frame], [[0.0, 0.0]], scale=4, method="reconstruct", psf=PSF,
                                reject=False, stop=stop).data
    filled = frame.copy()
    filled.data = fill_masked(np.asarray(frame.data, float), ~np.asarray(frame.mask, bool))
    out["bicubic"] = bicubic(filled)
    return out


def split_scores(model, frame):
    """Each candidate's held-out reduced chi-square over the two checkerboard colours."""
    yy, xx = np.mgrid[:frame.shape[0], :frame.shape[1]]
    bad = np.asarray(frame.mask, bool)
    var = np.asarray(frame.uncertainty.array, float)
    chi2, n = {}, 0
    for colour in (0, 1):
        held = (xx + yy) % 2 == colour
        part = frame.copy()
        part.mask = bad | held
        use = held & ~bad
        use[:EDGE], use[-EDGE:], use[:, :EDGE], use[:, -EDGE:] = False, False, False, False
        for key, image in candidates(model, part).items():
            predicted, modelled = predict_frames(image, [frame], [[0.0, 0.0]], psf=PSF, scale=4)
            u = use & modelled[0]
            w, resid = 1.0 / var[u], (frame.data - predicted[0])[u]
            resid = resid - np.sum(w * resid) / np.sum(w)
            chi2[key] = chi2.get(key, 0.0) + float(np.sum(w * resid ** 2))
        n += int(u.sum()) - 1
    return {k: v / n for k, v in chi2.items()}


def main(argv=None):
    from astrosr.models import SRModel

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", nargs="+", choices=IMAGES, default=IMAGES)
    parser.add_argument("--model", default="srresnet-x4")
    args = parser.parse_args(argv)
    model = SRModel.pretrained(args.model)
    print(f"pixel-split (checkerboard) held-out chi2 against PSNR; model {args.model}")
    for name in [i for i in args.images if available(i)]:
        truth = make_truth(name, seed=0)
        frame = observed_frame(truth, seed=0)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            full = {k: psnr(v, truth, margin=MARGIN) for k, v in candidates(model, frame).items()}
            scores = split_scores(model, frame)
        print(f"{name} ({time.perf_counter() - t0:.0f} s)")
        for key in sorted(scores, key=scores.get):
            print(f"  {key:<9} held-out chi2 {scores[key]:9.4f}  PSNR {full[key]:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
