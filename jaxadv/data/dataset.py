"""In-memory image datasets: float32 NHWC images in [0, 1] and int32 labels, one per image
(classification) or one per pixel (dense prediction: segmentation)."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
  """One split of a dataset held in host memory.

  Attributes:
    images: float32 array (N, H, W, C) with values in [0, 1].
    labels: int32 array with values in [0, num_classes): (N,), one class per image
      (classification), or (N, H, W), one class per pixel (dense prediction, `dense`).
    num_classes: number of classes K.
    name: dataset name, for reports.
    mean, std: per-channel statistics the models normalise with (inside the model).
  """
  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  name: str
  mean: tuple[float, ...]
  std: tuple[float, ...]

  def __post_init__(self):
    if self.images.ndim != 4 or self.images.dtype != np.float32:
      raise ValueError(f"images must be float32 (N, H, W, C), got {self.images.dtype} {self.images.shape}.")
    if self.labels.shape not in (self.images.shape[:1], self.images.shape[:3]):
      raise ValueError(f"labels shape {self.labels.shape} does not match images "
                       f"{self.images.shape}: expected {self.images.shape[:1]} (one label per "
                       f"image) or {self.images.shape[:3]} (one label per pixel).")

  def __len__(self) -> int:
    return len(self.labels)

  @property
  def dense(self) -> bool:
    """True when the labels are per pixel, (N, H, W); False for one label per image, (N,)."""
    return self.labels.ndim == 3

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.images.shape[1:])

  def take(self, count: int) -> "ArrayDataset":
    """The first `count` examples (all of them when count <= 0 or exceeds the size)."""
    if count <= 0 or count >= len(self):
      return self
    return dataclasses.replace(self, images=self.images[:count], labels=self.labels[:count])


def from_uint8(images: np.ndarray, labels: np.ndarray, *, num_classes: int, name: str,
               mean, std) -> ArrayDataset:
  """Builds an ArrayDataset from uint8 images (N, H, W[, C]) and integer labels (N,) or
  (N, H, W)."""
  if images.ndim == 3:
    images = images[..., None]
  scaled = images.astype(np.float32)
  scaled /= 255.0  # in place: one float32 copy of the images, not two (CIFAR-10 train: 600 MB)
  return ArrayDataset(scaled, labels.astype(np.int32), num_classes, name, tuple(mean), tuple(std))


def split_indices(num_examples: int, num_test: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """A fixed random train/test split of range(num_examples): (train_idx, test_idx), sorted."""
  order = np.random.default_rng(seed).permutation(num_examples)
  return np.sort(order[num_test:]), np.sort(order[:num_test])
