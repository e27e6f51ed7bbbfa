"""TrainState: everything a training run carries from step to step (a pytree of arrays)."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from jaxadv.models import model_state


@flax.struct.dataclass
class TrainState:
  """step: int32 (); params: any pytree (a Flax "params" collection, or several networks'
  parameters); model_state: every other Flax collection of the model ({"batch_stats": ...},
  or {}); opt_state: optax state; rng: uint32 (2,) base key, folded with the step for each
  step's randomness; ema: None, or the exponential moving average of the variables
  {"params", **model_state}."""
  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  rng: jax.Array
  ema: Any = None


def create(model, tx: optax.GradientTransformation, image_shape, seed: int, *,
           ema: bool = False) -> TrainState:
  """Initialises parameters from `seed` for inputs of shape (H, W, C); with `ema`, the
  moving average starts at the initial variables."""
  init_key, run_key = jax.random.split(jax.random.PRNGKey(seed))
  variables = model.init(init_key, jnp.zeros((1, *image_shape), jnp.float32), train=False)
  return from_variables(variables["params"], model_state(variables), tx, run_key, ema=ema)


def from_variables(params, state_collections, tx: optax.GradientTransformation, rng, *,
                   ema: bool = False) -> TrainState:
  """The step-0 state of `params` and the model state `state_collections` with a fresh `tx`
  state and base key `rng`; with `ema`, the moving average starts at these variables."""
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     model_state=state_collections, opt_state=tx.init(params), rng=rng)
  if not ema:
    return state
  # A copy, not the same buffers: the train step donates the state, and a buffer donated
  # twice (as params and as ema) is invalid.
  return state.replace(ema=jax.tree.map(jnp.copy, raw_variables(state)))


def raw_variables(state: TrainState) -> dict:
  """The current model variables {"params", **model_state}, for `model.apply`."""
  return {"params": state.params, **state.model_state}


def variables(state: TrainState) -> dict:
  """The variables to evaluate: the moving average when the run keeps one, else the current."""
  return raw_variables(state) if state.ema is None else state.ema


def ema_decay_at(decay: float, step):
  """Effective decay at optimizer step t: min(decay, (1 + t) / (10 + t)), so the average
  forgets its random initialisation quickly in the first few hundred steps."""
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def update_ema(state: TrainState, decay: float) -> TrainState:
  """ema <- d * ema + (1 - d) * variables with d = `ema_decay_at(decay, step)`; a no-op when
  the state keeps no average."""
  if state.ema is None:
    return state
  d = ema_decay_at(decay, state.step)
  ema = jax.tree.map(lambda a, v: d * a + (1.0 - d) * v, state.ema, raw_variables(state))
  return state.replace(ema=ema)
