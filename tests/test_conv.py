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
from jax.extend import core as jax_core

from jaxadv import attacks, models
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


@hypothesis.given(size=st.integers(2, 7), kernel=st.integers(1, 5), dilation=st.integers(1, 3),
                  padding=st.sampled_from([((0, 0), (0, 0)), ((1, 1), (1, 1)), ((2, 2), (3, 1)),
                                           ((4, 0), (0, 4)), ((-1, 2), (1, -1))]))
def test_transposed_convolutions_equal_lax(size, kernel, dilation, padding):
  """lhs-dilated convolutions (transposed ones, with unit strides) computed phase by phase: the
  same values and gradients as lax's convolution of the explicitly dilated and padded input,
  including kernels smaller than the dilation (phases with no tap) and negative padding
  (cropping). (The reference pads with `lax.pad`: lax's own lhs-dilated convolution has an input
  gradient with negative padding, which XLA:CPU computes from uninitialised memory for some
  small inputs; see `conv._conv`.)"""
  x = jax.random.normal(jax.random.key(0), (2, size, size + 1, 3))
  k = jax.random.normal(jax.random.key(1), (kernel, kernel, 3, 4))
  out = [(n - 1) * dilation + 1 + lo + hi - kernel + 1 for n, (lo, hi) in
         zip(x.shape[1:3], padding)]
  hypothesis.assume(min(out) >= 1)

  def reference(x, k, strides, padding, lhs_dilation, dimension_numbers):
    dilated = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0)] + [
        (lo, hi, d - 1) for (lo, hi), d in zip(padding, lhs_dilation)] + [(0, 0, 0)])
    return lax.conv_general_dilated(dilated, k, strides, "VALID",
                                    dimension_numbers=dimension_numbers)

  kwargs = {"lhs_dilation": (dilation, dilation)}
  expected = _value_and_grads(reference, x, k, (1, 1), padding, **kwargs)
  got = _value_and_grads(conv.conv_general_dilated, x, k, (1, 1), padding, **kwargs)
  for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def test_transposed_convolution_runs_by_phases():
  """A transposed convolution (stride 2): one stride-1 convolution per output phase (4), none
  with lhs dilation, where lax's is one lhs-dilated convolution. A strided convolution's input
  gradient stays lax's lhs-dilated one (as fast for the 3x3 kernels of the zoo)."""
  x, k = jnp.ones((2, 8, 8, 2)), jnp.ones((4, 4, 2, 5))
  transposed = lambda conv_fn: jax.make_jaxpr(lambda x: conv_fn(
      x, k, (1, 1), ((2, 2), (2, 2)), lhs_dilation=(2, 2), dimension_numbers=_NHWC))(x).jaxpr
  assert _lhs_dilations(transposed(lax.conv_general_dilated)) == [(2, 2)]
  assert _lhs_dilations(transposed(conv.conv_general_dilated)) == [(1, 1)] * 4
  strided = jax.make_jaxpr(jax.grad(_loss, argnums=1), static_argnums=(0, 3, 4))(
      conv.conv_general_dilated, x, k, (2, 2), ((1, 1), (1, 1))).jaxpr
  assert _lhs_dilations(strided) == [(1, 1), (2, 2)]  # the forward, the input gradient


def test_input_gradient_with_padding_beyond_the_kernel():
  """Padding larger than the kernel minus one gives the input-gradient convolution a negative
  padding, which XLA:CPU computes from uninitialised memory for small inputs (lax's own
  gradient: values ~1e20 that change from call to call). Ours equals, call after call, the
  gradient of the convolution of the explicitly padded input."""
  x = jax.random.normal(jax.random.key(0), (2, 2, 3, 3))
  k = jax.random.normal(jax.random.key(1), (2, 2, 3, 4))
  padding = ((2, 0), (1, 1))
  padded = lambda x: jnp.pad(x, ((0, 0), *padding, (0, 0)))
  expected = jax.grad(lambda x: jnp.sum(jnp.sin(lax.conv_general_dilated(
      padded(x), k, (1, 1), "VALID", dimension_numbers=_NHWC))))(x)
  for strides in ((1, 1), (2, 1)) * 3:
    got = jax.grad(lambda x: jnp.sum(jnp.sin(conv.conv_general_dilated(
        x, k, strides, padding, dimension_numbers=_NHWC))))(x)
    reference = expected if strides == (1, 1) else jax.grad(lambda x: jnp.sum(jnp.sin(
        lax.conv_general_dilated(padded(x), k, strides, "VALID", dimension_numbers=_NHWC))))(x)
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5)


def _lhs_dilations(jaxpr) -> list:
  """The lhs_dilation of every convolution in `jaxpr` and in its sub-jaxprs."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive is lax.conv_general_dilated_p:
      found.append(tuple(eqn.params["lhs_dilation"]))
    for sub in jax_core.jaxprs_in_params(eqn.params):
      found.extend(_lhs_dilations(sub))
  return found


@pytest.mark.parametrize("strides, padding, kernel", [((2, 2), 2, (4, 4)), ((2, 3), 1, (3, 2)),
                                                      ((1, 1), 0, (3, 3))])
def test_conv_transpose_equals_flax(strides, padding, kernel):
  """`conv.ConvTranspose` has nn.ConvTranspose(transpose_kernel=True)'s parameters (names,
  shapes, initial values) and its values and gradients."""
  x = jax.random.normal(jax.random.key(0), (3, 5, 6, 7))
  ours = conv.ConvTranspose(4, kernel, strides, padding=padding)
  flax_own = nn.ConvTranspose(4, kernel, strides, padding=padding, transpose_kernel=True)
  variables = flax_own.init(jax.random.key(1), x)
  jax.tree.map(np.testing.assert_array_equal, ours.init(jax.random.key(1), x), variables)
  value_and_grads = lambda layer: jax.jit(jax.value_and_grad(
      lambda v, x: jnp.sum(jnp.sin(layer.apply(v, x))), argnums=(0, 1)))(variables, x)
  for e, g in zip(jax.tree.leaves(value_and_grads(flax_own)),
                  jax.tree.leaves(value_and_grads(ours))):
    np.testing.assert_allclose(g, e, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("strides, padding", [((1, 1), "SAME"), ((2, 3), ((0, 2), (-1, 1)))])
def test_grayscale_inputs_are_convolved_by_taps(strides, padding):
  """A one-channel input (a grayscale model's first layer) is convolved by broadcast products,
  one per kernel tap, with no convolution op in the forward pass: the same values and both
  gradients as lax's, strides and negative padding included; three channels use lax's."""
  x = jax.random.normal(jax.random.key(0), (3, 11, 10, 1))
  k = jax.random.normal(jax.random.key(1), (5, 3, 1, 4))
  expected = _value_and_grads(lax.conv_general_dilated, x, k, strides, padding)
  got = _value_and_grads(conv.conv_general_dilated, x, k, strides, padding)
  for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
  forward = lambda x, k: jax.make_jaxpr(functools.partial(
      _loss, conv.conv_general_dilated, strides=strides, padding=padding))(x, k).jaxpr
  taps = forward(x, k)
  assert _count(taps, lax.conv_general_dilated_p) == 0 and _count(taps, lax.mul_p) >= 15
  rgb = forward(x.repeat(3, -1), k.repeat(3, 2))
  assert _count(rgb, lax.conv_general_dilated_p) == 1


def test_uses_the_explicit_input_gradient():
  x, k = jnp.ones((1, 6, 6, 2)), jnp.ones((3, 3, 2, 5))
  jaxpr = str(jax.make_jaxpr(jax.grad(_loss, argnums=1), static_argnums=(0, 3, 4))(
      conv.conv_general_dilated, x, k, (1, 1), "SAME"))
  assert "custom_vjp" in jaxpr and "rev" in jaxpr  # the kernel flip is an explicit op


def test_kernel_gradient_is_matrix_products():
  """The kernel gradient is one dot_general per kernel tap (9 for a 3x3 kernel), where JAX's
  own is a second convolution (its program: the forward convolution and the kernel-gradient
  one, no dot_general; the custom_vjp's: the forward and the input-gradient convolutions)."""
  x, k = jnp.ones((2, 6, 6, 2)), jnp.ones((3, 3, 2, 5))
  program = lambda conv_fn: jax.make_jaxpr(jax.grad(_loss, argnums=2), static_argnums=(0, 3, 4))(
      conv_fn, x, k, (2, 2), "SAME").jaxpr
  fast, own = program(conv.conv_general_dilated), program(lax.conv_general_dilated)
  assert _count(fast, lax.dot_general_p) == 9 and _count(own, lax.dot_general_p) == 0
  assert _count(own, lax.conv_general_dilated_p) == 2


@pytest.mark.parametrize("avx512", [False, True])
@pytest.mark.parametrize("strides, padding", [((1, 1), "SAME"), ((2, 2), ((0, 2), (-1, 1)))])
def test_kernel_gradient_by_taps_or_by_jax_s_rule_per_host(monkeypatch, avx512, strides,
                                                            padding):
  """With 8 or more input channels the kernel gradient is JAX's own convolution on a host with
  AVX-512 and one dot_general per tap elsewhere (`conv._kernel_gradient`); both equal lax's,
  negative padding (cropping) included."""
  monkeypatch.setattr(conv, "_host_has_avx512", lambda: avx512)
  x = jax.random.normal(jax.random.key(0), (2, 7, 8, 8))
  k = jax.random.normal(jax.random.key(1), (3, 3, 8, 5))
  loss = lambda conv_fn: functools.partial(_loss, conv_fn, strides=strides, padding=padding)
  program = jax.make_jaxpr(jax.grad(loss(conv.conv_general_dilated), argnums=1))(x, k).jaxpr
  assert _count(program, lax.dot_general_p) == (0 if avx512 else 9)

  def padded_first(x, k, strides, padding, **kwargs):  # lax.pad crops; no negative padding left
    pads = [(0, 0, 0), *((lo, hi, 0) for lo, hi in padding), (0, 0, 0)]
    return lax.conv_general_dilated(lax.pad(x, 0.0, pads), k, strides, "VALID", **kwargs)
  reference = lax.conv_general_dilated if padding == "SAME" else padded_first
  expected = jax.grad(loss(reference), argnums=1)(x, k)
  got = jax.grad(loss(conv.conv_general_dilated), argnums=1)(x, k)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_bfloat16_gradients_match_lax():
  """bfloat16 operands: both gradients in bfloat16, within bfloat16 rounding of JAX's own."""
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3)).astype(jnp.bfloat16)
  k = (0.3 * jax.random.normal(jax.random.key(1), (3, 3, 3, 4))).astype(jnp.bfloat16)
  expected = _value_and_grads(lax.conv_general_dilated, x, k, (1, 1), "SAME")
  got = _value_and_grads(conv.conv_general_dilated, x, k, (1, 1), "SAME")
  for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    assert g.dtype == e.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.float32(g), np.float32(e), rtol=5e-2, atol=5e-2)


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


@pytest.mark.parametrize("name, shape", [
    ("small_cnn", (12, 12, 1)),
    pytest.param("resnet18", (8, 8, 3), marks=pytest.mark.slow)])  # about 40 s to compile
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


# The other layouts of the drop-in, and `conv.fast_convolutions`: a model's convolutions in any
# 2-D layout, rewritten without touching its code.

_LAYOUTS = [("NCHW", "OIHW", "NCHW"), ("NHWC", "OIHW", "NHWC"), ("NCHW", "HWIO", "NHWC"),
            ("HWNC", "IOHW", "NCWH")]


@pytest.mark.parametrize("layout", _LAYOUTS + [None], ids=str)
@pytest.mark.parametrize("strides, padding", [((1, 1), "SAME"), ((2, 1), ((1, 0), (2, 1)))])
def test_drop_in_in_other_layouts_equals_lax(layout, strides, padding):
  layout_or_default = layout or ("NCHW", "OIHW", "NCHW")  # lax's default
  x = _in_layout(jax.random.normal(jax.random.key(0), (2, 7, 6, 3)), layout_or_default[0])
  k = _in_layout(jax.random.normal(jax.random.key(1), (3, 2, 3, 4)), layout_or_default[1])

  def loss(conv_fn, x, k):
    return jnp.sum(jnp.sin(conv_fn(x, k, strides, padding, dimension_numbers=layout)))

  expected = jax.jit(jax.value_and_grad(functools.partial(loss, lax.conv_general_dilated),
                                        argnums=(0, 1)))(x, k)
  got = jax.jit(jax.value_and_grad(functools.partial(loss, conv.conv_general_dilated),
                                   argnums=(0, 1)))(x, k)
  for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
  jaxpr = str(jax.make_jaxpr(jax.grad(functools.partial(loss, conv.conv_general_dilated)))(x, k))
  assert "custom_vjp_call" in jaxpr


def _in_layout(array, layout):
  """`array`, given as NHWC (activations) or HWIO (kernels), transposed to `layout`."""
  source = "NHWC" if "N" in layout else "HWIO"
  return jnp.transpose(array, [source.index(axis) for axis in layout])


def _torch_style_cnn():
  """Plain-lax NCHW/OIHW CNN: conv 6 3x3 pad 1 - relu - conv 8 3x3 stride 2 pad (1, 0) (0, 1) -
  relu - dense 5; x (B, 1, 9, 9)."""
  keys = jax.random.split(jax.random.key(2), 4)
  params = {"c1": 0.5 * jax.random.normal(keys[0], (6, 1, 3, 3)), "b1": jnp.full((6,), 0.1),
            "c2": 0.3 * jax.random.normal(keys[1], (8, 6, 3, 3)),
            "w": 0.2 * jax.random.normal(keys[2], (8 * 4 * 4, 5))}

  def apply(params, x):
    nchw = ("NCHW", "OIHW", "NCHW")
    h = lax.conv_general_dilated(x, params["c1"], (1, 1), ((1, 1), (1, 1)),
                                 dimension_numbers=nchw)
    h = jax.nn.relu(h + params["b1"][:, None, None])
    h = jax.nn.relu(lax.conv_general_dilated(h, params["c2"], (2, 2), ((1, 0), (0, 1)),
                                             dimension_numbers=nchw))
    return h.reshape(h.shape[0], -1) @ params["w"]

  return apply, params, jax.random.uniform(keys[3], (4, 1, 9, 9))


class _FlaxCNN(nn.Module):
  """nn.Conv layers in Flax's NHWC/HWIO; x (B, 9, 9, 2). `train` only for `BoundModel`."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    x = nn.relu(nn.Conv(6, (3, 3), strides=2, padding="SAME")(x))
    x = nn.relu(nn.Conv(4, (2, 2), padding=((1, 0), (0, 1)))(x))
    return nn.Dense(5)(x.reshape(x.shape[0], -1))


def _flax_cnn():
  x = jax.random.uniform(jax.random.key(3), (4, 9, 9, 2))
  model = _FlaxCNN()
  return model.apply, model.init(jax.random.key(4), x), x


def _nhwc_oihw_cnn():
  """NHWC activations with OIHW kernels, strides (1, 2), VALID then explicit padding; x (B, 8,
  10, 3)."""
  keys = jax.random.split(jax.random.key(5), 3)
  params = (0.4 * jax.random.normal(keys[0], (5, 3, 3, 2)),
            0.3 * jax.random.normal(keys[1], (5, 5, 2, 2)))

  def apply(params, x):
    spec = ("NHWC", "OIHW", "NHWC")
    h = jnp.tanh(lax.conv_general_dilated(x, params[0], (1, 2), "VALID", dimension_numbers=spec))
    h = lax.conv_general_dilated(h, params[1], (1, 1), ((0, 1), (1, 0)), dimension_numbers=spec)
    return jnp.mean(h, axis=(1, 2))

  return apply, params, jax.random.uniform(keys[2], (4, 8, 10, 3))


_CUSTOM_VJP = jax_core.primitives.custom_vjp_call_p
_MODELS = {"torch_style_nchw": _torch_style_cnn, "flax_nhwc": _flax_cnn,
           "nhwc_oihw": _nhwc_oihw_cnn}


def _ce(apply, params, x):
  return jnp.sum(jax.nn.log_softmax(apply(params, x))[:, 0])


def _conv_specs(jaxpr, specs=None):
  """(lhs_spec, rhs_spec, out_spec) of every convolution in `jaxpr` and its nested jaxprs."""
  specs = [] if specs is None else specs
  for eqn in jaxpr.eqns:
    if eqn.primitive is lax.conv_general_dilated_p:
      specs.append(tuple(eqn.params["dimension_numbers"]))
    for sub in jax_core.jaxprs_in_params(eqn.params):
      _conv_specs(sub, specs)
  return specs


def _count(jaxpr, primitive):
  """Equations of `primitive` in `jaxpr` and its nested jaxprs."""
  return sum((eqn.primitive is primitive) + sum(_count(sub, primitive) for sub in
                                                jax_core.jaxprs_in_params(eqn.params))
             for eqn in jaxpr.eqns)


@pytest.mark.parametrize("name", sorted(_MODELS))
def test_fast_convolutions_values_and_gradients_equal_the_model(name):
  """Values (called eagerly), and under jit the loss and its input and parameter gradients."""
  apply, params, x = _MODELS[name]()
  fast = conv.fast_convolutions(apply)
  np.testing.assert_allclose(fast(params, x), apply(params, x), rtol=1e-5, atol=1e-6)
  value_and_grads = lambda apply: jax.jit(jax.value_and_grad(
      functools.partial(_ce, apply), argnums=(0, 1)))(params, x)
  expected, got = value_and_grads(apply), value_and_grads(fast)
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(_MODELS))
def test_fast_convolutions_input_gradient_is_the_explicit_form(name):
  """Each of the two convolutions becomes the custom_vjp; in the input gradient's jaxpr every
  convolution on activations is NHWC/HWIO/NHWC, i.e. the input-gradient convolutions take an
  explicit flipped, swapped HWIO kernel, not JAX's transpose form (kernel features swapped in
  the dimension numbers), which the untransformed NCHW model has. (The forward pass of a layer
  with a one-channel input has no convolution op: `test_grayscale_inputs_are_convolved_by_taps`.)"""
  apply, params, x = _MODELS[name]()
  grad_x = lambda apply: jax.grad(functools.partial(_ce, apply, params))
  assert _count(jax.make_jaxpr(conv.fast_convolutions(apply))(params, x).jaxpr,
                _CUSTOM_VJP) == 2
  specs = _conv_specs(jax.make_jaxpr(grad_x(conv.fast_convolutions(apply)))(x).jaxpr)
  nhwc = tuple(lax.conv_dimension_numbers((1,) * 4, (1,) * 4, _NHWC))
  activations = [spec for spec in specs if spec[0] == nhwc[0]]
  assert len(activations) >= 3 and all(spec == nhwc for spec in activations)
  if name == "torch_style_nchw":
    nchw_transposed = ((0, 1, 2, 3), (1, 0, 2, 3), (0, 1, 2, 3))
    assert nchw_transposed in _conv_specs(jax.make_jaxpr(grad_x(apply))(x).jaxpr)


def test_fast_convolutions_leaves_other_convolutions_unchanged():
  """rhs-dilated, grouped, strided lhs-dilated and 1-D convolutions, and one inside a loop
  body, stay `lax.conv_general_dilated`, with the same values and gradients."""
  x = jax.random.normal(jax.random.key(6), (2, 4, 9, 9))
  k = jax.random.normal(jax.random.key(7), (4, 4, 3, 3))
  nchw = ("NCHW", "OIHW", "NCHW")
  convs = [
      lambda x: lax.conv_general_dilated(x, k, (1, 1), "SAME", rhs_dilation=(2, 2),
                                         dimension_numbers=nchw),
      lambda x: lax.conv_general_dilated(x, k[:, :2], (1, 1), "SAME", feature_group_count=2,
                                         dimension_numbers=nchw),
      lambda x: lax.conv_general_dilated(x, k, (2, 2), ((1, 1), (1, 1)), lhs_dilation=(2, 2),
                                         dimension_numbers=nchw),
      lambda x: lax.conv_general_dilated(x[..., 0], k[..., 0], (1,), "SAME",
                                         dimension_numbers=("NCH", "OIH", "NCH")),
      lambda x: lax.fori_loop(0, 2, lambda _, h: jnp.tanh(lax.conv_general_dilated(
          h, k, (1, 1), "SAME", dimension_numbers=nchw)), x),
  ]
  value_and_grad = lambda fn: jax.jit(jax.value_and_grad(lambda x: jnp.sum(jnp.sin(fn(x)))))(x)
  for fn in convs:
    fast = conv.fast_convolutions(fn)
    assert "custom_vjp" not in str(jax.make_jaxpr(jax.grad(lambda x: jnp.sum(fast(x))))(x))
    for e, g in zip(value_and_grad(fn), value_and_grad(fast)):
      np.testing.assert_allclose(g, e, rtol=1e-6)


def test_fast_convolutions_rewrites_a_flax_transposed_convolution():
  """A user's `nn.ConvTranspose` (NCHW input transposed in the model): rewritten phase by phase,
  with the same values and gradients."""
  layer = nn.ConvTranspose(3, (4, 4), (2, 2), padding=2, transpose_kernel=True)
  x = jax.random.normal(jax.random.key(8), (2, 4, 5, 5))
  variables = layer.init(jax.random.key(9), jnp.transpose(x, (0, 2, 3, 1)))
  model = lambda v, x: jnp.transpose(layer.apply(v, jnp.transpose(x, (0, 2, 3, 1))), (0, 3, 1, 2))
  fast = conv.fast_convolutions(model)
  assert _count(jax.make_jaxpr(fast)(variables, x).jaxpr, _CUSTOM_VJP) == 4
  assert _lhs_dilations(jax.make_jaxpr(fast)(variables, x).jaxpr) == [(1, 1)] * 4
  value_and_grad = lambda fn: jax.jit(jax.value_and_grad(
      lambda v, x: jnp.sum(jnp.sin(fn(v, x))), argnums=(0, 1)))(variables, x)
  for e, g in zip(jax.tree.leaves(value_and_grad(model)), jax.tree.leaves(value_and_grad(fast))):
    np.testing.assert_allclose(g, e, rtol=2e-5, atol=2e-5)


def test_fast_convolutions_rewrites_tiling_max_pools_only():
  """A PyTorch-style `F.max_pool2d(x, 2)` (reduce_window max, NCHW) becomes `pooling.max_pool`,
  whose gradient has no select-and-scatter, with the same values and input gradient (ties
  included: the input holds plateaus); an overlapping 3x3 stride-2 pool stays reduce_window."""
  _, params, _ = _torch_style_cnn()
  x = jnp.round(2 * jax.random.uniform(jax.random.key(8), (4, 1, 9, 9)))
  pool = lambda h: lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
  overlapping = lambda h: lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, 3, 3), (1, 1, 2, 2),
                                            ((0, 0), (0, 0), (1, 1), (1, 1)))
  for pooled, rewritten in ((pool, True), (overlapping, False)):
    def model(params, x, pooled=pooled):
      h = jax.nn.relu(lax.conv_general_dilated(x, params["c1"], (1, 1), ((1, 1), (1, 1)),
                                               dimension_numbers=("NCHW", "OIHW", "NCHW")))
      return jnp.sum(jnp.sin(pooled(h)))
    fast = conv.fast_convolutions(model)
    grad_x = lambda fn: jax.jit(jax.grad(fn, argnums=1))(params, x)
    program = str(jax.make_jaxpr(jax.grad(fast, argnums=1))(params, x))
    assert ("select_and_scatter" not in program) is rewritten
    np.testing.assert_allclose(fast(params, x), model(params, x), rtol=1e-6)
    np.testing.assert_allclose(grad_x(fast), grad_x(model), rtol=1e-6, atol=1e-7)


def test_fast_convolutions_nested_jit_remat_pytrees_and_vmap():
  """A convolution inside a nested `jax.jit` and one inside `jax.checkpoint` are rewritten;
  pytree arguments and outputs survive; vmap and jit compose."""
  apply, params, x = _torch_style_cnn()
  inner = jax.jit(lambda p, x: {"logits": apply(p, x), "scaled": 2.0 * x})

  def model(params, x, *, scale):
    out = inner(params, x)
    out["remat"] = jax.checkpoint(lambda x: lax.conv_general_dilated(
        x, params["c1"], (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW")))(x)
    return out, scale * out["logits"]

  fast = conv.fast_convolutions(model)
  expected = model(params, x, scale=3.0)
  got = jax.jit(functools.partial(fast, scale=3.0))(params, x)
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
  jaxpr = jax.make_jaxpr(functools.partial(fast, scale=3.0))(params, x).jaxpr
  assert _count(jaxpr, _CUSTOM_VJP) == 3 and _count(jaxpr, jax_core.primitives.remat_p) == 1
  loss = lambda f: lambda p: jnp.sum(jnp.sin(f(p, x, scale=3.0)[0]["remat"])) + jnp.sum(
      f(p, x, scale=3.0)[1])
  for e, g in zip(jax.tree.leaves(jax.grad(loss(model))(params)),
                  jax.tree.leaves(jax.grad(loss(fast))(params))):
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
  batched = jax.vmap(lambda x: conv.fast_convolutions(apply)(params, x))(x[:, None])
  np.testing.assert_allclose(batched[:, 0], apply(params, x), rtol=1e-5, atol=1e-6)


def test_fast_convolutions_inside_attacks_gives_the_same_attacks():
  """PGD (looped) on a closure over the NCHW model's parameters, and APGD on a `BoundModel` of
  the Flax model, which stays a pytree (its variables are the jit arguments): the same x_adv
  as on the untransformed model, same key."""
  apply, params, x = _torch_style_cnn()
  plain = functools.partial(apply, params)
  pgd = functools.partial(attacks.pgd, x=x, y=jnp.arange(4) % 5, key=jax.random.key(8),
                          eps=0.1, step_size=0.03, steps=4, unroll=False)
  expected, got = pgd(plain), pgd(conv.fast_convolutions(plain))
  np.testing.assert_allclose(got, expected, atol=1e-6)
  assert float(jnp.abs(expected - x).max()) > 0.05  # the attack moved

  apply, variables, x = _flax_cnn()
  bound = models.BoundModel(_FlaxCNN(), variables, "eval")
  fast = conv.fast_convolutions(bound)
  assert isinstance(fast, jax.tree_util.Partial)
  assert len(jax.tree.leaves(fast)) == len(jax.tree.leaves(variables))
  apgd = functools.partial(attacks.apgd, x=x, y=jnp.arange(4) % 5, key=jax.random.key(9),
                           eps=0.1, steps=3)
  np.testing.assert_allclose(apgd(fast), apgd(bound), atol=1e-6)


def test_fast_convolutions_forward_mode_inside_lax_convolutions():
  apply, params, x = _torch_style_cnn()
  fast = functools.partial(conv.fast_convolutions(apply), params)
  with pytest.raises(TypeError, match="forward-mode"):
    jax.jvp(fast, (x,), (jnp.ones_like(x),))
  with conv.lax_convolutions():
    assert "custom_vjp" not in str(jax.make_jaxpr(fast)(x))
    _, tangent = jax.jvp(fast, (x,), (jnp.ones_like(x),))
  _, expected = jax.jvp(functools.partial(apply, params), (x,), (jnp.ones_like(x),))
  np.testing.assert_allclose(tangent, expected, rtol=1e-5, atol=1e-6)


def test_fast_convolutions_is_exported():
  assert models.fast_convolutions is conv.fast_convolutions
