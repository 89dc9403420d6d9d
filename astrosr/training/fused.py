"""Training pairs for a refinement network: (fused image of a simulated stack, truth).

The pipeline's last step (`astrosr.MultiFrameSR`) refines the fused image on
its own grid with a scale-1 generator. It must learn what the fusion leaves
behind (residual blur, ringing, noise shaped by the iterations), so its
training inputs are made by the same fusion: a truth crop is observed as a
dithered stack through `astrosr.simulate.observe` (PSF, noise and flux drawn
from a `Degradation`), fused with `astrosr.fuse`, and the interior of the
fused image is paired with the truth. Fusing costs about a second per stack,
so the pairs are made once (`FusedPairs.simulate`), saved (`save`/`load`)
and cropped at random during training (`batch`). Each pair remembers the
truth image it was cut from, so that validation holds out whole images
(`FusedPairs.split`): no crop of a held-out image is trained on.
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
    image_index : numpy.ndarray ``(n,)`` of int, optional
        The truth image each pair was cut from (an index into the images
        given to `simulate`; their names are ``meta["images"]``). Unknown
        (None) for pairs saved by earlier versions.
    """

    scale = 1

    def __init__(self, fused, truth, softening, *, meta=None, image_index=None):
        self.fused = np.asarray(fused, dtype=np.float32)
        self.truth = np.asarray(truth, dtype=np.float32)
        self.softening = np.asarray(softening, dtype=np.float32)
        if self.fused.shape != self.truth.shape or self.fused.ndim != 3:
            raise ValueError(f"fused and truth must be (n, h, w) of one shape, got "
                             f"{self.fused.shape} and {self.truth.shape}")
        if self.softening.shape != (len(self.fused),):
            raise ValueError("softening needs one value per pair")
        self.meta = dict(meta or {})
        self.image_index = None if image_index is None else np.asarray(image_index, np.int64)
        if self.image_index is not None and self.image_index.shape != (len(self.fused),):
            raise ValueError("image_index needs one value per pair")

    def __len__(self):
        return len(self.fused)

    @classmethod
    def simulate(cls, images, n, *, scale=4, n_frames=16, size=32, method="reconstruct",
                 degradation=None, seed=None, progress=False, labels=None):
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
        labels : list of ImageLabel or str, optional
            Names of the images (`astrosr.training.training_images` with
            ``labels=True``), recorded in ``meta["images"]``; default their
            indices.
        """
        from tqdm.auto import tqdm

        rng = np.random.default_rng(seed)
        deg = degradation or Degradation()
        n, scale, size = (check_int(v, k) for k, v in (("n", n), ("scale", scale), ("size", size)))
        crop = (size + 2 * MARGIN) * scale
        usable = [i for i, im in enumerate(images) if min(np.shape(im)) >= crop]
        if not usable:
            raise ValueError(f"no image is at least (size + {2 * MARGIN}) * scale = {crop} pixels "
                             "on a side")
        arrays = {i: np.asarray(images[i], np.float32) for i in usable}
        area = np.array([arrays[i].size for i in usable], dtype=float)
        out = np.empty((2, n, size * scale, size * scale), np.float32)
        soft = np.empty(n, np.float32)
        index = np.empty(n, np.int64)
        for i in tqdm(range(n), disable=not progress, desc="fused pairs"):
            index[i] = usable[rng.choice(len(usable), p=area / area.sum())]
            out[0, i], out[1, i], soft[i] = _fused_pair(arrays[index[i]], rng, deg, scale, n_frames,
                                                        size, method)
        names = [getattr(lab, "name", lab) for lab in labels] if labels is not None else None
        meta = {"n_stacks": n, "scale": scale, "n_frames": n_frames, "size": size,
                "fusion": method, "degradation": deg.to_dict(), "seed": seed,
                "images": [str(x) for x in (names or range(len(images)))]}
        return cls(out[0], out[1], soft, meta=meta, image_index=index)

    def save(self, path):
        """Write the pairs to a ``.npz`` file."""
        import json

        extra = {} if self.image_index is None else {"image_index": self.image_index}
        np.savez_compressed(path, fused=self.fused, truth=self.truth, softening=self.softening,
                            meta=json.dumps(self.meta), **extra)

    @classmethod
    def load(cls, path):
        """Read pairs written by `save` (those of earlier versions have no ``image_index``)."""
        import json

        with np.load(path) as f:
            index = f["image_index"] if "image_index" in f.files else None
            return cls(f["fused"], f["truth"], f["softening"], meta=json.loads(str(f["meta"])),
                       image_index=index)

    @property
    def n_images(self):
        """Number of distinct truth images the pairs were cut from (None if unknown)."""
        return None if self.image_index is None else len(np.unique(self.image_index))

    def split(self, n_val, *, by="image"):
        """``(train, validation)``, at least ``n_val`` pairs held out.

        Parameters
        ----------
        n_val : int
            Least number of validation pairs (fewer than the pairs).
        by : {"image", "pair"}
            ``"image"``: every pair of the images of the last pairs is held
            out, image by image from the last pair back, until there are
            ``n_val``; no pair of a held-out image is trained on (needs
            `image_index` and two images or more). ``"pair"``: the last
            ``n_val`` pairs, whose images may also give training pairs.

        Returns
        -------
        train, validation : FusedPairs
        """
        n_val = check_int(n_val, "n_val")
        if n_val >= len(self):
            raise ValueError(f"n_val must be smaller than the {len(self)} pairs")
        if by == "pair":
            held = np.arange(len(self)) >= len(self) - n_val
        elif by == "image":
            held = self._held_by_image(n_val)
        else:
            raise ValueError(f"by must be 'image' or 'pair', got {by!r}")
        return self._subset(~held), self._subset(held)

    def _held_by_image(self, n_val):
        if not (self.n_images or 0) >= 2:
            raise ValueError("holding out by image needs pairs from two images or more, with "
                             "their image_index (FusedPairs.simulate records it); or by='pair'")
        held = np.zeros(len(self), bool)
        for i in self.image_index[::-1]:
            if held.sum() >= n_val:
                break
            held |= self.image_index == i
        if held.all():
            raise ValueError(f"holding out whole images for {n_val} pairs leaves none to train on: "
                             "a smaller n_val, or pairs from more images")
        return held

    def _subset(self, keep):
        index = None if self.image_index is None else self.image_index[keep]
        return FusedPairs(self.fused[keep], self.truth[keep], self.softening[keep], meta=self.meta,
                          image_index=index)

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
