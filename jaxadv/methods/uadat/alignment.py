"""UAD-AT's introspective gradient alignment. Reconstructed from the paper's description (arXiv
2411.02871); not the authors' code. The term is GradAlign's (Andriushchenko & Flammarion, 2020)
with the PGD example in place of GradAlign's uniform noise point:

    g(x')  = ∇_x' Σ_i CE(f(x'_i), y_i)                       (B, H, W, C), per example
    A      = masked_mean_i (1 − cos(g(x)_i, g(x_adv)_i),  m_i)
    m_i    = [g(x)_i ≠ 0 and g(x_adv)_i ≠ 0]                  (GradAlign skips zero gradients)

and the objective adds λ·A (λ = 0.2 at 8/255, GradAlign's λ(ε) = 0.02·10^(ε/8) with ε in
/255 units; `objective.uadat.lam`). The gradient of A in the parameters is a second derivative
(double backprop through `jax.grad` in x). As in GradAlign's code, g(x) is a fixed target (no
gradient) unless `through_clean` (`objective.uadat.align_through_clean`). Both input gradients
use the model in "batch_stats" mode (batch statistics, running averages not written), without
uncertainty layers. A = 0 when x_adv = x.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxadv import numerics
from jaxadv.attacks import losses
from jaxadv.methods.common import masked_cosine, variables_of
from jaxadv.models import apply_model


def input_gradient(model, params, model_state, x: jax.Array, labels: jax.Array, *,
                   mode: str = "batch_stats") -> jax.Array:
  """∇_x Σ_i CE(f(x_i), y_i), shape of x (B, ...): each row the gradient of its own loss."""
  def total_loss(inputs):
    logits, _ = apply_model(model, variables_of(params, model_state), inputs, mode)
    return jnp.sum(losses.cross_entropy(logits, labels))
  return jax.grad(total_loss)(x)


def cosine_per_row(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(cos (B,), nonzero (B,)): the cosine of rows a_i, b_i (B, ...) with safe norms
  (`common.masked_cosine`), and whether both rows are nonzero."""
  a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
  cos = jax.vmap(masked_cosine)(a, b, jnp.ones(a.shape, bool))
  return cos, jnp.any(a != 0, axis=1) & jnp.any(b != 0, axis=1)


def gradient_alignment(model, params, model_state, x: jax.Array, x_adv: jax.Array,
                       labels: jax.Array, *, through_clean: bool = False) -> jax.Array:
  """A of the module docstring, a scalar >= 0 (up to rounding)."""
  clean_params = params if through_clean else jax.lax.stop_gradient(params)
  clean = input_gradient(model, clean_params, model_state, x, labels)
  if not through_clean:
    clean = jax.lax.stop_gradient(clean)
  adversarial = input_gradient(model, params, model_state, x_adv, labels)
  cos, nonzero = cosine_per_row(clean, adversarial)
  return numerics.masked_mean(1.0 - cos, nonzero)
