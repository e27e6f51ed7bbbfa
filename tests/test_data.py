"""Datasets and batching: fixed splits, determinism, padding, tfds mock data, clear errors;
the file loaders on small files the tests write (MNIST IDX, CIFAR-10 JPEG archives: checksums,
truncation, the decode cache); on-device augmentation, per-host sharding and prefetching to the
mesh. tests/test_datasets_real.py checks the real files at full size."""

import gzip
import hashlib
import io
import struct
import tarfile

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jaxadv import data
from jaxadv.data import augment, cifar10, local, mnist, tfds_source
from jaxadv import train as training
from jaxadv import sharding
from jaxadv.train import state as state_lib
from jaxadv.train.step import AUGMENT_STREAM, make_train_step

from helpers import random_images, tiny_config


def test_digits_split_is_fixed_and_disjoint():
  train, test = data.load("digits", "train"), data.load("digits", "test")
  assert (len(train), len(test)) == (1437, 360)
  assert train.image_shape == (8, 8, 1) and train.images.dtype == np.float32
  assert 0.0 <= train.images.min() and train.images.max() <= 1.0
  train_idx, test_idx = data.dataset.split_indices(1797, 360, seed=0)
  assert not set(train_idx) & set(test_idx)
  np.testing.assert_array_equal(test.labels, data.load("digits", "test").labels)


def test_mnist_idx_fixed_8k_2k_split(mnist_dir):  # pylint: disable=unused-argument
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


@pytest.mark.parametrize("process_count", [2, 4])
def test_train_batches_split_over_processes(process_count):
  """Simulated multi-host: at every step the processes' local batches are disjoint and, in
  process order, make up exactly the single-process global batch."""
  dataset = data.load("digits", "train")
  dataset = data.ArrayDataset(dataset.images, np.arange(len(dataset), dtype=np.int32), 10,
                              "row ids", dataset.mean, dataset.std)  # label = row id
  steps = data.steps_per_epoch(dataset, 64) + 2  # crosses an epoch boundary
  whole = [b["label"] for _, b in zip(range(steps), data.train_batches(dataset, 64, seed=0))]
  parts = [[b["label"] for _, b in zip(range(steps),
                                        data.train_batches(dataset, 64, 0, 0, p, process_count))]
           for p in range(process_count)]
  for step in range(steps):
    local_rows = [parts[p][step] for p in range(process_count)]
    assert all(len(rows) == 64 // process_count for rows in local_rows)
    np.testing.assert_array_equal(np.concatenate(local_rows), whole[step])
    assert len(np.unique(np.concatenate(local_rows))) == 64


def test_mesh_rows_of_each_process_match_train_batches():
  """The data mesh orders devices by (process, id), so process p's devices hold rows
  [p*B/P, (p+1)*B/P) of a sharded batch: the slice train_batches gives process p. Checked
  with the 8 devices grouped into 4 simulated processes of 2 consecutive devices."""
  devices = jax.devices()
  mesh = sharding.data_mesh(devices[::-1])
  assert [d.id for d in mesh.devices] == sorted(d.id for d in devices)
  rows = sharding.batch_sharded(mesh).devices_indices_map((64,))
  for p in range(4):
    owned = np.concatenate([np.arange(64)[rows[d][0]] for d in mesh.devices[2 * p:2 * p + 2]])
    np.testing.assert_array_equal(owned, np.arange(16 * p, 16 * (p + 1)))


def test_put_batch_builds_the_global_sharded_batch():
  mesh = sharding.data_mesh()
  batch = next(data.train_batches(data.load("digits", "train"), 16, seed=0))
  placed = sharding.put_batch(batch, mesh)
  assert placed["image"].sharding == sharding.batch_sharded(mesh)
  assert [s.data.shape[0] for s in placed["image"].addressable_shards] == [2] * 8
  chex.assert_trees_all_equal(jax.device_get(placed), batch)


def test_eval_batches_cover_each_example_once():
  dataset = data.load("digits", "test")
  batches = list(data.eval_batches(dataset, 128))
  assert all(b["image"].shape == (128, 8, 8, 1) for b in batches)
  mask = np.concatenate([b["mask"] for b in batches]).astype(bool)
  labels = np.concatenate([b["label"] for b in batches])[mask]
  np.testing.assert_array_equal(labels, dataset.labels)


@pytest.mark.parametrize("name, shape", [("cifar10", (32, 32, 3)), ("fashion_mnist", (28, 28, 1)),
                                         ("svhn_cropped", (32, 32, 3))])
def test_tfds_datasets_through_mock_data(name, shape):
  with tfds.testing.mock_data(num_examples=12):
    dataset = data.load(name, "train")
  assert len(dataset) == 12 and dataset.image_shape == shape
  assert dataset.images.dtype == np.float32 and dataset.images.max() <= 1.0
  assert dataset.labels.dtype == np.int32


def test_unprepared_tfds_dataset_says_how_to_prepare(tmp_path):
  with pytest.raises(data.DatasetNotFoundError, match="tfds build cifar10"):
    data.load("cifar10", "train", data_dir=str(tmp_path))


def _write_idx(directory, split, images, labels, monkeypatch):
  """Gzipped IDX files of `split` in `directory`, their content's sha256 made the expected one."""
  images_file, labels_file = mnist.FILES[split]
  contents = {images_file: struct.pack(">IIII", 2051, len(images), 28, 28) + images.tobytes(),
              labels_file: struct.pack(">II", 2049, len(labels)) + labels.tobytes()}
  for name, content in contents.items():
    (directory / name).write_bytes(gzip.compress(content))
    monkeypatch.setitem(mnist.SHA256, name, hashlib.sha256(content).hexdigest())


def _digits(count, seed):
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, (count, 28, 28), dtype=np.uint8),
          rng.integers(0, 10, count, dtype=np.uint8))


def test_mnist_reads_the_standard_split_from_idx_files(tmp_path, monkeypatch):
  written = {"train": _digits(6, 0), "test": _digits(3, 1)}
  for split, (images, labels) in written.items():
    _write_idx(tmp_path, split, images, labels, monkeypatch)
  for split, (images, labels) in written.items():
    dataset = data.load("mnist", split, data_dir=str(tmp_path))
    assert dataset.name == "mnist" and dataset.image_shape == (28, 28, 1)
    assert (dataset.mean, dataset.std) == ((0.1307,), (0.3081,))
    np.testing.assert_array_equal(dataset.images[..., 0], images / np.float32(255))
    np.testing.assert_array_equal(dataset.labels, labels)


def test_mnist_idx_checksum_mismatch_and_truncation_name_the_file(tmp_path, monkeypatch):
  _write_idx(tmp_path, "train", *_digits(6, 0), monkeypatch)
  monkeypatch.setitem(mnist.SHA256, "train-labels-idx1-ubyte.gz", "0" * 64)
  with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.gz: sha256 .* does not match"
                                       r".*shared/data/mnist"):
    data.load("mnist", "train", data_dir=str(tmp_path))
  _write_idx(tmp_path, "train", *_digits(6, 0), monkeypatch)
  images = tmp_path / "train-images-idx3-ubyte.gz"
  images.write_bytes(images.read_bytes()[:-100])
  with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz is truncated"):
    data.load("mnist", "train", data_dir=str(tmp_path))


def test_mnist_falls_back_to_tfds_without_idx_files(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXADV_MNIST_DIR", str(tmp_path))  # an empty folder
  with tfds.testing.mock_data(num_examples=12):
    dataset = data.load("mnist", "train")
  assert len(dataset) == 12 and dataset.image_shape == (28, 28, 1)


def test_mnist_in_neither_place_says_both_ways_to_get_it(tmp_path, monkeypatch):
  def unprepared(name, split, data_dir=None, download=False):
    raise data.DatasetNotFoundError(f"tfds dataset {name!r}: run `tfds build {name}`")

  monkeypatch.setattr(tfds_source, "load_tfds", unprepared)
  monkeypatch.setenv("JAXADV_MNIST_DIR", str(tmp_path))
  with pytest.raises(data.DatasetNotFoundError) as error:
    data.load("mnist", "test")
  message = str(error.value)
  for part in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", str(tmp_path),
               "$JAXADV_MNIST_DIR", "shared/data/mnist", "tfds build mnist"):
    assert part in message


def _smooth_images(count, seed):
  """uint8 (count, 32, 32, 3) colour gradients: JPEG keeps them close."""
  rng = np.random.default_rng(seed)
  ramp = np.linspace(0, 1, 32)[None, :, None, None] * np.linspace(0, 1, 32)[None, None, :, None]
  return (255 * (0.2 + 0.6 * ramp * rng.uniform(0, 1, (count, 1, 1, 3)))).astype(np.uint8)


def _write_cifar_jpeg(directory, split, images, labels):
  """A CIFAR-10 JPEG archive and labels file; returns what Pillow decodes from each JPEG."""
  decoded = []
  with tarfile.open(directory / f"cifar10_jpeg_{split}.tar.gz", "w:gz") as archive:
    for i, image in enumerate(images):
      jpeg = io.BytesIO()
      Image.fromarray(image).save(jpeg, "JPEG", quality=90)
      info = tarfile.TarInfo(f"{split}/{i:05d}.jpg")
      info.size = jpeg.tell()
      archive.addfile(info, io.BytesIO(jpeg.getvalue()))
      decoded.append(np.asarray(Image.open(jpeg).convert("RGB")))
  np.save(directory / f"cifar10_{split}_labels.npy", np.asarray(labels, np.uint8))
  return np.stack(decoded)


def _trust(directory, monkeypatch):
  """Makes the sizes and sha256 of the files in `directory` the expected ones."""
  for path in directory.iterdir():
    monkeypatch.setitem(cifar10.FILES, path.name,
                        (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest()))


@pytest.fixture
def small_cifar(tmp_path, monkeypatch):
  """A 5-image CIFAR-10 JPEG test split in tmp_path/cifar10, a fresh cache in tmp_path/cache,
  and a record of the archives `decode_jpeg_archive` is called on."""
  directory = tmp_path / "cifar10"
  directory.mkdir()
  decoded = _write_cifar_jpeg(directory, "test", _smooth_images(5, 0), [3, 8, 8, 0, 6])
  _trust(directory, monkeypatch)
  monkeypatch.setenv("JAXADV_CACHE_DIR", str(tmp_path / "cache"))
  decode, calls = cifar10.decode_jpeg_archive, []
  monkeypatch.setattr(cifar10, "decode_jpeg_archive",
                      lambda path: calls.append(path) or decode(path))
  return directory, decoded, calls


def test_cifar10_jpeg_is_decoded_once_then_read_from_the_cache(small_cifar, tmp_path):
  directory, decoded, calls = small_cifar
  first = data.load("cifar10_jpeg", "test", data_dir=str(directory))
  assert first.name == "CIFAR-10 (JPEG copy)" and first.image_shape == (32, 32, 3)
  assert (first.mean, first.std) == tuple(data.TFDS_DATASETS["cifar10"][1:])
  np.testing.assert_array_equal(first.images, decoded / np.float32(255))
  np.testing.assert_array_equal(first.labels, [3, 8, 8, 0, 6])
  again = data.load("cifar10_jpeg", "test", data_dir=str(directory))
  assert len(calls) == 1  # the second load read the cache
  np.testing.assert_array_equal(again.images, first.images)
  sha256 = cifar10.FILES["cifar10_jpeg_test.tar.gz"][1]
  assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"cifar10_jpeg_test-{sha256}.npy"]


def test_cifar10_jpeg_cache_is_keyed_by_the_archive_checksum(small_cifar, monkeypatch):
  directory, _, calls = small_cifar
  data.load("cifar10_jpeg", "test", data_dir=str(directory))
  decoded = _write_cifar_jpeg(directory, "test", _smooth_images(6, 1), [1, 2, 3, 4, 5, 6])
  _trust(directory, monkeypatch)
  changed = data.load("cifar10_jpeg", "test", data_dir=str(directory))
  assert len(calls) == 2  # a new archive is decoded, not served from the old cache
  np.testing.assert_array_equal(changed.images, decoded / np.float32(255))


def test_cifar10_jpeg_without_a_writable_cache_warns_and_loads(small_cifar, tmp_path,
                                                                monkeypatch):
  directory, decoded, calls = small_cifar
  blocker = tmp_path / "not_a_folder"
  blocker.write_text("")
  monkeypatch.setenv("JAXADV_CACHE_DIR", str(blocker / "cache"))
  with pytest.warns(UserWarning, match="could not cache the decoded cifar10_jpeg_test.tar.gz"):
    dataset = data.load("cifar10_jpeg", "test", data_dir=str(directory))
  np.testing.assert_array_equal(dataset.images, decoded / np.float32(255))
  assert len(calls) == 1


def test_cifar10_checksum_mismatch_names_the_file(small_cifar):
  directory, _, _ = small_cifar
  np.save(directory / "cifar10_test_labels.npy", np.asarray([3, 8, 8, 0, 7], np.uint8))
  with pytest.raises(ValueError, match=r"cifar10_test_labels.npy: sha256 .* does not match.*"
                                       r"shared/data.*JAXADV_CIFAR10_DIR"):
    data.load("cifar10_jpeg", "test", data_dir=str(directory))


def test_cifar10_truncated_archive_is_a_clear_error(small_cifar):
  directory, _, calls = small_cifar
  archive = directory / "cifar10_jpeg_test.tar.gz"
  archive.write_bytes(archive.read_bytes()[:500])
  with pytest.raises(ValueError, match=r"cifar10_jpeg_test.tar.gz has 500 bytes, expected .*"
                                       r"truncated"):
    data.load("cifar10_jpeg", "test", data_dir=str(directory))
  assert not calls


def test_cifar10_missing_files_say_how_to_get_them(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"cifar10_jpeg_train.tar.gz', "
                                              r"'cifar10_train_labels.npy'.*shared/data"):
    data.load("cifar10_jpeg", "train", data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match=r"cifar10_test_0-999_lossless.npz.*tfds build"):
    data.load("cifar10_exact", "test", data_dir=str(tmp_path))


def test_cifar10_label_count_mismatch(small_cifar, monkeypatch):
  directory, _, _ = small_cifar
  np.save(directory / "cifar10_test_labels.npy", np.asarray([3, 8, 8, 0], np.uint8))
  _trust(directory, monkeypatch)
  with pytest.raises(ValueError, match="5 images but 4 labels"):
    data.load("cifar10_jpeg", "test", data_dir=str(directory))


def test_cifar10_exact_reads_the_lossless_subset(tmp_path, monkeypatch):
  images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
  np.savez(tmp_path / "cifar10_test_0-999_lossless.npz", x=images, y=np.uint8([3, 8, 8]))
  _trust(tmp_path, monkeypatch)
  dataset = data.load("cifar10_exact", "test", data_dir=str(tmp_path))
  assert dataset.name == "CIFAR-10 (exact subset)"
  np.testing.assert_array_equal(dataset.images, images / np.float32(255))
  np.testing.assert_array_equal(dataset.labels, [3, 8, 8])


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
  monkeypatch.delenv("JAXADV_CACHE_DIR", raising=False)
  monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
  monkeypatch.setenv("HOME", str(tmp_path))
  assert cifar10.cache_dir() == tmp_path / ".cache" / "jaxadv"
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert cifar10.cache_dir() == tmp_path / "xdg" / "jaxadv"
  monkeypatch.setenv("JAXADV_CACHE_DIR", str(tmp_path / "mine"))
  assert cifar10.cache_dir() == tmp_path / "mine"


def test_tfds_cifar10_through_load_and_augmentation():
  with tfds.testing.mock_data(num_examples=8):
    dataset = data.load("cifar10", "train")
  out = augment.crop_flip(jax.random.PRNGKey(0), dataset.images)
  assert out.shape == (8, 32, 32, 3) and out.dtype == jnp.float32
  assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def _offsets(key, num_examples, padding):
  return [np.asarray(jax.random.randint(jax.random.fold_in(key, i), (2,), 0, 2 * padding + 1))
          for i in range(num_examples)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_crop_is_a_window_of_the_zero_padded_image(seed):
  images = np.asarray(random_images((16, 8, 6, 3), seed))
  key = jax.random.PRNGKey(seed)
  out = np.asarray(augment.random_crop(key, images, padding=2))
  padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
  offsets = _offsets(key, 16, 2)
  for i, (dy, dx) in enumerate(offsets):
    np.testing.assert_array_equal(out[i], padded[i, dy:dy + 8, dx:dx + 6])
  assert len({tuple(o) for o in offsets}) > 4  # the examples get different windows
  np.testing.assert_array_equal(augment.random_crop(key, images, padding=0), images)


def test_random_flip_flips_exactly_the_examples_whose_bit_is_set():
  images = np.asarray(random_images((16, 5, 7, 2)))
  key = jax.random.PRNGKey(3)
  out = np.asarray(augment.random_flip(key, images))
  bits = [bool(jax.random.bernoulli(jax.random.fold_in(key, i))) for i in range(16)]
  assert 0 < sum(bits) < 16
  for i, bit in enumerate(bits):
    np.testing.assert_array_equal(out[i], images[i, :, ::-1] if bit else images[i])


def test_augmentation_is_deterministic_per_key_and_per_example():
  images = random_images((12, 8, 8, 3))
  key = jax.random.PRNGKey(5)
  out = augment.crop_flip(key, images)
  np.testing.assert_array_equal(out, augment.crop_flip(key, images))
  np.testing.assert_array_equal(out[:5], augment.crop_flip(key, images[:5]))  # keys by index
  assert not np.array_equal(out, augment.crop_flip(jax.random.PRNGKey(6), images))


def test_augmentation_rejects_bad_input():
  with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
    augment.random_flip(jax.random.PRNGKey(0), jnp.zeros((4, 8, 8)))
  with pytest.raises(ValueError, match="padding"):
    augment.random_crop(jax.random.PRNGKey(0), jnp.zeros((4, 8, 8, 1)), padding=-1)
  with pytest.raises(ValueError, match="unknown augmentation"):
    augment.get("mixup")


def _augmented_step(mesh, augment_fn, images):
  """One train step with a trivial objective that reports the images it was given and a draw
  from its own key; returns those metrics."""
  def objective(params, model_state, batch, key, step):
    loss = params["w"] * jnp.mean(batch["image"])
    return loss, (model_state, {"image": batch["image"], "draw": jax.random.uniform(key)})

  tx = optax.sgd(0.1)
  params = {"w": jnp.ones(())}
  state = state_lib.TrainState(step=jnp.asarray(3, jnp.int32), params=params, model_state={},
                               opt_state=tx.init(params), rng=jax.random.PRNGKey(7))
  state = jax.device_put(state, sharding.replicated(mesh))
  step = make_train_step(objective, tx, mesh, augment=augment_fn)
  batch = {"image": images, "label": np.zeros(len(images), np.int32)}
  _, metrics = step(state, sharding.put_batch(batch, mesh))
  return jax.device_get(metrics)


def test_train_step_augments_on_device_identically_on_1_and_8_devices():
  images = np.asarray(random_images((16, 8, 8, 3)))
  on_8 = _augmented_step(sharding.data_mesh(), augment.crop_flip, images)
  on_1 = _augmented_step(sharding.data_mesh(jax.devices()[:1]), augment.crop_flip, images)
  plain = _augmented_step(sharding.data_mesh(), None, images)
  step_key = jax.random.fold_in(jax.random.PRNGKey(7), 3)
  expected = augment.crop_flip(jax.random.fold_in(step_key, AUGMENT_STREAM), images)
  np.testing.assert_array_equal(on_8["image"], expected)
  np.testing.assert_array_equal(on_1["image"], expected)
  np.testing.assert_array_equal(plain["image"], images)
  assert on_8["draw"] == on_1["draw"] == plain["draw"]  # the objective's key is unchanged


def test_prefetch_yields_the_same_batches_in_order_on_the_mesh():
  mesh = sharding.data_mesh()
  batches = [{"image": np.full((8, 2), i, np.float32)} for i in range(5)]
  pulled = []

  def source():
    for b in batches:
      pulled.append(b)
      yield b

  stream = data.prefetch(source(), lambda b: sharding.put_batch(b, mesh), size=3)
  first = next(stream)
  assert len(pulled) == 3  # three batches were put before the first was used
  out = [first, *stream]  # a finite source ends the stream after its last batch
  assert len(out) == 5
  for got, want in zip(out, batches):
    assert got["image"].sharding == sharding.batch_sharded(mesh)
    np.testing.assert_array_equal(got["image"], want["image"])
  with pytest.raises(ValueError, match="prefetch size"):
    data.prefetch(batches, lambda b: b, size=0)


@pytest.mark.slow
def test_training_with_augmentation_resumes_identically(tmp_path):
  """The loop end to end with crop_flip on: a killed and resumed run ends with the same
  parameters (three compilations of the step: ~30 s on 2 cores, hence slow)."""
  config = tiny_config(**{"dataset.augment": "crop_flip", "objective.name": "erm",
                          "dataset.num_train": 128, "num_epochs": 1,
                          "checkpoint_every_steps": 2})
  reference = training.train(config, tmp_path / "whole", progress=False)
  training.train(config, tmp_path / "split", stop_after_step=3, progress=False)
  resumed = training.train(config, tmp_path / "split", progress=False)
  assert int(resumed.step) == int(reference.step) == 4
  chex.assert_trees_all_equal(jax.device_get(resumed.params), jax.device_get(reference.params))


def test_config_augment_field_is_validated():
  assert tiny_config().dataset.augment == "none"
  with pytest.raises(ValueError, match="dataset.augment 'mixup' is unknown"):
    tiny_config(**{"dataset.augment": "mixup"})
