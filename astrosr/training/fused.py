"""Training pairs for a refinement network: (fused image of a simulated stack, truth).

The pipeline's last step (`astrosr.MultiFrameSR`) refines the fused image on
its own grid with a scale-1 generator. It must learn what the fusion leaves
behind (residual blur, ringing, noise shaped by the iterations), so its
training inputs are made by the same fusion: a truth crop is observed as a
dithered stack through `astrosr.simulate.observe` (PSF, noise and flux drawn
from a `Degradation`), fused with `astrosr.fuse`, and the interior of the
fused image is paired with the truth. Fusing costs about a second per stack,
so the pairs are made once (`FusedPairs.simulate`), saved (`save`/`load`)
and cropped at random during training (`batch`).
"""

import numpy as np

from .. import simulate
from ..fusion import fuse
from ..models.transform import stack_softening
from .data import Degradation, TrainingPairs, augment, check_int

__all__ = ["FusedPairs"]

#: Coarse pixels of truth observed around each stack's interior (edge effects).
MARGIN = 4


class FusedPairs:
    """Fused images of simulated stacks and their truths, cropped into training batches.

    Parameters
    ----------
    fused, truth : numpy.ndarray ``(n, h, w)``
        Fused images and truths on the same (fine) grid, flux per fine pixel.
    softening : numpy.ndarray ``(n,)``
        Softening of the asinh transform of each pair (`stack_softening`).
    meta : dict, optional
        How the pairs were made (for the model card).
    """

    scale = 1

    def __init__(self, fused, truth, softening, *, meta=None):
        self.fused = np.asarray(fused, dtype=np.float32)
        self.truth = np.asarray(truth, dtype=np.float32)
        self.softening = np.asarray(softening, dtype=np.float32)
        if self.fused.shape != self.truth.shape or self.fused.ndim != 3:
            raise ValueError(f"fused and truth must be (n, h, w) of one shape, got "
                             f"{self.fused.shape} and {self.truth.shape}")
        if self.softening.shape != (len(self.fused),):
            raise ValueError("softening needs one value per pair")
        self.meta = dict(meta or {})

    def __len__(self):
        return len(self.fused)

    @classmethod
    def simulate(cls, images, n, *, scale=4, n_frames=16, size=32, method="reconstruct",
                 degradation=None, seed=None, progress=False):
        """Observe random truth crops as dithered stacks and fuse them.

        Parameters
        ----------
        images : list of array_like
            Non-negative truths (`astrosr.training.training_images`).
        n : int
            Number of stacks.
        scale : int
            Fine pixels per frame pixel of the simulated stacks.
        n_frames : int
            Frames per stack (random sub-pixel dithers).
        size : int
            Side of each pair's interior in frame pixels (the fused image
            and truth are ``size * scale`` on a side).
        method : str
            Fusion method (`astrosr.fuse`), with the true PSF.
        degradation : Degradation, optional
            Ranges of PSF, sky, read noise and flux.
        seed : int, optional
        progress : bool
            Show a progress bar.
        """
        from tqdm.auto import tqdm

        rng = np.random.default_rng(seed)
        deg = degradation or Degradation()
        n, scale, size = (check_int(v, k) for k, v in (("n", n), ("scale", scale), ("size", size)))
        crop = (size + 2 * MARGIN) * scale
        usable = [np.asarray(im, np.float32) for im in images if min(np.shape(im)) >= crop]
        if not usable:
            raise ValueError(f"no image is at least (size + {2 * MARGIN}) * scale = {crop} pixels "
                             "on a side")
        area = np.array([im.size for im in usable], dtype=float)
        out = np.empty((2, n, size * scale, size * scale), np.float32)
        soft = np.empty(n, np.float32)
        for i in tqdm(range(n), disable=not progress, desc="fused pairs"):
            img = usable[rng.choice(len(usable), p=area / area.sum())]
            out[0, i], out[1, i], soft[i] = _fused_pair(img, rng, deg, scale, n_frames, size, method)
        meta = {"n_stacks": n, "scale": scale, "n_frames": n_frames, "size": size,
                "fusion": method, "degradation": deg.to_dict(), "seed": seed}
        return cls(out[0], out[1], soft, meta=meta)

    def save(self, path):
        """Write the pairs to a ``.npz`` file."""
        import json

        np.savez_compressed(path, fused=self.fused, truth=self.truth, softening=self.softening,
                            meta=json.dumps(self.meta))

    @classmethod
    def load(cls, path):
        """Read pairs written by `save`."""
        import json

        with np.load(path) as f:
            return cls(f["fused"], f["truth"], f["softening"], meta=json.loads(str(f["meta"])))

    def split(self, n_val):
        """``(train, validation)``: the last ``n_val`` pairs held out."""
        n_val = check_int(n_val, "n_val")
        if n_val >= len(self):
            raise ValueError(f"n_val must be smaller than the {len(self)} pairs")
        cut = len(self) - n_val
        return (FusedPairs(self.fused[:cut], self.truth[:cut], self.softening[:cut], meta=self.meta),
                FusedPairs(self.fused[cut:], self.truth[cut:], self.softening[cut:], meta=self.meta))

    def batch(self, n, patch, rng):
        """``n`` random ``patch``-sided crops (random symmetry) as `TrainingPairs` at scale 1."""
        rng = np.random.default_rng(rng)
        side = self.fused.shape[1]
        if patch > side:
            raise ValueError(f"patch {patch} is larger than the pairs ({side} pixels)")
        x = np.empty((2, n, patch, patch), np.float32)
        soft = np.empty(n, np.float32)
        for k in range(n):
            i = int(rng.integers(len(self)))
            y0, x0 = (int(rng.integers(0, side - patch + 1)) for _ in range(2))
            both = np.stack([self.fused[i], self.truth[i]])[:, y0:y0 + patch, x0:x0 + patch]
            x[:, k] = augment(both.transpose(1, 2, 0), rng).transpose(2, 0, 1)
            soft[k] = self.softening[i]
        # No coarse observation exists at scale 1: the consistency term is off
        # for refinement (the pipeline holds the output to the frames instead).
        delta = np.ones((n, 1, 1), np.float32)
        return TrainingPairs(coarse=x[0], fine=x[1], variance=np.ones_like(x[0]), psf=delta,
                             softening=soft, scale=1)


def _fused_pair(img, rng, deg, scale, n_frames, size, method):
    psf_model, sky, read_noise, flux = deg.draw(rng)
    side = (size + 2 * MARGIN) * scale
    y0, x0 = (int(rng.integers(0, d - side + 1)) for d in img.shape)
    truth = augment(img[y0:y0 + side, x0:x0 + side], rng) * np.float32(flux)
    stack = simulate.observe(truth, n_frames=n_frames, scale=scale, psf=psf_model, sky=sky,
                             read_noise=read_noise, seed=rng)
    frames = stack.frames
    for f in frames:
        f.data = f.data - sky
    fused = fuse(frames, stack.shifts, scale=scale, method=method, psf=psf_model, reject=False)
    inner = slice(MARGIN * scale, (MARGIN + size) * scale)
    return (np.nan_to_num(fused.data[inner, inner]), truth[inner, inner],
            stack_softening([f.data for f in frames], scale))
