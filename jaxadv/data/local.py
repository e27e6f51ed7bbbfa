"""Offline datasets with one fixed, documented train/test split, so that every result uses the
same data:

* ``digits``: the 1,797 8x8 images of `sklearn.datasets.load_digits` (pixel values 0..16,
  scaled to [0, 1]); test = 360 images chosen by `split_indices(1797, 360, seed=0)`.
* ``mnist_idx``: the 10,000 MNIST *test* images (read and checksummed by `jaxadv.data.mnist`);
  test = 2,000 images chosen by `split_indices(10000, 2000, seed=0)`, train = the other 8,000.
  A random split rather than a cut at 8,000 because the first and second halves of the MNIST
  test set come from different writers. Kept as it was when MNIST's training files were not
  at hand, because recorded results use it; the standard 60k/10k split is ``mnist``.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from jaxadv.data.dataset import ArrayDataset, split_indices
from jaxadv.data.mnist import FILES as MNIST_FILES, default_mnist_dir, missing_files, read_split

MNIST_NUM_TEST = 2000
DIGITS_NUM_TEST = 360


def _select(images: np.ndarray, labels: np.ndarray, split: str, num_test: int):
  train_idx, test_idx = split_indices(len(labels), num_test, seed=0)
  if split not in ("train", "test"):
    raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'.")
  idx = train_idx if split == "train" else test_idx
  return images[idx], labels[idx]


def load_digits(split: str) -> ArrayDataset:
  """scikit-learn's digits as (N, 8, 8, 1) float32 images in [0, 1]."""
  from sklearn.datasets import load_digits as sklearn_digits  # pylint: disable=import-outside-toplevel
  bunch = sklearn_digits()
  images = (bunch.images.astype(np.float32) / 16.0)[..., None]
  images, labels = _select(images, bunch.target.astype(np.int32), split, DIGITS_NUM_TEST)
  return ArrayDataset(images, labels, 10, "digits", mean=(0.3,), std=(0.4,))


def load_mnist_idx(split: str, data_dir: str | os.PathLike | None = None) -> ArrayDataset:
  """The fixed 8k/2k split of the MNIST test set read from gzipped IDX files in `data_dir`."""
  directory = pathlib.Path(data_dir) if data_dir else default_mnist_dir()
  missing = missing_files(directory, "test")
  if missing:
    raise FileNotFoundError(
        f"MNIST IDX files {missing} not found in {directory or '(no directory given)'}. "
        "Point dataset.data_dir (or $JAXADV_MNIST_DIR) at a folder holding "
        f"{' and '.join(MNIST_FILES['test'])}, e.g. the project's shared/data/mnist, or download "
        "them from the MNIST page (Y. LeCun, C. Cortes, C. Burges).")
  images, labels = read_split(directory, "test")
  images = images[..., None].astype(np.float32) / 255.0
  images, labels = _select(images, labels, split, MNIST_NUM_TEST)
  return ArrayDataset(images, labels, 10, "mnist_idx", mean=(0.1307,), std=(0.3081,))
