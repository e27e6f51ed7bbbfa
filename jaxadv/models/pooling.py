"""Max-pooling over non-overlapping windows whose gradient is elementwise: fast in CPU loops.

`lax.reduce_window` max-pooling (`nn.max_pool`, PyTorch's `F.max_pool2d` ported to JAX) has a
gradient XLA computes with select-and-scatter, a slow kernel on CPU (docs/performance.md,
"Pooling by reshape + max": SmallCNN pools by reshape + max for that reason, 27% faster per
gradient step). For windows that tile the input (window = stride, no padding, no dilation),
`max_pool` computes

    y[i] = max_{j in window i} x[j]                          (a reshape and a max)
    dL/dx[j] = dL/dy[i] if j is the first maximum of window i (row-major order), else 0

with the first maximum found by an argmax over each window: the same values and the same
gradient as `lax.reduce_window` max, ties included (select-and-scatter also keeps the first
maximum), as elementwise work. `jaxadv.models.fast_convolutions` puts it in place of the
covered `reduce_window_max` of any model. Being a `custom_vjp`, it supports reverse-mode
differentiation only.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def is_covered(shape, window_dimensions, window_strides, padding, base_dilation,
               window_dilation) -> bool:
  """Whether a `reduce_window_max` with these parameters on an operand of `shape` is a
  `max_pool`: windows equal to strides, no padding, no dilation, every window inside `shape`."""
  return (tuple(window_dimensions) == tuple(window_strides)
          and all(tuple(pad) == (0, 0) for pad in padding)
          and set(base_dilation) <= {1} and set(window_dilation) <= {1}
          and all(w <= n for w, n in zip(window_dimensions, shape))
          and any(w > 1 for w in window_dimensions))


def _interleaved(x: jax.Array, window: tuple[int, ...]) -> jax.Array:
  """x (n_1, ..., n_r) -> (n_1 // w_1, w_1, ..., n_r // w_r, w_r), a reshape (trailing rows
  that fill no window dropped)."""
  x = x[tuple(slice(0, n // w * w) for n, w in zip(x.shape, window))]
  return x.reshape([d for n, w in zip(x.shape, window) for d in (n // w, w)])


def _split(x: jax.Array, window: tuple[int, ...]) -> jax.Array:
  """x (n_1, ..., n_r) -> (n_1 // w_1, ..., n_r // w_r, w_1 * ... * w_r): the windows' entries
  on the last axis in row-major window order."""
  rank = len(window)
  x = _interleaved(x, window).transpose(tuple(range(0, 2 * rank, 2))
                                        + tuple(range(1, 2 * rank, 2)))
  return x.reshape(x.shape[:rank] + (-1,))


def _merge(windows: jax.Array, window: tuple[int, ...], shape: tuple[int, ...]) -> jax.Array:
  """The inverse of `_split`, zeros where `_split` dropped trailing rows: (..., prod w) ->
  `shape`."""
  rank = len(window)
  counts = windows.shape[:rank]
  x = windows.reshape(counts + window)
  x = x.transpose([axis for i in range(rank) for axis in (i, rank + i)])
  x = x.reshape([c * w for c, w in zip(counts, window)])
  return jnp.pad(x, [(0, n - c * w) for n, c, w in zip(shape, counts, window)])


def max_pool(x: jax.Array, window: tuple[int, ...]) -> jax.Array:
  """Max over the non-overlapping windows `window` (one size per axis of x, 1 for none).

  x: (n_1, ..., n_r); returns (n_1 // w_1, ..., n_r // w_r), equal to
  `lax.reduce_window(x, -inf, lax.max, window, window, "VALID")`, with the same gradient.

  >>> import jax, jax.numpy as jnp
  >>> x = jnp.array([[1., 3., 2., 2.], [0., 3., 5., 1.]])[None, None]      # (1, 1, 2, 4)
  >>> max_pool(x, (1, 1, 2, 2))[0, 0]
  Array([[3., 5.]], dtype=float32)
  >>> jax.grad(lambda v: max_pool(v, (1, 1, 2, 2)).sum())(x)[0, 0]        # first maximum
  Array([[0., 1., 0., 0.],
         [0., 0., 1., 0.]], dtype=float32)
  """
  return _max_pool(x, tuple(window), tuple(x.shape))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool(x, window, shape):
  del shape  # for the gradient
  return _interleaved(x, window).max(axis=tuple(range(1, 2 * len(window), 2)))


def _max_pool_fwd(x, window, shape):
  del shape
  windows = _split(x, window)
  return windows.max(axis=-1), jnp.argmax(windows, axis=-1)


def _max_pool_bwd(window, shape, first, grad_out):
  mask = jax.nn.one_hot(first, int(np.prod(window)), dtype=grad_out.dtype)
  return (_merge(mask * grad_out[..., None], window, shape),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
