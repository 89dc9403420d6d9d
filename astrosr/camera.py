"""What a real camera adds to the light: the defects of raw frames, for `astrosr.simulate.observe`.

`Camera` describes a detector and its read-out; `Camera.expose` turns the
expected electrons of each exposure (the sky and sources as the optics
deliver them, see `astrosr.simulate`) into the unsigned 16-bit ADU frames a
camera writes. In the order the physics applies them:

1. light added in the sky: a **sky gradient** (scattered moonlight, a
   different direction in each frame) and **satellite trails** (straight,
   PSF-wide lines crossing a frame);
2. the **flat field**: pixel-to-pixel response and **vignetting** (a
   quadratic fall-off to the corners); **dead** pixels and columns have no
   response;
3. **dark current**, in **hot** pixels and columns above all;
4. photon (Poisson) noise; charge above the **full well** spills along its
   column (**bleeding**);
5. read noise and the gain (electrons per ADU);
6. the **bias** pedestal with **row and column banding**, part fixed (the
   same in every frame) and part new in each frame;
7. digitisation to whole ADU, clipped at the converter's range
   (**saturation**).

The fixed pattern (banding, defect positions, flat) belongs to the detector:
it is drawn from ``Camera.seed`` and is the same for every stack taken with
that camera; what changes from frame to frame is drawn from the
observation's random generator.
"""

import dataclasses
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Camera", "CameraTruth", "DEFECTS"]

#: The defects, as the fields of `Camera` that each turns on (`Camera.only`).
DEFECTS = {
    "bias": ("bias",),
    "banding": ("row_banding", "column_banding", "frame_row_banding", "frame_column_banding"),
    "hot_dead": ("hot_pixels", "dead_pixels", "hot_columns", "dead_columns"),
    "saturation": ("saturate",),
    "flat": ("flat_rms", "vignetting"),
    "sky_gradient": ("sky_gradient",),
    "trails": ("trails",),
}


@dataclass(frozen=True)
class Camera:
    """A CCD or CMOS camera's detector and read-out, with the defects of raw frames.

    The defaults are those of a small telescope's CCD: every defect present
    at a realistic level. `Camera.ideal` has none; `Camera.only` one group.

    Parameters
    ----------
    gain : float
        Electrons per ADU.
    bias : float
        Bias pedestal, ADU.
    row_banding, column_banding : float
        RMS of the fixed offsets of rows and columns, ADU.
    frame_row_banding, frame_column_banding : float
        RMS of the offsets that change from frame to frame, ADU.
    hot_pixels, dead_pixels : float
        Fractions of the pixels that are hot (dark current of 500 to 20000
        electrons per exposure) or dead (no response).
    hot_columns, dead_columns : int
        Number of hot columns (50 to 400 electrons per pixel) and dead columns.
    dark : float
        Dark current of ordinary pixels, electrons per pixel per exposure.
    full_well : float
        Electrons a pixel holds; more bleeds along its column.
    saturate : bool
        Clip at ``adc_max`` and bleed (False: an ideal converter of any range).
    adc_max : int
        Largest ADU the converter gives.
    flat_rms : float
        Pixel-to-pixel RMS of the response (fraction).
    vignetting : float
        Loss of response in the corners (fraction), quadratic in radius.
    sky_gradient : float
        Peak-to-peak sky gradient across a frame, as a fraction of the sky level.
    trails : float
        Mean number of satellite trails per frame.
    trail_flux : float
        Trail brightness, electrons per pixel along its spine.
    seed : int
        Seed of the detector's fixed pattern.
    """

    gain: float = 1.0
    bias: float = 500.0
    row_banding: float = 3.0
    column_banding: float = 2.0
    frame_row_banding: float = 2.0
    frame_column_banding: float = 1.0
    hot_pixels: float = 5e-4
    dead_pixels: float = 2e-4
    hot_columns: int = 2
    dead_columns: int = 1
    dark: float = 2.0
    full_well: float = 80000.0
    saturate: bool = True
    adc_max: int = 65535
    flat_rms: float = 0.01
    vignetting: float = 0.15
    sky_gradient: float = 0.1
    trails: float = 0.4
    trail_flux: float = 300.0
    seed: int = 2024

    @classmethod
    def ideal(cls, **kwargs):
        """A camera without any defect: no bias, banding, defects, flat, gradient or trails."""
        off = {name: _off(cls, name) for names in DEFECTS.values() for name in names}
        return cls(**{**off, "dark": 0.0, **kwargs})

    @classmethod
    def only(cls, defect, **kwargs):
        """A camera with one group of `DEFECTS` (``"banding"``, ``"trails"``...) at its default."""
        if defect not in DEFECTS:
            raise ValueError(f"defect must be one of {sorted(DEFECTS)}, got {defect!r}")
        ideal = cls.ideal()
        on = {name: getattr(cls(), name) for name in DEFECTS[defect]}
        return dataclasses.replace(ideal, **{**on, **kwargs})

    def __post_init__(self):
        for name in ("gain", "full_well"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Camera.{name} must be > 0, got {getattr(self, name)}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name not in ("saturate", "seed") and not (np.isfinite(value) and value >= 0):
                raise ValueError(f"Camera.{f.name} must be finite and >= 0, got {value}")

    def expose(self, expected, rng, *, read_noise, psf_sigma=1.0, sky=0.0):
        """Raw frames of the expected electrons ``expected`` ``(n, ny, nx)``.

        Parameters
        ----------
        expected : numpy.ndarray
            Expected electrons per pixel of each exposure (sources and sky),
            before the camera.
        rng : `numpy.random.Generator`
            Draws what changes from frame to frame.
        read_noise : float
            Electrons RMS.
        psf_sigma : float
            Width of the trails (detector pixels).
        sky : float
            Sky level (electrons per pixel) that the gradient is a fraction of.

        Returns
        -------
        raw : numpy.ndarray of uint16 ``(n, ny, nx)``
        truth : CameraTruth
        """
        n, ny, nx = expected.shape
        fixed = _FixedPattern(self, (ny, nx))
        truth = CameraTruth(bias=np.empty(expected.shape), flat=fixed.flat, hot=fixed.hot,
                            dead=fixed.dead)
        raw = np.empty(expected.shape, dtype=np.uint16)
        for i in range(n):
            light = expected[i] + self._gradient(rng, (ny, nx), sky)
            trail = _trails(rng, (ny, nx), self.trails, self.trail_flux, psf_sigma)
            truth.trails.append(trail > 0.1 * max(self.trail_flux, 1e-9))
            charge = rng.poisson(np.clip((light + trail) * fixed.flat + fixed.dark, 0, None))
            charge = charge.astype(float)
            if self.saturate:
                charge = _bleed(charge, self.full_well)
            truth.bias[i] = fixed.bias + _banding(rng, (ny, nx), self.frame_row_banding,
                                                  self.frame_column_banding)
            adu = (charge + rng.normal(0.0, read_noise, charge.shape)) / self.gain + truth.bias[i]
            top = self.adc_max if self.saturate else np.iinfo(np.uint16).max
            truth.saturated.append(adu >= top)
            raw[i] = np.clip(np.round(adu), 0, top).astype(np.uint16)
        return raw, truth

    def _gradient(self, rng, shape, sky):
        """A linear sky gradient, ``sky_gradient * sky`` peak to peak, in a random direction."""
        if not self.sky_gradient or not sky:
            return 0.0
        yy, xx = np.indices(shape, dtype=float)
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * xx / shape[1] + np.sin(angle) * yy / shape[0]
        return self.sky_gradient * sky * (ramp - ramp.mean()) / np.ptp(ramp)

    def header(self):
        """FITS cards a camera writes (GAIN, RDNOISE is the observation's)."""
        return {"GAIN": (self.gain, "[electron/adu]"),
                "INSTRUME": ("astrosr.Camera", "simulated raw camera")}


@dataclass
class CameraTruth:
    """What the camera did to each frame, for tests and benchmarks.

    Attributes
    ----------
    bias : numpy.ndarray ``(n, ny, nx)``
        The bias with its banding (fixed and per frame), ADU.
    flat : numpy.ndarray ``(ny, nx)``
        The response (flat field times vignetting; 0 at dead pixels).
    hot, dead : numpy.ndarray of bool ``(ny, nx)``
        Hot and dead pixels, columns included.
    saturated, trails : list of numpy.ndarray of bool
        Each frame's clipped pixels and satellite-trail pixels.
    """

    bias: np.ndarray
    flat: np.ndarray
    hot: np.ndarray
    dead: np.ndarray
    saturated: list = field(default_factory=list)
    trails: list = field(default_factory=list)


def _off(cls, name):
    return False if name == "saturate" else type(getattr(cls(), name))(0)


class _FixedPattern:
    """The detector's own pattern: bias with fixed banding, response, dark current."""

    def __init__(self, camera, shape):
        rng = np.random.default_rng(camera.seed)
        ny, nx = shape
        self.bias = camera.bias + _banding(rng, shape, camera.row_banding, camera.column_banding)
        yy, xx = np.indices(shape, dtype=float)
        r2 = ((xx - (nx - 1) / 2) ** 2 + (yy - (ny - 1) / 2) ** 2) / (((nx - 1) / 2) ** 2
                                                                     + ((ny - 1) / 2) ** 2)
        self.flat = (1.0 + camera.flat_rms * rng.standard_normal(shape)) * (1 - camera.vignetting
                                                                             * r2)
        self.dark = np.full(shape, float(camera.dark))
        self.hot = rng.random(shape) < camera.hot_pixels
        self.dead = rng.random(shape) < camera.dead_pixels
        self.dark[self.hot] += np.exp(rng.uniform(np.log(500.0), np.log(2e4), self.hot.sum()))
        columns = rng.choice(nx, size=min(nx, camera.hot_columns + camera.dead_columns),
                             replace=False)
        for k, x in enumerate(columns):
            if k < camera.hot_columns:
                self.dark[:, x] += rng.uniform(50.0, 400.0)
                self.hot[:, x] = True
            else:
                self.dead[:, x] = True
        self.hot &= ~self.dead
        self.flat[self.dead] = 0.0


def _banding(rng, shape, row_rms, column_rms):
    """Offsets constant along rows and along columns, ADU."""
    out = np.zeros(shape)
    if row_rms:
        out += row_rms * rng.standard_normal(shape[0])[:, None]
    if column_rms:
        out += column_rms * rng.standard_normal(shape[1])[None, :]
    return out


def _trails(rng, shape, rate, flux, sigma):
    """Satellite trails: straight lines across the frame with a Gaussian profile."""
    out = np.zeros(shape)
    yy, xx = np.indices(shape, dtype=float)
    for _ in range(rng.poisson(rate) if rate else 0):
        angle = rng.uniform(0, np.pi)
        x0, y0 = rng.uniform(0, shape[1]), rng.uniform(0, shape[0])
        distance = (xx - x0) * np.sin(angle) - (yy - y0) * np.cos(angle)
        out += flux * np.exp(-0.5 * (distance / max(sigma, 0.5)) ** 2)
    return out


def _bleed(charge, full_well):
    """Charge above the full well spills up and down its column until every pixel holds it."""
    over = np.flatnonzero((charge > full_well).any(axis=0))
    for x in over:
        column = charge[:, x]
        while True:
            excess = np.clip(column - full_well, 0, None)
            if not excess.any():
                break
            column = column - excess
            column[1:] += excess[:-1] / 2  # half up ...
            column[:-1] += excess[1:] / 2  # ... half down (off the ends is lost)
            if excess.sum() < 1e-6 * full_well:
                break
        charge[:, x] = np.minimum(column, full_well)
    return charge
