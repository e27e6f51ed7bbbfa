"""Dense prediction end to end: per-pixel labels in ArrayDataset, the mnist_seg dataset, the FCN
model, dense attacks, the confusion-matrix metrics, the segmentation evaluation and its dispatch
from `jaxadv train` / `jaxadv eval`, and the config checks of the task. The FCN's auxiliary
BatchNorm is tested with the other BatchNorm models (tests/test_models.py, BN_MODELS)."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import attacks, cli, data, methods, models, sharding
from jaxadv.attacks import losses
from jaxadv.data import mnist_seg, tfds_source
from jaxadv.eval import segmentation, suites
from jaxadv.train import sweep

from helpers import random_images, tiny_config


def _dense_dataset(n=10, size=8, num_classes=3, seed=0) -> data.ArrayDataset:
  rng = np.random.default_rng(seed)
  images = rng.uniform(0, 1, (n, size, size, 1)).astype(np.float32)
  labels = rng.integers(0, num_classes, (n, size, size)).astype(np.int32)
  return data.ArrayDataset(images, labels, num_classes, "toy_seg", (0.5,), (0.5,))


@functools.lru_cache(maxsize=None)
def _fcn(num_classes=3, size=8):
  """(model, variables) of a width-4 FCN, initialised once per session."""
  model = models.get("fcn", num_classes=num_classes, width=4, mean=(0.5,), std=(0.5,))
  return model, jax.jit(model.init)(jax.random.key(0, impl="rbg"), jnp.zeros((1, size, size, 1)))


def test_segmentation_labels_of_hand_made_digits():
  images = np.zeros((2, 4, 4, 1), np.float32)
  images[0, 0, 1], images[0, 2, 3] = 1.0, 0.5  # digit 3: two stroke pixels, one at the threshold
  images[0, 3, 3] = 0.4999                       # just below it: background
  images[1] = 0.75                               # digit 0: every pixel a stroke
  labels = mnist_seg.segmentation_labels(images, np.array([3, 0]))
  expected = np.zeros((2, 4, 4), np.int32)
  expected[0, 0, 1] = expected[0, 2, 3] = 4
  expected[1] = 1
  np.testing.assert_array_equal(labels, expected)
  assert labels.dtype == np.int32
  with pytest.raises(ValueError, match=r"\(N, H, W, 1\)"):
    mnist_seg.segmentation_labels(np.zeros((2, 4, 4, 3), np.float32), np.array([3, 0]))
  with pytest.raises(ValueError, match=r"digits must lie in \[0, 9\]"):
    mnist_seg.segmentation_labels(images, np.array([3, 10]))


def test_array_dataset_takes_per_pixel_labels_and_rejects_mismatched_ones():
  dense = _dense_dataset()
  assert dense.dense and not data.ArrayDataset(dense.images, dense.labels[:, 0, 0], 3, "c",
                                               (0.5,), (0.5,)).dense
  assert dense.take(4).labels.shape == (4, 8, 8)
  for labels in (dense.labels[:, :, :4], dense.labels[:, 0], dense.labels[..., None]):
    with pytest.raises(ValueError, match=r"expected \(10,\) \(one label per image\) or "
                                         r"\(10, 8, 8\) \(one label per pixel\)"):
      data.ArrayDataset(dense.images, labels, 3, "bad", (0.5,), (0.5,))


def test_dense_labels_are_batched_padded_and_sharded_with_their_images():
  dataset = _dense_dataset(n=20)
  batch = next(data.train_batches(dataset, 16, seed=0, start_step=1))
  rows = data.batching.epoch_permutation(20, 0, 1)[:16]
  np.testing.assert_array_equal(batch["label"], dataset.labels[rows])
  last = list(data.eval_batches(dataset, 16))[-1]
  assert last["label"].shape == (16, 8, 8) and last["mask"].sum() == 4
  mesh = sharding.data_mesh()
  placed = next(data.prefetch([batch], lambda b: sharding.put_batch(b, mesh)))
  assert placed["label"].sharding.spec[0] == sharding.DATA_AXIS
  np.testing.assert_array_equal(np.asarray(placed["label"]), batch["label"])


def test_mnist_seg_is_mnist_with_per_pixel_labels(mnist_dir):
  seg, digits = data.load("mnist_seg", "test"), data.load("mnist", "test", data_dir=mnist_dir)
  assert (len(seg), seg.num_classes, seg.name, seg.dense) == (10_000, 11, "mnist_seg", True)
  assert "mnist_seg" in data.DENSE_DATASETS and "mnist_seg" in data.names()
  np.testing.assert_array_equal(seg.images, digits.images)
  np.testing.assert_array_equal(seg.labels,
                                mnist_seg.segmentation_labels(digits.images, digits.labels))
  stroke = seg.labels > 0
  assert 0.1 < stroke.mean() < 0.16  # MNIST strokes cover about 13% of the pixels
  np.testing.assert_array_equal(seg.labels.max(axis=(1, 2)), 1 + digits.labels)


def test_mnist_seg_without_files_says_how_to_get_them(tmp_path, monkeypatch):
  def unprepared(name, split, data_dir=None, download=False):
    raise data.DatasetNotFoundError(f"tfds dataset {name!r}: run `tfds build {name}`")

  monkeypatch.setattr(tfds_source, "load_tfds", unprepared)
  monkeypatch.setenv("JAXADV_MNIST_DIR", str(tmp_path))
  with pytest.raises(data.DatasetNotFoundError, match="t10k-images-idx3-ubyte.gz.*JAXADV_MNIST"):
    data.load("mnist_seg", "test")


@pytest.mark.parametrize("shape", [(28, 28, 1), (7, 9, 3)])
def test_fcn_outputs_float32_logits_per_pixel_at_the_input_size(shape):
  model = models.get("fcn", num_classes=11, width=4)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, *shape)))
  logits = jax.eval_shape(functools.partial(model.apply, train=False), variables,
                          jnp.zeros((2, *shape)))
  assert (logits.shape, logits.dtype) == ((2, *shape[:2], 11), jnp.float32)
  bf16 = models.get("fcn", num_classes=11, width=4, dtype=jnp.bfloat16)
  assert jax.eval_shape(bf16.apply, variables, jnp.zeros((2, *shape))).dtype == jnp.float32
  assert models.is_dense("fcn") and not models.is_dense("small_cnn")


def test_confusion_matrix_metrics_of_a_hand_computed_example():
  labels, predictions = jnp.array([[[0, 0], [1, 1]]]), jnp.array([[[0, 1], [1, 1]]])
  confusion = segmentation.confusion_matrix(predictions, labels, 2)
  np.testing.assert_array_equal(confusion, [[1, 1], [0, 2]])  # rows true, columns predicted
  metrics = segmentation.segmentation_metrics(np.asarray(confusion))
  assert metrics["pixel_accuracy"] == 75.0
  np.testing.assert_allclose(metrics["per_class_iou"], [100 / 2, 200 / 3])  # 1/(2+1-1), 2/(2+3-2)
  assert metrics["miou"] == pytest.approx((50 + 200 / 3) / 2)
  padded = segmentation.confusion_matrix(jnp.concatenate([predictions, predictions]),
                                         jnp.concatenate([labels, 1 - labels]), 2,
                                         jnp.array([1, 0]))
  np.testing.assert_array_equal(padded, confusion)  # a row of weight 0 counts nothing


def test_confusion_matrix_metrics_match_numpy_and_a_perfect_predictor_scores_100():
  rng = np.random.default_rng(0)
  labels, predictions = rng.integers(0, 4, (2, 6, 5, 7)), rng.integers(0, 4, (2, 6, 5, 7))
  predictions[0, 0] = 3  # class 4 of 5 is absent and never predicted: no IoU
  confusion = np.asarray(segmentation.confusion_matrix(jnp.asarray(predictions),
                                                       jnp.asarray(labels), 5))
  reference = np.zeros((5, 5), np.int64)
  np.add.at(reference, (labels.ravel(), predictions.ravel()), 1)
  np.testing.assert_array_equal(confusion, reference)
  metrics = segmentation.segmentation_metrics(confusion)
  iou = [100 * np.sum((labels == k) & (predictions == k)) / np.sum((labels == k) |
                                                                    (predictions == k))
         for k in range(4)]
  np.testing.assert_allclose(metrics["per_class_iou"][:4], iou)
  assert np.isnan(metrics["per_class_iou"][4])
  assert metrics["miou"] == pytest.approx(np.mean(iou))
  assert metrics["pixel_accuracy"] == pytest.approx(100 * np.mean(labels == predictions))
  perfect = segmentation.segmentation_metrics(np.asarray(segmentation.confusion_matrix(
      jnp.asarray(labels), jnp.asarray(labels), 5)))
  assert (perfect["pixel_accuracy"], perfect["miou"]) == (100.0, 100.0)


def test_dense_pgd_bounds_each_image_and_refuses_per_image_success_flags():
  model, variables = _fcn()
  apply_fn = models.BoundModel(model, variables)
  x = random_images((4, 8, 8, 1))
  y = jnp.argmax(apply_fn(x), -1)
  x_adv = attacks.pgd(apply_fn, x, y, jax.random.PRNGKey(1), eps=0.5, step_size=0.2, steps=3,
                      norm="l2", loss=losses.dense_cross_entropy, unroll=False)
  norms = np.linalg.norm(np.asarray(x_adv - x).reshape(4, -1), axis=1)
  assert np.all(norms <= 0.5 + 1e-5) and np.all(norms > 0.45)  # one L2 ball per image
  assert np.all(losses.dense_cross_entropy(apply_fn(x_adv), y) >
                losses.dense_cross_entropy(apply_fn(x), y))
  with pytest.raises(ValueError, match="restarts and early_stop need one success flag"):
    attacks.pgd(apply_fn, x, y, jax.random.PRNGKey(1), eps=0.5, step_size=0.2, steps=1,
                loss=losses.dense_cross_entropy, restarts=2)


def test_erm_and_pgd_at_objectives_train_on_per_pixel_labels():
  model, variables = _fcn()
  batch = {"image": random_images((4, 8, 8, 1)),
           "label": jnp.asarray(_dense_dataset(n=4).labels)}
  for name in ("erm", "pgd_at"):
    objective = methods.build(name, model, dict(eps=0.1, step_size=0.05, steps=2, norm="linf"))
    loss, (_, metrics) = objective(variables["params"], models.model_state(variables), batch,
                                   jax.random.PRNGKey(0), 0)
    assert np.isfinite(loss) and 0 <= metrics["accuracy"] <= 1  # pixel accuracy


def test_segmentation_evaluation_is_independent_of_the_batch_size():
  model, variables = _fcn()
  dataset = _dense_dataset(n=10)
  attack = suites.build(["fgsm"], eps=0.1, norm="linf", num_classes=3, dense=True)
  count = functools.partial(segmentation.confusion_matrices, model, variables, dataset, attack)
  small, large = count(batch_size=3), count(batch_size=16)  # padded to 8 and 16 rows
  assert list(small) == ["clean", "fgsm"]
  for name in small:
    np.testing.assert_array_equal(small[name], large[name])
    assert small[name].sum() == 10 * 8 * 8


def test_segmentation_evaluation_rejects_mismatched_models_labels_and_attacks():
  model, variables = _fcn()
  dataset = _dense_dataset()
  four = data.ArrayDataset(dataset.images, dataset.labels, 4, "four", (0.5,), (0.5,))
  evaluate = functools.partial(segmentation.evaluate_segmentation, model, variables, eps=0.1,
                               norm="linf", step_size=None, batch_size=8, quiet=True)
  with pytest.raises(ValueError, match=r"logits of shape \(1, 8, 8, 3\); a segmentation "
                                       r"evaluation needs \(1, 8, 8, 4\)"):
    evaluate(four, suite=("pgd2",))
  beyond = data.ArrayDataset(dataset.images, dataset.labels + 1, 3, "beyond", (0.5,), (0.5,))
  with pytest.raises(ValueError, match=r"beyond labels must lie in \[0, 3\)"):
    evaluate(beyond, suite=())
  small_cnn = models.get("small_cnn", num_classes=3, width=4, hidden=8)
  shapes = jax.eval_shape(small_cnn.init, jax.random.PRNGKey(0), dataset.images[:1])
  with pytest.raises(ValueError, match=r"logits of shape \(1, 3\)"):
    segmentation.check_dense_model(small_cnn, shapes, dataset)
  for name in ("autoattack", "apgd-t", "fab-t", "square", "cw10", "apgd-ce"):
    with pytest.raises(ValueError, match=f"attack '{name}' is classification-only"):
      evaluate(dataset, suite=(name,))


@pytest.mark.parametrize("overrides, message", [
    ({"model.name": "small_cnn"}, "model.name: dataset 'mnist_seg' has per-pixel labels"),
    ({"dataset.name": "digits"}, "model.name: model 'fcn' predicts per pixel"),
    ({"dataset.augment": "crop"}, "dataset.augment: dataset 'mnist_seg' has per-pixel labels"),
    ({"eval.monitor_every_epochs": 1.0}, "eval.monitor_every_epochs: the training monitor"),
    ({"eval.suite": ("pgd2", "apgd-t")}, "eval.suite: attack 'apgd-t' is classification-only"),
])
def test_config_of_a_segmentation_run_is_checked_when_it_loads(overrides, message):
  task = {"dataset.name": "mnist_seg", "model.name": "fcn", "eval.suite": ("pgd2",)}
  tiny_config(**task)
  with pytest.raises(ValueError, match=message):
    tiny_config(**{**task, **overrides})


def test_sweep_summarises_the_miou_of_segmentation_records():
  records = [{"task": "segmentation", "miou": {"clean": c, "pgd2": a}, "pixel_accuracy": {}}
             for c, a in ((80.0, 40.0), (90.0, 50.0))]
  summary = sweep.summarise(records)
  assert summary["clean"]["mean"] == 85.0 and summary["pgd2"]["values"] == [40.0, 50.0]


@pytest.mark.slow  # test_advamd trains a segmentation run
def test_cli_trains_and_evaluates_mnist_segmentation(mnist_dir, tmp_path, capsys):
  del mnist_dir  # found through $JAXADV_MNIST_DIR or shared/data/mnist
  workdir = tmp_path / "seg"
  code = cli.main(["train", "--workdir", str(workdir), "--no-progress", "name='seg'",
                   "dataset.name=mnist_seg", "dataset.num_train=256", "dataset.num_test=64",
                   "model.name=fcn", "model.width=4", "objective.name=erm", "optim.lr=0.1",
                   "batch_size=32", "num_epochs=1", "log_every_steps=4",
                   "checkpoint_every_steps=8", "eval.suite=('pgd2',)", "eval.batch_size=32"])
  assert code == 0, capsys.readouterr().err
  out = capsys.readouterr().out
  assert "| pixel accuracy |" in out and "| mIoU |" in out and "| IoU 10 |" in out
  record = json.loads((workdir / "eval.json").read_text())
  assert record["task"] == "segmentation" and record["dataset"] == "mnist_seg"
  assert (record["n_ex"], record["n_pixels"], record["eps"]) == (64, 64 * 28 * 28, 0.2)
  assert record["threat_model"] == "Linf" and record["checkpoint_step"] == 8
  assert "per-image mean pixel CE" in record["attacks"]["pgd2"]
  clean, attacked = record["pixel_accuracy"]["clean"], record["pixel_accuracy"]["pgd2"]
  assert 0 <= attacked <= clean <= 100
  assert clean > 70  # the background alone is ~87% of the pixels
  assert len(record["per_class_iou"]["clean"]) == 11
  assert 0 <= record["miou"]["pgd2"] <= record["miou"]["clean"] <= 100
  assert cli.main(["eval", "--workdir", str(workdir)]) == 0
  assert json.loads((workdir / "eval.json").read_text()) == record
  capsys.readouterr()
  assert cli.main(["eval", "--workdir", str(workdir), "--suite", "autoattack"]) == 2
  assert "'autoattack' is classification-only" in capsys.readouterr().err
