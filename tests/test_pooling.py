"""jaxadv.models.pooling.max_pool: lax.reduce_window max's values and gradient, ties included."""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxadv.models import pooling


def _reduce_window_max(x, window):
  return lax.reduce_window(x, -jnp.inf, lax.max, window, window, "VALID")


@hypothesis.settings(deadline=None, max_examples=10)
@hypothesis.given(height=st.integers(2, 9), width=st.integers(2, 9),
                  window=st.sampled_from([(2, 2), (3, 3), (2, 3), (1, 2)]),
                  ties=st.booleans(), channels_last=st.booleans())
def test_values_and_gradient_equal_reduce_window(height, width, window, ties, channels_last):
  """Any window that fits, trailing rows and columns dropped; with `ties` the input takes only
  the values 0, 1, 2, so most windows hold several maxima and the gradient must go to the first
  one, as select-and-scatter's does."""
  hypothesis.assume(window[0] <= height and window[1] <= width)
  key = jax.random.key(height * 10 + width)
  shape = (2, 3, height, width) if not channels_last else (2, height, width, 3)
  x = (jnp.floor(3 * jax.random.uniform(key, shape)) if ties
       else jax.random.normal(key, shape))
  full = (1, 1) + window if not channels_last else (1,) + window + (1,)
  expected = _reduce_window_max(x, full)
  weights = jax.random.normal(jax.random.key(1), expected.shape)
  grad = lambda pool: jax.jit(jax.grad(lambda v: jnp.sum(pool(v, full) * weights)))(x)
  np.testing.assert_array_equal(pooling.max_pool(x, full), expected)
  np.testing.assert_array_equal(grad(pooling.max_pool), grad(_reduce_window_max))


def test_gradient_is_elementwise():
  """No select-and-scatter in the gradient's program (the slow kernel on CPU)."""
  x = jnp.ones((2, 8, 8, 3))
  grad = lambda pool: jax.grad(lambda v: jnp.sum(pool(v, (1, 2, 2, 1))))
  assert "select_and_scatter" not in str(jax.make_jaxpr(grad(pooling.max_pool))(x))
  assert "select_and_scatter" in str(jax.make_jaxpr(grad(_reduce_window_max))(x))


@pytest.mark.parametrize("window, strides, padding, dilation, covered", [
    ((1, 1, 2, 2), (1, 1, 2, 2), ((0, 0),) * 4, (1,) * 4, True),
    ((1, 3, 3, 1), (1, 3, 3, 1), ((0, 0),) * 4, (1,) * 4, True),
    ((1, 1, 3, 3), (1, 1, 2, 2), ((0, 0),) * 4, (1,) * 4, False),        # overlapping
    ((1, 1, 2, 2), (1, 1, 2, 2), ((0, 0), (0, 0), (1, 1), (1, 1)), (1,) * 4, False),  # padded
    ((1, 1, 2, 2), (1, 1, 2, 2), ((0, 0),) * 4, (1, 1, 2, 2), False),    # dilated
    ((1, 1, 1, 1), (1, 1, 1, 1), ((0, 0),) * 4, (1,) * 4, False),        # no pooling
    ((1, 1, 16, 16), (1, 1, 16, 16), ((0, 0),) * 4, (1,) * 4, False),    # larger than the input
])
def test_covered_forms(window, strides, padding, dilation, covered):
  assert pooling.is_covered((2, 3, 8, 8), window, strides, padding, (1,) * 4,
                            dilation) is covered
