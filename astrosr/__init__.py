"""astrosr: sharper, finer-sampled images of the sky from telescope data.

The top level is kept light: NumPy, SciPy and Astropy only. TensorFlow, Dask
and matplotlib are imported by the functions that need them, on first use.
"""

__version__ = "0.1.0"

from . import psf, simulate  # noqa: E402  (light modules)
from .fusion import fuse  # noqa: E402
from .registration import register, register_stack  # noqa: E402

__all__ = ["__version__", "psf", "simulate", "register", "register_stack", "fuse"]
