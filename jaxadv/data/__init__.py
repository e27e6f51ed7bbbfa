"""Datasets for jaxadv: `load(name, split)` -> ArrayDataset, deterministic batching,
prefetching to devices and on-device augmentation (`jaxadv.data.augment`).

Names (docs/data.md has sources, caveats and load times):

* "digits": scikit-learn's bundled 8x8 digits, fixed 1,437 / 360 split.
* "mnist": MNIST's standard 60,000 / 10,000 split from the IDX files on disk, else from tfds.
* "mnist_idx": a fixed 8,000 / 2,000 split of the 10,000 MNIST *test* images (recorded results).
* "mnist_seg": MNIST's 60,000 / 10,000 images with a class per pixel (0 background, 1 + digit
  on the strokes; 11 classes): jaxadv's segmentation task (`jaxadv.data.mnist_seg`).
* "cifar10_jpeg": CIFAR-10 (JPEG copy), all 50,000 / 10,000 images, lossy (≈5.8/255 mean error).
* "cifar10_exact": the exact CIFAR-10 test images 0-999 and training images 0-3999.
* tfds: "cifar10", "cifar100", "fashion_mnist", "svhn_cropped" (and "mnist" as fallback).

Files on disk are checked against their sha256 on first use in a process (`checksum`).
"""

from __future__ import annotations

from jaxadv.data import augment
from jaxadv.data.batching import eval_batches, steps_per_epoch, train_batches
from jaxadv.data.cifar10 import load_cifar10_exact, load_cifar10_jpeg
from jaxadv.data.dataset import ArrayDataset
from jaxadv.data.local import load_digits, load_mnist_idx
from jaxadv.data.mnist import load_mnist
from jaxadv.data.mnist_seg import load_mnist_seg
from jaxadv.data.prefetch import prefetch
from jaxadv.data.tfds_source import TFDS_DATASETS, DatasetNotFoundError, load_tfds

LOCAL_DATASETS = ("digits", "mnist", "mnist_idx", "mnist_seg", "cifar10_jpeg", "cifar10_exact")
# The datasets whose labels are per pixel (`ArrayDataset.dense`), known before loading them so
# that configs are checked when they load.
DENSE_DATASETS = ("mnist_seg",)


def names() -> list[str]:
  """Every dataset name `load` accepts."""
  return sorted(set(LOCAL_DATASETS) | set(TFDS_DATASETS))


def load(name: str, split: str, *, data_dir: str | None = None,
         download: bool = False) -> ArrayDataset:
  """Loads split "train" or "test" of dataset `name` into host memory."""
  if name == "digits":
    return load_digits(split)
  if name == "mnist":
    return load_mnist(split, data_dir=data_dir, download=download)
  if name == "mnist_idx":
    return load_mnist_idx(split, data_dir)
  if name == "mnist_seg":
    return load_mnist_seg(split, data_dir=data_dir, download=download)
  if name == "cifar10_jpeg":
    return load_cifar10_jpeg(split, data_dir=data_dir)
  if name == "cifar10_exact":
    return load_cifar10_exact(split, data_dir=data_dir)
  if name in TFDS_DATASETS:
    return load_tfds(name, split, data_dir, download)
  raise ValueError(f"unknown dataset {name!r}; choose one of {names()}.")


__all__ = ["DENSE_DATASETS", "ArrayDataset", "DatasetNotFoundError", "augment", "eval_batches",
           "load", "names", "prefetch", "steps_per_epoch", "train_batches"]
