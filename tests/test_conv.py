"""The convolution with an explicit input gradient (`jaxadv.models.conv`) computes what
`lax.conv_general_dilated` computes: values, input gradients and kernel gradients, for the
strides and paddings of the model zoo, inside loops too; unsupported forms fall back."""

import functools

import flax.linen as nn
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxadv import models
from jaxadv.models import conv

_NHWC = ("NHWC", "HWIO", "NHWC")


def _loss(conv_fn, x, kernel, strides, padding, **kwargs):
  dims = lax.conv_dimension_numbers(x.shape, kernel.shape, _NHWC)
  return jnp.sum(jnp.sin(conv_fn(x, kernel, strides, padding, dimension_numbers=dims, **kwargs)))


def _value_and_grads(conv_fn, x, kernel, strides, padding, **kwargs):
  loss = functools.partial(_loss, conv_fn, strides=strides, padding=padding, **kwargs)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, kernel)


@hypothesis.given(size=st.integers(5, 12), kernel=st.integers(1, 4), stride=st.integers(1, 3),
                  padding=st.sampled_from(["SAME", "VALID", ((1, 1), (1, 1)), ((0, 2), (2, 1))]))
def test_values_and_both_gradients_equal_lax(size, kernel, stride, padding):
  x = jax.random.normal(jax.random.key(0), (2, size, size + 1, 3))
  k = jax.random.normal(jax.random.key(1), (kernel, kernel, 3, 4))
  expected = _value_and_grads(lax.conv_general_dilated, x, k, (stride, stride), padding)
  got = _value_and_grads(conv.conv_general_dilated, x, k, (stride, stride), padding)
  for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def test_uses_the_explicit_input_gradient():
  x, k = jnp.ones((1, 6, 6, 2)), jnp.ones((3, 3, 2, 5))
  jaxpr = str(jax.make_jaxpr(jax.grad(_loss, argnums=1), static_argnums=(0, 3, 4))(
      conv.conv_general_dilated, x, k, (1, 1), "SAME"))
  assert "custom_vjp" in jaxpr and "rev" in jaxpr  # the kernel flip is an explicit op


def test_unsupported_forms_fall_back_to_lax():
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 4))
  k = jax.random.normal(jax.random.key(1), (3, 3, 2, 4))
  for kwargs in ({"rhs_dilation": (2, 2)}, {"feature_group_count": 2}):
    kernel = k if "feature_group_count" in kwargs else jnp.concatenate([k, k], axis=2)
    expected = _value_and_grads(lax.conv_general_dilated, x, kernel, (1, 1), "SAME", **kwargs)
    got = _value_and_grads(conv.conv_general_dilated, x, kernel, (1, 1), "SAME", **kwargs)
    for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
      np.testing.assert_allclose(g, e, rtol=1e-6)


def test_input_gradient_inside_a_fori_loop_equals_lax():
  x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 1))
  k = jax.random.normal(jax.random.key(1), (3, 3, 1, 2))

  def ascend(conv_fn):
    grad = jax.grad(lambda x: _loss(conv_fn, x, k, (2, 2), "SAME"))
    return jax.jit(lambda x: lax.fori_loop(0, 5, lambda _, x: x + 0.1 * jnp.sign(grad(x)), x))(x)

  np.testing.assert_allclose(ascend(conv.conv_general_dilated),
                             ascend(lax.conv_general_dilated), atol=1e-6)


@pytest.mark.parametrize("name, shape", [("small_cnn", (12, 12, 1)), ("resnet18", (8, 8, 3))])
def test_zoo_models_on_cpu_match_plain_flax_convolutions(name, shape):
  model = models.get(name, num_classes=5)
  x = jax.random.uniform(jax.random.key(0), (3, *shape))
  variables = model.init(jax.random.key(1), x)
  assert conv.for_backend() is conv.conv_general_dilated  # the test suite runs on CPU

  def input_grad():
    logits = lambda x: model.apply(variables, x)
    return logits(x), jax.grad(lambda x: jnp.sum(jax.nn.log_softmax(logits(x))[:, 0]))(x)

  fast = input_grad()
  with conv.lax_convolutions():
    assert conv.for_backend() is None
    plain = input_grad()
  for f, p in zip(fast, plain):
    np.testing.assert_allclose(f, p, rtol=1e-5, atol=1e-6)


def test_forward_mode_needs_lax_convolutions():
  model = models.get("small_cnn", num_classes=3)
  x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 1))
  variables = model.init(jax.random.key(1), x)
  logits = lambda x: model.apply(variables, x)
  with pytest.raises(TypeError, match="forward-mode"):
    jax.jvp(logits, (x,), (jnp.ones_like(x),))
  with conv.lax_convolutions():
    _, tangent = jax.jvp(logits, (x,), (jnp.ones_like(x),))
  _, pullback = jax.vjp(logits, x)
  directional = [float(jnp.sum(pullback(jnp.eye(3)[k] * jnp.ones((2, 1)))[0])) for k in range(3)]
  np.testing.assert_allclose(np.asarray(tangent).sum(0), directional, rtol=1e-4, atol=1e-5)


def test_conv_layer_keeps_flax_parameter_names():
  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      return conv.conv_layer(4, (3, 3))(x)

  params = Net().init(jax.random.key(0), jnp.zeros((1, 5, 5, 2)))["params"]
  assert set(params) == {"Conv_0"} and set(params["Conv_0"]) == {"kernel", "bias"}
