"""Explicit model modes, and a pytree `x -> logits` callable for attacks.

Three ways to run a model, always chosen by the caller:

* ``"eval"``: BatchNorm uses its running averages (evaluation, the usual attack mode).
* ``"batch_stats"``: BatchNorm uses the statistics of the current batch, and the running
  averages are *not* written back (attacks during training without polluting the averages).
* ``"train"``: batch statistics, and the updated running averages are returned (training).

What the evaluation scores is a *predictor*: a Flax module, run in eval mode, or any function
`variables -> apply_fn` (a defended model assembled from several networks, for instance);
`bind` turns either into `x -> logits`.

Independently, `bn` routes a model built with `aux_bn=True` through its main ("main", the
default: clean samples and inference) or auxiliary ("aux") BatchNorms; the mode then applies to
the routed BatchNorms only, so `mode="train", bn="aux"` updates the auxiliary statistics alone.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax
import flax.linen as nn
import jax

from jaxadv.models.layers import check_bn_route

MODES = ("eval", "batch_stats", "train")


def model_state(variables) -> dict:
  """Every collection of `variables` but "params" (BatchNorm statistics, ...): the mutable state."""
  return {name: value for name, value in variables.items() if name != "params"}


def apply_model(model: nn.Module, variables, x: jax.Array, mode: str, bn: str = "main",
                rngs=None, *, collect: Sequence[str] = (), **call_options):
  """Runs `model` on x (B, ...) in `mode` through BatchNorm route `bn`; returns
  `(logits, new_model_state)`, `new_model_state` being every collection of `variables` but
  "params" (`model_state`).

  `new_model_state` equals the input state except in mode "train". `bn="main"` calls the
  model without a `bn` argument, so any module with `__call__(x, train)` works; `bn="aux"` needs
  a model built with `aux_bn=True`. `rngs` (name -> key) feeds stochastic layers, e.g.
  {"uncertainty": key}; None gives them none. `call_options` are further keywords of the
  model's `__call__` (e.g. `resample=True`, which switches on the feature-statistics uncertainty
  layers of a model built with them: `jaxadv.models.uncertainty`). `collect` names collections
  the call may write besides the state (e.g. `uncertainty.STATS`): they are mutable in every
  mode and returned in `new_model_state` too.
  """
  check_bn_route(bn, getattr(model, "aux_bn", False))
  if mode not in MODES:
    raise ValueError(f"unknown model mode {mode!r}; choose one of {list(MODES)}.")
  options = dict(call_options)
  if bn != "main":
    options["bn"] = bn
  if rngs is not None:
    options["rngs"] = rngs
  state = model_state(variables)
  train = mode != "eval"
  mutable = [*(state if train else ()), *collect]
  if not mutable:  # eval mode, or nothing to update (no BatchNorm)
    return model.apply(variables, x, train=train, **options), state
  logits, updates = model.apply(variables, x, train=train, mutable=mutable, **options)
  kept = updates if mode == "train" else {name: updates[name] for name in collect
                                          if name in updates}
  return logits, {**state, **kept}


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


def bind(predictor, variables):
  """`x -> logits` of `predictor` with `variables`: `BoundModel(predictor, variables, "eval")`
  for a Flax module, `predictor(variables)` for any other callable (a function `variables ->
  apply_fn`, e.g. the OOD->ID defense's). Raises ValueError for anything else.

  >>> import jax.numpy as jnp
  >>> bind(lambda v: (lambda x: x * v["scale"]), {"scale": 2.0})(jnp.ones(2)).tolist()
  [2.0, 2.0]
  """
  if isinstance(predictor, nn.Module):
    return BoundModel(predictor, variables, "eval")
  if callable(predictor):
    return predictor(variables)
  raise ValueError(f"a predictor is a Flax module or a function variables -> apply_fn, got "
                   f"{type(predictor).__name__}.")
