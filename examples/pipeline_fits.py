"""The multi-frame pipeline on FITS files, against drizzle, scored on a known truth.

A crop of scikit-image's Hubble Deep Field (electrons per fine pixel) is
observed as a 16-frame dithered stack through the astrosr observation model
(Gaussian PSF of sigma 1.2 input pixels, pixels four times coarser than the
truth, sky 100 e- then subtracted, Poisson and read noise). The frames are
written as FITS files, and everything after that starts from the files, as
with real data:

* `astrosr.MultiFrameSR` (``scale=4``, the known PSF) on the glob of the
  files: register, fuse (the PSF-aware reconstruction), refine with the
  scale-1 network ``--refine`` and hold the result to all the frames
  (``CHI2RED`` about 1);
* `astrosr.fuse` with ``method="drizzle"`` on the same files and shifts.

It prints the PSNR of each against the truth (`astrosr.metrics.psnr`, 16 fine
pixels left out at each edge), the pipeline's reduced chi-square and the time
of each step, writes the pipeline's result with `astrosr.nddata.write_fits`,
and draws a comparison figure with `astrosr.visualization.compare` (one
frame, drizzle, the pipeline and the truth on one brightness scale).

With ``--refine none`` the pipeline stops after the fusion (no network, no
TensorFlow). The default ``refine-x1`` is the shipped refinement model; a
model of your own is given by the stem of its files. Run from the repository
root::

    python examples/pipeline_fits.py --refine none      # under a minute on 2 cores
    python examples/pipeline_fits.py                    # with the refinement network
    python examples/pipeline_fits.py --size 512 --out my_folder --overwrite
"""

import argparse
from pathlib import Path

import astrosr
from astrosr._data import hubble_deep_field
from astrosr.metrics import psnr
from astrosr.nddata import write_fits
from astrosr.psf import GaussianPSF
from astrosr.visualization import compare

SCALE = 4
SKY = 100.0
MARGIN = 16  # fine pixels left out at each edge when scoring


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256,
                        help="side of the truth in fine pixels, a multiple of 4 up to 512 "
                             "(default 256: frames of 64x64)")
    parser.add_argument("--frames", type=int, default=16, help="frames in the stack (default 16)")
    parser.add_argument("--refine", default="refine-x1",
                        help="scale-1 refinement model (shipped name or file stem), or 'none' "
                             "to stop after the fusion (default refine-x1)")
    parser.add_argument("--out", default="pipeline_fits_out",
                        help="folder for the frames, results and figure "
                             "(default pipeline_fits_out)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    refine = None if args.refine.lower() == "none" else args.refine
    out = Path(args.out)
    (out / "frames").mkdir(parents=True, exist_ok=True)

    # A dithered, sky-subtracted stack of a known sky, written as FITS files.
    psf = GaussianPSF(1.2)  # sigma in input pixels
    truth = hubble_deep_field(args.size)
    stack = astrosr.simulate.observe(truth, n_frames=args.frames, scale=SCALE, psf=psf, sky=SKY,
                                     read_noise=5.0, seed=0)
    for i, frame in enumerate(stack.frames):
        frame.data = frame.data - SKY
        write_fits(frame, out / "frames" / f"frame_{i:02d}.fits", overwrite=args.overwrite)
    files = str(out / "frames" / "frame_*.fits")
    ny, nx = stack.frames[0].shape
    print(f"wrote {args.frames} frames of {nx}x{ny} pixels: {files}")

    # The pipeline, from the files.
    sr = astrosr.MultiFrameSR(scale=SCALE, psf=psf, refine=refine)
    try:
        hr = sr.run(files)
    except FileNotFoundError as exc:  # a model that is neither shipped nor saved there
        parser.error(f"{exc}; pass --refine none, or the stem of a saved scale-1 model")
    write_fits(hr, out / "pipeline.fits", overwrite=args.overwrite)

    # Drizzle of the same files with the pipeline's shifts, for comparison.
    drz = astrosr.fuse(files, sr.shifts_, scale=SCALE, method="drizzle", pixfrac=0.7)

    label = "pipeline (fusion only)" if refine is None else f"pipeline ({Path(refine).name})"
    print(f"\n{'image':<28} {'PSNR [dB]':>9}")
    print(f"{'drizzle, pixfrac 0.7':<28} {psnr(drz, truth, margin=MARGIN):9.2f}")
    if refine is not None:
        print(f"{'fused (before refinement)':<28} {psnr(sr.fused_, truth, margin=MARGIN):9.2f}")
    print(f"{label:<28} {psnr(hr, truth, margin=MARGIN):9.2f}")
    print(f"\npipeline CHI2RED {hr.meta['CHI2RED']:.3f} (the frames against the result); steps: "
          + ", ".join(f"{k} {v:.1f} s" for k, v in sr.timings_.items()))

    figure = out / "pipeline.png"
    compare([stack.frames[0], drz, hr, truth],
            titles=["frame 0 of %d" % args.frames, "drizzle", label, "truth"],
            path=figure, overwrite=args.overwrite)
    print(f"wrote {out / 'pipeline.fits'} and {figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
