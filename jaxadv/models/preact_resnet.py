"""Pre-activation residual networks for 32x32 inputs (He et al., 2016, "Identity mappings in deep
residual networks"): the block, the shared body, and PreActResNet-18 in the CIFAR form of the
fast-AT and AWP code (3x3 stem, no max-pool, final BN-ReLU before global average pooling)."""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxadv.models import uncertainty as uncertainty_lib
from jaxadv.models.conv import conv_layer
from jaxadv.models.layers import Normalize, batch_norm


class PreActBlock(nn.Module):
  """Pre-activation basic block: `a = relu(BN(x))`, `out = conv3x3(relu(BN(conv3x3(a)))) + s`.

  The shortcut s is x itself when the block keeps shape, else a strided 1x1 conv of `a` (the
  pre-activated input), as in the fast-AT/AWP `PreActBlock` and the TRADES WideResNet block.
  x: (B, H, W, C) -> (B, H / strides, W / strides, features).
  """
  features: int
  strides: int
  norm: Callable[..., nn.Module]
  conv: Callable[..., nn.Module]

  @nn.compact
  def __call__(self, x):
    a = nn.relu(self.norm()(x))
    y = self.conv(self.features, (3, 3), self.strides, padding=1)(a)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.features, (3, 3), padding=1)(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = self.conv(self.features, (1, 1), self.strides)(a)
    return x + y


def preact_features(x: jax.Array, *, stem_width: int, stage_widths: Sequence[int],
                    stage_sizes: Sequence[int], norm: Callable[..., nn.Module],
                    conv: Callable[..., nn.Module],
                    after_stage: Callable[[int, jax.Array], jax.Array] | None = None
                    ) -> jax.Array:
  """Body of a pre-activation network, called inside a compact `__call__`: 3x3 stem conv, stages
  of PreActBlocks (the first block of every stage but the first has stride 2), BN-ReLU, global
  average pool. `after_stage(stage, x) -> x` (0-based stage), when given, transforms each
  stage's output (the uncertainty layers). x: normalised (B, H, W, C) -> features
  (B, stage_widths[-1])."""
  x = conv(stem_width, (3, 3), padding=1)(x)
  for stage, (width, num_blocks) in enumerate(zip(stage_widths, stage_sizes)):
    for block in range(num_blocks):
      x = PreActBlock(width, 2 if stage > 0 and block == 0 else 1, norm, conv)(x)
    if after_stage is not None:
      x = after_stage(stage, x)
  x = nn.relu(norm()(x))
  return jnp.mean(x, axis=(1, 2))


class PreActResNet(nn.Module):
  """CIFAR PreActResNet: stem conv of `width`, stages of widths width * 2**stage.

  Input (B, H, W, C) in [0, 1]; logits (B, num_classes) in float32. `train` picks batch
  statistics (True, running averages updated through `batch_stats`) or running averages (False).
  With `aux_bn=True` every BatchNorm has an auxiliary twin and `bn="aux"` routes through it.
  `uncertainty` (an `uncertainty.Uncertainty`, or None) inserts feature-statistics uncertainty
  layers after the stages "stage1", ... (before the final BN-ReLU), which resample only when
  called with `resample=True` and their rng stream (`jaxadv.models.uncertainty`).
  """
  stage_sizes: Sequence[int]
  num_classes: int = 10
  mean: Sequence[float] = (0.4914, 0.4822, 0.4465)
  std: Sequence[float] = (0.2471, 0.2435, 0.2616)
  width: int = 64
  dtype: Any = jnp.float32
  aux_bn: bool = False
  uncertainty: Any = None

  @property
  def uncertainty_points(self) -> tuple[str, ...]:
    """Where `uncertainty` may insert layers: after each stage."""
    return uncertainty_lib.stage_points(len(self.stage_sizes))

  @nn.compact
  def __call__(self, x, train: bool = False, bn: str = "main", resample: bool = False):
    insert = uncertainty_lib.inserter(self.uncertainty, self.uncertainty_points, resample)
    norm = batch_norm(train=train, aux_bn=self.aux_bn, bn=bn, dtype=self.dtype)
    conv = functools.partial(conv_layer, use_bias=False, dtype=self.dtype)
    x = Normalize(self.mean, self.std)(x).astype(self.dtype)
    widths = [self.width * 2**stage for stage in range(len(self.stage_sizes))]
    x = preact_features(x, stem_width=self.width, stage_widths=widths,
                        stage_sizes=self.stage_sizes, norm=norm, conv=conv,
                        after_stage=lambda stage, z: insert(self.uncertainty_points[stage], z))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


PreActResNet18 = functools.partial(PreActResNet, stage_sizes=(2, 2, 2, 2))
