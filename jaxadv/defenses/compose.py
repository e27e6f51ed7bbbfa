"""The OOD->ID translation defense as one function of x, and its straight-through (BPDA)
variants for adaptive attacks.

jaxadv's reconstruction from the paper's description (Amich & Eshete, arXiv 2202.08944;
`shared/spec/methods.md` §4, item 3); not the authors' code. With f the classifier, T the
translator, s the gate's score and τ its threshold (`jaxadv.defenses.gate`), for x (B, ...):

    m_b  = s(x)_b > τ                      (B,)  bool, one decision per example
    x'_b = T(x)_b if m_b else x_b          (B, ...)
    out  = f(x')                           (B, K) logits

`defended_apply` returns this as a `Defended`, a pytree callable `x -> logits` that jits,
vmaps and shards like the classifier it wraps, so every attack of `jaxadv.attacks` and the
evaluation take it unchanged. Shapes are fixed: T and s run on the whole batch and `where`
selects per example. An unrouted example's x'_b is x_b itself (the bits of x), so with a
classifier whose outputs are per example (eval mode) the defended logits of every input the
gate passes are the classifier's own: benign accuracy is kept exactly on those points.

**Gradients** (`Defended.backward`), for the adaptive attacks the method must report:

* "exact" (`defended_apply`): automatic differentiation, ∂x'_b/∂x_b = J_T(x_b) when routed, I
  when not; the threshold decision has no gradient (it is piecewise constant). Attacking this
  attacks end to end through the translator, on the route each iterate takes.
* "identity" (`straight_through(..., surrogate="identity")`): BPDA of the whole pre-processor
  (Athalye et al., 2018): forward unchanged, ∂x'/∂x := I, so the attack's gradient is the
  classifier's gradient at the routed input, ∇_{x'} L(f(x'), y).
* "translator" (`surrogate="translator"`): BPDA of the gate: forward unchanged, ∂x'_b/∂x_b :=
  J_T(x_b) for every example, as if the gate routed them all; the gradient is
  J_T(x)ᵀ ∇_{x'} L(f(x'), y).

Example: a gate that routes images brighter than 0.5 to a translator that blanks them.
  >>> import jax, jax.numpy as jnp
  >>> classify = lambda x: x.reshape(x.shape[0], -1)
  >>> blank = lambda x: jnp.zeros_like(x)
  >>> brightest = lambda x: x.reshape(x.shape[0], -1).max(axis=1)
  >>> defended = defended_apply(classify, blank, brightest, threshold=0.5)
  >>> x = jnp.array([[0.25, 0.375], [0.875, 0.125]]).reshape(2, 1, 2, 1)
  >>> defended(x).tolist()
  [[0.25, 0.375], [0.0, 0.0]]
  >>> for surrogate in ("exact", "identity"):
  ...   apply_fn = defended if surrogate == "exact" else straight_through(defended, surrogate)
  ...   print(surrogate, jax.grad(lambda v: apply_fn(v).sum())(x).reshape(2, 2).tolist())
  exact [[1.0, 1.0], [0.0, 0.0]]
  identity [[1.0, 1.0], [1.0, 1.0]]
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np

from jaxadv import validation
from jaxadv.attacks.base import as_pytree
from jaxadv.defenses.gate import route

SURROGATES = ("identity", "translator")
BACKWARDS = ("exact", *SURROGATES)


@jax.custom_vjp
def _with_gradient_of(value: jax.Array, surrogate: jax.Array) -> jax.Array:
  return value


def _with_gradient_of_fwd(value, surrogate):
  del surrogate
  return value, None


def _with_gradient_of_bwd(residuals, cotangent):
  del residuals
  return None, cotangent


_with_gradient_of.defvjp(_with_gradient_of_fwd, _with_gradient_of_bwd)


def with_gradient_of(value: jax.Array, surrogate: jax.Array) -> jax.Array:
  """`value` in the forward pass; in the backward pass the output's cotangent goes to
  `surrogate` (same shape) and none to `value`: d out / d θ := d surrogate / d θ.

  BPDA as one primitive: `with_gradient_of(g(x), x)` is g with an identity backward pass,
  `with_gradient_of(g(x), h(x))` differentiates h in place of g. The forward value is `value`
  bit for bit (unlike `x + stop_gradient(g(x) - x)`). Raises ValueError for shapes that
  differ.

  >>> import jax, jax.numpy as jnp
  >>> jax.grad(lambda x: with_gradient_of(jnp.round(x), 3 * x))(0.7).item()
  3.0
  """
  if jnp.shape(value) != jnp.shape(surrogate):
    raise ValueError(f"with_gradient_of needs a surrogate of the value's shape "
                     f"{jnp.shape(value)}, got {jnp.shape(surrogate)}.")
  return _with_gradient_of(value, surrogate)


@flax.struct.dataclass
class Defended:
  """`x -> classifier_apply(where(route(gate_score(x), threshold), translate(x), x))`, a pytree
  callable (B, ...) -> logits; `backward` ("exact", "identity", "translator", static) picks
  its gradient (module docstring). Build it with `defended_apply` and `straight_through`."""
  classifier_apply: Any
  translate: Any
  gate_score: Any
  threshold: jax.Array
  backward: str = flax.struct.field(pytree_node=False, default="exact")

  def routes(self, x: jax.Array) -> jax.Array:
    """Which examples of x (B, ...) go through the translator: bool (B,)."""
    routed = route(self.gate_score(x), self.threshold)
    if routed.shape != x.shape[:1]:
      raise ValueError(f"gate_score must return one score per example, shape {x.shape[:1]}, "
                       f"got {routed.shape}.")
    return routed

  def classifier_input(self, x: jax.Array) -> jax.Array:
    """x' = where(routes(x), translate(x), x), shape of x, with the gradient of `backward`."""
    translated = self.translate(x)
    if translated.shape != x.shape:
      raise ValueError(f"translate must keep the shape of its input {tuple(x.shape)}, "
                       f"returned {tuple(translated.shape)}.")
    routed = self.routes(x).reshape(x.shape[:1] + (1,) * (x.ndim - 1))
    x_prime = jnp.where(routed, translated, x)
    if self.backward == "identity":
      return with_gradient_of(x_prime, x)
    if self.backward == "translator":
      return with_gradient_of(x_prime, translated)
    return x_prime

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.classifier_apply(self.classifier_input(x))


def defended_apply(classifier_apply: Callable, translate: Callable, gate_score: Callable,
                   threshold) -> Defended:
  """The defended classifier `x -> f(where(s(x) > τ, T(x), x))` with exact gradients.

  Args:
    classifier_apply: f, images (B, ...) -> logits, e.g. `jaxadv.models.BoundModel`.
    translate: T, images (B, ...) -> images of the same shape, e.g. a `BoundModel` of a
      `jaxadv.models.UNet` in eval mode.
    gate_score: s, images (B, ...) -> scores (B,), e.g. `gate.mahalanobis_gate(...)`.
    threshold: τ, a scalar (`gate.fit_threshold`); a leaf of the result, so a new threshold
      reuses compiled attacks. `-jnp.inf` routes every example through T, `jnp.inf` none
      (attacking a hard gate route by route).

  Plain functions are wrapped as `jax.tree_util.Partial`s, pytree callables (BoundModel,
  Partial, Defended) kept: the result is a valid `jax.jit` argument. Raises ValueError for an
  argument that is not callable or a threshold that is not a scalar, or NaN.
  """
  for name, fn in (("classifier_apply", classifier_apply), ("translate", translate),
                   ("gate_score", gate_score)):
    if not callable(fn):
      raise ValueError(f"{name} must be a function, got {type(fn).__name__}.")
  if jnp.ndim(threshold) != 0 or (validation.is_concrete(threshold)
                                  and np.isnan(np.asarray(threshold))):
    raise ValueError(f"threshold must be a scalar and not NaN, got {threshold!r}.")
  return Defended(as_pytree(classifier_apply), as_pytree(translate), as_pytree(gate_score),
                  jnp.asarray(threshold, jnp.float32))


def straight_through(defended: Defended, surrogate: str = "identity") -> Defended:
  """`defended` with the same forward pass and a BPDA backward pass: "identity" (the
  pre-processor's, gradient ∇f at the routed input) or "translator" (the gate's, every
  example differentiated through T). Raises ValueError for anything else."""
  if not isinstance(defended, Defended):
    raise ValueError(f"straight_through takes a Defended (defended_apply's result), got "
                     f"{type(defended).__name__}.")
  validation.check_choice(surrogate, "surrogate", SURROGATES)
  return defended.replace(backward=surrogate)
