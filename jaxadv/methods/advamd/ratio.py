"""AdvAmd's per-example learning ratio from attack vulnerability.

Reconstructed (AdvAmd names "adaptive learning ratios" from the vulnerability of each sample to
the attack; the formula is jaxadv's): the vulnerability of example i is

    v_i = 1 − mean_positions p_adv,i[y]            (p_adv = softmax of the aux-route logits of
                                                     x_adv; one position for classification,
                                                     every pixel for segmentation)

and its weight, held fixed (stop-gradient) and normalised to batch mean 1:

    "linear", sign +1:  w_i ∝ v_i          (the default: the more the attack breaks an example,
                                             the more its aux terms count)
    "linear", sign −1:  w_i ∝ 1 − v_i      (the opposite: broken examples count less)
    "exp":              w_i ∝ exp(sign · v_i / τ)
    "none":             w_i = 1            (AdvProp)

The spec's prose and formula disagree on the default's direction (its formula `1 − p_adv[y]`
weighs broken examples *more*, its sentence says less): jaxadv follows the formula and ablates
both signs (docs/objectives.md).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

FORMS = ("linear", "exp", "none")
SIGNS = (1, -1)
_TINY = 1e-12  # a batch whose weights all vanish falls back to weights 1


def true_probability(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """softmax(z)[y] averaged over the positions of each example: logits (B, ..., K), labels
  (B, ...) -> (B,).

  >>> import jax.numpy as jnp
  >>> true_probability(jnp.zeros((2, 4)), jnp.array([0, 3])).tolist()
  [0.25, 0.25]
  """
  chex.assert_shape(labels, logits.shape[:-1])
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(probs, labels[..., None], axis=-1)[..., 0]
  return jnp.mean(picked.reshape(picked.shape[0], -1), axis=1)


def learning_ratio(adv_logits: jax.Array, labels: jax.Array, *, form: str = "linear",
                   sign: int = 1, temperature: float = 1.0) -> jax.Array:
  """The weights w (B,) of the module docstring: no gradient, mean 1 over the batch.

  >>> import jax.numpy as jnp
  >>> logits = jnp.log(jnp.array([[0.9, 0.1], [0.5, 0.5]]))   # p[y=0]: 0.9 and 0.5
  >>> [round(w, 4) for w in learning_ratio(logits, jnp.array([0, 0])).tolist()]  # v: .1, .5
  [0.3333, 1.6667]
  >>> [round(w, 4) for w in learning_ratio(logits, jnp.array([0, 0]), sign=-1).tolist()]
  [1.2857, 0.7143]
  """
  if form == "none":
    return jnp.ones(labels.shape[:1], jnp.float32)
  v = 1.0 - jax.lax.stop_gradient(true_probability(adv_logits, labels))
  if form == "linear":
    w = v if sign > 0 else 1.0 - v
  else:
    w = jnp.exp(sign * v / temperature)
  mean = jnp.mean(w)
  return jnp.where(mean > _TINY, w / jnp.maximum(mean, _TINY), jnp.ones_like(w))
