"""Datasets for jaxadv: `load(name, split)` -> ArrayDataset, deterministic batching,
prefetching to devices and on-device augmentation (`jaxadv.data.augment`).

Names: "digits" (scikit-learn, bundled), "mnist_idx" (MNIST IDX files on disk, fixed 8k/2k
split), and the tfds datasets "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn_cropped".
"""

from __future__ import annotations

from jaxadv.data import augment
from jaxadv.data.batching import eval_batches, steps_per_epoch, train_batches
from jaxadv.data.dataset import ArrayDataset
from jaxadv.data.local import load_digits, load_mnist_idx
from jaxadv.data.prefetch import prefetch
from jaxadv.data.tfds_source import TFDS_DATASETS, DatasetNotFoundError, load_tfds

LOCAL_DATASETS = ("digits", "mnist_idx")


def names() -> list[str]:
  """Every dataset name `load` accepts."""
  return sorted(LOCAL_DATASETS + tuple(TFDS_DATASETS))


def load(name: str, split: str, *, data_dir: str | None = None,
         download: bool = False) -> ArrayDataset:
  """Loads split "train" or "test" of dataset `name` into host memory."""
  if name == "digits":
    return load_digits(split)
  if name == "mnist_idx":
    return load_mnist_idx(split, data_dir)
  if name in TFDS_DATASETS:
    return load_tfds(name, split, data_dir, download)
  raise ValueError(f"unknown dataset {name!r}; choose one of {names()}.")


__all__ = ["ArrayDataset", "DatasetNotFoundError", "augment", "eval_batches", "load", "names",
           "prefetch", "steps_per_epoch", "train_batches"]
