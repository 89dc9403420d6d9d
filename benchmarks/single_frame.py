"""Benchmark: single-frame super-resolution (x4) against bicubic and Richardson-Lucy.

Single frames observed by ``astrosr.simulate.observe`` (scale 4, Gaussian PSF
sigma 1.2 input pixels, sky 100 e- subtracted, read noise 5 e-) from the real
images in ``../shared/data/`` (never used in training) and synthetic skies.
Methods, all scored on the same interior region (16 fine pixels in from the
edges) against the truth:

- bicubic: ``scipy.ndimage.zoom(order=3, grid_mode=True)`` / 16 (pixel edges
  aligned: no half-pixel offset handicaps it);
- Richardson-Lucy on the fine grid with the same forward model (PSF, then
  integration over the input pixels), scored at its best iteration (an
  oracle choice: a generous peer): the best of plain Richardson-Lucy (this
  file's own loop, every 10th of 1000 iterations) and the accelerated one
  of ``astrosr.fuse(method="reconstruct")`` (Biggs & Andrews 1997) run to
  25, 50, ..., 12800 iterations. On a star field the plain iterations are
  still improving at 1000, far from their best;
- each network (SRCNN, VDSR, SRResNet, SRGAN, those whose weights are found)
  in the three consistency modes of ``astrosr.enhance``, and in
  ``"observation"`` mode with ``stop="converged"`` too.

Columns: PSNR and SSIM against the truth, median relative aperture-photometry
error of isolated stars (radius 4 input pixels at the true positions, against
the truth itself), the median FWHM of those stars (a Gaussian fit; the row
"truth" gives the truth's own), and output megapixels per second. Medians
over ``--runs``. Two reference rows: "(aperture noise floor)", the
photometric error that the frame's noise alone gives an unbiased aperture
sum, and "(truth, block sums imposed)", the truth put through
``consistency="pixel"``: the most that mode allows on the frame.

Run from the repository root::

    python benchmarks/single_frame.py                       # shipped models
    python benchmarks/single_frame.py --models runs/srresnet-x4 --runs 1
    python benchmarks/train_baselines.py --out runs     # SRCNN and VDSR, then:
    python benchmarks/single_frame.py --models runs/srcnn-x4 runs/vdsr-x4 --no-shipped
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

import astrosr
from astrosr import simulate
from astrosr.forward import ObservationOperator
from astrosr.inference import DEFAULT_ENSEMBLE
from astrosr.metrics import fwhm, isolated_stars, photometric_error, psnr, ssim
from astrosr.psf import GaussianPSF

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PSF, READ_NOISE, SCALE, SKY, available, make_truth  # noqa: E402

IMAGES = ["stars", "galaxies", "spitzer", "2mass"]
CARDS = Path(astrosr.__file__).resolve().parent / "data"
MARGIN = 16
RADIUS = 4 * SCALE  # aperture radius: 4 input pixels, in fine pixels
#: Row label of each way to run `astrosr.enhance`, and its options.
MODES = {"observation": {"consistency": "observation"},
         "observation, converged": {"consistency": "observation", "stop": "converged"},
         "pixel": {"consistency": "pixel"},
         "None": {"consistency": None}}


def observed_frame(truth, seed, psf=PSF):
    stack = simulate.observe(truth, n_frames=1, scale=SCALE, psf=psf, sky=SKY,
                             read_noise=READ_NOISE, seed=seed)
    frame = stack.frames[0]
    frame.data = frame.data - SKY
    return frame


def bicubic(frame):
    return ndimage.zoom(np.asarray(frame.data, float), SCALE, order=3, grid_mode=True,
                        mode="nearest") / SCALE ** 2


def best_richardson_lucy(frame, truth, psf=PSF):
    """The PSNR-best of plain and accelerated RL iterates: (image, seconds, label)."""
    return max(plain_richardson_lucy(frame, truth, psf),
               accelerated_richardson_lucy(frame, truth, psf), key=lambda r: r[0])[1:]


def accelerated_richardson_lucy(frame, truth, psf=PSF,
                                counts=tuple(25 * 2 ** k for k in range(10))):
    """``astrosr.fuse``'s accelerated RL run to each of ``counts`` iterations.

    Returns the best: ``(psnr, image, seconds, label)``.

    The search ends after two counts in a row below the best so far, or when
    doubling the iterations gained less than 0.02 dB.
    """
    best, worse, gain = None, 0, np.inf
    for n in counts:
        if worse == 2 or gain < 0.02:
            break
        t0 = time.perf_counter()
        img = astrosr.fuse([frame], [[0.0, 0.0]], scale=SCALE, method="reconstruct", psf=psf,
                           reject=False, stop="converged", tol=0.0, max_iter=n)
        seconds = time.perf_counter() - t0
        p = psnr(img.data, truth, margin=MARGIN)
        worse = 0 if best is None or p > best[0] else worse + 1
        if worse == 0:
            gain = np.inf if best is None else p - best[0]
            best = (p, np.asarray(img.data), seconds, f"{n} accelerated it.")
    return best


def plain_richardson_lucy(frame, truth, psf=PSF, n_iter=1000, every=10):
    """Plain RL on the fine grid; the PSNR-best iterate: ``(psnr, image, seconds, label)``."""
    op = ObservationOperator(frame.shape, [[0.0, 0.0]], scale=SCALE, psf=psf, single=True)
    b = float(np.median(frame.uncertainty.array))  # sky + read-noise variance: Snyder shift
    counts = op.embed_frames(np.clip(np.asarray(frame.data, float) + b, 0, None)[None])
    weight = op.embed_frames(np.ones((1,) + frame.shape))
    norm = op.adjoint(weight)
    seen = norm > 0.05 * norm.max()
    x = np.where(seen, max(float(frame.data.mean()) / SCALE ** 2, 1e-3), 0.0)
    best, best_psnr, best_it = None, -np.inf, 0
    t0 = time.perf_counter()
    for it in range(1, n_iter + 1):
        ratio = weight * counts / np.maximum(op.forward(x) + b * weight, 1e-12)
        x = np.where(seen, x * op.adjoint(ratio) / np.where(seen, norm, 1), 0.0)
        if it % every == 0:
            img = op.crop_image(x)
            p = psnr(img, truth, margin=MARGIN)
            if p > best_psnr:
                best, best_psnr, best_it = img.copy(), p, it
    seconds = (time.perf_counter() - t0) * best_it / n_iter
    return best_psnr, best, seconds, f"{best_it} plain it."


def pixel_oracle(truth, frame):
    """The truth shifted, footprint by footprint, to sum to the frame's pixels.

    What ``consistency="pixel"`` would give a network that output the truth
    itself: the ceiling of that mode on this frame.
    """
    from astrosr.inference import pixel_consistency

    data = np.asarray(frame.data, dtype=float)
    return pixel_consistency(np.asarray(truth, dtype=float), data, np.ones(data.shape, bool),
                              SCALE)


def photometric_noise_floor(truth, stars):
    """Median |error| the frame's noise alone gives an unbiased aperture flux.

    Per star: 0.674 (the median of |N(0, 1)|) times the noise of the
    aperture sum (Poisson of the star, sky and read noise over the
    aperture's input pixels) over the true flux.
    """
    from photutils.aperture import CircularAperture, aperture_photometry

    if len(stars) == 0:
        return np.nan
    ap = CircularAperture(stars, r=RADIUS)
    flux = np.asarray(aperture_photometry(truth, ap)["aperture_sum"])
    area = ap.area / SCALE ** 2  # input pixels
    return float(np.median(0.674 * np.sqrt(flux + area * (SKY + READ_NOISE ** 2)) / flux))


def load_models(stems, shipped=True):
    from astrosr.models import SRModel, available_models

    models = {}
    for name in available_models() if shipped else []:
        model = SRModel.pretrained(name)
        if model.scale == SCALE:  # not the pipeline's scale-1 refinement
            models[name] = model
    for stem in stems or []:
        m = SRModel.load(stem)
        models[m.name] = m
    return models


def score(image, truth, stars, seconds):
    return dict(psnr=psnr(image, truth, margin=MARGIN), ssim=ssim(image, truth, margin=MARGIN),
                phot=photometric_error(image, truth, stars, radius=RADIUS),
                fwhm=fwhm(image, stars) if len(stars) else np.nan,
                mpix=np.asarray(image).size / 1e6 / seconds)


def bench_image(name, runs, models, log, ensemble, psf=PSF):
    rows = {}
    for run in range(runs):
        truth = make_truth(name, seed=run)
        frame = observed_frame(truth, seed=run, psf=psf)
        stars = isolated_stars(truth, radius=RADIUS)
        t0 = time.perf_counter()
        up = bicubic(frame)
        rows.setdefault("bicubic", []).append(score(up, truth, stars, time.perf_counter() - t0))
        rows.setdefault("truth", []).append(score(truth, truth, stars, 1.0))
        rows.setdefault("(truth, block sums imposed)", []).append(
            score(pixel_oracle(truth, frame), truth, stars, 1.0))
        rows.setdefault("(aperture noise floor)", []).append(
            {"psnr": np.nan, "phot": photometric_noise_floor(truth, stars)})
        rl, sec, it = best_richardson_lucy(frame, truth, psf)
        rows.setdefault("Richardson-Lucy (best it.)", []).append(score(rl, truth, stars, sec))
        log(f"  {name} run {run}: bicubic {rows['bicubic'][-1]['psnr']:.2f} dB, RL "
            f"{rows['Richardson-Lucy (best it.)'][-1]['psnr']:.2f} dB at {it}, "
            f"{len(stars)} stars")
        for mname, model in models.items():
            for mode, options in MODES.items():
                t0 = time.perf_counter()
                out = model.enhance(frame, psf=psf, ensemble=ensemble, **options)
                sec = time.perf_counter() - t0
                key = f"{mname} [{mode}]"
                rows.setdefault(key, []).append(score(out.data, truth, stars, sec))
                rows[key][-1]["chi2"] = out.meta.get("CHI2RED", np.nan)
                log(f"    {key}: {rows[key][-1]['psnr']:.2f} dB")
    return rows


#: Which images the shipped networks never saw (their model cards: Hubble Deep Field crops
#: and synthetic skies).
HELD_OUT_NOTE = ("spitzer and 2mass are real images no shipped network was trained on; stars "
                 "and galaxies are skies of astrosr.simulate.make_sky (the family of the "
                 "training skies, other seeds)")


def print_rows(label, rows):
    """The table's rows of one image and PSF, against bicubic and the best Richardson-Lucy."""
    ref = median(rows["bicubic"], "psnr")
    rl = median(rows["Richardson-Lucy (best it.)"], "psnr")
    for key, r in rows.items():
        p = median(r, "psnr")
        print(f"{label:<13} {key:<36} {p:7.2f} {p - ref:+10.2f} {p - rl:+7.2f} "
              f"{median(r, 'ssim'):6.3f} {100 * median(r, 'phot'):7.2f}% "
              f"{median(r, 'fwhm'):5.2f} {median(r, 'chi2'):6.2f} {median(r, 'mpix'):7.2f}")
    print()


def median(rows, key):
    return float(np.median([r.get(key, np.nan) for r in rows]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--images", nargs="+", choices=IMAGES, default=IMAGES)
    parser.add_argument("--models", nargs="*", default=None,
                        help="extra model stems (PATH for PATH.weights.h5 + PATH.json)")
    parser.add_argument("--ensemble", type=int, choices=[1, 2, 4, 8], default=DEFAULT_ENSEMBLE,
                        help=f"self-ensemble members (default {DEFAULT_ENSEMBLE}, the library's)")
    parser.add_argument("--no-shipped", action="store_true",
                        help="only the --models, not the shipped ones")
    parser.add_argument("--sigma", type=float, nargs="+", default=[1.2],
                        help="PSF sigmas in input px (default 1.2; 0.5 is undersampled); "
                             "--record takes the 1.2 rows")
    parser.add_argument("--json", default=None, help="also write the medians to this JSON file")
    parser.add_argument("--record", action="store_true",
                        help="write each shipped model's figures into its card in astrosr/data")
    args = parser.parse_args(argv)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    models = load_models(args.models, shipped=not args.no_shipped)
    print(f"astrosr single-frame benchmark: x{SCALE}, Gaussian PSF sigma "
          f"{'/'.join(f'{x:g}' for x in args.sigma)} input px, "
          f"sky {SKY:g} e- "
          f"(subtracted), read noise {READ_NOISE:g} e-; {os.cpu_count()} CPUs; astrosr "
          f"{astrosr.__version__}; medians over {args.runs} run(s); scored {MARGIN} fine px "
          "inside; "
          f"self-ensemble {args.ensemble}")
    header = (f"{'image':<13} {'method':<36} {'PSNR':>7} {'vs bicubic':>10} {'vs RL':>7} "
              f"{'SSIM':>6} "
              f"{'phot err':>8} {'FWHM':>5} {'chi2':>6} {'Mpix/s':>7}")
    print(header)
    print("-" * len(header))
    results = {}
    for sigma in args.sigma:
        psf = GaussianPSF(sigma)
        for name in [i for i in args.images if available(i)]:
            label = name if sigma == 1.2 else f"{name} sigma={sigma:g}"
            log(f"{label}: {args.runs} run(s)")
            rows = bench_image(name, args.runs, models, log, args.ensemble, psf)
            results[label] = {key: {k: median(r, k) for k in ("psnr", "ssim", "phot", "fwhm",
                                                              "chi2", "mpix")}
                              for key, r in rows.items()}
            print_rows(f"{name} {sigma:g}", rows)
    print(f"held out: {HELD_OUT_NOTE}")
    print("phot err: median |aperture flux - truth's| / truth's, radius 4 input px, isolated stars "
          "at the true positions ('(aperture noise floor)': what the frame's noise alone "
          "gives an unbiased aperture sum); '(truth, block sums imposed)': the ceiling of "
          "consistency='pixel'; FWHM: median of isolated stars, fine px (the truth's: row "
          "'truth'); chi2: reduced chi-square of the re-observed output (observation "
          "mode); Mpix/s: output megapixels per second (RL: time to its best iteration).")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, allow_nan=True))
    if args.record:
        record_in_cards({k: v for k, v in results.items() if "sigma=" not in k},
                        [m for m in models if (CARDS / f"{m}.json").exists()], args)
    return 0


def record_in_cards(results, names, args):
    """Each shipped model's benchmark figures into its model card (``metrics.benchmark``)."""
    for name in names:
        path = CARDS / f"{name}.json"
        card = json.loads(path.read_text())

        def figure(method, key, digits):
            return {img: round(r[method][key], digits) for img, r in results.items()
                    if method in r and np.isfinite(r[method][key])}

        modes = {"observation": "observation", "observation_converged": "observation, converged",
                 "pixel": "pixel", "raw": "None"}
        card.setdefault("metrics", {})["benchmark"] = {
            "command": "python benchmarks/single_frame.py " + " ".join(sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d"), "hardware": f"{os.cpu_count()} CPU cores",
            "setup": f"single 128x128 frames from 512x512 truths (never trained on), x{SCALE}, "
                     f"Gaussian PSF sigma 1.2 input px (given), sky {SKY:g} e- subtracted, read "
                     f"noise {READ_NOISE:g} e-; scored {MARGIN} fine px inside the edges; "
                     f"{args.ensemble}-member self-ensemble; medians over {args.runs} run(s)",
            "psnr_db": {img: {"bicubic": round(r["bicubic"]["psnr"], 2),
                              "richardson_lucy_best":
                                  round(r["Richardson-Lucy (best it.)"]["psnr"], 2),
                              **{m: round(r[f"{name} [{k}]"]["psnr"], 2) for m, k in modes.items()}}
                        for img, r in results.items()},
            "photometric_error": {m: figure(f"{name} [{k}]", "phot", 4) for m, k in modes.items()},
            "fwhm_fine_px": {m: figure(f"{name} [{k}]", "fwhm", 2) for m, k in modes.items()},
            "output_mpix_per_s": {m: round(float(np.median(list(figure(f"{name} [{k}]", "mpix", 3)
                                                                .values()))), 3)
                                  for m, k in modes.items()},
        }
        path.write_text(json.dumps(card, indent=2) + "\n")
        print(f"recorded the figures in {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
