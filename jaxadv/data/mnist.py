"""MNIST: the standard 60,000 / 10,000 split, from gzipped IDX files or else from tfds.

Source: the four IDX files of Y. LeCun, C. Cortes and C. J. C. Burges, "The MNIST database of
handwritten digits", in `$JAXADV_MNIST_DIR`, else `../shared/data/mnist` beside the repository
(provenance in that folder's README.md), or `dataset.data_dir`. Each file's *decompressed*
bytes are checked against the sha256 of the official file, so any gzip of the official files
passes (LeCun's own `.gz` files, and shared/data's training files, which were re-gzipped).
When a split's files are absent, the tfds dataset "mnist" is read instead (the same images);
when neither is there the error says how to get either. No network access unless
`download=True` (then tfds may download and prepare it).
"""

from __future__ import annotations

import gzip
import os
import pathlib
import zlib

import numpy as np

from jaxadv.data import checksum, tfds_source
from jaxadv.data.dataset import ArrayDataset, from_uint8

FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
# sha256 of each file's *decompressed* content, the official IDX files: shared/data's t10k
# files are LeCun's own .gz (md5-checked), its training files decompress to bytes with the
# official md5s (shared/data/README.md).
SHA256 = {
    "train-images-idx3-ubyte.gz":
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz":
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz":
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz":
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
HOW_TO_GET = ("Get a good copy from the project's shared/data/mnist (see its README.md) or the "
              "official MNIST files (Y. LeCun, C. Cortes, C. Burges), and point $JAXADV_MNIST_DIR "
              "or dataset.data_dir at their folder.")
NUM_CLASSES, MEAN, STD = tfds_source.TFDS_DATASETS["mnist"]


def default_mnist_dir() -> pathlib.Path | None:
  """$JAXADV_MNIST_DIR, else the repository's sibling `shared/data/mnist` when it exists."""
  if os.environ.get("JAXADV_MNIST_DIR"):
    return pathlib.Path(os.environ["JAXADV_MNIST_DIR"])
  candidate = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"
  return candidate if candidate.is_dir() else None


def missing_files(directory: pathlib.Path | None, split: str) -> list[str]:
  """The IDX files of `split` that are not in `directory`."""
  return [name for name in FILES[split] if directory is None or not (directory / name).is_file()]


def _read_idx(path: pathlib.Path) -> np.ndarray:
  """The uint8 payload of a gzipped IDX file, its content checked against SHA256."""
  try:
    with gzip.open(path, "rb") as f:
      content = f.read()
  except (gzip.BadGzipFile, EOFError, zlib.error) as error:
    raise ValueError(f"{path} is truncated or not a gzip file ({error}). {HOW_TO_GET}") from error
  checksum.verify_bytes(content, sha256=SHA256[path.name], name=str(path), how_to_get=HOW_TO_GET)
  return np.frombuffer(content, np.uint8, offset=16 if "idx3" in path.name else 8)


def read_split(directory: pathlib.Path, split: str) -> tuple[np.ndarray, np.ndarray]:
  """uint8 images (N, 28, 28) and int32 labels (N,) of `split` ("train" or "test")."""
  images_file, labels_file = FILES[split]
  images, labels = _read_idx(directory / images_file), _read_idx(directory / labels_file)
  if images.size != labels.size * 28 * 28:
    raise ValueError(f"corrupt MNIST IDX files in {directory}: {images.size} pixels for "
                     f"{labels.size} labels.")
  return images.reshape(-1, 28, 28), labels.astype(np.int32)


def load_mnist(split: str, *, data_dir: str | os.PathLike | None = None,
               download: bool = False) -> ArrayDataset:
  """MNIST's standard split "train" (60,000) or "test" (10,000), as (N, 28, 28, 1) images.

  Reads the IDX files in `data_dir` (else `default_mnist_dir()`); without them, the tfds
  dataset "mnist" (in `data_dir`, else tfds' default folder; downloaded only if `download`).
  """
  if split not in FILES:
    raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'.")
  directory = pathlib.Path(data_dir) if data_dir else default_mnist_dir()
  missing = missing_files(directory, split)
  if not missing:
    images, labels = read_split(directory, split)
    return from_uint8(images, labels, num_classes=NUM_CLASSES, name="mnist", mean=MEAN, std=STD)
  try:
    return tfds_source.load_tfds("mnist", split, data_dir, download)
  except tfds_source.DatasetNotFoundError as error:
    where = directory or "(no folder: $JAXADV_MNIST_DIR unset)"
    raise tfds_source.DatasetNotFoundError(
        f"MNIST {split!r} is in neither place jaxadv reads it from:\n"
        f"1) IDX files: {missing} not found in {where}. {HOW_TO_GET}\n2) {error}") from error
