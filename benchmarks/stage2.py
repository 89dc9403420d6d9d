"""Benchmark: what the adversarial stage changes (``srgan-x4`` against its stage-1 ``srresnet-x4``).

Single frames as in ``benchmarks/single_frame.py`` (scale 4, Gaussian PSF
sigma ``--sigma`` input px, sky 100 e- subtracted, read noise 5 e-), each
model through ``astrosr.enhance`` (``consistency="observation"``, one
ensemble member). Per image: PSNR against the truth; the median FWHM of
isolated stars (fine px; the truth's beside it); the median aperture
photometry error (radius 4 input px); the high-frequency power, the power
of the output above half the fine grid's Nyquist frequency over the
truth's (1: the truth's small-scale power; a blur is below 1, invented
texture above it); and the period-4 peak ratio of `astrosr.metrics.periodic_peak`
(the pixel shuffle's pattern; above 20 is a pattern). Any pair of models
can be compared with ``--models STAGE1 STAGE2`` (names or stems). spitzer and
2mass are real images no shipped network was trained on.

Run from the repository root (about 2 minutes on 2 cores)::

    python benchmarks/stage2.py
    python benchmarks/stage2.py --models runs/finegrid-x4-pixel runs/finegrid-x4
"""

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
from scipy import fft

from astrosr import metrics
from astrosr.psf import GaussianPSF

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import available, make_truth, print_table  # noqa: E402
from single_frame import IMAGES, MARGIN, RADIUS, observed_frame  # noqa: E402


def high_frequency_power(image, truth):
    """Power above half the Nyquist frequency, the image's over the truth's (interior)."""
    def power(a):
        a = metrics.interior(a, MARGIN)
        spec = np.abs(fft.rfft2(a - a.mean())) ** 2
        fy = np.abs(fft.fftfreq(a.shape[0]))[:, None]
        fx = fft.rfftfreq(a.shape[1])[None, :]
        return float(np.sum(spec[np.hypot(fx, fy) > 0.25]))

    return power(image) / power(truth)


def scores(image, truth, stars):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the Gaussian fits' "may be unsuccessful"
        width = metrics.fwhm(image, stars) if len(stars) else np.nan
    return dict(psnr=metrics.psnr(image, truth, margin=MARGIN), fwhm=width,
                phot=metrics.photometric_error(image, truth, stars, radius=RADIUS),
                hf=high_frequency_power(image, truth), p4=metrics.periodic_peak(image, 4))


def main(argv=None):
    from astrosr.models import SRModel

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs=2, default=["srresnet-x4", "srgan-x4"])
    parser.add_argument("--images", nargs="+", choices=IMAGES, default=IMAGES)
    parser.add_argument("--sigma", type=float, default=1.2)
    args = parser.parse_args(argv)
    models = [SRModel.pretrained(m) if not Path(f"{m}.json").exists() else SRModel.load(m)
              for m in args.models]
    psf = GaussianPSF(args.sigma)
    lines = []
    for name in [i for i in args.images if available(i)]:
        truth = make_truth(name, seed=0)
        frame = observed_frame(truth, seed=0, psf=psf)
        stars = metrics.isolated_stars(truth, radius=RADIUS)
        truth_fwhm = metrics.fwhm(truth, stars) if len(stars) else np.nan
        for model in models:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # misfits are in CHI2RED
                out = model.enhance(frame, psf=psf, ensemble=1)
            s = scores(np.asarray(out.data, float), truth, stars)
            lines.append(f"{name:<9} {model.name:<24} {s['psnr']:7.2f} {s['fwhm']:6.2f} "
                         f"{truth_fwhm:6.2f} {100 * s['phot']:6.2f}% {s['hf']:6.3f} "
                         f"{s['p4']:6.1f} {out.meta.get('CHI2RED', np.nan):6.2f}")
    header = (f"{'image':<9} {'model':<24} {'PSNR':>7} {'FWHM':>6} {'truth':>6} "
              f"{'phot':>7} {'HF pow':>6} {'P4':>6} {'chi2':>6}")
    print(f"stage 1 vs stage 2: {args.models[0]} -> {args.models[1]}, PSF sigma {args.sigma:g}")
    print_table(header, lines, "FWHM: median of isolated stars, fine px (truth: the truth's); "
                "phot: median aperture error; HF pow: power above half the fine Nyquist over "
                "the truth's; P4: period-4 peak ratio (above 20: a pattern).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
