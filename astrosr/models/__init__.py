"""Keras networks for super-resolution (imports Keras: load it only when needed).

`build_generator` and `build_discriminator` make the SRGAN networks,
`build_srcnn` and `build_vdsr` the baselines; `SRModel` / `SRGAN` hold a
network with its model card; `astrosr.models.transform` is the intensity
transform they all work on.
"""

from . import transform
from .baselines import build_srcnn, build_vdsr
from .model import ARCHITECTURES, DEFAULT_MODEL, SRGAN, SRModel, available_models
from .srgan import build_discriminator, build_generator, discriminator_features

__all__ = ["transform", "build_generator", "build_discriminator", "discriminator_features",
           "build_srcnn", "build_vdsr", "SRModel", "SRGAN", "available_models", "ARCHITECTURES",
           "DEFAULT_MODEL"]
