"""Natural distribution shifts of images in [0, 1]: darker, brighter, sharper, blur, noise.

Pure, jit-able functions `(images (B, H, W, C) in [0, 1], key) -> images of the same shape in
[0, 1]`, each at one fixed severity, so a shifted test set is a function of the test set and
a seed. They serve the secondary evaluations ("clean accuracy under natural shifts",
`jaxadv eval --shifts`) and any method that trains on shifted inputs.

    darker    x · 0.6                      (contrast towards black)
    brighter  x + 0.3 (1 − x)              (towards white)
    sharper   x + 1.0 (x − blur(x))        (unsharp mask, amount 1), clipped
    blur      3×3 Gaussian blur (σ = 1), edge-replicated borders, per channel
    noise     x + N(0, 0.1²), clipped

The severities are jaxadv's choice: visible, class-preserving shifts of about the size of
CIFAR-10-C's middle severities (Hendrycks & Dietterich, 2019), not a reproduction of them.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

DARKER_FACTOR = 0.6
BRIGHTER_AMOUNT = 0.3
SHARPEN_AMOUNT = 1.0
BLUR_SIGMA = 1.0
NOISE_STD = 0.1


def _check(images: jax.Array) -> None:
  if images.ndim != 4:
    raise ValueError(f"images must be (B, H, W, C), got shape {images.shape}.")


def darker(images: jax.Array, key=None) -> jax.Array:
  """x · DARKER_FACTOR.

  >>> import jax.numpy as jnp
  >>> round(darker(jnp.full((1, 1, 1, 1), 0.5)).item(), 6)
  0.3
  """
  del key
  _check(images)
  return images * DARKER_FACTOR


def brighter(images: jax.Array, key=None) -> jax.Array:
  """x + BRIGHTER_AMOUNT · (1 − x): white stays white, black becomes grey."""
  del key
  _check(images)
  return images + BRIGHTER_AMOUNT * (1.0 - images)


def _gaussian_kernel(sigma: float) -> jax.Array:
  """The normalised 3-tap Gaussian (3,)."""
  taps = jnp.exp(-jnp.arange(-1.0, 2.0) ** 2 / (2 * sigma ** 2))
  return taps / taps.sum()


def blur(images: jax.Array, key=None) -> jax.Array:
  """Separable 3×3 Gaussian blur (σ = BLUR_SIGMA) of each channel, borders replicated.

  A constant image is unchanged:

  >>> import jax.numpy as jnp
  >>> float(jnp.abs(blur(jnp.full((1, 4, 4, 2), 0.7)) - 0.7).max()) < 1e-6
  True
  """
  del key
  _check(images)
  k = _gaussian_kernel(BLUR_SIGMA).astype(images.dtype)
  padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  rows = k[0] * padded[:, :-2] + k[1] * padded[:, 1:-1] + k[2] * padded[:, 2:]
  return k[0] * rows[:, :, :-2] + k[1] * rows[:, :, 1:-1] + k[2] * rows[:, :, 2:]


def sharper(images: jax.Array, key=None) -> jax.Array:
  """Unsharp mask x + SHARPEN_AMOUNT · (x − blur(x)), clipped to [0, 1]."""
  del key
  return jnp.clip(images + SHARPEN_AMOUNT * (images - blur(images)), 0.0, 1.0)


def noise(images: jax.Array, key: jax.Array) -> jax.Array:
  """x + N(0, NOISE_STD²) drawn from `key`, clipped to [0, 1]."""
  _check(images)
  if key is None:
    raise ValueError("the noise shift needs a PRNG key.")
  eps = jax.random.normal(key, images.shape, images.dtype)
  return jnp.clip(images + NOISE_STD * eps, 0.0, 1.0)


SHIFTS: dict[str, Callable[..., jax.Array]] = {
    "darker": darker, "brighter": brighter, "sharper": sharper, "blur": blur, "noise": noise}


def get(name: str) -> Callable[..., jax.Array]:
  """The shift called `name`; ValueError naming the choices otherwise."""
  if name not in SHIFTS:
    raise ValueError(f"unknown shift {name!r}; choose one of {sorted(SHIFTS)}.")
  return SHIFTS[name]
