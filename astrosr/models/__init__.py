"""Keras networks for super-resolution.

`build_generator` (and its fine-grid form `build_finegrid`) and
`build_discriminator` make the SRGAN networks,
`build_srcnn` and `build_vdsr` the baselines; `SRModel` / `SRGAN` hold a
network with its model card; `astrosr.models.transform` is the intensity
transform they all work on. Only `transform` (NumPy) is imported with the
package: the Keras names load Keras on first use (PEP 562), so data
preparation works without TensorFlow.
"""

from ..progress import quiet_tensorflow, tensorflow_environment
from . import transform

# Before any module of this package imports Keras (and so TensorFlow): its C++
# start-up logging, such as "failed call to cuInit" on every CPU machine.
tensorflow_environment()

__all__ = ["transform", "build_generator", "build_finegrid", "build_discriminator",
           "discriminator_features", "fast_generator",
           "build_srcnn", "build_vdsr", "SRModel", "SRGAN", "available_models", "get_model",
           "ARCHITECTURES", "DEFAULT_MODEL"]

_LAZY = {
    "build_generator": "srgan", "build_finegrid": "srgan", "build_discriminator": "srgan",
    "discriminator_features": "srgan", "fast_generator": "srgan",
    "build_srcnn": "baselines", "build_vdsr": "baselines",
    "SRModel": "model", "SRGAN": "model", "available_models": "model", "get_model": "model",
    "ARCHITECTURES": "model", "DEFAULT_MODEL": "model",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        quiet_tensorflow()  # TensorFlow's first import, without its start-up noise

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
