"""FCN: a small fully-convolutional segmentation network (encoder, one stride-2 level with a
global context branch, decoder with a skip connection), with BatchNorm and the optional
auxiliary BatchNorm."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxadv.models.conv import conv_layer
from jaxadv.models.layers import Normalize, batch_norm


class FCN(nn.Module):
  """Per-pixel classifier: logits (B, H, W, num_classes) in float32 for images (B, H, W, C).

  With w = `width`, H' = ceil(H / 2), W' = ceil(W / 2):

      x (B, H, W, C) in [0, 1] -> Normalize
      s = conv3x3(w)-BN-ReLU                       (B, H, W, w)       the skip features
      h = conv3x3(2w, stride 2)-BN-ReLU            (B, H', W', 2w)
      g = ReLU(Dense(2w)(mean of h over H', W'))   (B, 2w)            global context
      conv3x3(2w)-BN-ReLU of [h, g at every pixel] (B, H', W', 2w)
      transposed conv4x4(w, stride 2), cropped     (B, H, W, w)       (2H' rows -> the first H)
      BN-ReLU, concatenated with s                 (B, H, W, 2w)
      conv3x3(w)-BN-ReLU                           (B, H, W, w)
      conv1x1(num_classes), with bias              (B, H, W, num_classes)

  The global context (as ParseNet's, Liu et al., 2015) lets every pixel see the whole image:
  the convolutions alone see about 14 x 14 pixels, less than a 28-pixel digit, while the label
  of a digit's pixel is the digit's class (`jaxadv.data.mnist_seg`), which without it an ERM
  model barely learnt (mIoU near the background's share alone). The mean is over
  each image's own pixels, so in eval mode an example's output does not depend on its batch.
  Convolutions before a BatchNorm have no bias; they are `conv.conv_layer`s (the transposed
  convolution is Flax's `nn.ConvTranspose`). `train` picks batch statistics (True, running
  averages updated through `batch_stats`) or running averages (False). With `aux_bn=True`
  every BatchNorm has an auxiliary twin and `bn="aux"` routes through it
  (`jaxadv.models.layers.batch_norm`), as in PreActResNet.
  """
  num_classes: int = 11
  mean: Sequence[float] = (0.1307,)
  std: Sequence[float] = (0.3081,)
  width: int = 16
  dtype: Any = jnp.float32
  aux_bn: bool = False

  dense = True  # one prediction per pixel (`jaxadv.models.is_dense`)

  @nn.compact
  def __call__(self, x, train: bool = False, bn: str = "main"):
    norm = batch_norm(train=train, aux_bn=self.aux_bn, bn=bn, dtype=self.dtype)
    conv = functools.partial(conv_layer, use_bias=False, dtype=self.dtype)
    height, width = x.shape[1:3]
    x = Normalize(self.mean, self.std)(x).astype(self.dtype)
    skip = nn.relu(norm()(conv(self.width, (3, 3), padding=1)(x)))
    y = nn.relu(norm()(conv(2 * self.width, (3, 3), 2, padding=1)(skip)))
    context = nn.relu(nn.Dense(2 * self.width, dtype=self.dtype)(jnp.mean(y, axis=(1, 2))))
    y = jnp.concatenate([y, jnp.broadcast_to(context[:, None, None, :], y.shape)], axis=-1)
    y = nn.relu(norm()(conv(2 * self.width, (3, 3), padding=1)(y)))
    y = nn.ConvTranspose(self.width, (4, 4), (2, 2), padding="SAME", use_bias=False,
                         dtype=self.dtype)(y)[:, :height, :width]
    y = jnp.concatenate([nn.relu(norm()(y)), skip], axis=-1)
    y = nn.relu(norm()(conv(self.width, (3, 3), padding=1)(y)))
    return conv_layer(self.num_classes, (1, 1), dtype=self.dtype)(y).astype(jnp.float32)
