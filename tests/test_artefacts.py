"""No artefacts a user sees: round stars, no dark rings, no periodic pattern, on real images.

The default model of `astrosr.enhance` (srresnet-x4) as it comes, on
128x128 crops of the real images of ``../shared/data`` that
no shipped network was trained on (the crops of ``benchmarks/artefacts.py``:
the most isolated bright stars), against bicubic. The bars are the open
issue's: ellipticity of isolated stars within 0.02 of bicubic's, no star
with a dark ring deeper than 3 sigma below its local sky, no power-spectrum
peak (ratio above 20, `astrosr.metrics.periodic_peak`) at the pixel-shuffle
period. The shipped networks miss some of them: those cases are strict
xfails carrying the measured value, and turn into failures (XPASS) the day
a model meets the bar.
"""
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from scipy import ndimage

from astrosr import metrics
from astrosr.models.transform import noise_sigma

SCALE = 4
#: Crop origins (x0, y0) of benchmarks/artefacts.py, and the measured misses of srgan-x4.
#: Crop origins (x0, y0) of benchmarks/artefacts.py and the stars' FWHM guess (input px).
CROPS = {"spitzer": ("spitzer_example_image.fits", (208, 320), 1.7),
         "2mass": ("gc_2mass_k.fits", (288, 464), 2.5)}
#: What the default model (srresnet-x4) misses, as measured.
MISSES = {("spitzer", "round"): "median ellipticity +0.38 above bicubic's",
          ("spitzer", "rings"): "dark rings 44 sigma deep",
          ("2mass", "pattern"): "period-4 peak ratio 53"}


@pytest.fixture(scope="module", params=sorted(CROPS))
def enhanced(request, shared_data):
    pytest.importorskip("keras")
    import astrosr

    name = request.param
    filename, (x0, y0), fwhm = CROPS[name]
    with fits.open(shared_data / filename) as hdul:
        crop = np.asarray(hdul[0].data, dtype=float)[y0:y0 + 128, x0:x0 + 128]
        unit = hdul[0].header.get("BUNIT", "adu")
    ccd = CCDData(crop, unit=unit)
    flux = 1.0 if ccd.unit.physical_type != "dimensionless" and "sr" in str(ccd.unit) \
        else 1.0 / SCALE ** 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a misfit warning on these crops: measured elsewhere
        out = np.asarray(astrosr.enhance(ccd).data, dtype=float)
    up = ndimage.zoom(crop, SCALE, order=3, grid_mode=True, mode="nearest") * flux
    noise = noise_sigma(crop)
    stars = metrics.detected_stars(crop, fwhm=fwhm, noise=noise)
    return name, out, up, SCALE * (stars + 0.5) - 0.5, noise * flux * SCALE


def _check(name, what, passed, value):
    if (name, what) in MISSES:
        if passed:
            pytest.fail(f"{name} {what}: now met ({value}); remove it from MISSES")
        pytest.xfail(f"{name} {what}: {MISSES[(name, what)]} (measured now: {value})")
    assert passed, f"{name} {what}: {value}"


def test_stars_stay_round(enhanced):
    name, out, up, stars, _ = enhanced
    assert len(stars) >= 5
    excess = np.nanmedian(metrics.ellipticity(out, stars, box=31)
                          - metrics.ellipticity(up, stars, box=31))
    _check(name, "round", excess <= 0.02, f"{excess:+.3f}")


def test_no_dark_rings(enhanced):
    name, out, _, stars, noise = enhanced
    depth = np.nanmax(metrics.dark_ring_depth(out, stars, noise=noise))
    _check(name, "rings", depth <= 3.0, f"{depth:.1f} sigma")


def test_no_periodic_pattern(enhanced):
    name, out, up, _, _ = enhanced
    assert metrics.periodic_peak(up, SCALE) < 20  # the bar itself passes on bicubic
    peak = metrics.periodic_peak(out, SCALE)
    _check(name, "pattern", peak <= 20, f"ratio {peak:.1f}")
