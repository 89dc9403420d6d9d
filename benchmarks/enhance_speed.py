"""Benchmark: output megapixels per second of `astrosr.enhance` on CPU.

One simulated frame (a synthetic sky at scale 4, Gaussian PSF sigma 1.2
input pixels, sky 100 e- subtracted, read noise 5 e-) of each ``--sizes``,
enhanced by a shipped model with each self-ensemble size and consistency
mode; the median wall time of ``--repeats`` calls after one warm-up call
(which traces the network for the tile shapes). The PSF is given, so no
time goes into estimating it.

Run from the repository root::

    python benchmarks/enhance_speed.py
    python benchmarks/enhance_speed.py --model vdsr-x4 --sizes 128 512
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from astrosr import simulate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PSF, READ_NOISE, SCALE, SKY  # noqa: E402


def frame_of_size(n, seed=0):
    truth = simulate.make_sky((SCALE * n, SCALE * n), n_stars=n, n_galaxies=n // 16, nebula=True,
                              seed=seed)
    frame = simulate.observe(truth, n_frames=1, scale=SCALE, psf=PSF, sky=SKY,
                             read_noise=READ_NOISE, seed=seed).frames[0]
    frame.data = frame.data - SKY
    return frame


def timed(model, frame, repeats, **options):
    model.enhance(frame, psf=PSF, **options)  # warm-up: traces the network for these tiles
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = model.enhance(frame, psf=PSF, **options)
        seconds.append(time.perf_counter() - t0)
    return out.data.size / 1e6 / float(np.median(seconds)), float(np.median(seconds))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="srresnet-x4")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--ensembles", type=int, nargs="+", default=[1, 2, 8])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from astrosr.models import get_model

    model = get_model(args.model)
    print(f"astrosr.enhance speed: {args.model}, {os.cpu_count()} CPUs, median of "
          f"{args.repeats} calls after a warm-up; output Mpix/s (seconds)")
    modes = ["observation", "pixel", None]
    print(f"{'input':>9} {'ensemble':>8} " + " ".join(f"{str(m):>18}" for m in modes))
    for n in args.sizes:
        frame = frame_of_size(n)
        for ens in args.ensembles:
            cells = [timed(model, frame, args.repeats, ensemble=ens, consistency=m) for m in modes]
            print(f"{n:>4}x{n:<4} {ens:>8} "
                  + " ".join(f"{mp:9.2f} ({s:5.2f} s)" for mp, s in cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
