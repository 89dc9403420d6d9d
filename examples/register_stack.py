"""Register a simulated dithered stack and compare with the true shifts.

A synthetic sky (stars and galaxies) on a fine grid is observed eight times
through the astrosr observation model: each frame is shifted by a sub-pixel
dither, blurred by a Gaussian PSF, integrated over pixels four times coarser
than the truth, with sky, Poisson and read noise. `astrosr.register_stack`
then estimates the shifts relative to frame 0, with one-sigma errors.

The pull of a shift is (estimate - truth) / stated error. If the errors are
calibrated, the pulls scatter about 0 with a standard deviation close to 1.

Run with::

    python examples/register_stack.py
"""

import numpy as np

import astrosr
from astrosr.psf import GaussianPSF


def main():
    truth = astrosr.simulate.make_sky(shape=(256, 256), n_stars=60, n_galaxies=5, seed=1)
    stack = astrosr.simulate.observe(truth, n_frames=8, scale=4, psf=GaussianPSF(sigma=1.0),
                                     sky=100.0, read_noise=5.0, seed=2)

    est = astrosr.register_stack(stack.frames)  # relative to frame 0
    true = stack.shifts

    # True shifts relative to the reference frame, in input pixels.
    true_dx = (true["dx"] - true["dx"][0]).value
    true_dy = (true["dy"] - true["dy"][0]).value
    dx, dy = est["dx"].value, est["dy"].value
    dx_err, dy_err = est["dx_err"].value, est["dy_err"].value

    print(f"{len(stack.frames)} frames of {stack.frames[0].shape[1]} x "
          f"{stack.frames[0].shape[0]} pixels; shifts in input pixels\n")
    print(f"{'frame':>5} {'true dx':>9} {'est dx':>9} {'err':>7} {'pull':>6}   "
          f"{'true dy':>9} {'est dy':>9} {'err':>7} {'pull':>6}")
    pulls = []
    for i, frame in enumerate(est["frame"]):
        if i == 0:
            # The reference frame: shift 0 by definition, no error.
            print(f"{frame:>5} {true_dx[i]:9.4f} {dx[i]:9.4f} {'-':>7} {'-':>6}   "
                  f"{true_dy[i]:9.4f} {dy[i]:9.4f} {'-':>7} {'-':>6}")
            continue
        px = (dx[i] - true_dx[i]) / dx_err[i]
        py = (dy[i] - true_dy[i]) / dy_err[i]
        pulls += [px, py]
        print(f"{frame:>5} {true_dx[i]:9.4f} {dx[i]:9.4f} {dx_err[i]:7.4f} {px:6.2f}   "
              f"{true_dy[i]:9.4f} {dy[i]:9.4f} {dy_err[i]:7.4f} {py:6.2f}")

    err = np.concatenate([dx[1:] - true_dx[1:], dy[1:] - true_dy[1:]])
    pulls = np.asarray(pulls)
    print(f"\nrms error      {np.sqrt(np.mean(err ** 2)):.4f} pix")
    print(f"median stated  {np.median(np.concatenate([dx_err[1:], dy_err[1:]])):.4f} pix")
    print(f"pulls          mean {pulls.mean():+.2f}, std {pulls.std(ddof=1):.2f} "
          f"(calibrated errors: about 0 and 1)")


if __name__ == "__main__":
    main()
