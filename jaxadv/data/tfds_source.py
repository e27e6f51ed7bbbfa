"""tfds-backed datasets through the TF-free random-access path (`tfds.data_source`).

The prepared dataset must be in ArrayRecord format (`tfds build NAME --file_format=array_record`,
or `download=True`, which prepares it that way). Splits are read fully into host memory, which
suits the small-image benchmarks jaxadv targets (CIFAR-10 train: 150 MB as uint8).
"""

from __future__ import annotations

import numpy as np

from jaxadv.data.dataset import ArrayDataset, from_uint8

# name -> (num_classes, per-channel mean, per-channel std)
TFDS_DATASETS = {
    "mnist": (10, (0.1307,), (0.3081,)),
    "fashion_mnist": (10, (0.2860,), (0.3530,)),
    "cifar10": (10, (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    "cifar100": (100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn_cropped": (10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}


class DatasetNotFoundError(FileNotFoundError):
  """A tfds dataset that is not prepared locally."""


def load_tfds(name: str, split: str, data_dir: str | None = None,
              download: bool = False) -> ArrayDataset:
  """Reads split `split` of tfds dataset `name` into an ArrayDataset."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  num_classes, mean, std = TFDS_DATASETS[name]
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir or None, download=download)
  except Exception as error:  # tfds raises several types for "not there"; name the fix.
    raise DatasetNotFoundError(
        f"tfds dataset {name!r} (split {split!r}) is not prepared in ArrayRecord format under "
        f"{data_dir or '~/tensorflow_datasets'}: {type(error).__name__}: {str(error)[:200]}\n"
        f"Prepare it once on a machine with network access: `tfds build {name} "
        "--file_format=array_record` (or set dataset.download=True), then point "
        "dataset.data_dir at it.") from error
  records = [source[i] for i in range(len(source))]
  images = np.stack([np.asarray(r["image"], np.uint8) for r in records])
  labels = np.asarray([r["label"] for r in records], np.int32)
  return from_uint8(images, labels, num_classes=num_classes, name=name, mean=mean, std=std)
