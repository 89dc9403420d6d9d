"""Training data: truths, and pairs observed through the observation model.

Truths (skies on the fine grid) come from the user's FITS files, the Hubble
Deep Field that ships with scikit-image, and synthetic skies
(`astrosr.simulate.make_sky`): `training_images`.

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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import simulate
from ..models.transform import forward, noise_sigma
from ..psf import ArrayPSF, GaussianPSF, MoffatPSF

__all__ = ["Degradation", "TrainingPairs", "training_images", "training_pairs"]

#: FITS file name endings searched in directories.
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")
#: Seed of the validation pairs: the same set whatever the training seed, so runs compare.
VAL_SEED = 2017
#: Radius (coarse pixels) of the PSF kernels kept for the consistency term.
CONSISTENCY_RADIUS = 4

def training_images(paths=None, *, include_hdf=True, n_synthetic=8, synthetic_size=256, seed=0):
    """Truths to train on: the user's FITS images, the Hubble Deep Field, synthetic skies.

    Parameters
    ----------
    paths : str, Path or list of them, optional
        FITS files, or directories searched (not recursively) for
        ``*.fits``, ``*.fit``, ``*.fts`` (and ``.gz``). Each file gives its
        first image HDU; NaN and inf pixels are filled with the background;
        the background (sigma-clipped median) is subtracted, negative pixels
        (the noise floor) are set to 0 because a truth is a non-negative
        flux, and the image is scaled to a 99.9th percentile of 1000 (the
        flux scale is randomised later). The image's own noise stays in the
        truth: prefer deep images.
    include_hdf : bool
        Add the Hubble Deep Field crop of scikit-image
        (`astrosr._data.hubble_deep_field`, 512 x 512, peak 3000).
    n_synthetic : int
        Synthetic skies (`astrosr.simulate.make_sky`), with random numbers of
        stars (20-300) and galaxies (0-15), nebulosity in 70 % of them.
    synthetic_size : int
        Side of the synthetic skies, fine pixels.
    seed : int
        Seed of the synthetic skies.

    Returns
    -------
    list of numpy.ndarray
        float32, non-negative 2-D images (flux per fine pixel).
    """
    return collect_images(paths, include_hdf, n_synthetic, synthetic_size, seed)[0]


def collect_images(paths, include_hdf, n_synthetic, synthetic_size, seed):
    """The truths of `training_images`, and a description of each source for the model card.

    Parameters
    ----------
    paths, include_hdf, n_synthetic, synthetic_size, seed
        As in `training_images`.

    Returns
    -------
    images : list of numpy.ndarray
        The truths, as `training_images` returns them.
    described : list of dict
        One entry per FITS file (``source``, ``path``, ``shape``), one for
        the Hubble Deep Field, and one for all the synthetic skies
        (``source``, ``n``, ``size``, ``seed``).

    Raises
    ------
    ValueError
        If there is no image at all.
    """
    images, described = [], []
    for path in _fits_paths(paths):
        images.append(_read_truth(path))
        described.append({"source": "fits", "path": str(path), "shape": list(images[-1].shape)})
    if include_hdf:
        from .._data import hubble_deep_field

        images.append(hubble_deep_field().astype(np.float32))
        described.append({"source": "skimage.data.hubble_deep_field", "shape": [512, 512]})
    n_synthetic = check_int(n_synthetic, "n_synthetic", minimum=0)
    rng = np.random.default_rng(seed)
    images += [synthetic_sky(rng, synthetic_size) for _ in range(n_synthetic)]
    if n_synthetic:
        described.append({"source": "astrosr.simulate.make_sky", "n": n_synthetic,
                          "size": int(synthetic_size), "seed": seed})
    if not images:
        raise ValueError("no training images: give FITS paths, include_hdf=True or n_synthetic > 0")
    return images, described


def _fits_paths(paths):
    if paths is None:
        return []
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.name.lower().endswith(FITS_SUFFIXES))
            if not found:
                raise ValueError(f"directory {p} has no FITS files ({', '.join(FITS_SUFFIXES)})")
            out += found
        elif p.is_file():
            out.append(p)
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


def synthetic_sky(rng, size):
    """One random synthetic sky (`astrosr.simulate.make_sky`), as `training_images` draws them.

    Parameters
    ----------
    rng : numpy.random.Generator
        Draws the numbers of stars (20-299) and galaxies (0-15), the
        nebulosity (70 % of the time) and its flux; advanced.
    size : int
        Side of the sky, fine pixels.

    Returns
    -------
    numpy.ndarray
        float32, ``(size, size)``.
    """
    sky = simulate.make_sky(
        (size, size), n_stars=int(rng.integers(20, 300)), n_galaxies=int(rng.integers(0, 16)),
        nebula=bool(rng.random() < 0.7), nebula_flux=float(np.exp(rng.uniform(0.0, np.log(100.0)))),
        seed=rng)
    return sky.astype(np.float32)


# =========================================================================== pairs


@dataclass(frozen=True)
class Degradation:
    """Ranges from which each training pair's observation is drawn.

    The PSF is Gaussian, or (``moffat_fraction`` of the time) Moffat, the
    profile of seeing-limited stars with extended wings; widths are in coarse
    pixels, from well sampled to barely sampled. Sky and read noise span
    space- to ground-based levels; the flux scale moves the same truth from
    noise-dominated to bright (all per coarse pixel, in electrons, gain 1).

    Attributes
    ----------
    psf_sigma : tuple of float
        Gaussian sigma, uniform, coarse pixels (0.5-1.5: FWHM 1.2-3.5).
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

    psf_sigma: tuple = (0.5, 1.5)
    moffat_fraction: float = 0.3
    moffat_fwhm: tuple = (1.2, 3.0)
    moffat_beta: tuple = (3.0, 5.0)
    sky: tuple = (10.0, 1000.0)
    read_noise: tuple = (2.0, 10.0)
    flux_scale: tuple = (0.05, 20.0)
    max_margin: int = 6

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


def split_validation(images, crop):
    """Hold out a band at the bottom of each image tall enough; training never sees it.

    Parameters
    ----------
    images : list of numpy.ndarray
        2-D truths.
    crop : int
        Side of the crops drawn from them, fine pixels.

    Returns
    -------
    train_images : list of numpy.ndarray
        Every image; those at least ``3 * crop`` tall and ``crop`` wide lose
        their bottom band.
    val_images : list of numpy.ndarray
        The bands held out: ``max(crop, 15 %)`` of the height of each image
        tall enough (empty if none is).
    """
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
