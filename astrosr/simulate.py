"""The observation model, and synthetic skies to feed it.

Forward model of one exposure (`render` is its noise-free part):

1. the truth, flux per fine pixel on a grid ``scale`` times finer than the
   detector, is displaced by the frame's dither: the integer part (in fine
   pixels) exactly, by indexing; the fractional part by sampling the PSF at
   the sub-pixel offset, so nothing is interpolated and no flux moves to the
   wrong place;
2. convolved with the PSF (sampled on the fine grid, see `astrosr.psf`);
3. integrated over each detector pixel (block sum of ``scale x scale``);
4. sky added; Poisson noise drawn; read noise added; digitised to whole ADU
   with ``gain`` (adding ``gain**2 / 12`` of variance); cosmic rays and bad
   pixels optionally added.

Sign convention (DESIGN.md): a source at ``(x, y)`` in the reference frame
appears at ``(x + dx, y + dy)`` in a frame dithered by ``(dx, dy)``, in
detector pixels. Light from beyond the edges of the truth enters the field
from a mirror image of the truth (``edge="reflect"``), so frames have no
artificial edges; ``edge="zero"`` makes the sky end at the edges instead.
"""

from dataclasses import dataclass, field

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, NDData, VarianceUncertainty
from astropy.table import QTable
from scipy import fft

from .nddata import add_history, rescale_wcs, shift_wcs, wcs_from
from .psf import GaussianPSF, as_psf, check_positive

__all__ = ["ObservedStack", "observe", "render", "render_geometry", "make_sky", "default_shifts",
           "gaussian_random_field", "filamentary_nebula", "crowded_field", "spiral_galaxy"]


@dataclass
class ObservedStack:
    """A simulated stack of dithered exposures and the truth behind it.

    Attributes
    ----------
    frames : list of `~astropy.nddata.CCDData`
        Exposures in electrons, with `~astropy.nddata.VarianceUncertainty`
        (the model's variance), a mask of bad pixels, and a WCS when the
        truth has one.
    shifts : `~astropy.table.QTable`
        True dithers: columns ``frame``, ``dx``, ``dy`` (detector pixels).
    truth : `~astropy.nddata.CCDData`
        The sky on the fine grid, in expected electrons per fine pixel.
    psf : `~astrosr.psf.PSF`
        The PSF used.
    scale : int
        Fine pixels per detector pixel.
    cosmic_rays : list of numpy.ndarray
        Boolean maps of the pixels hit by cosmic rays in each frame.
    camera : `~astrosr.camera.CameraTruth` or None
        With ``observe(camera=...)``: what the camera added to each frame.
    """

    frames: list
    shifts: QTable
    truth: CCDData
    psf: object
    scale: int
    cosmic_rays: list = field(default_factory=list)
    camera: object = None

    def __len__(self):
        return len(self.frames)


def default_shifts(n_frames, *, seed=None, max_shift=1.5):
    """Random dithers: frame 0 at (0, 0), the others uniform in ``±max_shift`` pixels."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(-max_shift, max_shift, size=(n_frames, 2))
    s[0] = 0.0
    return s


def render(truth, shifts, *, scale, psf, edge="reflect"):
    """Noise-free expected frames (electrons per detector pixel, no sky).

    Parameters
    ----------
    truth : array_like
        Flux per fine pixel, shape divisible by ``scale``.
    shifts : array_like, shape (n, 2)
        ``(dx, dy)`` of each frame in detector pixels.
    scale : int
        Fine pixels per detector pixel.
    psf : `~astrosr.psf.PSF` or array
        The PSF (an array is sampled on the fine grid).
    edge : {"reflect", "zero"}
        What lies beyond the edges of the truth.

    Returns
    -------
    numpy.ndarray
        Cube ``(n, ny // scale, nx // scale)``.
    """
    truth, scale = _checked_truth(truth, scale)
    psf = as_psf(psf, oversampling=scale)
    shifts = np.atleast_2d(np.asarray(shifts, dtype=float))
    ny, nx = truth.shape
    fine = shifts * scale
    whole = np.floor(fine + 0.5).astype(int)
    frac = fine - whole
    kernels = [psf.kernel(scale, offset=tuple(f)) for f in frac]
    khalf = max(max(k.shape) for k in kernels) // 2
    pad = int(np.abs(whole).max()) + khalf + 1
    mode = {"reflect": "symmetric", "zero": "constant"}[edge]
    padded = np.pad(truth, pad, mode=mode)
    shape = fft.next_fast_len(padded.shape[0] + 2 * khalf), fft.next_fast_len(padded.shape[1] + 2 * khalf)
    ft = fft.rfft2(padded, shape, workers=-1)
    out = np.empty((len(shifts), ny // scale, nx // scale))
    for i, (k, (wx, wy)) in enumerate(zip(kernels, whole)):
        conv = fft.irfft2(ft * fft.rfft2(_centred(k, shape), shape, workers=-1), shape, workers=-1)
        # Frame pixel (py, px) sees truth at fine index (scale*py - wy + ..., ...).
        sub = conv[pad - wy: pad - wy + ny, pad - wx: pad - wx + nx]
        out[i] = sub.reshape(ny // scale, scale, nx // scale, scale).sum(axis=(1, 3))
    return out


def render_geometry(truth, geometry, *, scale, psf, edge="reflect", subsamples=None):
    """Noise-free expected frames of a stack with any rigid or similarity geometry.

    Each frame pixel integrates the PSF-convolved truth over its footprint
    (its square mapped onto the truth's grid through the frame's transform,
    DESIGN.md convention). The integral is a midpoint rule on
    ``subsamples x subsamples`` points per frame pixel over the fine pixels
    (flux per fine pixel, piecewise constant): written independently of the
    exact polygon overlaps of `astrosr.forward.PixmapOperator`, so the two
    check each other; they agree as ``subsamples`` grows. Where the frame's
    grid is aligned with the fine grid (rotations that are multiples of 90
    degrees) the points do not move across fine pixels as the shift changes
    between them: such a frame is drawn at its shift rounded to
    ``1 / subsamples`` pixel (1/16 px by default at scale 4), which a test
    or benchmark at the noise limit must allow for.

    Parameters
    ----------
    truth : array_like
        Flux per fine pixel, shape divisible by ``scale``.
    geometry : table or (n, 2) array
        ``dx, dy`` and optionally ``rotation`` (deg) and ``scale`` of each
        frame (`astrosr.geometry.geometry_table`).
    scale : int
        Fine pixels per detector pixel.
    psf : `~astrosr.psf.PSF` or array
    edge : {"reflect", "zero"}
    subsamples : int, optional
        Points per frame pixel along each axis (default ``4 * scale``).

    Returns
    -------
    numpy.ndarray
        Cube ``(n, ny // scale, nx // scale)``.
    """
    from scipy import ndimage, signal

    from .geometry import frame_transforms

    truth, scale = _checked_truth(truth, scale)
    ny, nx = truth.shape
    shape = (ny // scale, nx // scale)
    kernel = as_psf(psf, oversampling=scale).kernel(scale)
    transforms = frame_transforms(geometry, shape)
    # The convolved sky is kept as far as any frame reaches beyond the truth
    # (light blurred off its edge included), plus the PSF's radius.
    pad = max(kernel.shape) // 2 + _reach(transforms, shape, scale, (ny, nx)) + 2
    padded = np.pad(truth, pad, mode={"reflect": "symmetric", "zero": "constant"}[edge])
    sky = signal.fftconvolve(padded, kernel, mode="same")
    m = 4 * scale if subsamples is None else int(subsamples)
    offsets = (np.arange(m) + 0.5) / m - 0.5
    out = np.empty((len(geometry),) + shape)
    mode = {"reflect": "reflect", "zero": "constant"}[edge]  # reflect: numpy "symmetric"
    for i, t in enumerate(transforms):
        jac = abs(np.linalg.det(t.matrix))
        for row in range(shape[0]):
            qy, qx = np.meshgrid(row + offsets, np.arange(shape[1])[:, None] + offsets,
                                 indexing="ij")
            px, py = t.frame_to_reference(qx.ravel(), np.broadcast_to(qy, qx.shape).ravel())
            fx, fy = scale * (px + 0.5) - 0.5 + pad, scale * (py + 0.5) - 0.5 + pad
            vals = ndimage.map_coordinates(sky, [np.round(fy), np.round(fx)], order=0,
                                           mode=mode)
            out[i, row] = vals.reshape(m, shape[1], m).mean(axis=(0, 2)) * scale ** 2 / jac
    return out


def _checked_truth(truth, scale):
    """The truth as a float array and the scale as an int, the shape divisible by it."""
    truth = np.asarray(truth, dtype=float)
    scale = int(scale)
    if truth.shape[0] % scale or truth.shape[1] % scale:
        raise ValueError(f"truth shape {truth.shape} must be divisible by scale={scale}")
    return truth, scale


def _reach(transforms, shape, scale, fine_shape):
    """Fine pixels by which the frames' corners reach beyond the truth's grid."""
    ny, nx = shape
    cx, cy = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5]), np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
    reach = 0.0
    for t in transforms:
        px, py = t.frame_to_reference(cx, cy)
        fx, fy = scale * (px + 0.5) - 0.5, scale * (py + 0.5) - 0.5
        reach = max(reach, -fx.min(), -fy.min(), fx.max() - fine_shape[1], fy.max() - fine_shape[0])
    return int(np.ceil(reach))


def _centred(kernel, shape):
    """Place a kernel in an array of ``shape`` with its centre at index (0, 0), wrapped."""
    arr = np.zeros(shape)
    ky, kx = kernel.shape
    arr[:ky, :kx] = kernel
    return np.roll(arr, (-(ky // 2), -(kx // 2)), axis=(0, 1))


def observe(truth, *, n_frames=16, scale=4, psf=None, shifts=None, sky=100.0, read_noise=5.0,
            gain=1.0, cosmic_ray_rate=0.0, bad_pixel_fraction=0.0, edge="reflect", seed=None,
            geometry=None, camera=None):
    """Simulate a dithered stack of exposures of a fine-grid sky.

    Parameters
    ----------
    truth : array_like or `~astropy.nddata.NDData`
        Expected electrons per fine pixel (one exposure), shape divisible by
        ``scale``. With a WCS, each frame gets the WCS of its dither on the
        detector grid.
    n_frames : int
        Number of exposures (ignored when ``shifts`` is given).
    scale : int
        Fine pixels per detector pixel.
    psf : `~astrosr.psf.PSF` or array, optional
        The PSF; an array is sampled on the fine grid. Default: Gaussian with
        sigma 1 detector pixel.
    shifts : array_like (n, 2) or `~astropy.table.Table` with ``dx``, ``dy``, optional
        Dithers in detector pixels. Default: `default_shifts`.
    sky : float
        Sky level, electrons per detector pixel.
    read_noise : float
        Read noise, electrons RMS.
    gain : float
        Electrons per ADU: frames are digitised to whole ADU, then given in
        electrons.
    cosmic_ray_rate : float
        Fraction of pixels of each frame hit by a cosmic ray (recorded in
        ``ObservedStack.cosmic_rays``, not masked).
    bad_pixel_fraction : float
        Fraction of detector pixels that are dead or hot (the same detector
        pixels in every frame), masked.
    edge : {"reflect", "zero"}
        What lies beyond the edges of the truth (see the module notes).
    seed : int or `numpy.random.Generator`, optional
        Seed: the same seed gives the same frames.
    geometry : `~astropy.table.Table`, optional
        Instead of ``shifts``: ``dx``, ``dy`` and ``rotation`` (deg) and/or
        ``scale`` of each frame (DESIGN.md convention), rendered by
        `render_geometry`. Each frame's WCS (when the truth has a linear
        one) is the reference's seen through its transform.
    camera : `~astrosr.camera.Camera`, optional
        Raw frames as this camera writes them (`astrosr.camera`): unsigned
        16-bit ADU with its bias, banding, defects, flat, sky gradient,
        trails and saturation, without uncertainty or mask (``gain`` is then
        the camera's). Default: calibrated frames in electrons.

    Returns
    -------
    ObservedStack
        With a geometry, ``shifts`` is the geometry table.
    """
    rng = np.random.default_rng(seed)
    truth_ccd = _truth_ccd(truth)
    psf = GaussianPSF(1.0) if psf is None else as_psf(psf, oversampling=scale)
    if geometry is not None:
        if shifts is not None:
            raise ValueError("give shifts or geometry, not both")
        from .geometry import geometry_table

        geometry = geometry_table(geometry, len(geometry))
        shifts = np.column_stack([geometry["dx"].value, geometry["dy"].value])
    else:
        shifts = _shift_array(shifts, n_frames, rng)
    for name, value in (("sky", sky), ("read_noise", read_noise), ("cosmic_ray_rate", cosmic_ray_rate),
                        ("bad_pixel_fraction", bad_pixel_fraction)):
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {value}")
    if not gain > 0:
        raise ValueError(f"gain must be > 0, got {gain}")
    if np.any(truth_ccd.data < 0):
        raise ValueError("truth must be non-negative (expected electrons per fine pixel)")

    # FFT round-off leaves values of order -1e-12 where the sky is empty.
    noise_free = (render(truth_ccd.data, shifts, scale=scale, psf=psf, edge=edge) if geometry is None
                  else render_geometry(truth_ccd.data, geometry, scale=scale, psf=psf, edge=edge))
    expected = np.clip(noise_free, 0, None) + sky
    bad = rng.random(expected.shape[1:]) < bad_pixel_fraction
    ref_wcs = rescale_wcs(wcs_from(truth_ccd), 1.0 / scale)
    frame_wcs = (_frame_wcs(ref_wcs, geometry, expected.shape[1:]) if geometry is not None
                 else [shift_wcs(ref_wcs, dx, dy) for dx, dy in shifts])
    if camera is not None:
        return _raw_stack(camera, expected, rng, shifts, geometry, frame_wcs, truth_ccd, psf,
                          scale, sky, read_noise, cosmic_ray_rate)
    frames, crs = [], []
    for i, (mean, (dx, dy)) in enumerate(zip(expected, shifts)):
        counts = rng.poisson(mean) + rng.normal(0.0, read_noise, mean.shape)
        data = np.round(counts / gain) * gain
        variance = mean + read_noise ** 2 + gain ** 2 / 12.0
        cr = _cosmic_rays(rng, mean.shape, cosmic_ray_rate)
        data = data + cr
        data[bad] = np.where(rng.random(bad.sum()) < 0.5, 0.0, 60000.0)
        frames.append(CCDData(data, unit=u.electron, uncertainty=VarianceUncertainty(variance),
                              mask=bad.copy(), wcs=frame_wcs[i],
                              meta=_frame_header(i, dx, dy, scale, psf, sky, read_noise, gain)))
        crs.append(cr > 0)
    table = geometry if geometry is not None else _shift_table(shifts)
    return ObservedStack(frames=frames, shifts=table, truth=truth_ccd, psf=psf, scale=int(scale),
                         cosmic_rays=crs)


def _raw_stack(camera, expected, rng, shifts, geometry, frame_wcs, truth_ccd, psf, scale, sky,
               read_noise, cosmic_ray_rate):
    """`observe` through a `~astrosr.camera.Camera`: raw uint16 ADU frames."""
    crs = [_cosmic_rays(rng, expected.shape[1:], cosmic_ray_rate) for _ in expected]
    raw, truth = camera.expose(expected + np.array(crs), rng, read_noise=read_noise, sky=sky)
    frames = []
    for i, (dx, dy) in enumerate(shifts):
        meta = _frame_header(i, dx, dy, scale, psf, sky, read_noise, camera.gain)
        meta.update(camera.header())
        frames.append(CCDData(raw[i], unit=u.adu, wcs=frame_wcs[i], meta=meta))
    table = geometry if geometry is not None else _shift_table(shifts)
    return ObservedStack(frames=frames, shifts=table, truth=truth_ccd, psf=psf, scale=int(scale),
                         cosmic_rays=[c > 0 for c in crs], camera=truth)


def _shift_table(shifts):
    return QTable({"frame": np.arange(len(shifts)), "dx": shifts[:, 0] * u.pix,
                   "dy": shifts[:, 1] * u.pix})


def _frame_wcs(ref_wcs, geometry, shape):
    """Each frame's WCS: the reference's (linear, FITS) composed with the frame's inverse transform.

    A reference pixel ``p`` appears at frame pixel ``q = M (p - c) + c + d``,
    so the frame's linear matrix is the reference's times ``M^-1`` and its
    reference pixel is where the reference's lands.
    """
    from .geometry import frame_transforms

    if ref_wcs is None:
        return [None] * len(geometry)
    if ref_wcs.sip is not None:
        raise ValueError("observe(geometry=) needs a truth WCS without SIP distortion")
    out = []
    for t in frame_transforms(geometry, shape):
        new = ref_wcs.deepcopy()
        inverse = np.linalg.inv(t.matrix)
        if ref_wcs.wcs.has_cd():
            new.wcs.cd = np.asarray(ref_wcs.wcs.cd) @ inverse
        else:
            new.wcs.pc = np.asarray(ref_wcs.wcs.get_pc()) @ inverse
        qx, qy = t.reference_to_frame(ref_wcs.wcs.crpix[0] - 1.0, ref_wcs.wcs.crpix[1] - 1.0)
        new.wcs.crpix = [float(qx) + 1.0, float(qy) + 1.0]
        new.wcs.set()
        out.append(new)
    return out


def _truth_ccd(truth):
    if isinstance(truth, CCDData):
        return truth
    if isinstance(truth, NDData):
        return CCDData(np.asarray(truth.data, dtype=float), unit=truth.unit or u.electron,
                       wcs=truth.wcs, meta=truth.meta)
    data = np.asarray(truth, dtype=float)
    if data.ndim != 2:
        raise ValueError(f"truth must be a 2-D image, got shape {data.shape}")
    return CCDData(data, unit=u.electron)


def _shift_array(shifts, n_frames, rng):
    if shifts is None:
        if int(n_frames) < 1:
            raise ValueError(f"n_frames must be >= 1, got {n_frames}")
        return default_shifts(int(n_frames), seed=rng)
    if hasattr(shifts, "colnames"):
        shifts = np.column_stack([u.Quantity(shifts["dx"], u.pix).value,
                                  u.Quantity(shifts["dy"], u.pix).value])
    shifts = np.atleast_2d(np.asarray(shifts, dtype=float))
    if shifts.ndim != 2 or shifts.shape[1] != 2 or not np.all(np.isfinite(shifts)):
        raise ValueError(f"shifts must be finite (dx, dy) pairs, shape (n, 2); got {shifts.shape}")
    return shifts


def _cosmic_rays(rng, shape, rate):
    """Cosmic-ray hits: single pixels or short tracks, 300-5000 electrons per pixel."""
    cr = np.zeros(shape)
    n = rng.binomial(cr.size, rate) if rate > 0 else 0
    if n == 0:
        return cr
    ys = rng.integers(0, shape[0], n)
    xs = rng.integers(0, shape[1], n)
    cr[ys, xs] = rng.uniform(300.0, 5000.0, n)
    # A third of them leave a two-pixel track in a random direction.
    long = rng.random(n) < 1 / 3
    step = rng.integers(-1, 2, (n, 2))
    ty = np.clip(ys + step[:, 0], 0, shape[0] - 1)[long]
    tx = np.clip(xs + step[:, 1], 0, shape[1] - 1)[long]
    cr[ty, tx] += rng.uniform(300.0, 3000.0, long.sum())
    return cr


def _frame_header(i, dx, dy, scale, psf, sky, read_noise, gain):
    hdr = fits.Header()
    hdr["FRAME"] = (i, "index in the simulated stack")
    hdr["DITHX"] = (float(dx), "[pix] true dither along x")
    hdr["DITHY"] = (float(dy), "[pix] true dither along y")
    hdr["SKYLEVEL"] = (float(sky), "[electron] sky per pixel")
    hdr["RDNOISE"] = (float(read_noise), "[electron] read noise")
    hdr["GAIN"] = (float(gain), "[electron/adu]")
    hdr["SIMSCALE"] = (int(scale), "truth pixels per detector pixel")
    add_history(hdr, f"astrosr.simulate.observe: psf={psf!r}")
    return hdr


# --------------------------------------------------------------------------- skies


def make_sky(shape, *, n_stars=100, n_galaxies=10, nebula=True, star_flux=(200.0, 2e5),
             star_slope=2.0, galaxy_flux=(2e3, 5e4), nebula_flux=3.0, seed=None):
    """A synthetic sky: stars, Sersic galaxies and smooth extended emission.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the fine grid.
    n_stars : int
        Stars, each in one fine pixel, fluxes from a power-law luminosity
        function ``dN/dF ∝ F**-star_slope`` between ``star_flux`` bounds.
    n_galaxies : int
        Sersic galaxies (`astropy.modeling.functional_models.Sersic2D`) with
        random index 0.5-4, effective radius, ellipticity and angle; total
        fluxes log-uniform in ``galaxy_flux``.
    nebula : bool
        Add extended emission: a log-normal random field with a power-law
        spectrum (filaments and knots), ``nebula_flux`` per fine pixel on
        average.
    seed : int or `numpy.random.Generator`, optional

    Returns
    -------
    numpy.ndarray
        Non-negative flux per fine pixel (electrons).
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    sky = np.zeros(shape)
    if nebula:
        sky += nebula_flux * _nebula(shape, rng)
    for _ in range(n_galaxies):
        sky += _galaxy(shape, rng, galaxy_flux)
    ys = rng.integers(0, ny, n_stars)
    xs = rng.integers(0, nx, n_stars)
    np.add.at(sky, (ys, xs), _power_law(rng, n_stars, *star_flux, star_slope))
    return sky


def _power_law(rng, n, fmin, fmax, slope):
    """Draw from dN/dF ∝ F**-slope on [fmin, fmax] by inverting the CDF."""
    q = rng.random(n)
    a = 1.0 - slope
    if abs(a) < 1e-12:
        return fmin * (fmax / fmin) ** q
    return (fmin ** a + q * (fmax ** a - fmin ** a)) ** (1.0 / a)


def _galaxy(shape, rng, flux_range):
    from astropy.modeling.functional_models import Sersic2D

    ny, nx = shape
    r_eff = rng.uniform(3.0, 0.06 * min(shape))
    n = rng.uniform(0.5, 4.0)
    model = Sersic2D(amplitude=1.0, r_eff=r_eff, n=n, x_0=rng.uniform(0, nx), y_0=rng.uniform(0, ny),
                     ellip=rng.uniform(0.0, 0.7), theta=rng.uniform(0, np.pi))
    half = int(min(8 * r_eff, max(shape)))
    x0, y0 = int(model.x_0.value), int(model.y_0.value)
    ys, xs = slice(max(0, y0 - half), min(ny, y0 + half)), slice(max(0, x0 - half), min(nx, x0 + half))
    yy, xx = np.mgrid[ys, xs]
    img = np.zeros(shape)
    img[ys, xs] = model(xx, yy)
    total = img.sum()
    return img * (np.exp(rng.uniform(*np.log(flux_range))) / total) if total > 0 else img


def _nebula(shape, rng, slope=3.2):
    """Log-normal field with a power-law spectrum, mean 1: filamentary emission."""
    emission = np.exp(1.2 * _random_field(shape, rng, slope))
    return emission / emission.mean()


def _random_field(shape, rng, slope, axis_ratio=1.0, angle=0.0):
    """Zero-mean, unit-variance Gaussian field with power spectrum ``P(k) ∝ k**-slope``.

    With ``axis_ratio > 1`` the spectrum is squeezed along the direction at
    ``angle`` (radians from +x, counter-clockwise), so the structures are that
    many times longer along it than across.
    """
    ky = fft.fftfreq(shape[0])[:, None]
    kx = fft.rfftfreq(shape[1])[None, :]
    if axis_ratio == 1.0:
        k = np.hypot(kx, ky)
    else:
        along = kx * np.cos(angle) + ky * np.sin(angle)
        across = ky * np.cos(angle) - kx * np.sin(angle)
        k = np.hypot(axis_ratio * along, across)
    k[0, 0] = 1.0
    amp = k ** (-slope / 2.0)
    amp[0, 0] = 0.0
    noise = rng.normal(size=amp.shape) + 1j * rng.normal(size=amp.shape)
    field = fft.irfft2(noise * amp, shape)
    return (field - field.mean()) / field.std()


def _checked_shape(shape):
    ny, nx = (int(n) for n in shape)
    if ny < 2 or nx < 2 or (ny, nx) != tuple(shape):
        raise ValueError(f"shape must be two integers >= 2, got {shape!r}")
    return ny, nx


def gaussian_random_field(shape, *, slope, seed=None, axis_ratio=1.0, angle=0.0):
    """A Gaussian random field with a power-law power spectrum.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``; the field is periodic over it.
    slope : float
        Index of the power spectrum ``P(k) ∝ k**-slope`` (0 is white noise;
        interstellar dust and gas have 2.5-3.5).
    seed : int or `numpy.random.Generator`, optional
        A Generator is advanced.
    axis_ratio : float
        Structures are ``axis_ratio`` times longer along ``angle`` than across
        (the spectrum is squeezed along that direction); 1 is isotropic.
    angle : float
        Direction of elongation, radians counter-clockwise from +x.

    Returns
    -------
    numpy.ndarray
        Zero mean, unit variance.
    """
    if not np.isfinite(slope):
        raise ValueError(f"slope must be finite, got {slope}")
    return _random_field(_checked_shape(shape), np.random.default_rng(seed), float(slope),
                         check_positive(axis_ratio, "axis_ratio"), float(angle))


def filamentary_nebula(shape, *, seed=None, slope=3.5, width=0.2, axis_ratio=None, angle=None,
                       diffuse=0.2, mean_flux=3.0):
    """Emission nebula made of filaments: the ridges of a power-law Gaussian random field.

    The filaments lie along the zero contours of a Gaussian random field
    ``g`` (`gaussian_random_field`, index ``slope``, optionally elongated):
    the emission is ``exp(-(g / width)**2)``, a ridge whose width in pixels is
    ``width / |grad g|``, thin where the field changes fast. Their brightness
    is modulated by a log-normal envelope (a second field of the same index),
    which also carries a ``diffuse`` glow. Unlike `make_sky`'s log-normal
    nebulosity (blobs and knots), this is a network of threads, like
    supernova remnants and cirrus. Thin threads add small-scale power: the
    image's own spectrum is shallower than ``slope`` and steepens with it.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the fine grid.
    seed : int or `numpy.random.Generator`, optional
        A Generator is advanced.
    slope : float
        Power-spectrum index of the fields (larger: smoother, longer filaments).
    width : float
        Filament width in units of the field's standard deviation (> 0).
    axis_ratio : float, optional
        Elongation of the field along ``angle`` (default: uniform in 1-3).
    angle : float, optional
        Direction of elongation, radians from +x (default: uniform).
    diffuse : float
        Diffuse glow relative to the filaments' peak (>= 0).
    mean_flux : float
        Mean flux per fine pixel.

    Returns
    -------
    numpy.ndarray
        Non-negative flux per fine pixel.
    """
    rng = np.random.default_rng(seed)
    shape = _checked_shape(shape)
    width, mean_flux = check_positive(width, "width"), check_positive(mean_flux, "mean_flux")
    if not diffuse >= 0:
        raise ValueError(f"diffuse must be >= 0, got {diffuse}")
    axis_ratio = rng.uniform(1.0, 3.0) if axis_ratio is None else axis_ratio
    angle = rng.uniform(0.0, np.pi) if angle is None else angle
    ridges = np.exp(-(gaussian_random_field(shape, slope=slope, seed=rng, axis_ratio=axis_ratio,
                                            angle=angle) / width) ** 2)
    envelope = np.exp(0.8 * _random_field(shape, rng, slope))
    emission = envelope * (ridges + diffuse)
    return emission * (mean_flux / emission.mean())


def crowded_field(shape, *, seed=None, density=0.02, flux_range=(30.0, 3e5), lf_slope=0.3,
                  cluster_fraction=0.5, catalog=False):
    """A crowded star field: point sources with a power-law luminosity function.

    The number of stars per magnitude grows as ``dN/dm ∝ 10**(lf_slope * m)``,
    i.e. ``dN/dF ∝ F**-(1 + 2.5 * lf_slope)`` in flux. The default 0.3 is
    about the slope of the Galactic star counts at faint magnitudes
    (Bahcall & Soneira 1980, ApJS 44, 73), half the 0.6 of a uniform
    (Euclidean) population. A fraction of the stars belongs to a cluster with
    a Plummer profile (surface density ``∝ (1 + R**2 / a**2)**-2``), the rest
    are spread uniformly. Each star is a point at a sub-pixel position,
    shared between the four nearest fine pixels (cloud-in-cell) so that the
    flux and the centroid are exact; the PSF is applied later by `observe`.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the fine grid.
    seed : int or `numpy.random.Generator`, optional
        A Generator is advanced.
    density : float
        Mean number of stars per fine pixel (the count is Poisson).
    flux_range : tuple of float
        Faintest and brightest flux (electrons); the default spans 10 mag.
    lf_slope : float
        Slope of the luminosity function, ``d log10 N / dm``.
    cluster_fraction : float
        Fraction of the stars in the cluster (0-1). Its centre is uniform in
        the middle half of the field, its Plummer radius 5-20 % of the side.
    catalog : bool
        Also return the stars.

    Returns
    -------
    image : numpy.ndarray
        Non-negative flux per fine pixel.
    stars : `~astropy.table.QTable`
        With ``catalog=True``: ``x``, ``y`` (fine pixels, 0-based centres)
        and ``flux`` of each star in the field.
    """
    rng = np.random.default_rng(seed)
    ny, nx = _checked_shape(shape)
    fmin, fmax = (check_positive(f, "flux_range") for f in flux_range)
    if not (fmax > fmin and density >= 0 and 0 <= cluster_fraction <= 1):
        raise ValueError("need flux_range[1] > flux_range[0] > 0, density >= 0 and "
                         f"0 <= cluster_fraction <= 1; got {flux_range}, {density}, "
                         f"{cluster_fraction}")
    n = rng.poisson(density * ny * nx)
    x, y = _star_positions(rng, n, (ny, nx), cluster_fraction)
    flux = _power_law(rng, len(x), fmin, fmax, 1.0 + 2.5 * lf_slope)
    image = _deposit((ny, nx), x, y, flux)
    if catalog:
        return image, QTable({"x": x, "y": y, "flux": flux})
    return image


def _star_positions(rng, n, shape, cluster_fraction):
    """Positions (fine pixels) of ``n`` stars, part in a Plummer cluster; those outside dropped."""
    ny, nx = shape
    n_cluster = rng.binomial(n, cluster_fraction)
    xy = rng.uniform(size=(n - n_cluster, 2)) * [nx, ny] - 0.5
    centre = rng.uniform(0.25, 0.75, 2) * [nx, ny] - 0.5
    q = rng.random(n_cluster)
    radius = rng.uniform(0.05, 0.2) * min(shape) * np.sqrt(q / (1.0 - q))
    phi = rng.uniform(0.0, 2 * np.pi, n_cluster)
    members = centre + radius[:, None] * np.column_stack([np.cos(phi), np.sin(phi)])
    xy = np.concatenate([xy, members])
    inside = (xy[:, 0] >= -0.5) & (xy[:, 0] < nx - 0.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] < ny - 0.5)
    return xy[inside, 0], xy[inside, 1]


def _deposit(shape, x, y, flux):
    """Cloud-in-cell: each point's flux shared by the 4 nearest pixel centres (edges clipped)."""
    image = np.zeros(shape)
    ix, iy = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - ix, y - iy
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            rows = np.clip(iy + dy, 0, shape[0] - 1)
            cols = np.clip(ix + dx, 0, shape[1] - 1)
            np.add.at(image, (rows, cols), flux * wy * wx)
    return image


def spiral_galaxy(shape, *, seed=None, flux=1e5, scale_length=None, bulge_fraction=None,
                  n_arms=2, pitch=None, arm_strength=0.6, dust=1.0, inclination=None,
                  position_angle=None):
    """A spiral galaxy: Sersic bulge, exponential disc, logarithmic arms and dust lanes.

    The galaxy is centred on the grid (at ``((nx-1)/2, (ny-1)/2)``). In the
    plane of the disc (radius ``r``, azimuth ``phi``) the disc is
    ``exp(-r / scale_length)`` times ``1 + arm_strength * (a(psi) - 1)``,
    where ``a`` is a sharp periodic arm profile of mean 1 along the
    logarithmic spiral ``psi = n_arms * (phi - ln(r / h) / tan(pitch))``,
    faded in towards the centre and dotted with knots (a log-normal field).
    Dust multiplies the light by ``exp(-tau)``: lanes on the inner edge of
    the arms, and, as the disc is inclined, a lane along the major axis on
    the near side. The bulge
    (`~astropy.modeling.functional_models.Sersic2D`, index 1.5-4, effective
    radius 0.15-0.4 scale lengths, intrinsic flattening 0.6) and the disc
    (intrinsic thickness 0.12) are seen at ``inclination``. Each fine pixel
    is the mean of 3 x 3 samples.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the fine grid.
    seed : int or `numpy.random.Generator`, optional
        A Generator is advanced.
    flux : float
        Total flux on the grid (after extinction), electrons.
    scale_length : float, optional
        Disc scale length, fine pixels (default: 6-12 % of the shorter side).
    bulge_fraction : float, optional
        Bulge-to-total ratio before extinction (default: uniform in 0.05-0.4).
    n_arms : int
        Number of arms (>= 1).
    pitch : float, optional
        Pitch angle of the arms, degrees (default: uniform in 10-30).
    arm_strength : float
        Contrast of the arms, 0 (none) to 1.
    dust : float
        Optical depth scale of the dust (0: none).
    inclination : float, optional
        Degrees, 0 face-on (default: isotropic orientations, 0-78 degrees).
    position_angle : float, optional
        Of the major axis, degrees counter-clockwise from +x (default: uniform).

    Returns
    -------
    numpy.ndarray
        Non-negative flux per fine pixel, summing to ``flux``.
    """
    rng = np.random.default_rng(seed)
    shape = _checked_shape(shape)
    p = _galaxy_parameters(rng, shape, scale_length, bulge_fraction, pitch, inclination,
                           position_angle)
    if not (0 <= arm_strength <= 1 and dust >= 0 and int(n_arms) == n_arms >= 1):
        raise ValueError(f"need 0 <= arm_strength <= 1, dust >= 0 and an integer n_arms >= 1; "
                         f"got {arm_strength}, {dust}, {n_arms}")
    sub = 3
    g = _disc_coordinates(shape, p, sub)
    psi = n_arms * (g["phi"] - np.log(np.maximum(g["r"], 1e-3)) / np.tan(p["pitch"])) + p["phase"]
    fade = 1.0 - np.exp(-(g["r"] / 0.7) ** 2)
    knots = np.exp(0.3 * _random_field(g["r"].shape, rng, 3.0))  # star-forming regions
    disc = np.exp(-g["r"]) * (1.0 + arm_strength * fade * (_arm_profile(psi, 4) * knots - 1.0))
    light = p["bt"] * _unit_sum(_bulge(g, p)) + (1 - p["bt"]) * _unit_sum(disc)
    tau = dust * fade * np.exp(-g["r"] / 1.5) * _arm_profile(psi - 0.6, 8)  # inside the arms
    image = light * np.exp(-(tau + dust * _midplane_lane(g, p)))
    image = image.reshape(shape[0], sub, shape[1], sub).mean(axis=(1, 3))
    return image * (check_positive(flux, "flux") / image.sum())


def _disc_coordinates(shape, p, sub):
    """Sample points (``sub`` per fine pixel a side) about the centre, and in the disc's plane.

    ``x, y`` on the sky; ``u, v`` along the major and minor axes; ``r``
    (scale lengths) and ``phi`` in the plane of the disc (thickness 0.12).
    """
    yy, xx = np.mgrid[:shape[0] * sub, :shape[1] * sub]
    x = (xx + 0.5) / sub - 0.5 - (shape[1] - 1) / 2
    y = (yy + 0.5) / sub - 0.5 - (shape[0] - 1) / 2
    u = x * np.cos(p["pa"]) + y * np.sin(p["pa"])
    v = y * np.cos(p["pa"]) - x * np.sin(p["pa"])
    cos_i = np.cos(p["inc"])
    r = np.hypot(u, v / np.sqrt(cos_i ** 2 * (1 - 0.12 ** 2) + 0.12 ** 2)) / p["h"]
    return {"x": x, "y": y, "u": u, "v": v, "r": r, "phi": np.arctan2(v / cos_i, u),
            "cos_i": cos_i}


def _midplane_lane(g, p):
    """Optical depth (per unit ``dust``) of the mid-plane lane, along the major axis, near side."""
    sin_i = np.sin(p["inc"])
    across = (g["v"] - 0.05 * p["h"] * sin_i) / (0.04 * p["h"] + 1.0)
    return sin_i ** 2 * np.exp(-np.abs(g["u"]) / (2 * p["h"]) - 0.5 * across ** 2)


def _galaxy_parameters(rng, shape, scale_length, bulge_fraction, pitch, inclination, angle):
    """The random (or given) parameters of `spiral_galaxy`, angles in radians."""
    h = rng.uniform(0.06, 0.12) * min(shape) if scale_length is None else scale_length
    p = {"h": check_positive(h, "scale_length"),
         "bt": rng.uniform(0.05, 0.4) if bulge_fraction is None else float(bulge_fraction),
         "pitch": np.radians(rng.uniform(10.0, 30.0) if pitch is None else pitch),
         "inc": np.arccos(rng.uniform(0.2, 1.0)) if inclination is None
         else np.radians(inclination),
         "pa": rng.uniform(0.0, np.pi) if angle is None else np.radians(angle),
         "n": rng.uniform(1.5, 4.0), "r_eff": rng.uniform(0.15, 0.4),
         "phase": rng.uniform(0.0, 2 * np.pi)}
    if not (0 <= p["bt"] <= 1 and 0 < p["pitch"] < np.pi / 2 and 0 <= p["inc"] < np.pi / 2):
        raise ValueError("need 0 <= bulge_fraction <= 1, 0 < pitch < 90 and "
                         f"0 <= inclination < 90; got {bulge_fraction}, {pitch}, {inclination}")
    return p


def _arm_profile(psi, power):
    """``((1 + cos psi) / 2)**power`` scaled to mean 1 over a period: a sharp periodic ridge."""
    from scipy.special import binom

    mean = binom(2 * power, power) / 4.0 ** power
    return ((1.0 + np.cos(psi)) / 2.0) ** power / mean


def _bulge(g, p):
    """Sersic bulge at the centre, flattened (intrinsic axis ratio 0.6) by the inclination."""
    from astropy.modeling.functional_models import Sersic2D

    q = np.sqrt(g["cos_i"] ** 2 * (1 - 0.6 ** 2) + 0.6 ** 2)
    model = Sersic2D(amplitude=1.0, r_eff=p["r_eff"] * p["h"], n=p["n"], x_0=0.0, y_0=0.0,
                     ellip=1.0 - q, theta=p["pa"])
    return model(g["x"], g["y"])


def _unit_sum(image):
    return image / image.sum()
