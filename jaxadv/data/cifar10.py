"""CIFAR-10 from local files: all 60,000 images as a lossy JPEG copy, and exact subsets.

Source: A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009, as the
files of the project's `shared/data/cifar10` (provenance in that folder's README.md), found in
`$JAXADV_CIFAR10_DIR`, else `../shared/data/cifar10` beside the repository, or
`dataset.data_dir`. Every file is checked against its size and sha256 on first use in a process.

* ``cifar10_jpeg`` -- "CIFAR-10 (JPEG copy)": the 50,000 training and 10,000 test images in
  their original order, stored as JPEG. **Lossy**: mean absolute error ≈ 5.8/255 against the
  exact images (PSNR ≈ 30.5 dB), so accuracies on it are not comparable digit for digit with
  published CIFAR-10 figures. Decoded once with Pillow and cached as uint8 in `cache_dir()`,
  in a file keyed by the archive's sha256 (a different archive never reuses a stale cache).
* ``cifar10_exact`` -- the exact images of test 0-999 (1,000; RobustBench evaluates on these)
  and train 0-3999 (4,000), bit-identical to the original dataset.

The exact CIFAR-10 in full is the tfds dataset ``cifar10``.
"""

from __future__ import annotations

import io
import os
import pathlib
import tarfile
import tempfile
import warnings

import numpy as np
from PIL import Image

from jaxadv.cache import cache_dir
from jaxadv.data import checksum, tfds_source
from jaxadv.data.dataset import ArrayDataset, from_uint8

NUM_CLASSES, MEAN, STD = tfds_source.TFDS_DATASETS["cifar10"]
JPEG_FILES = {"train": ("cifar10_jpeg_train.tar.gz", "cifar10_train_labels.npy"),
              "test": ("cifar10_jpeg_test.tar.gz", "cifar10_test_labels.npy")}
EXACT_FILES = {"train": "cifar10_train_0-3999_lossless.npz",
               "test": "cifar10_test_0-999_lossless.npz"}
FILES = {  # name -> (bytes, sha256)
    "cifar10_jpeg_train.tar.gz":
        (16199354, "6ef4cb1efdd3b0123e23b658a47a6a30d42b7704bd8223c9c2a836b6b62cad15"),
    "cifar10_jpeg_test.tar.gz":
        (3241816, "2e583c99e1f17d4950322b79ec0f4aa2311a02a234d9afdc5d99e78b8d3d188b"),
    "cifar10_train_labels.npy":
        (50128, "fad921ba16b0efeebb54393d1351545d1fe1a357f6f81324c821e3e11b956c70"),
    "cifar10_test_labels.npy":
        (10128, "19004b019bd095265b4ce6637c9ff979c66abcbc8e658a665f791b487cdea5eb"),
    "cifar10_train_0-3999_lossless.npz":
        (11335244, "5a3a42d44290a419b420982b8bebee85690907a7a4ec2535b9ce037d0c54d8cb"),
    "cifar10_test_0-999_lossless.npz":
        (2828295, "857044e1709626a578661dcdd92ff251efc3a57ba5690df6c31e99a90b58a98f"),
}
HOW_TO_GET = ("Copy the folder cifar10/ of the project's shared/data (provenance in its "
              "README.md) and point $JAXADV_CIFAR10_DIR or dataset.data_dir at it. The exact "
              "CIFAR-10 in full is the tfds dataset 'cifar10' "
              "(`tfds build cifar10 --file_format=array_record`).")


def default_cifar10_dir() -> pathlib.Path | None:
  """$JAXADV_CIFAR10_DIR, else the repository's sibling `shared/data/cifar10` when it exists."""
  if os.environ.get("JAXADV_CIFAR10_DIR"):
    return pathlib.Path(os.environ["JAXADV_CIFAR10_DIR"])
  candidate = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10"
  return candidate if candidate.is_dir() else None


def _verified(data_dir, *names: str) -> list[tuple[pathlib.Path, str]]:
  """(path, sha256) of each file `names` in the data folder, sizes and digests checked."""
  directory = pathlib.Path(data_dir) if data_dir else default_cifar10_dir()
  missing = [name for name in names if directory is None or not (directory / name).is_file()]
  if missing:
    where = directory or "(no folder: $JAXADV_CIFAR10_DIR unset)"
    raise FileNotFoundError(f"CIFAR-10 files {missing} not found in {where}. {HOW_TO_GET}")
  return [(directory / name, checksum.verify_file(directory / name, size=FILES[name][0],
                                                  sha256=FILES[name][1], how_to_get=HOW_TO_GET))
          for name in names]


def decode_jpeg_archive(path: pathlib.Path) -> np.ndarray:
  """The JPEG images of a .tar.gz archive, in file-name order, as uint8 (N, H, W, 3)."""
  images = {}
  with tarfile.open(path, "r:gz") as archive:
    for member in archive:
      if member.isfile() and member.name.endswith(".jpg"):
        with Image.open(io.BytesIO(archive.extractfile(member).read())) as image:
          images[member.name] = np.asarray(image.convert("RGB"))
  return np.stack([images[name] for name in sorted(images)])


def _decoded_cached(archive: pathlib.Path, sha256: str) -> np.ndarray:
  """`decode_jpeg_archive(archive)`, read from / written to the cache file keyed by sha256."""
  cached = cache_dir() / f"{archive.name.removesuffix('.tar.gz')}-{sha256}.npy"
  if cached.is_file():
    return np.load(cached)
  images = decode_jpeg_archive(archive)
  try:  # temp file + rename: a reader never sees a partly written cache file
    cached.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=cached.parent, prefix=cached.name, suffix=".tmp")
    try:
      with os.fdopen(fd, "wb") as f:
        np.save(f, images)
      os.chmod(temp, 0o644)  # mkstemp makes it private; the cache may be shared
      os.replace(temp, cached)
    except BaseException:
      os.unlink(temp)
      raise
  except OSError as error:
    warnings.warn(f"could not cache the decoded {archive.name} in {cached.parent} ({error}); "
                  "it will be decoded again next time. Set $JAXADV_CACHE_DIR to a writable folder.")
  return images


def _check_split(split: str) -> None:
  if split not in ("train", "test"):
    raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'.")


def _dataset(images: np.ndarray, labels: np.ndarray, name: str, files: str) -> ArrayDataset:
  if len(images) != len(labels):
    raise ValueError(f"{files}: {len(images)} images but {len(labels)} labels. {HOW_TO_GET}")
  return from_uint8(images, labels, num_classes=NUM_CLASSES, name=name, mean=MEAN, std=STD)


def load_cifar10_jpeg(split: str, *, data_dir: str | os.PathLike | None = None) -> ArrayDataset:
  """CIFAR-10 (JPEG copy): split "train" (50,000) or "test" (10,000); lossy, see the module doc."""
  _check_split(split)
  (archive, sha256), (labels_path, _) = _verified(data_dir, *JPEG_FILES[split])
  images = _decoded_cached(archive, sha256)
  return _dataset(images, np.load(labels_path), "CIFAR-10 (JPEG copy)",
                  f"{archive} and {labels_path}")


def load_cifar10_exact(split: str, *, data_dir: str | os.PathLike | None = None) -> ArrayDataset:
  """Exact CIFAR-10 images: "test" = test images 0-999, "train" = training images 0-3999."""
  _check_split(split)
  [(path, _)] = _verified(data_dir, EXACT_FILES[split])
  with np.load(path) as arrays:
    images, labels = arrays["x"], arrays["y"]
  return _dataset(images, labels, "CIFAR-10 (exact subset)", str(path))
