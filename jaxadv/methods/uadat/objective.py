"""UAD-AT (Dong, Qu, Wang, Ong, arXiv 2411.02871): uncertainty-aware distributional adversarial
training, as jaxadv reads it. Reconstructed from the paper's description: no code and no
method section of the paper are public, so every component below is jaxadv's reading of the
one the abstract names, built on public code (DSU, FSU, GradAlign, TRADES) and switchable off.

Per batch (x (B, H, W, C) in [0, 1], y (B,)), with f the classifier and r the reference:

1. attack (TRADES-shaped): x_adv = PGD ascending KL(r_att ‖ softmax(f(x'))) from
   x + 0.001 N(0, I), on frozen parameters in `attack_mode` and without uncertainty layers;
   r_att is the reference (3.) of the attacked model's clean logits, which is p(x) itself when
   the reference is not refined (then this is exactly `trades.trades_attack`).
2. distributional adversaries: S train-mode passes of x_adv through the model with its
   feature-statistics uncertainty layers resampling (`jaxadv.models.uncertainty`, keys
   fold_in(key, 1) split S ways), logits z_s (B, K), s = 1..S; the clean pass comes first, as
   in TRADES, and records the clean statistics when the sampling is clean-guided. Without
   the layers the S passes would coincide, so one plain pass is run (S = 1).
3. reference r (B, K): `reference.refined_reference` of the clean logits, or p(x) =
   softmax(f(x)) when not refined.
4. distribution-to-distribution matching:
       L = mean_i CE(f(x_i), y_i) + β · KL,   KL = mean_s mean_i KL(r_i ‖ softmax(z_s,i))
   (`match_each`; off: KL = mean_i KL(r_i ‖ mean_s softmax(z_s,i)), the samples' mixture,
   which is smaller by Jensen's inequality and equal for S = 1).
5. introspective gradient alignment: L += λ · A(x, x_adv) (`alignment.gradient_alignment`).

Reductions: with the layers off (or noise_scale 0), the reference not refined and the
alignment off, L is TRADES' loss with the same key (exactly with the layers off and S = 1).
The BatchNorm running averages take the clean then each adversarial pass's update; the
alignment's passes do not write them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxadv.attacks import losses
from jaxadv.methods.common import accuracy, frozen_model, train_forward, variables_of
from jaxadv.methods.trades import kl_attack, trades_attack
from jaxadv.methods.uadat import alignment as alignment_lib
from jaxadv.methods.uadat import reference as reference_lib
from jaxadv.models import apply_model
from jaxadv.models import uncertainty as uncertainty_lib

SAMPLE_STREAM = 1  # fold_in constant of the keys of the uncertainty layers


def reference_attack(params, model_state, batch, key, step, *, model, smoothing, eps,
                     step_size, steps, norm="linf", attack_mode="batch_stats",
                     eps_warmup_steps=0):
  """x_adv (B, ...) = PGD ascending KL(r ‖ p(x')) from TRADES' start (`kl_attack`), r the
  refined reference of the attacked model's clean logits (TRADES' attack with r for p(x))."""
  attacker = frozen_model(model, params, model_state, attack_mode)
  reference, _ = reference_lib.refined_reference(attacker(batch["image"]), batch["label"],
                                                 smoothing=smoothing)
  return kl_attack(attacker, batch, key, step, loss=reference_lib.kl_from_reference(reference),
                   eps=eps, step_size=step_size, steps=steps, norm=norm,
                   eps_warmup_steps=eps_warmup_steps)


def clean_pass(model, params, model_state, x, *, record: bool):
  """(clean logits (B, K), model state, the statistics the uncertainty layers saw, {} unless
  `record`): one train-mode pass, the layers not resampling."""
  if not record:
    logits, model_state = train_forward(model, params, model_state, x)
    return logits, model_state, {}
  logits, state = apply_model(model, variables_of(params, model_state), x, "train",
                              collect=(uncertainty_lib.STATS,))
  model_state, statistics = uncertainty_lib.split_statistics(state)
  return logits, model_state, statistics


def sampled_pass(model, params, model_state, x, key, *, guide):
  """(logits (B, K), model state) of one train-mode pass with the uncertainty layers resampling
  from `key`; `guide` the clean statistics of guided layers ({} for none)."""
  variables = variables_of(params, model_state)
  if guide:
    variables = uncertainty_lib.with_guide(variables, guide)
  stream = model.uncertainty.rng_stream
  logits, state = apply_model(model, variables, x, "train", rngs={stream: key}, resample=True)
  return logits, uncertainty_lib.split_statistics(state)[0]


def adversarial_passes(model, params, model_state, x_adv, key, *, samples: int, guide):
  """([z_1, ..., z_S] logits (B, K) each, model state): S resampled passes of x_adv when
  `model` has uncertainty layers, else one plain pass."""
  if getattr(model, "uncertainty", None) is None:
    logits, model_state = train_forward(model, params, model_state, x_adv)
    return [logits], model_state
  outputs = []
  for sample_key in jax.random.split(jax.random.fold_in(key, SAMPLE_STREAM), samples):
    logits, model_state = sampled_pass(model, params, model_state, x_adv, sample_key,
                                       guide=guide)
    outputs.append(logits)
  return outputs, model_state


def mixture_logits(adv_logits) -> jax.Array:
  """log mean_s softmax(z_s), (B, K): the mixture of the samples as logits."""
  stacked = jax.nn.log_softmax(jnp.stack(adv_logits).astype(jnp.float32), axis=-1)
  return jax.nn.logsumexp(stacked, axis=0) - jnp.log(len(adv_logits))


def matching_risk(clean_logits, adv_logits, labels, *, beta, reference=None,
                  match_each=True):
  """`mean CE(f(x), y) + β · KL` (4. of the module docstring) from the clean logits (B, K), the
  S sampled logits (a list of (B, K)), labels (B,) and the reference (B, K) (None: p(x), with
  TRADES' KL of the logits).

  Returns (loss, metrics): loss, accuracy (on the sampled adversaries, mean over samples),
  clean_accuracy, kl.
  """
  if reference is None:
    divergence = lambda logits: losses.kl_divergence(logits, clean_logits)
  else:
    divergence = lambda logits: reference_lib.kl_to_reference(reference, logits)
  if match_each or len(adv_logits) == 1:
    kl = sum(jnp.mean(divergence(logits)) for logits in adv_logits) / len(adv_logits)
  else:
    kl = jnp.mean(divergence(mixture_logits(adv_logits)))
  clean_ce = jnp.mean(losses.cross_entropy(clean_logits, labels))
  loss = clean_ce + beta * kl
  adv_accuracy = [accuracy(logits, labels) for logits in adv_logits]
  return loss, {"loss": loss, "accuracy": sum(adv_accuracy) / len(adv_accuracy),
                "clean_accuracy": accuracy(clean_logits, labels), "kl": kl}


def uadat(params, model_state, batch, key, step, *, model, plain_model, attack, beta,
          samples, refine, smoothing, match_each, lam, align, align_through_clean):
  """The UAD-AT loss of the module docstring; `model` carries the uncertainty layers (or is
  `plain_model` when they are off), `attack(params, model_state, batch, key, step) -> x_adv`.

  Returns (loss, (new_model_state, metrics)): the metrics of `matching_risk`, plus `refined`
  (fraction of rows whose reference is not their own clean softmax) and `alignment` (A) when
  those components are on.
  """
  x, labels = batch["image"], batch["label"]
  x_adv = attack(params, model_state, batch, key, step)
  layers = getattr(model, "uncertainty", None)
  guided = layers is not None and layers.guided
  clean_logits, new_state, guide = clean_pass(model, params, model_state, x, record=guided)
  adv_logits, new_state = adversarial_passes(model, params, new_state, x_adv, key,
                                             samples=samples, guide=guide)
  reference, extra = None, {}
  if refine:
    reference, refined = reference_lib.refined_reference(clean_logits, labels,
                                                         smoothing=smoothing)
    extra["refined"] = jnp.mean(refined)
  loss, metrics = matching_risk(clean_logits, adv_logits, labels, beta=beta,
                                reference=reference, match_each=match_each)
  if align:
    extra["alignment"] = alignment_lib.gradient_alignment(
        plain_model, params, model_state, x, x_adv, labels, through_clean=align_through_clean)
    loss = loss + lam * extra["alignment"]
  return loss, (new_state, dict(metrics, **extra, loss=loss))


def uadat_objective(model, attack, *, uncertainty=None, samples: int = 2, beta: float = 6.0,
                    refine: bool = True, smoothing: float = 0.1, match_each: bool = True,
                    lam: float = 0.2, align: bool = True, align_through_clean: bool = False,
                    attack_mode: str = "batch_stats", eps_warmup_steps: int = 0):
  """UAD-AT of `model` as an objective `(params, model_state, batch, key, step) -> (loss,
  (new_model_state, metrics))`.

  Args:
    model: the classifier (a model of the zoo with the field `uncertainty` when `uncertainty`
      is given; its variables are those of the plain model, which evaluation uses).
    attack: mapping with eps, step_size, steps, norm of the training attack.
    uncertainty: the `jaxadv.models.Uncertainty` of the layers (points, p, guided,
      noise_scale, rng_stream), or None: no layers, one plain adversarial pass.
    samples: S >= 1, resampled passes of x_adv (2.).
    beta: β >= 0, weight of the matching KL (4.).
    refine, smoothing: the refined reference (3.) and its label smoothing in [0, 1].
    match_each: average the KL over the samples (True) or take it of their mixture (4.).
    lam, align, align_through_clean: λ >= 0 and the gradient alignment (5.).
    attack_mode, eps_warmup_steps: as for `jaxadv.methods.build`.

  Raises:
    ValueError: for a model without the insertion points `uncertainty` names.
  """
  plain_model = model
  if uncertainty is not None:
    available = getattr(model, "uncertainty_points", ())
    try:
      uncertainty.resolve(available)
    except ValueError as error:
      raise ValueError(f"{str(error)[:-1]} (model {type(model).__name__}).") from None
    model = model.clone(uncertainty=uncertainty)
  keywords = dict(model=plain_model, eps=attack["eps"], step_size=attack["step_size"],
                  steps=attack["steps"], norm=attack["norm"], attack_mode=attack_mode,
                  eps_warmup_steps=eps_warmup_steps)
  attack_fn = (functools.partial(reference_attack, smoothing=smoothing, **keywords) if refine
               else functools.partial(trades_attack, **keywords))
  return functools.partial(uadat, model=model, plain_model=plain_model, attack=attack_fn,
                           beta=beta, samples=samples, refine=refine, smoothing=smoothing,
                           match_each=match_each, lam=lam, align=align,
                           align_through_clean=align_through_clean)
