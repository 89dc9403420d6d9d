"""Benchmark: sub-pixel registration of dithered stacks against named peers.

Compares, on simulated 16-frame stacks (``astrosr.simulate.observe``), the
shifts of frames 1..15 relative to frame 0 measured by

1. ``astrosr.register_stack`` (phase correlation + maximum-likelihood fit
   against leave-one-out templates);
2. ``skimage.registration.phase_cross_correlation`` as it comes
   (``upsample_factor=100``, defaults otherwise);
3. the same, at its best: Hann-windowed, median-subtracted frames,
   ``normalization=None``;
4. ``image_registration.chi2_shift`` (``upsample_factor='auto'``);

with the two-frame Cramér-Rao bound (CRB) on the shift of frame i relative to
frame 0, from the noise-free model and both frames' noise.

Run from the repository root::

    python benchmarks/registration.py              # 5 runs, all images
    python benchmarks/registration.py --quick      # 1 run, stars and galaxies
    python benchmarks/registration.py --images stars hdf --runs 3 --csv out.csv
"""

import argparse
import csv
import os
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np

with warnings.catch_warnings():
    # image_registration imports astropy's deprecated test runner.
    warnings.simplefilter("ignore")
    import image_registration
    from image_registration import chi2_shift

import skimage
from skimage.filters import window
from skimage.registration import phase_cross_correlation

import astrosr
from astrosr import simulate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (ALL_IMAGES, DATA, N_FRAMES, PSF, READ_NOISE, REAL, SCALE,  # noqa: E402
                     SKY, make_truth)

METHODS = ["astrosr", "skimage", "skimage-best", "chi2_shift"]


# --------------------------------------------------------------------------- sign conventions
#
# astrosr's convention: a source at (x, y) in the reference appears at
# (x + dx, y + dy) in the frame. Verified empirically on noise-free frames
# from astrosr.simulate.render(truth, [[0, 0], [dx, dy]], scale=4, psf=...) of a
# star field, for (dx, dy) = (0.3, -0.7), (3.3, -5.7) and (-7.25, 2.4):
#   phase_cross_correlation(ref, img) returned (row, col) = (-dy, -dx)
#     ((5.70, -3.32) for (3.3, -5.7); (-2.37, 7.26) for (-7.25, 2.4)): it is
#     the shift that moves img back onto ref, in numpy (y, x) order;
#   chi2_shift(ref, img) returned (dx, dy) directly ((3.299, -5.697) and
#     (-7.248, 2.400)): "how much im2 is offset from im1", x first.


def skimage_to_dxdy(shift_rowcol):
    """skimage (row, col) shift that registers img onto ref -> astrosr (dx, dy) (verified, above)."""
    return np.array([-shift_rowcol[1], -shift_rowcol[0]], dtype=float)


def chi2_shift_to_dxdy(xoff, yoff):
    """image_registration.chi2_shift (dx, dy) -> astrosr (dx, dy): identical (verified, above)."""
    return np.array([xoff, yoff], dtype=float)


# --------------------------------------------------------------------------- methods
# Each returns (estimates (n-1, 2), errors (n-1, 2) or None, seconds per frame).


def run_astrosr(stack):
    t0 = time.perf_counter()
    table = astrosr.register_stack(stack.frames)
    elapsed = time.perf_counter() - t0
    est = np.column_stack([table["dx"].value, table["dy"].value])[1:]
    err = np.column_stack([table["dx_err"].value, table["dy_err"].value])[1:]
    return est, err, elapsed / len(stack.frames)


def run_skimage(stack):
    ref = np.asarray(stack.frames[0].data, dtype=float)
    est = []
    t0 = time.perf_counter()
    for f in stack.frames[1:]:
        shift = phase_cross_correlation(ref, np.asarray(f.data, dtype=float), upsample_factor=100)[0]
        est.append(skimage_to_dxdy(shift))
    return np.array(est), None, (time.perf_counter() - t0) / (len(stack.frames) - 1)


def run_skimage_best(stack):
    ref = np.asarray(stack.frames[0].data, dtype=float)
    win = window("hann", ref.shape)
    est = []
    t0 = time.perf_counter()
    for f in stack.frames[1:]:
        img = np.asarray(f.data, dtype=float)
        shift = phase_cross_correlation(win * (ref - np.median(ref)), win * (img - np.median(img)),
                                        upsample_factor=100, normalization=None)[0]
        est.append(skimage_to_dxdy(shift))
    return np.array(est), None, (time.perf_counter() - t0) / (len(stack.frames) - 1)


def run_chi2_shift(stack):
    ref = np.asarray(stack.frames[0].data, dtype=float)
    var0 = np.median(stack.frames[0].uncertainty.array)
    est, err = [], []
    t0 = time.perf_counter()
    for f in stack.frames[1:]:
        # Noise of the difference of the two frames (scalar: both frames' median variance).
        noise = np.sqrt(var0 + np.median(f.uncertainty.array))
        xoff, yoff, ex, ey = chi2_shift(ref, np.asarray(f.data, dtype=float), err=noise,
                                        return_error=True, upsample_factor="auto")
        est.append(chi2_shift_to_dxdy(xoff, yoff))
        err.append([ex, ey])
    return np.array(est), np.array(err), (time.perf_counter() - t0) / (len(stack.frames) - 1)


RUNNERS = {"astrosr": run_astrosr, "skimage": run_skimage, "skimage-best": run_skimage_best,
           "chi2_shift": run_chi2_shift}


# --------------------------------------------------------------------------- Cramér-Rao bound


def cramer_rao(truth, shifts, h=1e-3):
    """Two-frame CRB on (dx, dy) of frames 1.. relative to frame 0; array (n-1, 2) of sigmas.

    Model frames m_i = render(truth, shift_i) + sky; the derivative of m_i with
    respect to its shift by central differences (+-h px); per-pixel variance
    of the difference of frame i and frame 0: m_0 + m_i + 2 read_noise**2.
    """
    n = len(shifts)
    steps = np.array([[0, 0], [h, 0], [-h, 0], [0, h], [0, -h]], dtype=float)
    all_shifts = (shifts[:, None, :] + steps[None]).reshape(-1, 2)
    m = simulate.render(truth, all_shifts, scale=SCALE, psf=PSF).reshape(n, 5, *[s // SCALE for s in truth.shape])
    m = m + SKY
    m0 = m[0, 0]
    bounds = []
    for i in range(1, n):
        gx = (m[i, 1] - m[i, 2]) / (2 * h)
        gy = (m[i, 3] - m[i, 4]) / (2 * h)
        v = m0 + m[i, 0] + 2 * READ_NOISE ** 2
        g = np.stack([gx.ravel(), gy.ravel()])
        fisher = (g / v.ravel()) @ g.T
        bounds.append(np.sqrt(np.diag(np.linalg.inv(fisher))))
    return np.array(bounds)


# --------------------------------------------------------------------------- driver


def rms(a):
    return float(np.sqrt(np.mean(np.square(a))))


def bench_image(name, runs, log):
    """Per-run metrics for one image: dict method -> list of dicts."""
    results = {m: [] for m in METHODS}
    crbs = []
    for run in range(runs):
        truth = make_truth(name, seed=run)
        stack = simulate.observe(truth, n_frames=N_FRAMES, scale=SCALE, psf=PSF, sky=SKY,
                                 read_noise=READ_NOISE, seed=run)
        true = np.column_stack([stack.shifts["dx"].value, stack.shifts["dy"].value])
        true_rel = (true - true[0])[1:]
        crb = rms(cramer_rao(truth, true))
        crbs.append(crb)
        per_run = {}
        for method in METHODS:
            try:
                est, err, sec = RUNNERS[method](stack)
            except Exception as exc:  # a failed method is reported, not fatal
                log(f"  {name} run {run}: {method} failed: {type(exc).__name__}: {exc}")
                per_run[method] = dict(rms=np.nan, sec=np.nan, pull=np.full(1, np.nan))
                continue
            resid = est - true_rel
            # Pulls are pooled over runs: within one run every frame shares frame 0's
            # error, so the spread over one run's frames understates the errors.
            pull = np.full(resid.size, np.nan)
            if err is not None and np.all(err > 0):
                pull = (resid / err).ravel()
            per_run[method] = dict(rms=rms(resid), sec=sec, pull=pull)
        for method in METHODS:
            r = per_run[method]
            r["crb_ratio"] = r["rms"] / crb
            r["astrosr_ratio"] = r["rms"] / per_run["astrosr"]["rms"]
            results[method].append(r)
        log(f"  {name} run {run}: CRB {crb:.4f} px, " + ", ".join(
            f"{m} {per_run[m]['rms']:.4f}" for m in METHODS))
    return results, crbs


def median(rows, key):
    vals = np.array([r[key] for r in rows], dtype=float)
    return float(np.median(vals)) if np.isfinite(vals).any() else np.nan


def fmt(x, spec):
    """Format a number, or a right-aligned '-' of the same width where it is missing."""
    width = int(re.match(r"\d*", spec).group() or 0)
    return "-".rjust(width) if not np.isfinite(x) else format(x, spec)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs (seeds) per image, default 5")
    parser.add_argument("--images", nargs="+", choices=ALL_IMAGES, default=None,
                        help=f"subset of {ALL_IMAGES}")
    parser.add_argument("--quick", action="store_true", help="1 run, stars and galaxies only")
    parser.add_argument("--csv", type=Path, default=None, help="also write the rows to this CSV file")
    args = parser.parse_args(argv)

    runs = 1 if args.quick else args.runs
    images = args.images or (["stars", "galaxies"] if args.quick else ALL_IMAGES)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    print(f"astrosr registration benchmark: {N_FRAMES} frames of 128x128, scale {SCALE}, "
          f"Gaussian PSF sigma 1.2 input px, sky {SKY:g} e-, read noise {READ_NOISE:g} e-")
    print(f"machine: {os.cpu_count()} CPUs (os.cpu_count()); astrosr {getattr(astrosr, '__version__', '?')}, "
          f"numpy {np.__version__}, scikit-image {skimage.__version__}, "
          f"image_registration {getattr(image_registration, '__version__', '?')}")
    rows = []
    summaries = []
    for name in images:
        if name in REAL and not (DATA / REAL[name]).exists():
            print(f"note: skipping '{name}': {DATA / REAL[name]} not found")
            continue
        log(f"{name}: {runs} run(s)")
        results, crbs = bench_image(name, runs, log)
        crb = float(np.median(crbs))
        rows.append(dict(image=name, method="CRB (2-frame)", rms=crb, crb_ratio=1.0,
                         astrosr_ratio=crb / median(results["astrosr"], "rms"), ms=np.nan, pull=np.nan))
        for method in METHODS:
            r = results[method]
            rows.append(dict(image=name, method=method, rms=median(r, "rms"),
                             crb_ratio=median(r, "crb_ratio"), astrosr_ratio=median(r, "astrosr_ratio"),
                             ms=1e3 * median(r, "sec"),
                             pull=float(np.std(np.concatenate([x["pull"] for x in r])))))
        summaries.append((name, median(results["astrosr"], "crb_ratio"),
                          median(results["skimage-best"], "astrosr_ratio")))

    header = (f"{'image':<9} {'method':<14} {'RMS err [px]':>12} {'/CRB':>7} {'/astrosr':>9} "
              f"{'ms/frame':>9} {'pull std':>9}")
    print()
    print(f"Shift error of frames 1..15 vs frame 0, RMS over frames and both axes; "
          f"MEDIANS over {runs} run(s) per image")
    print(header)
    print("-" * len(header))
    last = None
    for r in rows:
        if last is not None and r["image"] != last:
            print()
        last = r["image"]
        print(f"{r['image']:<9} {r['method']:<14} {fmt(r['rms'], '12.4f')} {fmt(r['crb_ratio'], '7.2f')} "
              f"{fmt(r['astrosr_ratio'], '9.2f')} {fmt(r['ms'], '9.1f')} {fmt(r['pull'], '9.2f')}")
    print("-" * len(header))
    print("pull std: std of (estimate - truth) / reported error, pooled over runs (1 = calibrated); '-' where the "
          "method reports no errors or some are zero.")
    print("ms/frame: astrosr = register_stack time / 16 frames; peers = time per frame pair.")
    print()
    for name, crb_ratio, sk_ratio in summaries:
        print(f"{name}: astrosr RMS / CRB = {fmt(crb_ratio, '.2f')}, "
              f"skimage-best / astrosr = {fmt(sk_ratio, '.1f')}")

    if args.csv is not None:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "method", "rms_px", "rms_over_crb", "rms_over_astrosr",
                             "ms_per_frame", "pull_std", "runs"])
            for r in rows:
                writer.writerow([r["image"], r["method"], r["rms"], r["crb_ratio"], r["astrosr_ratio"],
                                 r["ms"], r["pull"], runs])
        print(f"\nrows written to {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
