"""Benchmark: time and peak memory of every step against the frame size ("real sizes").

Stacks of 16 frames of N x N (128 to 2048), scale 4, Gaussian PSF sigma 1.2
input pixels, sky 100 e- (subtracted), read noise 5 e-, seeded: the truth is
a synthetic sky on the 4N x 4N fine grid with a TAN WCS (0.1 arcsec per fine
pixel), observed by ``astrosr.simulate.observe(truth, n_frames=16, scale=4,
psf=GaussianPSF(1.2), seed=...)``. Steps (the columns):

- ``simulate``: making the stack (the other cells exclude it, see below);
- ``register``: ``astrosr.register_stack(frames)``;
- ``drizzle``: ``astrosr.fuse(frames, shifts, scale=4, method="drizzle",
  pixfrac=0.7, reject=False)`` (the true shifts, as for every fusion);
- ``reconstruct``: ``astrosr.fuse(..., method="reconstruct", psf=psf)``;
- ``pipeline``: ``astrosr.MultiFrameSR(scale=4, psf=psf).run(frames)``
  (its own registration, ``refine-x1``, TensorFlow imported in the step);
- ``drizzle-pkg``: the ``drizzle`` package (``drizzle.resample.Drizzle``,
  square kernel, pixfrac 0.7, pixel maps from the true shifts, called as
  ``benchmarks/fusion.py`` calls it);
- ``reproject``: ``reproject.mosaicking.reproject_and_coadd`` (mean) of the
  frames with ``reproject_interp`` onto the reference's WCS made 4x finer;
  ``reproject-exact`` (not run by default) the same with ``reproject_exact``.

Every measurement is its own fresh process (this script with ``--one STEP``):
it makes the stack (deterministic from ``--seed``), frees the truth, resets
its peak resident set (``/proc/self/clear_refs``, so that the peak of making
the stack is not the step's), runs the step and prints, as JSON on its last
line, the step's time and ``ru_maxrss`` (the step's peak: the interpreter and
the stack in memory included) and the resident set when the step began
("added" is the difference). The ``simulate`` row is the making of the stack
alone, in a process of its own. Cells are medians of ``--repeats`` processes.

The sky: ``make_sky`` costs ~ area squared (each galaxy is a full-size array
and its size grows with the field: 0.2 s at 512^2, 32 s at 2048^2, over an
hour extrapolated at 8192^2), so stars (150 per 512^2 fine pixels) and the nebula
come from one ``make_sky`` call on the whole field and the galaxies (25) from
one ``make_sky`` call per 512^2 tile: the same density and galaxy sizes at
every N (galaxies are cut at tile edges).

Extra rows, each a fresh process that imports astrosr, reads a FITS file and
runs (as the ``astrosr enhance`` command does; the PSF is given):
``enhance`` of one 2048^2 frame in memory (output Mpix/s end to end), of one
4096^2 frame to a 16384^2 FITS file (``astrosr.enhance(ccd, output=PATH,
overwrite=True)``, when astrosr.enhance has ``output=``; ~2.3 GB in a
temporary folder, deleted after); ``process_stacks``: 8 stacks of 16 x 128^2
frames (FITS folders) plus one broken stack (a truncated FITS file) through
``astrosr.parallel.process_stacks`` with ``workers=1`` and ``workers=2``
(the broken one must fail alone). The single frames are a synthetic sky on
the detector grid (galaxies per 128^2 tile) observed once at scale 1.

Run from the repository root::

    python benchmarks/scale.py --quick           # 128^2, 256^2, 1 run, small extras (~10 min)
    python benchmarks/scale.py --out docs/scale_benchmark.txt   # everything (hours)
    python benchmarks/scale.py --sizes 512 1024 --steps register drizzle --extras
"""

import argparse
import datetime
import gc
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
N_FRAMES = 16
SCALE = 4
SIGMA = 1.2
SKY = 100.0
PIXFRAC = 0.7
FINE_ARCSEC = 0.1
TILE = 512            # fine pixels per galaxy tile (stacks)
FRAME_TILE = 128      # detector pixels per galaxy tile (single frames, scale 1)
STARS, GALAXIES = 150, 25   # per tile
STEPS = ["simulate", "register", "drizzle", "reconstruct", "pipeline", "drizzle-pkg",
         "reproject", "reproject-exact", "reconstruct-5"]
DEFAULT_STEPS = STEPS[:-2]
#: ``reconstruct-5``: the reconstruction's memory where its whole run takes too long here: no
#: rejection and 5 iterations (the fit's arrays are all allocated at the first), so its time is
#: not the reconstruction's.
MEMORY_ITERATIONS = 5
EXTRAS = ["enhance-memory", "enhance-disk", "batch"]
VERSIONS = ["astrosr-gan", "numpy", "scipy", "astropy", "photutils", "drizzle", "reproject",
            "dask", "distributed", "tensorflow", "keras"]


# --------------------------------------------------------------------------- the child's side


def rss_mb():
    """Resident set now (MB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def peak_mb():
    """``ru_maxrss`` of this process (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak():
    """Reset this process's peak resident set (Linux >= 4.0); False where it cannot.

    The heap that making the stack freed is first given back to the system
    (``malloc_trim``), so that the RSS the step starts from is what it holds.
    """
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def sky(shape, tile, seed):
    """Stars and nebula over the whole field, ``GALAXIES`` galaxies per ``tile`` square."""
    from astrosr import simulate

    ny, nx = shape
    truth = simulate.make_sky(shape, n_stars=STARS * ny * nx // tile ** 2, n_galaxies=0,
                              nebula=True, seed=seed)
    for i in range(ny // tile):
        for j in range(nx // tile):
            truth[i * tile:(i + 1) * tile, j * tile:(j + 1) * tile] += simulate.make_sky(
                (tile, tile), n_stars=0, n_galaxies=GALAXIES, nebula=False, seed=[seed, i, j])
    return truth


def with_wcs(data, arcsec):
    """``data`` as a CCDData in electrons with a TAN WCS of ``arcsec`` per pixel."""
    import astropy.units as u
    from astropy.nddata import CCDData
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.1, 2.2]
    w.wcs.crpix = [(data.shape[1] + 1) / 2.0, (data.shape[0] + 1) / 2.0]
    w.wcs.cdelt = [-arcsec / 3600.0, arcsec / 3600.0]
    w.wcs.set()
    return CCDData(data, unit=u.electron, wcs=w)


def make_stack(n, seed):
    """``(frames, shifts, psf, truth total)`` of the N x N stack of ``seed``; the truth freed."""
    from astrosr import simulate
    from astrosr.psf import GaussianPSF

    truth = with_wcs(sky((SCALE * n, SCALE * n), TILE, seed), FINE_ARCSEC)
    stack = simulate.observe(truth, n_frames=N_FRAMES, scale=SCALE, psf=GaussianPSF(SIGMA),
                             seed=seed + 1)
    for f in stack.frames:
        f.data = f.data - SKY
    out = stack.frames, stack.shifts, stack.psf, float(truth.data.sum())
    del truth, stack
    gc.collect()
    return out


def make_frame(n, seed):
    """One sky-subtracted N x N frame (float32) of a sky on the detector grid, scale 1."""
    import numpy as np
    from astropy.nddata import VarianceUncertainty

    from astrosr import simulate
    from astrosr.psf import GaussianPSF

    truth = with_wcs(sky((n, n), FRAME_TILE, seed), FINE_ARCSEC * SCALE)
    frame = simulate.observe(truth, n_frames=1, scale=1, psf=GaussianPSF(SIGMA),
                             shifts=[[0.0, 0.0]], seed=seed + 1).frames[0]
    frame.data = (frame.data - SKY).astype(np.float32)
    frame.uncertainty = VarianceUncertainty(frame.uncertainty.array.astype(np.float32))
    return frame


def drizzle_package(frames, shifts):
    sys.path.insert(0, str(HERE.parent))
    from fusion import drizzle_package as pkg  # the oracle call of benchmarks/fusion.py

    return pkg(frames, shifts)


def reprojected(frames, exact):
    """Mean of the frames reprojected onto the reference's WCS 4x finer, flux per fine pixel."""
    import numpy as np
    from reproject import reproject_exact, reproject_interp
    from reproject.mosaicking import reproject_and_coadd

    from astrosr.nddata import rescale_wcs

    ny, nx = frames[0].shape
    inputs = [(np.where(np.isfinite(f.data), f.data, 0.0), f.wcs) for f in frames]
    out, _ = reproject_and_coadd(inputs, rescale_wcs(frames[0].wcs, SCALE),
                                 shape_out=(SCALE * ny, SCALE * nx),
                                 reproject_function=reproject_exact if exact else reproject_interp,
                                 combine_function="mean")
    return out / SCALE ** 2


def run_step(step, frames, shifts, psf):
    """The output array of one step (None for register)."""
    import numpy as np

    import astrosr

    table = np.column_stack([shifts["dx"].value, shifts["dy"].value])
    if step == "register":
        astrosr.register_stack(frames)
        return None
    if step == "drizzle":
        return astrosr.fuse(frames, shifts, scale=SCALE, method="drizzle", pixfrac=PIXFRAC,
                            reject=False).data
    if step == "reconstruct":
        return astrosr.fuse(frames, shifts, scale=SCALE, method="reconstruct", psf=psf).data
    if step == "reconstruct-5":
        return astrosr.fuse(frames, shifts, scale=SCALE, method="reconstruct", psf=psf,
                            reject=False, max_iter=MEMORY_ITERATIONS).data
    if step == "pipeline":
        return astrosr.MultiFrameSR(scale=SCALE, psf=psf).run(frames).data
    if step == "drizzle-pkg":
        return drizzle_package(frames, table)
    if step in ("reproject", "reproject-exact"):
        return reprojected(frames, step == "reproject-exact")
    raise ValueError(f"unknown step {step!r}")


def child_stack(step, n, seed):
    import numpy as np

    import astrosr  # noqa: F401 - its import is not the simulation's

    start = rss_mb()
    t0 = time.perf_counter()
    frames, shifts, psf, total = make_stack(n, seed)
    sim = time.perf_counter() - t0
    res = dict(sim_seconds=sim, sim_peak_mb=peak_mb())
    if step == "simulate":
        return dict(res, seconds=sim, peak_mb=res["sim_peak_mb"], start_mb=start,
                    peak_reset=True)
    reset = reset_peak()
    start = rss_mb()
    t0 = time.perf_counter()
    out = run_step(step, frames, shifts, psf)
    seconds = time.perf_counter() - t0
    res.update(seconds=seconds, peak_mb=peak_mb(), start_mb=start, peak_reset=reset)
    if out is not None:
        out = np.asarray(out, dtype=float)
        res.update(flux=float(np.nansum(out)) / total, out_shape=list(out.shape))
    return res


def child_prepare_frame(n, seed, tmp):
    make_frame(n, seed).write(Path(tmp) / f"frame-{n}.fits", overwrite=True)
    return {}


def child_enhance(n, tmp, to_disk):
    """CLI-like: import astrosr, read the frame's FITS file, enhance (in memory or to a file)."""
    t0 = time.perf_counter()
    import inspect

    from astropy.nddata import CCDData

    import astrosr
    from astrosr.psf import GaussianPSF

    t_import = time.perf_counter()
    ccd = CCDData.read(Path(tmp) / f"frame-{n}.fits")
    t_load = time.perf_counter()
    res = dict(import_seconds=t_import - t0, load_seconds=t_load - t_import)
    if to_disk:
        if "output" not in inspect.signature(astrosr.enhance).parameters:
            return dict(res, available=False)
        path = Path(tmp) / f"frame-{n}_x{SCALE}.fits"
        out = astrosr.enhance(ccd, psf=GaussianPSF(SIGMA), output=path, overwrite=True)
        res.update(file_bytes=path.stat().st_size)
    else:
        out = astrosr.enhance(ccd, psf=GaussianPSF(SIGMA))
    end = time.perf_counter()
    shape = getattr(out, "shape", None) or (SCALE * ccd.shape[0], SCALE * ccd.shape[1])
    chi2 = getattr(out, "meta", {}).get("CHI2RED") if out is not None else None
    res.update(available=True, seconds=end - t0, run_seconds=end - t_load, peak_mb=peak_mb(),
               out_mpix=shape[0] * shape[1] / 1e6, chi2red=chi2)
    return res


def stack_folders(tmp):
    """The batch's stack folders, the broken one fourth."""
    root = Path(tmp) / "stacks"
    good = sorted(p for p in root.iterdir() if p.name.startswith("sky-"))
    return good[:3] + [root / "broken"] + good[3:]


def child_prepare_batch(n, n_stacks, seed, tmp):
    import numpy as np

    root = Path(tmp) / "stacks"
    for k in range(n_stacks + 1):
        folder = root / (f"sky-{k}" if k < n_stacks else "broken")
        folder.mkdir(parents=True, exist_ok=True)
        frames = make_stack(n, seed + 10 * (k + 1))[0]
        for i, f in enumerate(frames):
            f.data = f.data.astype(np.float32)
            f.write(folder / f"frame-{i:02d}.fits", overwrite=True)
    bad = root / "broken" / "frame-07.fits"
    with open(bad, "r+b") as f:
        f.truncate(bad.stat().st_size // 2)
    return {}


def child_batch(workers, tmp):
    t0 = time.perf_counter()
    from astrosr.parallel import process_stacks
    from astrosr.psf import GaussianPSF

    records = process_stacks([str(p) for p in stack_folders(tmp)], workers=workers,
                             output_dir=Path(tmp) / f"out-w{workers}", overwrite=True,
                             progress=False, scale=SCALE, psf=GaussianPSF(SIGMA))
    seconds = time.perf_counter() - t0
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return dict(seconds=seconds, peak_mb=peak_mb(), worker_peak_mb=children,
                records=[dict(name=r.name, ok=r.ok, error_type=r.error_type,
                              error=(r.error or "").splitlines()[0][:200] if r.error else None,
                              seconds=r.seconds, chi2red=r.chi2red) for r in records])


def child_main(args):
    one, n = args.one, args.size
    if one in STEPS:
        res = child_stack(one, n, args.seed)
    elif one == "prepare-frame":
        res = child_prepare_frame(n, args.seed, args.tmp)
    elif one in ("enhance-memory", "enhance-disk"):
        res = child_enhance(n, args.tmp, one == "enhance-disk")
    elif one == "prepare-batch":
        res = child_prepare_batch(n, args.batch_stacks, args.seed, args.tmp)
    elif one == "batch":
        res = child_batch(args.workers, args.tmp)
    else:
        raise SystemExit(f"unknown --one {one!r}")
    print(json.dumps(dict(res, step=one, size=n)), flush=True)
    return 0


# --------------------------------------------------------------------------- the parent's side


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def spawn(one, size, args, tmp=None, workers=1):
    """Run ``--one`` in a fresh process: ``(result dict or None, wall s, why not)``."""
    cmd = [sys.executable, str(HERE), "--one", one, "--size", str(size), "--seed", str(args.seed),
           "--workers", str(workers), "--batch-stacks", str(args.batch_stacks)]
    if tmp is not None:
        cmd += ["--tmp", str(tmp)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the child and what it started (dask workers)
        proc.communicate()
        return None, time.perf_counter() - t0, "timeout"
    wall = time.perf_counter() - t0
    lines = [line for line in out.splitlines() if line.strip()]
    if proc.returncode == 0 and lines:
        try:
            return json.loads(lines[-1]), wall, None
        except ValueError:
            pass
    tail = [line for line in err.splitlines() if line.strip()][-1:] or [f"rc {proc.returncode}"]
    why = ("killed (out of memory?)" if proc.returncode == -signal.SIGKILL
           else tail[0].strip()[:200])
    return None, wall, why


def machine_lines():
    from importlib import metadata

    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), "?")
    except OSError:
        pass
    ram = "?"
    try:
        with open("/proc/meminfo") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal"))
        ram = f"{kb / 2 ** 20:.1f} GiB"
    except (OSError, StopIteration):
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    versions = []
    for name in VERSIONS:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} -")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
            f"machine: {model}; {os.cpu_count()} CPUs ({usable} usable); RAM {ram}; "
            f"{platform.system()} {platform.release()}; Python {platform.python_version()}; "
            f"load average {load}",
            "versions: " + ", ".join(versions)]


def repeats_for(n, args):
    return args.repeats if args.repeats is not None else (3 if n <= 512 else 1)


class Cell:
    """The runs of one (size, step): medians, or why there is no number."""

    def __init__(self, results, runs, why, walls):
        self.results, self.runs, self.why, self.walls = results, runs, why, walls

    def median(self, key):
        values = [r[key] for r in self.results if r.get(key) is not None]
        return statistics.median(values) if values else None


def measure(n, step, args):
    results, why, walls = [], None, []
    for _ in range(repeats_for(n, args)):
        res, wall, why = spawn(step, n, args)
        walls.append(wall)
        if res is None:
            break
        results.append(res)
    cell = Cell(results, len(results), why if not results else None, walls)
    if cell.why:
        log(f"  {n}^2 {step}: {cell.why} ({sum(walls):.0f} s wall)")
    else:
        log(f"  {n}^2 {step}: {cell.median('seconds'):.2f} s, peak {cell.median('peak_mb'):.0f} MB "
            f"({len(results)} run(s), {sum(walls):.0f} s wall)")
    return cell


def fmt_cell(cell, key, args, fmt):
    if cell is None:
        return "-"
    if cell.why:
        return f">{args.timeout:g} s" if cell.why == "timeout" else "failed"
    value = cell.median(key)
    return "-" if value is None else fmt(value)


def rate(n, step, cell):
    """register: s per Mpix per frame; other steps: output Mpix/s."""
    if cell is None or cell.why or step == "simulate":
        return None
    sec = cell.median("seconds")
    if step == "register":
        return sec / (N_FRAMES * n * n / 1e6)
    return (SCALE * n) ** 2 / 1e6 / sec


def tables(cells, sizes, steps, args):
    lines = []
    width = max(11, max(len(s) for s in steps) + 1)

    def table(title, fmt_row):
        lines.append("")
        lines.append(title)
        lines.append(f"{'N':>6}" + "".join(f"{s:>{width}}" for s in steps))
        for n in sizes:
            lines.append(f"{n:>6}" + "".join(f"{fmt_row(n, s):>{width}}" for s in steps))

    def runs(n, s):
        c = cells.get((n, s))
        return f" ({c.runs})" if c is not None and not c.why else ""

    table("time, s (median; runs in brackets)", lambda n, s: fmt_cell(
        cells.get((n, s)), "seconds", args, lambda v: f"{v:.3g}") + runs(n, s))
    table("peak RSS, MB (the step's process: interpreter and stack included; simulate: "
          "making the stack)", lambda n, s: fmt_cell(cells.get((n, s)), "peak_mb", args,
                                                     lambda v: f"{v:.0f}"))

    def added(n, s):
        c = cells.get((n, s))
        if c is None or c.why:
            return fmt_cell(c, "peak_mb", args, str)
        peak = [r["peak_mb"] - r["start_mb"] for r in c.results]
        mark = "" if all(r.get("peak_reset") for r in c.results) else "*"
        return f"{statistics.median(peak):.0f}{mark}"

    table("added, MB (peak minus the RSS when the step began)", added)

    def rates(n, s):
        value = rate(n, s, cells.get((n, s)))
        return "-" if value is None else f"{value:.3g}"

    table("rate: register s/Mpix/frame; the others output Mpix/s", rates)
    table("flux / truth total (output sum over the truth's; a check of the outputs)",
          lambda n, s: fmt_cell(cells.get((n, s)), "flux", args, lambda v: f"{v:.4f}"))
    if any(not r.get("peak_reset", True) for c in cells.values() if c for r in c.results):
        lines.append("* the peak could not be reset after making the stack: it may be "
                     "the simulation's")
    return lines


def extras_lines(args, tmpdir):
    """The enhance and process_stacks rows."""
    lines = []
    if not args.extras:
        return lines
    tmp = Path(tempfile.mkdtemp(prefix="astrosr-scale-", dir=tmpdir))
    try:
        if "enhance-memory" in args.extras or "enhance-disk" in args.extras:
            lines += ["", "enhance (srresnet-x4, PSF given; a fresh process: import astrosr, "
                      "read the FITS frame, enhance)",
                      f"{'row':<34}{'time s':>8}{'import':>8}{'read':>7}{'enhance':>9}"
                      f"{'Mpix/s':>8}{'peak MB':>9}  notes"]
        for which, n in (("enhance-memory", args.enhance_size), ("enhance-disk", args.disk_size)):
            if which not in args.extras:
                continue
            m = SCALE * n
            label = (f"enhance {n}^2 (in memory)" if which == "enhance-memory"
                     else f"enhance {n}^2->{m}^2 to disk")
            if which == "enhance-disk":
                import inspect

                import astrosr

                if "output" not in inspect.signature(astrosr.enhance).parameters:
                    lines.append(f"{label:<34}not available (astrosr.enhance has no output=)")
                    continue
                need = m * m * 9 * 1.2  # float32 data and uncertainty, uint8 mask
                free = shutil.disk_usage(tmp).free
                if free < need:
                    lines.append(f"{label:<34}skipped: {free / 1e9:.1f} GB free in {tmp}, "
                                 f"needs ~{need / 1e9:.1f} GB")
                    continue
            log(f"{label}: preparing the frame")
            if not (tmp / f"frame-{n}.fits").exists():
                res, wall, why = spawn("prepare-frame", n, args, tmp)
                if why:
                    lines.append(f"{label:<34}frame not made: {why}")
                    continue
                log(f"  made in {wall:.0f} s")
            res, wall, why = spawn(which, n, args, tmp)
            if why:
                lines.append(f"{label:<34}{'>%g s' % args.timeout if why == 'timeout' else why}")
            elif not res.get("available", True):
                lines.append(f"{label:<34}not available (astrosr.enhance has no output=)")
            else:
                note = f"process wall {wall:.1f} s"
                if res.get("file_bytes"):
                    note += f"; file {res['file_bytes'] / 1e9:.2f} GB"
                if res.get("chi2red") is not None:
                    note += f"; CHI2RED {float(res['chi2red']):.3f}"
                lines.append(f"{label:<34}{res['seconds']:>8.1f}{res['import_seconds']:>8.1f}"
                             f"{res['load_seconds']:>7.1f}{res['run_seconds']:>9.1f}"
                             f"{res['out_mpix'] / res['seconds']:>8.3f}{res['peak_mb']:>9.0f}"
                             f"  {note}")
            log("  " + lines[-1])
            for p in tmp.glob(f"frame-{n}_x*.fits"):
                p.unlink()
        if "batch" in args.extras:
            lines += batch_lines(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return lines


def batch_lines(args, tmp):
    n, k = args.batch_size, args.batch_stacks
    lines = ["", f"process_stacks: {k} stacks of {N_FRAMES} x {n}^2 frames (FITS folders) and "
             f"1 broken (a truncated frame), scale {SCALE}, PSF given, output_dir"]
    log(f"process_stacks: preparing {k + 1} stacks of {n}^2")
    res, wall, why = spawn("prepare-batch", n, args, tmp)
    if why:
        return lines + [f"  stacks not made: {why}"]
    log(f"  made in {wall:.0f} s")
    seconds = {}
    for workers in (1, 2):
        res, wall, why = spawn("batch", n, args, tmp, workers=workers)
        if why:
            lines.append(f"  workers={workers}: "
                         f"{'>%g s' % args.timeout if why == 'timeout' else why}")
            log(lines[-1])
            continue
        seconds[workers] = res["seconds"]
        recs = res["records"]
        ok = [r for r in recs if r["ok"]]
        failed = [r for r in recs if not r["ok"]]
        per = statistics.median(r["seconds"] for r in ok) if ok else float("nan")
        lines.append(f"  workers={workers}: {res['seconds']:.1f} s ({wall:.1f} s process); "
                     f"{len(ok)}/{len(recs)} ok, median {per:.1f} s per stack on its worker; "
                     f"peak {res['peak_mb']:.0f} MB (client), {res['worker_peak_mb']:.0f} MB "
                     "(largest worker)")
        for r in failed:
            lines.append(f"    {r['name']}: FAILED ({r['error_type']}: {r['error']})")
        broken_ok = [r["name"] for r in failed] == ["broken"]
        lines.append("    the broken stack failed alone: "
                     + ("yes" if broken_ok else "NO (expected only 'broken' to fail)"))
        log("\n".join(lines[-2 - len(failed):]))
    if 1 in seconds and 2 in seconds:
        lines.append(f"  speed-up workers=2 over workers=1: {seconds[1] / seconds[2]:.2f}x")
    return lines


def write_out(args, lines):
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=None,
                        help="frame sides, multiples of 128 (default 128 256 512 1024 2048; "
                             "none: --sizes, for the extra rows alone)")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=DEFAULT_STEPS)
    parser.add_argument("--repeats", type=int, default=None,
                        help="processes per cell, median taken (default 3 up to 512, 1 above)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per process")
    parser.add_argument("--out", help="also write the tables to this file")
    parser.add_argument("--quick", action="store_true",
                        help="unless given: sizes 128 and 256, 1 run per cell, enhance rows "
                             "at 256 (memory) and 512 (disk), 2 stacks for process_stacks")
    parser.add_argument("--extras", nargs="*", choices=EXTRAS, default=None,
                        help=f"extra rows (default all: {' '.join(EXTRAS)}; none: --extras)")
    parser.add_argument("--enhance-size", type=int, default=None, help="default 2048")
    parser.add_argument("--disk-size", type=int, default=None, help="default 4096")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batch-stacks", type=int, default=None,
                        help="good stacks of the process_stacks row (default 8, --quick 2)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tmpdir", default=None,
                        help="where the temporary folder goes (default: the system's)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        return child_main(args)
    if args.sizes is None:
        args.sizes = [128, 256] if args.quick else [128, 256, 512, 1024, 2048]
    if args.quick and args.repeats is None:
        args.repeats = 1
    args.batch_stacks = args.batch_stacks or (2 if args.quick else 8)
    args.enhance_size = args.enhance_size or (256 if args.quick else 2048)
    args.disk_size = args.disk_size or (512 if args.quick else 4096)
    args.extras = EXTRAS if args.extras is None else args.extras
    bad = [n for n in args.sizes + [args.batch_size, args.enhance_size, args.disk_size]
           if n < 128 or n % 128]
    if bad:
        parser.error(f"sizes must be multiples of 128, got {bad}")

    head = [f"astrosr at real sizes: {N_FRAMES} frames of N x N, scale {SCALE}, Gaussian PSF "
            f"sigma {SIGMA} input px, sky {SKY:g} e- subtracted, read noise 5 e-, seed "
            f"{args.seed}; one fresh process per run",
            *machine_lines(),
            "command: python " + " ".join([os.path.relpath(HERE)] + (argv or sys.argv[1:]))]
    print("\n".join(head), flush=True)
    cells, walls, lines = {}, {}, head
    t_all = time.perf_counter()
    for n in args.sizes:
        t0 = time.perf_counter()
        log(f"{n}^2 x {N_FRAMES} ({repeats_for(n, args)} run(s) per cell)")
        for step in args.steps:
            cells[(n, step)] = measure(n, step, args)
        walls[n] = time.perf_counter() - t0
        done = [m for m in args.sizes if m in walls]
        lines = head + tables(cells, done, args.steps, args)
        write_out(args, lines)
    if args.sizes:
        lines += ["", "wall time per size (every process, stack making included): "
                  + ", ".join(f"{n}^2 {walls[n]:.0f} s" for n in args.sizes)]
        print("\n".join(lines[len(head):]), flush=True)
    extra = extras_lines(args, args.tmpdir)
    print("\n".join(extra), flush=True)
    lines += extra + ["", f"total wall {time.perf_counter() - t_all:.0f} s; load average now "
                      + " ".join(f"{x:.2f}" for x in os.getloadavg())]
    print(lines[-1])
    write_out(args, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
