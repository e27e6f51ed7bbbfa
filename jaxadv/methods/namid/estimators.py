"""NAMID's estimator stage: the objective that trains the natural and the adversarial MI
estimator on a frozen, adversarially trained classifier h (Zhou et al., ICML 2022; spec §5).

The estimators (`jaxadv.estimators.MIEstimator`, one module, two sets of variables) score h's
logits against a local input: φ_n against the clean image x, φ_a against the noise
n = x_adv - x. With the per-sample DV estimates of `namid.mi_estimates` over the whole batch
(every other sample is a negative), write Î_N(x') = Î_N(h(x')) and Î_A(x') = Î_A(h(x')) for
x' in {x, x_adv}. Two objectives (`OBJECTIVES`):

"paper" (the default; the paper's Eqs. and the spec), on the selection m of
`jaxadv.methods.namid.objective.selection_mask` (clean-correct and adversarially wrong):

    φ_n maximises  G_N = masked_mean(Î_N(x) - Î_N(x_adv), m)
    φ_a maximises  G_A = masked_mean(Î_A(x_adv) - Î_A(x), m)
    loss = -(G_N + G_A)

"code" (the estimator stage of the authors' code that their target training loads). It splits
the clean-correct samples c into the non-robust ones w = m (attacked wrong) and the robust ones
r (attacked right), and writes cos_S for the cosine of two batch vectors over the set S
(`masked_cosine`), sum_S and mean_S for the masked sum and mean:

    L_n = 5 |cos_w(Î_N(x), Î_N(x_adv))|      - sum_w Î_N(x) / |c|
          + 0.5 (5 |1 - cos_r(Î_N(x), Î_N(x_adv))| - sum_r Î_N(x) / |c|)
    L_a = 5 |cos_w(Î_A(x_adv), Î_A(x))|      - mean_w Î_A(x_adv)
          + 0.5 (8 |1 - cos_r(Î_A(x), Î_A(x_adv))| + 0.1 mean_r Î_A(x_adv))
    loss = L_n + L_a

Each estimator is trained to be large on its own pairing (the natural MI of the clean output,
the adversarial MI of the attacked output), which anchors the estimates' level, and to give
pairings whose batch vectors are aligned on robust samples and orthogonal on non-robust ones:
the pattern NAMID's cosine terms then ask the target to reproduce. A set that is empty drops
its terms; with no clean-correct sample at all, L_n = -mean Î_N(x) and L_a = -mean Î_A(x_adv)
over the batch (as in that code).

In both, the two estimators share no parameters, so the sum trains each on its own terms. x_adv
is the configured PGD against h in eval mode (h is fixed: its parameters, BN statistics and
logits carry no gradient). Empty sets give finite values and gradients (masked means, no NaN);
for "paper" an empty selection gives a loss of 0 and zero gradients.

The objective has the signature of every objective,
`(params, model_state, batch, key, step) -> (loss, (model_state, metrics))`, with
params = {"natural": φ_n params, "adversarial": φ_a params} and no model state, so the
shared train step trains it as NAMID's "estimators" stage.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxadv import numerics
from jaxadv.estimators.mutual_info import DV_VARIANTS
from jaxadv.methods.common import accuracy, masked_cosine, warmed_pgd
from jaxadv.methods.namid.objective import estimate_fn, mi_estimates, selection_mask
from jaxadv.models import BoundModel
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


def gains(mi, mask):
  """(G_N, G_A) of the module docstring: the masked means over `mask` (B,) of
  Î_N(x) - Î_N(x_adv) and Î_A(x_adv) - Î_A(x), from the four (B,) estimates `mi` of
  `namid.mi_estimates`."""
  return (numerics.masked_mean(mi["natural_clean"] - mi["natural_adv"], mask),
          numerics.masked_mean(mi["adversarial_adv"] - mi["adversarial_clean"], mask))


def paper_loss(mi, clean_correct, non_robust):
  """`-(G_N + G_A)` of the "paper" objective (module docstring).

  Args:
    mi: the four (B,) estimates of `namid.mi_estimates`.
    clean_correct: (B,) bool, h(x) right (unused: the paper's objective sees the selection only).
    non_robust: (B,) bool, the selection m (h(x) right, h(x_adv) wrong).
  """
  del clean_correct
  return -sum(gains(mi, non_robust))


def code_loss(mi, clean_correct, non_robust):
  """`L_n + L_a` of the "code" objective (module docstring); arguments as `paper_loss`."""
  robust = clean_correct & ~non_robust
  aligned = lambda a, b, s: jnp.where(jnp.any(s), jnp.abs(1.0 - masked_cosine(a, b, s)), 0.0)
  orthogonal = lambda a, b, s: jnp.abs(masked_cosine(a, b, s))  # 0 for an empty set
  per_clean_correct = lambda v, s: jnp.sum(jnp.where(s, v, 0.0)) / jnp.maximum(
      jnp.sum(clean_correct), 1)
  natural, natural_adv = mi["natural_clean"], mi["natural_adv"]
  adversarial, adversarial_clean = mi["adversarial_adv"], mi["adversarial_clean"]
  natural_loss = (5.0 * orthogonal(natural, natural_adv, non_robust)
                  - per_clean_correct(natural, non_robust)
                  + 0.5 * (5.0 * aligned(natural, natural_adv, robust)
                           - per_clean_correct(natural, robust)))
  adversarial_loss = (5.0 * orthogonal(adversarial, adversarial_clean, non_robust)
                      - numerics.masked_mean(adversarial, non_robust)
                      + 0.5 * (8.0 * aligned(adversarial_clean, adversarial, robust)
                               + 0.1 * numerics.masked_mean(adversarial, robust)))
  any_correct = jnp.any(clean_correct)
  return (jnp.where(any_correct, natural_loss, -jnp.mean(natural))
          + jnp.where(any_correct, adversarial_loss, -jnp.mean(adversarial)))


# objective name -> `(mi, clean_correct, non_robust) -> loss` of the module docstring.
OBJECTIVES = {"paper": paper_loss, "code": code_loss}


def estimator_loss(params, model_state, batch, key, step, *, estimator, classifier, attack,
                   dv_variant, objective):
  """The loss of `objective` (a key of OBJECTIVES) at x_adv = PGD of h (`attack`: eps,
  step_size, steps, norm, eps_warmup_steps of `warmed_pgd`).

  Returns (loss, (model_state, metrics)) with metrics, whatever the objective: loss, the gains
  G_N and G_A of the selection m (natural_gain, adversarial_gain), the masked means natural_mi
  (Î_N(h(x))) and adversarial_mi (Î_A(h(x_adv))) over m, selected (m's fraction of the batch),
  and h's accuracy clean and attacked.
  """
  x, labels = batch["image"], batch["label"]
  x_adv = warmed_pgd(classifier, batch, key, step, **attack)
  out = batch_estimates(estimator, params, classifier, x, x_adv, dv_variant=dv_variant)
  mask = selection_mask(out["clean_logits"], out["adv_logits"], labels)
  clean_correct = jnp.argmax(out["clean_logits"], axis=-1) == labels
  loss = OBJECTIVES[objective](out, clean_correct, mask)
  natural_gain, adversarial_gain = gains(out, mask)
  metrics = {"loss": loss, "natural_gain": natural_gain, "adversarial_gain": adversarial_gain,
             "natural_mi": numerics.masked_mean(out["natural_clean"], mask),
             "adversarial_mi": numerics.masked_mean(out["adversarial_adv"], mask),
             "selected": jnp.mean(mask), "clean_accuracy": accuracy(out["clean_logits"], labels),
             "accuracy": accuracy(out["adv_logits"], labels)}
  return loss, (model_state, metrics)


def init_params(estimator, key, image_shape, num_classes: int) -> dict:
  """{"natural", "adversarial"} parameters of `estimator` for images (H, W, C) and K classes,
  from two independent keys split from `key`."""
  local, logits = jnp.zeros((2, *image_shape), jnp.float32), jnp.zeros((2, num_classes))
  keys = jax.random.split(key, len(ESTIMATORS))
  return {name: estimator.init(k, local, logits)["params"] for name, k in zip(ESTIMATORS, keys)}


def estimator_objective(estimator, classifier: BoundModel, attack, *, dv_variant: str = "exact",
                        objective: str = "paper", eps_warmup_steps: int = 0):
  """`estimator_loss` with everything but (params, model_state, batch, key, step) bound.

  Args:
    estimator: the `MIEstimator` module.
    classifier: the classifier h (a `BoundModel`, usually in "eval" mode); the objective
      differentiates the estimators' parameters only, so h stays fixed.
    attack: mapping with eps, step_size, steps, norm of the PGD that makes x_adv.
    dv_variant: "exact" (the paper's DV, default) or "authors" (the NAMID code's).
    objective: "paper" (default) or "code", the losses of the module docstring.
    eps_warmup_steps: steps over which eps grows from 0 (0: none).

  Raises ValueError for an unknown DV variant or objective.
  """
  check_choice(dv_variant, "dv_variant", DV_VARIANTS)
  check_choice(objective, "estimator objective", OBJECTIVES)
  pgd_options = dict(eps=attack["eps"], step_size=attack["step_size"], steps=attack["steps"],
                     norm=attack["norm"], eps_warmup_steps=eps_warmup_steps)
  return functools.partial(estimator_loss, estimator=estimator, classifier=classifier,
                           attack=pgd_options, dv_variant=dv_variant, objective=objective)
