"""Vision Transformer for 32x32 inputs (Dosovitskiy et al., 2021): 4x4 patches (64 tokens),
learned position embeddings, pre-LN encoder blocks, mean pooling of the tokens (no class token,
as in big_vision's plain ViT baselines), linear head. No BatchNorm and no dropout."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxadv.models.conv import conv_layer
from jaxadv.models.layers import Normalize


class EncoderBlock(nn.Module):
  """Pre-LN transformer block: `x = x + MHSA(LN(x))`, then `x = x + W2 gelu(W1 LN(x))`.

  x: (B, N, D) -> (B, N, D); attention has `heads` heads of size D / heads, the MLP `mlp_dim`
  hidden units.
  """
  heads: int
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = nn.LayerNorm(dtype=self.dtype)(x)
    x = x + nn.MultiHeadDotProductAttention(self.heads, dtype=self.dtype)(y)
    y = nn.LayerNorm(dtype=self.dtype)(x)
    y = nn.gelu(nn.Dense(self.mlp_dim, dtype=self.dtype)(y))
    return x + nn.Dense(x.shape[-1], dtype=self.dtype)(y)


class ViT(nn.Module):
  """ViT: patch embedding (a `patch` x `patch` conv of stride `patch` to `dim` channels) plus
  learned position embeddings, `depth` EncoderBlocks, final LayerNorm, mean over tokens, Dense.

  Input (B, H, W, C) in [0, 1] with H and W multiples of `patch`; logits (B, num_classes) in
  float32. The position embeddings (1, H W / patch**2, dim) are sized by the input at `init`.
  `train` is accepted for a uniform model interface; the network has no train-mode behaviour.
  Raises ValueError unless dim is a multiple of heads and patch, depth, heads are >= 1.
  """
  num_classes: int = 10
  mean: Sequence[float] = (0.4914, 0.4822, 0.4465)
  std: Sequence[float] = (0.2471, 0.2435, 0.2616)
  patch: int = 4
  dim: int = 192
  depth: int = 12
  heads: int = 3
  mlp_dim: int = 768
  dtype: Any = jnp.float32

  def __post_init__(self):
    if min(self.patch, self.depth, self.heads, self.mlp_dim) < 1 or self.dim % self.heads:
      raise ValueError(f"ViT needs patch, depth, heads, mlp_dim >= 1 and dim a multiple of heads; "
                       f"got patch={self.patch}, depth={self.depth}, heads={self.heads}, "
                       f"mlp_dim={self.mlp_dim}, dim={self.dim}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    if x.shape[1] % self.patch or x.shape[2] % self.patch:
      raise ValueError(f"ViT input height and width must be multiples of patch={self.patch}, "
                       f"got image shape {x.shape[1:]}.")
    x = Normalize(self.mean, self.std)(x).astype(self.dtype)
    x = conv_layer(self.dim, (self.patch, self.patch), self.patch, padding="VALID",
                   dtype=self.dtype)(x)
    x = x.reshape(x.shape[0], -1, self.dim)
    pos = self.param("pos_embedding", nn.initializers.normal(0.02), (1, *x.shape[1:]))
    x = x + pos.astype(self.dtype)
    for _ in range(self.depth):
      x = EncoderBlock(self.heads, self.mlp_dim, self.dtype)(x)
    x = jnp.mean(nn.LayerNorm(dtype=self.dtype)(x), axis=1)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


ViTTiny = functools.partial(ViT, dim=192, depth=12, heads=3, mlp_dim=768)
ViTSmall = functools.partial(ViT, dim=384, depth=12, heads=6, mlp_dim=1536)
