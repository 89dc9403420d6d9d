"""Benchmark: are the uncertainties of ``astrosr.MultiFrameSR`` and of its reconstruction right?

The issue's protocol: ``--realisations`` (default 12) noise realisations of
one stack of ``--frames`` (default 8) frames of 128x128 (scale 4, Gaussian
PSF sigma 1.2 input px, sky 100 e- subtracted, read noise 5 e-, the same
dithers every time) of a 512x512 truth. For each realisation,
``MultiFrameSR(refine=None)`` (the reconstruction, with the held-out folds,
``--folds``) gives an image with two uncertainties: the fusion's own (the
inverse Fisher diagonal, ``sr.fused_``) and the one from the folds (the
jackknife plus the spread of the deconvolutions held to the frames,
`astrosr.validation.fold_variance`). ``--refine NAME`` runs the whole
pipeline instead (about 10 times slower).

Reported, for each uncertainty:

- scatter / sigma: the standard deviation of the output over the
  realisations, over the median stated sigma, per pixel (median over
  pixels; "all" and the brightest 10 % of the truth);
- pull rms: the root mean square of ``(output - truth) / sigma`` over
  pixels and realisations (bias included); "all", the brightest 10 %, and
  all but the brightest 1 % (the cores of point sources one fine pixel wide,
  which no fit of these frames resolves);
- aperture pull rms: the same for aperture sums of the truth's isolated
  stars (radius 4 input px), their errors from `MultiFrameSR.photometry`
  (the folds) and from the sum of the per-pixel Fisher variances.

A calibrated uncertainty has pull rms 0.7-1.5 (the issue's target). None
of these images was used to choose the method (the fold machinery was
developed on ``astrosr.simulate.make_sky`` skies of other seeds).

Run from the repository root::

    python benchmarks/uncertainty.py                  # hdf, 12 realisations
    python benchmarks/uncertainty.py --images hdf spitzer --realisations 6
"""

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from astropy.utils.exceptions import AstropyUserWarning

import astrosr
from astrosr import simulate
from astrosr.metrics import isolated_stars

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (PSF, READ_NOISE, SCALE, SKY, available, make_truth,  # noqa: E402
                     print_table)

MARGIN = 16
RADIUS = 4 * SCALE


def realisation(truth, shifts, n_frames, seed):
    """One noise realisation of the stack, sky subtracted."""
    stack = simulate.observe(truth, n_frames=n_frames, scale=SCALE, psf=PSF, sky=SKY,
                             read_noise=READ_NOISE, shifts=shifts, seed=seed)
    for f in stack.frames:
        f.data = f.data - SKY
    return stack


def run_once(truth, stack, stars, refine, folds):
    from photutils.aperture import CircularAperture

    sr = astrosr.MultiFrameSR(scale=SCALE, psf=PSF, refine=refine, folds=folds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        out = sr.run(stack.frames, stack.shifts)
    ap = CircularAperture(stars, r=RADIUS)
    table = sr.photometry(ap)
    fisher_var = sr.fused_.uncertainty.array
    fisher_sums = np.sqrt(np.asarray(ap.do_photometry(fisher_var)[0]))
    return dict(image=np.asarray(out.data), folds=np.asarray(out.uncertainty.array),
                fisher=np.asarray(fisher_var), sums=np.asarray(table["aperture_sum"].value),
                sum_err=np.asarray(table["aperture_sum_err"].value), fisher_sum_err=fisher_sums,
                candidate=sr.candidate_)


def summarise(truth, runs, stars):
    from photutils.aperture import CircularAperture

    inner = (slice(MARGIN, -MARGIN),) * 2
    t = truth[inner]
    bright = t > np.percentile(t, 90)
    bulk = t <= np.percentile(t, 99)
    images = np.array([r["image"][inner] for r in runs])
    scatter = images.std(axis=0, ddof=1)
    true_sums = np.asarray(CircularAperture(stars, r=RADIUS).do_photometry(truth)[0])
    rows = {}
    for kind, err_key in (("folds", "sum_err"), ("fisher", "fisher_sum_err")):
        sigma = np.sqrt(np.array([r[kind][inner] for r in runs]))
        pulls = (images - t) / sigma
        ap = np.concatenate([(r["sums"] - true_sums) / r[err_key] for r in runs]) \
            if len(stars) else np.array([np.nan])
        rows[kind] = dict(
            scatter_all=float(np.median(scatter / np.median(sigma, axis=0))),
            scatter_bright=float(np.median((scatter / np.median(sigma, axis=0))[bright])),
            pull_all=float(np.sqrt(np.mean(pulls ** 2))),
            pull_bright=float(np.sqrt(np.mean(pulls[:, bright] ** 2))),
            pull_bulk=float(np.sqrt(np.mean(pulls[:, bulk] ** 2))),
            aperture=float(np.sqrt(np.mean(ap ** 2))))
    return rows


TABLE_NOTE = (
    "sigma: folds = MultiFrameSR's (jackknife + spread of the deconvolutions), fisher = the "
    "fusion's inverse Fisher diagonal. scat/sig: scatter over realisations / stated sigma "
    '(median over pixels; bright: the brightest 10 % of the truth). pull: rms of (output - '
    'truth) / sigma, bias included; bulk99: all but the brightest 1 %. apert.: rms pull of '
    "isolated stars' aperture sums (radius 4 input px; fisher: the per-pixel variances "
    'summed). Calibrated: 0.7-1.5.')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", nargs="+", default=["hdf"])
    parser.add_argument("--realisations", type=int, default=12)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--refine", default="none")
    args = parser.parse_args(argv)
    refine = None if args.refine == "none" else args.refine
    print(f"astrosr uncertainty benchmark: {args.realisations} noise realisations of "
          f"{args.frames} frames of 128x128 -> 512x512, scale {SCALE}, Gaussian PSF sigma 1.2 "
          f"input px, sky {SKY:g} e- (subtracted), read noise {READ_NOISE:g} e-; MultiFrameSR("
          f"refine={args.refine}, folds={args.folds}); {os.cpu_count()} CPUs")
    header = (f"{'image':<9} {'sigma':<7} {'scat/sig':>8} {'bright':>7} {'pull':>7} "
              f"{'bright':>7} {'bulk99':>7} {'apert.':>7}")
    lines = []
    for name in [i for i in args.images if available(i)]:
        truth = make_truth(name, seed=0)
        stars = isolated_stars(truth, radius=RADIUS)
        shifts = simulate.default_shifts(args.frames, seed=1)
        t0 = time.perf_counter()
        runs = [run_once(truth, realisation(truth, shifts, args.frames, 100 + k), stars,
                         refine, args.folds) for k in range(args.realisations)]
        print(f"{name}: {len(stars)} isolated stars, {time.perf_counter() - t0:.0f} s, "
              f"returned: {sorted(set(r['candidate'] for r in runs))}", file=sys.stderr,
              flush=True)
        for kind, row in summarise(truth, runs, stars).items():
            lines.append(f"{name:<9} {kind:<7} {row['scatter_all']:8.3f} "
                         f"{row['scatter_bright']:7.3f} {row['pull_all']:7.2f} "
                         f"{row['pull_bright']:7.2f} {row['pull_bulk']:7.2f} "
                         f"{row['aperture']:7.2f}")
    print_table(header, lines, TABLE_NOTE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
