"""SRGAN generator and discriminator (Ledig et al. 2017), for astronomical images.

All networks of `astrosr.models` share one convention: a coarse patch on the
intensity-transformed scale (`astrosr.models.transform.forward`) goes in, a
patch ``scale`` times finer on the same scale comes out, and the network
learns the residual from the bicubic upsampling of its input. Because the
transform is applied to fluxes per *coarse* pixel area (fine fluxes times
``scale**2``), a smooth sky has the same values on both grids and the bicubic
path is already a good answer; the network adds what bicubic cannot.
"""

import keras
from keras import layers, ops

from ._layers import PixelShuffle, bicubic, check_positive_int, check_scale, conv, prelu, small_init

__all__ = ["build_generator", "build_finegrid", "build_discriminator", "discriminator_features",
           "fast_generator"]


def build_generator(scale=4, *, n_blocks=8, filters=32, batch_norm=False, channels=1, hr_convs=0):
    """The SRGAN generator (SRResNet): residual blocks and sub-pixel upsampling.

    Layout (Ledig et al. 2017, Fig. 4): conv 9x9 + PReLU; ``n_blocks``
    residual blocks (conv 3x3 - [BN] - PReLU - conv 3x3 - [BN], plus the
    block's input); conv 3x3 - [BN] plus the trunk's input (global skip);
    ``log2(scale)`` sub-pixel steps (conv 3x3 to ``4 * filters`` channels,
    `PixelShuffle` by 2, PReLU); ``hr_convs`` conv 3x3 + PReLU on the fine
    grid (ESRGAN's "HR conv", Wang et al. 2018; none in SRGAN); a linear
    conv 9x9. Its output is added to the
    bicubic upsampling of the input, so the network learns a residual.

    Batch normalisation is off by default. Astronomical patches are mostly
    sky with a few sources thousands of times brighter: the statistics of a
    training batch are dominated by whichever bright sources it happens to
    hold, so BN rescales the features of faint structure by an amount that
    depends on the rest of the batch, and its running averages used at
    inference (on whole images, with other source counts) differ from the
    batch statistics it was trained with, which distorts bright sources and
    shifts photometry. EDSR (Lim et al. 2017) removed BN from the SRResNet for
    the same kind of reason (BN limits the range of the features) and
    gained accuracy and memory.

    Parameters
    ----------
    scale : {1, 2, 4}
        Upsampling factor. 1 makes a same-grid refinement network (no
        sub-pixel step).
    n_blocks : int
        Residual blocks (16 in the paper).
    filters : int
        Feature channels (64 in the paper).
    batch_norm : bool
        Put batch normalisation after the convolutions of the blocks, as in
        the paper (see above why not by default).
    channels : int
        Image channels (1 for one band).
    hr_convs : int
        Convolutions on the fine grid before the last layer (0 in SRGAN).

    Returns
    -------
    keras.Model
        Input ``(batch, h, w, channels)`` of any size, output
        ``(batch, scale*h, scale*w, channels)``, both on the asinh scale.
    """
    scale = check_scale(scale)
    inp = keras.Input((None, None, check_positive_int(channels, "channels")), name="coarse")
    x = _coarse_trunk(inp, n_blocks, filters, batch_norm)
    filters = int(filters)
    for i in range(scale.bit_length() - 1):
        x = conv(4 * filters, 3, f"up{i}_conv")(x)
        x = prelu(f"up{i}_prelu")(PixelShuffle(2, name=f"up{i}_shuffle")(x))
    for i in range(check_positive_int(hr_convs, "hr_convs", minimum=0)):
        x = prelu(f"hr{i}_prelu")(conv(filters, 3, f"hr{i}_conv")(x))
    out = _bicubic_residual(x, inp, scale, channels, 9)
    return keras.Model(inp, out, name=f"srresnet_x{scale}")


def build_finegrid(scale=4, *, coarse_blocks=3, coarse_filters=32, fine_blocks=1, fine_filters=8,
                   channels=1):
    """A fine-grid SRGAN generator: a cheap coarse trunk, then residual blocks on the fine grid.

    Layout: the coarse trunk of `build_generator` (conv 9x9 + PReLU,
    ``coarse_blocks`` residual blocks, conv 3x3 plus the trunk's input);
    one sub-pixel step straight to the fine grid (conv 3x3 to
    ``(fine_filters - channels) * scale**2`` channels, `PixelShuffle` by
    ``scale``, PReLU); the bicubic upsampling of the input concatenated to
    these features, making ``fine_filters`` channels, so that the fine-grid
    layers see the image itself; ``fine_blocks`` residual blocks of
    ``fine_filters`` channels on the fine grid; a linear conv 3x3 whose
    output is added to the bicubic upsampling (the network learns a
    residual, as `build_generator` does). No batch normalisation (see
    `build_generator`). The receptive radius is ``6 + 2 * coarse_blocks``
    input pixels plus ``2 * fine_blocks + 1`` fine pixels.

    Working on the fine grid, as VDSR does, lets the network place structure
    at the fine pixels from the upsampled image itself; a pure fine-grid
    network costs ``scale**2`` times as much per layer, so here the fine
    grid has few blocks and few channels and the coarse trunk carries the
    wide, cheap context.

    Parameters
    ----------
    scale : {1, 2, 4}
        Upsampling factor (1: a same-grid refinement network).
    coarse_blocks : int
        Residual blocks on the coarse grid (may be 0).
    coarse_filters : int
        Feature channels on the coarse grid.
    fine_blocks : int
        Residual blocks on the fine grid (may be 0).
    fine_filters : int
        Channels on the fine grid, the bicubic image's included (more than
        ``channels``).
    channels : int
        Image channels.

    Returns
    -------
    keras.Model
        Input ``(batch, h, w, channels)`` of any size, output
        ``(batch, scale*h, scale*w, channels)``, both on the asinh scale.
    """
    scale = check_scale(scale)
    fine_blocks = check_positive_int(fine_blocks, "fine_blocks", minimum=0)
    channels = check_positive_int(channels, "channels")
    fine_filters = check_positive_int(fine_filters, "fine_filters", minimum=channels + 1)
    inp = keras.Input((None, None, channels), name="coarse")
    x = _coarse_trunk(inp, coarse_blocks, coarse_filters, False, names=("coarse_blocks",
                                                                        "coarse_filters"))
    x = conv((fine_filters - channels) * scale ** 2, 3, "up_conv")(x)
    if scale > 1:
        x = PixelShuffle(scale, name="up_shuffle")(x)
    smooth = bicubic(inp, scale)
    x = layers.Concatenate(name="with_bicubic")([prelu("up_prelu")(x), smooth])
    for i in range(fine_blocks):
        x = _residual_block(x, fine_filters, False, f"fine{i}")
    out = _bicubic_residual(x, inp, scale, channels, 3, smooth=smooth)
    return keras.Model(inp, out, name=f"finegrid_x{scale}")


def _coarse_trunk(inp, n_blocks, filters, batch_norm, *, names=("n_blocks", "filters")):
    """The SRResNet trunk: conv 9x9 + PReLU, residual blocks, conv 3x3 [+ BN], global skip."""
    n_blocks = check_positive_int(n_blocks, names[0], minimum=0)
    filters = check_positive_int(filters, names[1])
    head = prelu("head_prelu")(conv(filters, 9, "head_conv")(inp))
    x = head
    for i in range(n_blocks):
        x = _residual_block(x, filters, batch_norm, f"block{i}")
    x = conv(filters, 3, "trunk_conv")(x)
    if batch_norm:
        x = layers.BatchNormalization(name="trunk_bn")(x)
    return layers.Add(name="global_skip")([x, head])


def _bicubic_residual(x, inp, scale, channels, size, *, smooth=None):
    """The last layer (``tail_conv``, small initial weights) added to the bicubic upsampling."""
    residual = conv(channels, size, "tail_conv", kernel_initializer=small_init())(x)
    smooth = bicubic(inp, scale) if smooth is None else smooth
    return layers.Add(name="fine")([residual, smooth])


def fast_generator(network):
    """The generator's inference as a function, its fine-grid tail run on the coarser grid.

    Returns a callable that gives ``network(x, training=...)`` (to float
    rounding) faster on CPU, forward and backward. The last sub-pixel step's
    PReLU and the 9x9 ``tail_conv`` act on the fine grid, where the tail has
    a single output channel; oneDNN runs such a convolution at about a third
    of the speed of the same sum written on the grid before the last
    `PixelShuffle`: there it is a 5x5 convolution from ``4 * filters``
    channels to ``4 * channels`` channels (one per sub-pixel position),
    followed by the shuffle. The rewritten kernel is built from the layers'
    variables at every call, so the function follows training and its
    gradients reach them. Networks without that layout (scale 1,
    ``hr_convs > 0``, `build_finegrid`, whose tail already reads fine-grid
    features, the baselines) are returned as they are.

    Parameters
    ----------
    network : keras.Model
        Made by `build_generator` (or any model).

    Returns
    -------
    callable
        ``f(x, training=False) -> y`` on batches of the asinh scale.
    """
    last = f"up{sum(lay.name.endswith('_shuffle') for lay in network.layers) - 1}"
    layers_by_name = {lay.name: lay for lay in network.layers}
    tail, act = layers_by_name.get("tail_conv"), layers_by_name.get(f"{last}_prelu")
    if tail is None or act is None or tail.input is not act.output:
        return network  # no shuffle, or something between it and the tail
    body = keras.Model(network.input, [network.get_layer(f"{last}_conv").output,
                                       network.get_layer("bicubic").output])
    alpha = act.alpha

    def call(x, training=False):
        pre, smooth = body(x, training=training)
        a = ops.tile(ops.reshape(alpha, (1, 1, 1, -1)), (1, 1, 1, 4))
        pre = ops.where(pre >= 0, pre, a * pre)
        coarse_tail = ops.conv(pre, _subpixel_kernel(tail.kernel), padding="same")
        coarse_tail = coarse_tail + ops.tile(tail.bias, (4,))
        return ops.depth_to_space(coarse_tail, 2) + smooth

    return call


def _subpixel_kernel(kernel):
    """A fine-grid kernel ``(k, k, c_in, c_out)`` (odd ``k``) rewritten to act before a 2x shuffle.

    Fine pixel ``(2y + p, 2x + q)`` of the convolution reads fine pixel
    ``(2y + p + dy, ...)``, which is sub-pixel ``i = (p + dy) mod 2`` of
    coarse pixel ``y + floor((p + dy) / 2)``; so the coarse kernel's tap
    ``u`` for input sub-pixel ``i`` and output sub-pixel ``p`` is the fine
    tap ``dy = 2u + i - p`` (zero beyond the fine kernel). Channel orders are
    those of `PixelShuffle`: ``(i * 2 + j) * c + k``.
    """
    k = int(kernel.shape[0])
    h = k // 2
    m = (h + 1) // 2
    size = 2 * m + 1
    padded = ops.pad(kernel, ((2 * m, 2 * m), (2 * m, 2 * m), (0, 0), (0, 0)))
    rows = []
    for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
        blocks = []
        for p, q in ((0, 0), (0, 1), (1, 0), (1, 1)):
            y0, x0 = i - p + h, j - q + h  # fine taps of coarse tap u = -m are 2(-m) + these
            blocks.append(padded[y0:y0 + 2 * size - 1:2, x0:x0 + 2 * size - 1:2])
        rows.append(ops.concatenate(blocks, axis=3))
    return ops.concatenate(rows, axis=2)


def _residual_block(x, filters, batch_norm, name):
    h = conv(filters, 3, f"{name}_conv1")(x)
    if batch_norm:
        h = layers.BatchNormalization(name=f"{name}_bn1")(h)
    h = prelu(f"{name}_prelu")(h)
    h = conv(filters, 3, f"{name}_conv2")(h)
    if batch_norm:
        h = layers.BatchNormalization(name=f"{name}_bn2")(h)
    return layers.Add(name=f"{name}_add")([x, h])


def build_discriminator(patch_size, *, filters=32, n_levels=4, dense_units=None, batch_norm=False,
                        channels=1):
    """The SRGAN discriminator: strided convolutions and a dense head.

    ``n_levels`` levels of two conv 3x3 + LeakyReLU(0.2) (the second with
    stride 2, halving the image), doubling the channels from ``filters`` at
    each level; then a dense layer + LeakyReLU(0.2) and one logit ("real"
    when positive). The LeakyReLU at the end of each level is named
    ``feature<i>``: `discriminator_features` reads them for feature matching.

    Parameters
    ----------
    patch_size : int
        Side of the (fine, square) patches it judges; the dense head fixes it.
    filters : int
        Channels of the first level (64 in the paper).
    n_levels : int
        Stride-2 levels (4 in the paper).
    dense_units : int, optional
        Width of the dense layer (default ``4 * filters``; 1024 in the paper).
    batch_norm : bool
        Batch normalisation after all convolutions but the first.
    channels : int
        Image channels.

    Returns
    -------
    keras.Model
        Input ``(batch, patch_size, patch_size, channels)`` on the asinh
        scale, output ``(batch, 1)`` logits.
    """
    n_levels = check_positive_int(n_levels, "n_levels")
    filters = check_positive_int(filters, "filters")
    patch_size = check_positive_int(patch_size, "patch_size", minimum=2 ** n_levels)
    dense_units = check_positive_int(dense_units or 4 * filters, "dense_units")
    inp = keras.Input((patch_size, patch_size, check_positive_int(channels, "channels")),
                      name="fine")
    x = inp
    for level in range(n_levels):
        width = filters * 2 ** level
        for stride in (1, 2):
            x = conv(width, 3, f"d{level}_conv{stride}", strides=stride)(x)
            if batch_norm and (level, stride) != (0, 1):
                x = layers.BatchNormalization(name=f"d{level}_bn{stride}")(x)
            name = f"feature{level}" if stride == 2 else None
            x = layers.Activation(leaky_relu, name=name)(x)
    x = layers.Flatten()(x)
    x = layers.Activation(leaky_relu)(layers.Dense(dense_units, name="dense")(x))
    out = layers.Dense(1, name="logit")(x)
    return keras.Model(inp, out, name="discriminator")


@keras.saving.register_keras_serializable(package="astrosr")
def leaky_relu(x):
    """LeakyReLU with slope 0.2, as ``max(x, 0.2 x)``.

    Written with ``maximum`` rather than TensorFlow's LeakyRelu op, whose
    graph fusion fails (harmlessly, but with an error message) when two
    gradient tapes go through the discriminator, as in a GAN step.
    """
    return ops.maximum(x, 0.2 * x)


def discriminator_features(discriminator):
    """A model sharing ``discriminator``'s weights that returns its level features and logit.

    Parameters
    ----------
    discriminator : keras.Model
        Made by `build_discriminator`.

    Returns
    -------
    keras.Model
        Outputs ``[feature0, ..., feature<n-1>, logit]``.
    """
    names = sorted((lay.name for lay in discriminator.layers if lay.name.startswith("feature")),
                   key=lambda n: int(n[len("feature"):]))
    outputs = [discriminator.get_layer(n).output for n in names] + [discriminator.output]
    return keras.Model(discriminator.input, outputs, name="discriminator_features")
