"""`mnist_seg`: semantic segmentation of MNIST digits, a dense-prediction task built by jaxadv.

Source: the standard MNIST images and digit labels of `jaxadv.data.mnist.load_mnist` (60,000
train / 10,000 test; the IDX files in `$JAXADV_MNIST_DIR`, else `../shared/data/mnist`, or
`dataset.data_dir`, else tfds "mnist"; the same message when neither is there). Each pixel
(h, w) of an image x of digit d gets the class

    label(h, w) = 0        if x(h, w) < 0.5     (background)
                  1 + d    otherwise            (a stroke of digit d)

with x in [0, 1] units (a uint8 pixel is foreground from 128 on), so K = 11 classes: telling
the digit apart at every stroke pixel, not only the stroke from the background.

This construction is jaxadv's own, not a published benchmark: the dense tasks of the AdvAmd
paper are detection and segmentation on natural images, whose data and models are out of
reach here; `mnist_seg` exercises the same code paths (per-pixel labels, a fully-convolutional
model, pixel accuracy and mIoU under attack) on data that is on disk.
"""

from __future__ import annotations

import os

import numpy as np

from jaxadv.data.dataset import ArrayDataset
from jaxadv.data.mnist import load_mnist

FOREGROUND_THRESHOLD = 0.5
NUM_CLASSES = 11  # background + the ten digits


def segmentation_labels(images: np.ndarray, digits: np.ndarray) -> np.ndarray:
  """Per-pixel classes of digit images: 0 where the intensity is < 0.5, 1 + digit elsewhere.

  Args:
    images: float (N, H, W, 1) with values in [0, 1].
    digits: integer (N,) in [0, 9], the digit each image shows.

  Returns:
    int32 (N, H, W) with values in [0, 11).

  >>> images = np.zeros((1, 4, 4, 1), np.float32)
  >>> images[0, 1, 2, 0], images[0, 3, 0, 0] = 0.5, 1.0   # 0.5 counts as foreground
  >>> segmentation_labels(images, np.array([3]))[0]
  array([[0, 0, 0, 0],
         [0, 0, 4, 0],
         [0, 0, 0, 0],
         [4, 0, 0, 0]], dtype=int32)
  """
  if images.ndim != 4 or images.shape[-1] != 1:
    raise ValueError(f"images must be (N, H, W, 1) grey digits, got shape {images.shape}.")
  if digits.shape != images.shape[:1] or not np.issubdtype(digits.dtype, np.integer):
    raise ValueError(f"digits must be integers of shape {images.shape[:1]}, got {digits.dtype} "
                     f"{digits.shape}.")
  if digits.size and (digits.min() < 0 or digits.max() > 9):
    raise ValueError(f"digits must lie in [0, 9], got [{digits.min()}, {digits.max()}].")
  foreground = images[..., 0] >= FOREGROUND_THRESHOLD
  return np.where(foreground, 1 + digits[:, None, None], 0).astype(np.int32)


def load_mnist_seg(split: str, *, data_dir: str | os.PathLike | None = None,
                   download: bool = False) -> ArrayDataset:
  """`mnist_seg`'s split "train" (60,000) or "test" (10,000): MNIST's images (N, 28, 28, 1)
  with `segmentation_labels` (N, 28, 28); read as `load_mnist` reads MNIST."""
  digits = load_mnist(split, data_dir=data_dir, download=download)
  return ArrayDataset(digits.images, segmentation_labels(digits.images, digits.labels),
                      NUM_CLASSES, "mnist_seg", digits.mean, digits.std)
