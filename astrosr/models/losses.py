"""Training losses, on the asinh scale of `astrosr.models.transform` (TensorFlow).

Tensors are ``(batch, h, w, 1)`` on the network scale ``asinh(x / softening)``
unless stated; ``softening`` is one value per sample, shape ``(batch,)``.
"""

import keras
import tensorflow as tf

__all__ = ["pixel_loss", "consistency_loss", "generator_adversarial_loss",
           "discriminator_loss", "r1_penalty", "feature_matching_loss", "VGGContentLoss",
           "observe_fine"]

#: |asinh value| kept by the linear-scale terms: sinh overflows float32 beyond 89.
_SINH_GUARD = 80.0


def _sinh(y):
    # An overflow guard for the loss only (asinh 80 is 3e34 softenings), not a clip of the data.
    return tf.sinh(tf.clip_by_value(y, -_SINH_GUARD, _SINH_GUARD))


def pixel_loss(pred, target, *, linear_weight=1.0, flux_block=8):
    """L1 on the asinh scale plus ``linear_weight`` x L1 of block fluxes on the linear scale.

    The linear term is the mean ``|mean(sinh(pred)) - mean(sinh(target))|``
    over ``flux_block x flux_block`` blocks of fine pixels: flux differences
    in units of the softening (the sky noise). The asinh term weighs faint
    structure; the linear term makes the network keep the flux of bright
    sources. It compares blocks, not pixels: an L1 loss regresses to the
    per-pixel median, and around a point source the truth is zero in almost
    every pixel, so a per-pixel linear L1 teaches the network to erase stars
    (measured: the stage-1 network trained that way kept 31% of a star
    field's flux); the flux of a block is well determined, so its L1 keeps
    it. ``flux_block=1`` gives the per-pixel term. Tensors that are not
    ``(batch, h, w, 1)`` with ``h, w >= flux_block`` use single pixels.

    Returns
    -------
    dict
        ``{"l1_asinh", "l1_linear", "pixel"}`` scalars (``pixel`` the sum).
    """
    l1 = tf.reduce_mean(tf.abs(pred - target))
    lp, lt = _sinh(pred), _sinh(target)
    b = int(flux_block)
    if b > 1 and len(pred.shape) == 4 and min(pred.shape[1], pred.shape[2]) >= b:
        lp = tf.nn.avg_pool2d(lp, b, b, "VALID")
        lt = tf.nn.avg_pool2d(lt, b, b, "VALID")
    lin = tf.reduce_mean(tf.abs(lp - lt))
    return {"l1_asinh": l1, "l1_linear": lin, "pixel": l1 + linear_weight * lin}


def observe_fine(pred, psf, scale):
    """Observe network outputs again: PSF on the fine grid, then ``scale x scale`` block sums.

    Parameters
    ----------
    pred : tensor ``(batch, h, w, 1)``
        Network outputs on the asinh scale (fine values times ``scale**2``).
    psf : tensor ``(batch, k, k)``
        One normalised PSF kernel per sample, sampled on the fine grid.
    scale : int
        Fine pixels per coarse pixel.

    Returns
    -------
    tensor ``(batch, h // scale, w // scale, 1)``
        Expected coarse fluxes in units of each sample's softening.
    """
    lin = _sinh(pred) / float(scale ** 2)
    # One depthwise convolution with the batch as channels: a different kernel per sample.
    x = tf.transpose(lin, [3, 1, 2, 0])
    kernel = tf.transpose(tf.reverse(psf, axis=[1, 2]), [1, 2, 0])[..., None]
    conv = tf.nn.depthwise_conv2d(x, kernel, strides=[1, 1, 1, 1], padding="SAME")
    conv = tf.transpose(conv, [3, 1, 2, 0])
    # Block sum = average pooling x scale**2.
    return tf.nn.avg_pool2d(conv, scale, scale, "VALID") * float(scale ** 2)


def consistency_loss(pred, coarse, variance, psf, softening, scale, *, border=0):
    """Mean chi-square of the re-observed output against the noisy input.

    ``chi2 = (observe_fine(pred) * softening - coarse)**2 / variance``,
    averaged over pixels at least ``border`` coarse pixels from the edge
    (where light from beyond the patch is missing). About 1 for an output
    consistent with the data within the noise.

    Parameters
    ----------
    coarse, variance : tensor ``(batch, h, w, 1)``
        Sky-subtracted input fluxes and their variance (linear units).
    softening : tensor ``(batch,)``
    """
    model = observe_fine(pred, psf, scale) * softening[:, None, None, None]
    chi2 = tf.square(model - coarse) / variance
    if border:
        chi2 = chi2[:, border:-border, border:-border, :]
    return tf.reduce_mean(chi2)


def _bce(logits, label):
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.fill(tf.shape(logits), float(label)), logits=logits))


def generator_adversarial_loss(fake_logits):
    """Non-saturating GAN loss of the generator, ``-log D(G(x))``."""
    return _bce(fake_logits, 1.0)


def discriminator_loss(real_logits, fake_logits, real_label=1.0):
    """Binary cross-entropy of the discriminator on real and generated patches.

    ``real_label`` below 1 is one-sided label smoothing (the generated
    patches' target stays 0).
    """
    return _bce(real_logits, real_label) + _bce(fake_logits, 0.0)


def r1_penalty(discriminator, real):
    """R1 gradient penalty: the mean over real patches of ``||grad_x D(x)||**2``.

    Mescheder et al. (2018): adding ``gamma / 2`` times this to the
    discriminator's loss penalises its slope on the real data only, which
    keeps it from growing sharp around them and makes the adversarial game
    converge locally. ``D(x)`` is the logit. Call it inside the
    discriminator's gradient tape (its gradient is a second derivative).

    Parameters
    ----------
    discriminator : callable
        Patches ``(batch, h, w, c)`` to logits ``(batch, 1)``, each sample's
        logit depending on that sample alone (no batch normalisation).
    real : tensor ``(batch, h, w, c)``
        Real patches.

    Returns
    -------
    tensor
        Scalar, without the factor ``gamma / 2``.
    """
    real = tf.convert_to_tensor(real)
    with tf.GradientTape() as tape:
        tape.watch(real)
        total = tf.reduce_sum(discriminator(real, training=True))  # samples are independent
    grads = tape.gradient(total, real)
    return tf.reduce_mean(tf.reduce_sum(tf.square(grads), axis=list(range(1, len(real.shape)))))


def feature_matching_loss(real_features, fake_features):
    """Mean L1 between discriminator features of real and generated patches.

    The real features are constants for the generator (gradients stop).
    """
    terms = [tf.reduce_mean(tf.abs(tf.stop_gradient(r) - f))
             for r, f in zip(real_features, fake_features, strict=True)]
    return tf.add_n(terms) / len(terms)


class VGGContentLoss:
    """SRGAN's VGG content loss: MSE between VGG19 feature maps, from a local weights file.

    Nothing is downloaded: ``weights`` is the path of a Keras VGG19 weights
    file without the top (``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5``).
    Patches on the asinh scale are mapped to 0-255 grey levels (``20 x``, so
    asinh 0-12.75 spans the range; brighter values are not clipped), copied to
    three channels and preprocessed as VGG19 expects. The feature maps are
    divided by 12.75 as in Ledig et al. (2017).

    Parameters
    ----------
    weights : str or Path
        Local VGG19 weights file.
    layer : str
        Feature layer (``block5_conv4`` is the paper's VGG5,4).
    """

    def __init__(self, weights, *, layer="block5_conv4"):
        from pathlib import Path

        if not Path(weights).is_file():
            raise FileNotFoundError(f"no such VGG19 weights file: {weights}")
        vgg = keras.applications.VGG19(weights=str(weights), include_top=False)
        vgg.trainable = False
        self.layer = layer
        self.model = keras.Model(vgg.input, vgg.get_layer(layer).output)

    def features(self, y):
        """VGG features of patches on the asinh scale."""
        grey = tf.concat([20.0 * y] * 3, axis=-1)
        return self.model(keras.applications.vgg19.preprocess_input(grey), training=False) / 12.75

    def __call__(self, pred, target):
        real = tf.stop_gradient(self.features(target))
        return tf.reduce_mean(tf.square(self.features(pred) - real))
