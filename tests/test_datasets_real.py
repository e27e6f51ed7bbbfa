"""The real data files of shared/data at full size: counts, class balance, first labels, the
CIFAR-10 JPEG copy against the exact subsets, and the decode cache. Each test is skipped,
saying where to put the files, when they are absent. The cold decode of the 60,000 CIFAR-10
JPEGs takes ~15 s on 2 CPU cores, once for the module."""

import time
import types

import numpy as np
import pytest

from jaxadv import data
from jaxadv.data import cifar10, mnist
from jaxadv.data.dataset import split_indices

MNIST_COUNTS = {"train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
                "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]}


@pytest.fixture(scope="module")
def cifar10_dir():
  """The shared CIFAR-10 folder; the test is skipped when any of its files is absent."""
  directory = cifar10.default_cifar10_dir()
  if directory is None or not all((directory / name).is_file() for name in cifar10.FILES):
    pytest.skip("CIFAR-10 files not found: set $JAXADV_CIFAR10_DIR or place shared/data/cifar10 "
                "beside the repository.")
  return directory


@pytest.fixture(scope="module")
def jpeg(cifar10_dir, tmp_path_factory):  # pylint: disable=unused-argument
  """Both splits of cifar10_jpeg, decoded cold into a fresh cache folder."""
  cache = tmp_path_factory.mktemp("cache")
  decode, decoded = cifar10.decode_jpeg_archive, []
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("JAXADV_CACHE_DIR", str(cache))
    patch.setattr(cifar10, "decode_jpeg_archive",
                  lambda path: decoded.append(path.name) or decode(path))
    start = time.perf_counter()
    splits = {split: data.load("cifar10_jpeg", split) for split in ("train", "test")}
    seconds = time.perf_counter() - start
  return types.SimpleNamespace(cache=cache, seconds=seconds, decoded=decoded, **splits)


def test_mnist_standard_split(mnist_dir):
  if mnist.missing_files(mnist_dir, "train"):
    pytest.skip(f"MNIST training files not in {mnist_dir}.")
  loaded = {split: data.load("mnist", split) for split in ("train", "test")}
  for split, counts in MNIST_COUNTS.items():
    assert loaded[split].name == "mnist" and loaded[split].image_shape == (28, 28, 1)
    np.testing.assert_array_equal(np.bincount(loaded[split].labels), counts)
  assert (len(loaded["train"]), len(loaded["test"])) == (60000, 10000)
  _, test_idx = split_indices(10000, 2000, seed=0)  # mnist_idx's test split is a subset
  np.testing.assert_array_equal(data.load("mnist_idx", "test").images,
                                loaded["test"].images[test_idx])


def test_cifar10_jpeg_counts_balance_and_first_labels(jpeg):
  assert sorted(jpeg.decoded) == ["cifar10_jpeg_test.tar.gz", "cifar10_jpeg_train.tar.gz"]
  for split, size in (("train", 50000), ("test", 10000)):
    dataset = getattr(jpeg, split)
    assert len(dataset) == size and dataset.image_shape == (32, 32, 3)
    assert dataset.name == "CIFAR-10 (JPEG copy)"
    np.testing.assert_array_equal(np.bincount(dataset.labels), [size // 10] * 10)
  np.testing.assert_array_equal(jpeg.test.labels[:10], [3, 8, 8, 0, 6, 6, 1, 6, 3, 1])
  print(f"cold decode of both splits: {jpeg.seconds:.1f} s")


def test_cifar10_jpeg_second_load_reads_the_cache(jpeg, monkeypatch):
  def decode_again(path):
    raise AssertionError(f"{path} decoded again despite the cache")

  monkeypatch.setenv("JAXADV_CACHE_DIR", str(jpeg.cache))
  monkeypatch.setattr(cifar10, "decode_jpeg_archive", decode_again)
  start = time.perf_counter()
  splits = {split: data.load("cifar10_jpeg", split) for split in ("train", "test")}
  seconds = time.perf_counter() - start
  for split, dataset in splits.items():
    assert np.array_equal(dataset.images, getattr(jpeg, split).images)
    assert np.array_equal(dataset.labels, getattr(jpeg, split).labels)
  print(f"cached load of both splits: {seconds:.1f} s (cold {jpeg.seconds:.1f} s)")
  assert seconds < jpeg.seconds / 3


@pytest.mark.parametrize("split, size", [("test", 1000), ("train", 4000)])
def test_cifar10_exact_subset_is_the_jpeg_copy_within_its_stated_error(jpeg, split, size):
  exact, lossy = data.load("cifar10_exact", split), getattr(jpeg, split)
  assert len(exact) == size and exact.name == "CIFAR-10 (exact subset)"
  np.testing.assert_array_equal(exact.labels, lossy.labels[:size])
  error = float(np.abs(exact.images - lossy.images[:size]).mean())
  assert 3 / 255 < error < 9 / 255, error * 255  # the README states ≈ 5.8/255
