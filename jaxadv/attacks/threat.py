"""Threat models: the set S(x) an attack may move an input to, as a start and a projection.

A `ThreatModel` is a pair of pure functions of a clean batch x (B, ...) that keep its shape:

    init(key, x)        -> x_0 in S(x)             a random start
    project(x_adv, x)   -> Proj_{S(x)}(x_adv)      back into the set after each step

`ball` builds the pixel threat models, norm balls intersected with the image box,
S(x) = {x' : ||x' - x|| <= eps} ∩ [0, 1]^d, from `jaxadv.attacks.geometry`. Nothing in
`jaxadv.attacks.iterative.iterate` assumes pixels: any set with these two functions works
(a box around a vector of feature statistics, a ball in a latent space).

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxadv.attacks import threat
  >>> x = jax.random.uniform(jax.random.PRNGKey(0), (2, 4, 4, 1))
  >>> ball = threat.ball("l2", 0.5)
  >>> x_0 = ball.init(jax.random.PRNGKey(1), x)
  >>> far = ball.project(x + 10.0 * (x_0 - x), x)
  >>> l2 = lambda v: jnp.sqrt(jnp.sum(jnp.square(v - x), axis=(1, 2, 3)))
  >>> bool(jnp.all(l2(x_0) <= 0.5 + 1e-6)), bool(jnp.all(l2(far) <= 0.5 + 1e-6))
  (True, True)
  >>> bool(jnp.all((far >= 0) & (far <= 1)))
  True
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax

from jaxadv.attacks import geometry


class ThreatModel(NamedTuple):
  """`init(key, x) -> x_0` (a start inside S(x)) and `project(x_adv, x) -> x'` (onto S(x))."""
  init: Callable[[jax.Array, jax.Array], jax.Array]
  project: Callable[[jax.Array, jax.Array], jax.Array]


def ball(norm: str, eps, *, batch_ndim: int = 1) -> ThreatModel:
  """The threat model {x' : ||x' - x||_norm <= eps} ∩ [0, 1]^d.

  Args:
    norm: "linf", "l2" or "l1" (`geometry.NORMS`).
    eps: radius, a scalar or per-example array of the batch shape x.shape[:batch_ndim].
    batch_ndim: leading batch axes of x (1 for (B, ...), 0 for one example under `vmap`).

  Returns:
    A `ThreatModel` whose `init` is `geometry.random_start` (uniform in the ball's volume,
    clipped to [0, 1]) and whose `project` is `geometry.project` (clip for L-inf, radial
    rescaling for L2, the sort-based L1-ball projection for L1, then the box clip).
  """
  return ThreatModel(
      init=lambda key, x: geometry.random_start(key, x, eps, norm, batch_ndim),
      project=lambda x_adv, x: geometry.project(x_adv, x, eps, norm, batch_ndim))
