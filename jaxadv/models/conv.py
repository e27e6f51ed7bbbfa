"""2-D convolution whose input gradient is an explicit forward convolution: fast in CPU loops.

The gradient of y = conv(x, k; stride s, padding (p_lo, p_hi)) with respect to x is

    dL/dx = conv(dilate_s(dL/dy), k̃; stride 1, padding (K - 1 - p_lo, N - 1 - (O - 1) s + p_lo))

per spatial axis (input size N, output size O, kernel size K), with k̃ the kernel flipped in
both spatial axes and its input/output features swapped: k̃[i, j, o, c] = k[K1-1-i, K2-1-j, c, o].
JAX's own transpose rule computes the same thing, but leaves the flip and the feature swap to
XLA; XLA:CPU materialises them outside loops and then runs the convolution with its fast
library (YNNPACK), yet inside a `while` loop (every `lax.fori_loop` of APGD, FAB, ...) it does
not, and runs the input-gradient convolutions on its generic emitter, several times slower
(docs/performance.md, "Explicit input-gradient convolution in loops"). Here the flipped,
swapped kernel is an explicit array, so the gradient is a plain NHWC/HWIO convolution
everywhere. The kernel gradient depends on the host (`_kernel_gradient`): JAX's transpose rule
gives XLA:CPU a convolution with the batch as its feature axis, a slow path on AVX2 CPUs (1.4-2.8x
slower per layer at batch 128 than one matrix product per kernel tap) but the faster form on
CPUs with AVX-512 (docs/performance.md, "Explicit kernel gradient"). A one-channel input (a
grayscale image) is convolved forward as a sum of broadcast products, one per kernel tap
(`_single_channel_conv`): XLA:CPU's convolution is several times slower on one channel. A
transposed convolution convolves a zero-dilated array; it runs as one stride-1 convolution per
output phase (`_dilated_input_conv`), which skips the inserted zeros and XLA:CPU's slow path for
lhs dilation (the pix2pix U-Net's input gradient 2.2x faster, docs/performance.md, "Transposed
convolutions by phases").

Values and gradients equal `lax.conv_general_dilated`'s (to float rounding); only the program
differs. Models use it on the CPU backend only (`for_backend`): on GPUs and TPUs the compilers
recognise JAX's backward convolutions and have no such slow path. Being a `custom_vjp`, it
supports reverse-mode differentiation only; trace a model inside `lax_convolutions()` for
forward mode.

Three ways in. The zoo's layers are `conv_layer` and `ConvTranspose`. `conv_general_dilated` is
a drop-in for `lax.conv_general_dilated` (Flax's `nn.Conv(..., conv_general_dilated=...)`, or a
direct call) in any 2-D layout: other layouts than NHWC/HWIO are transposed to it and back
(little extra work: XLA:CPU transposes an NCHW convolution's operands to its own layout anyway).
`fast_convolutions(apply_fn)` rewrites the convolutions of a model one did not write this way
(a PyTorch-style NCHW network in plain `lax`, a Flax `nn.Conv` model) without touching its
code, and with them its tiling max-pools, whose `reduce_window` gradient is the other slow
kernel of XLA:CPU (`jaxadv.models.pooling`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jax_core

from jaxadv.models import pooling

_NHWC = ("NHWC", "HWIO", "NHWC")


class _Spec(NamedTuple):
  """Static arguments of the convolution, hashable."""
  strides: tuple[int, int]
  padding: tuple[tuple[int, int], tuple[int, int]]
  precision: object


def _lax_conv(lhs: jax.Array, rhs: jax.Array, spec: _Spec) -> jax.Array:
  """lax's NHWC/HWIO convolution. Negative padding (cropping) is applied to lhs by `lax.pad`
  first and the convolution gets the rest: XLA:CPU's convolution reads uninitialised memory for
  some negative paddings (values ~1e20 that change from call to call, seen with JAX's own input
  gradient of conv(x (2, 2, 3, 3), k (2, 2, 3, 4); padding (2, 0) on the first axis), whose
  padding is K - 1 - 2 = -1); the phases of `_dilated_input_conv` produce such paddings."""
  crop = [(0, 0, 0)] + [(min(lo, 0), min(hi, 0), 0) for lo, hi in spec.padding] + [(0, 0, 0)]
  if any(lo or hi for lo, hi, _ in crop):
    lhs = lax.pad(lhs, jnp.zeros((), lhs.dtype), crop)
  padding = tuple((max(lo, 0), max(hi, 0)) for lo, hi in spec.padding)
  return lax.conv_general_dilated(lhs, rhs, spec.strides, padding, dimension_numbers=_NHWC,
                                  precision=spec.precision)


def _tap_windows(lhs: jax.Array, spec: _Spec, kernel_hw, out_hw):
  """Yields (i, j, window) for each kernel tap: the window of the padded input lhs (B, H, W, C)
  that tap (i, j) of a convolution with `spec` multiplies, x_pad[:, s1 o1 + i, s2 o2 + j, :]
  for the outputs o < out_hw, shape (B, O1, O2, C)."""
  padded = lax.pad(lhs, jnp.zeros((), lhs.dtype),
                   [(0, 0, 0), (*spec.padding[0], 0), (*spec.padding[1], 0), (0, 0, 0)])
  (s1, s2), (o1, o2) = spec.strides, out_hw
  for i in range(kernel_hw[0]):
    for j in range(kernel_hw[1]):
      yield i, j, lax.slice(padded, (0, i, j, 0), (padded.shape[0], i + (o1 - 1) * s1 + 1,
                                                   j + (o2 - 1) * s2 + 1, padded.shape[3]),
                            (1, s1, s2, 1))


def _single_channel_conv(lhs: jax.Array, rhs: jax.Array, spec: _Spec) -> jax.Array:
  """A convolution of a one-channel input (a grayscale image) as a sum of broadcast products,
  one per kernel tap:

      z[b, o1, o2, f] = sum_{i, j} x_pad[b, s1 o1 + i, s2 o2 + j, 0] k[i, j, 0, f],

  lhs (B, H, W, 1), rhs (K1, K2, 1, F), strides s; z (B, O1, O2, F), accumulated in float32 or
  wider. XLA:CPU's convolution is slow on one input channel: forward with ReLU, one device, AMD
  EPYC AVX-512, (96, 28, 28, 1) -> 16 features 3x3 took 2.38 ms where these products take
  0.27 ms; a Square Attack query of the half-width MNIST SmallCNN on 96 points 10.0 ms against
  7.6 ms. The gradients stay those of `_conv`. RGB inputs stay lax's: by taps, the CIFAR
  SmallCNN's attack iteration ran 17% faster but its PGD-10 AT step 40-50% slower
  (docs/performance.md, "Grayscale first layers by taps")."""
  out_hw = [(n + lo + hi - k) // stride + 1 for n, (lo, hi), k, stride
            in zip(lhs.shape[1:3], spec.padding, rhs.shape[:2], spec.strides)]
  dtype = jnp.result_type(lhs, rhs)
  wide = jnp.promote_types(dtype, jnp.float32)
  return sum(window.astype(wide) * rhs[i, j, 0].astype(wide)
             for i, j, window in _tap_windows(lhs, spec, rhs.shape[:2], out_hw)).astype(dtype)


def _forward(lhs: jax.Array, rhs: jax.Array, spec: _Spec) -> jax.Array:
  """The convolution of `_conv`: `_single_channel_conv` for a one-channel input, else
  `_lax_conv`."""
  if rhs.shape[2] == 1:
    return _single_channel_conv(lhs, rhs, spec)
  return _lax_conv(lhs, rhs, spec)


_conv = jax.custom_vjp(_forward, nondiff_argnums=(2,))  # `_forward`, gradients below


def _conv_fwd(lhs, rhs, spec):
  return _conv(lhs, rhs, spec), (lhs, rhs)


def _input_gradient_padding(spec: _Spec, lhs_shape, rhs_shape, out_shape):
  """(before, after) padding per spatial axis of the input-gradient convolution."""
  pads = []
  for axis, (stride, (pad_lo, _)) in enumerate(zip(spec.strides, spec.padding)):
    size, kernel, out = lhs_shape[1 + axis], rhs_shape[axis], out_shape[1 + axis]
    pads.append((kernel - 1 - pad_lo, size - 1 - (out - 1) * stride + pad_lo))
  return tuple(pads)


@functools.cache
def _host_has_avx512() -> bool:
  """Whether this machine's CPU has AVX-512 (read from /proc/cpuinfo; False where there is none)."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
      return any(line.startswith("flags") and " avx512f" in line for line in cpuinfo)
  except OSError:
    return False


def _kernel_gradient(lhs: jax.Array, grad_out: jax.Array, kernel_shape, spec: _Spec
                     ) -> jax.Array:
  """dL/dk (K1, K2, C, F) of y = conv(x, k) for x (B, H, W, C) and dL/dy (B, H', W', F):

      dL/dk[i, j] = sum_{b, h, w} x_pad[b, h s1 + i, w s2 + j, :]^T dL/dy[b, h, w, :]   (C, F)

  with x_pad = x padded by `spec.padding` (lax.pad: negative padding crops). JAX's transpose
  rule computes these sums as one convolution with the batch as the feature axis; XLA:CPU runs
  it fast on CPUs with AVX-512 but on a slow generic path on AVX2 CPUs, where one matrix product
  per tap (`_kernel_gradient_by_taps`) is 1.4-2.8x faster per layer. With AVX-512 the taps are
  2-4x slower for 32-64 input channels and still faster for fewer than 8 (an RGB stem), so:
  the taps without AVX-512 or below 8 channels, JAX's rule otherwise (docs/performance.md,
  "Explicit kernel gradient")."""
  if _host_has_avx512() and lhs.shape[-1] >= 8:
    _, pullback = jax.vjp(lambda kernel: _lax_conv(lhs, kernel, spec),
                          jnp.zeros(kernel_shape, lhs.dtype))
    return pullback(grad_out.astype(lhs.dtype))[0]
  return _kernel_gradient_by_taps(lhs, grad_out, kernel_shape, spec)


def _kernel_gradient_by_taps(lhs: jax.Array, grad_out: jax.Array, kernel_shape, spec: _Spec
                             ) -> jax.Array:
  """`_kernel_gradient` as one GEMM per kernel tap (i, j): x_pad's window of tap (i, j),
  (B H' W', C), transposed, times dL/dy (B H' W', F)."""
  grad_out = grad_out.astype(lhs.dtype)
  taps = [jnp.einsum("bhwc,bhwf->cf", window, grad_out, precision=spec.precision,
                     preferred_element_type=jnp.promote_types(lhs.dtype, jnp.float32))
          for _, _, window in _tap_windows(lhs, spec, kernel_shape[:2], grad_out.shape[1:3])]
  return jnp.stack(taps).reshape(*kernel_shape[:2], *taps[0].shape)  # taps in row-major order


def _phases(size: int, kernel: int, dilation: int, pad_lo: int, out: int):
  """For one spatial axis of z = conv(dilate_d(x), k; stride 1, padding (pad_lo, ·)), input size
  N = `size`, kernel size K, output size O = `out`: per output phase r = 0 .. d-1 (the outputs
  o = d q + r), (the kernel taps it uses, as a slice, its padding of x, its output count).

  z[d q + r] = sum_t k[t] dilate_d(x)[d q + r + t - pad_lo], and dilate_d(x)[m] is x[m / d] when
  d divides m, else 0: so phase r meets only the taps t = t0, t0 + d, ... with
  t0 = (pad_lo - r) mod d, and tap t0 + d j reads x[q + e + j], e = (r + t0 - pad_lo) / d. That
  is a stride-1 convolution of x with those taps, x padded by (-e, n + e + J - 1 - N) for its n
  outputs and J taps (negative padding crops)."""
  plans = []
  for r in range(dilation):
    first = (pad_lo - r) % dilation
    taps = len(range(first, kernel, dilation))
    count = len(range(r, out, dilation))
    offset = (r + first - pad_lo) // dilation
    plans.append((slice(first, kernel, dilation), (-offset, count + offset + taps - 1 - size),
                  count))
  return plans


def _dilated_input_conv(lhs: jax.Array, rhs: jax.Array, padding, lhs_dilation, precision
                        ) -> jax.Array:
  """z = conv(dilate(lhs), rhs; stride 1, `padding`), NHWC/HWIO, as d1 d2 stride-1 convolutions
  of lhs itself, one per output phase (`_phases`), interleaved.

  lhs (B, N1, N2, C), rhs (K1, K2, C, F), d = `lhs_dilation`; z (B, O1, O2, F) with
  O = (N - 1) d + 1 + pad_lo + pad_hi - K + 1 per axis. This is a transposed convolution
  (`lax.conv_transpose`, `nn.ConvTranspose`) and the input gradient of a strided one: computed
  on the dilated input, (d1 d2 - 1) / (d1 d2) of its products multiply inserted zeros, and
  XLA:CPU's convolution with lhs dilation is slow for the U-Net's transposed convolutions
  (4x4, padding 2: 3-5x slower than these phases, forward and input gradient). Here every
  product counts and every phase is `_conv` (explicit gradients). For d = (1, 1) it is `_conv`
  with `padding`. A phase with no tap (K < d) is zero.
  """
  out = [(n - 1) * d + 1 + lo + hi - k + 1 for n, d, (lo, hi), k
         in zip(lhs.shape[1:3], lhs_dilation, padding, rhs.shape[:2])]
  rows_per_phase = [-(-o // d) for o, d in zip(out, lhs_dilation)]
  plans = [_phases(lhs.shape[1 + axis], rhs.shape[axis], lhs_dilation[axis], padding[axis][0],
                   out[axis]) for axis in range(2)]
  phases = []
  for taps_1, pad_1, count_1 in plans[0]:
    row = []
    for taps_2, pad_2, count_2 in plans[1]:
      kernel = rhs[taps_1, taps_2]
      if kernel.shape[0] == 0 or kernel.shape[1] == 0 or count_1 == 0 or count_2 == 0:
        phase = jnp.zeros((lhs.shape[0], count_1, count_2, rhs.shape[3]), lhs.dtype)
      else:
        phase = _conv(lhs, kernel, _Spec((1, 1), (pad_1, pad_2), precision))
      row.append(jnp.pad(phase, ((0, 0), (0, rows_per_phase[0] - count_1),
                                 (0, rows_per_phase[1] - count_2), (0, 0))))
    phases.append(jnp.stack(row, axis=3))  # (B, Q1, Q2, d2, F)
  z = jnp.stack(phases, axis=2)  # (B, Q1, d1, Q2, d2, F): z[b, d1 q1 + r1, d2 q2 + r2]
  z = z.reshape(lhs.shape[0], rows_per_phase[0] * lhs_dilation[0],
                rows_per_phase[1] * lhs_dilation[1], rhs.shape[3])
  return z[:, :out[0], :out[1]]


def _conv_bwd(spec, residuals, grad_out):
  """The input gradient is lax's convolution of the dilated dL/dy (XLA:CPU runs the strided
  convolutions' 3x3 ones 10-20% faster than phase by phase), or `_dilated_input_conv` when
  its padding has a negative entry (a padding of the forward convolution larger than its kernel
  minus one), which XLA:CPU's convolution gets wrong (`_conv`)."""
  lhs, rhs = residuals
  swapped_kernel = jnp.transpose(jnp.flip(rhs, (0, 1)), (0, 1, 3, 2)).astype(lhs.dtype)
  grad_out_in_dtype = grad_out.astype(lhs.dtype)
  padding = _input_gradient_padding(spec, lhs.shape, rhs.shape, grad_out.shape)
  if min(min(pair) for pair in padding) < 0:
    grad_lhs = _dilated_input_conv(grad_out_in_dtype, swapped_kernel, padding, spec.strides,
                                   spec.precision)
  else:
    grad_lhs = lax.conv_general_dilated(grad_out_in_dtype, swapped_kernel, (1, 1), padding,
                                        lhs_dilation=spec.strides, dimension_numbers=_NHWC,
                                        precision=spec.precision)
  return grad_lhs, _kernel_gradient(lhs, grad_out, rhs.shape, spec).astype(rhs.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def _is_covered(lhs, rhs, window_strides, lhs_dilation, rhs_dilation, feature_group_count,
                batch_group_count, preferred_element_type) -> bool:
  """Whether `_conv` (no lhs dilation) or `_dilated_input_conv` (lhs dilation, unit strides: a
  transposed convolution) computes this convolution: 4-D operands (arrays or avals) of a real
  floating dtype, no rhs dilation, one feature group and one batch group, the result in the
  operands' dtype (no `preferred_element_type`)."""
  ones = lambda values: all(v == 1 for v in tuple(values or (1, 1)))
  return (lhs.ndim == 4 and rhs.ndim == 4 and jnp.issubdtype(lhs.dtype, jnp.floating)
          and ones(rhs_dilation) and (ones(lhs_dilation) or ones(window_strides))
          and feature_group_count == 1 and batch_group_count == 1
          and preferred_element_type is None)


def _transpose(x: jax.Array, permutation: tuple[int, ...]) -> jax.Array:
  """`jnp.transpose(x, permutation)`, and x itself (no op in the program) for the identity."""
  return x if permutation == tuple(range(x.ndim)) else jnp.transpose(x, permutation)


def _any_layout_conv(lhs: jax.Array, rhs: jax.Array, strides, padding,
                     dimension_numbers: lax.ConvDimensionNumbers, precision,
                     lhs_dilation=None) -> jax.Array:
  """`_conv` (`_dilated_input_conv` for an `lhs_dilation` other than 1, with unit `strides`) in
  any 2-D layout: the operands transposed to NHWC and HWIO, the NHWC result to the output layout.

  `dimension_numbers` = (lhs_spec, rhs_spec, out_spec) lists axis indices: lhs_spec = (batch,
  feature, spatial 1, spatial 2) of `lhs`, rhs_spec = (output feature, input feature, spatial 1,
  spatial 2) of `rhs`, out_spec = (batch, feature, spatial 1, spatial 2) of the result; strides
  and padding (explicit (lo, hi) pairs) follow the spatial order of the specs. For NHWC, HWIO,
  NHWC every permutation is the identity and this is exactly `_conv`.
  """
  lhs_spec, rhs_spec, out_spec = dimension_numbers
  to_nhwc = (lhs_spec[0], lhs_spec[2], lhs_spec[3], lhs_spec[1])
  to_hwio = (rhs_spec[2], rhs_spec[3], rhs_spec[1], rhs_spec[0])
  nhwc_axis = {out_spec[0]: 0, out_spec[2]: 1, out_spec[3]: 2, out_spec[1]: 3}
  from_nhwc = tuple(nhwc_axis[axis] for axis in range(4))
  padding = tuple(tuple(int(p) for p in pair) for pair in padding)
  lhs, rhs = _transpose(lhs, to_nhwc), _transpose(rhs, to_hwio)
  lhs_dilation = tuple(lhs_dilation or (1, 1))
  if lhs_dilation == (1, 1):
    out = _conv(lhs, rhs, _Spec(tuple(strides), padding, precision))
  else:
    out = _dilated_input_conv(lhs, rhs, padding, lhs_dilation, precision)
  return _transpose(out, from_nhwc)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
  """Drop-in for `lax.conv_general_dilated` (the signature Flax's `nn.Conv` calls) with the
  explicit input gradient of this module.

  Covered: 2-D convolutions of real floating operands in any layout `dimension_numbers`
  describes (lax's default, None, is NCHW/OIHW/NCHW; Flax's is NHWC/HWIO/NHWC; e.g. inputs
  (B, C, H, W), kernels (F, C, K1, K2), output (B, F, H', W') for PyTorch's), any strides and
  padding (a string or (lo, hi) pairs), no rhs dilation, one feature group; lhs dilation (the
  transposed convolutions of `lax.conv_transpose`) with unit strides, computed phase by phase
  (`_dilated_input_conv`). A layout other than NHWC/HWIO/NHWC is transposed to it and back
  (`_any_layout_conv`); NHWC/HWIO/NHWC itself runs with no transpose. Anything else goes to
  `lax.conv_general_dilated` unchanged.
  """
  if not _is_covered(lhs, rhs, window_strides, lhs_dilation, rhs_dilation, feature_group_count,
                     batch_group_count, preferred_element_type):
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type)
  dims = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads([lhs.shape[axis] for axis in dims.lhs_spec[2:]],
                                  [rhs.shape[axis] for axis in dims.rhs_spec[2:]],
                                  window_strides, padding)
  return _any_layout_conv(lhs, rhs, window_strides, padding, dims, precision, lhs_dilation)


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


class ConvTranspose(nn.Module):
  """`nn.ConvTranspose(features, kernel_size, strides, padding, transpose_kernel=True)` (the
  adjoint of the convolution of its kernel: PyTorch's `ConvTranspose2d`) computing with
  `for_backend()`'s convolution: the same parameters, names and values (to float rounding).

  For x (B, H, W, C) and the parameter kernel (K1, K2, features, C), as Flax's with
  `transpose_kernel=True`: y = conv(dilate_s(x), k̃; stride 1, padding (p, p) per axis) with
  k̃ = kernel flipped in both spatial axes, its feature axes swapped (K1, K2, C, features); y
  (B, (H - 1) s1 + 1 + 2p - K1 + 1, ..., features), plus the bias. On CPU it runs phase by
  phase (`_dilated_input_conv`).

  >>> import jax, jax.numpy as jnp
  >>> x = jnp.ones((1, 3, 3, 2))
  >>> layer = ConvTranspose(4, (4, 4), (2, 2), padding=2)
  >>> variables = layer.init(jax.random.PRNGKey(0), x)
  >>> jax.tree.map(jnp.shape, variables["params"]), layer.apply(variables, x).shape
  ({'bias': (4,), 'kernel': (4, 4, 4, 2)}, (1, 6, 6, 4))
  """
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: int = 0
  use_bias: bool = True
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init,
                        (*self.kernel_size, self.features, x.shape[-1]), self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    convolve = for_backend() or lax.conv_general_dilated
    y = convolve(x, jnp.swapaxes(jnp.flip(kernel, (0, 1)), 2, 3), (1, 1),
                 ((self.padding, self.padding),) * 2, lhs_dilation=tuple(self.strides),
                 dimension_numbers=_NHWC)
    return y if bias is None else y + bias


def fast_convolutions(fn):
  """`fn` with every 2-D convolution of its computation replaced by this module's, and every
  tiling max-pool by `pooling.max_pool`: the same values and gradients, computed with the
  explicit input gradient and the elementwise pooling gradient that are fast inside loops on
  CPU.

  For a model one did not build from `conv_layer`: `fast_convolutions(apply_fn)` is the
  `apply_fn` to pass to the attacks (`jaxadv.attacks.apgd(fast_convolutions(apply_fn), ...)`)
  or to `jaxadv.evaluate`. It traces `fn` to a jaxpr (`jax.make_jaxpr`) on every call and
  evaluates it equation by equation, binding every primitive unchanged except
  `conv_general_dilated` and `reduce_window_max`: a convolution y = conv(x, k) that
  `conv_general_dilated` above covers (2-D, any layout, e.g. x (B, C, H, W), k (F, C, K1, K2),
  y (B, F, H', W') in PyTorch's; any strides and explicit padding; no rhs dilation, and lhs
  dilation only with unit strides: transposed convolutions, `nn.ConvTranspose`, PyTorch's
  `ConvTranspose2d` ported to `lax.conv_transpose`; feature_group_count = batch_group_count =
  1; no preferred_element_type; real floating operands) becomes
  transpose(conv_NHWC/HWIO(transpose(x), transpose(k))), the `custom_vjp` of this module (per
  output phase for a transposed one), in the original layouts. Other convolutions
  (rhs-dilated, grouped, 1-D, 3-D, integer) stay `lax.conv_general_dilated`. A max-pool over
  windows that tile the input (`reduce_window_max` with window = stride, no padding, no
  dilation, floating operand: `nn.max_pool(x, (2, 2), (2, 2))`, PyTorch's `F.max_pool2d(x, 2)`
  ported to `lax.reduce_window`) becomes
  `pooling.max_pool`, reshape + max with the same values and gradient (ties included);
  overlapping or padded pools stay `reduce_window`.

  Nested `jax.jit` functions (and `closed_call`) that contain a covered equation are inlined
  into the caller's computation (inside a jitted caller, which the attacks are, this changes
  nothing; an eager call runs them op by op); `jax.checkpoint` (remat) bodies are rewritten and
  re-wrapped in `jax.checkpoint` with the same policy. The bodies of other higher-order
  primitives are bound unchanged, so a convolution inside `lax.scan`, `lax.while_loop`,
  `lax.cond`, `jax.custom_jvp` or `jax.custom_vjp` functions of the model (Flax's `nn.scan`,
  for instance) stays JAX's own.

  Positional arguments are traced: pytrees of arrays (and Python scalars), as `jax.jit`'s
  arguments would be. Keyword arguments are passed to `fn` as they are, closed over (so
  `train=False`, `mutable=False` stay Python values; an array there is a constant of the
  trace, still differentiable from outside). The result is `fn`'s pytree of arrays. A pytree
  `fn` (a `BoundModel`, a `jax.tree_util.Partial`, an NNX module) gives a pytree, a `Partial`
  holding `fn`, so that an attack compiled for it serves new parameters as it does for `fn`. The
  function composes with `jax.jit`, `jax.grad`, `jax.vjp` and `jax.vmap`; like the zoo's
  models it supports reverse-mode differentiation only (`jax.jvp`, `jax.jacfwd` and
  `jax.hessian` raise a TypeError about forward-mode differentiation of a custom_vjp function;
  call it inside `lax_convolutions()` for those). As `for_backend` chooses for the zoo, the
  rewrite happens on the CPU backend only: on other backends, and inside `lax_convolutions()`,
  the function calls `fn` unchanged. The choice is made when the function is traced.

  Example: a PyTorch-style layer, x (B, C, H, W), kernel (F, C, K1, K2).

  >>> import jax, jax.numpy as jnp
  >>> from jax import lax
  >>> from jaxadv.models import fast_convolutions
  >>> def layer(kernel, x):
  ...   return lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)),
  ...                                   dimension_numbers=("NCHW", "OIHW", "NCHW"))
  >>> kernel = jax.random.normal(jax.random.key(0), (4, 3, 3, 3))
  >>> x = jax.random.normal(jax.random.key(1), (2, 3, 8, 8))
  >>> fast = fast_convolutions(layer)
  >>> fast(kernel, x).shape
  (2, 4, 4, 4)
  >>> loss = lambda layer: lambda x: jnp.sum(jnp.sin(layer(kernel, x)))
  >>> bool(jnp.allclose(jax.grad(loss(fast))(x), jax.grad(loss(layer))(x), atol=1e-5))
  True
  >>> "custom_vjp_call" in str(jax.make_jaxpr(jax.grad(loss(fast)))(x))
  True

  Args:
    fn: any function of arrays, e.g. `lambda x: model.apply(variables, x)` or a
      `jaxadv.models.BoundModel`.

  Returns:
    A function with `fn`'s signature and results (a `jax.tree_util.Partial` for a pytree `fn`).
  """

  if not jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(fn)):
    return jax.tree_util.Partial(_call_rewritten, fn)

  def rewritten(*args, **kwargs):
    return _call_rewritten(fn, *args, **kwargs)

  return functools.update_wrapper(rewritten, fn, updated=())


def _call_rewritten(fn, *args, **kwargs):
  """`fn(*args, **kwargs)` through the jaxpr of `fn` with the covered convolutions rewritten."""
  if for_backend() is None:
    return fn(*args, **kwargs)
  flat_args, in_tree = jax.tree_util.tree_flatten(args)
  out_trees = []

  def flat_fn(*leaves):
    out_leaves, out_tree = jax.tree_util.tree_flatten(
        fn(*jax.tree_util.tree_unflatten(in_tree, leaves), **kwargs))
    out_trees.append(out_tree)
    return out_leaves

  closed = jax.make_jaxpr(flat_fn)(*flat_args)
  return jax.tree_util.tree_unflatten(out_trees[0],
                                      _evaluate(closed.jaxpr, closed.consts, flat_args))


def _covered_equation(eqn) -> bool:
  """Whether `eqn` is a `conv_general_dilated` that `_any_layout_conv` computes or a
  `reduce_window_max` that `pooling.max_pool` computes."""
  params = eqn.params
  if eqn.primitive is lax.reduce_window_max_p:
    operand = eqn.invars[0].aval
    return (jnp.issubdtype(operand.dtype, jnp.floating)
            and pooling.is_covered(operand.shape, params["window_dimensions"],
                                   params["window_strides"], params["padding"],
                                   params["base_dilation"], params["window_dilation"]))
  if eqn.primitive is not lax.conv_general_dilated_p:
    return False
  lhs, rhs = (var.aval for var in eqn.invars)
  return (params.get("out_sharding") is None
          and _is_covered(lhs, rhs, params["window_strides"], params["lhs_dilation"],
                          params["rhs_dilation"],
                          params["feature_group_count"], params["batch_group_count"],
                          params["preferred_element_type"]))


def _rewritten(eqn, invals) -> jax.Array:
  """The output of the covered equation `eqn` on `invals`, computed by this module's
  convolution or by `pooling.max_pool`."""
  params = eqn.params
  if eqn.primitive is lax.reduce_window_max_p:
    return pooling.max_pool(invals[0], params["window_dimensions"])
  return _any_layout_conv(*invals, params["window_strides"], params["padding"],
                          params["dimension_numbers"], params["precision"],
                          params["lhs_dilation"])


_INLINED = {jax_core.primitives.jit_p: "jaxpr", jax_core.primitives.closed_call_p: "call_jaxpr"}


def _nested_jaxpr(eqn):
  """(jaxpr, consts) of a jit, closed_call or remat equation; None for other equations."""
  if eqn.primitive in _INLINED:
    closed = eqn.params[_INLINED[eqn.primitive]]
    return closed.jaxpr, closed.consts
  if eqn.primitive is jax_core.primitives.remat_p:
    return eqn.params["jaxpr"], ()
  return None


def _rewrites(jaxpr) -> bool:
  """Whether `jaxpr`, or a jit, closed_call or remat body in it, has a covered equation."""
  for eqn in jaxpr.eqns:
    nested = _nested_jaxpr(eqn)
    if _covered_equation(eqn) or (nested is not None and _rewrites(nested[0])):
      return True
  return False


def _evaluate(jaxpr, consts, args) -> list:
  """The outputs of `jaxpr` on `consts` and `args`, with the covered equations rewritten."""
  env = {}

  def read(var):
    return var.val if isinstance(var, jax_core.Literal) else env[var]

  env.update(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    invals = [read(var) for var in eqn.invars]
    nested = _nested_jaxpr(eqn)
    context = getattr(getattr(eqn, "ctx", None), "manager", None) or contextlib.nullcontext()
    with context:
      if _covered_equation(eqn):
        outvals = [_rewritten(eqn, invals)]
      elif nested is not None and _rewrites(nested[0]):
        body = functools.partial(_evaluate, *nested)
        if eqn.primitive is jax_core.primitives.remat_p:
          outvals = jax.checkpoint(lambda *a, body=body: body(a), policy=eqn.params["policy"],
                                   prevent_cse=eqn.params["prevent_cse"])(*invals)
        else:
          outvals = body(invals)
      else:
        outvals = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
        if not eqn.primitive.multiple_results:
          outvals = [outvals]
    env.update(zip(eqn.outvars, outvals))
  return [read(var) for var in jaxpr.outvars]
