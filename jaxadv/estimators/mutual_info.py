"""Mutual-information estimators between a model's output and a local input (local DIM style).

NAMID (Zhou et al., ICML 2022) measures the MI between the logits z = h(x') of a target model and
a local input x: the clean image (natural MI) or the noise x_adv - x (adversarial MI). An estimator
network scores every (global, local) pair of a batch of N samples:

    u_ijk = <G(z_i), L(x_j)_k>,    i, j in [0, N), k in [0, P)

where G (`GlobalEncoder`) maps the logits z_i (K,) to a D-vector, L (`LocalEncoder`) maps the
local input x_j, an image (H, W, C) or a vector (F,), to P local D-vectors (P = (H // 4)(W // 4)
for an image, P = 1 for a vector), and u (N, N, P) holds the positive (joint) pairs on its
diagonal i = j and the negative (product of marginals) pairs off it.
From u, per sample i (shape (N,), in nats):

    Donsker-Varadhan  I_i = mean_k[u_iik - (logsumexp_{j != i} u_ijk - log(N - 1))]
    Jensen-Shannon    I_i = mean_k[log 2 - softplus(-u_iik)]
                            - mean_{j != i, k}[softplus(u_ijk) - log 2]
    InfoNCE           I_i = mean_k[u_iik - logsumexp_j u_ijk + log N]

The estimator maximises them over its parameters. For any critic T, the population DV objective
E_joint[T] - log E_marginals[e^T] is a lower bound of the MI (the KL between the joint and the
product of the marginals). The per-batch DV estimate above is its plug-in on the batch, and it is
NOT a lower bound: by Jensen, E[log mean_{j != i} e^{u_ijk}] <= log E[e^T], so the estimate is
biased upward, the more so the heavier the tail of e^T (high MI, a sharp critic) and the smaller
N. With the exact log density ratio of a Gaussian pair as critic and N = 128, its mean exceeds
the MI by 0.11 nats at an MI of 1.96 and by 1.15 at 3.11 (docs/estimators.md). JSD estimates
twice the Jensen-Shannon divergence (at most 2 log 2); InfoNCE is a lower bound of the MI in
expectation over batches (the batch is part of its bound), capped at log N. When z and x are
independent the best critic ignores its inputs: DV and InfoNCE are then 0 for any such critic,
JSD for the zero critic. The authors' code computes the DV negative term as
`logsumexp(u * n_mask, j) - log(n_mask.sum(j))`: the positive score is set to 0 but stays inside
the log-sum-exp, and the normaliser counts the N - 1 negatives
(`dv_per_sample(u, variant="authors")`). It gives
`I_i(authors) = I_i(exact) - mean_k softplus(-logsumexp_{j != i} u_ijk) < I_i(exact)`.

The local input carries no gradient (the authors detach it); the logits do, so a target model can
be trained through the estimate. Every estimate needs N >= 2 (a negative pair per sample).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxadv import numerics
from jaxadv.validation import check_choice

DV_VARIANTS = ("exact", "authors")


def identity_like(key, shape, dtype=jnp.float32):
  """Kernel (in, out) with ones on its diagonal and uniform(-0.01, 0.01) elsewhere: the linear
  shortcut of a residual block starts as a noisy copy of its input (as in the DIM code)."""
  noise = jax.random.uniform(key, shape, dtype, -0.01, 0.01)
  eye = jnp.eye(*shape, dtype=bool)
  return jnp.where(eye, jnp.ones(shape, dtype), noise)


class ResidualBlock1x1(nn.Module):
  """`LayerNorm(W2 relu(W1 v) + b2 + S v)` on the last axis: a 1x1-conv residual block.

  v: (..., C_in) -> (..., width). W1 and the shortcut S carry no bias; S starts identity-like.
  The BatchNorm that the authors' code puts after W1 (and after each convolution of the local
  encoder) is left out, so that the estimator is a pure function of its parameters (no batch
  statistics to carry or to leak between samples).
  """
  width: int

  @nn.compact
  def __call__(self, v):
    hidden = nn.relu(nn.Dense(self.width, use_bias=False, name="hidden")(v))
    nonlinear = nn.Dense(self.width, name="out")(hidden)
    shortcut = nn.Dense(self.width, use_bias=False, kernel_init=identity_like, name="shortcut")(v)
    return nn.LayerNorm(epsilon=1e-5)(nonlinear + shortcut)


class LocalEncoder(nn.Module):
  """conv 4x4/2 -> 64, ReLU, conv 4x4/2 -> 128, ReLU, `ResidualBlock1x1(width)`; for vectors,
  dense -> 64, ReLU, dense -> 128, ReLU, `ResidualBlock1x1(width)`.

  Images x: (N, H, W, C) -> local vectors (N, H // 4, W // 4, width) with two convolutions; 8x8
  for 32x32. One convolution (padding 1) per entry of `conv_features`, the spec's (64, 128) by
  default; each halves H and W (rounding down). Vectors x: (N, F) -> (N, width), one Dense
  layer per entry of `conv_features` in place of the convolutions (a vector has no locations).
  """
  width: int = 2048
  conv_features: tuple[int, ...] = (64, 128)

  @nn.compact
  def __call__(self, x):
    for features in self.conv_features:
      if x.ndim == 2:
        x = nn.relu(nn.Dense(features)(x))
      else:
        x = nn.relu(nn.Conv(features, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)))(x))
    return ResidualBlock1x1(self.width)(x)


class GlobalEncoder(nn.Module):
  """`ResidualBlock1x1(width)` of the logits: z (N, K) -> global vectors (N, width)."""
  width: int = 2048

  @nn.compact
  def __call__(self, z):
    return ResidualBlock1x1(self.width)(z)


class MIEstimator(nn.Module):
  """A local and a global encoder of the same width, returning the score tensor u (N, N, P).

  `u[i, j, k] = <GlobalEncoder(logits)_i, LocalEncoder(stop_gradient(local_inputs))_{j, k}>`.
  local_inputs: floating, any range (the clean image or the noise x_adv - x), either images
  (N, H, W, C) with H, W >= 4, giving P = (H // 4)(W // 4) locations, or vectors (N, F), giving
  P = 1 (the dense branch of `LocalEncoder`); logits: (N, K). Raises ValueError for other ranks
  or dtypes, or different batch sizes. Feed u to `dv_per_sample`, `jsd_per_sample` or
  `infonce_per_sample`.

  `score_clip` tau > 0 bounds the critic smoothly, u <- tau * tanh(u / tau), so |u| < tau and
  every exact-DV and InfoNCE estimate lies in (-2 tau, 2 tau) (the clipped critic of SMILE,
  Song & Ermon, ICLR 2020, here with tanh so that gradients stay smooth); 0 leaves u unbounded.
  """
  width: int = 2048
  conv_features: tuple[int, ...] = (64, 128)
  score_clip: float = 0.0

  @nn.compact
  def __call__(self, local_inputs, logits):
    _check_inputs(local_inputs, logits)
    local = LocalEncoder(self.width, self.conv_features)(jax.lax.stop_gradient(local_inputs))
    local = local.reshape(local.shape[0], -1, self.width)
    u = jnp.einsum("id,jkd->ijk", GlobalEncoder(self.width)(logits), local)
    return self.score_clip * jnp.tanh(u / self.score_clip) if self.score_clip > 0 else u


def _check_inputs(local_inputs, logits) -> None:
  """Static checks of the estimator's inputs (shapes and dtypes; values may be traced)."""
  for name, value, ranks in (("local_inputs", local_inputs, (2, 4)), ("logits", logits, (2,))):
    if getattr(value, "ndim", None) not in ranks or not jnp.issubdtype(value.dtype, jnp.floating):
      raise ValueError(f"{name} must be a floating array of rank {' or '.join(map(str, ranks))}, "
                       f"got {getattr(value, 'dtype', type(value).__name__)} of shape "
                       f"{tuple(getattr(value, 'shape', ()))}.")
  if local_inputs.shape[0] != logits.shape[0]:
    raise ValueError(f"local_inputs (shape {tuple(local_inputs.shape)}) and logits (shape "
                     f"{tuple(logits.shape)}) must have the same batch size.")
  if local_inputs.ndim == 4 and min(local_inputs.shape[1:3]) < 4:
    raise ValueError(f"local_inputs must be at least 4x4 pixels (two stride-2 convolutions), got "
                     f"shape {tuple(local_inputs.shape)}.")


def _check_scores(u) -> int:
  """Checks u is a floating (N, N, P) score tensor with N >= 2 and returns N."""
  if getattr(u, "ndim", None) != 3 or u.shape[0] != u.shape[1]:
    raise ValueError(f"scores u must have shape (N, N, P), got {tuple(getattr(u, 'shape', ()))}.")
  if not jnp.issubdtype(u.dtype, jnp.floating):
    raise ValueError(f"scores u must be a floating array, got dtype {u.dtype}.")
  n = u.shape[0]
  if n < 2:
    raise ValueError(f"an MI estimate needs a batch of N >= 2 samples (each sample's negatives "
                     f"are the other samples), got N = {n}.")
  return n


def _positive(u):
  """The joint-pair scores u_iik: (N, N, P) -> (N, P)."""
  return jnp.diagonal(u, axis1=0, axis2=1).T


def _is_positive(n: int):
  """(N, N, 1) bool mask of the diagonal i == j, broadcasting over locations."""
  return jnp.eye(n, dtype=bool)[:, :, None]


def dv_per_sample(u, *, variant: str = "exact"):
  """Per-sample Donsker-Varadhan estimate (N,) from scores u (N, N, P).

  The plug-in of the DV objective on the batch: biased upward by Jensen on its log-mean-exp
  term, so not a lower bound of the MI batch by batch (the population objective is one; module
  docstring).

  "exact": `mean_k[u_iik - logsumexp_{j != i} u_ijk + log(N - 1)]`, the positive pair masked out
  of the log-sum-exp. "authors": as in the NAMID code, the positive score is replaced by 0 inside
  the log-sum-exp over all j (normaliser still log(N - 1)); always below "exact".
  Raises ValueError for an unknown variant, a u of the wrong shape, or N < 2.
  """
  check_choice(variant, "variant", DV_VARIANTS)
  n = _check_scores(u)
  fill = -jnp.inf if variant == "exact" else 0.0
  negative = jax.nn.logsumexp(jnp.where(_is_positive(n), fill, u), axis=1) - math.log(n - 1)
  return jnp.mean(_positive(u) - negative, axis=1)


def jsd_per_sample(u):
  """Per-sample Jensen-Shannon estimate (N,) from scores u (N, N, P), at most 2 log 2:

  `mean_k[log 2 - softplus(-u_iik)] - mean_{j != i, k}[softplus(u_ijk) - log 2]` (the f-GAN / DIM
  form; the two log 2 make it 0 for the zero critic). Raises ValueError as `dv_per_sample`.
  """
  n = _check_scores(u)
  negatives = jnp.broadcast_to(~_is_positive(n), u.shape)
  negative = jax.vmap(numerics.masked_mean)(jax.nn.softplus(u), negatives)
  positive = jnp.mean(-jax.nn.softplus(-_positive(u)), axis=1)
  return positive - negative + 2.0 * math.log(2.0)


def infonce_per_sample(u):
  """Per-sample InfoNCE estimate (N,) from scores u (N, N, P), at most log N:

  `mean_k[u_iik - logsumexp_j u_ijk + log N]` (the positive pair inside the log-sum-exp).
  Raises ValueError as `dv_per_sample`.
  """
  n = _check_scores(u)
  return jnp.mean(_positive(u) - jax.nn.logsumexp(u, axis=1), axis=1) + math.log(n)
