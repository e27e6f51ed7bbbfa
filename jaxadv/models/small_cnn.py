"""SmallCNN: the 4-conv, 3-dense network used for MNIST in the TRADES line of work."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxadv.models import uncertainty as uncertainty_lib
from jaxadv.models.conv import conv_layer
from jaxadv.models.layers import Normalize


def max_pool_2x2(x):
  """2x2 max-pool with stride 2 (odd trailing rows/columns dropped, as VALID pooling does).

  Written as reshape + max: same values and gradient as `nn.max_pool` except where a window
  holds tied maxima (`jnp.max` splits the gradient among them, `nn.max_pool` gives it all to
  the first; `jaxadv.models.pooling.max_pool` matches the latter), but the gradient is an
  elementwise mask instead of XLA's argmax-and-scatter, 27% faster per gradient step on
  CPU (docs/performance.md). x: (B, H, W, C) -> (B, H // 2, W // 2, C).
  """
  b, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class SmallCNN(nn.Module):
  """conv32-conv32-pool-conv64-conv64-pool-fc200-fc200-fc(num_classes), ReLU, no BatchNorm.

  Input (B, H, W, C) in [0, 1]; output logits (B, num_classes) in float32. `train` is accepted
  for a uniform model interface; the network has no train-mode behaviour. `uncertainty` (an
  `uncertainty.Uncertainty`, or None) inserts feature-statistics uncertainty layers after the
  conv-conv-pool blocks "stage1", "stage2", which resample only when called with
  `resample=True` and their rng stream (`jaxadv.models.uncertainty`).
  """
  num_classes: int = 10
  mean: Sequence[float] = (0.5,)
  std: Sequence[float] = (0.5,)
  width: int = 32
  hidden: int = 200
  dtype: Any = jnp.float32
  uncertainty: Any = None

  @property
  def uncertainty_points(self) -> tuple[str, ...]:
    """Where `uncertainty` may insert layers: after each conv-conv-pool block."""
    return uncertainty_lib.stage_points(2)

  @nn.compact
  def __call__(self, x, train: bool = False, resample: bool = False):
    del train
    insert = uncertainty_lib.inserter(self.uncertainty, self.uncertainty_points, resample)
    x = Normalize(self.mean, self.std)(x).astype(self.dtype)
    conv = lambda features: conv_layer(features, (3, 3), padding="SAME", dtype=self.dtype)
    for point, features in zip(self.uncertainty_points, (self.width, 2 * self.width)):
      x = nn.relu(conv(features)(x))
      x = nn.relu(conv(features)(x))
      x = insert(point, max_pool_2x2(x))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(x))
    x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(x))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
