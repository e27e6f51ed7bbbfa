"""What every attack shares: the model-function contract and the checks at its edge."""

from __future__ import annotations

from typing import Callable

import jax
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
  `norms`; loss a registered attack loss; targets (B,) ints, required by targeted losses.
  """
  validation.check_images(x, "x", min_rank=1)
  validation.check_labels(y, x, "y")
  validation.check_nonnegative(eps, "eps")
  validation.check_choice(norm, "norm", norms)
  if loss is not None:
    validation.check_choice(loss, "attack loss", losses.ATTACK_LOSSES)
    if loss in losses.TARGETED_LOSSES and targets is None:
      raise ValueError(f"attack loss {loss!r} is targeted: pass targets (B,).")
  if targets is not None:
    validation.check_labels(targets, x, "targets")
