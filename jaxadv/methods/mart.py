"""MART (Wang et al., 2020): misclassification-aware adversarial training.

    BCE(p', y) = -log p'_y - log(1 - max_{k≠y} p'_k)                 p' = softmax(f(x_adv))
    L          = mean_i [ BCE(p'_i, y_i) + β · KL(p(x_i) || p'_i) · (1 - p(x_i)_{y_i}) ]

The boosted CE pushes the true class up and the strongest wrong class down; the KL term
(summed over classes) is weighted towards examples the model misclassifies on clean inputs.
Both p(x) and p' carry gradient, as in the authors' code; log(1 - p'_k) is computed exactly
(a log-sum-exp over the other classes) instead of the code's log(1.0001 - p'_k + 1e-12), and
the weight is 1 - p_y instead of 1.0000001 - p_y. x_adv is PGD-AT's attack (CE loss, uniform
random start; the authors' code starts from x + 0.001·N(0, I)). β defaults to 6
(`objective.mart.beta`; the paper uses 5-6). Follows the paper and the authors' public code.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxadv.attacks import losses
from jaxadv.methods.base import kl_weighted_method
from jaxadv.methods.common import accuracy, risk_of_both
from jaxadv.methods.pgd_at import pgd_at_attack


def _log_one_minus_softmax(logits, classes):
  """`log(1 - softmax(z)_k)` per row for k = classes (B,), as
  `logsumexp_{j≠k} z_j - logsumexp_j z_j` (finite even where p_k rounds to 1)."""
  chosen = jax.nn.one_hot(classes, logits.shape[-1], dtype=bool)
  return (jax.nn.logsumexp(jnp.where(chosen, -jnp.inf, logits), axis=-1)
          - jax.nn.logsumexp(logits, axis=-1))


def boosted_cross_entropy(logits, labels):
  """MART's BCE per example: `-log p_y - log(1 - max_{k≠y} p_k)`; (B, K), (B,) -> (B,)."""
  logits = logits.astype(jnp.float32)
  is_label = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
  runner_up = jnp.argmax(jnp.where(is_label, -jnp.inf, logits), axis=-1)
  return losses.cross_entropy(logits, labels) - _log_one_minus_softmax(logits, runner_up)


def mart_risk(clean_logits, adv_logits, labels, *, beta):
  """MART's loss from clean and adversarial logits (B, K) and labels (B,).

  Returns (loss, metrics): loss, accuracy (on x_adv), clean_accuracy, weighted_kl (the batch
  mean of KL · (1 - p_y)).
  """
  bce = jnp.mean(boosted_cross_entropy(adv_logits, labels))
  clean_probs = jax.nn.softmax(clean_logits.astype(jnp.float32), axis=-1)
  true_prob = jnp.take_along_axis(clean_probs, labels[:, None], axis=-1)[:, 0]
  weighted_kl = jnp.mean(losses.kl_divergence(adv_logits, clean_logits) * (1.0 - true_prob))
  loss = bce + beta * weighted_kl
  return loss, {"loss": loss, "accuracy": accuracy(adv_logits, labels),
                "clean_accuracy": accuracy(clean_logits, labels), "weighted_kl": weighted_kl}


def mart_loss(params, model_state, batch, x_adv, *, model, beta):
  """`mart_risk` of the train-mode logits of x and x_adv; (loss, (new_model_state, metrics))."""
  return risk_of_both(mart_risk, model, params, model_state, batch, x_adv, beta=beta)


def mart(params, model_state, batch, key, step, *, model, beta, **attack):
  """The MART loss at x_adv = `pgd_at_attack`; `attack` are that function's keywords.

  Returns (loss, (new_model_state, metrics)).
  """
  x_adv = pgd_at_attack(params, model_state, batch, key, step, model=model, **attack)
  return mart_loss(params, model_state, batch, x_adv, model=model, beta=beta)


def objective(model, *, beta: float = 6.0, **attack):
  """MART of `model` with weight `beta` as an objective; `attack`: the keywords of
  `pgd_at_attack`."""
  return functools.partial(mart, model=model, beta=beta, **attack)


METHOD = kl_weighted_method("mart", "MART (Wang et al., 2020)", objective)
