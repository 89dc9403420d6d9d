"""Training data: truths, and pairs observed through the observation model.

Truths (skies on the fine grid) come from the user's FITS files, the Hubble
Deep Field that ships with scikit-image, and synthetic skies of several
classes (`SYNTHETIC_CLASSES`, `synthetic_sky`): `training_images`, which
can label each image with its class and a unique name. Evaluation holds out
whole images, never crops of an image trained on: `hold_out`,
`leave_one_out`, `split_validation`.

A random crop of a truth (with a margin, so light from beyond the patch
enters it as on a real detector), randomly flipped, rotated and scaled in
flux, is observed through the real observation model
(`astrosr.simulate.observe`: PSF, integration over the coarse pixels, sky,
Poisson and read noise, digitisation) with a PSF and noise drawn from
`Degradation`; the sky is subtracted. The fine target is the truth crop
itself, flux per fine pixel in the units of the observation: its
``scale x scale`` block sums are the noise-free observation before the PSF.
Noise is fresh at every call: `training_pairs`.
"""

import math
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import simulate
from ..models.transform import forward, noise_sigma
from ..psf import ArrayPSF, GaussianPSF, MoffatPSF

__all__ = ["Degradation", "TrainingPairs", "training_images", "training_pairs", "ImageLabel",
           "SYNTHETIC_CLASSES", "synthetic_sky", "hold_out", "leave_one_out", "split_validation",
           "validation_images"]

#: FITS file name endings searched in directories.
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")
#: Seed of the validation pairs: the same set whatever the training seed, so runs compare.
VAL_SEED = 2017
#: Radius (coarse pixels) of the PSF kernels kept for the consistency term.
CONSISTENCY_RADIUS = 4
#: FWHM of a Gaussian in units of its sigma.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
#: `Degradation`'s defaults before the wider ranges (`Degradation.legacy`).
LEGACY_DEGRADATION = {"psf_sigma": (0.5, 1.5), "moffat_fraction": 0.3, "moffat_fwhm": (1.2, 3.0),
                      "moffat_beta": (3.0, 5.0), "sky": (10.0, 1000.0), "read_noise": (2.0, 10.0),
                      "flux_scale": (0.05, 20.0), "max_margin": 6}
#: Classes of synthetic truths (`synthetic_sky`): ``"survey"`` is `astrosr.simulate.make_sky`'s
#: mix of stars, galaxies and nebulosity (the only class before these were added); the others are
#: `astrosr.simulate.crowded_field`, `~astrosr.simulate.filamentary_nebula` and
#: `~astrosr.simulate.spiral_galaxy`, with foreground stars.
SYNTHETIC_CLASSES = ("survey", "crowded_field", "filamentary_nebula", "spiral_galaxy")


class ImageLabel(NamedTuple):
    """What a training image is (`training_images` with ``labels=True``).

    Attributes
    ----------
    kind : str
        Its class: ``"fits"`` (or the class the user gave its files),
        ``"hdf"`` (the Hubble Deep Field), or one of `SYNTHETIC_CLASSES`.
    name : str
        Unique among the images: ``"fits:<path>"``, ``"hdf"``, ``"<kind>:<i>"``.
    """

    kind: str
    name: str


def training_images(paths=None, *, include_hdf=True, n_synthetic=8, synthetic_size=256, seed=0,
                    classes=SYNTHETIC_CLASSES, labels=False):
    """Truths to train on: the user's FITS images, the Hubble Deep Field, synthetic skies.

    Parameters
    ----------
    paths : str, Path, list of them, or dict, optional
        FITS files, or directories searched (not recursively) for
        ``*.fits``, ``*.fit``, ``*.fts`` (and ``.gz``); a dict maps a class
        name (``"star_field"``, ``"nebula"``...) to such paths, and labels
        their images with it (otherwise their class is ``"fits"``). Each
        file gives its first image HDU; NaN and inf pixels are filled with
        the background; the background (sigma-clipped median) is subtracted,
        negative pixels (the noise floor) are set to 0 because a truth is a
        non-negative flux, and the image is scaled to a 99.9th percentile of
        1000 (the flux scale is randomised later). The image's own noise
        stays in the truth: prefer deep images.
    include_hdf : bool
        Add the Hubble Deep Field crop of scikit-image
        (`astrosr._data.hubble_deep_field`, 512 x 512, peak 3000).
    n_synthetic : int
        Synthetic skies (`synthetic_sky`), the classes taken in turn.
    synthetic_size : int
        Side of the synthetic skies, fine pixels.
    seed : int
        Seed of the synthetic skies.
    classes : sequence of str
        Classes of the synthetic skies, from `SYNTHETIC_CLASSES`; with
        ``("survey",)`` the skies are those of earlier versions (the same
        seed gives the same images).
    labels : bool
        Also return an `ImageLabel` per image.

    Returns
    -------
    images : list of numpy.ndarray
        float32, non-negative 2-D images (flux per fine pixel).
    labels : list of ImageLabel
        With ``labels=True``, in the order of the images.
    """
    images, _, found = collect_images(paths, include_hdf, n_synthetic, synthetic_size, seed,
                                      classes=classes, labels=True)
    return (images, found) if labels else images


def collect_images(paths, include_hdf, n_synthetic, synthetic_size, seed, *,
                   classes=SYNTHETIC_CLASSES, labels=False):
    """The truths of `training_images`, and a description of each source for the model card.

    Parameters
    ----------
    paths, include_hdf, n_synthetic, synthetic_size, seed, classes
        As in `training_images`.
    labels : bool
        Also return the labels.

    Returns
    -------
    images : list of numpy.ndarray
        The truths, as `training_images` returns them.
    described : list of dict
        One entry per FITS file (``source``, ``path``, ``shape``, ``kind``),
        one for the Hubble Deep Field, and one for all the synthetic skies
        (``source``, ``n``, ``size``, ``seed``, ``classes``: the count of
        each class).
    labels : list of ImageLabel
        With ``labels=True``.

    Raises
    ------
    ValueError
        If there is no image at all, or a class is unknown.
    """
    images, described, found = [], [], []
    for kind, path in _fits_paths(paths):
        images.append(_read_truth(path))
        found.append(ImageLabel(kind, f"fits:{path}"))
        described.append({"source": "fits", "path": str(path), "shape": list(images[-1].shape),
                          "kind": kind})
    if include_hdf:
        from .._data import hubble_deep_field

        images.append(hubble_deep_field().astype(np.float32))
        found.append(ImageLabel("hdf", "hdf"))
        described.append({"source": "skimage.data.hubble_deep_field", "shape": [512, 512]})
    kinds = _synthetic_kinds(check_int(n_synthetic, "n_synthetic", minimum=0), classes)
    rng = np.random.default_rng(seed)
    images += [synthetic_sky(rng, synthetic_size, kind=k) for k in kinds]
    found += [ImageLabel(k, f"{k}:{i}") for i, k in enumerate(kinds)]
    if kinds:
        described.append({"source": "astrosr.training.data.synthetic_sky", "n": len(kinds),
                          "size": int(synthetic_size), "seed": seed,
                          "classes": dict(Counter(kinds))})
    if not images:
        raise ValueError("no training images: give FITS paths, include_hdf=True or n_synthetic > 0")
    return (images, described, found) if labels else (images, described)


def _synthetic_kinds(n, classes):
    """``n`` class names, ``classes`` taken in turn (checked against `SYNTHETIC_CLASSES`)."""
    classes = [classes] if isinstance(classes, str) else list(classes)
    unknown = [c for c in classes if c not in SYNTHETIC_CLASSES]
    if unknown or not classes:
        raise ValueError(f"classes must be a non-empty selection of {SYNTHETIC_CLASSES}, "
                         f"got {unknown or classes}")
    return [classes[i % len(classes)] for i in range(n)]


def _fits_paths(paths):
    """``(kind, path)`` of every FITS file named or found in a directory."""
    if paths is None:
        return []
    if isinstance(paths, dict):
        return [(str(kind), p) for kind, group in paths.items() for _, p in _fits_paths(group)]
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.name.lower().endswith(FITS_SUFFIXES))
            if not found:
                raise ValueError(f"directory {p} has no FITS files ({', '.join(FITS_SUFFIXES)})")
            out += [("fits", f) for f in found]
        elif p.is_file():
            out.append(("fits", p))
        else:
            raise FileNotFoundError(f"no such FITS file or directory: {p}")
    return out


def _read_truth(path):
    """First image HDU of a FITS file as a non-negative truth (see `training_images`)."""
    from astropy.io import fits
    from astropy.stats import sigma_clipped_stats

    with fits.open(path) as hdul:
        data = next((h.data for h in hdul if h.is_image and h.data is not None
                     and h.data.ndim >= 2), None)
        if data is None:
            raise ValueError(f"{path} has no image HDU")
        data = np.asarray(data, dtype=np.float64)
    while data.ndim > 2:  # cubes: the first plane
        data = data[0]
    good = np.isfinite(data)
    if good.sum() < 0.5 * data.size:
        raise ValueError(f"{path}: fewer than half of the pixels are finite")
    _, background, _ = sigma_clipped_stats(data[good], sigma=3.0, maxiters=5)
    data = np.where(good, data - background, 0.0)
    data = np.clip(data, 0.0, None)  # a truth is a non-negative flux (see training_images)
    peak = np.percentile(data, 99.9)
    if not peak > 0:
        raise ValueError(f"{path}: no signal above the background")
    return (data * (1000.0 / peak)).astype(np.float32)


def synthetic_sky(rng, size, *, kind="survey"):
    """One random synthetic sky of a class, as `training_images` draws them.

    Parameters
    ----------
    rng : numpy.random.Generator
        Draws the sky's parameters and the sky; advanced.
    size : int
        Side of the sky, fine pixels.
    kind : str
        One of `SYNTHETIC_CLASSES`:

        ``"survey"``
            `astrosr.simulate.make_sky` with 20-299 stars, 0-15 galaxies and,
            70 % of the time, nebulosity of 1-100 per fine pixel (log-uniform).
        ``"crowded_field"``
            `astrosr.simulate.crowded_field`: 0.005-0.05 stars per fine pixel
            (log-uniform), luminosity-function slope 0.2-0.4, 0-80 % of them
            in a cluster.
        ``"filamentary_nebula"``
            `astrosr.simulate.filamentary_nebula` (index 2.5-4, width 0.1-0.3,
            1-100 per fine pixel) with 10-99 foreground stars.
        ``"spiral_galaxy"``
            `astrosr.simulate.spiral_galaxy` (total flux 1e4-1e6, log-uniform;
            dust 0-2) with 0-29 foreground stars and 0-4 small galaxies.

    Returns
    -------
    numpy.ndarray
        float32, ``(size, size)``, non-negative.
    """
    if kind not in SYNTHETIC_CLASSES:
        raise ValueError(f"kind must be one of {SYNTHETIC_CLASSES}, got {kind!r}")
    shape = (check_int(size, "size", minimum=8),) * 2
    return _SKY_MAKERS[kind](rng, shape).astype(np.float32)


def _survey(rng, shape):
    return simulate.make_sky(
        shape, n_stars=int(rng.integers(20, 300)), n_galaxies=int(rng.integers(0, 16)),
        nebula=bool(rng.random() < 0.7), nebula_flux=float(np.exp(rng.uniform(0.0, np.log(100.0)))),
        seed=rng)


def _crowded(rng, shape):
    return simulate.crowded_field(shape, density=_log_uniform(rng, (0.005, 0.05)),
                                  lf_slope=rng.uniform(0.2, 0.4),
                                  cluster_fraction=rng.uniform(0.0, 0.8), seed=rng)


def _filaments(rng, shape):
    nebula = simulate.filamentary_nebula(shape, slope=rng.uniform(2.5, 4.0),
                                         width=rng.uniform(0.1, 0.3),
                                         mean_flux=_log_uniform(rng, (1.0, 100.0)), seed=rng)
    return nebula + _foreground(rng, shape, int(rng.integers(10, 100)), 0)


def _spiral(rng, shape):
    galaxy = simulate.spiral_galaxy(shape, flux=_log_uniform(rng, (1e4, 1e6)),
                                    dust=rng.uniform(0.0, 2.0), seed=rng)
    return galaxy + _foreground(rng, shape, int(rng.integers(0, 30)), int(rng.integers(0, 5)))


def _foreground(rng, shape, n_stars, n_galaxies):
    """Stars (and small galaxies) in front of or behind a nebula or a galaxy."""
    return simulate.make_sky(shape, n_stars=n_stars, n_galaxies=n_galaxies, nebula=False,
                             galaxy_flux=(500.0, 5e3), seed=rng)


_SKY_MAKERS = {"survey": _survey, "crowded_field": _crowded, "filamentary_nebula": _filaments,
               "spiral_galaxy": _spiral}


# =========================================================================== pairs


@dataclass(frozen=True)
class Degradation:
    """Ranges from which each training pair's observation is drawn.

    The PSF is Gaussian, or (``moffat_fraction`` of the time) Moffat, the
    profile of seeing-limited stars with extended wings; widths are in coarse
    pixels, by default FWHM 1 (barely sampled) to 4 (well sampled, as in
    poor seeing), and Moffat indices 2.5-4.5 (broad to moderate wings). Sky
    and read noise span photon-starved (a fraction of an electron of sky a
    pixel, under the read noise: narrow bands, short exposures, space) to
    bright (1e4 electrons: a bright ground-based sky); the flux scale moves
    the same truth from noise-dominated to bright (all per coarse pixel, in
    electrons, gain 1). `Degradation.legacy` gives the ranges of earlier
    versions.

    Attributes
    ----------
    psf_sigma : tuple of float
        Gaussian sigma, uniform, coarse pixels (0.425-1.70: FWHM 1-4).
    moffat_fraction : float
        Probability of a Moffat PSF.
    moffat_fwhm : tuple of float
        Moffat FWHM, uniform, coarse pixels.
    moffat_beta : tuple of float
        Moffat power index, uniform.
    sky : tuple of float
        Sky level, log-uniform, electrons per coarse pixel.
    read_noise : tuple of float
        Read noise, uniform, electrons.
    flux_scale : tuple of float
        Factor on the truth's flux, log-uniform.
    max_margin : int
        Largest margin (coarse pixels) of truth observed around a patch, so
        light from beyond it enters; wider PSF wings come from a mirror image.
    """

    psf_sigma: tuple = (1.0 / FWHM_PER_SIGMA, 4.0 / FWHM_PER_SIGMA)
    moffat_fraction: float = 0.5
    moffat_fwhm: tuple = (1.0, 4.0)
    moffat_beta: tuple = (2.5, 4.5)
    sky: tuple = (0.3, 1e4)
    read_noise: tuple = (1.0, 12.0)
    flux_scale: tuple = (0.05, 20.0)
    max_margin: int = 6

    @classmethod
    def legacy(cls, **changes):
        """The default ranges of earlier versions, with ``changes``.

        Gaussian sigma 0.5-1.5 (FWHM 1.2-3.5), 30 % Moffat of FWHM 1.2-3 and
        beta 3-5, sky 10-1000, read noise 2-10 (`LEGACY_DEGRADATION`): a
        pair source seeded as before draws the same pairs from them.

        Parameters
        ----------
        **changes
            Fields to set otherwise, as in the constructor.

        Returns
        -------
        Degradation
        """
        return cls(**{**LEGACY_DEGRADATION, **changes})

    def draw(self, rng):
        """One random ``(psf, sky, read_noise, flux_scale)``."""
        if rng.random() < self.moffat_fraction:
            psf = MoffatPSF(rng.uniform(*self.moffat_fwhm), rng.uniform(*self.moffat_beta))
        else:
            psf = GaussianPSF(rng.uniform(*self.psf_sigma))
        return psf, _log_uniform(rng, self.sky), rng.uniform(*self.read_noise), \
            _log_uniform(rng, self.flux_scale)

    def to_dict(self):
        """The ranges as a JSON-friendly dict (for the model card)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _log_uniform(rng, bounds):
    lo, hi = bounds
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


@dataclass
class TrainingPairs:
    """A batch of (coarse observation, fine truth) pairs, float32.

    Attributes
    ----------
    coarse : numpy.ndarray ``(n, p, p)``
        Sky-subtracted noisy observations (electrons per coarse pixel).
    fine : numpy.ndarray ``(n, p*scale, p*scale)``
        Truth, flux per fine pixel: ``scale x scale`` block sums are the
        noise-free observation before the PSF.
    variance : numpy.ndarray ``(n, p, p)``
        Variance of ``coarse`` (the observation model's).
    psf : numpy.ndarray ``(n, k, k)``
        Each pair's PSF on the fine grid, truncated at `CONSISTENCY_RADIUS`
        coarse pixels and renormalised (for the consistency term).
    softening : numpy.ndarray ``(n,)``
        Softening of the asinh transform: `noise_sigma` of each coarse patch.
    scale : int
    """

    coarse: np.ndarray
    fine: np.ndarray
    variance: np.ndarray
    psf: np.ndarray
    softening: np.ndarray
    scale: int

    def __len__(self):
        return len(self.coarse)

    def network_arrays(self):
        """Network input and target, ``(n, h, w, 1)`` on the asinh scale.

        The target is the fine truth times ``scale**2`` (flux per coarse-pixel
        area, see `astrosr.models.srgan`), with the coarse patch's softening.
        """
        s = self.softening[:, None, None]
        x = forward(self.coarse, s)[..., None]
        y = forward(self.fine * np.float32(self.scale ** 2), s)[..., None]
        return x, y


def training_pairs(images, n, *, scale=4, patch=24, degradation=None, seed=None):
    """Random training pairs observed through the observation model.

    Parameters
    ----------
    images : list of array_like
        Non-negative truths (`training_images`), at least ``patch * scale``
        on a side (smaller ones are skipped).
    n : int
        Number of pairs.
    scale : int
        Fine pixels per coarse pixel.
    patch : int
        Side of the coarse patches.
    degradation : Degradation, optional
        Ranges of PSF, noise and flux (default `Degradation()`).
    seed : int or numpy.random.Generator, optional
        A Generator is advanced (fresh noise at each call).

    Returns
    -------
    TrainingPairs
    """
    rng = np.random.default_rng(seed)
    deg = degradation or Degradation()
    scale, patch, n = (check_int(v, k) for k, v in (("scale", scale), ("patch", patch), ("n", n)))
    usable = [np.asarray(im, dtype=np.float32) for im in images]
    usable = [im for im in usable if im.ndim == 2 and min(im.shape) >= patch * scale]
    if not usable:
        raise ValueError(f"no training image is at least patch*scale = {patch * scale} pixels on "
                         "a side: use a smaller patch or larger images")
    area = np.array([im.size for im in usable], dtype=float)
    side = 2 * CONSISTENCY_RADIUS * scale + 1
    out = {k: np.empty((n, patch, patch), np.float32) for k in ("coarse", "variance")}
    out["fine"] = np.empty((n, patch * scale, patch * scale), np.float32)
    out["psf"] = np.empty((n, side, side), np.float32)
    for i in range(n):
        img = usable[rng.choice(len(usable), p=area / area.sum())]
        coarse, fine, var, kernel = _one_pair(img, rng, deg, scale, patch)
        out["coarse"][i], out["fine"][i], out["variance"][i] = coarse, fine, var
        out["psf"][i] = _fit_kernel(kernel, side)
    softening = np.array([noise_sigma(c) for c in out["coarse"]], dtype=np.float32)
    return TrainingPairs(softening=softening, scale=scale, **out)


def _one_pair(img, rng, deg, scale, patch):
    psf_model, sky, read_noise, flux = deg.draw(rng)
    kernel = psf_model.kernel(scale)
    room = (min(img.shape) // scale - patch) // 2
    margin = min(math.ceil((kernel.shape[0] // 2) / scale), deg.max_margin, room)
    size = (patch + 2 * margin) * scale
    y0, x0 = (int(rng.integers(0, d - size + 1)) for d in img.shape)
    crop = augment(img[y0:y0 + size, x0:x0 + size], rng) * np.float32(flux)
    frame = simulate.observe(crop, shifts=[[0.0, 0.0]], scale=scale,
                             psf=ArrayPSF(kernel, oversampling=scale), sky=sky,
                             read_noise=read_noise, seed=rng).frames[0]
    inner = slice(margin, margin + patch)
    fine = slice(margin * scale, (margin + patch) * scale)
    return (frame.data[inner, inner] - sky, crop[fine, fine],
            frame.uncertainty.array[inner, inner], kernel)


def augment(crop, rng):
    """One of the 8 symmetries of the square, drawn at random.

    Parameters
    ----------
    crop : numpy.ndarray
        Square image, or stack of square images on the first two axes.
    rng : numpy.random.Generator
        Draws the rotation (a multiple of 90 degrees) and the flip; advanced.

    Returns
    -------
    numpy.ndarray
        A view of ``crop``, rotated in the plane of its first two axes and
        perhaps flipped left-right.
    """
    crop = np.rot90(crop, int(rng.integers(4)))
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def _fit_kernel(kernel, side):
    """Crop or zero-pad a centred odd kernel to ``side``, renormalised."""
    half, h = kernel.shape[0] // 2, side // 2
    if half >= h:
        k = kernel[half - h: half + h + 1, half - h: half + h + 1]
    else:
        k = np.pad(kernel, h - half)
    return k / k.sum()


def _keys(images, labels):
    """The name of each image (its label's, or its index as a string)."""
    if labels is None:
        return [str(i) for i in range(len(images))]
    if len(labels) != len(images):
        raise ValueError(f"labels must have one entry per image: {len(labels)} for "
                         f"{len(images)} images")
    names = [lab.name if isinstance(lab, ImageLabel) else str(lab) for lab in labels]
    if len(set(names)) != len(names):
        raise ValueError("labels must name each image once")
    return names


def hold_out(images, held, *, labels=None):
    """Split images into training and held-out sets by whole image.

    Parameters
    ----------
    images : list of array_like
        The truths.
    held : iterable of int or str
        The images to hold out: indices, or names (the ``name`` of their
        `ImageLabel`, or the label itself when labels are strings).
    labels : list of ImageLabel or str, optional
        One per image (`training_images` with ``labels=True``).

    Returns
    -------
    train_images, held_images : list
        The images, in their order; no image is in both.

    Raises
    ------
    ValueError
        If a held image is not among the images.
    """
    names = _keys(images, labels)
    held = {names[h] if isinstance(h, (int, np.integer)) and not isinstance(h, bool)
            and 0 <= h < len(names) else h for h in held}
    unknown = held - set(names)
    if unknown:
        raise ValueError(f"held-out images {sorted(map(str, unknown))} are not among the "
                         f"{len(names)} images")
    return ([im for im, n in zip(images, names) if n not in held],
            [im for im, n in zip(images, names) if n in held])


def leave_one_out(images, *, labels=None):
    """Leave-one-image-out folds: each image held out in turn, trained on the others.

    Parameters
    ----------
    images : list of array_like
        At least two truths.
    labels : list of ImageLabel or str, optional
        One per image; they name the folds.

    Yields
    ------
    name : str
        The held-out image's name (its index as a string without labels).
    train_images : list
        Every other image.
    held_image : array_like
    """
    if len(images) < 2:
        raise ValueError("leave_one_out needs at least two images")
    for name in _keys(images, labels):
        train, (held,) = hold_out(images, [name], labels=labels)
        yield name, train, held


def validation_images(images, crop, *, labels=None):
    """The images `split_validation` holds out whole: indices, one per class that has two.

    An image qualifies if it is at least ``crop`` on a side; among those of
    a class (``labels``' kinds; all one class without labels), the last is
    held out where another stays to train on. Empty if none can be.
    """
    kinds = ["all"] * len(images) if labels is None else [
        lab.kind if isinstance(lab, ImageLabel) else "all" for lab in labels]
    big = [i for i, im in enumerate(images) if min(np.shape(im)[:2]) >= crop]
    held = []
    for kind in dict.fromkeys(kinds):
        members = [i for i in big if kinds[i] == kind]
        if len(members) >= 2:
            held.append(members[-1])
    return sorted(held)


def split_validation(images, crop, *, labels=None):
    """Hold out whole images for validation; training never sees a crop of them.

    Parameters
    ----------
    images : list of numpy.ndarray
        2-D truths.
    crop : int
        Side of the crops drawn from them, fine pixels.
    labels : list of ImageLabel, optional
        One per image (`training_images` with ``labels=True``): one image of
        each class that has at least two is held out, so that validation
        covers the classes. Without labels, the last image.

    Returns
    -------
    train_images : list of numpy.ndarray
        The images trained on.
    val_images : list of numpy.ndarray
        The images held out (`validation_images`): whole images, never also
        in ``train_images``. Only where no image can be held out whole (a
        single image, or one per class) the bottom band of each image tall
        enough (``max(crop, 15 %)`` of its height, for images at least
        ``3 * crop`` tall and ``crop`` wide) is held out instead, and the
        images trained on lose it; empty if no image is tall enough.
    """
    held = validation_images(images, crop, labels=labels)
    if held:
        return hold_out(images, held)
    train_imgs, val_imgs = [], []
    for im in images:
        if im.shape[0] >= 3 * crop and im.shape[1] >= crop:
            band = max(crop, int(0.15 * im.shape[0]))
            train_imgs.append(im[:-band])
            val_imgs.append(im[-band:])
        else:
            train_imgs.append(im)
    return train_imgs, val_imgs


def check_int(value, name, *, minimum=1):
    """Validate an integer option (a count, a size) and return it as an int.

    Parameters
    ----------
    value : int
        The value to check; an integral float is accepted, a bool is not.
    name : str
        Its name, for the error message.
    minimum : int
        Least value allowed.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        If ``value`` is a bool, not integral or less than ``minimum``.
    """
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
