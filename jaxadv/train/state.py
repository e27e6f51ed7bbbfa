"""TrainState: everything a training run carries from step to step (a pytree of arrays)."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """step: int32 (); params, batch_stats: Flax collections; opt_state: optax state;
  rng: uint32 (2,) base key, folded with the step for each step's randomness."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array


def create(model, tx: optax.GradientTransformation, image_shape, seed: int) -> TrainState:
  """Initialises parameters from `seed` for inputs of shape (H, W, C)."""
  init_key, run_key = jax.random.split(jax.random.PRNGKey(seed))
  variables = model.init(init_key, jnp.zeros((1, *image_shape), jnp.float32), train=False)
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                    rng=run_key)


def variables(state: TrainState) -> dict:
  """The model variables {"params", "batch_stats"} of a state, for `model.apply`."""
  return {"params": state.params, "batch_stats": state.batch_stats}
