"""Benchmark: registration of dithered, rotated, scaled, undersampled and WCS-seeded stacks.

Simulated 16-frame stacks (``astrosr.simulate.observe``: frames of 128x128
from 512x512 truths, scale 4, sky 100 e-, read noise 5 e-), frame 0 the
reference in every stack; the geometry of frames 1..15 relative to frame 0
is measured and compared with the truth and with the two-frame Cramér-Rao
bound (CRB, below). Scenarios (``--scenarios``, default all):

``shift``
    Pure dithers (``observe``'s default shifts), Gaussian PSF sigma 1.2
    input px. ``astrosr.register_stack`` against
    ``skimage.registration.phase_cross_correlation`` as it comes
    (``upsample_factor=100``), the same at its best (Hann-windowed,
    median-subtracted frames, ``normalization=None``) and
    ``image_registration.chi2_shift`` (``upsample_factor='auto'``). The
    table of the earlier versions of this benchmark, unchanged.
``rigid``
    Rotations uniform in +-20 deg for frames 1..13 and frames 14, 15 at 90
    and 180 deg; shifts uniform in +-1.5 px (the geometry of
    ``benchmarks/geometry.py``, same seeds, but the shifts of the 90 and 180
    deg frames rounded to 1/16 px, where ``render_geometry`` is exact for
    them: see `geometry_table`), PSF sigma 1.2 px.
    ``register_stack(transform="rigid")`` against ``astroalign.find_transform``
    (triangle asterisms of ``sep`` detections, RANSAC; a similarity).
    Per parameter: RMS error, /CRB, pull std, astroalign / astrosr, ms/frame,
    and the RMS of the +-20 deg frames and of the 90/180 deg frames apart.
``similarity``
    As ``rigid`` plus a scale (frame px per reference px) uniform in
    0.98-1.02; ``register_stack(transform="similarity")`` against astroalign.
``undersampled``
    Pure shifts uniform in +-1.5 px (``simulate.default_shifts``, as
    ``benchmarks/geometry.py``), PSF sigma 0.5 px, frames sky-subtracted (as
    ``benchmarks/fusion.py`` registers them). ``register_stack(psf=...)``
    (``method="auto"``: should choose the model fit; the choice is
    ``table.meta["registration"]``) and ``method="correlation"`` (the earlier
    path), against skimage at its best and chi2_shift. Then the
    reconstruction (``astrosr.fuse(method="reconstruct", psf=...)``, defaults
    otherwise, as the fusion and geometry benchmarks) with the registered
    geometry against the same with the true one: PSNR against the truth on
    the interior (16 fine px from each edge), difference in dB (target:
    within 0.1 dB).
``wcs``
    WCS-seeded stacks. Headers: ``TAN`` (the truth has a TAN WCS of 0.1"
    per fine pixel; ``observe`` gives every frame of a ``rigid`` geometry its
    exact WCS: any angle) and the six real distorted headers of
    ``benchmarks/geometry.py`` (astropy's test data: DSS plate, IRAC SIP, TPV,
    SIP, ACS SIP, ACS SIP + lookup tables; the header's WCS moved onto the
    reference frame as there, frame i's the reference's translated by its
    dither with ``astrosr.nddata.shift_wcs``, pure shifts uniform in +-1.5 px:
    a rotated frame's WCS cannot be written in those distortion forms). Each
    frame's WCS (frames 1..15) is then spoiled: its CD (or PC) matrix turned
    by +-0.1 deg on the pixel side (``CD R``) and its CRVAL moved so that its
    centre lies 0.5 px (random direction) off. ``register_stack(transform="rigid",
    use_wcs=True)`` against ``register_stack(transform="rigid")`` from
    scratch (the same frames without WCS help). Score: the RMS over a 9x9
    grid of frame pixels and frames 1..15 of |p - p_true|, p the position in
    reference pixels given by the corrected WCS (the table's ``wcs`` column,
    through the reference's WCS), p_true by the true WCS; for the scratch
    run, p from the fitted transform. Also: the same through the correction
    itself (``Similarity(dx, dy, rotation).frame_to_reference`` of the
    spoiled WCS's position: must agree with the ``wcs`` column), the RMS of
    the spoiled start, and its floor (the RMS left by the best rigid
    correction of the spoiled WCS: through a distortion, a pointing and roll
    error is not exactly a rigid motion of the pixel plane, so a similarity
    of the reference pixel plane cannot take all of it out (a correction of
    the WCS itself, CRVAL and CD, could): ~1e-3 px on the SIP headers, 4e-3 px
    on the ACS lookup-table header, whose frame lies far from CRPIX). Target: the
    use_wcs RMS within 1.1 x hypot(scratch RMS, floor).
``speed``
    Seconds per megapixel per frame of ``register_stack`` on pure-shift
    stacks (PSF 1.2 px) of 16 frames of 256x256 and 512x512 (target <= 1),
    and of the rigid and the undersampled (model) paths at 128x128 and
    256x256; peak memory: the ``tracemalloc`` peak over the call (Python and
    NumPy allocations, which NumPy reports to tracemalloc; not what C
    libraries allocate for themselves, e.g. FFT plans), in a separate,
    untimed call.

Cramér-Rao bound. For every estimated parameter, from the forward model's
own derivatives: the two-frame bound of frame i relative to frame 0 is
``sqrt(diag(inv(F)))``, ``F = J^T diag(1/(m_0 + m_i + 2 read_noise**2)) J``,
``m`` the noise-free model frames with sky (expected electrons) and ``J``
the derivatives of ``m_i`` with respect to its own parameters ``dx, dy``
(``rotation``, ``scale``), plus, except in the ``shift`` table (kept as it
was), two nuisance columns: a flux factor (the frame's signal) and a
background (ones), which the registration fits too. They raise the shift
and rotation bounds by < 0.1% on the star field and < 1% on "hdf" and
"galaxies", the scale bound by up to 6% ("galaxies": a dilation also
changes the flux per pixel). With rotations ``m_0`` is the reference's model seen
by frame i's pixels, which is ``m_i`` itself (to within the pixel-area ratio
``scale**2``, <= 4%). The derivatives:

* pure shifts: central differences (+-1e-3 px) of ``simulate.render`` (exact
  sub-pixel shifts, pixel-integrated), as in the earlier versions;
* rotated and scaled frames: ``simulate.render_geometry`` (pixel-integrated
  by a midpoint rule of ``subsamples**2`` points per pixel that look up the
  PSF-convolved truth by nearest fine pixel). Its central differences with a
  small step are staircases (a step of 1e-3 px moves no point into another
  fine pixel, or a whole aligned row at once: at 0, 90 and 180 deg the bound
  came out up to 60% wrong, or singular). The shift derivatives are taken
  instead with a step of exactly half a sample spacing, ``h = 1 /
  (2 subsamples)`` px: the two sides then differ by the samples at the
  footprint's edges only (the sum telescopes along each row of samples, in
  the frame's own axes, at any angle), the derivative of the pixel integral;
  the rotation and scale derivatives follow by the chain rule (a small turn
  or dilation of frame i about ``c + d`` moves a pixel at ``q`` as a shift
  of ``dtheta (-(y - o_y), x - o_x)`` or ``ds (q - o) / s``, and a dilation
  also scales the flux per pixel by ``s**-2``), exact to first order up to
  each footprint's own turn (~1e-3 relative). ``subsamples = 4`` (60 renders,
  ~2 s per stack on 2 cores): the bounds agree within 1% with
  ``subsamples = 32`` at 0, 7.3, 45, 90 and 180 deg, and with direct central
  differences of ``render_geometry`` in rotation and scale (+-0.4 deg,
  +-8e-3 at ``subsamples = 8``; +-0.2 deg, +-4e-3 at 16) within 2%, the
  shift bound at 0 deg within 2.5% of ``simulate.render``'s on the star
  field, "hdf" and "galaxies" (their models differ by the nearest-fine-pixel
  lookup). ``--check`` repeats these tests.

The peers' conventions, verified on noise-free frames (comments at the
conversion functions; ``--check`` repeats them). Medians over ``--runs`` runs
(run k: seed k for the truth and the noise, 1000 + k for the geometry, as
``benchmarks/geometry.py``); pulls pooled over runs.

Run from the repository root::

    python benchmarks/registration.py                      # 3 runs, all scenarios
    python benchmarks/registration.py --quick              # 1 run, fewest images (~5 min on 2 cores)
    python benchmarks/registration.py --scenarios rigid wcs --images stars hdf --runs 2
    python benchmarks/registration.py --check              # conventions and CRB, noise-free
"""

import argparse
import csv
import os
import re
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.nddata import CCDData
from astropy.table import QTable

with warnings.catch_warnings():
    # image_registration imports astropy's deprecated test runner.
    warnings.simplefilter("ignore")
    import image_registration
    from image_registration import chi2_shift

import skimage
from skimage.filters import window
from skimage.registration import phase_cross_correlation

import astrosr
from astrosr import simulate
from astrosr.psf import GaussianPSF

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (ALL_IMAGES, DATA, FRAME, HEADERS, N_FRAMES, PSF, READ_NOISE,  # noqa: E402
                     REAL, SCALE, SKY, available, make_truth, reference_wcs)

METHODS = ["astrosr", "skimage", "skimage-best", "chi2_shift"]
SCENARIOS = ["shift", "rigid", "similarity", "undersampled", "wcs", "speed"]
MARGIN = 16
SHARP_PSF = GaussianPSF(0.5)
FINE_ARCSEC = 0.1
CRB_SUBSAMPLES = 4
SCENARIO_IMAGES = {"shift": ALL_IMAGES, "rigid": ALL_IMAGES, "similarity": ALL_IMAGES,
                   "undersampled": ["stars", "2mass", "spitzer", "hdf", "galaxies"],
                   "wcs": ["stars", "hdf"]}
QUICK_IMAGES = {"shift": ["stars", "galaxies"], "rigid": ["stars"], "similarity": ["stars"],
                "undersampled": ["stars"], "wcs": ["stars"]}
WCS_OFFSET_PX = 0.5
WCS_ROTATION_DEG = 0.1
TARGETS = dict(psnr_db=0.1, wcs_ratio=1.1, speed=1.0)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- sign conventions
#
# astrosr's convention: a source at (x, y) in the reference appears at
# (x + dx, y + dy) in the frame. Verified empirically on noise-free frames
# from astrosr.simulate.render(truth, [[0, 0], [dx, dy]], scale=4, psf=...) of a
# star field, for (dx, dy) = (0.3, -0.7), (3.3, -5.7) and (-7.25, 2.4):
#   phase_cross_correlation(ref, img) returned (row, col) = (-dy, -dx)
#     ((5.70, -3.32) for (3.3, -5.7); (-2.37, 7.26) for (-7.25, 2.4)): it is
#     the shift that moves img back onto ref, in numpy (y, x) order;
#   chi2_shift(ref, img) returned (dx, dy) directly ((3.299, -5.697) and
#     (-7.248, 2.400)): "how much im2 is offset from im1", x first.
#   (Re-run by --check with the current simulator: skimage (row, col) (5.68, -3.31)
#   and (-2.43, 7.34), chi2_shift (3.299, -5.697) and (-7.232, 2.354): the same signs.)
#
# With rotation and scale (DESIGN.md): a source at reference pixel p appears at
# q = s R(rotation) (p - c) + c + (dx, dy) in frame i, c = ((nx-1)/2, (ny-1)/2),
# R counter-clockwise, rotation in degrees.
#   astroalign.find_transform(source=frame 0, target=frame i) returns a skimage
#   SimilarityTransform T with q = T.scale R(T.rotation) p + T.translation
#   (x, y order, 0-based pixel centres, T.rotation in radians, counter-clockwise
#   like ours), so rotation = degrees(T.rotation), scale = T.scale and
#   (dx, dy) = T.translation + T.scale R c - c. Verified on noise-free frames
#   (simulate.render_geometry of a 150-star field, + sky 100 e-, 128x128,
#   PSF sigma 1.2; aligned frames at shifts on the 1/16-px grid, see
#   geometry_table) for (dx, dy, rotation, scale) =
#     (0.3125, -0.6875, 0, 1) -> (0.330, -0.672, 0.0105 deg, 1.00101)
#     (1.2, -0.4, 12, 1)      -> (1.185, -0.376, 11.968 deg, 1.00064)
#       (raw translation (15.702, -12.211): the centre term is what makes it small)
#     (-0.8, 1.1, -17.5, 1)   -> (-0.831, 1.098, -17.582 deg, 0.99947)
#     (0.5, 0.875, 90, 1)     -> (0.499, 0.843, 89.984 deg, 1.00011)
#     (-1.0, 0.1875, 180, 1)  -> (-0.981, 0.180, 179.9995 deg, 1.00012)
#     (0.4, -1.3, 8, 1.015)   -> (0.395, -1.293, 7.967 deg, 1.01488)
#     (0.9, 0.6, -5, 0.985)   -> (0.940, 0.662, -4.892 deg, 0.98563)
#   (35-46 matched stars; errors 0.01-0.07 px and 0.0005-0.11 deg without noise:
#   sep's isophotal centroids). A reversed angle or a missing centre term would
#   be off by tens of pixels. astroalign's RANSAC draws from an unseeded
#   generator, so its results may vary slightly from call to call.


def skimage_to_dxdy(shift_rowcol):
    """skimage (row, col) shift that registers img onto ref -> astrosr (dx, dy) (verified, above)."""
    return np.array([-shift_rowcol[1], -shift_rowcol[0]], dtype=float)


def chi2_shift_to_dxdy(xoff, yoff):
    """image_registration.chi2_shift (dx, dy) -> astrosr (dx, dy): identical (verified, above)."""
    return np.array([xoff, yoff], dtype=float)


def astroalign_to_geometry(transform, shape):
    """astroalign's SimilarityTransform (frame 0 -> frame i) -> (dx, dy, rotation deg, scale) (verified, above)."""
    ny, nx = shape
    c = np.array([(nx - 1) / 2.0, (ny - 1) / 2.0])
    s, theta = float(transform.scale), float(transform.rotation)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    d = np.asarray(transform.translation, float) + s * rot @ c - c
    return np.array([d[0], d[1], np.rad2deg(theta), s])


def wrap_deg(a):
    """Angles (deg) into [-180, 180)."""
    return (np.asarray(a, float) + 180.0) % 360.0 - 180.0


# --------------------------------------------------------------------------- astrosr calls
#
# Kept small: the rigid, similarity, model and WCS paths are new library API
# (DESIGN.md); a call that fails is reported ('-' in the tables, the exception
# on stderr), never fatal.


def astrosr_register(frames, **kw):
    """``astrosr.register_stack(frames, **kw)``: (table, seconds, method named in its meta)."""
    t0 = time.perf_counter()
    table = astrosr.register_stack(frames, **kw)
    sec = time.perf_counter() - t0
    return table, sec, str(table.meta.get("registration", "?"))


def table_params(table, params):
    """Values and errors of ``params`` (dx, dy, rotation, scale) of frames 1.. as (n-1, k) arrays."""
    units = dict(dx=u.pix, dy=u.pix, rotation=u.deg, scale=u.one)
    est = np.column_stack([table[p].to_value(units[p]) for p in params])[1:]
    err = np.column_stack([table[p + "_err"].to_value(units[p]) if p + "_err" in table.colnames
                           else np.full(len(table), np.nan) for p in params])[1:]
    return est, err


def astrosr_reconstruct(frames, geometry, psf):
    """``astrosr.fuse(frames, geometry, method="reconstruct", psf=psf)`` at scale 4, as an array."""
    return np.asarray(astrosr.fuse(frames, geometry, scale=SCALE, method="reconstruct", psf=psf).data,
                      dtype=float)


def corrected_wcs_list(table):
    """The table's ``wcs`` column (each frame's corrected WCS), or None without one."""
    return list(table["wcs"]) if "wcs" in table.colnames else None


# --------------------------------------------------------------------------- peers
# Each returns (estimates (n-1, 2), errors (n-1, 2) or None, seconds per frame).


def run_astrosr(stack):
    t0 = time.perf_counter()
    table = astrosr.register_stack(stack.frames)
    elapsed = time.perf_counter() - t0
    est = np.column_stack([table["dx"].value, table["dy"].value])[1:]
    err = np.column_stack([table["dx_err"].value, table["dy_err"].value])[1:]
    return est, err, elapsed / len(stack.frames)


def run_skimage(stack):
    ref = np.asarray(stack.frames[0].data, dtype=float)
    est = []
    t0 = time.perf_counter()
    for f in stack.frames[1:]:
        shift = phase_cross_correlation(ref, np.asarray(f.data, dtype=float), upsample_factor=100)[0]
        est.append(skimage_to_dxdy(shift))
    return np.array(est), None, (time.perf_counter() - t0) / (len(stack.frames) - 1)


def run_skimage_best(stack):
    ref = np.asarray(stack.frames[0].data, dtype=float)
    win = window("hann", ref.shape)
    est = []
    t0 = time.perf_counter()
    for f in stack.frames[1:]:
        img = np.asarray(f.data, dtype=float)
        shift = phase_cross_correlation(win * (ref - np.median(ref)), win * (img - np.median(img)),
                                        upsample_factor=100, normalization=None)[0]
        est.append(skimage_to_dxdy(shift))
    return np.array(est), None, (time.perf_counter() - t0) / (len(stack.frames) - 1)


def run_chi2_shift(stack):
    ref = np.asarray(stack.frames[0].data, dtype=float)
    var0 = np.median(stack.frames[0].uncertainty.array)
    est, err = [], []
    t0 = time.perf_counter()
    for f in stack.frames[1:]:
        # Noise of the difference of the two frames (scalar: both frames' median variance).
        noise = np.sqrt(var0 + np.median(f.uncertainty.array))
        xoff, yoff, ex, ey = chi2_shift(ref, np.asarray(f.data, dtype=float), err=noise,
                                        return_error=True, upsample_factor="auto")
        est.append(chi2_shift_to_dxdy(xoff, yoff))
        err.append([ex, ey])
    return np.array(est), np.array(err), (time.perf_counter() - t0) / (len(stack.frames) - 1)


RUNNERS = {"astrosr": run_astrosr, "skimage": run_skimage, "skimage-best": run_skimage_best,
           "chi2_shift": run_chi2_shift}


def run_astroalign(frames):
    """astroalign.find_transform(frame 0, frame i) for i = 1..: (n-1, 4) dx, dy, rotation, scale
    (NaN rows where it failed), failures, seconds per frame pair."""
    import astroalign

    ref = np.ascontiguousarray(frames[0].data, dtype=float)
    out = np.full((len(frames) - 1, 4), np.nan)
    failed = {}
    t0 = time.perf_counter()
    for i, f in enumerate(frames[1:]):
        try:
            transform, _ = astroalign.find_transform(ref, np.ascontiguousarray(f.data, dtype=float))
            out[i] = astroalign_to_geometry(transform, ref.shape)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            failed.setdefault(f"{type(exc).__name__}: {exc}", []).append(i + 1)
    sec = (time.perf_counter() - t0) / (len(frames) - 1)
    for msg, which in failed.items():
        log(f"    astroalign failed on frame(s) {', '.join(map(str, which))}: {msg}")
    return out, sum(len(v) for v in failed.values()), sec


# --------------------------------------------------------------------------- Cramér-Rao bound


def cramer_rao(truth, shifts, h=1e-3):
    """Two-frame CRB on (dx, dy) of frames 1.. relative to frame 0; array (n-1, 2) of sigmas.

    Model frames m_i = render(truth, shift_i) + sky; the derivative of m_i with
    respect to its shift by central differences (+-h px); per-pixel variance
    of the difference of frame i and frame 0: m_0 + m_i + 2 read_noise**2.
    (The ``shift`` table's bound, unchanged; the other scenarios use `crb`.)
    """
    n = len(shifts)
    steps = np.array([[0, 0], [h, 0], [-h, 0], [0, h], [0, -h]], dtype=float)
    all_shifts = (shifts[:, None, :] + steps[None]).reshape(-1, 2)
    m = simulate.render(truth, all_shifts, scale=SCALE, psf=PSF).reshape(n, 5, *[s // SCALE for s in truth.shape])
    m = m + SKY
    m0 = m[0, 0]
    bounds = []
    for i in range(1, n):
        gx = (m[i, 1] - m[i, 2]) / (2 * h)
        gy = (m[i, 3] - m[i, 4]) / (2 * h)
        v = m0 + m[i, 0] + 2 * READ_NOISE ** 2
        g = np.stack([gx.ravel(), gy.ravel()])
        fisher = (g / v.ravel()) @ g.T
        bounds.append(np.sqrt(np.diag(np.linalg.inv(fisher))))
    return np.array(bounds)


def geometry_arrays(table):
    """(n, 4) dx, dy, rotation (deg), scale of a geometry table or (n, 2) shifts."""
    if not hasattr(table, "colnames"):
        s = np.atleast_2d(np.asarray(table, float))
        if s.shape[1] == 4:
            return s
        return np.column_stack([s[:, :2], np.zeros(len(s)), np.ones(len(s))])
    n = len(table)
    return np.column_stack([
        table["dx"].to_value(u.pix), table["dy"].to_value(u.pix),
        table["rotation"].to_value(u.deg) if "rotation" in table.colnames else np.zeros(n),
        table["scale"].to_value(u.one) if "scale" in table.colnames else np.ones(n)])


def geometry_qtable(g):
    """(n, 4) dx, dy, rotation, scale -> a geometry QTable."""
    g = np.asarray(g, float)
    return QTable({"frame": np.arange(len(g)), "dx": g[:, 0] * u.pix, "dy": g[:, 1] * u.pix,
                   "rotation": g[:, 2] * u.deg, "scale": g[:, 3] * u.one})


def shift_derivatives(truth, geo, psf, h=1e-3):
    """Pure shifts: signal, d/dx, d/dy of frames 0.. by central differences of ``simulate.render``."""
    n = len(geo)
    steps = np.array([[0, 0], [h, 0], [-h, 0], [0, h], [0, -h]], dtype=float)
    rows = (geo[:, None, :2] + steps[None]).reshape(-1, 2)
    m = simulate.render(truth, rows, scale=SCALE, psf=psf).reshape(n, 5, *[s // SCALE for s in truth.shape])
    return m[:, 0], (m[:, 1] - m[:, 2]) / (2 * h), (m[:, 3] - m[:, 4]) / (2 * h)


def telescoped_derivatives(truth, geo, psf, subsamples=CRB_SUBSAMPLES):
    """Any rotation/scale: signal, d/dx, d/dy of frames 1.. from ``simulate.render_geometry``.

    Step h = 1/(2 subsamples) px, half the midpoint rule's sample spacing, so
    that the two sides differ by the samples at each footprint's edges only
    (see the module notes). The signal is the mean of the four renders.
    """
    h = 0.5 / subsamples
    steps = np.array([[h, 0, 0, 0], [-h, 0, 0, 0], [0, h, 0, 0], [0, -h, 0, 0]])
    rows = (geo[1:, None, :] + steps[None]).reshape(-1, 4)
    m = simulate.render_geometry(truth, geometry_qtable(rows), scale=SCALE, psf=psf,
                                 subsamples=subsamples)
    m = m.reshape(len(geo) - 1, 4, *m.shape[1:])
    return m.mean(axis=1), (m[:, 0] - m[:, 1]) / (2 * h), (m[:, 2] - m[:, 3]) / (2 * h)


def fisher_cov(columns, variance, nuisance_signal=None):
    """inv(J^T diag(1/variance) J) restricted to ``columns`` (nuisance columns appended when given)."""
    cols = list(columns)
    if nuisance_signal is not None:
        cols += [nuisance_signal, np.ones_like(nuisance_signal)]
    j = np.stack([c.ravel() for c in cols])
    fisher = (j / variance.ravel()) @ j.T
    k = len(columns)
    return np.linalg.inv(fisher)[:k, :k]


def crb(truth, geometry, psf, params, *, sky=SKY, read_noise=READ_NOISE, nuisance=True,
        shifts_only=None, subsamples=CRB_SUBSAMPLES):
    """Two-frame CRB of frames 1.. relative to frame 0 (module notes).

    Returns ``(sigma, cov)``: (n-1, k) bounds and (n-1, k, k) covariances of
    ``params`` (a sub-list of dx, dy, rotation, scale, in that order).
    Pure-shift geometries (rotation 0, scale 1) take ``simulate.render``'s
    derivatives unless ``shifts_only=False``.
    """
    geo = geometry_arrays(geometry)
    if shifts_only is None:
        shifts_only = bool(np.all(geo[:, 2] == 0) and np.all(geo[:, 3] == 1))
    if shifts_only:
        sig, jx, jy = shift_derivatives(truth, geo, psf)
        ref = sig[0] + sky
        sig, jx, jy = sig[1:], jx[1:], jy[1:]
    else:
        sig, jx, jy = telescoped_derivatives(truth, geo, psf, subsamples)
        ref = None
    ny, nx = sig.shape[1:]
    yy, xx = np.indices((ny, nx), dtype=float)
    c = ((nx - 1) / 2.0, (ny - 1) / 2.0)
    sigmas, covs = [], []
    for i in range(len(sig)):
        dx, dy, _, s = geo[i + 1]
        ox, oy = c[0] + dx, c[1] + dy
        cols = {"dx": jx[i], "dy": jy[i],
                "rotation": np.deg2rad(1.0) * (-(yy - oy) * jx[i] + (xx - ox) * jy[i]),
                "scale": ((xx - ox) * jx[i] + (yy - oy) * jy[i]) / s - 2.0 * sig[i] / s}
        mi = sig[i] + sky
        m0 = ref if ref is not None else mi
        cov = fisher_cov([cols[p] for p in params], m0 + mi + 2 * read_noise ** 2,
                         sig[i] if nuisance else None)
        covs.append(cov)
        sigmas.append(np.sqrt(np.diag(cov)))
    return np.array(sigmas), np.array(covs)


def position_crb(geometry, cov, shape, grid):
    """RMS over frames 1.. and grid points of the CRB on positions, from (dx, dy, rotation) covariances."""
    geo = geometry_arrays(geometry)
    ny, nx = shape
    c = np.array([(nx - 1) / 2.0, (ny - 1) / 2.0])
    qx, qy = grid
    total = []
    for i, ci in enumerate(cov):
        o = c + geo[i + 1, :2]
        k = np.deg2rad(1.0)
        g = np.zeros((qx.size, 2, 3))
        g[:, 0, 0] = g[:, 1, 1] = 1.0
        g[:, 0, 2] = -k * (qy - o[1])
        g[:, 1, 2] = k * (qx - o[0])
        total.append(np.einsum("pij,jk,pik->p", g, ci, g))
    return float(np.sqrt(np.mean(total)))


# --------------------------------------------------------------------------- stacks


def truth_ccd(name, seed):
    """The 512x512 truth as a CCDData with a TAN WCS of 0.1 arcsec per fine pixel (as geometry.py)."""
    from astropy.wcs import WCS

    data = make_truth(name, seed)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.1, 2.2]
    w.wcs.crpix = [(data.shape[1] + 1) / 2.0, (data.shape[0] + 1) / 2.0]
    w.wcs.cdelt = [-FINE_ARCSEC / 3600.0, FINE_ARCSEC / 3600.0]
    w.wcs.set()
    return CCDData(data, unit=u.electron, wcs=w)


#: Samples per pixel and axis of observe's render_geometry (its default, 4 * scale).
RENDER_SUBSAMPLES = 4 * SCALE


def geometry_table(kind, rng, n=N_FRAMES):
    """True geometry of a ``rigid`` or ``similarity`` stack (frame 0 the identity), as geometry.py.

    The same draws as geometry.py's, but the shifts of the 90 and 180 deg
    frames rounded to 1/16 px: at a multiple of 90 deg the sample points of
    render_geometry's midpoint rule (16 x 16 per pixel, nearest fine pixel)
    stay aligned with the fine pixels, so it renders the shift rounded to
    1/16 px (dy = 0.9 as 0.875: 0.03 px, five times the CRB); on that grid its
    integral is exact. At other angles the rows of samples cross the fine
    pixels at every phase and no such staircase shows (``--check``).
    """
    rot = np.concatenate([[0.0], rng.uniform(-20.0, 20.0, n - 3), [90.0, 180.0]])
    shift = np.vstack([[0.0, 0.0], rng.uniform(-1.5, 1.5, (n - 1, 2))])
    shift[-2:] = np.round(shift[-2:] * RENDER_SUBSAMPLES) / RENDER_SUBSAMPLES
    table = QTable({"frame": np.arange(n), "dx": shift[:, 0] * u.pix, "dy": shift[:, 1] * u.pix,
                    "rotation": rot * u.deg})
    if kind == "similarity":
        table["scale"] = np.concatenate([[1.0], rng.uniform(0.98, 1.02, n - 1)]) * u.one
    return table


def sky_subtracted(frames):
    out = []
    for f in frames:
        g = f.copy()
        g.data = f.data - SKY
        out.append(g)
    return out


def with_wcs(frames, wcs_list):
    return [CCDData(f.data, unit=f.unit, uncertainty=f.uncertainty, mask=f.mask, wcs=w, meta=f.meta)
            for f, w in zip(frames, wcs_list)]


def without_wcs(frames):
    return with_wcs(frames, [None] * len(frames))


# --------------------------------------------------------------------------- scoring


def rms(a):
    return float(np.sqrt(np.mean(np.square(a))))


def rms_finite(a):
    a = np.asarray(a, float)
    a = a[np.isfinite(a)]
    return float(np.sqrt(np.mean(np.square(a)))) if a.size else np.nan


def score(resid, err, bound, groups):
    """Metrics of one parameter block: residuals (n-1, k), errors or None, CRB (n-1, k)."""
    ok = np.all(np.isfinite(resid), axis=1)
    out = dict(rms=rms_finite(resid[ok]), crb_ratio=np.nan, pull=np.full(1, np.nan))
    if ok.any():
        out["crb_ratio"] = out["rms"] / rms(bound[ok])
    if err is not None and ok.any() and np.all(np.isfinite(err[ok])) and np.all(err[ok] > 0):
        out["pull"] = (resid[ok] / err[ok]).ravel()
    for label, idx in groups.items():
        sel = np.zeros(len(resid), bool)
        sel[idx] = True
        out[label] = rms_finite(resid[sel & ok]) if (sel & ok).any() else np.nan
    return out


def median(rows, key):
    vals = np.array([r[key] for r in rows], dtype=float)
    return float(np.nanmedian(vals)) if np.isfinite(vals).any() else np.nan


def pooled_std(rows, key="pull"):
    vals = np.concatenate([np.asarray(r[key], float).ravel() for r in rows])
    vals = vals[np.isfinite(vals)]
    return float(np.std(vals)) if vals.size > 1 else np.nan


def fmt(x, spec):
    """Format a number, or a right-aligned '-' of the same width where it is missing."""
    width = int(re.match(r"\d*", spec).group() or 0)
    try:
        missing = not np.isfinite(x)
    except TypeError:
        missing = x is None
    return "-".rjust(width) if missing else format(x, spec)


# --------------------------------------------------------------------------- scenario: shift


def bench_image(name, runs, log):
    """Per-run metrics for one image: dict method -> list of dicts."""
    results = {m: [] for m in METHODS}
    crbs = []
    for run in range(runs):
        truth = make_truth(name, seed=run)
        stack = simulate.observe(truth, n_frames=N_FRAMES, scale=SCALE, psf=PSF, sky=SKY,
                                 read_noise=READ_NOISE, seed=run)
        true = np.column_stack([stack.shifts["dx"].value, stack.shifts["dy"].value])
        true_rel = (true - true[0])[1:]
        crb_ = rms(cramer_rao(truth, true))
        crbs.append(crb_)
        per_run = {}
        for method in METHODS:
            try:
                est, err, sec = RUNNERS[method](stack)
            except Exception as exc:  # a failed method is reported, not fatal
                log(f"  {name} run {run}: {method} failed: {type(exc).__name__}: {exc}")
                per_run[method] = dict(rms=np.nan, sec=np.nan, pull=np.full(1, np.nan))
                continue
            resid = est - true_rel
            # Pulls are pooled over runs: within one run every frame shares frame 0's
            # error, so the spread over one run's frames understates the errors.
            pull = np.full(resid.size, np.nan)
            if err is not None and np.all(err > 0):
                pull = (resid / err).ravel()
            per_run[method] = dict(rms=rms(resid), sec=sec, pull=pull)
        for method in METHODS:
            r = per_run[method]
            r["crb_ratio"] = r["rms"] / crb_
            r["astrosr_ratio"] = r["rms"] / per_run["astrosr"]["rms"]
            results[method].append(r)
        log(f"  {name} run {run}: CRB {crb_:.4f} px, " + ", ".join(
            f"{m} {per_run[m]['rms']:.4f}" for m in METHODS))
    return results, crbs


def scenario_shift(images, runs, out, csv_path=None):
    rows = []
    summaries = []
    for name in images:
        log(f"shift {name}: {runs} run(s)")
        results, crbs = bench_image(name, runs, log)
        crb_ = float(np.median(crbs))
        rows.append(dict(image=name, method="CRB (2-frame)", rms=crb_, crb_ratio=1.0,
                         astrosr_ratio=crb_ / median(results["astrosr"], "rms"), ms=np.nan, pull=np.nan))
        for method in METHODS:
            r = results[method]
            rows.append(dict(image=name, method=method, rms=median(r, "rms"),
                             crb_ratio=median(r, "crb_ratio"), astrosr_ratio=median(r, "astrosr_ratio"),
                             ms=1e3 * median(r, "sec"), pull=pooled_std(r)))
        summaries.append((name, median(results["astrosr"], "crb_ratio"),
                          median(results["skimage-best"], "astrosr_ratio")))

    header = (f"{'image':<9} {'method':<14} {'RMS err [px]':>12} {'/CRB':>7} {'/astrosr':>9} "
              f"{'ms/frame':>9} {'pull std':>9}")
    out()
    out(f"Shift error of frames 1..15 vs frame 0, RMS over frames and both axes; "
        f"MEDIANS over {runs} run(s) per image")
    out(header)
    out("-" * len(header))
    last = None
    for r in rows:
        if last is not None and r["image"] != last:
            out()
        last = r["image"]
        out(f"{r['image']:<9} {r['method']:<14} {fmt(r['rms'], '12.4f')} {fmt(r['crb_ratio'], '7.2f')} "
            f"{fmt(r['astrosr_ratio'], '9.2f')} {fmt(r['ms'], '9.1f')} {fmt(r['pull'], '9.2f')}")
    out("-" * len(header))
    out("pull std: std of (estimate - truth) / reported error, pooled over runs (1 = calibrated); '-' where the "
        "method reports no errors or some are zero.")
    out("ms/frame: astrosr = register_stack time / 16 frames; peers = time per frame pair.")
    out()
    for name, crb_ratio, sk_ratio in summaries:
        out(f"{name}: astrosr RMS / CRB = {fmt(crb_ratio, '.2f')}, "
            f"skimage-best / astrosr = {fmt(sk_ratio, '.1f')}")
    if csv_path is not None:
        with open(csv_path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "method", "rms_px", "rms_over_crb", "rms_over_astrosr",
                             "ms_per_frame", "pull_std", "runs"])
            for r in rows:
                writer.writerow([r["image"], r["method"], r["rms"], r["crb_ratio"], r["astrosr_ratio"],
                                 r["ms"], r["pull"], runs])
        out(f"\nshift rows written to {csv_path}")
    return []


# --------------------------------------------------------------------------- scenarios: rigid, similarity


PARAM_BLOCKS = {"shift": ["dx", "dy"], "rotation": ["rotation"], "scale": ["scale"]}
UNITS = {"shift": "px", "rotation": "deg", "scale": ""}
SPLIT = {"small": slice(0, N_FRAMES - 3), "right": slice(N_FRAMES - 3, N_FRAMES - 1)}


def block_residuals(est, true, params, block):
    idx = [params.index(p) for p in PARAM_BLOCKS[block]]
    d = est[:, idx] - true[:, idx]
    return wrap_deg(d) if block == "rotation" else d


def method_summary(used):
    """'correlation x 12, model x 3': the leading word of each table.meta['registration']."""
    words = [m.split(":")[0].split()[0] if m.strip() else "?" for m in used]
    return ", ".join(f"{w} x {words.count(w)}" for w in sorted(set(words))) or "-"


def bench_rigid_image(kind, name, runs):
    """Per-run metrics of astrosr and astroalign on ``rigid``/``similarity`` stacks of one image."""
    params = ["dx", "dy", "rotation"] + (["scale"] if kind == "similarity" else [])
    blocks = ["shift", "rotation"] + (["scale"] if kind == "similarity" else [])
    rows = {m: [] for m in ("astrosr", "astroalign")}
    crbs, methods = [], []
    for run in range(runs):
        truth = make_truth(name, seed=run)
        geo = geometry_table(kind, np.random.default_rng(1000 + run))
        stack = simulate.observe(truth, scale=SCALE, psf=PSF, geometry=geo, sky=SKY,
                                 read_noise=READ_NOISE, seed=run)
        true = geometry_arrays(geo)[1:, [0, 1, 2, 3][:len(params)]]
        t0 = time.perf_counter()
        bound, _ = crb(truth, geo, PSF, params)
        t_crb = time.perf_counter() - t0
        crbs.append({b: rms(bound[:, [params.index(p) for p in PARAM_BLOCKS[b]]]) for b in blocks})
        per = {}
        try:
            table, sec, used = astrosr_register(stack.frames, transform=kind)
            methods.append(used)
            est, err = table_params(table, params)
            per["astrosr"] = (est, err, sec / len(stack.frames), 0)
        except Exception as exc:  # new API: reported, not fatal
            log(f"  {kind} {name} run {run}: astrosr failed: {type(exc).__name__}: {exc}")
            per["astrosr"] = None
        try:
            aa, fails, sec = run_astroalign(stack.frames)
            per["astroalign"] = (aa[:, :len(params)], None, sec, fails)
        except Exception as exc:
            log(f"  {kind} {name} run {run}: astroalign failed: {type(exc).__name__}: {exc}")
            per["astroalign"] = None
        for m, res in per.items():
            if res is None:
                rows[m].append(dict(sec=np.nan, fails=np.nan, **{b: None for b in blocks}))
                continue
            est, err, sec, fails = res
            r = dict(sec=sec, fails=fails)
            for b in blocks:
                idx = [params.index(p) for p in PARAM_BLOCKS[b]]
                r[b] = score(block_residuals(est, true, params, b),
                             None if err is None else err[:, idx], bound[:, idx], SPLIT)
            rows[m].append(r)
        log(f"  {kind} {name} run {run}: CRB {crbs[-1]['shift']:.4f} px {crbs[-1]['rotation']:.4f} deg "
            f"({t_crb:.1f} s); " + ", ".join(
                f"{m} " + (" ".join(f"{rows[m][-1][b]['rms']:.4g}" for b in blocks)
                           if rows[m][-1][blocks[0]] is not None else "failed") for m in rows))
    return rows, crbs, methods


def scenario_rigid(kind, images, runs, out):
    blocks = ["shift", "rotation"] + (["scale"] if kind == "similarity" else [])
    results = {}
    for name in images:
        log(f"{kind} {name}: {runs} run(s)")
        results[name] = bench_rigid_image(kind, name, runs)
    desc = ("rotations uniform in +-20 deg (frames 1..13) and 90, 180 deg (frames 14, 15), shifts "
            "uniform in +-1.5 px" + (", scale uniform in 0.98-1.02" if kind == "similarity" else "")
            + ", PSF sigma 1.2 px")
    out()
    out(f"{kind}: {desc}; astrosr register_stack(transform={kind!r}) vs astroalign.find_transform; "
        f"MEDIANS over {runs} run(s)")
    for b in blocks:
        unit = UNITS[b]
        head = (f"{'image':<9} {'method':<14} {'RMS ' + unit:>10} {'/CRB':>7} {'/astrosr':>9} "
                f"{'pull std':>9} {'+-20 deg':>9} {'90/180':>9} {'ms/frame':>9} {'failed':>7}")
        out()
        out(f"{kind}, {b} error of frames 1..15 vs frame 0" + (" (both axes)" if b == "shift" else ""))
        out(head)
        out("-" * len(head))
        spec = "10.4f" if b != "scale" else "10.2e"
        sspec = "9.4f" if b != "scale" else "9.2e"
        for k, name in enumerate(images):
            rows, crbs, used = results[name]
            if k:
                out()
            bound = float(np.median([c[b] for c in crbs]))
            ref = [r[b]["rms"] if r[b] is not None else np.nan for r in rows["astrosr"]]
            out(f"{name:<9} {'CRB (2-frame)':<14} {fmt(bound, spec)} {fmt(1.0, '7.2f')} "
                f"{fmt(bound / np.nanmedian(ref) if np.isfinite(ref).any() else np.nan, '9.2f')} "
                f"{'-':>9} {'-':>9} {'-':>9} {'-':>9} {'-':>7}")
            for m in ("astrosr", "astroalign"):
                rr = [r[b] for r in rows[m] if r[b] is not None]
                ratio = [r[b]["rms"] / a for r, a in zip(rows[m], ref) if r[b] is not None]
                fails = [r["fails"] for r in rows[m]]
                label = m
                if not rr:
                    out(f"{name:<9} {label:<14} {fmt(np.nan, spec)} {'-':>7} {'-':>9} {'-':>9} {'-':>9} "
                        f"{'-':>9} {'-':>9} {'-':>7}")
                    continue
                out(f"{name:<9} {label:<14} {fmt(median(rr, 'rms'), spec)} {fmt(median(rr, 'crb_ratio'), '7.2f')} "
                    f"{fmt(np.nanmedian(ratio) if np.isfinite(ratio).any() else np.nan, '9.2f')} "
                    f"{fmt(pooled_std(rr), '9.2f')} {fmt(median(rr, 'small'), sspec)} "
                    f"{fmt(median(rr, 'right'), sspec)} {fmt(1e3 * median(rows[m], 'sec'), '9.1f')} "
                    f"{fmt(float(np.nansum(fails)) if np.isfinite(fails).any() else np.nan, '7.0f')}")
        out("-" * len(head))
    out("+-20 deg, 90/180: RMS over frames 1..13 and over frames 14, 15 apart; failed: astroalign frame "
        "pairs that raised (summed over runs; their rows left out of its RMS).")
    out("ms/frame: astrosr = register_stack time / 16 frames; astroalign = time per frame pair. "
        "pull std: pooled over runs.")
    out("CRB: two-frame bound from render_geometry's derivatives, with flux and background nuisances "
        "(module notes).")
    out("astrosr registration method (table.meta['registration'], stacks): " + method_summary(
        [m for name in images for m in results[name][2]]))
    return []


# --------------------------------------------------------------------------- scenario: undersampled


def bench_undersampled_image(name, runs):
    methods = ["astrosr auto", "astrosr correlation", "skimage-best", "chi2_shift"]
    rows = {m: [] for m in methods}
    psnrs, crbs, used = [], [], {m: [] for m in methods}
    for run in range(runs):
        truth = make_truth(name, seed=run)
        shifts = simulate.default_shifts(N_FRAMES, seed=np.random.default_rng(1000 + run))
        stack = simulate.observe(truth, scale=SCALE, psf=SHARP_PSF, shifts=shifts, sky=SKY,
                                 read_noise=READ_NOISE, seed=run)
        frames = sky_subtracted(stack.frames)
        true = shifts[1:] - shifts[0]
        bound, _ = crb(truth, shifts, SHARP_PSF, ["dx", "dy"])
        crbs.append(rms(bound))
        tables = {}
        for m in methods:
            try:
                if m == "astrosr auto":
                    table, sec, meth = astrosr_register(frames, psf=SHARP_PSF)
                    used[m].append(meth)
                    tables[m] = table
                    est, err = table_params(table, ["dx", "dy"])
                    sec /= len(frames)
                elif m == "astrosr correlation":
                    table, sec, meth = astrosr_register(frames, method="correlation")
                    used[m].append(meth)
                    tables[m] = table
                    est, err = table_params(table, ["dx", "dy"])
                    sec /= len(frames)
                else:
                    est, err, sec = RUNNERS[m](simulate.ObservedStack(
                        frames=frames, shifts=stack.shifts, truth=stack.truth, psf=SHARP_PSF, scale=SCALE))
            except Exception as exc:  # new API: reported, not fatal
                log(f"  undersampled {name} run {run}: {m} failed: {type(exc).__name__}: {exc}")
                rows[m].append(dict(rms=np.nan, crb_ratio=np.nan, sec=np.nan, pull=np.full(1, np.nan)))
                continue
            r = score(est - true, err, bound, {})
            r["sec"] = sec
            rows[m].append(r)
        p = {}
        for key, geo in (("true", stack.shifts), ("auto", tables.get("astrosr auto")),
                         ("correlation", tables.get("astrosr correlation"))):
            if geo is None:
                p[key] = np.nan
                continue
            try:
                t0 = time.perf_counter()
                image = astrosr_reconstruct(frames, geo, SHARP_PSF)
                p[key] = astrosr.metrics.psnr(image, truth, margin=MARGIN)
                log(f"    reconstruct with {key} geometry: {p[key]:.3f} dB ({time.perf_counter() - t0:.1f} s)")
            except Exception as exc:
                log(f"  undersampled {name} run {run}: reconstruct ({key}) failed: {type(exc).__name__}: {exc}")
                p[key] = np.nan
        psnrs.append(p)
        log(f"  undersampled {name} run {run}: CRB {crbs[-1]:.4f} px, " + ", ".join(
            f"{m} {rows[m][-1]['rms']:.4f}" for m in methods))
    return rows, crbs, psnrs, used


def scenario_undersampled(images, runs, out):
    methods = ["astrosr auto", "astrosr correlation", "skimage-best", "chi2_shift"]
    results = {}
    for name in images:
        log(f"undersampled {name}: {runs} run(s)")
        results[name] = bench_undersampled_image(name, runs)
    head = (f"{'image':<9} {'method':<20} {'RMS err [px]':>12} {'/CRB':>7} {'/astrosr':>9} "
            f"{'ms/frame':>9} {'pull std':>9}")
    out()
    out(f"undersampled: pure shifts uniform in +-1.5 px, PSF sigma {SHARP_PSF.sigma} px, sky-subtracted "
        f"frames; shift error of frames 1..15, RMS over frames and both axes; MEDIANS over {runs} run(s)")
    out(head)
    out("-" * len(head))
    targets = []
    for k, name in enumerate(images):
        rows, crbs, psnrs, used = results[name]
        if k:
            out()
        ref = [r["rms"] for r in rows["astrosr auto"]]
        bound = float(np.median(crbs))
        out(f"{name:<9} {'CRB (2-frame)':<20} {fmt(bound, '12.4f')} {fmt(1.0, '7.2f')} "
            f"{fmt(bound / np.nanmedian(ref) if np.isfinite(ref).any() else np.nan, '9.2f')} {'-':>9} {'-':>9}")
        for m in methods:
            r = rows[m]
            ratio = [a["rms"] / b for a, b in zip(r, ref)]
            out(f"{name:<9} {m:<20} {fmt(median(r, 'rms'), '12.4f')} {fmt(median(r, 'crb_ratio'), '7.2f')} "
                f"{fmt(np.nanmedian(ratio) if np.isfinite(ratio).any() else np.nan, '9.2f')} "
                f"{fmt(1e3 * median(r, 'sec'), '9.1f')} {fmt(pooled_std(r), '9.2f')}")
    out("-" * len(head))
    out("astrosr auto: register_stack(frames, psf=...) (method chosen by the library, below); astrosr "
        "correlation: method='correlation' (the earlier path).")
    out("CRB: two-frame bound from simulate.render's derivatives, with flux and background nuisances.")
    out()
    head = (f"{'image':<9} {'PSNR true geo':>13} {'auto - true':>12} {'worst run':>10} {'corr - true':>12}  "
            f"{'auto method':<30}")
    out(f"undersampled: fuse(method='reconstruct', psf=...) PSNR against the truth (interior, {MARGIN} fine px "
        f"from each edge), registered minus true geometry, dB; MEDIANS over {runs} run(s) of the paired "
        f"differences")
    out(head)
    out("-" * len(head))
    for name in images:
        rows, crbs, psnrs, used = results[name]
        da = [p["auto"] - p["true"] for p in psnrs]
        dc = [p["correlation"] - p["true"] for p in psnrs]
        md = lambda v: float(np.nanmedian(v)) if np.isfinite(v).any() else np.nan  # noqa: E731
        worst = float(np.nanmin(da)) if np.isfinite(da).any() else np.nan
        auto = used["astrosr auto"]
        out(f"{name:<9} {fmt(md([p['true'] for p in psnrs]), '13.2f')} {fmt(md(da), '+12.3f')} "
            f"{fmt(worst, '+10.3f')} {fmt(md(dc), '+12.3f')}  {method_summary(auto)}"
            + (f" ({auto[0]})" if auto else ""))
        targets.append((f"undersampled {name}: PSNR(registered) - PSNR(true) >= -{TARGETS['psnr_db']} dB "
                        f"(worst run)", fmt(worst, "+.3f"), bool(worst >= -TARGETS["psnr_db"])))
        targets.append((f"undersampled {name}: auto chooses the model fit (every run)", method_summary(auto),
                        bool(auto) and all(m.startswith("model") for m in auto)))
    out("-" * len(head))
    return targets


# --------------------------------------------------------------------------- scenario: wcs


def spoiled_wcs(w, offset, rotation, shape):
    """``w`` with its CD (or PC) matrix turned by ``rotation`` deg on the pixel side (``CD R``), then
    CRVAL moved so that the frame centre q_c is seen where ``w`` has q_c + offset: a roll and a
    pointing error. (Turned on the sky side, ``R CD``, a skewed CD such as ACS's makes a shear of
    the pixel plane: 7e-3 px of it across the frame, which no rigid correction can take out.)"""
    new = w.deepcopy()
    t = np.deg2rad(rotation)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    if new.wcs.has_cd():
        new.wcs.cd = np.asarray(w.wcs.cd) @ rot
    else:
        new.wcs.pc = np.asarray(w.wcs.get_pc()) @ rot
    new.wcs.set()
    qc = np.array([(shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0])
    target = np.array(w.pixel_to_world_values(*(qc + offset)), float)
    for _ in range(8):
        now = np.array(new.pixel_to_world_values(*qc), float)
        delta = target - now
        delta[0] = (delta[0] + 180.0) % 360.0 - 180.0
        new.wcs.crval = np.asarray(new.wcs.crval, float) + delta
        new.wcs.set()
    return new


def grid_points(shape, n=9):
    ny, nx = shape
    y, x = np.meshgrid(np.linspace(0, ny - 1, n), np.linspace(0, nx - 1, n), indexing="ij")
    return x.ravel(), y.ravel()


def through(ref_wcs, frame_wcs, q):
    """Reference pixel coordinates of frame pixels ``q`` through the frame's and the reference's WCS."""
    return np.array(ref_wcs.world_to_pixel_values(*frame_wcs.pixel_to_world_values(*q)), float)


def rigid_floor(p_start, p_true):
    """RMS left by the best rigid map of the spoiled positions onto the true ones (least squares)."""
    a, b = p_start - p_start.mean(axis=1, keepdims=True), p_true - p_true.mean(axis=1, keepdims=True)
    theta = np.arctan2(np.sum(a[0] * b[1] - a[1] * b[0]), np.sum(a[0] * b[0] + a[1] * b[1]))
    r = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return np.sqrt(np.mean(np.sum((r @ a - b) ** 2, axis=0)))


def wcs_scores(table, frames_wcs, ref_wcs, true_wcs, shape):
    """Squared position errors (corrected WCS; correction itself) and the K-vs-wcs-column distance."""
    from astrosr.geometry import Similarity

    q = grid_points(shape)
    c = ((shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0)
    corrected = corrected_wcs_list(table)
    geo = geometry_arrays(table)
    e_wcs, e_k, agree = [], [], 0.0
    for i in range(1, len(frames_wcs)):
        p_true = through(ref_wcs, true_wcs[i], q)
        k = Similarity(geo[i, 0], geo[i, 1], geo[i, 2], geo[i, 3], center=c)
        p_k = np.array(k.frame_to_reference(*through(ref_wcs, frames_wcs[i], q)))
        e_k.append(np.sum((p_k - p_true) ** 2, axis=0))
        if corrected is not None:
            p_w = through(ref_wcs, corrected[i], q)
            e_wcs.append(np.sum((p_w - p_true) ** 2, axis=0))
            agree = max(agree, float(np.max(np.hypot(*(p_w - p_k)))))
    return (float(np.sqrt(np.mean(e_wcs))) if e_wcs else np.nan, float(np.sqrt(np.mean(e_k))),
            agree if corrected is not None else np.nan)


def scratch_score(table, ref_wcs, true_wcs, shape):
    """RMS position error of a from-scratch geometry (frame -> reference through its transform)."""
    from astrosr.geometry import Similarity

    q = grid_points(shape)
    c = ((shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0)
    geo = geometry_arrays(table)
    e = []
    for i in range(1, len(true_wcs)):
        p_true = through(ref_wcs, true_wcs[i], q)
        p = np.array(Similarity(*geo[i], center=c).frame_to_reference(*q))
        e.append(np.sum((p - p_true) ** 2, axis=0))
    return float(np.sqrt(np.mean(e)))


def spoil_all(true_wcs, rng, shape):
    """Frames 1.. spoiled (0.5 px in a random direction, +-0.1 deg), frame 0 (the reference) kept."""
    out = [true_wcs[0]]
    for w in true_wcs[1:]:
        phi = rng.uniform(0, 2 * np.pi)
        out.append(spoiled_wcs(w, WCS_OFFSET_PX * np.array([np.cos(phi), np.sin(phi)]),
                               WCS_ROTATION_DEG * rng.choice([-1.0, 1.0]), shape))
    return out


def wcs_case(frames, true_wcs, spoiled, geo_true, bound_pos, scratch, shape):
    """One header's scores: use_wcs registration against the truth, with the scratch result."""
    ref = true_wcs[0]
    q = grid_points(shape)
    start = [through(ref, spoiled[i], q) for i in range(1, len(frames))]
    truth_pos = [through(ref, true_wcs[i], q) for i in range(1, len(frames))]
    res = dict(start=float(np.sqrt(np.mean([np.sum((a - b) ** 2, axis=0) for a, b in zip(start, truth_pos)]))),
               floor=float(np.sqrt(np.mean([rigid_floor(a, b) ** 2 for a, b in zip(start, truth_pos)]))),
               crb=bound_pos, scratch=scratch, rms=np.nan, rms_k=np.nan, agree=np.nan, sec=np.nan)
    try:
        table, sec, used = astrosr_register(with_wcs(frames, spoiled), transform="rigid", use_wcs=True)
        res["rms"], res["rms_k"], res["agree"] = wcs_scores(table, spoiled, ref, true_wcs, shape)
        res["sec"] = sec / len(frames)
        res["method"] = used
        if "wcs" not in table.colnames:
            log("    use_wcs table has no 'wcs' column: scored through the correction only")
    except Exception as exc:  # new API: reported, not fatal
        log(f"    use_wcs failed: {type(exc).__name__}: {exc}")
    return res


def bench_wcs_image(name, runs):
    """Per-run scores of every header for one image: dict header -> list of dicts."""
    from astropy.io.fits.verify import VerifyWarning
    from astropy.wcs import FITSFixedWarning
    from astrosr.nddata import shift_wcs

    out = {h: [] for h in ["TAN (rotated)"] + [f for f, _ in HEADERS]}
    shape = (FRAME, FRAME)
    q = grid_points(shape)
    for run in range(runs):
        rng = np.random.default_rng(2000 + run)
        # TAN: a rigid geometry at any angle, the frames' WCS exact (observe).
        truth = truth_ccd(name, run)
        geo = geometry_table("rigid", np.random.default_rng(1000 + run))
        stack = simulate.observe(truth, scale=SCALE, psf=PSF, geometry=geo, sky=SKY,
                                 read_noise=READ_NOISE, seed=run)
        true_wcs = [f.wcs for f in stack.frames]
        _, cov = crb(truth.data, geo, PSF, ["dx", "dy", "rotation"])
        bound_pos = position_crb(geo, cov, shape, q)
        scratch = _scratch(stack.frames, true_wcs[0], true_wcs, shape, f"TAN {name} run {run}")
        res = wcs_case(stack.frames, true_wcs, spoil_all(true_wcs, rng, shape), geo, bound_pos, scratch,
                       shape)
        out["TAN (rotated)"].append(res)
        _log_wcs(name, run, "TAN (rotated)", res)
        # Distorted headers: one stack of pure shifts, translated WCS per header.
        shifts = simulate.default_shifts(N_FRAMES, seed=np.random.default_rng(1000 + run))
        stack = simulate.observe(truth.data, scale=SCALE, psf=PSF, shifts=shifts, sky=SKY,
                                 read_noise=READ_NOISE, seed=run)
        _, cov = crb(truth.data, shifts, PSF, ["dx", "dy", "rotation"])
        bound_pos = position_crb(shifts, cov, shape, q)
        scratch_table, scratch_done = None, False
        for filename, _ in HEADERS:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FITSFixedWarning)
                    warnings.simplefilter("ignore", VerifyWarning)
                    ref = reference_wcs(filename)[0]
                    true_wcs = [shift_wcs(ref, *d) for d in shifts]
                    spoiled = spoil_all(true_wcs, rng, shape)
            except Exception as exc:
                log(f"  wcs {name} run {run} {filename}: header failed: {type(exc).__name__}: {exc}")
                out[filename].append(dict(start=np.nan, floor=np.nan, crb=bound_pos, scratch=np.nan,
                                          rms=np.nan, rms_k=np.nan, agree=np.nan, sec=np.nan))
                continue
            if not scratch_done:  # the same frames for every header: once
                scratch_table, scratch_done = _scratch_table(stack.frames, f"shifts {name} run {run}"), True
            scratch = (scratch_score(scratch_table, ref, true_wcs, shape) if scratch_table is not None
                       else np.nan)
            res = wcs_case(stack.frames, true_wcs, spoiled, shifts, bound_pos, scratch, shape)
            out[filename].append(res)
            _log_wcs(name, run, filename, res)
    return out


def _scratch_table(frames, label):
    try:
        table, _, _ = astrosr_register(without_wcs(frames), transform="rigid")
        return table
    except Exception as exc:  # new API: reported, not fatal
        log(f"    {label}: scratch rigid registration failed: {type(exc).__name__}: {exc}")
        return None


def _scratch(frames, ref, true_wcs, shape, label):
    table = _scratch_table(frames, label)
    return scratch_score(table, ref, true_wcs, shape) if table is not None else np.nan


def _log_wcs(name, run, header, res):
    log(f"  wcs {name} run {run} {header}: start {res['start']:.3f} px, floor {res['floor']:.1e}, "
        f"use_wcs {res['rms']:.4f}, via K {res['rms_k']:.4f}, scratch {res['scratch']:.4f}, "
        f"CRB {res['crb']:.4f} px")


def scenario_wcs(images, runs, out):
    results = {}
    for name in images:
        log(f"wcs {name}: {runs} run(s)")
        results[name] = bench_wcs_image(name, runs)
    head = (f"{'header':<31}{'image':<9}{'start px':>9}{'floor px':>10}{'use_wcs':>9}{'/CRB':>7}"
            f"{'scratch':>9}{'/CRB':>7}{'wcs/scr':>8}{'via K':>9}{'K vs wcs':>10}{'ms/frame':>9}")
    out()
    out(f"wcs: frames' WCS spoiled by {WCS_OFFSET_PX} px (random direction) and +-{WCS_ROTATION_DEG} deg; "
        f"register_stack(transform='rigid', use_wcs=True) vs from scratch; RMS over a 9x9 grid of frame "
        f"pixels and frames 1..15 of the position error in reference px; MEDIANS over {runs} run(s)")
    out("TAN (rotated): rigid geometry (+-20, 90, 180 deg) with its exact TAN WCS; the others: real "
        "distorted headers, pure shifts (uniform +-1.5 px)")
    out(head)
    out("-" * len(head))
    targets = []
    labels = dict(HEADERS)
    for header in ["TAN (rotated)"] + [f for f, _ in HEADERS]:
        for k, name in enumerate(images):
            rr = results[name][header]
            use, scr, bound = median(rr, "rms"), median(rr, "scratch"), median(rr, "crb")
            ratio = [r["rms"] / r["scratch"] for r in rr]
            ratio = float(np.nanmedian(ratio)) if np.isfinite(ratio).any() else np.nan
            title = header if k == 0 else ("  " + labels[header] if k == 1 and header in labels else "")
            out(f"{title:<31}{name:<9}{fmt(median(rr, 'start'), '9.3f')}{fmt(median(rr, 'floor'), '10.1e')}"
                f"{fmt(use, '9.4f')}{fmt(use / bound, '7.2f')}{fmt(scr, '9.4f')}{fmt(scr / bound, '7.2f')}"
                f"{fmt(ratio, '8.2f')}{fmt(median(rr, 'rms_k'), '9.4f')}{fmt(median(rr, 'agree'), '10.1e')}"
                f"{fmt(1e3 * median(rr, 'sec'), '9.1f')}")
            # Same accuracy as from scratch, less what no rigid correction can do (the floor).
            floor = median(rr, "floor")
            allowed = TARGETS["wcs_ratio"] * np.hypot(scr, floor)
            targets.append((f"wcs {header} {name}: use_wcs RMS <= {TARGETS['wcs_ratio']} x "
                            f"hypot(scratch, floor)", f"{fmt(use, '.4f')} vs {fmt(allowed, '.4f')} px",
                            bool(use <= allowed)))
    out("-" * len(head))
    out("start: RMS of the spoiled WCS; floor: RMS left by the best rigid correction of it (the pointing "
        "and roll errors seen through the distortion); use_wcs: through the")
    out("corrected WCS (table column 'wcs'); via K: through the table's correction applied to the spoiled "
        "WCS; K vs wcs: their largest difference, px;")
    out("scratch: register_stack(transform='rigid') without WCS; /CRB: over the RMS of the two-frame CRB on "
        "the same positions (from the dx, dy, rotation bounds).")
    return targets


# --------------------------------------------------------------------------- scenario: speed


def traced_peak_mb(fn):
    """tracemalloc peak (MB) of Python/NumPy allocations during ``fn()``."""
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return (peak - base) / 2 ** 20


def speed_stack(kind, size, seed=0):
    fine = SCALE * size
    truth = simulate.make_sky((fine, fine), n_stars=int(150 * (size / FRAME) ** 2), n_galaxies=0,
                              nebula=False, seed=seed)
    if kind == "shift":
        return simulate.observe(truth, n_frames=N_FRAMES, scale=SCALE, psf=PSF, sky=SKY,
                                read_noise=READ_NOISE, seed=seed).frames, {}
    if kind == "rigid":
        geo = geometry_table("rigid", np.random.default_rng(1000 + seed))
        return simulate.observe(truth, scale=SCALE, psf=PSF, geometry=geo, sky=SKY,
                                read_noise=READ_NOISE, seed=seed).frames, dict(transform="rigid")
    shifts = simulate.default_shifts(N_FRAMES, seed=np.random.default_rng(1000 + seed))
    frames = simulate.observe(truth, scale=SCALE, psf=SHARP_PSF, shifts=shifts, sky=SKY,
                              read_noise=READ_NOISE, seed=seed).frames
    return sky_subtracted(frames), dict(psf=SHARP_PSF)


def scenario_speed(cases, out):
    """``cases``: (path, frame size, timed runs, whether to trace the memory in another call)."""
    rows, targets = [], []
    for kind, size, runs, trace in cases:
        log(f"speed {kind} {size}x{size}: {runs} run(s)")
        t0 = time.perf_counter()
        frames, kw = speed_stack(kind, size)
        log(f"  stack made in {time.perf_counter() - t0:.1f} s")
        secs, used, peak = [], "-", np.nan
        try:
            for _ in range(runs):
                _, sec, used = astrosr_register(frames, **kw)
                secs.append(sec)
                log(f"  {kind} {size}: {sec:.2f} s ({used})")
            if trace:
                peak = traced_peak_mb(lambda: astrosr.register_stack(frames, **kw))
        except Exception as exc:  # new API: reported, not fatal
            log(f"  speed {kind} {size}: failed: {type(exc).__name__}: {exc}")
        sec = float(np.median(secs)) if secs else np.nan
        mpix = size * size / 1e6
        rows.append((kind, size, runs, sec, sec / N_FRAMES / mpix, 1e3 * sec / N_FRAMES, peak, used))
        if kind == "shift":
            targets.append((f"speed shift {size}x{size}: <= {TARGETS['speed']:g} s/MPix/frame",
                            fmt(sec / N_FRAMES / mpix, ".2f"), bool(sec / N_FRAMES / mpix <= TARGETS["speed"])))
    head = (f"{'path':<14}{'frames':>10}{'runs':>5}{'s/stack':>9}{'s/MPix/frame':>14}{'ms/frame':>10}"
            f"{'peak MB':>9}  {'method':<30}")
    out()
    out(f"speed: register_stack on {N_FRAMES}-frame star-field stacks; median wall time over the runs; "
        f"peak MB: tracemalloc peak of a separate, untimed call (Python + NumPy allocations; not C-library "
        f"workspaces; '-': not traced)")
    out(head)
    out("-" * len(head))
    labels = {"shift": "shift (1.2 px)", "rigid": "rigid (1.2 px)", "model": "undersampled"}
    for kind, size, runs, sec, spm, ms, peak, used in rows:
        out(f"{labels[kind]:<14}{f'{size}x{size}':>10}{runs:>5}{fmt(sec, '9.2f')}{fmt(spm, '14.2f')}{fmt(ms, '10.1f')}"
            f"{fmt(peak, '9.0f')}  {used:<30}")
    out("-" * len(head))
    out("undersampled: PSF sigma 0.5 px, sky-subtracted, register_stack(psf=...) (auto).")
    return targets


# --------------------------------------------------------------------------- self-check (noise-free)


def self_check(out):
    """Conventions of the peers and the CRB, on noise-free frames (module notes)."""
    truth = make_truth("stars", 0)
    out("self-check on noise-free frames of the 'stars' field (seed 0)")
    # skimage and chi2_shift signs.
    for d in ((0.3, -0.7), (3.3, -5.7), (-7.25, 2.4)):
        m = simulate.render(truth, [[0, 0], list(d)], scale=SCALE, psf=PSF)
        sk = skimage_to_dxdy(phase_cross_correlation(m[0], m[1], upsample_factor=100)[0])
        xo, yo = chi2_shift(m[0], m[1], upsample_factor="auto")[:2]
        out(f"  shift {d}: skimage -> ({sk[0]:+.3f}, {sk[1]:+.3f}), chi2_shift -> "
            f"({chi2_shift_to_dxdy(xo, yo)[0]:+.3f}, {chi2_shift_to_dxdy(xo, yo)[1]:+.3f})")
    # astroalign conversion.
    # Aligned frames (0, 90, 180 deg) at shifts on the 1/16-px grid (see geometry_table).
    cases = np.array([(0, 0, 0, 1), (0.3125, -0.6875, 0, 1), (1.2, -0.4, 12.0, 1), (-0.8, 1.1, -17.5, 1),
                      (0.5, 0.875, 90, 1), (-1.0, 0.1875, 180, 1), (0.4, -1.3, 8.0, 1.015),
                      (0.9, 0.6, -5.0, 0.985)], float)
    frames = [CCDData(f + SKY, unit=u.electron)
              for f in simulate.render_geometry(truth, geometry_qtable(cases), scale=SCALE, psf=PSF)]
    aa, fails, sec = run_astroalign(frames)
    for c, a in zip(cases[1:], aa):
        out(f"  astroalign true ({c[0]:+.2f}, {c[1]:+.2f}, {c[2]:+7.2f} deg, {c[3]:.3f}) -> "
            f"({a[0]:+.3f}, {a[1]:+.3f}, {a[2]:+8.3f} deg, {a[3]:.5f}); error {np.hypot(*(a[:2] - c[:2])):.3f} px, "
            f"{wrap_deg(a[2] - c[2]):+.4f} deg")
    out(f"  astroalign: {fails} failure(s), {1e3 * sec:.0f} ms per pair")
    # render_geometry's staircase at aligned angles (why geometry_table rounds the 90/180 deg shifts).
    for d in ((0.3, -0.7), (0.5, 0.9)):
        g = render_geometry_frame(truth, (d[0], d[1], 0.0, 1.0))
        exact = simulate.render(truth, [list(d)], scale=SCALE, psf=PSF)[0]
        snapped = np.round(np.array(d) * RENDER_SUBSAMPLES) / RENDER_SUBSAMPLES
        near = simulate.render(truth, [list(snapped)], scale=SCALE, psf=PSF)[0]
        out(f"  render_geometry at 0 deg, shift {d}: RMS difference from render at that shift "
            f"{rms(g - exact):.3f} e-, at the shift rounded to 1/16 px ({snapped[0]:g}, {snapped[1]:g}) "
            f"{rms(g - near):.3f} e-")
    # CRB: telescoped + chain rule against a finer rule and against direct differences.
    d = np.array([0.37, -0.81])
    for rot in (0.0, 7.3, 45.0, 90.0, 180.0):
        geo = np.array([[0, 0, 0, 1], [d[0], d[1], rot, 1.01]])
        params = ["dx", "dy", "rotation", "scale"]
        t0 = time.perf_counter()
        b4, _ = crb(truth, geo, PSF, params, subsamples=4)
        t4 = time.perf_counter() - t0
        b32, _ = crb(truth, geo, PSF, params, subsamples=32)
        direct = _direct_crb(truth, geo[1], PSF, 8, 0.4, 8e-3)
        out(f"  CRB at {rot:5.1f} deg (dx, dy px, rot deg, scale): subsamples 4 "
            f"{' '.join(f'{v:.3g}' for v in b4[0])} ({t4:.2f} s); /subsamples 32 "
            f"{' '.join(f'{v:.3f}' for v in b4[0] / b32[0])}; /direct FD "
            f"{' '.join(f'{v:.3f}' for v in b4[0] / direct)}")
    shifts = np.array([[0.0, 0.0], [0.37, -0.81]])
    b_render, _ = crb(truth, shifts, PSF, ["dx", "dy"])
    b_geo, _ = crb(truth, shifts, PSF, ["dx", "dy"], shifts_only=False)
    out(f"  CRB at 0 deg, render_geometry (telescoped) / render: "
        f"{' '.join(f'{v:.3f}' for v in b_geo[0] / b_render[0])}")
    b1, _ = crb(truth, shifts, PSF, ["dx", "dy"], sky=0.0, read_noise=0.0)
    b4x, _ = crb(4 * truth, shifts, PSF, ["dx", "dy"], sky=0.0, read_noise=0.0)
    g = geometry_table("similarity", np.random.default_rng(1000))
    r1, _ = crb(truth, g[:3], PSF, params, sky=0.0, read_noise=0.0)
    r4, _ = crb(4 * truth, g[:3], PSF, params, sky=0.0, read_noise=0.0)
    out(f"  CRB(flux x4) / CRB(flux), no sky, no read noise (expect 0.5): shifts "
        f"{' '.join(f'{v:.4f}' for v in (b4x / b1).ravel())}; similarity "
        f"{' '.join(f'{v:.4f}' for v in (r4 / r1).ravel())}")
    b1s, _ = crb(truth, shifts, PSF, ["dx", "dy"])
    b4s, _ = crb(4 * truth, shifts, PSF, ["dx", "dy"])
    out(f"  same with sky 100 e- and read noise 5 e- (between 0.25 and 0.5): "
        f"{' '.join(f'{v:.4f}' for v in (b4s / b1s).ravel())}")
    t0 = time.perf_counter()
    crb(truth, geometry_table("similarity", np.random.default_rng(1000)), PSF, params)
    out(f"  CRB of a 16-frame similarity stack: {time.perf_counter() - t0:.1f} s")
    # astrosr on the same noise-free frames, where the new API exists.
    try:
        table, sec, used = astrosr_register(frames, transform="similarity")
        est, _ = table_params(table, ["dx", "dy", "rotation", "scale"])
        for c, a in zip(cases[1:], est):
            out(f"  astrosr similarity true ({c[0]:+.2f}, {c[1]:+.2f}, {c[2]:+7.2f}, {c[3]:.3f}) -> "
                f"({a[0]:+.4f}, {a[1]:+.4f}, {a[2]:+8.4f}, {a[3]:.5f})")
        out(f"  astrosr: {used}, {sec:.1f} s")
    except Exception as exc:
        out(f"  astrosr register_stack(transform='similarity'): - ({type(exc).__name__}: {exc})")
    return []


def render_geometry_frame(truth, g):
    """One noise-free frame of geometry ``g`` = (dx, dy, rotation, scale), as observe renders it."""
    return simulate.render_geometry(truth, geometry_qtable([g]), scale=SCALE, psf=PSF)[0]


def _direct_crb(truth, g, psf, subsamples, h_rot, h_scale):
    """CRB of one frame from direct central differences of render_geometry in every parameter."""
    hs = [0.5 / subsamples, 0.5 / subsamples, h_rot, h_scale]
    rows = []
    for k, h in enumerate(hs):
        for sign in (1, -1):
            r = np.array(g, float)
            r[k] += sign * h
            rows.append(r)
    m = simulate.render_geometry(truth, geometry_qtable(rows), scale=SCALE, psf=psf, subsamples=subsamples)
    cols = [(m[2 * k] - m[2 * k + 1]) / (2 * h) for k, h in enumerate(hs)]
    sig = m.mean(axis=0)
    cov = fisher_cov(cols, 2 * (sig + SKY) + 2 * READ_NOISE ** 2, sig)
    return np.sqrt(np.diag(cov))


# --------------------------------------------------------------------------- main


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=None,
                        help=f"subset of {SCENARIOS} (default: all)")
    parser.add_argument("--runs", type=int, default=3, help="runs (seeds) per image, default 3")
    parser.add_argument("--images", nargs="+", choices=ALL_IMAGES, default=None,
                        help=f"subset of {ALL_IMAGES}, for every scenario (default: each scenario's own)")
    parser.add_argument("--quick", action="store_true", help="1 run, fewest images (about 5 minutes)")
    parser.add_argument("--out", type=Path, default=None, help="also write the printed report to this file")
    parser.add_argument("--csv", type=Path, default=None, help="also write the shift rows to this CSV file")
    parser.add_argument("--check", action="store_true",
                        help="only the noise-free checks of the conventions and the CRB")
    args = parser.parse_args(argv)

    lines = []

    def out(msg=""):
        print(msg, flush=True)
        lines.append(msg)

    runs = 1 if args.quick else args.runs
    scenarios = args.scenarios or SCENARIOS
    t_start = time.perf_counter()
    try:
        import astroalign
        aa_version = astroalign.__version__
    except ImportError:
        aa_version = "absent"
    out(f"astrosr registration benchmark: {N_FRAMES} frames of 128x128, scale {SCALE}, "
        f"Gaussian PSF sigma 1.2 input px, sky {SKY:g} e-, read noise {READ_NOISE:g} e-")
    out(f"machine: {os.cpu_count()} CPUs (os.cpu_count()); astrosr {getattr(astrosr, '__version__', '?')}, "
        f"numpy {np.__version__}, scikit-image {skimage.__version__}, "
        f"image_registration {getattr(image_registration, '__version__', '?')}, astroalign {aa_version}")
    targets, timings = [], []
    if args.check:
        self_check(out)
        scenarios = []
    else:
        out(f"scenarios: {', '.join(scenarios)}; {runs} run(s)" + (" (quick)" if args.quick else ""))
    for scenario in scenarios:
        t0 = time.perf_counter()
        if scenario == "speed":
            # (path, frame size, timed runs, trace memory in another call)
            n = 1 if args.quick else min(runs, 2)
            cases = [("shift", 256, n, True), ("shift", 512, n, not args.quick), ("rigid", 128, 1, True),
                     ("model", 128, 1, True)]
            if not args.quick:
                cases[3:3] = [("rigid", 256, 1, True)]
                cases.append(("model", 256, 1, True))
            targets += scenario_speed(cases, out)
        else:
            wanted = args.images or (QUICK_IMAGES if args.quick else SCENARIO_IMAGES)[scenario]
            images = [i for i in wanted if available(i)]
            for name in wanted:
                if name not in images:
                    out(f"note: skipping '{name}' in {scenario}: {DATA / REAL[name]} not found")
            if scenario == "shift":
                targets += scenario_shift(images, runs, out, args.csv)
            elif scenario in ("rigid", "similarity"):
                targets += scenario_rigid(scenario, images, runs, out)
            elif scenario == "undersampled":
                targets += scenario_undersampled(images, runs, out)
            elif scenario == "wcs":
                targets += scenario_wcs(images, runs, out)
        timings.append((scenario, time.perf_counter() - t0))
    if targets:
        out()
        out(f"targets: {sum(ok for _, _, ok in targets)} of {len(targets)} met")
        for text, value, ok in targets:
            out(f"  [{'met' if ok else 'MISSED'}] {text}: {value}")
    out()
    out("time per scenario: " + ", ".join(f"{s} {t:.0f} s" for s, t in timings)
        + f"; total {time.perf_counter() - t_start:.0f} s")
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")
        print(f"report written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
