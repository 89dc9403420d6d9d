"""Benchmark: raw camera frames, each defect alone and all together, against the clean stack.

Stacks of 5 frames of 1392x1040 (1.45 MPix, the real CCD stack of issue 15),
simulated by ``astrosr.simulate.observe(camera=...)`` from one 2784x2080 truth
(``make_sky``, 300 stars, 10 galaxies and a nebula; scale 2, Gaussian PSF
sigma 1.5 px, sky 500 e-, read noise 10 e-, gain 1 e-/ADU), dithered by
about 10, 25, 35 and 46 px in x (and a few in y) as that stack was. The
``clean`` stack is the same sky through an ideal detector (frames in
electrons with their variance); ``camera=Camera.only(d)`` adds one group of
`astrosr.camera.DEFECTS`; ``all`` is the default `astrosr.camera.Camera`
(every defect; ``trails=1``: one satellite trail per frame on average). No
calibration frame is given: `astrosr.register_stack` calibrates raw frames
from themselves (`astrosr.calibration`).

Columns, per stack:

``rms px``
    RMS over frames 1-4 and both axes of the shift error (truth known).
``/bound``
    That RMS over the clean stack's median Fisher error (``dx_err``, the
    bound the clean stack reaches: its pulls are 0.8-1.1 in
    ``docs/registration_benchmark.txt``). Target <= 2 for ``all``.
``register s``
    Wall time of ``register_stack`` (calibration included): the target is
    30 s for ``all`` on 2 cores.
``chi2_shift px``
    ``image_registration.chi2_shift`` (``upsample_factor='auto'``) on the
    same frames as given (raw ADU for the camera stacks): the peer's RMS.
``PSNR dB``
    The drizzled stack (``fuse(method="drizzle")``, scale 2, pixfrac 0.7,
    through the calibrated frames and the registered shifts) against the
    clean stack's drizzle at the true shifts less its sky, in the interior
    (64 fine px margin).
``band/sigma``, ``hot>3sigma``
    On the difference of those two images: the RMS of the row-to-row and
    column-to-column jitter of its row and column medians, over the noise of
    such a median; and the fraction of the detector's hot and dead pixels
    (seen in the reference frame, on the fine grid) where the difference
    exceeds 3 sigma.

No star of this sky passes the full well (80000 e-), so the ``saturation``
stack has no saturated pixel: it measures the camera's read-out alone. A
saturating star would dominate the clean stack's bound with information the
camera cannot deliver; saturation is tested in ``tests/test_calibration.py``.

Refusals: three frames of pure Poisson noise (raw uint16), and a stack
whose frame 2 shows another sky; the time ``register_stack`` takes to
refuse, and the start of its message.

Usage::

    python benchmarks/raw_frames.py                 # 1392x1040 frames (about 15 min, 2 cores)
    python benchmarks/raw_frames.py --quick         # 348x260 frames, to check the script
    python benchmarks/raw_frames.py --out docs/raw_frames_benchmark.txt
    python benchmarks/raw_frames.py --stacks hot_dead all   # those and the clean stack

Peak memory is the process's peak RSS at the end of the run.
"""

import argparse
import resource
import sys
import time
import warnings

import numpy as np
from astropy.nddata import CCDData

import astrosr
from astrosr import metrics, simulate
from astrosr.calibration import calibrate
from astrosr.camera import DEFECTS, Camera
from astrosr.psf import GaussianPSF

SHAPE = (1040, 1392)
SHIFTS = np.array([[0.0, 0.0], [10.3, 2.1], [25.6, -3.2], [35.2, 4.4], [46.7, 1.1]])
OPTIONS = dict(scale=2, psf=GaussianPSF(1.5), sky=500.0, read_noise=10.0, seed=3)


def _stacks(shape):
    truth = simulate.make_sky((2 * shape[0], 2 * shape[1]), n_stars=300, n_galaxies=10, seed=1)
    shifts = SHIFTS * shape[1] / SHAPE[1]
    cameras = {"clean": None, **{d: Camera.only(d) for d in DEFECTS}, "all": Camera(trails=1.0)}
    return truth, shifts, cameras


def _shift_rms(table, shifts):
    est = np.column_stack([table["dx"].value, table["dy"].value])
    return float(np.sqrt(np.mean((est - shifts)[1:] ** 2)))


def _chi2_shift_rms(frames, shifts):
    from image_registration import chi2_shift

    ref = np.asarray(frames[0].data, float)
    err = []
    for f, (dx, dy) in zip(frames[1:], shifts[1:]):
        ox, oy, _, _ = chi2_shift(ref, np.asarray(f.data, float), upsample_factor="auto")
        err += [ox - dx, oy - dy]
    return float(np.sqrt(np.mean(np.square(err))))


def _jitter(offsets):
    from scipy import ndimage

    return offsets - ndimage.median_filter(offsets, 15, mode="nearest")


def _residue(diff, noise, defects, margin):
    """Banding (row/column median jitter over its noise) and hot-pixel residue of a difference."""
    inner = diff[margin:-margin, margin:-margin]
    rows, cols = np.median(inner, axis=1), np.median(inner, axis=0)
    band = max(np.std(_jitter(rows)) / (1.25 * noise / np.sqrt(inner.shape[1])),
               np.std(_jitter(cols)) / (1.25 * noise / np.sqrt(inner.shape[0])))
    fine = np.kron(defects, np.ones((2, 2), dtype=bool))[margin:-margin, margin:-margin]
    hot = float(np.mean(np.abs(inner[fine]) > 3 * noise)) if fine.any() else 0.0
    return band, hot


def _drizzle(frames, table):
    return astrosr.fuse(frames, table, scale=2, method="drizzle", pixfrac=0.7, reject=True)


def run(shape, names=None):
    truth, shifts, cameras = _stacks(shape)
    cameras = {k: v for k, v in cameras.items() if names is None or k in names or k == "clean"}
    margin = 64 if shape == SHAPE else 16
    rows, clean_err, clean_image = [], None, None
    for name, camera in cameras.items():
        obs = simulate.observe(truth, shifts=shifts, camera=camera, **OPTIONS)
        t0 = time.perf_counter()
        table = astrosr.register_stack(obs.frames)
        t_reg = time.perf_counter() - t0
        rms = _shift_rms(table, shifts)
        peer = _chi2_shift_rms(obs.frames, shifts)
        frames = obs.frames if camera is None else calibrate(obs.frames)
        image = _drizzle(frames, table).data
        if camera is None:
            image = image - OPTIONS["sky"] / 4  # the camera stacks' sky goes with calibration
            clean_err = float(np.median(np.concatenate([table["dx_err"].value[1:],
                                                        table["dy_err"].value[1:]])))
            truth_table = obs.shifts
            clean_image = _drizzle(obs.frames, truth_table).data - OPTIONS["sky"] / 4
        diff = np.nan_to_num(image - clean_image)
        noise = float(np.std(metrics.interior(diff, margin)))
        psnr = metrics.psnr(np.nan_to_num(image), np.nan_to_num(clean_image), margin=margin)
        defects = (np.zeros(shape, bool) if camera is None
                   else obs.camera.hot | obs.camera.dead)
        band, hot = _residue(diff, max(noise, 1e-9), defects, margin)
        rows.append((name, rms, rms / clean_err, t_reg, peer, psnr, band, hot))
        print(f"  {name}: {rms:.4f} px, {t_reg:.1f} s", file=sys.stderr, flush=True)
    return rows, clean_err


def refusals(shape):
    rng = np.random.default_rng(0)
    noise = [CCDData(rng.poisson(500.0, shape).astype(np.uint16), unit="adu") for _ in range(3)]
    truth, shifts, _ = _stacks(shape)
    other = simulate.make_sky((2 * shape[0], 2 * shape[1]), n_stars=300, n_galaxies=10, seed=99)
    a = simulate.observe(truth, shifts=shifts[:2], camera=Camera(), **OPTIONS).frames
    b = simulate.observe(other, shifts=shifts[:1], camera=Camera(), **OPTIONS).frames
    out = []
    for name, frames in (("pure noise", noise), ("another sky", a + b)):
        t0 = time.perf_counter()
        try:
            astrosr.register_stack(frames)
            message = "(registered: not refused)"
        except ValueError as exc:
            message = str(exc)
        out.append((name, time.perf_counter() - t0, message))
    return out


def table(rows, clean_err, refused, shape):
    lines = [f"Raw camera frames: 5 frames of {shape[1]}x{shape[0]}, no calibration frames; "
             f"clean stack's median Fisher error {clean_err:.4f} px", "",
             f"{'stack':<13}{'rms px':>9}{'/bound':>8}{'register s':>12}{'chi2_shift px':>15}"
             f"{'PSNR dB':>9}{'band/sigma':>12}{'hot>3sigma':>12}"]
    for name, rms, ratio, t_reg, peer, psnr, band, hot in rows:
        lines.append(f"{name:<13}{rms:>9.4f}{ratio:>8.2f}{t_reg:>12.1f}{peer:>15.4f}"
                     f"{psnr:>9.2f}{band:>12.2f}{100 * hot:>11.1f}%")
    lines += ["", "Refusals (register_stack):"]
    for name, seconds, message in refused:
        lines.append(f"  {name:<12} {seconds:5.1f} s  {message[:110]}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    lines += ["", f"peak RSS {peak:.2f} GB"]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="348x260 frames")
    parser.add_argument("--out", help="also write the table to this file")
    parser.add_argument("--stacks", nargs="+", metavar="NAME",
                        help="only these stacks (clean always runs): bias, banding, hot_dead, "
                             "saturation, flat, sky_gradient, trails, all")
    args = parser.parse_args(argv)
    shape = (260, 348) if args.quick else SHAPE
    warnings.simplefilter("ignore")
    rows, clean_err = run(shape, args.stacks)
    text = table(rows, clean_err, refusals(shape), shape)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
