"""astrosr: sharper, finer-sampled images of the sky from telescope data.

The top level is kept light: NumPy, SciPy and Astropy only. TensorFlow, Dask
and matplotlib are imported by the functions that need them, on first use:
``astrosr.SRGAN`` and ``astrosr.SRModel`` load `astrosr.models` (and Keras)
when first looked up (PEP 562).
"""

__version__ = "0.1.0"

from . import geometry, metrics, parallel, psf, simulate  # noqa: E402  (light modules)
from .fusion import fuse  # noqa: E402
from .inference import enhance  # noqa: E402  (imports Keras only when called)
from .pipeline import MultiFrameSR  # noqa: E402  (imports Keras only when run with a model)
from .registration import register, register_stack  # noqa: E402
from .stack import FrameStack  # noqa: E402

__all__ = ["__version__", "geometry", "metrics", "parallel", "psf", "simulate", "FrameStack",
           "register", "register_stack", "fuse", "enhance", "MultiFrameSR", "SRGAN", "SRModel"]

#: Names served lazily from subpackages that import heavy dependencies.
_LAZY = {"SRGAN": "models", "SRModel": "models"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
