"""Gradient-masking checks (after AutoAttack's flags and Athalye et al., 2018).

Each check returns a `Flag` (name, raised, detail); a raised flag means the robust accuracy
of that report may be overestimated and the model needs adaptive attacks.

* randomness: two forward passes on the same input disagree (a randomised defence: use EOT).
* zero gradients: a large fraction of points have an all-zero input gradient of the loss.
* softmax outputs: the model returns probabilities instead of logits (CE then saturates).
* eps monotonicity: robust accuracy must not increase with eps.
* black box beats white box: the score-based Square attack breaks points that every
  gradient attack left robust.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv.attacks import losses


@dataclasses.dataclass(frozen=True)
class Flag:
  name: str
  raised: bool
  detail: str


def check_randomness(apply_fn, x) -> Flag:
  """Flags outputs that differ between two calls on the same x (B, ...)."""
  first, second = np.asarray(apply_fn(x)), np.asarray(apply_fn(x))
  gap = float(np.max(np.abs(first - second)))
  return Flag("randomness", gap > 1e-5, f"max |f(x) - f(x)| over two calls = {gap:.3g}")


def check_zero_gradients(apply_fn, x, y, threshold: float = 0.1) -> Flag:
  """Flags when more than `threshold` of the points have an all-zero CE input gradient."""
  grad = jax.grad(lambda v: jnp.sum(losses.cross_entropy(apply_fn(v), y)))(x)
  zero = np.all(np.asarray(grad).reshape(len(y), -1) == 0.0, axis=1)
  fraction = float(zero.mean())
  return Flag("zero_gradients", fraction > threshold,
              f"{100 * fraction:.1f}% of points have an all-zero input gradient")


def check_softmax_outputs(apply_fn, x) -> Flag:
  """Flags outputs that are non-negative and sum to 1 per row (probabilities, not logits)."""
  out = np.asarray(apply_fn(x))
  is_simplex = bool(np.all(out >= 0) and np.allclose(out.sum(axis=-1), 1.0, atol=1e-4))
  return Flag("softmax_outputs", is_simplex,
              "outputs are probabilities" if is_simplex else "outputs are unnormalised logits")


def check_eps_monotonicity(accuracy_by_eps: dict[float, float], tolerance: float = 0.5) -> Flag:
  """Flags robust accuracy (%) that rises by more than `tolerance` points as eps grows."""
  items = sorted(accuracy_by_eps.items())
  rises = [(a, b) for (_, a), (_, b) in zip(items, items[1:]) if b > a + tolerance]
  detail = ", ".join(f"eps={e:.4g}: {acc:.2f}%" for e, acc in items)
  return Flag("eps_monotonicity", bool(rises), detail)


def check_black_box_gain(robust_after_white_box: np.ndarray, robust_after_square: np.ndarray,
                         attack: str = "") -> Flag:
  """Flags points that Square broke after every white-box attack left them robust; `attack`
  names the cascade in the detail (an evaluation can hold several)."""
  gained = int(np.sum(robust_after_white_box & ~robust_after_square))
  prefix = f"{attack}: " if attack else ""
  return Flag("black_box_beats_white_box", gained > 0,
              f"{prefix}Square broke {gained} point{'' if gained == 1 else 's'} the gradient "
              f"attacks missed")
