"""Test images and stack settings shared by the benchmarks."""

from pathlib import Path

import numpy as np

from astrosr import simulate
from astrosr._data import hubble_deep_field
from astrosr.psf import GaussianPSF

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
REAL = {"spitzer": "spitzer_example_image.fits", "2mass": "gc_2mass_k.fits"}
ALL_IMAGES = ["stars", "galaxies", "hdf", "spitzer", "2mass"]

N_FRAMES = 16
SCALE = 4
PSF = GaussianPSF(1.2)
SKY = 100.0
READ_NOISE = 5.0


def load_real(path, size=512, peak=5000.0):
    """Centre crop of a real image, NaN -> median, floor (1st percentile) removed, peak 5000 e-."""
    from astropy.io import fits

    data = np.asarray(fits.getdata(path), dtype=float)
    ny, nx = data.shape
    y0, x0 = (ny - size) // 2, (nx - size) // 2
    crop = data[y0:y0 + size, x0:x0 + size].copy()
    crop[~np.isfinite(crop)] = np.nanmedian(crop)
    crop = np.clip(crop - np.percentile(crop, 1), 0.0, None)
    return crop * (peak / crop.max())


def make_truth(name, seed):
    """A 512x512 fine-grid truth (electrons per fine pixel) for a named test image."""
    if name == "stars":
        return simulate.make_sky((512, 512), n_stars=150, n_galaxies=0, nebula=False, seed=seed)
    if name == "galaxies":
        return simulate.make_sky((512, 512), n_stars=20, n_galaxies=25, nebula=True, seed=seed)
    if name == "hdf":
        return hubble_deep_field(512)
    return load_real(DATA / REAL[name])


def available(name):
    """False for a real image whose file is absent."""
    return name not in REAL or (DATA / REAL[name]).exists()


FRAME = 128
# Real distorted headers shipped with astropy (astropy/wcs/tests/data).
HEADERS = [
    ("dss.14.29.56-62.41.05.fits.gz", "DSS plate polynomial (TPD)"),
    ("irac_sip.hdr", "Spitzer IRAC, SIP"),
    ("tpvonly.hdr", "TPV"),
    ("sip.fits", "SIP"),
    ("j94f05bgq_flt.fits", "HST ACS, SIP"),
    ("dist_lookup.fits.gz", "HST ACS, SIP + lookup tables"),
]


def header_wcs(filename):
    """The celestial WCS of a test header (lookup tables read with ``fobj``) and its header."""
    import astropy
    from astropy.io import fits
    from astropy.wcs import WCS

    path = Path(astropy.__file__).parent / "wcs" / "tests" / "data" / filename
    if filename.endswith(".hdr"):
        header = fits.Header.fromstring(path.read_text())
        w = WCS(header)
    else:
        with fits.open(path) as hdul:
            hdu = hdul["SCI", 1] if "SCI" in hdul else hdul[0]
            header = hdu.header.copy()
            w = WCS(header, hdul).deepcopy()
    return (w if w.naxis == 2 else w.celestial), header


def reference_wcs(filename):
    """The header's WCS translated so the FRAME x FRAME reference frame's centre is its CRPIX
    (or, where CRPIX is off the header's image, the image centre); and which of the two."""
    from astrosr.nddata import shift_wcs

    w, header = header_wcs(filename)
    centre = np.asarray(w.wcs.crpix, float) - 1.0
    nx, ny = header.get("NAXIS1", 0), header.get("NAXIS2", 0)
    where = "CRPIX"
    if nx > 1 and ny > 1 and not (0 <= centre[0] < nx and 0 <= centre[1] < ny):
        centre, where = np.array([(nx - 1) / 2.0, (ny - 1) / 2.0]), "image centre"
    mid = np.array([(FRAME - 1) / 2.0, (FRAME - 1) / 2.0])
    return shift_wcs(w, *mid - centre), where


def print_table(header, lines, note=None):
    """A table: its header, a rule as wide, its lines, and a note under it."""
    print(header)
    print("-" * len(header))
    print("\n".join(lines))
    if note:
        print(note)
