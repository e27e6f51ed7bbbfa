"""NAMID's estimator stage: the objective that trains the natural and the adversarial MI
estimator on a frozen, adversarially trained classifier h (Zhou et al., ICML 2022; spec §5).

The estimators (`jaxadv.estimators.MIEstimator`, one module, two sets of variables) are trained
on the samples that h classifies correctly when clean and wrongly when attacked, the selection
m of `jaxadv.objectives.namid.selection_mask`. With the per-sample DV estimates of
`namid.mi_estimates` over the whole batch (every other sample is a negative):

    φ_n maximises  G_N = masked_mean(Î_N(h(x)) - Î_N(h(x_adv)), m)    (local input: x)
    φ_a maximises  G_A = masked_mean(Î_A(h(x_adv)) - Î_A(h(x)), m)    (local input: x_adv - x)
    loss = -(G_N + G_A)

The natural estimator learns to find the clean output's information about the natural pattern
and to miss it in the adversarial output; the adversarial one the reverse for the noise. The two
estimators share no parameters, so the sum trains each on its own term. x_adv is the configured
PGD against h in eval mode (h is fixed: its parameters, BN statistics and logits carry no
gradient). An empty selection gives a loss of 0 and zero gradients (masked means, no NaN).

The objective has the signature of every objective,
`(params, batch_stats, batch, key, step) -> (loss, (batch_stats, metrics))`, with
params = {"natural": φ_n params, "adversarial": φ_a params} and no batch statistics, so the
shared step factory (`jaxadv.train.step.make_train_step`) trains it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxadv import numerics
from jaxadv.estimators.mutual_info import DV_VARIANTS
from jaxadv.models import BoundModel
from jaxadv.objectives.common import accuracy, warmed_pgd
from jaxadv.objectives.namid import estimate_fn, mi_estimates, selection_mask
from jaxadv.validation import check_choice

ESTIMATORS = ("natural", "adversarial")


def batch_estimates(estimator, params, classifier: BoundModel, x, x_adv, *, dv_variant) -> dict:
  """Per-sample estimates of one batch with h = `classifier` fixed.

  Args:
    estimator: the `MIEstimator` module of both estimators.
    params: {"natural": φ_n params, "adversarial": φ_a params}.
    classifier: h, a frozen `x -> logits` (its outputs pass through stop_gradient).
    x, x_adv: clean and attacked images (B, H, W, C).
    dv_variant: the `dv_per_sample` variant.

  Returns the four (B,) estimates of `namid.mi_estimates` and the logits "clean_logits",
  "adv_logits" (B, K).
  """
  clean_logits = jax.lax.stop_gradient(classifier(x))
  adv_logits = jax.lax.stop_gradient(classifier(x_adv))
  estimate = lambda name, local: estimate_fn(estimator, {"params": params[name]}, local,
                                             dv_variant=dv_variant)
  mi = mi_estimates(estimate("natural", x), estimate("adversarial", x_adv - x), clean_logits,
                    adv_logits)
  return dict(mi, clean_logits=clean_logits, adv_logits=adv_logits)


def estimator_loss(params, batch_stats, batch, key, step, *, estimator, classifier, attack,
                   dv_variant):
  """`-(G_N + G_A)` of the module docstring at x_adv = PGD of h (`attack`: eps, step_size, steps,
  norm, eps_warmup_steps of `warmed_pgd`).

  Returns (loss, (batch_stats, metrics)) with metrics: loss, natural_gain (G_N),
  adversarial_gain (G_A), the masked means natural_mi (Î_N(h(x))) and adversarial_mi
  (Î_A(h(x_adv))) of the selection, selected (its fraction of the batch), and h's accuracy
  clean and attacked.
  """
  x, labels = batch["image"], batch["label"]
  x_adv = warmed_pgd(classifier, batch, key, step, **attack)
  out = batch_estimates(estimator, params, classifier, x, x_adv, dv_variant=dv_variant)
  mask = selection_mask(out["clean_logits"], out["adv_logits"], labels)
  natural_gain = numerics.masked_mean(out["natural_clean"] - out["natural_adv"], mask)
  adversarial_gain = numerics.masked_mean(out["adversarial_adv"] - out["adversarial_clean"], mask)
  loss = -(natural_gain + adversarial_gain)
  metrics = {"loss": loss, "natural_gain": natural_gain, "adversarial_gain": adversarial_gain,
             "natural_mi": numerics.masked_mean(out["natural_clean"], mask),
             "adversarial_mi": numerics.masked_mean(out["adversarial_adv"], mask),
             "selected": jnp.mean(mask), "clean_accuracy": accuracy(out["clean_logits"], labels),
             "accuracy": accuracy(out["adv_logits"], labels)}
  return loss, (batch_stats, metrics)


def init_params(estimator, key, image_shape, num_classes: int) -> dict:
  """{"natural", "adversarial"} parameters of `estimator` for images (H, W, C) and K classes,
  from two independent keys split from `key`."""
  local, logits = jnp.zeros((2, *image_shape), jnp.float32), jnp.zeros((2, num_classes))
  keys = jax.random.split(key, len(ESTIMATORS))
  return {name: estimator.init(k, local, logits)["params"] for name, k in zip(ESTIMATORS, keys)}


def estimator_objective(estimator, classifier: BoundModel, attack, *, dv_variant: str = "exact",
                        eps_warmup_steps: int = 0):
  """`estimator_loss` with everything but (params, batch_stats, batch, key, step) bound.

  Args:
    estimator: the `MIEstimator` module.
    classifier: the classifier h (a `BoundModel`, usually in "eval" mode); the objective
      differentiates the estimators' parameters only, so h stays fixed.
    attack: mapping with eps, step_size, steps, norm of the PGD that makes x_adv.
    dv_variant: "exact" (the paper's DV, default) or "authors" (the NAMID code's).
    eps_warmup_steps: steps over which eps grows from 0 (0: none).

  Raises ValueError for an unknown DV variant.
  """
  check_choice(dv_variant, "dv_variant", DV_VARIANTS)
  pgd_options = dict(eps=attack["eps"], step_size=attack["step_size"], steps=attack["steps"],
                     norm=attack["norm"], eps_warmup_steps=eps_warmup_steps)
  return functools.partial(estimator_loss, estimator=estimator, classifier=classifier,
                           attack=pgd_options, dv_variant=dv_variant)
