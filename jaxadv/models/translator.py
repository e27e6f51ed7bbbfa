"""Image-to-image translator (pix2pix U-Net generator) and PatchGAN discriminator, for the
OOD->ID translation defense (Amich & Eshete, arXiv 2202.08944; `shared/spec/methods.md` §4).

jaxadv's reconstruction from the paper's description; not the authors' code (none is public).
The networks follow pix2pix (`junyanz/pytorch-CycleGAN-and-pix2pix`, `models/networks.py`:
`UnetGenerator`, `UnetSkipConnectionBlock`, `NLayerDiscriminator`, `init_weights`) with
BatchNorm, and differ from it in three stated ways:

* the output is a **sigmoid**, images in [0, 1] (pix2pix ends in tanh for images in [-1, 1];
  (1 + tanh z) / 2 = sigmoid(2z), so only the scale of the last layer differs);
* inputs of any size H x W >= 2 are **reflect-padded** to the next power of two P >= max(H, W)
  and the output is cropped back (pix2pix needs sizes divisible by 2^depth);
* **no dropout**: pix2pix puts Dropout(0.5) only in the repeated 8ngf blocks of depth > 5, of
  which a 32 px input has none and a 64 px input one.

Inside the models, inputs are standardised with mean 0.5 and std 0.5 (`mean`, `std`), which
maps [0, 1] to pix2pix's [-1, 1]. Weights are initialised as pix2pix's `init_weights`: conv
kernels N(0, 0.02²), biases 0, BatchNorm scale N(1, 0.02²) and bias 0. BatchNorm has PyTorch's
momentum 0.1 (Flax 0.9) and eps 1e-5 (`layers.batch_norm`); `train=False` uses the running
averages, so an example's output does not depend on its batch.

Example: a width-2 U-Net keeps the shape of a 3 x 3 image (padded to 4 x 4 inside: 2 levels).
  >>> import jax, jax.numpy as jnp
  >>> x = jnp.full((1, 3, 3, 2), 0.5)
  >>> unet = UNet(features=2)
  >>> y = unet.apply(unet.init(jax.random.PRNGKey(0), x), x)
  >>> y.shape, bool(jnp.all((y >= 0) & (y <= 1))), unet_depth(3, 3)
  ((1, 3, 3, 2), True, 2)
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxadv.models.conv import ConvTranspose, conv_layer
from jaxadv.models.layers import Normalize, batch_norm

WEIGHT_STD = 0.02  # pix2pix's init_gain: conv kernels N(0, 0.02²), BatchNorm scale N(1, 0.02²)
LEAKY_SLOPE = 0.2  # LeakyReLU of pix2pix's down paths and of the PatchGAN


def _bn_scale_init(key, shape, dtype=jnp.float32):
  """BatchNorm scale N(1, WEIGHT_STD²), as pix2pix's `init_weights`."""
  return 1.0 + nn.initializers.normal(WEIGHT_STD)(key, shape, dtype)


def _norm(train: bool, dtype) -> Callable[..., nn.Module]:
  """The BatchNorm constructor of the translator networks: `layers.batch_norm` (momentum 0.9,
  eps 1e-5; running averages when not `train`) with pix2pix's scale initialisation."""
  return functools.partial(batch_norm(train=train, aux_bn=False, bn="main", dtype=dtype),
                           scale_init=_bn_scale_init)


def _check_images(x, what: str) -> None:
  """Raises ValueError unless x is a rank-4 batch of images (B, H, W, C)."""
  if x.ndim != 4:
    raise ValueError(f"{what} takes images (B, H, W, C), got shape {tuple(x.shape)}.")


def unet_depth(height: int, width: int) -> int:
  """Levels of the U-Net for an H x W image: L = ceil(log2(max(H, W))), the halvings from the
  padded size P = 2^L down to 1 x 1 (5 for 28 and 32 px, 6 for 64 px). Raises ValueError for
  an image smaller than 2 px.

  >>> [unet_depth(s, s) for s in (2, 28, 32, 33, 64)]
  [1, 5, 5, 6, 6]
  """
  if min(height, width) < 2:
    raise ValueError(f"UNet needs images of at least 2 x 2 pixels, got {height} x {width}.")
  return (max(height, width) - 1).bit_length()


class UNetBlock(nn.Module):
  """Level `level` of the U-Net (0 = outermost) with every deeper level inside it: pix2pix's
  `UnetSkipConnectionBlock`.

  With c = features * min(2^level, 8) channels inside the level (ngf, 2ngf, 4ngf, 8ngf, 8ngf,
  ...), for x (B, S, S, C):

      down   [LeakyReLU(0.2)] -> conv4x4 stride 2 pad 1 (c, no bias) -> [BN]    (B, S/2, S/2, c)
      inner  the block of level + 1 (absent at the innermost level)        (B, S/2, S/2, 2c)
      up     ReLU -> transposed conv4x4 stride 2 pad 1 (o channels) -> [BN]     (B, S, S, o)
      out    concat(x, up) on channels                                    (B, S, S, C + o)

  with o = `out_features`.

  The outermost level (0) has no LeakyReLU and no BN on its down path, no BN on its up path, a
  bias on its transposed conv, and returns `up` alone; the innermost level (depth - 1) has no
  BN on its down path. Convolutions followed by BN have no bias, as pix2pix's with BatchNorm.
  (pix2pix's LeakyReLU is in place, so its skip carries LeakyReLU(x); the parent's ReLU that
  follows the concatenation makes that the same as x.)

  The transposed conv is `conv.ConvTranspose` (`nn.ConvTranspose(transpose_kernel=True)`'s
  parameters and values, computed phase by phase on CPU) with padding 2 = 4 - 1 - 1: the adjoint
  of the 4x4 stride-2 pad-1 conv of its kernel, PyTorch's `ConvTranspose2d(4, 2, 1)` (a PyTorch
  weight (in, out, 4, 4) is this kernel transposed to (4, 4, out, in)).
  """
  level: int
  depth: int
  features: int
  out_features: int
  norm: Callable[..., nn.Module]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    outermost, innermost = self.level == 0, self.level == self.depth - 1
    channels = self.features * min(2**self.level, 8)
    init = nn.initializers.normal(WEIGHT_STD)
    y = x if outermost else nn.leaky_relu(x, LEAKY_SLOPE)
    y = conv_layer(channels, (4, 4), 2, padding=1, use_bias=False, kernel_init=init,
                   dtype=self.dtype)(y)
    if not (outermost or innermost):
      y = self.norm()(y)
    if not innermost:
      y = UNetBlock(self.level + 1, self.depth, self.features, channels, self.norm,
                    self.dtype)(y)
    y = ConvTranspose(self.out_features, (4, 4), (2, 2), padding=2, use_bias=outermost,
                      kernel_init=init, dtype=self.dtype)(nn.relu(y))
    if outermost:
      return y
    return jnp.concatenate([x, self.norm()(y)], axis=-1)


class UNet(nn.Module):
  """pix2pix U-Net generator T: images (B, H, W, C) in [0, 1] -> images (B, H, W, C) in [0, 1].

  The input is reflect-padded (centred) to P x P, P = 2^L the next power of two >= max(H, W)
  (`unet_depth`), standardised to [-1, 1], passed through L nested `UNetBlock`s that halve the
  resolution down to 1 x 1 and double it back, cropped to H x W and squashed by a sigmoid.
  Reflect padding continues the image instead of framing it with a constant border the
  translator would have to learn to ignore (at 28 px a 2-pixel frame on each side: 240 of the
  1,024 padded pixels). `features` is pix2pix's ngf (64). `train` picks batch statistics
  (True, running averages updated through `batch_stats`) or running averages (False).
  """
  features: int = 64
  mean: Sequence[float] = (0.5,)
  std: Sequence[float] = (0.5,)
  dtype: Any = jnp.float32

  def __post_init__(self):
    if not isinstance(self.features, int) or self.features < 1:
      raise ValueError(f"UNet features (ngf) must be an integer >= 1, got {self.features!r}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False):
    _check_images(x, "UNet")
    height, width, channels = x.shape[1:]
    depth = unet_depth(height, width)
    top, left = (2**depth - height) // 2, (2**depth - width) // 2
    padding = ((0, 0), (top, 2**depth - height - top), (left, 2**depth - width - left), (0, 0))
    y = Normalize(self.mean, self.std)(jnp.pad(x, padding, mode="reflect")).astype(self.dtype)
    y = UNetBlock(0, depth, self.features, channels, _norm(train, self.dtype), self.dtype)(y)
    return nn.sigmoid(y[:, top:top + height, left:left + width].astype(jnp.float32))


class PatchDiscriminator(nn.Module):
  """PatchGAN discriminator D(x, y) (pix2pix's `NLayerDiscriminator`): one real/fake logit per
  patch of the pair (input image x, output image y), both (B, H, W, C) in [0, 1].

  On the channel concatenation (B, H, W, 2C), standardised to [-1, 1], with n = `num_layers`
  (3: the 70 x 70 PatchGAN) and f = `features` (ndf, 64), all kernels 4 x 4 with padding 1:

      conv stride 2 (f, bias) -> LeakyReLU(0.2)                             H/2
      for k = 1 .. n-1: conv stride 2 (f min(2^k, 8)) -> BN -> LeakyReLU(0.2)  H/2^(k+1)
      conv stride 1 (f min(2^n, 8)) -> BN -> LeakyReLU(0.2)                 H/2^n - 1
      conv stride 1 (1, bias)                                             H/2^n - 2

  Output logits (B, H', W', 1) in float32, H' = floor(H / 2^n) - 2 (1 for 28 px, 2 for 32 px);
  at such sizes every patch sees the whole image. Raises ValueError for images smaller than
  3 * 2^n pixels (24 for n = 3), whose output would be empty, or for x and y of other shapes.
  """
  features: int = 64
  num_layers: int = 3
  mean: Sequence[float] = (0.5,)
  std: Sequence[float] = (0.5,)
  dtype: Any = jnp.float32

  def __post_init__(self):
    for name in ("features", "num_layers"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"PatchDiscriminator {name} must be an integer >= 1, got {value!r}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, x, y, train: bool = False):
    _check_images(x, "PatchDiscriminator")
    if x.shape != y.shape:
      raise ValueError(f"PatchDiscriminator compares an input x and an output y of the same "
                       f"shape, got {tuple(x.shape)} and {tuple(y.shape)}.")
    smallest = 3 * 2**self.num_layers
    if min(x.shape[1:3]) < smallest:
      raise ValueError(f"PatchDiscriminator with num_layers={self.num_layers} needs images of at "
                       f"least {smallest} x {smallest} pixels, got {x.shape[1]} x {x.shape[2]}.")
    norm = _norm(train, self.dtype)
    conv = functools.partial(conv_layer, kernel_size=(4, 4), padding=1,
                             kernel_init=nn.initializers.normal(WEIGHT_STD), dtype=self.dtype)
    z = Normalize(self.mean, self.std)(jnp.concatenate([x, y], axis=-1)).astype(self.dtype)
    z = nn.leaky_relu(conv(self.features, strides=2)(z), LEAKY_SLOPE)
    for layer in range(1, self.num_layers + 1):
      strides = 2 if layer < self.num_layers else 1
      z = conv(self.features * min(2**layer, 8), strides=strides, use_bias=False)(z)
      z = nn.leaky_relu(norm()(z), LEAKY_SLOPE)
    return conv(1)(z).astype(jnp.float32)
