"""Building blocks shared by the generator and the baselines."""

import keras
from keras import layers, ops

#: Upsampling factors the networks support (sub-pixel steps of 2).
SCALES = (1, 2, 4)


@keras.saving.register_keras_serializable(package="astrosr")
class PixelShuffle(layers.Layer):
    """Sub-pixel convolution's rearrangement (Shi et al. 2016), ``depth_to_space``.

    Channel ``(i * r + j) * c + k`` of input pixel ``(y, x)`` goes to channel
    ``k`` of output pixel ``(r * y + i, r * x + j)``, as
    ``tf.nn.depth_to_space`` does.

    Parameters
    ----------
    block_size : int
        Upsampling factor ``r``; the input needs ``c * r**2`` channels.
    """

    def __init__(self, block_size=2, **kwargs):
        super().__init__(**kwargs)
        self.block_size = int(block_size)

    def call(self, inputs):
        return ops.depth_to_space(inputs, self.block_size)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        r = self.block_size
        return (b, None if h is None else h * r, None if w is None else w * r, c // r**2)

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}


def check_scale(scale):
    """Validate an upsampling factor and return it as an int."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    return int(scale)


def check_positive_int(value, name, *, minimum=1):
    """Validate an integer option (layer counts, filters)."""
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def bicubic(x, scale, name="bicubic"):
    """Bicubic upsampling of a tensor by ``scale`` (identity for scale 1).

    Half-pixel centres: fine pixel ``q`` samples coarse position
    ``(q + 0.5) / scale - 0.5``, the finer-grid convention of DESIGN.md.
    """
    if scale == 1:
        return x
    return layers.UpSampling2D(scale, interpolation="bicubic", name=name)(x)


def conv(filters, size, name=None, **kwargs):
    """'same'-padded 2-D convolution."""
    return layers.Conv2D(filters, size, padding="same", name=name, **kwargs)


def prelu(name=None):
    """PReLU with one slope per channel, shared over space (any image size)."""
    return layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25), shared_axes=[1, 2],
                        name=name)


def small_init():
    """Initialiser of a last layer: the network starts close to bicubic."""
    return keras.initializers.VarianceScaling(scale=1e-2)
