"""Baseline networks: SRCNN (Dong et al. 2016) and VDSR (Kim et al. 2016).

Same convention as the generator (`astrosr.models.srgan`): a coarse patch on
the asinh scale in, a ``scale`` times finer patch on the same scale out. Both
work on the bicubic upsampling of the input, as in their papers.
"""

import keras
from keras import layers

from ._layers import bicubic, check_positive_int, check_scale, conv, small_init

__all__ = ["build_srcnn", "build_vdsr"]


def build_srcnn(scale=4, *, filters=(64, 32), channels=1):
    """SRCNN: three convolutions (9x9, 5x5, 5x5) on the bicubic upsampling.

    The 9-5-5 variant of Dong et al. (2016), ReLU after the first two
    layers; it predicts the fine image itself (no skip), as in the paper.

    Parameters
    ----------
    scale : {1, 2, 4}
        Upsampling factor.
    filters : tuple of int
        Channels of the first two layers.
    channels : int
        Image channels.

    Returns
    -------
    keras.Model
    """
    scale = check_scale(scale)
    f1, f2 = (check_positive_int(f, "filters") for f in filters)
    inp = keras.Input((None, None, check_positive_int(channels, "channels")), name="coarse")
    x = bicubic(inp, scale)
    x = conv(f1, 9, "conv1", activation="relu")(x)
    x = conv(f2, 5, "conv2", activation="relu")(x)
    out = conv(channels, 5, "fine")(x)
    return keras.Model(inp, out, name=f"srcnn_x{scale}")


def build_vdsr(scale=4, *, depth=10, filters=32, channels=1):
    """VDSR: a deep stack of 3x3 convolutions learning the residual from bicubic.

    Parameters
    ----------
    scale : {1, 2, 4}
        Upsampling factor.
    depth : int
        Convolution layers in all (20 in the paper), ReLU after all but the
        last.
    filters : int
        Channels of the hidden layers (64 in the paper).
    channels : int
        Image channels.

    Returns
    -------
    keras.Model
    """
    scale = check_scale(scale)
    depth = check_positive_int(depth, "depth", minimum=2)
    filters = check_positive_int(filters, "filters")
    inp = keras.Input((None, None, check_positive_int(channels, "channels")), name="coarse")
    up = bicubic(inp, scale)
    x = up
    for i in range(depth - 1):
        x = conv(filters, 3, f"conv{i}", activation="relu")(x)
    residual = conv(channels, 3, "tail_conv", kernel_initializer=small_init())(x)
    out = layers.Add(name="fine")([residual, up])
    return keras.Model(inp, out, name=f"vdsr_x{scale}")
