"""Fusion: the forward operator, drizzle against the drizzle package, flux, units, WCS,
uncertainty, outlier rejection and the gain of the PSF-aware reconstruction."""

import numpy as np
import pytest
from astropy import units as u
from astropy.nddata import CCDData, VarianceUncertainty
from astropy.wcs import WCS

import astrosr
from astrosr import simulate
from astrosr.forward import ObservationOperator
from astrosr.metrics import psnr
from astrosr.nddata import read_fits, write_fits
from astrosr.psf import GaussianPSF

S = 4


def _compact_sky(n=128, seed=3):
    """Galaxies and stars well inside the field, zero near the edges."""
    sky = simulate.make_sky((n, n), n_stars=15, n_galaxies=4, nebula=False, star_flux=(2e3, 2e4),
                            seed=seed)
    edge = n // 5
    sky[:edge] = sky[-edge:] = 0.0
    sky[:, :edge] = sky[:, -edge:] = 0.0
    return sky


def _noise_free_frames(truth, shifts, psf=GaussianPSF(1.0), unit=u.electron):
    cube = simulate.render(truth, shifts, scale=S, psf=psf, edge="zero")
    return [CCDData(c, unit=unit) for c in cube]


@pytest.fixture(scope="module")
def shifts():
    return simulate.default_shifts(8, seed=1)


@pytest.fixture(scope="module")
def noisy_stack():
    truth = simulate.make_sky((128, 128), n_stars=20, n_galaxies=3, nebula=True, nebula_flux=20.0,
                              seed=5)
    stack = simulate.observe(truth, n_frames=9, scale=S, psf=GaussianPSF(1.2), sky=100.0,
                             read_noise=5.0, seed=6)
    for f in stack.frames:
        f.data = f.data - 100.0
    return stack


# --------------------------------------------------------------------------- forward model


def test_operator_reproduces_the_simulator(shifts):
    truth = _compact_sky()
    psf = GaussianPSF(1.2)
    op = ObservationOperator((32, 32), shifts, scale=S, psf=psf)
    predicted = op.crop_frames(op.forward(op.embed_image(truth)))
    expected = simulate.render(truth, shifts, scale=S, psf=psf, edge="zero")
    assert np.abs(predicted - expected).max() < 1e-8 * expected.max()


@pytest.mark.parametrize("single, squared", [(False, False), (False, True), (True, False)])
def test_adjoint_is_the_transpose(shifts, single, squared):
    op = ObservationOperator((16, 16), shifts, scale=S, psf=GaussianPSF(1.0), single=single)
    rng = np.random.default_rng(0)
    a = rng.normal(size=op.fine_shape)
    b = rng.normal(size=(len(shifts),) + op.shape_padded)
    lhs = np.sum(op.forward(a, squared=squared) * b)
    rhs = np.sum(a * op.adjoint(b, squared=squared))
    assert lhs == pytest.approx(rhs, rel=1e-4 if single else 1e-10)


# --------------------------------------------------------------------------- drizzle


def _package_drizzle(frames, shifts, pixfrac, weights):
    from drizzle.resample import Drizzle

    ny, nx = frames[0].shape
    d = Drizzle(kernel="square", out_shape=(S * ny, S * nx), fillval=0.0)
    yy, xx = np.indices((ny, nx), dtype=float)
    for f, w, (dx, dy) in zip(frames, weights, shifts):
        pixmap = np.dstack([S * (xx - dx + 0.5) - 0.5, S * (yy - dy + 0.5) - 0.5])
        d.add_image(np.asarray(f.data, np.float32), exptime=1.0, pixmap=pixmap,
                    weight_map=np.full((ny, nx), w, np.float32), pixfrac=pixfrac,
                    iscale=1.0 / S ** 2, in_units="cps")
    return d.out_img, d.out_wht


@pytest.mark.parametrize("pixfrac", [1.0, 0.7, 0.4])
def test_drizzle_matches_the_drizzle_package(noisy_stack, pixfrac):
    pytest.importorskip("drizzle")
    frames, shifts = noisy_stack.frames, noisy_stack.shifts
    sh = np.column_stack([shifts["dx"].value, shifts["dy"].value])
    out = astrosr.fuse(frames, shifts, scale=S, method="drizzle", pixfrac=pixfrac, reject=False)
    weights = [1.0 / np.median(f.uncertainty.array) for f in frames]
    ref, ref_wht = _package_drizzle(frames, sh, pixfrac, weights)
    # The package drops input pixels whose centre falls off the output grid, so
    # output pixels within half a drop of the border differ: compare inside.
    border = int(np.ceil(S * pixfrac / 2)) + 1
    both = np.zeros(out.shape, bool)
    both[border:-border, border:-border] = True
    both &= (ref_wht > 0) & ~out.mask
    assert both.sum() > 0.75 * both.size
    scale = np.abs(ref[both]).max()
    assert np.abs(out.data[both] - ref[both]).max() < 1e-5 * scale
    np.testing.assert_allclose(out.weight[both], ref_wht[both], rtol=1e-5)


@pytest.mark.parametrize("method", ["drizzle", "shift_and_add"])
def test_drizzle_conserves_total_flux(shifts, method):
    truth = _compact_sky()
    frames = _noise_free_frames(truth, shifts)
    out = astrosr.fuse(frames, shifts, scale=S, method=method, reject=False)
    assert out.data.sum() == pytest.approx(frames[0].data.sum(), rel=1e-6)
    assert out.data.sum() == pytest.approx(truth.sum(), rel=1e-6)


def test_surface_brightness_units_keep_the_surface_brightness(shifts):
    level = 3.5
    flat = [CCDData(np.full((16, 16), level), unit=u.MJy / u.sr) for _ in shifts]
    per_pixel = [CCDData(np.full((16, 16), level), unit=u.electron) for _ in shifts]
    for method in ("drizzle", "reconstruct"):
        kw = {"psf": GaussianPSF(1.0)} if method == "reconstruct" else {"pixfrac": 0.5}
        sb = astrosr.fuse(flat, shifts, scale=S, method=method, reject=False, **kw)
        pp = astrosr.fuse(per_pixel, shifts, scale=S, method=method, reject=False, **kw)
        inner = (slice(16, -16), slice(16, -16))
        assert sb.unit == u.MJy / u.sr
        np.testing.assert_allclose(sb.data[inner], level, rtol=2e-3)
        np.testing.assert_allclose(pp.data[inner], level / S ** 2, rtol=2e-3)


def test_drizzle_uncertainty_matches_monte_carlo(shifts):
    rng = np.random.default_rng(4)
    sigma = 2.0
    outs = []
    for _ in range(200):
        frames = [CCDData(rng.normal(0, sigma, (12, 12)), unit=u.electron,
                          uncertainty=VarianceUncertainty(np.full((12, 12), sigma ** 2)))
                  for _ in shifts]
        out = astrosr.fuse(frames, shifts, scale=S, pixfrac=0.6, reject=False)
        outs.append(out.data)
    predicted = np.sqrt(out.uncertainty.array)[8:-8, 8:-8]
    measured = np.std(outs, axis=0)[8:-8, 8:-8]
    assert np.median(measured / predicted) == pytest.approx(1.0, abs=0.07)


def test_masked_and_nan_pixels_contribute_nothing(noisy_stack):
    frames = [f.copy() for f in noisy_stack.frames]
    masked = [f.copy() for f in frames]
    frames[2].data[10, 10] = np.nan
    masked[2].mask = np.zeros(frames[2].shape, bool)
    masked[2].mask[10, 10] = True
    masked[2].data[10, 10] = 1e9
    a = astrosr.fuse(frames, noisy_stack.shifts, scale=S, reject=False)
    b = astrosr.fuse(masked, noisy_stack.shifts, scale=S, reject=False)
    assert np.all(np.isfinite(a.data))
    np.testing.assert_allclose(a.data, b.data, rtol=1e-12, atol=1e-12)


def test_no_coverage_is_masked_not_zero(shifts):
    truth = _compact_sky(64)
    frames = _noise_free_frames(truth, shifts)
    for f in frames:
        f.mask = np.zeros(f.shape, bool)
        f.mask[:, :4] = True
    out = astrosr.fuse(frames, shifts, scale=S, reject=False)
    assert out.mask[:, :8].all()
    assert not out.mask[:, 24:].any()


def test_weights_per_frame_and_per_pixel(shifts):
    truth = _compact_sky(64)
    frames = _noise_free_frames(truth, shifts)
    frames[0].data = frames[0].data + 50.0  # a frame with an offset
    w = np.ones(len(shifts))
    w[0] = 1e6
    heavy = astrosr.fuse(frames, shifts, scale=S, weights=w, reject=False)
    alone = astrosr.fuse(frames[:1], shifts[:1], scale=S, reject=False)
    inner = (slice(12, -12), slice(12, -12))
    np.testing.assert_allclose(heavy.data[inner], alone.data[inner], rtol=1e-4, atol=1e-4)
    per_pixel = np.broadcast_to(w[:, None, None], (len(shifts), 16, 16))
    same = astrosr.fuse(frames, shifts, scale=S, weights=per_pixel, reject=False)
    np.testing.assert_allclose(same.data, heavy.data, rtol=1e-10)


# --------------------------------------------------------------------------- output


def test_output_wcs_header_and_fits_round_trip(tmp_path):
    truth = CCDData(_compact_sky(64), unit=u.electron, wcs=_wcs())
    stack = simulate.observe(truth, n_frames=4, scale=S, seed=2)
    out = astrosr.fuse(stack.frames, stack.shifts, scale=S, reject=False)
    # The fine grid's WCS is the truth's: same pixel -> same sky position.
    yy, xx = np.mgrid[0:64:7, 0:64:7]
    a = truth.wcs.pixel_to_world(xx, yy)
    b = out.wcs.pixel_to_world(xx, yy)
    assert np.max(a.separation(b).arcsec) < 1e-6
    assert out.meta["NCOMBINE"] == 4
    assert out.meta["FUSEMETH"] == "drizzle"
    assert any("astrosr.fuse" in h for h in out.meta["HISTORY"])
    path = write_fits(out, tmp_path / "fused.fits")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_fits(out, path)
    back = read_fits(path)
    np.testing.assert_array_equal(back.data, out.data)
    np.testing.assert_array_equal(back.mask, out.mask)
    np.testing.assert_allclose(back.uncertainty.array, out.uncertainty.array)
    np.testing.assert_allclose(back.weight, out.weight, rtol=1e-6)
    assert back.unit == u.electron and back.meta["NCOMBINE"] == 4
    assert CCDData.read(path).shape == out.shape


def _wcs():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [20.0, 40.0]
    w.wcs.cd = np.array([[-1e-5, 2e-6], [1e-6, 1e-5]])
    w.pixel_shape = (64, 64)
    return w


# --------------------------------------------------------------------------- reconstruct


@pytest.mark.xfail(strict=True, reason="known: on frames of constant variance (modelled as "
                   "Poisson counts over a background of 10 sigma) Richardson-Lucy keeps 99.89% "
                   "of the flux (99.87% run to convergence); it passed before only because a "
                   "round-off slope of the variance stopped the iterations at their start")
def test_reconstruct_conserves_flux(shifts):
    truth = _compact_sky(128)
    frames = _noise_free_frames(truth, shifts, psf=GaussianPSF(1.2))
    for f in frames:
        f.uncertainty = VarianceUncertainty(np.full(f.shape, 1.0))
    rec = astrosr.fuse(frames, shifts, scale=S, method="reconstruct", psf=GaussianPSF(1.2),
                       reject=False)
    assert rec.data.sum() == pytest.approx(truth.sum(), rel=1e-3)


def test_reconstruct_beats_drizzle_and_stops_at_the_noise(shifts):
    from astrosr._data import hubble_deep_field

    truth = hubble_deep_field(128)
    stack = simulate.observe(truth, shifts=shifts, scale=S, psf=GaussianPSF(1.2), sky=100.0,
                             read_noise=5.0, seed=8)
    for f in stack.frames:
        f.data = f.data - 100.0
    rec = astrosr.fuse(stack.frames, stack.shifts, scale=S, method="reconstruct",
                       psf=stack.psf, reject=False)
    drz = astrosr.fuse(stack.frames, stack.shifts, scale=S, pixfrac=0.7, reject=False)
    assert psnr(rec, truth, margin=8) > psnr(drz, truth, margin=8) + 3.0
    assert "stop=converged" in "".join(rec.meta["HISTORY"])
    assert np.all(rec.data >= 0)
    # The discrepancy principle stops as soon as the data are reproduced.
    early = astrosr.fuse(stack.frames, stack.shifts, scale=S, method="reconstruct",
                         psf=stack.psf, reject=False, stop="discrepancy")
    assert early.meta["CHI2RED"] <= 1.0 + 3 * np.sqrt(2 / (len(shifts) * 32 * 32)) + 1e-4
    assert "stop=discrepancy" in "".join(early.meta["HISTORY"])
    assert rec.meta["CHI2RED"] < early.meta["CHI2RED"]


def test_uncertainty_keeps_the_input_class(shifts):
    from astropy.nddata import StdDevUncertainty

    frames = _noise_free_frames(_compact_sky(64), shifts)
    for f in frames:
        f.uncertainty = StdDevUncertainty(np.full(f.shape, 2.0))
    out = astrosr.fuse(frames, shifts, scale=S, reject=False)
    assert isinstance(out.uncertainty, StdDevUncertainty)
    assert np.all(out.uncertainty.array[~out.mask] > 0)


def _masked_like(frames, rejected):
    out = []
    for f, r in zip(frames, rejected):
        g = f.copy()
        g.mask = r
        out.append(g)
    return out


def test_cosmic_rays_do_not_survive(noisy_stack):
    rng = np.random.default_rng(7)
    hit, maps = [], []
    for f in noisy_stack.frames:
        cr = simulate._cosmic_rays(rng, f.shape, 0.005)
        g = f.copy()
        g.data = f.data + cr
        hit.append(g)
        maps.append(cr > 0)
    maps = np.array(maps)
    for method, kw in (("drizzle", {"pixfrac": 0.7}), ("reconstruct", {"psf": noisy_stack.psf})):
        rejected = astrosr.fuse(hit, noisy_stack.shifts, scale=S, method=method, **kw).rejected
        assert (maps & rejected).sum() >= 0.9 * maps.sum()
        # Masked alike and fused without rejection, the frames with and without
        # hits differ only by the hits not caught: what survives of them.
        clean = astrosr.fuse(_masked_like(noisy_stack.frames, rejected), noisy_stack.shifts,
                             scale=S, method=method, reject=False, **kw)
        dirty = astrosr.fuse(_masked_like(hit, rejected), noisy_stack.shifts, scale=S,
                             method=method, reject=False, **kw)
        z = (dirty.data - clean.data) / np.sqrt(clean.uncertainty.array)
        assert np.max(z[12:-12, 12:-12]) < 3, method


# --------------------------------------------------------------------------- bad input


def _frames(n=3, shape=(16, 16), unit=u.electron):
    return [CCDData(np.ones(shape), unit=unit) for _ in range(n)]


@pytest.mark.parametrize("frames, shifts, kwargs, err, match", [
    (_frames() + [CCDData(np.ones((8, 8)), unit=u.electron)], np.zeros((4, 2)), {},
     ValueError, "same shape"),
    (_frames() + _frames(1, unit=u.adu), np.zeros((4, 2)), {}, u.UnitsError, "same unit"),
    (_frames(), np.zeros((2, 2)), {}, ValueError, "geometry has 2 rows but there are 3 frames"),
    (_frames(), np.zeros((3, 3)), {}, ValueError, "shifts must be"),
    (_frames(), np.zeros((3, 2)), {"scale": 0.5}, ValueError, "scale must be >= 1"),
    (_frames(), np.zeros((3, 2)), {"scale": 2.5, "method": "shift_and_add"}, ValueError,
     "integer"),
    (_frames(), np.zeros((3, 2)), {"method": "reconstruct"}, TypeError, "psf is required"),
    (_frames(), np.zeros((3, 2)), {"method": "reconstruct", "psf": np.ones((5, 5))}, ValueError,
     "normalised"),
    (_frames(), np.zeros((3, 2)), {"method": "reconstruct", "psf": np.full((4, 4), 1 / 16)},
     ValueError, "odd-sized"),
    (_frames(), np.zeros((3, 2)), {"pixfrac": 1.5}, ValueError, "pixfrac"),
    (_frames(), np.zeros((3, 2)), {"method": "lanczos"}, ValueError, "method must be one of"),
    (_frames(), np.zeros((3, 2)), {"weights": [1, 0, 1]}, ValueError, "weights of frame 1"),
])
def test_bad_input_is_refused_with_a_clear_message(frames, shifts, kwargs, err, match):
    kwargs = {"scale": 2, **kwargs}
    scale = kwargs.pop("scale")
    with pytest.raises(err, match=match):
        astrosr.fuse(frames, shifts, scale=scale, **kwargs)


def test_an_all_masked_frame_is_named():
    frames = _frames()
    frames[1].mask = np.ones((16, 16), bool)
    with pytest.raises(ValueError, match=r"frames\[1\] has no usable pixel"):
        astrosr.fuse(frames, np.zeros((3, 2)), scale=2)
