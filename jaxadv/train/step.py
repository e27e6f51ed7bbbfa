"""The step factory: objective + optimizer + mesh -> one jitted, sharded train step."""

from __future__ import annotations

from typing import Callable

import jax
import optax

from jaxadv import sharding
from jaxadv.train import schedules
from jaxadv.train import state as state_lib
from jaxadv.train.state import TrainState


# fold_in constant of the augmentation key: far from the small integers objectives fold in.
AUGMENT_STREAM = 0x617567


def make_train_step(objective: Callable, tx: optax.GradientTransformation, mesh, *,
                    ema_decay: float = 0.0, augment: Callable | None = None) -> Callable:
  """Returns `step(state, batch) -> (state, metrics)` jitted over `mesh`.

  `objective(params, model_state, batch, key, step) -> (loss, (model_state, metrics))`
  (`jaxadv.methods.base`); the step takes its gradient in `params`, applies `tx`, and keys the
  objective with `fold_in(state.rng, state.step)`, so step t's randomness is fixed whatever the
  device count or resumption. The state is replicated and donated (updated in place); the batch
  is split over the data axis. The same code runs on 1 or N devices and on several hosts. When the
  state keeps a moving average (`state.ema`), it is updated with `ema_decay`
  (`jaxadv.train.state.update_ema`). `augment(key, images) -> images`
  (`jaxadv.data.augment`), when given, transforms batch["image"] on device first, keyed by
  `fold_in(key, AUGMENT_STREAM)`: the objective's key is the same with or without it.
  The metrics are the objective's plus `grad_norm`, the global L2 norm of the loss gradient
  (before any clipping in `tx`).
  """
  def step(state: TrainState, batch: dict):
    key = jax.random.fold_in(state.rng, state.step)
    if augment is not None:
      batch = dict(batch, image=augment(jax.random.fold_in(key, AUGMENT_STREAM), batch["image"]))
    grad_fn = jax.value_and_grad(objective, has_aux=True)
    (_, (model_state, metrics)), grads = grad_fn(state.params, state.model_state, batch, key,
                                                 state.step)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(params=params, model_state=model_state, opt_state=opt_state)
    new_state = state_lib.update_ema(new_state, ema_decay).replace(step=state.step + 1)
    return new_state, dict(metrics, grad_norm=optax.tree.norm(grads))

  replicated = sharding.replicated(mesh)
  return jax.jit(step, in_shardings=(replicated, sharding.batch_sharded(mesh)),
                 out_shardings=(replicated, replicated), donate_argnums=(0,))


def make_optimizer(optim, total_steps: int, steps_per_epoch: int):
  """SGD with momentum and the configured schedule; weight decay is added to the gradient
  before momentum, as PyTorch's SGD does. With `optim.grad_clip_norm` c > 0 the loss gradient
  g is first scaled to g * min(1, c / ||g||_2) (global norm over all parameters; weight decay is
  added after, as with PyTorch's `clip_grad_norm_` before `SGD.step`). Returns (tx, schedule)."""
  schedule = schedules.build(optim.schedule, lr=optim.lr, total_steps=total_steps,
                             warmup_steps=int(optim.warmup_epochs * steps_per_epoch),
                             milestones=optim.milestones, decay_factor=optim.decay_factor)
  clip = [optax.clip_by_global_norm(optim.grad_clip_norm)] if optim.grad_clip_norm > 0 else []
  tx = optax.chain(*clip, optax.add_decayed_weights(optim.weight_decay),
                   optax.sgd(schedule, momentum=optim.momentum, nesterov=optim.nesterov))
  return tx, schedule
