"""Shifts of large frames fitted on their informative pixels, against templates built cheaply.

On a field of stars most pixels are empty sky: they tell nothing about a
shift, but a fit over the whole frame pays for them at every iteration, and
a template rebuilt over the whole frame (Wiener filter, spline prefilter)
pays for them at every round. Here:

* **The pixels.** The geometric Fisher information of a pixel is the
  template's squared gradient over the pixel's variance. Measured on a
  noisy template it has a floor, the gradient of the template's own
  filtered noise, which over a million empty pixels adds up to more than the
  stars: the floor is computed from the filters (Parseval) and taken off, the
  excess smoothed over a pixel and kept where it stands `_SIGNIFICANCE`
  sigmas above the floor's chance scatter (not a selection of noise peaks),
  and the pixels that hold `INFORMATION` of it are kept. They are
  chosen once, on the reference grid, at the first leave-one-out round: for
  the even frames from the mean of the odd ones and for the odd from the
  mean of the even (pixels chosen where a frame's own noise happens to
  raise the gradients would bias its fit; a half's mean has 2/n of a frame's
  noise variance), and the same pixels, displaced by each frame's
  whole-pixel shift, are fitted in each frame (a stack of two: those of the
  reference, the fit against it). Where the information is spread (a
  nebula: the selection would keep more than `SPREAD` of the pixels), every
  pixel is fitted: there the boundary of a selection runs through many
  pixels of like information, where the templates' own noise decides, and
  that biases the fits. The errors, from the Fisher matrix of the pixels
  used, say what the selection cost.
* **The fit.** Every pixel of a pure shift sees the template at the same
  fractional offset, so its value and gradient are fixed combinations of the
  same 4 x 4 spline coefficients: these are gathered once (16 numbers per
  pixel used) and each Gauss-Newton iteration is one small matrix product,
  nothing over the frame.
* **The templates.** The Wiener filter, the cubic-spline prefilters and the
  spline shifts are linear and shift-invariant, so they commute (up to the
  frame edges): each frame is filtered once, in one FFT, with both
  prefilters (the frame's, that its alignment needs, and the template's),
  and a round's leave-one-out template is the mean of the other frames'
  filtered coefficients, each moved by its 4 x 4-tap B-spline shift: the
  spline coefficients of the Wiener-filtered mean of the aligned frames, as
  `astrosr.registration.templates.Template` builds them, without a filter per
  template. One Wiener gain serves all leave-one-out templates, made at the
  first round: the signal power from the periodogram of the mean of all the
  frames aligned at its shifts (in the Fourier domain, through each one's
  spline shift), less its noise, as `Template` measures its own, and the
  noise that of a mean of ``n - 1`` (the white level of the periodogram where
  it exceeds the stated variance's: cosmic rays, a variance given too small).
* **Cosmic rays.** At the first round (of three frames or more: of two,
  neither tells which one has it), what one frame shows far above the
  mean of the others (`COSMIC_RAY_SIGMA`, and twice the others' height above
  the sky) is taken out of that frame, and the frames are filtered again,
  filled there: a template that carries another frame's cosmic rays pulls
  a fit on few pixels far more than one on every pixel.

The template covers the pixels that at least two frames cover (eroded by
`~astrosr.registration.templates.MARGIN`), so every leave-one-out template
covers them; its variance is taken at the nearest pixel.
"""

import numpy as np
from scipy import fft, ndimage

from .fitting import TOL, fit_pixels
from .splines import bspline_taps
from .templates import MARGIN, PAD, erode, fill, tapered_pad, tapered_sum, wiener_gain

__all__ = ["InformativeStack", "INFORMATION", "MIN_PIXELS", "SPREAD", "COSMIC_RAY_SIGMA"]

#: The fits use the pixels holding this fraction of the geometric Fisher information.
INFORMATION = 0.99
#: Frames of at least this many pixels are registered this way (smaller ones on every pixel).
MIN_PIXELS = 256 * 256
#: Where the selection would keep more than this fraction of the pixels (the information is
#: spread: a nebula), every pixel is fitted: a selection through pixels of like information
#: is drawn by the templates' noise, and biases the fits.
SPREAD = 0.3
#: Border of the padded arrays (pixels): the template is read up to 4.5 px off a fitted pixel.
_BORDER = 8
#: Most distance (px) of a fit's shift from the whole-pixel shift its pixels were cut at.
_REACH = 2.5
#: A frame's pixel this many sigmas above the others (and twice their height above the sky)
#: is a cosmic ray (`InformativeStack`), taken out of the frame with the pixels next to it.
COSMIC_RAY_SIGMA = 8.0
#: How far (px) a fraction may leave [0, 1) before the template's taps are gathered again.
_SLACK = 0.01
#: Smoothing (Gaussian sigma, px) of the information map before the selection.
_SMOOTH = 1.0
#: Information below this many sigmas of the noise floor's chance scatter is not selected.
_SIGNIFICANCE = 3.0


class InformativeStack:
    """A stack of frames prepared for shift fits on their informative pixels.

    Parameters
    ----------
    frames : list of `~astrosr.registration.templates.Frame`
        The frames, all of one shape.
    reference : int
        The frame whose grid the templates and the pixel selection live on.

    Attributes
    ----------
    first_pixels : numpy.ndarray or None
        Boolean map (reference grid) of the pixels fitted against the
        reference in a stack of two frames (None before the fit).
    loo_pixels : list of numpy.ndarray or None
        In a larger stack, those of the leave-one-out rounds: of the even
        frames, then of the odd ones (None before the first round).
    cosmic_rays : list of int or None
        Pixels of each frame taken out as cosmic rays (None before the first round).
    """

    def __init__(self, frames, reference):
        self.frames, self.reference = frames, reference
        self.shape = frames[0].data.shape
        self._selected = self._where = None
        self._good = [f.good for f in frames]
        self.first_pixels = self.loo_pixels = None
        self.cosmic_rays = None
        self._filter([f.data for f in frames])

    def _filter(self, data):
        """Transform every frame (``data``: filled where not `_good`); for a pair, filter
        them for the fit (the leave-one-out templates wait for the shifts: `_templates`)."""
        spectra, noise = [], []
        for values, good, frame in zip(data, self._good, self.frames):
            ft, noise_power, padded = _spectrum(values, good, frame.var)
            spectra.append(ft)
            noise.append(noise_power)
        self._spectra, self._noise, self._padded = spectra, noise, padded
        self._coeffs = None
        self._var = [_pad(np.where(g, f.var, 0.0).astype(np.float32), 0.0)
                     for g, f in zip(self._good, self.frames)]
        self._trusted = [_pad(erode(g, MARGIN), False) for g in self._good]
        if len(self.frames) == 2:  # the pair: the reference alone is the template
            ref = self.reference
            gain, self._factor1 = wiener_gain(_power(spectra[ref]), noise[ref])
            self._floor = _gradient_floor(gain, padded)
            gain = (gain * _prefilter(padded)).astype(np.float32)
            self._pair = [self._crop(fft.irfft2(ft * gain, padded, workers=-1))
                          for ft in spectra]

    def _templates(self, shifts):
        """Filter every frame for the leave-one-out templates, with two prefilters (its own
        spline's, that its alignment needs, then the template's) and the Wiener filter of
        a mean of ``n - 1`` frames aligned at ``shifts``.

        The filter's signal power is that of the mean of all the frames aligned (in the
        Fourier domain, through each one's spline shift), less its noise, as
        `~astrosr.registration.templates.Template` measures its own: the mean of the
        frames' periodograms has their full noise, whose chance excess, against the
        noise of a mean of ``n - 1``, would let noise through at high frequencies
        (and the spline's interpolation of noise there pulls shifts).
        """
        n, padded = len(self.frames), self._padded
        p1 = _prefilter(padded)
        wy = 2 * np.pi * fft.fftfreq(padded[0])
        wx = 2 * np.pi * fft.rfftfreq(padded[1])
        mean, attenuation = 0.0, 0.0
        for ft, d in zip(self._spectra, shifts):
            ry, rx = _shift_response(wy, d[1])[:, None], _shift_response(wx, d[0])[None, :]
            mean = mean + ft * (ry * rx)
            attenuation = attenuation + np.abs(ry) ** 2 * np.abs(rx) ** 2 / n
        power = _power(mean / n)
        noise = max(float(np.mean(self._noise)), _white_power(power) * n)
        gain, self._factor = wiener_gain(power, noise / n, template_noise=noise / (n - 1))
        # The noise of the aligned frames is that of the frames through their spline shifts.
        self._floor = _gradient_floor(gain * np.sqrt(attenuation), padded)
        gain = (gain * p1 * p1).astype(np.float32)
        self._coeffs = []
        for i in range(n):
            self._coeffs.append(self._crop(fft.irfft2(self._spectra[i] * gain, padded,
                                                      workers=-1)))
            self._spectra[i] = None

    # ------------------------------------------------------------------ arrays

    def _crop(self, filtered):
        ny, nx = self.shape
        b = _BORDER
        return np.ascontiguousarray(filtered[PAD - b:PAD + ny + b, PAD - b:PAD + nx + b],
                                    dtype=np.float32)

    def _aligned(self, j, d):
        """Frame ``j``'s filtered coefficients (0 where it does not cover), its coverage and
        variance (nearest pixel) on the padded reference grid: at p, frame j at ``p + d``."""
        whole = np.floor(d).astype(int)
        t = np.asarray(d, float) - whole
        values = _spline_moved(self._coeffs[j], whole, bspline_taps(t[0])[0],
                               bspline_taps(t[1])[0])
        # Bilinear coverage: every corner of weight above 1e-3 trusted.
        trusted = self._trusted[j]
        cover = _displaced(trusted, whole[1], whole[0], False)
        if t[0] > 1e-3:
            cover &= _displaced(trusted, whole[1], whole[0] + 1, False)
        if t[1] > 1e-3:
            cover &= _displaced(trusted, whole[1] + 1, whole[0], False)
            if t[0] > 1e-3:
                cover &= _displaced(trusted, whole[1] + 1, whole[0] + 1, False)
        values *= cover
        near = np.round(d).astype(int)
        var = _displaced(self._var[j], near[1], near[0], 0.0)
        var *= cover
        return values, cover, var

    # ------------------------------------------------------------------ fits

    def first_fit(self, i, d0):
        """Frame ``i`` of a stack of two fitted against the reference.

        Parameters
        ----------
        i : int
            The frame (not the reference).
        d0 : array_like
            The start ``(dx, dy)``.

        Returns
        -------
        `~astrosr.registration.fitting.Fit`
        """
        ref = self.reference
        if self.first_pixels is None:  # the reference's information (not the frame's noise)
            var = np.where(self.frames[ref].good, self.frames[ref].var, np.inf)
            self.first_pixels = _select(_information(_unpad(self._pair[ref]), var, var,
                                                     self._floor), self.frames[ref].trusted)
        template = (self._pair[ref], self._trusted[ref], self._var[ref] * self._factor1)
        return self._fit(i, d0, template, self.first_pixels, True)

    def leave_one_out(self, shifts, progress=None):
        """Every frame fitted against the mean of the others, aligned at ``shifts``.

        Parameters
        ----------
        shifts : numpy.ndarray
            ``(n, 2)``: each frame's ``(dx, dy)`` on the reference grid, the
            template's alignment and the fits' start.
        progress : callable, optional
            Called with 1 after each frame's fit.

        Returns
        -------
        list of `~astrosr.registration.fitting.Fit`
            One per frame, on its informative pixels (`loo_pixels`).
        """
        if self._coeffs is None:
            self._templates(shifts)
        total = np.zeros(self._coeffs[0].shape, np.float32)
        count = np.zeros(total.shape, np.int16)
        total_var = np.zeros(total.shape, np.float32)
        halves = None if self.loo_pixels is not None else [
            [np.zeros_like(total), np.zeros_like(count), np.zeros_like(total_var)]
            for _ in range(2)]
        aligned = []
        for j, d in enumerate(shifts):
            values, cover, var = self._aligned(j, d)
            total += values
            total_var += var
            count += cover
            if halves is not None:
                half = halves[j % 2]
                half[0] += values
                half[1] += cover
                half[2] += var
            aligned.append((values, cover, var))
        if self.cosmic_rays is None and self._reject_cosmic_rays(shifts, aligned, total, count):
            return self.leave_one_out(shifts, progress)  # again, without them
        covered = erode(count >= 2, MARGIN)
        if halves is not None:
            self.loo_pixels = self._half_information(halves, total_var, count, covered)
        fits = []
        for i, (values, cover, var) in enumerate(aligned):
            # The mean of the others (0 where none covers): values and var are 0 off cover.
            others = np.maximum(count - cover, 1).astype(np.float32)
            coeffs = total - values
            coeffs /= others
            tvar = total_var - var
            tvar /= others * others
            tvar *= self._factor
            fits.append(self._fit(i, shifts[i], (coeffs, covered, tvar),
                                  self.loo_pixels[1 - i % 2], False))
            if progress is not None:
                progress(1)
        return fits

    def _reject_cosmic_rays(self, shifts, aligned, total, count):
        """Find, once, what one frame shows and the others do not (cosmic rays, unmasked hot
        pixels): take it (and the pixels next to it) out of the frame's good pixels and
        filter the frames again, filled there; True where any was found. ``cosmic_rays``
        is then each frame's count of such pixels.

        A pixel of frame j is one where its aligned, filtered value exceeds the mean of the
        others there by `COSMIC_RAY_SIGMA` of their difference's noise and by twice the
        others' height above the sky: a star the shifts misplace by a fraction of its
        width differs from itself by less than that.
        """
        smooth = np.array([1.0, 4.0, 1.0], np.float32) / 6  # coefficients -> values
        all_values = _smoothed(total, smooth)
        found = []
        for j, (values, cover, var) in enumerate(aligned):
            own = _smoothed(values, smooth)
            with np.errstate(invalid="ignore", divide="ignore"):
                others = np.maximum(count - cover, 1)
                mean = (all_values - own) / others
                excess = own - mean
                sky = np.median(mean[cover][::max(1, int(cover.sum()) // 100_000)])
                # The filter scales white noise by `_factor`: the frame's and the others' mean's.
                noise = np.sqrt(var * self._factor * (1.0 + 1.0 / others))
                hit = cover & (count > 1) & (excess > COSMIC_RAY_SIGMA * noise) & \
                    (excess > 2.0 * (mean - sky))
            if hit.any():  # onto frame j's pixels, at the nearest whole shift
                near = np.round(shifts[j]).astype(int)
                hit = _unpad(_displaced(hit, -near[1], -near[0], False))
                self._good[j] = self._good[j] & ~ndimage.binary_dilation(hit)
            found.append(int(hit.sum()))
        self.cosmic_rays = found
        if any(found):  # filtered again, filled where they were
            self._filter([fill(f.data, g) for f, g in zip(self.frames, self._good)])
        return any(found)

    def _half_information(self, halves, total_var, count, covered):
        """For the even frames and for the odd: the pixels holding `INFORMATION` of the
        information that the mean of the *other* half shows, which their own noise has no
        part in (pixels chosen where a frame's own noise raises the gradients would bias
        its fit)."""
        selections = []
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.where(count > 0, total_var / np.maximum(count, 1), np.inf)
            for values, cover, var_sum in halves[::-1]:
                n = np.maximum(cover, 1)
                info = _information(_unpad(values / n), _unpad(var_sum / n ** 2), _unpad(var),
                                    self._floor)
                selections.append(_select(info, _unpad(covered)))
        if max(u.sum() for u in selections) > SPREAD * max(covered.sum(), 1):
            everything = _unpad(covered)  # spread: every pixel, as without a selection
            return [everything, everything]
        return selections

    def _fit(self, i, d0, template, selected, template_noise_in_weights):
        """Frame ``i`` against ``template`` (coefficients, coverage, variance: padded reference
        grid) on the ``selected`` pixels, cut at the whole-pixel shift nearest the fit's."""
        if selected is not self._selected:
            uy, ux = np.nonzero(selected)
            self._selected, self._where = selected, (uy, ux)
            self._flat = (uy + _BORDER) * (self.shape[1] + 2 * _BORDER) + (ux + _BORDER)
        d = np.array(d0, dtype=float)
        fit = None
        for _ in range(3):
            k = np.round(d)
            pixels = _Pixels(self.frames[i], self._good[i], *self._where, k)
            problem = _PixelShift(template, self._flat, self.shape[1] + 2 * _BORDER, k, d)
            fit = fit_pixels(pixels, problem, template_noise_in_weights=template_noise_in_weights,
                             residual_errors=self.frames[i].estimated_noise)
            d = fit.d
            if np.all(np.abs(d - k) <= 1.0) or not np.all(np.isfinite(d)):
                break
        return fit


class _Pixels:
    """A frame's pixels at ``(y, x) + k`` (``k``: dx, dy): data, variance and which are good
    (inside the frame)."""

    def __init__(self, frame, good, y, x, k):
        ny, nx = frame.data.shape
        ky, kx = int(k[1]), int(k[0])
        if y.size and (0 <= y.min() + ky and y.max() + ky < ny and 0 <= x.min() + kx
                       and x.max() + kx < nx):
            inside, index = True, (y + ky) * nx + (x + kx)
        else:
            y, x = y + ky, x + kx
            inside = (y >= 0) & (y < ny) & (x >= 0) & (x < nx)
            index = np.clip(y, 0, ny - 1) * nx + np.clip(x, 0, nx - 1)
        self.data = np.take(frame.data, index)
        self.var = np.take(frame.var, index)
        self.good = np.take(good, index) & inside


class _PixelShift:
    """``frame(u + k) = a * T(u + k - d) + b`` at reference pixels ``u`` for a template ``T``
    given by spline coefficients on the padded reference grid (the `fit_pixels` protocol).

    The template position ``u + o``, ``o = k - d``, has the same fractional part at every
    pixel: the 16 coefficients around each are gathered once per whole part of ``o`` (kept
    while the fraction stays within `_SLACK` of [0, 1): the weight of the coefficient left
    out is then below 2e-7).
    """

    free = 2

    def __init__(self, template, flat, width, k, d0):
        coeffs, cover, tvar = template
        self.u, self.width = flat, width
        self.coeffs, self.cover, self.tvar = coeffs.ravel(), cover.ravel(), tvar.ravel()
        # A constant off the template (the fitted background takes it up) keeps its float32
        # values small where the sky is flat.
        sample = self.coeffs[self.u[::max(1, self.u.size // 10_000)]]
        self.level = np.float32(np.median(sample)) if sample.size else np.float32(0.0)
        self.k, self.d = np.asarray(k, dtype=float), np.array(d0, dtype=float)
        self._base = self._taps = self._use = self._count = None

    def _offset(self):
        o = self.k - self.d
        if self._base is not None and np.all(np.abs(o - self._base - 0.5) <= 0.5 + _SLACK):
            return self._base, o - self._base
        base = np.floor(o).astype(int)
        return base, o - base

    def coverage(self):
        base, t = self._offset()
        # Bilinear coverage: every corner of weight above 1e-3 covered; the variance bilinear.
        cover = np.ones(self.u.size, bool)
        tvar = np.zeros(self.u.size)
        for m, wy in ((0, 1.0 - t[1]), (1, t[1])):
            for n, wx in ((0, 1.0 - t[0]), (1, t[0])):
                if wy * wx <= 1e-3:
                    continue
                idx = self.u + ((base[1] + m) * self.width + (base[0] + n))
                cover &= np.take(self.cover, idx)
                tvar += wy * wx * np.take(self.tvar, idx)
        return cover, tvar

    def _weights(self, rows, use):
        """The weights of the gathered taps that give the template's value (and its derivatives
        with respect to ``d``: ``rows`` of them), and the taps of the pixels ``use``."""
        base, t = self._offset()
        count = int(use.sum())
        if (self._base is None or np.any(base != self._base) or self._use is not use
                or self._count != count):
            u = self.u if count == use.size else self.u[use]
            taps = np.empty((16, u.size), np.float32)
            for m in range(-1, 3):
                for n in range(-1, 3):
                    np.take(self.coeffs, u + ((base[1] + m) * self.width + base[0] + n),
                            out=taps[4 * (m + 1) + n + 1])
            taps -= self.level
            self._base, self._taps, self._use, self._count = base, taps, use, count
        wy, dy = bspline_taps(t[1])
        wx, dx = bspline_taps(t[0])
        # d moves the template position the other way: the derivatives' signs are flipped.
        weights = [np.outer(wy, wx), -np.outer(wy, dx), -np.outer(dy, wx)][:rows]
        return np.stack(weights).reshape(rows, 16).astype(np.float32), self._taps

    def model(self, use):
        # einsum: single-threaded (a BLAS product of thin matrices stalls on a loaded machine).
        out = np.einsum("rk,kn->rn", *self._weights(3, use))
        return out[0], out[1:].T

    def values(self, use):
        weights, taps = self._weights(1, use)
        return np.einsum("k,kn->n", weights[0], taps)

    def update(self, step):
        self.d = np.clip(self.d + step, self.k - _REACH, self.k + _REACH)
        return np.max(np.abs(step)) < TOL

    def params(self):
        return np.array([self.d[0], self.d[1], 0.0, 1.0])


# --------------------------------------------------------------------------- helpers


def _spectrum(data, good, var):
    """rfft2 of a frame's tapered, padded data (complex64), its white-noise power and the
    padded shape."""
    padded, _ = tapered_pad(data, PAD)
    noise = tapered_sum(np.where(good, var, 0.0), PAD, 3)
    return fft.rfft2(padded.astype(np.float32), workers=-1), noise, padded.shape


def _shift_response(w, d):
    """Frequency response (angular frequencies ``w``) of the cubic B-spline shift by ``d``
    of samples: the prefilter, then the 4 taps at ``floor(d) - 1 .. floor(d) + 2``."""
    whole = np.floor(d)
    taps, _ = bspline_taps(d - whole)
    kernel = sum(t * np.exp(1j * w * m) for t, m in zip(taps, range(-1, 3)))
    return np.exp(1j * w * whole) * kernel * (3.0 / (2.0 + np.cos(w)))


def _white_power(power):
    """The white part of a periodogram: its median beyond 0.4 cycles per pixel, where a
    well-sampled sky has (almost) no power left, and where what the noise model misses
    (cosmic rays, a variance given too small) shows."""
    fy = np.abs(fft.fftfreq(power.shape[0]))[:, None]
    fx = fft.rfftfreq(2 * power.shape[1] - 1)[None, :]
    outer = np.hypot(fy, fx) > 0.4
    return float(np.median(power[np.broadcast_to(outer, power.shape)]))


def _power(ft):
    return (ft.real.astype(float) ** 2 + ft.imag.astype(float) ** 2)


def _prefilter(padded):
    """Frequency response of the cubic-spline prefilter on the padded grid (rfft half-plane)."""
    wy = 2 * np.pi * fft.fftfreq(padded[0])
    wx = 2 * np.pi * fft.rfftfreq(padded[1])
    return (3.0 / (2.0 + np.cos(wy)))[:, None] * (3.0 / (2.0 + np.cos(wx)))[None, :]


def _gradient_floor(gain, padded):
    """Mean squared gradient (at the pixels) of the spline through white noise of unit
    variance filtered by ``gain`` (Parseval over the rfft half-plane)."""
    wy = 2 * np.pi * fft.fftfreq(padded[0])[:, None]
    wx = 2 * np.pi * fft.rfftfreq(padded[1])[None, :]
    hx = (3.0 / (2.0 + np.cos(wx)) * np.sin(wx)) ** 2
    hy = (3.0 / (2.0 + np.cos(wy)) * np.sin(wy)) ** 2
    weights = np.full(gain.shape, 2.0)
    weights[:, 0] = 1.0
    return float(np.sum(weights * gain ** 2 * (hx + hy)) / np.sum(weights))


def _gradient2(coeffs):
    """Squared gradient, at the pixels, of the cubic spline with coefficients ``coeffs``."""
    diff, smooth = np.array([-0.5, 0.0, 0.5], np.float32), np.array([1, 4, 1], np.float32) / 6
    gx = ndimage.correlate1d(ndimage.correlate1d(coeffs, diff, axis=1), smooth, axis=0)
    gy = ndimage.correlate1d(ndimage.correlate1d(coeffs, diff, axis=0), smooth, axis=1)
    return gx.astype(float) ** 2 + gy.astype(float) ** 2


def _information(coeffs, noise_var, var, floor):
    """The geometric information per pixel (squared gradient over the variance ``var``) in
    excess of the noise floor (the filtered noise of variance ``noise_var``), smoothed, and
    0 where that excess is within `_SIGNIFICANCE` of the floor's chance scatter."""
    with np.errstate(invalid="ignore", divide="ignore"):
        level = noise_var * floor / var
        info = _gradient2(coeffs) / var - level
    info[~np.isfinite(info)] = 0.0
    level[~np.isfinite(level)] = 0.0
    info = ndimage.gaussian_filter(info, _SMOOTH)
    # A squared gradient of noise scatters by its mean; the smoothing takes that down by the
    # root of the sum of its squared weights, 1 / (2 sqrt(pi) sigma).
    info[info < _SIGNIFICANCE * level / (2.0 * np.sqrt(np.pi) * _SMOOTH)] = 0.0
    return info


def _select(info, allowed):
    """The ``allowed`` pixels that hold `INFORMATION` of the (positive) information ``info``
    (all of them where nothing stands above the noise)."""
    info = np.where(allowed, info, 0.0)
    positive = info[info > 0]
    if positive.size == 0 or not np.isfinite(positive.sum()):
        return allowed.copy()
    values = np.sort(positive.astype(np.float32))[::-1]
    cumulative = np.cumsum(values, dtype=float)
    n_keep = int(np.searchsorted(cumulative, INFORMATION * cumulative[-1])) + 1
    threshold = values[min(n_keep, values.size) - 1]
    return allowed & (info >= threshold)


def _pad(array, value):
    b = _BORDER
    return np.pad(array, b, constant_values=value)


def _unpad(array):
    b = _BORDER
    return array[b:-b, b:-b]


def _spline_moved(coeffs, whole, wx, wy):
    """``out[p] = sum_mn wy[m] wx[n] coeffs[p + whole + (m, n)]``, ``m, n = -1..2``, 0 where
    that reaches outside: a B-spline surface at ``p + whole + t`` (the weights ``t``'s).

    The pass along x runs over the flattened array (contiguous slices): at the ends of
    the rows it reads the next row's start, values that only the border's pixels
    (never covered) see.
    """
    ny, nx = coeffs.shape
    flat = coeffs.ravel()
    size = flat.size
    rows = np.zeros(size, np.float32)
    for weight, m in zip(wx.astype(np.float32), range(-1, 3)):
        o = whole[0] + m
        lo, hi = max(0, -o), min(size, size - o)
        if lo < hi:
            rows[lo:hi] += weight * flat[lo + o:hi + o]
    rows = rows.reshape(ny, nx)
    out = np.zeros((ny, nx), np.float32)
    for weight, m in zip(wy.astype(np.float32), range(-1, 3)):
        o = whole[1] + m
        lo, hi = max(0, -o), min(ny, ny - o)
        if lo < hi:
            out[lo:hi] += weight * rows[lo + o:hi + o]
    return out


def _smoothed(array, taps):
    """``array`` filtered by the 3-tap ``taps`` along both axes (zero beyond)."""
    out = np.zeros_like(array)
    out[1:-1] = taps[0] * array[:-2] + taps[1] * array[1:-1] + taps[2] * array[2:]
    result = np.zeros_like(array)
    result[:, 1:-1] = taps[0] * out[:, :-2] + taps[1] * out[:, 1:-1] + taps[2] * out[:, 2:]
    return result


def _displaced(array, dy, dx, fill):
    """``out[y, x] = array[y + dy, x + dx]`` where that is inside, else ``fill``."""
    out = np.full_like(array, fill)
    ny, nx = array.shape
    ys, yd = slice(max(dy, 0), ny + min(dy, 0)), slice(max(-dy, 0), ny - max(dy, 0))
    xs, xd = slice(max(dx, 0), nx + min(dx, 0)), slice(max(-dx, 0), nx - max(dx, 0))
    if ys.start < ys.stop and xs.start < xs.stop:
        out[yd, xd] = array[ys, xs]
    return out
