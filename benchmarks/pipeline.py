"""Benchmark: the pipeline ``astrosr.MultiFrameSR`` against reconstruct alone and drizzle.

On the stacks of ``benchmarks/fusion.py`` (``astrosr.simulate.observe``: 16
frames of 128x128 from 512x512 truths, scale 4, Gaussian PSF sigma 1.2 input
pixels, sky 100 e- subtracted from every frame, read noise 5 e-), per image
and seeded run, compares

1. the ``drizzle`` package (``drizzle.resample.Drizzle``, square kernel,
   called exactly as ``benchmarks/fusion.py`` calls it: its pixfrac, the
   inverse-variance frame weights) on the shifts from
   ``astrosr.register_stack``;
2. ``astrosr.fuse(method="reconstruct")`` with the same shifts and the same
   PSF as the pipeline (defaults: rejection on, converged stopping rule);
3. ``astrosr.MultiFrameSR(scale=4, psf=..., refine=...).run(frames)``: the
   whole pipeline (registration, PSF, fusion, refinement, consistency with
   the frames), timed end to end; the per-step ``timings_`` are recorded.
   The refinement model is loaded once before the runs (its load time is
   printed apart), so every run times the same work.

The PSF (``--psf``) is the simulated one (``true``, default) or the stack's
own estimate (``estimate``: ``astrosr.psf.stack_psf``, which the
pipeline computes itself and reconstruct is given). Frame 0 is at dither
(0, 0), so the registered shifts (relative to frame 0) and the pipeline's
output are on the truth's grid.

Scores on the interior (16 fine pixels from each edge, as in fusion.py):
PSNR and SSIM against the truth, the reduced chi-square ``CHI2RED`` of the
frames against the image (from its header; none for the package), median
relative aperture-photometry error of isolated stars (radius 4 input pixels,
at the true positions, as in ``benchmarks/single_frame.py``), total-flux
ratio, and wall time. Medians over ``--runs`` seeds; a "targets" line per
image checks the pipeline's goals: PSNR at least 0.5 dB above reconstruct
and 4 dB above the drizzle package, chi2 <= 1.3, photometry within 1%,
under 60 s.

Run from the repository root::

    python benchmarks/pipeline.py                          # 3 runs, all images, refine-x1
    python benchmarks/pipeline.py --images hdf --runs 1 --refine none
    python benchmarks/pipeline.py --psf estimate --json pipeline.json
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import astrosr
from astrosr.fusion import fuse
from astrosr.metrics import flux_ratio, isolated_stars, psnr
from astrosr.psf import GaussianPSF
from astrosr.pipeline import DEFAULT_REFINE_MODEL

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (ALL_IMAGES, N_FRAMES, READ_NOISE, SCALE, SKY, available,  # noqa: E402
                     make_truth, print_table)
from fusion import MARGIN, PIXFRAC, drizzle_package, observed  # noqa: E402
from single_frame import RADIUS, score  # noqa: E402

METHODS = ["drizzle package", "reconstruct", "pipeline"]
TARGETS = dict(vs_reconstruct=0.5, vs_package=4.0, chi2=1.3, phot=0.01, seconds=60.0)


def load_refine(refine):
    """The refinement model (None for "none"), loaded once; and the seconds it took."""
    if refine is None or refine.lower() == "none":
        return None, 0.0
    from astrosr.pipeline import _load_model

    t0 = time.perf_counter()
    model = _load_model(refine)
    return model, time.perf_counter() - t0


def estimated_psf(frames, shifts):
    """The stack's own PSF estimate, as the pipeline makes it (ePSF, else a profile fit)."""
    from astrosr.psf import stack_psf

    return stack_psf(frames, shifts, scale=SCALE)[0]


def bench_run(name, run, *, model, psf_mode, ensemble, sigma, log):
    """Scores of the three methods on one seeded stack of one image."""
    truth = make_truth(name, seed=run)
    stars = isolated_stars(truth, radius=RADIUS)
    stack = observed(truth, seed=run, psf=GaussianPSF(sigma))
    out = {"run": run, "n_stars": len(stars), "sigma": sigma}

    t0 = time.perf_counter()
    reg = astrosr.register_stack(stack.frames)
    out["register_sec"] = time.perf_counter() - t0
    shifts = np.column_stack([reg["dx"].value, reg["dy"].value])
    true = np.column_stack([stack.shifts["dx"].value, stack.shifts["dy"].value])
    out["shift_rms"] = float(np.sqrt(np.mean((shifts - (true - true[0])) ** 2)))

    def scored(image, seconds, chi2=np.nan):
        s = score(image, truth, stars, seconds)
        s.update(flux=flux_ratio(image, truth, margin=MARGIN), sec=seconds, chi2=float(chi2))
        return s

    t0 = time.perf_counter()
    image = drizzle_package(stack.frames, shifts)
    out["drizzle package"] = scored(image, time.perf_counter() - t0)

    t0 = time.perf_counter()
    if psf_mode == "estimate":
        try:
            psf = estimated_psf(stack.frames, reg)
        except ValueError as exc:  # too few stars: the pipeline would stop the same way
            log(f"  {name} run {run}: no PSF estimate, run skipped: {exc}")
            out["error"] = str(exc)
            return out
        out["psf_sec"] = time.perf_counter() - t0
        out["psf"] = repr(psf)
    else:
        psf = stack.psf
    hr = fuse(stack.frames, reg, scale=SCALE, method="reconstruct", psf=psf)
    out["reconstruct"] = scored(hr.data, time.perf_counter() - t0, hr.meta.get("CHI2RED", np.nan))

    sr = astrosr.MultiFrameSR(scale=SCALE, psf="estimate" if psf_mode == "estimate" else psf,
                              refine=model, ensemble=ensemble)
    t0 = time.perf_counter()
    hr = sr.run(stack.frames)
    out["pipeline"] = scored(hr.data, time.perf_counter() - t0, hr.meta.get("CHI2RED", np.nan))
    out["pipeline"]["timings"] = {k: float(v) for k, v in sr.timings_.items()}
    out["candidate"] = sr.candidate_
    out["heldout"] = sr.scores_.reduced()
    # Each candidate's PSNR from the mean of its fold images (the full-stack versions of the
    # candidates not returned are not made): how well the held-out score ranks them.
    out["fold_psnr"] = {c: psnr(np.mean(f, axis=0), truth, margin=MARGIN)
                        for c, f in sr.fold_images_.items()}
    out["significance"] = {c: sr.scores_.significance(c, sr.candidate_)
                           for c in sr.scores_.names}

    log(f"  {name} run {run}: " + ", ".join(
        f"{m} {out[m]['psnr']:.2f} dB {out[m]['sec']:.1f} s" for m in METHODS)
        + f"; pipeline chi2 {out['pipeline']['chi2']:.3f}, steps "
        + ", ".join(f"{k} {v:.1f}s" for k, v in sr.timings_.items())
        + f"; {len(stars)} isolated stars")
    return out


#: Which benchmark images the shipped refine-x1 never saw in training (its model card:
#: FusedPairs of synthetic skies and Hubble Deep Field crops).
HELD_OUT_NOTE = ("spitzer and 2mass are real images never trained on; stars and galaxies are "
                 "skies of astrosr.simulate.make_sky (the family of the training skies, other "
                 "seeds); hdf was trained on (crops of it)")
CANDIDATE_ORDER = ("fusion", "refined", "discrepancy", "converged")
RANKING_HEADER = (f"{'image':<13} {'returned':<12} "
                  + " ".join(f"{c[:5] + ' chi2':>10} {c[:5] + ' dB':>8}" for c in CANDIDATE_ORDER)
                  + f" {'best PSNR':>10}")


def table_lines(label, runs, skipped):
    """The main table's lines for one image and PSF."""
    if not runs:
        return [f"{label:<13} no run scored (see the log)"]
    pkg, rec, pipe = (median(runs, m, "psnr") for m in METHODS)
    goals = "; ".join(f"{what} {value} {verdict(met)}" for what, value, met in targets(runs))
    return [f"{label:<13} {pkg:8.2f} {rec:8.2f} "
            f"{median_delta(runs, 'reconstruct', 'drizzle package'):+6.2f} "
            f"{pipe:8.2f} {median_delta(runs, 'pipeline', 'reconstruct'):+6.2f} "
            f"{median_delta(runs, 'pipeline', 'drizzle package'):+6.2f} "
            f"{median(runs, 'pipeline', 'ssim'):6.3f} {median(runs, 'pipeline', 'chi2'):6.3f} "
            f"{percent(median(runs, 'reconstruct', 'phot')):>7} "
            f"{percent(median(runs, 'pipeline', 'phot')):>7} "
            f"{median(runs, 'pipeline', 'flux'):7.4f} {median(runs, 'pipeline', 'sec'):7.1f}",
            f"{'':<13} targets" + (f" ({skipped} run(s) skipped)" if skipped else "")
            + f": {goals}"]


def ranking_lines(label, runs):
    """Per run: each candidate's held-out chi-square beside its PSNR, and the one returned."""
    lines = []
    for r in runs:
        cells = []
        for c in CANDIDATE_ORDER:
            if c in r["heldout"]:
                cells.append(f"{r['heldout'][c]:10.5f} {r['fold_psnr'][c]:8.2f}")
            else:
                cells.append(f"{'-':>10} {'-':>8}")
        best = max(r["fold_psnr"], key=r["fold_psnr"].get)
        gain = r["fold_psnr"][best] - r["fold_psnr"][r["candidate"]]
        lines.append(f"{label + ' #' + str(r['run']):<13} {r['candidate']:<12} "
                     + " ".join(cells)
                     + f" {'yes' if best == r['candidate'] else f'{best[:5]} +{gain:.2f}':>10}")
    return lines


def median(runs, method, key):
    return float(np.median([r[method][key] for r in runs]))


def median_delta(runs, a, b, key="psnr"):
    """Median over runs of the paired difference ``a - b``."""
    return float(np.median([r[a][key] - r[b][key] for r in runs]))


def percent(x):
    """A fraction as a percentage; "n/a" for NaN (no isolated star to measure)."""
    return "n/a" if np.isnan(x) else f"{100 * x:.2f}%"


def targets(runs):
    """The pipeline's goals on one image: (label, value, met) tuples (met None: not measured)."""
    d_rec = median_delta(runs, "pipeline", "reconstruct")
    d_pkg = median_delta(runs, "pipeline", "drizzle package")
    chi2 = median(runs, "pipeline", "chi2")
    phot = median(runs, "pipeline", "phot")
    sec = median(runs, "pipeline", "sec")
    t = TARGETS
    return [(f"+{t['vs_reconstruct']:g} dB vs reconstruct", f"{d_rec:+.2f}",
             d_rec >= t["vs_reconstruct"]),
            (f"+{t['vs_package']:g} dB vs package", f"{d_pkg:+.2f}", d_pkg >= t["vs_package"]),
            (f"chi2 <= {t['chi2']:g}", f"{chi2:.3f}",
             None if np.isnan(chi2) else chi2 <= t["chi2"]),
            (f"phot <= {100 * t['phot']:g}%", percent(phot),
             None if np.isnan(phot) else phot <= t["phot"]),
            (f"< {t['seconds']:g} s", f"{sec:.1f}", sec < t["seconds"])]


def verdict(met):
    return "n/a" if met is None else "met" if met else "MISSED"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if np.isnan(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


TABLE_NOTE = (
    'pkg: the drizzle package; rec: astrosr.fuse reconstruct; SR: MultiFrameSR (SSIM, chi2, '
    "flux and seconds are the pipeline's). vs: median over runs of the paired PSNR "
    'difference. chi2: CHI2RED of the frames against the image; phot: median |aperture flux -'
    " truth's| / truth's of isolated stars, radius 4 input px (n/a: none isolated); flux: "
    "total over the scored region / the truth's; SR s: the pipeline end to end, registration "
    'included.')


RANKING_NOTE = (
    'held-out chi2: reduced chi-square of the frames of each fold predicted by the candidate '
    'made from the other folds (PCHI2* in the header); dB: PSNR of the mean of its fold '
    'images against the truth; best PSNR: whether the returned one has the best fold PSNR, '
    'and what the best gives more.')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs (seeds) per image, default 3")
    parser.add_argument("--images", nargs="+", choices=ALL_IMAGES, default=None)
    parser.add_argument("--refine", default=DEFAULT_REFINE_MODEL,
                        help="refinement model: a shipped name, a saved model's stem, or 'none' "
                             "(default: %(default)s)")
    parser.add_argument("--psf", choices=["true", "estimate"], default="true",
                        help="the simulated PSF (default) or the stack's own estimate")
    parser.add_argument("--ensemble", action="store_true",
                        help="8-fold flip/rotation self-ensemble in the refinement")
    parser.add_argument("--sigma", type=float, nargs="+", default=[1.2],
                        help="PSF sigmas in input px (default 1.2; 0.5 is undersampled)")
    parser.add_argument("--json", metavar="PATH", help="write the raw per-run numbers here")
    args = parser.parse_args(argv)
    images = [i for i in (args.images or ALL_IMAGES) if available(i)]

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    try:
        model, load_sec = load_refine(args.refine)
    except FileNotFoundError as exc:
        parser.error(f"--refine {args.refine}: {exc} (not shipped in astrosr/data and no saved "
                     f"model with that stem; --refine none runs the pipeline without refinement)")
    refine_name = "none" if model is None else model.name
    print(f"astrosr pipeline benchmark: {N_FRAMES} frames of 128x128 -> 512x512, scale {SCALE}, "
          f"Gaussian PSF sigma {'/'.join(f'{x:g}' for x in args.sigma)} input px, "
          f"sky {SKY:g} e- (subtracted), read noise "
          f"{READ_NOISE:g} e-; registered shifts; drizzle package pixfrac {PIXFRAC}")
    print(f"pipeline: MultiFrameSR(scale={SCALE}, psf={args.psf}, refine={refine_name}, "
          f"ensemble={args.ensemble})" + (f"; model loaded in {load_sec:.1f} s (not in the runs)"
                                          if model is not None else ""))
    print(f"machine: {os.cpu_count()} CPUs; astrosr {astrosr.__version__}, numpy {np.__version__}; "
          f"medians over {args.runs} run(s); scored {MARGIN} fine px inside the edges", flush=True)

    results, lines, ranking = {}, [], []
    for sigma in args.sigma:
        for name in images:
            log(f"{name}, PSF sigma {sigma:g}: {args.runs} run(s)")
            runs = [bench_run(name, run, model=model, psf_mode=args.psf,
                              ensemble=args.ensemble, sigma=sigma, log=log)
                    for run in range(args.runs)]
            results[f"{name} sigma={sigma:g}"] = runs
            scored = [r for r in runs if "error" not in r]
            label = f"{name} {sigma:g}"
            lines += table_lines(label, scored, len(runs) - len(scored))
            ranking += ranking_lines(label, scored)
    header = (f"{'image':<13} {'pkg PSNR':>8} {'rec PSNR':>8} {'vs pkg':>6} {'SR PSNR':>8} "
              f"{'vs rec':>6} {'vs pkg':>6} {'SSIM':>6} {'chi2':>6} {'phot rec':>7} {'phot SR':>7} "
              f"{'flux':>7} {'SR s':>7}")
    print()
    print_table(header, lines, TABLE_NOTE)
    print(f"held out: {HELD_OUT_NOTE}")
    print()
    print_table(RANKING_HEADER, ranking, RANKING_NOTE)
    if args.json:
        setup = dict(n_frames=N_FRAMES, scale=SCALE, sky=SKY, read_noise=READ_NOISE,
                     margin=MARGIN, pixfrac_package=PIXFRAC, psf=args.psf, refine=refine_name,
                     ensemble=args.ensemble, model_load_sec=load_sec, cpus=os.cpu_count(),
                     astrosr=astrosr.__version__, targets=TARGETS)
        with open(args.json, "w") as f:
            json.dump(_jsonable({"setup": setup, "images": results}), f, indent=1)
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
