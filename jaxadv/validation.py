"""Checks at the public edge: clear `ValueError`s before anything enters a jitted core.

Concrete arrays get value checks (range, NaN); traced arrays (inside `jit`, `vmap`, `grad`)
get only the static checks (rank, shapes, dtypes), because their values are unknown.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(value) -> bool:
  """True when `value` holds real numbers, False for a JAX tracer."""
  return not isinstance(value, jax.core.Tracer)


def check_images(x, name: str = "x", *, min_rank: int = 1) -> None:
  """Checks that `x` is a floating array of rank >= `min_rank` with finite values in [0, 1]."""
  if not hasattr(x, "shape") or not hasattr(x, "dtype"):
    raise ValueError(f"{name} must be an array, got {type(x).__name__}.")
  if x.ndim < min_rank:
    raise ValueError(f"{name} must have rank >= {min_rank}, got shape {tuple(x.shape)}.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name} must be a floating array with values in [0, 1], got dtype {x.dtype}.")
  if is_concrete(x):
    values = np.asarray(x)
    if not np.all(np.isfinite(values)):
      raise ValueError(f"{name} contains NaN or infinite values.")
    low, high = float(values.min(initial=0.0)), float(values.max(initial=0.0))
    if low < 0.0 or high > 1.0:
      raise ValueError(
          f"{name} must lie in [0, 1] (normalisation happens inside the model); "
          f"got values in [{low:.4g}, {high:.4g}].")


def check_labels(y, x, name: str = "y", num_classes: int | None = None) -> None:
  """Checks `y` holds integer labels for the leading (batch) axes of `x`, in range if known."""
  if not hasattr(y, "shape") or not jnp.issubdtype(y.dtype, jnp.integer):
    raise ValueError(f"{name} must be an integer array of labels, got {getattr(y, 'dtype', type(y))}.")
  if y.ndim >= x.ndim or tuple(x.shape[:y.ndim]) != tuple(y.shape):
    raise ValueError(f"{name} of shape {tuple(y.shape)} does not match images of shape "
                     f"{tuple(x.shape)}: expected one label per image, shape {tuple(x.shape[:1])}.")
  if num_classes is not None and is_concrete(y) and y.size:
    values = np.asarray(y)
    if values.min() < 0 or values.max() >= num_classes:
      raise ValueError(f"{name} must lie in [0, {num_classes}), got labels in "
                       f"[{values.min()}, {values.max()}].")


def check_nonnegative(value, name: str) -> None:
  """Checks a scalar or array hyper-parameter (eps, step size) is finite and >= 0."""
  if is_concrete(value):
    values = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(values)):
      raise ValueError(f"{name} must be finite, got {value}.")
    if np.any(values < 0):
      raise ValueError(f"{name} must be >= 0, got {value}.")


def check_positive_int(value, name: str) -> None:
  """Checks a static integer hyper-parameter (steps, restarts) is an int >= 1."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
    raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")


def check_choice(value, name: str, choices) -> None:
  """Checks that `value` is one of `choices`."""
  if value not in choices:
    raise ValueError(f"unknown {name} {value!r}; choose one of {sorted(choices)}.")
