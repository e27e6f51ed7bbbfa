"""Per-example losses that attacks maximise.

Every loss maps `logits` (B, K), integer `labels` (B,) and, for targeted losses, integer
`targets` (B,) to one value per example, shape (B,) (`dense_cross_entropy` also takes dense
logits (B, ..., K) and labels (B, ...)). Attacks *ascend* these values: untargeted
losses grow as the true class loses, targeted ones as the target class wins. Attacks sum them
over the batch (so each example's gradient is independent of the batch size); training code
averages them, under a mask where needed.

Notation: z = logits, z_y the true-class logit, z_(1) >= z_(2) >= ... the sorted logits.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.tree_util import Partial

AttackLoss = Callable[..., jax.Array]
_DLR_EPS = 1e-12


def _true_logit(logits, labels):
  return jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]


def _best_other_logit(logits, labels):
  """max_{j != y} z_j, shape (B,)."""
  num_classes = logits.shape[-1]
  masked = jnp.where(jax.nn.one_hot(labels, num_classes, dtype=bool), -jnp.inf, logits)
  return jnp.max(masked, axis=-1)


def _shifted(logits):
  """float32 logits minus their (gradient-free) maximum, so the largest is 0: softmax and its
  log are unchanged, and huge logits (1e10) cannot overflow once XLA fuses the log-sum-exp
  (under `jit` the plain form returned inf and NaN gradients there)."""
  logits = logits.astype(jnp.float32)
  return logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))


def cross_entropy(logits, labels, targets=None):
  """Untargeted CE `-log softmax(z)_y` (ascending it pushes the true class down)."""
  del targets
  return optax.softmax_cross_entropy_with_integer_labels(_shifted(logits), labels)


def dense_cross_entropy(logits, labels, targets=None):
  """CE of every position averaged per example: logits (B, ..., K), labels (B, ...) -> (B,).

  The task loss of dense prediction (segmentation: per-pixel CE, mean over the pixels); for
  classification logits (B, K) it is `cross_entropy`.

  >>> import jax.numpy as jnp
  >>> logits, labels = jnp.zeros((2, 3, 3, 4)), jnp.zeros((2, 3, 3), jnp.int32)
  >>> [round(v, 4) for v in dense_cross_entropy(logits, labels).tolist()]  # log 4 per pixel
  [1.3863, 1.3863]
  """
  del targets
  per_position = cross_entropy(logits, labels)
  return jnp.mean(per_position.reshape(per_position.shape[0], -1), axis=1)


def cross_entropy_targeted(logits, labels, targets):
  """Targeted CE `log softmax(z)_t` (= -CE toward the target t)."""
  del labels
  return -cross_entropy(logits, targets)


def cw_margin(logits, labels, targets=None):
  """Carlini-Wagner margin `max_{j != y} z_j - z_y`; > 0 exactly when misclassified."""
  del targets
  logits = logits.astype(jnp.float32)
  return _best_other_logit(logits, labels) - _true_logit(logits, labels)


def cw_margin_targeted(logits, labels, targets):
  """Targeted margin `z_t - max_{j != t} z_j`; > 0 exactly when the target wins."""
  del labels
  return -cw_margin(logits, targets)


def dlr(logits, labels, targets=None):
  """Difference of logits ratio (Croce & Hein, 2020), shift- and scale-invariant:

      DLR = -(z_y - max_{j != y} z_j) / (z_(1) - z_(3)).
  """
  del targets
  logits = logits.astype(jnp.float32)
  top = jax.lax.top_k(logits, 3)[0]
  margin = _true_logit(logits, labels) - _best_other_logit(logits, labels)
  return -margin / (top[..., 0] - top[..., 2] + _DLR_EPS)


def dlr_targeted(logits, labels, targets):
  """Targeted DLR (Croce & Hein, 2020): `-(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2)`."""
  logits = logits.astype(jnp.float32)
  top = jax.lax.top_k(logits, 4)[0]
  margin = _true_logit(logits, labels) - _true_logit(logits, targets)
  return -margin / (top[..., 0] - 0.5 * (top[..., 2] + top[..., 3]) + _DLR_EPS)


def kl_divergence(logits, reference_logits):
  """`KL(softmax(reference) || softmax(z))` per example, the TRADES inner objective."""
  reference = jax.nn.log_softmax(_shifted(reference_logits), axis=-1)
  log_p = jax.nn.log_softmax(_shifted(logits), axis=-1)
  return jnp.sum(jnp.exp(reference) * (reference - log_p), axis=-1)


def _kl_from_reference(reference_logits, logits, labels, targets=None):
  del labels, targets
  return kl_divergence(logits, reference_logits)


def kl_from(reference_logits: jax.Array) -> AttackLoss:
  """The attack loss `(z, labels, targets) -> KL(softmax(reference) || softmax(z))`, (B,).

  TRADES' inner objective (labels unused). `reference_logits` (B, K) is held fixed (no
  gradient); the loss is a pytree callable, so `pgd` compiles once for every reference of
  the same shape.
  """
  return Partial(_kl_from_reference, jax.lax.stop_gradient(reference_logits))


ATTACK_LOSSES: dict[str, AttackLoss] = {
    "ce": cross_entropy,
    "ce_targeted": cross_entropy_targeted,
    "dense_ce": dense_cross_entropy,
    "cw": cw_margin,
    "cw_targeted": cw_margin_targeted,
    "dlr": dlr,
    "dlr_targeted": dlr_targeted,
}
TARGETED_LOSSES = frozenset(name for name in ATTACK_LOSSES if name.endswith("_targeted"))


def get(name: str) -> AttackLoss:
  """Returns the attack loss called `name`; raises `ValueError` naming the choices."""
  if name not in ATTACK_LOSSES:
    raise ValueError(f"unknown attack loss {name!r}; choose one of {sorted(ATTACK_LOSSES)}.")
  return ATTACK_LOSSES[name]
