"""UAD-AT's refined alignment reference, and the KL divergence from a reference distribution.
Reconstructed from the paper's description (arXiv 2411.02871); not the authors' code.

Adversarial outputs are matched to a reference distribution from the clean domain rather than
blindly to each sample's own clean output. With p_i = softmax(f(x_i)) (B, K), labels y,
c_i = [argmax p_i = y_i] (clean-correct) and n_k = Σ_i c_i [y_i = k] (the correct points of
class k in the batch):

    r_i = p_i                                         if c_i
        = (1/n_{y_i}) Σ_j c_j [y_j = y_i] p_j          elif n_{y_i} > 0   (class-mean softmax)
        = (1 − s) onehot(y_i) + s / K                  otherwise          (label-smoothed)

with s the label smoothing (`objective.uadat.smoothing`, default 0.1). Everything is masks of
fixed shape (no boolean indexing); the batch is the global one, so a sharded step sees the
same classes as a single-device one. The gradient flows through p_i where r_i = p_i (as
TRADES' reference p(x)); the class mean is a target and carries none (jaxadv's choice).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.tree_util import Partial


def label_smoothed(labels: jax.Array, num_classes: int, smoothing: float) -> jax.Array:
  """(1 − s) onehot(y) + s / K, shape (B, K), from labels (B,).

  >>> [round(v, 3) for v in label_smoothed(jnp.array([1]), 4, 0.2)[0].tolist()]
  [0.05, 0.85, 0.05, 0.05]
  """
  return (1.0 - smoothing) * jax.nn.one_hot(labels, num_classes) + smoothing / num_classes


def class_mean_softmax(probs: jax.Array, labels: jax.Array,
                       members: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(means (K, K), counts (K,)): row k is the mean of `probs` (B, K) over the rows i with
  members_i (B,) set and labels_i = k (zeros where there is none), counts[k] their number."""
  weights = jax.nn.one_hot(labels, probs.shape[-1]) * members[:, None].astype(probs.dtype)
  counts = jnp.sum(weights, axis=0)
  return weights.T @ probs / jnp.maximum(counts, 1.0)[:, None], counts


def refined_reference(clean_logits: jax.Array, labels: jax.Array, *,
                      smoothing: float) -> tuple[jax.Array, jax.Array]:
  """The reference r (B, K) of the module docstring from the clean logits (B, K) and labels
  (B,), and the mask (B,) of the rows whose reference is not their own clean softmax."""
  probs = jax.nn.softmax(clean_logits.astype(jnp.float32), axis=-1)
  correct = jnp.argmax(clean_logits, axis=-1) == labels
  means, counts = class_mean_softmax(jax.lax.stop_gradient(probs), labels, correct)
  fallback = jnp.where((counts[labels] > 0)[:, None], means[labels],
                       label_smoothed(labels, probs.shape[-1], smoothing))
  return jnp.where(correct[:, None], probs, fallback), ~correct


def kl_to_reference(reference: jax.Array, logits: jax.Array) -> jax.Array:
  """KL(r ‖ softmax(z)) = Σ_k r_k (log r_k − log softmax(z)_k) per row, (B,), from a reference
  distribution r (B, K) (rows summing to 1; zero entries contribute 0) and logits z (B, K).

  >>> float(kl_to_reference(jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 0.0]]))[0])  # log 2
  0.6931471824645996
  """
  log_q = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  log_r = jnp.log(jnp.where(reference > 0, reference, 1.0))
  return jnp.sum(reference * (log_r - log_q), axis=-1)


def _kl_attack_loss(reference, logits, labels, targets=None):
  del labels, targets
  return kl_to_reference(reference, logits)


def kl_from_reference(reference: jax.Array):
  """The attack loss `(z, labels, targets) -> KL(r ‖ softmax(z))` (B,) of a fixed reference r
  (B, K), held without gradient: a pytree callable, as `jaxadv.attacks.losses.kl_from`."""
  return Partial(_kl_attack_loss, jax.lax.stop_gradient(reference))
