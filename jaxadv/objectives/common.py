"""Pieces every training objective shares: the forward pass in train mode, the inner attack
with its eps warm-up, and metrics.

An objective is a pure function

    objective(params, batch_stats, batch, key, step) -> (loss, (new_batch_stats, metrics))

where `batch` = {"image": (B, H, W, C) in [0, 1], "label": (B,)}, `step` is the int32 optimizer
step (for schedules such as an eps warm-up) and `metrics` is a dict of scalars. Objectives are built by `jaxadv.objectives.build`, which binds the model and the
hyper-parameters, so the train step only ever sees this signature.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxadv.attacks import losses, pgd
from jaxadv.models import BoundModel, apply_model

# Floor of the squared norms in `masked_cosine`: norms >= 1e-6, so the gradient's (|a| |b|)^2
# >= 1e-24 stays a normal float32 (a 1e-12 floor underflows there and gives 0/0 = NaN).
_TINY_SQUARE = 1e-12


def train_forward(model, params, batch_stats, x):
  """Logits of x (B, ...) in train mode, and the updated BatchNorm statistics."""
  return apply_model(model, {"params": params, "batch_stats": batch_stats}, x, "train")


def risk_of_both(risk, model, params, batch_stats, batch, x_adv, **options):
  """`risk(clean_logits, adv_logits, labels, **options) -> (loss, metrics)` of the train-mode
  logits (B, K) of batch["image"] and of x_adv: two forward passes as in the papers' code, the
  BatchNorm running averages taking the clean then the adversarial update. Returns
  (loss, (new_batch_stats, metrics))."""
  clean_logits, batch_stats = train_forward(model, params, batch_stats, batch["image"])
  adv_logits, batch_stats = train_forward(model, params, batch_stats, x_adv)
  loss, metrics = risk(clean_logits, adv_logits, batch["label"], **options)
  return loss, (batch_stats, metrics)


def frozen_model(model, params, batch_stats, mode: str) -> BoundModel:
  """`x -> logits` for an inner attack: parameters carry no gradient, BN stats not updated."""
  variables = {"params": jax.lax.stop_gradient(params), "batch_stats": batch_stats}
  return BoundModel(model, variables, mode)


def linear_warmup(value, step, warmup_steps: int):
  """`value * min(1, (step + 1) / warmup_steps)`; `value` itself when warmup_steps is 0."""
  if warmup_steps <= 0:
    return value
  return value * jnp.minimum(1.0, (step + 1) / warmup_steps)


def warmed_pgd(attacker, batch, key, step, *, eps, step_size, steps: int, norm: str,
               eps_warmup_steps: int, **options) -> jax.Array:
  """The training attack: `pgd` of batch["image"] against `attacker` (a `frozen_model`), with
  eps and step size scaled by `linear_warmup(1, step, eps_warmup_steps)`; `options` are
  further `pgd` keywords (loss, random_start, start). Returns x_adv, shape of the images."""
  scale = linear_warmup(1.0, step, eps_warmup_steps)
  return pgd(attacker, batch["image"], batch["label"], key, eps=eps * scale,
             step_size=step_size * scale, steps=steps, norm=norm, **options)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of rows whose arg-max equals the label; (B, K), (B,) -> ()."""
  return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def ce_metrics(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, dict]:
  """Mean cross-entropy over the batch, with {"loss", "accuracy"} metrics."""
  loss = jnp.mean(losses.cross_entropy(logits, labels))
  return loss, {"loss": loss, "accuracy": accuracy(logits, labels)}


def masked_cosine(a: jax.Array, b: jax.Array, mask: jax.Array) -> jax.Array:
  """Cosine of the batch vectors a, b (N,) restricted to the entries where mask (N,) is set:

      cos = sum_i m_i a_i b_i / (||m a|| · ||m b||),   ||v|| = sqrt(max(sum_i v_i², 1e-12))

  The safe norm keeps value and gradient finite: cos is 0, not NaN, when a masked vector is 0
  (an empty mask among others).
  """
  mask = mask.astype(a.dtype)
  safe_norm = lambda v: jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(mask * v)), _TINY_SQUARE))
  return jnp.sum(mask * a * b) / (safe_norm(a) * safe_norm(b))
