"""What every attack shares: the model-function contract, the checks at its edge, and the
dtype it computes in.

Attacks compute in float32 whatever the images' dtype (`to_compute`): a float16 image and a
model with a zero gradient would otherwise divide 0 by a floor that is 0 in float16, and
projections lose the ball in bfloat16. The result is cast back once (`cast_toward`), each
coordinate rounded toward the clean image, so it stays inside the ball and [0, 1] in the
caller's dtype.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from jaxadv import validation
from jaxadv.attacks import losses

ApplyFn = Callable[[jax.Array], jax.Array]


def as_pytree(apply_fn: ApplyFn):
  """`apply_fn` as a valid jit argument: pytree callables (Partial, BoundModel) pass through,
  a plain function becomes a leaf-less Partial (compiled once per function object)."""
  if jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(apply_fn)):
    return Partial(apply_fn)
  return apply_fn


def check_attack_inputs(x, y, *, eps, norm: str, norms=("linf", "l2"), loss: str | None = None,
                        targets=None) -> None:
  """Validates the arguments common to all attacks; raises ValueError naming the problem.

  x: images (B, ...) in [0, 1]; y: int labels (B,); eps >= 0 (scalar or (B,)); norm in
  `norms`; loss a registered attack loss; targets (B,) ints, required by targeted losses and
  refused by the untargeted ones, which would ignore them (`loss=None`, a custom loss or
  none, leaves targets to the attack).
  """
  validation.check_images(x, "x", min_rank=1)
  validation.check_labels(y, x, "y")
  validation.check_nonnegative(eps, "eps")
  validation.check_choice(norm, "norm", norms)
  if loss is not None:
    validation.check_choice(loss, "attack loss", losses.ATTACK_LOSSES)
    if loss in losses.TARGETED_LOSSES and targets is None:
      raise ValueError(f"attack loss {loss!r} is targeted: pass targets (B,).")
    if loss not in losses.TARGETED_LOSSES and targets is not None:
      raise ValueError(f"targets were given, but attack loss {loss!r} is untargeted and would "
                       "ignore them: use a targeted loss "
                       f"({', '.join(sorted(losses.TARGETED_LOSSES))}) or drop targets.")
  if targets is not None:
    validation.check_labels(targets, x, "targets")


def to_compute(x: jax.Array) -> jax.Array:
  """x in the dtype attacks compute in: float32 for narrower floats (float16, bfloat16), x
  itself otherwise (float32, float64)."""
  if jnp.issubdtype(x.dtype, jnp.floating) and jnp.finfo(x.dtype).bits < 32:
    return x.astype(jnp.float32)
  return x


def cast_toward(x_adv: jax.Array, x: jax.Array) -> jax.Array:
  """`x_adv` (computed in float32) in the dtype of the clean `x`, each coordinate rounded to
  the neighbouring value of that dtype on the side of x where plain rounding moved it away:
  |cast(x_adv) − x| <= |x_adv − x| coordinate by coordinate, so every norm ball and the box
  [0, 1] that held x_adv hold the cast result. Shapes of x; x_adv itself when the dtypes agree.

  >>> import jax.numpy as jnp
  >>> x = jnp.zeros(1, jnp.float16)
  >>> float(jnp.asarray(0.7, jnp.float16)) > 0.7   # plain rounding leaves the ball of 0.7
  True
  >>> float(cast_toward(jnp.array([0.7], jnp.float32), x)[0]) <= 0.7
  True
  """
  if x_adv.dtype == x.dtype:
    return x_adv
  low = x_adv.astype(x.dtype)
  reference = x.astype(x_adv.dtype)
  away = jnp.abs(low.astype(x_adv.dtype) - reference) > jnp.abs(x_adv - reference)
  return jnp.where(away, jnp.nextafter(low, x), low)


@jax.jit
def _logits(apply_fn, x):
  return apply_fn(x)


def check_finite_logits(apply_fn: ApplyFn, x, name: str = "apply_fn", labels=None) -> None:
  """Raises ValueError when the model returns NaN or infinite logits on the clean (concrete)
  batch x, naming the examples, or when concrete `labels` lie outside [0, K) for its K logits;
  nothing under a trace (inside `jit`, where the caller's own checks apply: the evaluation
  checks its clean pass and labels) or for an empty batch."""
  if not validation.is_concrete(x) or x.shape[0] == 0:
    return
  logits = _logits(as_pytree(apply_fn), to_compute(x))
  if not validation.is_concrete(logits):  # x is a constant of an enclosing trace
    return
  logits = np.asarray(logits)
  bad = ~np.isfinite(logits.reshape(logits.shape[0], -1)).all(axis=1)
  if bad.any():
    raise ValueError(f"{name} returns non-finite logits (NaN or inf) on the clean input, for "
                     f"{int(bad.sum())} of {logits.shape[0]} examples (first: index "
                     f"{int(np.flatnonzero(bad)[0])}): the model is broken for these inputs, "
                     "and no attack on it would mean anything.")
  if labels is not None and validation.is_concrete(labels):
    values = np.asarray(labels)
    if values.min() < 0 or values.max() >= logits.shape[-1]:
      raise ValueError(f"labels must lie in [0, {logits.shape[-1]}) for the model's "
                       f"{logits.shape[-1]} logits, got values in [{values.min()}, "
                       f"{values.max()}].")
