"""Memory a run needs, checked before the work starts.

`estimate_memory` gives the peak memory of a fusion, an `astrosr.enhance` or
a `astrosr.MultiFrameSR` run from the sizes alone (no allocation);
`available_memory` what the machine can give; `check_memory` refuses a run
that cannot fit with a `MemoryError` that gives both figures and what to
change. The command line calls it before registering; so can a pipeline.

The figures per output pixel were measured (peak resident memory against
frames and output pixels, on stacks of 4 to 16 frames, output grids from
256x256 to 1536x1536, and 16 frames of 1024x1024 for the reconstruction):
the Richardson-Lucy fusion holds two float32 cubes of the frames and about
eight float32 images of the fine grid besides the frames themselves;
drizzle and shift-and-add, which reject outliers against a model of the
frames, hold more (float64 images of the output per frame). `astrosr.enhance` holds the fine image through the
self-ensemble and the consistency fit (about 300 bytes per output pixel) and
the network's activations of one tile (about 200 bytes per fine pixel of a
tile with its overlap). The figures are rounded up: an estimate that is low
lets a run die midway, which is what the check is for.
"""

import os

__all__ = ["estimate_memory", "available_memory", "check_memory", "format_bytes"]

#: Bytes per output pixel, per frame and for the whole stack, of a drizzle or
#: shift-and-add fusion (with its outlier rejection) ...
FUSION_BYTES_PER_FRAME = 40
FUSION_BYTES_FIXED = 128
#: ... and of the reconstruction, which holds its cubes in float32, builds them
#: frame by frame and works on half spectra (measured: 2.5 GB for 16 frames of
#: 1024² at scale 4, the frames' own CCDData included).
RECONSTRUCT_BYTES_PER_FRAME = 3
RECONSTRUCT_BYTES_FIXED = 96
#: Bytes per output pixel of `astrosr.enhance` (fine image, consistency fit),
#: plus per ensemble member.
NETWORK_BYTES_PER_PIXEL = 300
NETWORK_BYTES_PER_MEMBER = 8
#: Bytes per fine pixel of one network tile (activations of the generator).
TILE_BYTES_PER_PIXEL = 200
#: The interpreter with NumPy, SciPy and Astropy; TensorFlow with a model.
BASE_BYTES = 200 * 2 ** 20
TENSORFLOW_BYTES = 600 * 2 ** 20

METHODS = ("reconstruct", "drizzle", "shift_and_add", "enhance", "pipeline")


def estimate_memory(shape, *, n_frames=1, scale=4, method="reconstruct", ensemble=1, tile=256,
                    overlap=32, refine=True):
    """Peak memory of a run, in bytes, from its sizes (nothing is allocated).

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of one input frame.
    n_frames : int
        Frames in the stack (1 for ``"enhance"``).
    scale : int
        Output pixels per input pixel (for ``"enhance"``: the model's).
    method : {"reconstruct", "drizzle", "shift_and_add", "enhance", "pipeline"}
        A fusion method, one image through a network, or the whole pipeline
        (reconstruct fusion, then the scale-1 refinement network and the
        consistency fit when ``refine``).
    ensemble : int
        Self-ensemble members of the network.
    tile, overlap : int
        Network tile side and margin: input pixels for ``"enhance"``, fine
        pixels for the pipeline's refinement.
    refine : bool
        ``"pipeline"``: whether a refinement network runs.

    Returns
    -------
    int
        Bytes.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    ny, nx = (int(n) for n in shape)
    n_frames, scale = int(n_frames), int(scale)
    if n_frames < 1 or scale < 1 or ny < 1 or nx < 1:
        raise ValueError(f"shape, n_frames and scale must be positive, got {shape}, "
                         f"{n_frames}, {scale}")
    fine = ny * nx * scale ** 2
    if method in ("reconstruct", "pipeline"):
        fusion = fine * (RECONSTRUCT_BYTES_PER_FRAME * n_frames + RECONSTRUCT_BYTES_FIXED)
    else:
        fusion = fine * (FUSION_BYTES_PER_FRAME * n_frames + FUSION_BYTES_FIXED)
    if method in ("reconstruct", "drizzle", "shift_and_add"):
        return BASE_BYTES + fusion
    if method == "enhance":
        side = min(int(tile) + 2 * int(overlap), max(ny, nx)) * scale
        network = _network_bytes(fine, side ** 2, ensemble)
        return BASE_BYTES + TENSORFLOW_BYTES + network
    if not refine:
        return BASE_BYTES + fusion
    side = min(int(tile) + 2 * int(overlap), max(ny, nx) * scale)
    # The frames and the fused image stay while the network runs; the consistency
    # fit is a reconstruct fusion again.
    network = _network_bytes(fine, side ** 2, ensemble) + fine * 8 * (n_frames + 2)
    return BASE_BYTES + TENSORFLOW_BYTES + max(fusion, network)


def _network_bytes(fine, tile_pixels, ensemble):
    return (fine * (NETWORK_BYTES_PER_PIXEL + NETWORK_BYTES_PER_MEMBER * int(ensemble))
            + tile_pixels * TILE_BYTES_PER_PIXEL)


def available_memory():
    """Bytes of memory this process can still use, or None when unknown.

    The smallest of what the system reports available (``MemAvailable`` of
    ``/proc/meminfo``, else the physical memory) and a control-group limit
    (containers, batch jobs) less what the group already uses.
    """
    candidates = []
    meminfo = _meminfo_available()
    if meminfo is not None:
        candidates.append(meminfo)
    else:
        try:
            candidates.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            pass
    limit = _cgroup_room()
    if limit is not None:
        candidates.append(limit)
    return min(candidates) if candidates else None


def _meminfo_available():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room():
    """Limit less usage of the process's cgroup (v2, then v1), or None without a limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as f:
                text = f.read().strip()
            if text == "max":
                return None
            limit = int(text)
            with open(usage_file) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit >= 2 ** 60:  # v1's "no limit"
            return None
        return max(limit - usage, 0)
    return None


def format_bytes(n):
    """``n`` bytes as a short text: "6.8 GiB", "512 MiB"."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit in ("B", "KiB", "MiB") else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def check_memory(shape, *, advice="use a smaller scale, fewer frames or smaller tiles",
                 available=None, **options):
    """Refuse a run that needs more memory than is available, before it starts.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of one input frame.
    advice : str
        What the user can change, for the message.
    available : int, optional
        Bytes available (default: `available_memory`; when that is unknown,
        nothing is checked).
    **options
        As for `estimate_memory` (``n_frames``, ``scale``, ``method``...).

    Returns
    -------
    int
        The estimate, in bytes.

    Raises
    ------
    MemoryError
        When the estimate exceeds what is available; the message gives both
        figures and ``advice``.
    """
    needed = estimate_memory(shape, **options)
    available = available_memory() if available is None else int(available)
    if available is not None and needed > available:
        method = options.get("method", "reconstruct")
        n = options.get("n_frames", 1)
        scale = options.get("scale", 4)
        ny, nx = shape
        raise MemoryError(
            f"this run needs about {format_bytes(needed)} of memory ({method}, {n} frame"
            f"{'s' if n != 1 else ''} of {nx}x{ny} onto a {nx * scale}x{ny * scale} grid) but "
            f"{format_bytes(available)} is available: {advice}")
    return needed
