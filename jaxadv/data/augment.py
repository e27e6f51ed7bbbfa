"""On-device data augmentation: pure, jitted JAX functions of (key, images) -> images.

They run inside the jitted train step (`make_train_step(..., augment=...)`), on the global
batch, so augmentation costs no host time and no extra transfer. Example i of a batch draws its
randomness from `fold_in(key, i)`, i its index in the *global* batch: the result is the same on
1 or N devices and hosts (the keys never depend on how the batch is sharded), the same for a
batch and any prefix of it, and a function of (seed, step) only, so resumption repeats it.

Names (the config field `dataset.augment`):

* ``"none"``: no augmentation.
* ``"crop"``: pad-4 random crop only (digits: SVHN, MNIST, where a mirror image changes meaning).
* ``"crop_flip"``: pad-4 random crop, then random horizontal flip: the standard CIFAR recipe.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

CROP_PADDING = 4


def _check_images(images: jax.Array) -> None:
  if images.ndim != 4:
    raise ValueError(f"images must be (B, H, W, C), got shape {images.shape}.")


def example_keys(key: jax.Array, batch_size: int) -> jax.Array:
  """Keys (B, ...) with key_i = fold_in(key, i), i the example's index in the global batch."""
  return jax.vmap(functools.partial(jax.random.fold_in, key))(jnp.arange(batch_size))


@functools.partial(jax.jit, static_argnames="padding")
def random_crop(key: jax.Array, images: jax.Array, padding: int = CROP_PADDING) -> jax.Array:
  """Zero-pads each image by `padding` pixels on every side and crops a random H x W window.

  Example i is shifted by offsets (dy_i, dx_i) drawn uniformly from {0, ..., 2*padding}^2 with
  key_i: out[i, h, w] = padded[i, h + dy_i, w + dx_i], where padded[i] is images[i] with
  `padding` zero rows/columns added on each side. Shapes are fixed: the window is a
  `lax.dynamic_slice` of static size (H, W, C) under `vmap`.

  Args:
    key: PRNG key of the batch.
    images: (B, H, W, C).
    padding: static pad width p >= 0 (p = 0 returns the images unchanged).

  Returns:
    (B, H, W, C), same dtype.
  """
  _check_images(images)
  if padding < 0:
    raise ValueError(f"padding must be >= 0, got {padding}.")
  _, height, width, channels = images.shape
  padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))

  def crop_one(example_key, image):
    dy, dx = jax.random.randint(example_key, (2,), 0, 2 * padding + 1)
    return jax.lax.dynamic_slice(image, (dy, dx, 0), (height, width, channels))

  return jax.vmap(crop_one)(example_keys(key, images.shape[0]), padded)


@jax.jit
def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
  """Mirrors each image left-right with probability 1/2.

  Example i is flipped iff bernoulli(key_i, 1/2): out[i, h, w] = images[i, h, W - 1 - w].

  Args:
    key: PRNG key of the batch.
    images: (B, H, W, C).

  Returns:
    (B, H, W, C), same dtype.
  """
  _check_images(images)
  flip = jax.vmap(jax.random.bernoulli)(example_keys(key, images.shape[0]))
  return jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)


@jax.jit
def crop_flip(key: jax.Array, images: jax.Array) -> jax.Array:
  """`random_crop` (pad 4) then `random_flip`, with independent keys split from `key`.

  Args:
    key: PRNG key of the batch.
    images: (B, H, W, C).

  Returns:
    (B, H, W, C), same dtype.
  """
  crop_key, flip_key = jax.random.split(key)
  return random_flip(flip_key, random_crop(crop_key, images))


AUGMENTATIONS: dict[str, Callable | None] = {
    "none": None,
    "crop": random_crop,
    "crop_flip": crop_flip,
}


def get(name: str) -> Callable | None:
  """The augmentation `augment(key, images) -> images` called `name` (None for "none")."""
  if name not in AUGMENTATIONS:
    raise ValueError(f"unknown augmentation {name!r}; choose one of {list(AUGMENTATIONS)}.")
  return AUGMENTATIONS[name]
