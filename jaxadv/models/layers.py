"""Layers shared by the model zoo: input normalisation and BatchNorm with an optional auxiliary BN."""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax.numpy as jnp

BN_ROUTES = ("main", "aux")


class Normalize(nn.Module):
  """Per-channel standardisation `(x - mean) / std` of inputs in [0, 1], inside the model.

  Keeping it inside the model means attacks and eps always live in [0, 1] pixel space.
  """
  mean: Sequence[float]
  std: Sequence[float]

  @nn.compact
  def __call__(self, x):
    mean = jnp.asarray(self.mean, x.dtype)
    std = jnp.asarray(self.std, x.dtype)
    return (x - mean) / std


class AuxBatchNorm(nn.Module):
  """Two BatchNorms, `main` and `aux`, each with its own running statistics (mean, var) and
  affine parameters (scale, bias); `route` picks the one that normalises x.

  `BN_route(x) = scale_route * (x - mu) / sqrt(var + epsilon) + bias_route`, where (mu, var) are
  the batch statistics when `use_running_average` is False (and only the routed running averages
  are updated) or route's running averages otherwise. `init` creates both sets of variables
  whatever the route. x: (..., C) -> same shape.
  """
  use_running_average: bool
  route: str = "main"
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    norms = {route: nn.BatchNorm(use_running_average=self.use_running_average,
                                 momentum=self.momentum, epsilon=self.epsilon, dtype=self.dtype,
                                 name=route)
             for route in BN_ROUTES}
    if self.is_initializing():
      for route in BN_ROUTES:
        if route != self.route:
          norms[route](x)
    return norms[self.route](x)


def tie_affine(params):
  """`params` with every `AuxBatchNorm`'s auxiliary scale and bias replaced by the main ones.

  Applying a model to the result runs the aux route with the main BN's affine parameters and
  the aux BN's own statistics: dual BN with a shared affine transform. The gradient of a loss
  of the aux route then reaches the main scale and bias (the aux ones it no longer uses get
  none). Any other parameter is returned as is; a params tree without aux BN is unchanged.

  >>> import jax.numpy as jnp
  >>> bn = {"main": {"scale": jnp.ones(2), "bias": jnp.zeros(2)},
  ...       "aux": {"scale": 3 * jnp.ones(2), "bias": jnp.ones(2)}}
  >>> tied = tie_affine({"conv": {"kernel": jnp.ones(1)}, "bn": bn})
  >>> tied["bn"]["aux"]["scale"].tolist(), tied["conv"]["kernel"].tolist()
  ([1.0, 1.0], [1.0])
  """
  if not isinstance(params, Mapping):
    return params
  tied = {name: tie_affine(value) for name, value in params.items()}
  if set(BN_ROUTES) <= set(tied) and isinstance(tied["main"], Mapping):
    tied["aux"] = {**tied["aux"], **{name: tied["main"][name] for name in ("scale", "bias")
                                       if name in tied["main"]}}
  return tied


def check_bn_route(bn: str, aux_bn: bool) -> None:
  """Raises ValueError unless `bn` is a route of BN_ROUTES that a model with(out) aux BN has."""
  if bn not in BN_ROUTES:
    raise ValueError(f"unknown BatchNorm route bn={bn!r}; choose one of {list(BN_ROUTES)}.")
  if bn == "aux" and not aux_bn:
    raise ValueError("bn='aux' needs a BatchNorm model built with aux_bn=True.")


def batch_norm(*, train: bool, aux_bn: bool, bn: str, dtype: Any = jnp.float32,
               momentum: float = 0.9, epsilon: float = 1e-5) -> Callable[..., nn.Module]:
  """The BatchNorm constructor of a model: `nn.BatchNorm` when `aux_bn` is False (variables
  exactly as without aux BN), else `AuxBatchNorm` routed to `bn` ("main" or "aux").

  `train` selects batch statistics (True) or running averages (False); momentum 0.9 is PyTorch's
  0.1. Raises ValueError for an unknown route, or for "aux" when the model has no aux BN.
  """
  check_bn_route(bn, aux_bn)
  module = functools.partial(AuxBatchNorm, route=bn) if aux_bn else nn.BatchNorm
  return functools.partial(module, use_running_average=not train, momentum=momentum,
                           epsilon=epsilon, dtype=dtype)
