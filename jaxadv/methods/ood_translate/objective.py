"""The translator's training objective: repair OOD inputs, leave clean ones alone, optionally
fool a PatchGAN.

jaxadv's reconstruction (Amich & Eshete, arXiv 2202.08944; `shared/spec/methods.md` §4, item
1), on pix2pix's losses. For a batch x (B, H, W, C) with labels y, x_ood = the corrupted batch
(`corruptions.ood_batch`, against the frozen classifier f), and the translator T run once in
train mode on the 2B images [x_ood; x] (its BatchNorm sees both kinds):

    L_T = λ₁ · mean|T(x_ood) − x| + λ_id · mean|T(x) − x| + λ_gan · BCE(D(x_ood, T(x_ood)), 1)
    L_D = ½ [BCE(D(x_ood, x), 1) + BCE(D(x_ood, sg T(x_ood)), 0)]          (only when λ_gan > 0)

means over every pixel and channel, BCE on the PatchGAN's logits (pix2pix's "vanilla" GAN
loss, D's loss halved). The objective returns L_T + L_D over the parameters {"translator",
"discriminator"}: L_T sees D's parameters through a stop-gradient and L_D sees T's output
through one, so each network gets exactly its own loss's gradient, and one Adam step updates
both at once. pix2pix alternates (D's step, then G's against the updated D); the simultaneous
update is the common single-optimizer variant, stated here as a difference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxadv.methods.common import accuracy
from jaxadv.methods.ood_translate.corruptions import ood_batch
from jaxadv.models import apply_model

TRANSLATOR, DISCRIMINATOR = "translator", "discriminator"


def part(variables, name: str) -> dict:
  """The Flax variables of network `name` ("translator" or "discriminator") within a stage's
  variables {"params": {name: ...}, "batch_stats": {name: ...}}."""
  return {collection: tree[name] for collection, tree in variables.items() if name in tree}


def _bce(logits: jax.Array, target: float) -> jax.Array:
  """Mean binary cross-entropy of logits (any shape) against a constant target in {0, 1}."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)))


def translator_objective(translator, discriminator, classifier_apply, table, *,
                         l1_weight: float, identity_weight: float, gan_weight: float):
  """The stage objective `(params, model_state, batch, key, step) -> (loss, (model_state,
  metrics))` of L_T + L_D (module docstring). `params` = {"translator"[, "discriminator"]},
  `model_state` = {"batch_stats": {same keys}}; the discriminator is used only when
  `gan_weight` > 0. `classifier_apply` is the frozen classifier (eval mode), `table` the OOD
  sources (`corruptions.sources`). Metrics: "loss", the L1 terms, the GAN losses,
  "ood_accuracy" (the classifier's accuracy on x_ood) and "accuracy" (its accuracy on T(x_ood):
  the translator's repair rate)."""
  def objective(params, model_state, batch, key, step):
    del step
    x, y = batch["image"], batch["label"]
    x_ood = ood_batch(table, classifier_apply, x, y, key)
    variables = {"params": params, **model_state}
    both, new_state = apply_model(translator, part(variables, TRANSLATOR),
                                  jnp.concatenate([x_ood, x]), "train")
    repaired, kept = both[:x.shape[0]], both[x.shape[0]:]
    l1 = jnp.mean(jnp.abs(repaired - x))
    identity = jnp.mean(jnp.abs(kept - x))
    loss = l1_weight * l1 + identity_weight * identity
    states = {"batch_stats": {TRANSLATOR: new_state["batch_stats"]}}
    metrics = {"l1": l1, "identity": identity,
               "ood_accuracy": accuracy(classifier_apply(x_ood), y),
               "accuracy": accuracy(classifier_apply(jax.lax.stop_gradient(repaired)), y)}
    if gan_weight > 0:
      d_vars = part(variables, DISCRIMINATOR)
      pairs_in = jnp.concatenate([x_ood, x_ood])
      pairs_out = jnp.concatenate([x, jax.lax.stop_gradient(repaired)])
      d_logits, d_state = apply_model(discriminator, d_vars, pairs_in, "train", y=pairs_out)
      real, fake = d_logits[:x.shape[0]], d_logits[x.shape[0]:]
      d_loss = 0.5 * (_bce(real, 1.0) + _bce(fake, 0.0))
      frozen = {"params": jax.lax.stop_gradient(d_vars["params"]), **d_state}
      g_logits, _ = apply_model(discriminator, frozen, x_ood, "batch_stats", y=repaired)
      g_gan = _bce(g_logits, 1.0)
      loss = loss + gan_weight * g_gan + d_loss
      states["batch_stats"][DISCRIMINATOR] = d_state["batch_stats"]
      metrics.update(g_gan=g_gan, d_loss=d_loss)
    return loss, (states, dict(metrics, loss=loss))
  return objective
