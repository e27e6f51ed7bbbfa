"""ADML training (Lee et al., ICCV 2023): adversarial fine-tuning with a double-ML debiasing loss.

Each batch of B is attacked with PGD on the CE loss (uniform random start; the ADML presets use
10 steps of 2.3·ε/10), then split in two halves: the first b₁ = ⌊B/2⌋ examples and the other
b₂ = B − b₁. Half 1 gets the base adversarial-training loss, half 2 the DML loss:

    L       = L_base(x₁, x₁_adv, y₁) + L_dml(x₂, x₂_adv, y₂)
    L_base  = mean CE(f(x_adv), y)                                   ADML-AT  (base "pgd_at")
            = mean CE(f(x), y) + β · mean KL(p(x) || p(x_adv))        ADML-TRADES ("trades")
            = MART's loss with weight β                               ADML-MART ("mart")
    L_dml   = mean_A[w · (−log(p_t + 1e-3))] + mean_A[w · log(p_w + 1e-3)] + mean CE(f(x), y)

with p = softmax(f(x_adv)), ŷ = argmax p, A = {i : ŷ_i ≠ y_i} (the samples the attack flips),
p_t = p[y], p_w = p[ŷ] and the weight w = sg(1/p_w − 1), or, in jaxadv's θ̂-weighted extension,
w = θ̂[y] for a per-class vector θ̂ (K,) such as the double-ML estimates of
`jaxadv.estimators.dml`. β defaults to 2 (`objective.adml.beta`), the authors' value.

Follows the authors' code (`adml/fast_train_adml_{adv,trades,mart}.py`): one attack of the whole
batch, the half split, four train-mode forward passes in their order (clean then adversarial for
half 1, adversarial then clean for half 2; ADML-AT skips half 1's clean pass), the 1e-3 inside
the logs. One deliberate change: the means over A are masked means (`jaxadv.numerics`), so an
attack that flips no sample of half 2 adds 0 where the authors' code gives NaN.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxadv.attacks import losses
from jaxadv.methods import base_losses
from jaxadv.methods.common import accuracy, train_forward
from jaxadv.methods.pgd_at import pgd_at_attack
from jaxadv.numerics import masked_mean

LOG_FLOOR = 1e-3  # added to p_t and p_w inside the DML logs (authors' code)


def _prob_of(probs, classes):
  """probs[i, classes[i]]; (B, K), (B,) -> (B,)."""
  return jnp.take_along_axis(probs, classes[:, None], axis=-1)[:, 0]


def dml_risk(clean_logits, adv_logits, labels, *, theta=None):
  """ADML's DML loss `L_dml` (module docstring) from logits (B, K) and labels (B,).

  Args:
    clean_logits, adv_logits: f(x) and f(x_adv), (B, K).
    labels: y, (B,).
    theta: None for the weight w = sg(1/p_w − 1), or a (K,) array: w = theta[y].

  Returns (loss, metrics): loss, accuracy (on x_adv), clean_accuracy, flipped (|A| / B).
  """
  adv_logits = adv_logits.astype(jnp.float32)
  probs = jax.nn.softmax(adv_logits, axis=-1)
  predicted = jnp.argmax(adv_logits, axis=-1)
  flipped = predicted != labels
  p_t, p_w = _prob_of(probs, labels), _prob_of(probs, predicted)
  if theta is None:
    weight = jax.lax.stop_gradient(1.0 / p_w - 1.0)
  else:
    weight = jnp.asarray(theta, jnp.float32)[labels]
  loss = (masked_mean(weight * -jnp.log(p_t + LOG_FLOOR), flipped)
          + masked_mean(weight * jnp.log(p_w + LOG_FLOOR), flipped)
          + jnp.mean(losses.cross_entropy(clean_logits, labels)))
  return loss, {"loss": loss, "accuracy": accuracy(adv_logits, labels),
                "clean_accuracy": accuracy(clean_logits, labels),
                "flipped": jnp.mean(flipped.astype(jnp.float32))}


def adml_loss(params, model_state, batch, x_adv, *, model, base, beta, theta=None):
  """`L_base` of the first ⌊B/2⌋ examples plus `dml_risk` of the rest, at a given x_adv.

  Args:
    params, model_state: the model's variables.
    batch: {"image": (B, ...), "label": (B,)}, B >= 2.
    x_adv: the adversarial images, shape of batch["image"].
    model: the Flax module.
    base: "pgd_at", "trades" or "mart" (ADML-AT, ADML-TRADES, ADML-MART).
    beta: the KL weight of TRADES and MART (unused by "pgd_at").
    theta: None for the weight sg(1/p_w − 1), or a sequence of K per-class weights θ̂.

  Returns (loss, (new_model_state, metrics)): loss, accuracy (adversarial, whole batch),
  clean_accuracy (half 2), base_loss, dml_loss, flipped (fraction of half 2 in A).
  """
  size = batch["label"].shape[0]
  base_loss_fn = base_losses.get(base, beta=beta).loss
  if size < 2:
    raise ValueError(f"ADML splits the batch in two halves and needs >= 2 examples, got {size}.")
  half = size // 2
  first = jax.tree.map(lambda a: a[:half], batch)
  second = jax.tree.map(lambda a: a[half:], batch)
  base_loss, (model_state, base_metrics) = base_loss_fn(params, model_state, first,
                                                        x_adv[:half], model=model)
  adv_logits, model_state = train_forward(model, params, model_state, x_adv[half:])
  clean_logits, model_state = train_forward(model, params, model_state, second["image"])
  if theta is not None and len(theta) != adv_logits.shape[-1]:
    raise ValueError(f"theta has {len(theta)} entries but the model has "
                     f"{adv_logits.shape[-1]} classes.")
  dml_loss, dml_metrics = dml_risk(clean_logits, adv_logits, second["label"], theta=theta)
  loss = base_loss + dml_loss
  adv_accuracy = (half * base_metrics["accuracy"] + (size - half) * dml_metrics["accuracy"])
  return loss, (model_state, {
      "loss": loss, "accuracy": adv_accuracy / size,
      "clean_accuracy": dml_metrics["clean_accuracy"], "base_loss": base_loss,
      "dml_loss": dml_loss, "flipped": dml_metrics["flipped"]})


def adml(params, model_state, batch, key, step, *, model, base, beta, theta=None, **attack):
  """The ADML loss at x_adv = `pgd_at_attack` (PGD on CE for every base, as in the authors'
  code); `attack` are that function's keywords. Returns (loss, (new_model_state, metrics))."""
  x_adv = pgd_at_attack(params, model_state, batch, key, step, model=model, **attack)
  return adml_loss(params, model_state, batch, x_adv, model=model, base=base, beta=beta,
                   theta=theta)


def objective(model, *, base: str = "pgd_at", beta: float = 2.0, theta=None, **attack):
  """ADML (base "pgd_at": ADML-AT, "trades", "mart") as an objective; `theta` None or K
  per-class weights; `attack` are the keywords of `pgd_at_attack`."""
  return functools.partial(adml, model=model, base=base, beta=beta,
                           theta=None if theta is None else tuple(theta), **attack)
