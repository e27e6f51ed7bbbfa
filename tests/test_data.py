"""Datasets and batching: fixed splits, determinism, padding, tfds mock data, clear errors."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxadv import data
from jaxadv.data import local


def test_digits_split_is_fixed_and_disjoint():
  train, test = data.load("digits", "train"), data.load("digits", "test")
  assert (len(train), len(test)) == (1437, 360)
  assert train.image_shape == (8, 8, 1) and train.images.dtype == np.float32
  assert 0.0 <= train.images.min() and train.images.max() <= 1.0
  train_idx, test_idx = data.dataset.split_indices(1797, 360, seed=0)
  assert not set(train_idx) & set(test_idx)
  np.testing.assert_array_equal(test.labels, data.load("digits", "test").labels)


def test_mnist_idx_fixed_8k_2k_split():
  train, test = data.load("mnist_idx", "train"), data.load("mnist_idx", "test")
  assert (len(train), len(test)) == (8000, 2000)
  assert test.image_shape == (28, 28, 1)
  counts = np.bincount(train.labels, minlength=10) + np.bincount(test.labels, minlength=10)
  np.testing.assert_array_equal(counts, [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
  np.testing.assert_array_equal(np.bincount(test.labels),
                                [186, 246, 199, 192, 202, 168, 179, 207, 205, 216])


def test_missing_mnist_dir_says_how_to_get_it(tmp_path):
  with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.gz"):
    local.load_mnist_idx("train", tmp_path)


def test_unknown_dataset_and_split():
  with pytest.raises(ValueError, match="unknown dataset"):
    data.load("imagenet21k", "train")
  with pytest.raises(ValueError, match="unknown split"):
    data.load("digits", "validation")


def test_train_batches_are_deterministic_and_resumable():
  dataset = data.load("digits", "train")
  first = [b["label"] for _, b in zip(range(30), data.train_batches(dataset, 64, seed=3))]
  again = [b["label"] for _, b in zip(range(30), data.train_batches(dataset, 64, seed=3))]
  resumed = [b["label"] for _, b in zip(range(10), data.train_batches(dataset, 64, 3, 20))]
  np.testing.assert_array_equal(first, again)
  np.testing.assert_array_equal(first[20:], resumed)
  per_epoch = data.steps_per_epoch(dataset, 64)
  assert not np.array_equal(first[0], first[per_epoch])  # a new order each epoch


def test_train_batches_split_over_processes():
  dataset = data.load("digits", "train")
  whole = next(data.train_batches(dataset, 64, seed=0))
  parts = [next(data.train_batches(dataset, 64, 0, 0, p, 4)) for p in range(4)]
  np.testing.assert_array_equal(np.concatenate([p["label"] for p in parts]), whole["label"])


def test_eval_batches_cover_each_example_once():
  dataset = data.load("digits", "test")
  batches = list(data.eval_batches(dataset, 128))
  assert all(b["image"].shape == (128, 8, 8, 1) for b in batches)
  mask = np.concatenate([b["mask"] for b in batches]).astype(bool)
  labels = np.concatenate([b["label"] for b in batches])[mask]
  np.testing.assert_array_equal(labels, dataset.labels)


@pytest.mark.parametrize("name, shape", [("cifar10", (32, 32, 3)), ("mnist", (28, 28, 1))])
def test_tfds_datasets_through_mock_data(name, shape):
  with tfds.testing.mock_data(num_examples=12):
    dataset = data.load(name, "train")
  assert len(dataset) == 12 and dataset.image_shape == shape
  assert dataset.images.dtype == np.float32 and dataset.images.max() <= 1.0
  assert dataset.labels.dtype == np.int32


def test_unprepared_tfds_dataset_says_how_to_prepare(tmp_path):
  with pytest.raises(data.DatasetNotFoundError, match="tfds build cifar10"):
    data.load("cifar10", "train", data_dir=str(tmp_path))
