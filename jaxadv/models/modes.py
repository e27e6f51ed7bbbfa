"""Explicit model modes, and a pytree `x -> logits` callable for attacks.

Three ways to run a model, always chosen by the caller:

* ``"eval"``: BatchNorm uses its running averages (evaluation, the usual attack mode).
* ``"batch_stats"``: BatchNorm uses the statistics of the current batch, and the running
  averages are *not* written back (attacks during training without polluting the averages).
* ``"train"``: batch statistics, and the updated running averages are returned (training).

Independently, `bn` routes a model built with `aux_bn=True` through its main ("main", the
default: clean samples and inference) or auxiliary ("aux") BatchNorms; the mode then applies to
the routed BatchNorms only, so `mode="train", bn="aux"` updates the auxiliary statistics alone.
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax

from jaxadv.models.layers import check_bn_route

MODES = ("eval", "batch_stats", "train")


def apply_model(model: nn.Module, variables, x: jax.Array, mode: str, bn: str = "main"):
  """Runs `model` on x (B, ...) in `mode` through BatchNorm route `bn`; returns
  `(logits, new_batch_stats)`.

  `new_batch_stats` equals the input statistics except in mode "train". `bn="main"` calls the
  model without a `bn` argument, so any module with `__call__(x, train)` works; `bn="aux"` needs
  a model built with `aux_bn=True`.
  """
  check_bn_route(bn, getattr(model, "aux_bn", False))
  route = {} if bn == "main" else {"bn": bn}
  batch_stats = variables.get("batch_stats", {})
  if mode == "eval":
    return model.apply(variables, x, train=False, **route), batch_stats
  if mode not in MODES:
    raise ValueError(f"unknown model mode {mode!r}; choose one of {list(MODES)}.")
  logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"], **route)
  new_stats = updates.get("batch_stats", {}) if mode == "train" else batch_stats
  return logits, new_stats


@flax.struct.dataclass
class BoundModel:
  """`x -> logits` for a model with fixed variables, mode and BatchNorm route; a pytree, so
  jitted attacks reuse their compilation when only the variables change."""
  model: nn.Module = flax.struct.field(pytree_node=False)
  variables: Any
  mode: str = flax.struct.field(pytree_node=False, default="eval")
  bn: str = flax.struct.field(pytree_node=False, default="main")

  def __call__(self, x: jax.Array) -> jax.Array:
    return apply_model(self.model, self.variables, x, self.mode, self.bn)[0]
