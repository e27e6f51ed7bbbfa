"""Pieces the methods share: the forward pass in train mode, the inner attack with its eps
warm-up, metrics, and the checks of config groups.

Every objective has the signature of `jaxadv.methods.base` (`(params, model_state, batch, key,
step) -> (loss, (model_state, metrics))`); these helpers take and return `model_state`, the
dict of every mutable collection of the model (`{"batch_stats": ...}`, or `{}`).
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp

from jaxadv.attacks import losses, pgd
from jaxadv.models import BoundModel, apply_model

# Floor of the squared norms in `masked_cosine`: norms >= 1e-6, so the gradient's (|a| |b|)^2
# >= 1e-24 stays a normal float32 (a 1e-12 floor underflows there and gives 0/0 = NaN).
_TINY_SQUARE = 1e-12


def variables_of(params, model_state) -> dict:
  """The Flax variables {"params": params, **model_state}."""
  return {"params": params, **model_state}


def train_forward(model, params, model_state, x, *, bn: str = "main", rngs=None):
  """Logits of x (B, ...) in train mode through BatchNorm route `bn` (`rngs` for stochastic
  layers), and the updated model state."""
  return apply_model(model, variables_of(params, model_state), x, "train", bn, rngs)


def risk_of_both(risk, model, params, model_state, batch, x_adv, **options):
  """`risk(clean_logits, adv_logits, labels, **options) -> (loss, metrics)` of the train-mode
  logits (B, K) of batch["image"] and of x_adv: two forward passes as in the papers' code, the
  BatchNorm running averages taking the clean then the adversarial update. Returns
  (loss, (new_model_state, metrics))."""
  clean_logits, model_state = train_forward(model, params, model_state, batch["image"])
  adv_logits, model_state = train_forward(model, params, model_state, x_adv)
  loss, metrics = risk(clean_logits, adv_logits, batch["label"], **options)
  return loss, (model_state, metrics)


def frozen_model(model, params, model_state, mode: str, bn: str = "main") -> BoundModel:
  """`x -> logits` for an inner attack: parameters carry no gradient, the state is not updated;
  `bn` the BatchNorm route (`jaxadv.models.apply_model`)."""
  return BoundModel(model, variables_of(jax.lax.stop_gradient(params), model_state), mode, bn)


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


def attack_keywords(attack, *, attack_mode: str, eps_warmup_steps: int) -> dict:
  """The keywords every training attack takes: eps, step_size, steps, norm of the mapping
  `attack`, with the inner attack's model mode and eps warm-up."""
  return dict(eps=attack["eps"], step_size=attack["step_size"], steps=attack["steps"],
              norm=attack["norm"], attack_mode=attack_mode, eps_warmup_steps=eps_warmup_steps)


def training_attack(context) -> dict:
  """`attack_keywords` of the configured training attack for a `StageContext`: the config's
  `attack` group, `objective.attack_mode`, and `attack.warmup_epochs` in steps of this stage."""
  config = context.config
  return attack_keywords(config.attack, attack_mode=config.objective.attack_mode,
                         eps_warmup_steps=int(config.attack.warmup_epochs *
                                              context.steps_per_epoch))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of rows whose arg-max equals the label; (B, ..., K), (B, ...) -> ()."""
  chex.assert_shape(labels, logits.shape[:-1])
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

  >>> import jax.numpy as jnp
  >>> float(masked_cosine(jnp.array([1., 2., 9.]), jnp.array([2., 4., -9.]),
  ...                     jnp.array([True, True, False])))
  1.0
  """
  chex.assert_equal_shape([a, b, mask])
  mask = mask.astype(a.dtype)
  safe_norm = lambda v: jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(mask * v)), _TINY_SQUARE))
  return jnp.sum(mask * a * b) / (safe_norm(a) * safe_norm(b))


def check_number(group, field: str, *, positive: bool = False) -> None:
  """Raises ValueError("<field> must be ...") unless group[field] is a finite number >= 0
  (> 0 with `positive`)."""
  value = group[field]
  valid = (isinstance(value, (int, float)) and not isinstance(value, bool)
           and math.isfinite(value) and (value > 0 if positive else value >= 0))
  if not valid:
    raise ValueError(f"{field} must be a finite number {'> 0' if positive else '>= 0'}, "
                     f"got {value!r}.")


def check_choice(group, field: str, choices) -> None:
  """Raises ValueError("<field> ... is unknown; choose one of ...") unless group[field] is one
  of `choices`."""
  if group[field] not in choices:
    raise ValueError(f"{field} {group[field]!r} is unknown; choose one of {sorted(choices)}.")
