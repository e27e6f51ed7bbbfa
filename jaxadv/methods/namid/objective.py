"""NAMID (Zhou et al., ICML 2022): adversarial training that keeps the natural and the
adversarial mutual information of the model's output unmoved by the attack.

Two frozen MI estimators (`jaxadv.estimators.MIEstimator`, trained beforehand) score the logits
of the target model f against a local input: the natural estimator φ_n against the clean image
x, the adversarial estimator φ_a against the noise n = x_adv - x. Per sample i (shape (N,)):

    Î_N(x')_i = DV_i(φ_n(local = x,  logits = f(x')))      x' in {x, x_adv}
    Î_A(x')_i = DV_i(φ_a(local = n,  logits = f(x')))

with DV the per-sample Donsker-Varadhan estimate (`dv_per_sample`) over the whole batch (every
other sample is a negative). So the natural pattern x and the noise n are fixed, and only the
output they are paired with changes: that of the clean or of the adversarial image. With the
selection mask m (below) and `cos_m` the cosine of two batch vectors over the selected entries
(`masked_cosine`, safe norms):

    L_mi = |1 - cos_m(Î_N(x_adv), Î_N(x))| + |1 - cos_m(Î_A(x_adv), Î_A(x))|
           + λ · masked_mean(Î_A(x_adv) - Î_N(x_adv), m)
    L    = risk(f(x), f(x_adv), y) + α · L_mi

The risk is CE(f(x_adv), y) for NAMID (attack: PGD-AT's), the TRADES risk for NAMID-T (attack:
TRADES's KL attack) and the MART risk for NAMID-M (attack: PGD-AT's). The selection is that of
the estimator stage and of the authors' target training: m_i = 1 for the samples the current
model classifies correctly when clean and wrongly when attacked, argmax f(x_i) = y_i != argmax
f(x_adv_i), read off the same train-mode logits (no gradient flows through it). The two cosine
terms are 0 for an empty selection (as the authors' code skips L_mi then), and the masked mean
is 0 too, so L is the risk alone.

The estimator variables are bound into the objective (`namid_objective`) and enter it under
`stop_gradient`: the train step differentiates the target parameters only and the estimators
get zero gradient. The local inputs carry no gradient (the estimator detaches them); the logits
do, so the MI terms train f. Follows the authors' code (`train_MIAT.py`, `MI_loss`): α = 5,
both cosine terms, and λ = 0 (`PRESETS["code"]`, with their DV variant); the paper's λ = 0.1
term is `PRESETS["paper"]` (the default). Two deliberate differences to that code: the
selection takes the argmax of the logits (the code's softmax over the batch axis changes the
argmax), and an empty selection is handled inside the jitted loss by masks instead of a Python
branch.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxadv import numerics
from jaxadv.estimators.mutual_info import DV_VARIANTS, dv_per_sample
from jaxadv.methods import base_losses
from jaxadv.methods.common import masked_cosine, risk_of_both
from jaxadv.validation import check_choice, check_nonnegative

# Hyper-parameters of the paper and of the authors' code (splat into `namid_objective`).
PRESETS = {
    "paper": {"alpha": 5.0, "lam": 0.1, "dv_variant": "exact"},
    "code": {"alpha": 5.0, "lam": 0.0, "dv_variant": "authors"},
}


def selection_mask(clean_logits, adv_logits, labels):
  """m (B,) bool: clean-correct and adversarially wrong, `argmax f(x) = y != argmax f(x_adv)`."""
  return ((jnp.argmax(clean_logits, axis=-1) == labels)
          & (jnp.argmax(adv_logits, axis=-1) != labels))


class NamidEstimators(NamedTuple):
  """The two trained MI estimators of NAMID: the module shared by both (an `MIEstimator`), the
  variables of the natural estimator φ_n and of the adversarial one φ_a, and the
  `dv_per_sample` variant they were trained with (`jaxadv.methods.namid` trains and loads
  them)."""
  module: Any
  natural: Any
  adversarial: Any
  dv_variant: str = "exact"


def estimate_fn(estimator, variables, local_inputs, *, dv_variant):
  """`logits (B, K) -> DV_i (B,)` of `estimator` (an `MIEstimator`) with `variables` and the
  local inputs (B, H, W, C) fixed."""
  return lambda logits: dv_per_sample(estimator.apply(variables, local_inputs, logits),
                                      variant=dv_variant)


def mi_estimates(estimate_natural, estimate_adversarial, clean_logits, adv_logits) -> dict:
  """The four per-sample estimates (B,) of NAMID, keyed by estimator and output:

      natural_clean = Î_N(f(x)),       natural_adv = Î_N(f(x_adv)),
      adversarial_clean = Î_A(f(x)),   adversarial_adv = Î_A(f(x_adv)).

  estimate_natural / estimate_adversarial: `logits (B, K) -> (B,)` (`estimate_fn`) of φ_n on
  the clean image and of φ_a on the noise; clean_logits, adv_logits: f(x), f(x_adv), (B, K).
  """
  return {"natural_clean": estimate_natural(clean_logits),
          "natural_adv": estimate_natural(adv_logits),
          "adversarial_clean": estimate_adversarial(clean_logits),
          "adversarial_adv": estimate_adversarial(adv_logits)}


def mi_loss(estimate_natural, estimate_adversarial, clean_logits, adv_logits, mask, *, lam):
  """L_mi of the module docstring and its metrics.

  Args:
    estimate_natural: `logits (B, K) -> Î_N (B,)`, the natural estimator on the clean image.
    estimate_adversarial: `logits (B, K) -> Î_A (B,)`, the adversarial one on the noise.
    clean_logits, adv_logits: f(x), f(x_adv), (B, K).
    mask: the selection m (B,).
    lam: λ, weight of `masked_mean(Î_A(x_adv) - Î_N(x_adv), m)`.

  Returns (L_mi, metrics): cos_natural, cos_adversarial (the two cosines), mi_gap (the masked
  mean) and selected (the fraction of selected samples).
  """
  mi = mi_estimates(estimate_natural, estimate_adversarial, clean_logits, adv_logits)
  cos_natural = masked_cosine(mi["natural_adv"], mi["natural_clean"], mask)
  cos_adversarial = masked_cosine(mi["adversarial_adv"], mi["adversarial_clean"], mask)
  any_selected = jnp.any(mask)
  distance = lambda cos: jnp.where(any_selected, jnp.abs(1.0 - cos), 0.0)
  gap = numerics.masked_mean(mi["adversarial_adv"] - mi["natural_adv"], mask)
  loss = distance(cos_natural) + distance(cos_adversarial) + lam * gap
  return loss, {"cos_natural": cos_natural, "cos_adversarial": cos_adversarial, "mi_gap": gap,
                "selected": jnp.mean(mask)}


def namid_risk(clean_logits, adv_logits, labels, *, base_risk, estimator, natural_variables,
               adversarial_variables, natural_local, adversarial_local, alpha, lam, dv_variant):
  """`base_risk(clean_logits, adv_logits, labels) + α · L_mi`, with L_mi of the natural estimator
  on natural_local = x and the adversarial one on adversarial_local = x_adv - x (B, H, W, C).

  Returns (loss, metrics): the base risk's metrics (its value as "risk"), "mi_loss" = L_mi and
  those of `mi_loss`.
  """
  risk_value, metrics = base_risk(clean_logits, adv_logits, labels)
  estimate = lambda variables, local: estimate_fn(estimator, jax.lax.stop_gradient(variables),
                                                  local, dv_variant=dv_variant)
  mi, mi_metrics = mi_loss(estimate(natural_variables, natural_local),
                           estimate(adversarial_variables, adversarial_local), clean_logits,
                           adv_logits, selection_mask(clean_logits, adv_logits, labels), lam=lam)
  loss = risk_value + alpha * mi
  return loss, dict(metrics, **mi_metrics, loss=loss, risk=risk_value, mi_loss=mi)


def namid(params, model_state, batch, key, step, *, model, attack, **mi_options):
  """The NAMID loss at x_adv = attack(params, model_state, batch, key, step).

  `mi_options`: the keywords of `namid_risk` but the local inputs (base_risk, estimator, its
  two variable sets, alpha, lam, dv_variant). Two train-mode forward passes (x then x_adv, as
  `risk_of_both`). Returns (loss, (new_model_state, metrics)).
  """
  x_adv = attack(params, model_state, batch, key, step)
  return risk_of_both(namid_risk, model, params, model_state, batch, x_adv,
                      natural_local=batch["image"], adversarial_local=x_adv - batch["image"],
                      **mi_options)


def namid_objective(model, attack, *, estimator, natural_variables, adversarial_variables,
                    base: str = "pgd_at", alpha: float = 5.0, lam: float = 0.1,
                    dv_variant: str = "exact", beta: float = 6.0,
                    attack_mode: str = "batch_stats", eps_warmup_steps: int = 0):
  """NAMID (base "pgd_at"), NAMID-T ("trades") or NAMID-M ("mart") as an objective
  `(params, model_state, batch, key, step) -> (loss, (new_model_state, metrics))`.

  Args:
    model: the Flax module being trained.
    attack: mapping with eps, step_size, steps, norm of the training attack.
    estimator: the `MIEstimator` module of both estimators (same width and convolutions).
    natural_variables, adversarial_variables: the trained variables of φ_n and φ_a, frozen.
    base: a base loss of `jaxadv.methods.base_losses` (NAMES).
    alpha, lam: α and λ (defaults: the paper's; `**PRESETS["code"]` for the authors' code).
    dv_variant: the `dv_per_sample` variant, that the estimators were trained with.
    beta: the TRADES / MART weight (unused by "pgd_at").
    attack_mode, eps_warmup_steps: as for `jaxadv.methods.build`.

  Raises:
    ValueError: for an unknown base or DV variant, or alpha, lam, beta not finite and >= 0.
  """
  check_choice(dv_variant, "dv_variant", DV_VARIANTS)
  for name, value in (("alpha", alpha), ("lam", lam), ("beta", beta)):
    check_nonnegative(value, name)
  chosen = base_losses.get(base, beta=beta)
  attack_fn = functools.partial(
      chosen.attack, model=model, eps=attack["eps"], step_size=attack["step_size"],
      steps=attack["steps"], norm=attack["norm"], attack_mode=attack_mode,
      eps_warmup_steps=eps_warmup_steps)
  return functools.partial(namid, model=model, attack=attack_fn, base_risk=chosen.risk,
                           estimator=estimator, natural_variables=natural_variables,
                           adversarial_variables=adversarial_variables, alpha=alpha, lam=lam,
                           dv_variant=dv_variant)
