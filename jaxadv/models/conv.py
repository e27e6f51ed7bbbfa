"""2-D convolution whose input gradient is an explicit forward convolution: fast in CPU loops.

The gradient of y = conv(x, k; stride s, padding (p_lo, p_hi)) with respect to x is

    dL/dx = conv(dilate_s(dL/dy), k̃; stride 1, padding (K - 1 - p_lo, N - 1 - (O - 1) s + p_lo))

per spatial axis (input size N, output size O, kernel size K), with k̃ the kernel flipped in
both spatial axes and its input/output features swapped: k̃[i, j, o, c] = k[K1-1-i, K2-1-j, c, o].
JAX's own transpose rule computes the same thing, but leaves the flip and the feature swap to
XLA; XLA:CPU materialises them outside loops and then runs the convolution with its fast
library (YNNPACK), yet inside a `while` loop (every `lax.fori_loop` of APGD, FAB, ...) it does
not, and runs the input-gradient convolutions on its generic emitter, several times slower
(docs/performance.md, section 1). Here the flipped, swapped kernel is an explicit array, so the
gradient is a plain NHWC/HWIO convolution everywhere. The kernel gradient is JAX's own.

Values and gradients equal `lax.conv_general_dilated`'s (to float rounding); only the program
differs. Models use it on the CPU backend only (`for_backend`): on GPUs and TPUs the compilers
recognise JAX's backward convolutions and have no such slow path. Being a `custom_vjp`, it
supports reverse-mode differentiation only; trace a model inside `lax_convolutions()` for
forward mode.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


class _Spec(NamedTuple):
  """Static arguments of the convolution, hashable."""
  strides: tuple[int, int]
  padding: tuple[tuple[int, int], tuple[int, int]]
  precision: object


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(lhs: jax.Array, rhs: jax.Array, spec: _Spec) -> jax.Array:
  return lax.conv_general_dilated(lhs, rhs, spec.strides, spec.padding, dimension_numbers=_NHWC,
                                  precision=spec.precision)


def _conv_fwd(lhs, rhs, spec):
  return _conv(lhs, rhs, spec), (lhs, rhs)


def _input_gradient_padding(spec: _Spec, lhs_shape, rhs_shape, out_shape):
  """(before, after) padding per spatial axis of the input-gradient convolution."""
  pads = []
  for axis, (stride, (pad_lo, _)) in enumerate(zip(spec.strides, spec.padding)):
    size, kernel, out = lhs_shape[1 + axis], rhs_shape[axis], out_shape[1 + axis]
    pads.append((kernel - 1 - pad_lo, size - 1 - (out - 1) * stride + pad_lo))
  return tuple(pads)


def _conv_bwd(spec, residuals, grad_out):
  lhs, rhs = residuals
  swapped_kernel = jnp.transpose(jnp.flip(rhs, (0, 1)), (0, 1, 3, 2))
  grad_lhs = lax.conv_general_dilated(
      grad_out.astype(lhs.dtype), swapped_kernel.astype(lhs.dtype), (1, 1),
      _input_gradient_padding(spec, lhs.shape, rhs.shape, grad_out.shape),
      lhs_dilation=spec.strides, dimension_numbers=_NHWC, precision=spec.precision)
  _, kernel_vjp = jax.vjp(
      lambda kernel: lax.conv_general_dilated(lhs, kernel, spec.strides, spec.padding,
                                              dimension_numbers=_NHWC, precision=spec.precision),
      rhs)
  return grad_lhs, kernel_vjp(grad_out)[0]


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
  """Drop-in for `lax.conv_general_dilated` (the signature Flax's `nn.Conv` calls) with the
  explicit input gradient of this module.

  Covered: 2-D NHWC inputs (B, H, W, C), HWIO kernels (K1, K2, C, F), any strides and padding
  (a string or (lo, hi) pairs), no dilation, one feature group; output (B, H', W', F). Anything
  else goes to `lax.conv_general_dilated` unchanged.
  """
  plain = functools.partial(
      lax.conv_general_dilated, lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count, batch_group_count=batch_group_count,
      precision=precision, preferred_element_type=preferred_element_type)
  nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC) if lhs.ndim == 4 else None
  undilated = all(d == 1 for d in (lhs_dilation or (1, 1)) + (rhs_dilation or (1, 1)))
  if (lhs.ndim != 4 or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != nhwc
      or not undilated or feature_group_count != 1 or batch_group_count != 1
      or preferred_element_type is not None):
    return plain()
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  spec = _Spec(tuple(window_strides), tuple(tuple(int(p) for p in pair) for pair in padding),
               precision)
  return _conv(lhs, rhs, spec)


_LAX_ONLY = contextvars.ContextVar("jaxadv_lax_convolutions", default=False)


@contextlib.contextmanager
def lax_convolutions():
  """Models traced inside this context use `lax.conv_general_dilated` on every backend.

  For forward-mode differentiation (`jax.jvp`, `jax.jacfwd`, `jax.hessian`) of a model on CPU,
  which the `custom_vjp` of this module does not support, and for comparisons. The choice is
  made when a model is traced: a function jitted before is not retraced by entering the context.
  """
  token = _LAX_ONLY.set(True)
  try:
    yield
  finally:
    _LAX_ONLY.reset(token)


def for_backend():
  """The convolution models should use: this module's on the CPU backend (where it avoids a
  slow path), `None` (Flax's default, `lax.conv_general_dilated`) elsewhere and inside
  `lax_convolutions()`."""
  if _LAX_ONLY.get() or jax.default_backend() != "cpu":
    return None
  return conv_general_dilated


def conv_layer(*args, **kwargs) -> nn.Conv:
  """`nn.Conv(*args, **kwargs)` computing with `for_backend()`'s convolution; same parameters
  and names as a plain `nn.Conv`, so checkpoints are interchangeable."""
  return nn.Conv(*args, conv_general_dilated=for_backend(), **kwargs)
