"""Benchmark: fusion of dithered stacks onto a 4x finer grid, against named peers.

On simulated 16-frame, scale-4 stacks (``astrosr.simulate.observe``: Gaussian
PSF sigma 1.2 input pixels, sky 100 e-, read noise 5 e-; frames 128x128 from
512x512 truths; the sky level is subtracted from every frame for every
method), compares

1. ``astrosr.fuse(method="drizzle", pixfrac=0.7)`` (rejection off: the peer has none);
2. the ``drizzle`` package (``drizzle.resample.Drizzle``, square kernel, the
   same pixfrac, the same inverse-variance weights, ``iscale = 1/16``);
3. ``astrosr.fuse(method="shift_and_add")``;
4. ``astrosr.fuse(method="reconstruct", psf=...)`` (defaults: rejection on);
5. bicubic upsampling of frame 0 (``scipy.ndimage.zoom(order=3,
   grid_mode=True)`` / 16, then moved onto the reference grid);

with the true shifts and with the shifts from ``astrosr.register_stack``.
Scores on the interior (16 fine pixels from each edge): PSNR against the
truth, PSNR against the PSF-blurred truth, total-flux ratio, and wall time.
Medians over ``--runs`` seeds. A last table checks cosmic-ray rejection:
0.5% of the pixels of every frame hit; the hits rejected, and the output
pixels raised by more than 3 sigma by the hits that were not (the frames
with and without hits, masked alike with what the rejection flagged, fused
without rejection: their difference is what survives of the hits).

Run from the repository root::

    python benchmarks/fusion.py                 # 3 runs, all images
    python benchmarks/fusion.py --quick         # 1 run, stars and hdf
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

import astrosr
from astrosr import simulate
from astrosr.fusion import fuse
from astrosr.metrics import flux_ratio, psnr
from astrosr.nddata import frame_arrays

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (ALL_IMAGES, N_FRAMES, PSF, READ_NOISE, SCALE, SKY, available,  # noqa: E402
                     make_truth)

PIXFRAC = 0.7
MARGIN = 16
METHODS = ["astrosr drizzle", "drizzle package", "shift_and_add", "astrosr reconstruct",
           "bicubic frame 0"]


def drizzle_package(frames, shifts):
    """The drizzle package's square kernel with the same inputs as astrosr's drizzle."""
    from drizzle.resample import Drizzle

    ny, nx = frames[0].shape
    d = Drizzle(kernel="square", out_shape=(SCALE * ny, SCALE * nx), fillval=0.0)
    yy, xx = np.indices((ny, nx), dtype=float)
    for f, (dx, dy) in zip(frames, shifts):
        data, var, good = frame_arrays(f)
        w = np.where(good, 1.0 / np.median(var[good]), 0.0).astype(np.float32)
        pixmap = np.dstack([SCALE * (xx - dx + 0.5) - 0.5, SCALE * (yy - dy + 0.5) - 0.5])
        d.add_image(data.astype(np.float32), exptime=1.0, pixmap=pixmap, weight_map=w,
                    pixfrac=PIXFRAC, iscale=1.0 / SCALE ** 2, in_units="cps")
    return d.out_img


def bicubic(frame, shift):
    """Frame 0 zoomed (pixel edges aligned), per-pixel flux, moved onto the reference grid."""
    up = ndimage.zoom(frame.data, SCALE, order=3, grid_mode=True, mode="nearest") / SCALE ** 2
    dx, dy = shift
    return ndimage.shift(up, (-SCALE * dy, -SCALE * dx), order=3, mode="nearest")


def run_methods(stack, shifts):
    """Images (and seconds) of every method for one stack and one set of shifts."""
    table = np.column_stack([shifts[:, 0], shifts[:, 1]])
    runners = {
        "astrosr drizzle": lambda: fuse(stack.frames, table, scale=SCALE, pixfrac=PIXFRAC,
                                        reject=False).data,
        "drizzle package": lambda: drizzle_package(stack.frames, table),
        "shift_and_add": lambda: fuse(stack.frames, table, scale=SCALE, method="shift_and_add",
                                      reject=False).data,
        "astrosr reconstruct": lambda: fuse(stack.frames, table, scale=SCALE, method="reconstruct",
                                            psf=stack.psf).data,
        "bicubic frame 0": lambda: bicubic(stack.frames[0], table[0]),
    }
    out = {}
    for name, run in runners.items():
        t0 = time.perf_counter()
        image = run()
        out[name] = (image, time.perf_counter() - t0)
    return out


def observed(truth, seed, psf=PSF):
    stack = simulate.observe(truth, n_frames=N_FRAMES, scale=SCALE, psf=psf, sky=SKY,
                             read_noise=READ_NOISE, seed=seed)
    for f in stack.frames:
        f.data = f.data - SKY
    return stack


def with_cosmic_rays(stack, rate, seed):
    """The same frames (same noise) with cosmic-ray hits added; returns frames and hit count."""
    rng = np.random.default_rng(seed)
    frames, maps = [], []
    for f in stack.frames:
        hits = simulate._cosmic_rays(rng, f.shape, rate)  # the simulator's own hit model
        maps.append(hits > 0)
        g = f.copy()
        g.data = f.data + hits
        frames.append(g)
    return frames, np.array(maps)


def bench_image(name, runs, log):
    rows = {(m, k): [] for m in METHODS for k in ("true", "registered")}
    for run in range(runs):
        truth = make_truth(name, seed=run)
        blurred = simulate.render(truth, [[0.0, 0.0]], scale=1, psf=PSF.kernel(SCALE))[0]
        stack = observed(truth, seed=run)
        true = np.column_stack([stack.shifts["dx"].value, stack.shifts["dy"].value])
        reg = astrosr.register_stack(stack.frames)
        # Registered shifts are relative to frame 0: put them on the true reference.
        measured = np.column_stack([reg["dx"].value, reg["dy"].value]) + true[0]
        for kind, shifts in (("true", true), ("registered", measured)):
            for method, (image, sec) in run_methods(stack, shifts).items():
                rows[(method, kind)].append(dict(
                    psnr=psnr(image, truth, margin=MARGIN),
                    psnr_blur=psnr(image, blurred, margin=MARGIN),
                    flux=flux_ratio(image, truth, margin=MARGIN), sec=sec))
        log(f"  {name} run {run}: " + ", ".join(
            f"{m} {rows[(m, 'true')][-1]['psnr']:.2f} dB" for m in METHODS))
    return rows


def masked_like(frames, rejected):
    """Copies of ``frames`` with ``rejected`` as their masks."""
    out = []
    for f, r in zip(frames, rejected):
        g = f.copy()
        g.mask = r
        out.append(g)
    return out


def cosmic_ray_check(name, log):
    """Output pixels where 0.5% cosmic-ray hits per frame leave more than 3 sigma.

    The rejection runs on the frames with hits; then the frames with hits and
    the clean frames, both masked with the pixels it rejected, are fused
    without rejection: they differ only by the hits that were not rejected,
    so their difference is what survives of the hits.
    """
    truth = make_truth(name, seed=0)
    clean = observed(truth, seed=0)
    hit_frames, maps = with_cosmic_rays(clean, 0.005, seed=99)
    inner = np.zeros((SCALE * 128, SCALE * 128), bool)
    inner[MARGIN:-MARGIN, MARGIN:-MARGIN] = True
    out = {}
    for method, kw in (("drizzle", dict(pixfrac=PIXFRAC)), ("reconstruct", dict(psf=PSF))):
        rejected = fuse(hit_frames, clean.shifts, scale=SCALE, method=method, **kw).rejected
        a = fuse(masked_like(clean.frames, rejected), clean.shifts, scale=SCALE, method=method,
                 reject=False, **kw)
        b = fuse(masked_like(hit_frames, rejected), clean.shifts, scale=SCALE, method=method,
                 reject=False, **kw)
        sigma = np.sqrt(a.uncertainty.array)
        z = (b.data - a.data) / np.where(sigma > 0, sigma, np.inf)
        out[method] = (int(maps.sum()), int((maps & rejected).sum()), int(rejected.sum()),
                       int(np.sum(z[inner] > 3)))
        log(f"  {name} cosmic rays, {method}: {out[method]}")
    return out


def median(rows, key):
    return float(np.median([r[key] for r in rows]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs (seeds) per image, default 3")
    parser.add_argument("--images", nargs="+", choices=ALL_IMAGES, default=None)
    parser.add_argument("--quick", action="store_true", help="1 run, stars and hdf only")
    args = parser.parse_args(argv)
    runs = 1 if args.quick else args.runs
    images = [i for i in (args.images or (["stars", "hdf"] if args.quick else ALL_IMAGES))
              if available(i)]

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    print(f"astrosr fusion benchmark: {N_FRAMES} frames of 128x128 -> 512x512, scale {SCALE}, "
          f"Gaussian PSF sigma 1.2 input px, sky {SKY:g} e- (subtracted), read noise {READ_NOISE:g} e-, "
          f"pixfrac {PIXFRAC}")
    print(f"machine: {os.cpu_count()} CPUs; astrosr {astrosr.__version__}, numpy {np.__version__}; "
          f"medians over {runs} run(s); scored {MARGIN} fine px inside the edges")
    header = (f"{'image':<9} {'method':<20} {'shifts':<10} {'PSNR truth':>10} {'vs pkg':>7} "
              f"{'PSNR blur':>9} {'flux':>7} {'time s':>7} {'/pkg':>6}")
    lines, cr_lines = [], []
    for name in images:
        log(f"{name}: {runs} run(s)")
        rows = bench_image(name, runs, log)
        ref_psnr = median(rows[("drizzle package", "true")], "psnr")
        ref_sec = median(rows[("drizzle package", "true")], "sec")
        for kind in ("true", "registered"):
            for m in METHODS:
                r = rows[(m, kind)]
                lines.append(f"{name:<9} {m:<20} {kind:<10} {median(r, 'psnr'):10.2f} "
                             f"{median(r, 'psnr') - ref_psnr:+7.2f} {median(r, 'psnr_blur'):9.2f} "
                             f"{median(r, 'flux'):7.4f} {median(r, 'sec'):7.2f} "
                             f"{median(r, 'sec') / ref_sec:6.2f}")
        lines.append("")
        cr = cosmic_ray_check(name, log)
        for method, (n_hit, n_caught, n_rej, n_out) in cr.items():
            cr_lines.append(f"{name:<9} {method:<12} {n_hit:>9} {n_caught:>9} {n_rej:>9} {n_out:>12}")
    print()
    print(header)
    print("-" * len(header))
    print("\n".join(lines))
    print("vs pkg: PSNR minus the drizzle package's (true shifts); /pkg: time over the package's.")
    print("flux: total over the scored region / the truth's.")
    print()
    print(f"{'image':<9} {'method':<12} {'CR pixels':>9} {'caught':>9} {'rejected':>9} "
          f"{'>3 sigma out':>12}")
    print("\n".join(cr_lines))
    print("caught: hit pixels rejected; rejected: all pixels rejected; >3 sigma out: output pixels "
          "(scored region) where the hits not caught raise the result by > 3 sigma (frames with and "
          "without hits, masked alike, fused without rejection).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
