"""Wide residual networks (Zagoruyko & Komodakis, 2016) for 32x32 inputs, as read by the TRADES
code: pre-activation (BN-ReLU-conv) blocks, no dropout, He-normal (fan-out) conv initialisation,
final BN-ReLU before global average pooling. WRN-34-10 is the usual adversarial-training model."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxadv.models import uncertainty as uncertainty_lib
from jaxadv.models.conv import conv_layer
from jaxadv.models.layers import Normalize, batch_norm
from jaxadv.models.preact_resnet import preact_features


class WideResNet(nn.Module):
  """WRN-depth-widen_factor: stem conv of 16, three stages of n = (depth - 4) / 6 PreActBlocks of
  widths 16k, 32k, 64k (k = widen_factor), strides 1, 2, 2.

  Input (B, H, W, C) in [0, 1]; logits (B, num_classes) in float32. `train` picks batch
  statistics (True, running averages updated through `batch_stats`) or running averages (False).
  With `aux_bn=True` every BatchNorm has an auxiliary twin and `bn="aux"` routes through it.
  `uncertainty` (an `uncertainty.Uncertainty`, or None) inserts feature-statistics uncertainty
  layers after the stages "stage1", "stage2", "stage3" (before the final BN-ReLU), which
  resample only when called with `resample=True` and their rng stream
  (`jaxadv.models.uncertainty`). Raises ValueError unless depth = 6n + 4 with n >= 1 and
  widen_factor >= 1.
  """
  depth: int = 34
  widen_factor: int = 10
  num_classes: int = 10
  mean: Sequence[float] = (0.4914, 0.4822, 0.4465)
  std: Sequence[float] = (0.2471, 0.2435, 0.2616)
  dtype: Any = jnp.float32
  aux_bn: bool = False
  uncertainty: Any = None

  @property
  def uncertainty_points(self) -> tuple[str, ...]:
    """Where `uncertainty` may insert layers: after each of the three stages."""
    return uncertainty_lib.stage_points(3)

  def __post_init__(self):
    if not isinstance(self.depth, int) or self.depth < 10 or (self.depth - 4) % 6:
      raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, ...), "
                       f"got {self.depth!r}.")
    if not isinstance(self.widen_factor, int) or self.widen_factor < 1:
      raise ValueError(f"WideResNet widen_factor must be an integer >= 1, got "
                       f"{self.widen_factor!r}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False, bn: str = "main", resample: bool = False):
    insert = uncertainty_lib.inserter(self.uncertainty, self.uncertainty_points, resample)
    norm = batch_norm(train=train, aux_bn=self.aux_bn, bn=bn, dtype=self.dtype)
    conv = functools.partial(conv_layer, use_bias=False, dtype=self.dtype,
                             kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"))
    x = Normalize(self.mean, self.std)(x).astype(self.dtype)
    n = (self.depth - 4) // 6
    x = preact_features(x, stem_width=16, stage_widths=[16 * self.widen_factor * 2**stage
                                                        for stage in range(3)],
                        stage_sizes=(n, n, n), norm=norm, conv=conv,
                        after_stage=lambda stage, z: insert(self.uncertainty_points[stage], z))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


WRN34_10 = functools.partial(WideResNet, depth=34, widen_factor=10)
WRN28_10 = functools.partial(WideResNet, depth=28, widen_factor=10)
