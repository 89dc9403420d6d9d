"""Registration against a model of the sky on the fine grid: the undersampled regime.

A frame whose PSF is narrower than two pixels (FWHM < 2 px: HST, Spitzer,
Roman) aliases: no template at the frames' own sampling can reproduce
another frame's pixels, and every correlation method plateaus far above the
noise limit (Clement, Bierbaum & Sethna 2018 show that only a fit against a
model of the underlying image reaches it). So the stack is reconstructed on
a grid ``scale`` times finer with the core's Richardson-Lucy (a few
iterations, at the current geometry), and each frame is fitted against that
model *observed* through its geometry, the PSF and its pixels; the two steps
alternate until the geometry stops changing.

The observed model is the fine image convolved with the PSF and summed over
each input pixel's ``scale x scale`` fine pixels: a band-limited surface on
the fine grid, interpolated by a cubic spline. Its box is the reference's
pixel, unrotated: a square's second moments are isotropic, so a rotated
pixel differs only at fourth order, and not at all in the centroid.
"""

import numpy as np
from scipy import ndimage, signal

from ..geometry import OutputGrid, Placement
from ..psf import as_psf
from ..reconstruct import PoissonNoise, richardson_lucy
from .splines import mask_at, spline_gradient_at

__all__ = ["ModelTemplate", "fine_model", "MODEL_SCALE", "MODEL_ITERATIONS"]

#: Fine pixels per input pixel of the model.
MODEL_SCALE = 4
#: Richardson-Lucy iterations per model (accelerated; few: the model only has to locate).
MODEL_ITERATIONS = 30


def fine_model(stack, transforms, psf, *, scale=MODEL_SCALE, iterations=MODEL_ITERATIONS):
    """The light above each frame's pedestal, per fine pixel of the reference's grid.

    Richardson-Lucy from a flat start on the frames placed by ``transforms``
    (one per frame: reference pixel <-> frame pixel), no outlier rejection.
    """
    placement = Placement(transforms, stack.data.shape[1:], OutputGrid(stack.data.shape[1:], scale))
    op = placement.operator(psf, scale=scale, single=True)
    if not placement.is_shift:
        stack = stack.restricted(op.inside)
    image, _ = richardson_lucy(op, stack, stack.good, PoissonNoise(stack, None), None, 0.0,
                               iterations, stop="converged")
    return op.crop_image(image)


class ModelTemplate:
    """A fine-grid model observed through the PSF and the input pixels, as a spline.

    ``at`` and ``coverage_at`` take positions on the reference's input grid,
    as `astrosr.registration.templates.Template` does. The box sum of fine
    pixels ``k .. k + scale - 1`` is the input pixel centred at fine
    coordinate ``k + (scale - 1) / 2``, that is at reference pixel
    ``k / scale``: reference position ``P`` is box index ``scale * P``.
    """

    def __init__(self, fine, psf, scale):
        kernel = as_psf(psf, oversampling=scale).kernel(scale)
        blurred = signal.fftconvolve(fine, kernel, mode="same")
        box = np.cumsum(np.cumsum(np.pad(blurred, ((1, 0), (1, 0))), axis=0), axis=1)
        s = scale
        observed = box[s:, s:] - box[:-s, s:] - box[s:, :-s] + box[:-s, :-s]
        self.scale = scale
        self.coeffs = ndimage.spline_filter(observed, order=3, mode="mirror")
        # The model is free at its borders (no frame pins it there): trust it a PSF inside.
        margin = kernel.shape[0] // 2 + 2 * scale
        self.cover = np.zeros(observed.shape, bool)
        self.cover[margin:-margin, margin:-margin] = True
        self.var = np.zeros(observed.shape)

    def at(self, x, y):
        """Observed model and its gradient at reference positions ``(x, y)``."""
        s = self.scale
        val, gx, gy = spline_gradient_at(self.coeffs, s * np.asarray(x), s * np.asarray(y))
        return val, s * gx, s * gy

    def coverage_at(self, x, y):
        """Which positions lie where the model is trusted; its variance (taken as 0) there."""
        x, y = self.scale * np.asarray(x), self.scale * np.asarray(y)
        return mask_at(self.cover, x, y), np.zeros(np.shape(x))
