"""Benchmark: cost and accuracy of ``astrosr.register_stack`` on frames up to 2048x2048.

For each frame size (``--sizes``) and sky (``--skies``), a seeded stack of
``--frames`` pure-shift frames (``simulate.default_shifts``: uniform in +-1.5
px, frame 0 at the origin) is rendered from a fine-grid truth twice the
frame's size (``simulate.render`` at scale 2, Gaussian PSF sigma 1.2 input
px, sky 100 e-, read noise 5 e-, Poisson noise; `VarianceUncertainty` the
model's variance; rendered 16 px larger each side and cut, since near the
truth's edges the mirror beyond them moves against the dither) and
registered with ``astrosr.register_stack(frames)``.
Skies (densities per frame pixel, so that every size shows the same kind of
field):

``stars``
    A star field, one star per 1500 frame pixels (power-law fluxes 200 to
    2e5 e-): most pixels are empty sky.
``nebula``
    Extended emission (``make_sky``'s log-normal field, 30 e- per fine
    pixel), 8 galaxies and one star per 6000 frame pixels: the information
    is spread over the frame.

Columns: seconds per frame and per megapixel per frame (the median of
``--repeats`` timed calls; target <= 0.5 s/MPix/frame on 2 cores), the
process's CPU seconds per megapixel per frame (``cpu``: on a machine that
other work loads, the wall time is not the code's alone), the
accuracy ``rms / err`` (RMS over frames 1.. and both axes of the error of
``dx, dy`` against the truth, over the median stated error ``dx_err,
dy_err``; target <= 1.5), ``rms / CRB`` (the same over the median two-frame
Cramér-Rao bound of frame i relative to frame 0, with a flux factor and a
background as nuisance parameters, as in ``benchmarks/registration.py``;
derivatives by forward differences of ``simulate.render``, 1e-3 px), the
RMS pull ``sqrt(mean(((est - true) / err)**2))`` (honest errors: ~1; not the
pulls' scatter about their mean, which leaves out the reference frame's own
error, common to every frame and half of each error), the
fraction of the frames' pixels that the refinement used (``table.meta
["registration_pixels"]`` when the registration records it) and the peak
resident memory of the process that registered (``resource.getrusage``;
each size runs in a fresh process, which loads the stack from a cache file
written by another, so that making the stack does not count).

Run from the repository root::

    python benchmarks/registration_scale.py                      # all sizes, 1 repeat
    python benchmarks/registration_scale.py --sizes 256 512 --repeats 3
    python benchmarks/registration_scale.py --profile 1024       # cProfile at 1024x1024
    python benchmarks/registration_scale.py --sizes 512 1024 --every-pixel   # for comparison

Cached stacks live in ``--cache`` (default: the temporary directory).
"""

import argparse
import cProfile
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SCALE = 2
PSF_SIGMA = 1.2
SKY = 100.0
READ_NOISE = 5.0
SKIES = ("stars", "nebula")
MARGIN = 16


def make_truth(kind, size, seed):
    """Fine-grid truth (``SCALE * size`` square) of a named sky, electrons per fine pixel."""
    from astrosr import simulate

    fine = (SCALE * size, SCALE * size)
    if kind == "stars":
        return simulate.make_sky(fine, n_stars=max(size * size // 1500, 10), n_galaxies=0,
                                 nebula=False, seed=seed)
    if kind == "nebula":
        return simulate.make_sky(fine, n_stars=max(size * size // 6000, 5), n_galaxies=8,
                                 nebula=True, nebula_flux=30.0, seed=seed)
    raise ValueError(f"unknown sky {kind!r}; choose from {SKIES}")


def make_stack(kind, size, n_frames, seed):
    """Frames, variances, true shifts and the two-frame CRB of frames 1.. (n_frames - 1, 2)."""
    from astrosr import simulate
    from astrosr.psf import GaussianPSF

    # Rendered with a margin of MARGIN frame pixels, then cut: within a few pixels of the
    # truth's edges the mirror beyond them moves the other way when a frame is dithered.
    truth = make_truth(kind, size + 2 * MARGIN, seed)
    psf = GaussianPSF(PSF_SIGMA)
    shifts = simulate.default_shifts(n_frames, seed=1000 + seed)
    cut = (slice(None), slice(MARGIN, MARGIN + size), slice(MARGIN, MARGIN + size))

    def render(at):
        return np.clip(simulate.render(truth, at, scale=SCALE, psf=psf)[cut], 0.0, None)

    model = render(shifts)
    rng = np.random.default_rng(seed)
    data = np.empty(model.shape, dtype=np.float32)
    for i, m in enumerate(model):
        data[i] = rng.poisson(m + SKY) + rng.normal(0.0, READ_NOISE, m.shape)
    crb = np.empty((n_frames - 1, 2))
    h = 1e-3
    derivatives = []
    for axis in range(2):
        moved = shifts.copy()
        moved[:, axis] += h
        derivatives.append((render(moved) - model) / h)
    var0 = model[0] + SKY + READ_NOISE ** 2
    for i in range(1, n_frames):
        w = 1.0 / (var0 + model[i] + SKY + READ_NOISE ** 2)
        cols = [derivatives[0][i], derivatives[1][i], model[i], np.ones_like(model[i])]
        fisher = np.array([[np.sum(w * a * b) for b in cols] for a in cols])
        crb[i - 1] = np.sqrt(np.diag(np.linalg.inv(fisher))[:2])
    var = (model + SKY + READ_NOISE ** 2).astype(np.float32)
    return data, var, shifts, crb


def cached_stack(cache, kind, size, n_frames, seed):
    """Path of the stack's cache file, written by a separate process when absent."""
    path = Path(cache) / f"regscale2_{kind}_{size}_{n_frames}_{seed}.npz"
    if not path.exists():
        subprocess.run([sys.executable, __file__, "--_make", str(path), kind, str(size),
                        str(n_frames), str(seed)], check=True)
    return path


def _write_stack(path, kind, size, n_frames, seed):
    data, var, shifts, crb = make_stack(kind, size, n_frames, seed)
    tmp = Path(str(path) + ".tmp.npz")
    np.savez(tmp, data=data, var=var, shifts=shifts, crb=crb)
    os.replace(tmp, path)


def frames_of(path):
    """The cached stack as a list of CCDData with variance, and its truth."""
    from astropy import units as u
    from astropy.nddata import CCDData, VarianceUncertainty

    with np.load(path) as f:
        data, var, shifts, crb = f["data"], f["var"], f["shifts"], f["crb"]
    frames = [CCDData(d.astype(float), unit=u.electron,
                      uncertainty=VarianceUncertainty(v.astype(float))) for d, v in zip(data, var)]
    return frames, shifts, crb


def measure(path, repeats, profile=None, every_pixel=False):
    """Time ``register_stack`` on a cached stack; a dict of the table's columns."""
    import astrosr
    import astrosr.registration

    if every_pixel:  # the path of smaller frames: every pixel, a template filtered per frame
        astrosr.registration.MIN_PIXELS = 10 ** 12

    frames, shifts, crb = frames_of(path)
    times, cpu, table = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        if profile is not None:
            prof = cProfile.Profile()
            table = prof.runcall(astrosr.register_stack, frames)
        else:
            table = astrosr.register_stack(frames)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    if profile is not None:
        prof.dump_stats(profile)
    est = np.column_stack([table["dx"].value, table["dy"].value])[1:]
    err = np.column_stack([table["dx_err"].value, table["dy_err"].value])[1:]
    resid = est - shifts[1:]
    used = table.meta.get("registration_pixels")
    return {"seconds": float(np.median(times)), "cpu": float(np.median(cpu)),
            "rms_err": float(np.sqrt(np.mean(resid ** 2)) / np.median(err)),
            "rms_crb": float(np.sqrt(np.mean(resid ** 2)) / np.median(crb)),
            "err_crb": float(np.median(err) / np.median(crb)),
            "pull": float(np.sqrt(np.mean((resid / err) ** 2))),
            "used": None if used is None else float(used),
            "method": str(table.meta.get("registration", "")),
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def run_one(path, repeats, profile=None, every_pixel=False):
    """`measure` in a fresh process (its own peak memory); the dict it prints."""
    cmd = [sys.executable, __file__, "--_measure", str(path), str(repeats),
           "1" if every_pixel else "0", profile or ""]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--skies", nargs="+", default=list(SKIES), choices=SKIES)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=tempfile.gettempdir())
    parser.add_argument("--profile", type=int, metavar="SIZE",
                        help="profile register_stack at this size (first sky) and print the top")
    parser.add_argument("--every-pixel", action="store_true",
                        help="register on every pixel (the path of frames below "
                             "astrosr.registration.MIN_PIXELS), for comparison")
    args = parser.parse_args(argv)
    if args.profile:
        path = cached_stack(args.cache, args.skies[0], args.profile, args.frames, args.seed)
        stats = str(Path(args.cache) / "regscale.prof")
        run_one(path, 1, stats, args.every_pixel)
        pstats.Stats(stats).sort_stats("cumulative").print_stats(35)
        pstats.Stats(stats).sort_stats("tottime").print_stats(25)
        return
    print(f"register_stack, {args.frames} frames, median of {args.repeats}; "
          f"{os.cpu_count()} CPUs visible" + ("; every pixel" if args.every_pixel else ""))
    head = (f"{'sky':7s} {'size':>5s} {'s/frame':>8s} {'s/MPix/fr':>9s} {'cpu':>6s} "
            f"{'rms/err':>8s} "
            f"{'rms/CRB':>8s} {'err/CRB':>8s} {'pull':>5s} {'used':>6s} {'RSS MB':>7s}")
    print(head)
    print("-" * len(head))
    for kind in args.skies:
        for size in args.sizes:
            path = cached_stack(args.cache, kind, size, args.frames, args.seed)
            r = run_one(path, args.repeats, every_pixel=args.every_pixel)
            per_frame = r["seconds"] / args.frames
            used = "-" if r["used"] is None else f"{r['used']:.3f}"
            cpu = r["cpu"] / args.frames / (size * size / 1e6)
            print(f"{kind:7s} {size:5d} {per_frame:8.3f} {per_frame / (size * size / 1e6):9.3f} "
                  f"{cpu:6.3f} "
                  f"{r['rms_err']:8.2f} {r['rms_crb']:8.2f} {r['err_crb']:8.2f} "
                  f"{r['pull']:5.2f} {used:>6s} {r['rss_mb']:7.0f}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_make":
        _write_stack(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]),
                     int(sys.argv[6]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--_measure":
        result = measure(sys.argv[2], int(sys.argv[3]), sys.argv[5] or None,
                         every_pixel=sys.argv[4] == "1")
        print(json.dumps(result))
    else:
        main()
