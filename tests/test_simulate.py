import numpy as np
import pytest
from astropy import units as u
from astropy.nddata import VarianceUncertainty
from astropy.wcs import WCS

from astrosr import psf, simulate

from .conftest import centroid


def test_render_conserves_flux_by_integration(gaussian_psf):
    truth = np.zeros((128, 128))
    truth[60, 70] = 1000.0
    truth[30:40, 50:70] = 2.0
    frames = simulate.render(truth, [[0, 0], [0.3, -1.7]], scale=4, psf=gaussian_psf, edge="zero")
    assert frames.shape == (2, 32, 32)
    np.testing.assert_allclose(frames.sum(axis=(1, 2)), truth.sum(), rtol=1e-10)


@pytest.mark.parametrize("dx, dy", [(0.3, -1.7), (2.13, 0.61), (-0.5, 0.5)])
def test_star_centroid_moves_by_exactly_the_dither(dx, dy, gaussian_psf):
    truth = np.zeros((128, 128))
    truth[62, 66] = 1e4
    f0, f1 = simulate.render(truth, [[0, 0], [dx, dy]], scale=4, psf=gaussian_psf, edge="zero")
    (x0, y0), (x1, y1) = centroid(f0), centroid(f1)
    assert x1 - x0 == pytest.approx(dx, abs=1e-6)
    assert y1 - y0 == pytest.approx(dy, abs=1e-6)
    # The fine pixel (62, 66) has its centre at detector (66 + 0.5)/4 - 0.5.
    assert x0 == pytest.approx((66 + 0.5) / 4 - 0.5, abs=1e-6)
    assert y0 == pytest.approx((62 + 0.5) / 4 - 0.5, abs=1e-6)


def test_noise_statistics_match_the_model():
    truth = np.full((256, 256), 5.0)  # 80 e- per detector pixel
    stack = simulate.observe(truth, n_frames=8, scale=4, psf=psf.GaussianPSF(1.0), sky=120.0,
                             read_noise=7.0, gain=2.0, seed=3)
    data = np.array([f.data for f in stack.frames])
    expected_mean = 80.0 + 120.0
    expected_var = expected_mean + 7.0 ** 2 + 2.0 ** 2 / 12
    n = data.size
    assert data.mean() == pytest.approx(expected_mean, abs=4 * np.sqrt(expected_var / n))
    # Sampling error of a variance estimate: var * sqrt(2 / n).
    assert data.var() == pytest.approx(expected_var, abs=4 * expected_var * np.sqrt(2 / n))
    unc = stack.frames[0].uncertainty
    assert isinstance(unc, VarianceUncertainty)
    np.testing.assert_allclose(unc.array, expected_var, rtol=1e-9)
    assert stack.frames[0].unit == u.electron
    # Digitised to whole ADU of 2 electrons.
    np.testing.assert_allclose(data % 2.0, 0.0, atol=1e-9)


def test_same_seed_same_frames(star_field):
    a = simulate.observe(star_field, n_frames=3, seed=5, cosmic_ray_rate=0.01)
    b = simulate.observe(star_field, n_frames=3, seed=5, cosmic_ray_rate=0.01)
    c = simulate.observe(star_field, n_frames=3, seed=6, cosmic_ray_rate=0.01)
    for fa, fb in zip(a.frames, b.frames):
        np.testing.assert_array_equal(fa.data, fb.data)
    np.testing.assert_array_equal(a.shifts["dx"], b.shifts["dx"])
    assert not np.array_equal(a.frames[1].data, c.frames[1].data)


def test_shift_table_and_given_shifts(star_field):
    shifts = [[0.0, 0.0], [0.25, -0.5], [1.0, 2.0]]
    stack = simulate.observe(star_field, shifts=shifts, seed=1)
    assert len(stack) == 3
    assert stack.shifts["dx"].unit == u.pix
    np.testing.assert_allclose(stack.shifts["dy"].value, [0.0, -0.5, 2.0])
    assert stack.truth.data.shape == (256, 256)
    assert stack.frames[2].meta["DITHX"] == 1.0


def test_cosmic_rays_and_bad_pixels(star_field):
    stack = simulate.observe(star_field, n_frames=4, cosmic_ray_rate=0.01,
                             bad_pixel_fraction=0.02, seed=2)
    masks = [f.mask for f in stack.frames]
    assert 0.01 < masks[0].mean() < 0.03
    assert all(np.array_equal(masks[0], m) for m in masks)  # fixed detector defects
    hits = stack.cosmic_rays[1]
    assert 0.007 < hits.mean() < 0.02
    clean = simulate.observe(star_field, n_frames=4, seed=2)
    jump = stack.frames[1].data - clean.frames[1].data
    assert np.all(jump[hits & ~masks[1]] >= 300.0)


def test_frames_get_the_wcs_of_their_dither():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [128.5, 128.5]
    w.wcs.cdelt = [-0.1 / 3600, 0.1 / 3600]
    from astropy.nddata import CCDData

    truth = np.zeros((256, 256))
    truth[100, 140] = 1e5
    ccd = CCDData(truth, unit=u.electron, wcs=w)
    stack = simulate.observe(ccd, shifts=[[0, 0], [0.7, -1.3]], psf=psf.GaussianPSF(0.8),
                             sky=0.0, read_noise=0.0, seed=0)
    star_sky = w.pixel_to_world(140, 100)
    for frame in stack.frames:
        x, y = centroid(np.clip(frame.data, 0, None))
        pos = frame.wcs.pixel_to_world(x, y)
        # Poisson noise of 1e5 e- leaves ~1e-3 px of centroid scatter.
        assert pos.separation(star_sky).arcsec < 0.01 * 0.4


@pytest.mark.parametrize("kwargs, match", [
    ({"sky": -1.0}, "sky"),
    ({"gain": 0.0}, "gain"),
    ({"shifts": [[0, 0, 0]]}, "shifts"),
    ({"scale": 3}, "divisible"),
])
def test_bad_arguments(star_field, kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate.observe(star_field, n_frames=2, seed=0, **kwargs)


def test_negative_truth_is_rejected():
    with pytest.raises(ValueError, match="non-negative"):
        simulate.observe(-np.ones((16, 16)), n_frames=2, seed=0)


def test_make_sky_contents():
    sky = simulate.make_sky((128, 128), n_stars=30, n_galaxies=3, nebula=True, seed=4)
    assert sky.shape == (128, 128) and np.all(sky >= 0)
    stars_only = simulate.make_sky((128, 128), n_stars=30, n_galaxies=0, nebula=False, seed=4)
    assert np.count_nonzero(stars_only) <= 30
    assert stars_only.max() <= 2e5
    assert np.array_equal(sky, simulate.make_sky((128, 128), n_stars=30, n_galaxies=3, seed=4))


# --------------------------------------------------------------------------- sky classes

GENERATORS = {
    "filamentary_nebula": simulate.filamentary_nebula,
    "crowded_field": simulate.crowded_field,
    "spiral_galaxy": simulate.spiral_galaxy,
}


def _spectral_slope(image):
    """Least-squares slope of the radially averaged power spectrum, k in [2/n, 1/4] cycles/px."""
    from scipy import fft

    power = np.abs(fft.fft2(image - image.mean())) ** 2
    k = np.hypot(fft.fftfreq(image.shape[0])[:, None], fft.fftfreq(image.shape[1])[None, :])
    edges = np.geomspace(2 / min(image.shape), 0.25, 12)
    idx = np.digitize(k.ravel(), edges)
    kk = [k.ravel()[idx == i].mean() for i in range(1, len(edges))]
    pp = [power.ravel()[idx == i].mean() for i in range(1, len(edges))]
    return -np.polyfit(np.log(kk), np.log(pp), 1)[0]


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_sky_classes_are_seeded_non_negative_and_shaped(name):
    make = GENERATORS[name]
    a = make((48, 64), seed=3)
    assert a.shape == (48, 64) and a.dtype == float and np.all(a >= 0) and a.sum() > 0
    np.testing.assert_array_equal(a, make((48, 64), seed=3))
    assert not np.array_equal(a, make((48, 64), seed=4))
    gen = np.random.default_rng(5)
    assert not np.array_equal(make((48, 64), seed=gen), make((48, 64), seed=gen))  # advanced
    assert name in simulate.__all__


@pytest.mark.parametrize("name, bad", [
    ("filamentary_nebula", {"width": 0.0}),
    ("filamentary_nebula", {"diffuse": -1.0}),
    ("crowded_field", {"flux_range": (10.0, 1.0)}),
    ("crowded_field", {"cluster_fraction": 1.5}),
    ("spiral_galaxy", {"arm_strength": 2.0}),
    ("spiral_galaxy", {"inclination": 90.0}),
    ("spiral_galaxy", {"flux": -1.0}),
])
def test_sky_classes_reject_bad_options(name, bad):
    with pytest.raises(ValueError):
        GENERATORS[name]((32, 32), seed=0, **bad)
    with pytest.raises(ValueError, match="shape"):
        GENERATORS[name]((1, 32), seed=0)


@pytest.mark.parametrize("slope", [2.0, 3.0, 4.0])
def test_gaussian_random_field_has_the_requested_spectral_slope(slope):
    measured = [_spectral_slope(simulate.gaussian_random_field((128, 128), slope=slope, seed=s))
                for s in range(4)]
    assert np.mean(measured) == pytest.approx(slope, abs=0.2)
    f = simulate.gaussian_random_field((64, 96), slope=slope, seed=0)
    assert f.mean() == pytest.approx(0.0, abs=1e-12) and f.std() == pytest.approx(1.0)


def test_make_sky_nebula_is_unchanged_by_the_shared_field():
    # make_sky's nebulosity draws the same numbers as before gaussian_random_field existed.
    field = simulate.gaussian_random_field((64, 64), slope=3.2, seed=2)
    emission = np.exp(1.2 * field)
    sky = simulate.make_sky((64, 64), n_stars=0, n_galaxies=0, nebula=True, nebula_flux=1.0,
                            seed=2)
    np.testing.assert_allclose(sky, emission / emission.mean(), rtol=1e-12)


def test_filamentary_nebula_follows_its_slope_and_direction():
    def slopes(slope):
        return np.mean([_spectral_slope(simulate.filamentary_nebula((128, 128), slope=slope,
                                                                    seed=s)) for s in range(3)])

    # Thin filaments add small-scale power, but a steeper field gives a steeper image.
    assert slopes(4.0) > slopes(3.0) + 0.3 > slopes(2.0) + 0.6
    neb = simulate.filamentary_nebula((128, 128), seed=1, axis_ratio=4.0, angle=np.radians(30),
                                      mean_flux=5.0)
    assert neb.mean() == pytest.approx(5.0)
    # Filaments run along the angle: the image varies least along it (structure tensor; the
    # square Fourier grid pulls the measured direction a few degrees towards the diagonal).
    gy, gx = np.gradient(np.log(neb))
    tensor = np.array([[np.mean(gx * gx), np.mean(gx * gy)], [np.mean(gx * gy), np.mean(gy * gy)]])
    w, vecs = np.linalg.eigh(tensor)
    along = np.degrees(np.arctan2(vecs[1, 0], vecs[0, 0])) % 180
    assert along == pytest.approx(30, abs=12) and w[1] > 2 * w[0]


def test_crowded_field_luminosity_function_and_points():
    image, stars = simulate.crowded_field((200, 200), seed=7, density=0.1, flux_range=(10.0, 1e6),
                                          lf_slope=0.3, catalog=True)
    assert len(stars) > 3000
    assert image.sum() == pytest.approx(stars["flux"].sum(), rel=1e-10)  # flux conserved
    # Maximum-likelihood index of dN/dF ∝ F**-a (Hill); a = 1 + 2.5 * lf_slope.
    f = np.asarray(stars["flux"])
    a = 1.0 + len(f) / np.log(f / 10.0).sum()
    assert (a - 1.0) / 2.5 == pytest.approx(0.3, abs=0.015)
    # The same seen in magnitudes: log10 counts per magnitude rise by lf_slope a magnitude.
    m = -2.5 * np.log10(f)
    counts, edges = np.histogram(m, bins=np.arange(-12.0, -3.0, 1.0))
    fit = np.polyfit(0.5 * (edges[1:] + edges[:-1]), np.log10(counts), 1)[0]
    assert fit == pytest.approx(0.3, abs=0.05)
    assert np.all((stars["x"] >= -0.5) & (stars["x"] < 199.5))


def test_crowded_field_stars_are_points_at_sub_pixel_positions():
    image, stars = simulate.crowded_field((64, 64), seed=2, density=0.003, cluster_fraction=0.0,
                                          catalog=True)
    checked = 0
    for x, y, flux in stars:
        nearest = np.sort(np.hypot(stars["x"] - x, stars["y"] - y))[1]
        if nearest < 4 or not (2 < x < 61 and 2 < y < 61):
            continue
        # An isolated star fills at most 2 x 2 pixels, with its flux and centroid exact.
        iy, ix = int(np.floor(y)), int(np.floor(x))
        patch = image[iy - 1:iy + 3, ix - 1:ix + 3]
        yy, xx = np.mgrid[iy - 1:iy + 3, ix - 1:ix + 3]
        assert np.count_nonzero(patch) <= 4 and patch.sum() == pytest.approx(flux)
        assert (patch * xx).sum() / flux == pytest.approx(x, abs=1e-9)
        assert (patch * yy).sum() / flux == pytest.approx(y, abs=1e-9)
        checked += 1
    assert checked >= 5


def test_spiral_galaxy_flux_centre_and_arms():
    plain = dict(inclination=0.0, dust=0.0, scale_length=12.0, bulge_fraction=0.1, pitch=20.0)
    gal = simulate.spiral_galaxy((128, 128), seed=3, flux=2e4, **plain)
    smooth = simulate.spiral_galaxy((128, 128), seed=3, arm_strength=0.0, **plain)
    assert gal.sum() == pytest.approx(2e4)
    yy, xx = np.mgrid[:128, :128]
    # Centred: exactly without arms; the arms' random knots move the light a little.
    for img, tol in ((smooth, 0.01), (gal, 2.0)):
        assert (img * xx).sum() / img.sum() == pytest.approx(63.5, abs=tol)
        assert (img * yy).sum() / img.sum() == pytest.approx(63.5, abs=tol)
    r, phi = np.hypot(xx - 63.5, yy - 63.5), np.arctan2(yy - 63.5, xx - 63.5)
    ring = (r > 12) & (r < 30)

    def m2(img):  # amplitude of the m=2 azimuthal Fourier component in the ring
        return abs((img[ring] * np.exp(-2j * phi[ring])).sum()) / img[ring].sum()

    assert m2(gal) > 0.05 > 10 * m2(smooth)
    # Dust takes light out of the galaxy but the total is still the flux asked for.
    dusty = simulate.spiral_galaxy((128, 128), seed=3, flux=2e4, inclination=70.0, dust=2.0)
    assert dusty.sum() == pytest.approx(2e4) and np.all(dusty >= 0)
