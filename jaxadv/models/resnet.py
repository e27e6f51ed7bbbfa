"""ResNet-18 for 32x32 inputs (He et al., 2016, CIFAR variant: 3x3 stem, no max-pool)."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxadv.models import uncertainty as uncertainty_lib
from jaxadv.models.conv import conv_layer
from jaxadv.models.layers import Normalize, batch_norm


class BasicBlock(nn.Module):
  """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN projection) shortcut."""
  features: int
  strides: int
  norm: Any
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(conv_layer, use_bias=False, dtype=self.dtype)
    y = conv(self.features, (3, 3), self.strides, padding=1)(x)
    y = nn.relu(self.norm()(y))
    y = conv(self.features, (3, 3), padding=1)(y)
    y = self.norm()(y)
    if x.shape != y.shape:
      x = conv(self.features, (1, 1), self.strides)(x)
      x = self.norm()(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """CIFAR ResNet: 3x3 stem, stages of BasicBlocks, global average pool, linear head.

  Input (B, H, W, C) in [0, 1]; logits (B, num_classes) in float32. `train=True` uses batch
  statistics and returns updated running averages through the `batch_stats` collection;
  `train=False` uses the running averages. With `aux_bn=True` every BatchNorm has an auxiliary
  twin (`layers.AuxBatchNorm`) and `bn="aux"` routes the call through it. `uncertainty` (an
  `uncertainty.Uncertainty`, or None) inserts feature-statistics uncertainty layers after the
  stages "stage1", ... (before pooling for the last), which resample only when called with
  `resample=True` and their rng stream (`jaxadv.models.uncertainty`).
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
    x = Normalize(self.mean, self.std)(x).astype(self.dtype)
    x = conv_layer(self.width, (3, 3), padding=1, use_bias=False, dtype=self.dtype)(x)
    x = nn.relu(norm()(x))
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(self.width * 2**stage, strides, norm, self.dtype)(x)
      x = insert(self.uncertainty_points[stage], x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2))
