"""Segmentation evaluation: pixel accuracy, mean IoU and per-class IoU, clean and under attack.

For a dataset with per-pixel labels (`ArrayDataset.dense`: labels (N, H, W)) and a model with
logits (B, H, W, K). For each attack of the suite (fgsm and pgdN, ascending the per-image mean
pixel CE: `suites.build(..., dense=True)`), every test image is attacked and predicted in
`"eval"` mode, and the confusion matrix over all test pixels,

    C[i, j] = #{pixels of true class i predicted as class j}        (K x K),

is accumulated batch by batch (one jitted program per attack, batches split over the data mesh,
the last one padded and the padding masked out). From C, in %:

    pixel accuracy = 100 · trace(C) / Σ C
    IoU_k          = 100 · TP_k / (TP_k + FP_k + FN_k)      TP_k = C[k, k],
                                                             FP_k = Σ_i C[i, k] - TP_k,
                                                             FN_k = Σ_j C[k, j] - TP_k
    mIoU           = mean of IoU_k over the classes whose union (the denominator) is > 0

A class that is neither present nor predicted has no IoU (NaN, null in JSON) and does not
count in the mean, rather than counting as 0 or 100: a 100-image subset may lack a class, and
that says nothing about the model. Unlike the classification evaluation (`robustness`), every
image is attacked, not only the clean-correct ones: correctness is per pixel, not per image.

The gradient-masking checks (`jaxadv.eval.masking`) are classification-only (they read per-image
correctness and logits (B, K)) and are not run on dense data. Nor is the evaluation journaled:
a killed segmentation evaluation starts over.
"""

from __future__ import annotations

import math
import pathlib
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv import data, sharding, validation
from jaxadv.eval import report, suites
from jaxadv.models import bind

Attack = Callable[..., jax.Array]


def confusion_matrix(predictions: jax.Array, labels: jax.Array, num_classes: int,
                     weights: jax.Array | None = None) -> jax.Array:
  """C[i, j] = Σ of the weights of the positions with label i and prediction j, int32 (K, K).

  Args:
    predictions, labels: integer arrays of one shape (B, ...), values in [0, num_classes).
    num_classes: K.
    weights: integer (B,) per example (e.g. 0 for the padding rows of a batch), default 1.

  >>> confusion_matrix(jnp.array([[0, 1], [1, 1]]), jnp.array([[0, 0], [1, 1]]), 2).tolist()
  [[1, 1], [0, 2]]
  """
  if weights is None:
    weights = jnp.ones(labels.shape[:1], jnp.int32)
  per_position = jnp.broadcast_to(weights.reshape(weights.shape + (1,) * (labels.ndim - 1)),
                                  labels.shape)
  index = labels * num_classes + predictions
  counts = jnp.zeros(num_classes * num_classes, jnp.int32).at[index.ravel()].add(
      per_position.ravel().astype(jnp.int32))
  return counts.reshape(num_classes, num_classes)


def segmentation_metrics(confusion: np.ndarray) -> dict:
  """{"pixel_accuracy", "miou", "per_class_iou" (K,)} in % of a confusion matrix (K, K) (rows
  true, columns predicted); IoU NaN for a class with an empty union.

  >>> metrics = segmentation_metrics(np.array([[1, 1], [0, 2]]))
  >>> metrics["pixel_accuracy"], metrics["miou"], metrics["per_class_iou"]
  (75.0, 58.33..., [50.0, 66.66...])
  """
  confusion = np.asarray(confusion, np.float64)
  true_positives = np.diag(confusion)
  union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positives
  present = union > 0
  iou = np.full(len(confusion), np.nan)
  iou[present] = 100.0 * true_positives[present] / union[present]
  total = confusion.sum()
  return {"pixel_accuracy": 100.0 * float(true_positives.sum() / total) if total else math.nan,
          "miou": float(np.mean(iou[present])) if present.any() else math.nan,
          "per_class_iou": [float(v) for v in iou]}


def check_dense_model(model, variables, dataset: data.ArrayDataset) -> None:
  """Raises ValueError unless the model maps an image (1, H, W, C) of `dataset` to logits
  (1, H, W, K) with K its class count, and the labels lie in [0, K) (the logits' shape from
  `jax.eval_shape`: the model does not run)."""
  expected = (1, *dataset.image_shape[:2], dataset.num_classes)
  logits = jax.eval_shape(lambda v, x: bind(model, v)(x), variables,
                          dataset.images[:1])
  if tuple(logits.shape) != expected:
    raise ValueError(f"the model maps an image of {dataset.name} to logits of shape "
                     f"{tuple(logits.shape)}; a segmentation evaluation needs {expected}: one "
                     f"score per class of its {dataset.num_classes} at every pixel.")
  validation.check_labels(dataset.labels, dataset.images, f"{dataset.name} labels",
                          dataset.num_classes)


def _compile(model, attack: Attack | None, num_classes: int, mesh):
  """`(variables, batch, key) -> C (K, K)` of `attack` (None: clean) on a masked batch,
  jitted over `mesh`."""
  def confusion(variables, batch, key):
    apply_fn = bind(model, variables)
    x = batch["image"]
    if attack is not None:
      x = attack(apply_fn, x, batch["label"], key)
    return confusion_matrix(jnp.argmax(apply_fn(x), -1), batch["label"], num_classes,
                            (batch["mask"] > 0).astype(jnp.int32))

  replicated = sharding.replicated(mesh)
  return jax.jit(confusion, in_shardings=(replicated, sharding.batch_sharded(mesh), replicated),
                 out_shardings=replicated)


def confusion_matrices(model, variables, dataset: data.ArrayDataset,
                       attacks: Mapping[str, Attack], *, batch_size: int, seed: int = 0,
                       mesh=None) -> dict[str, np.ndarray]:
  """name -> confusion matrix int64 (K, K) over every pixel of `dataset`, "clean" first, then
  each attack (attack(apply_fn, x, y, key) -> x_adv, "clean" reserved).

  Batches of `batch_size` (capped at N and rounded up to a multiple of the device count) are
  split over `mesh` (default: all devices), the last one padded and masked (`data.eval_batches`);
  attack `a` (0-based) keys batch `b` with fold_in(fold_in(PRNGKey(seed), a + 1), b).
  """
  if "clean" in attacks:
    raise ValueError("the attack name 'clean' is reserved for the unattacked scores.")
  check_dense_model(model, variables, dataset)
  mesh = sharding.data_mesh() if mesh is None else mesh
  rows = sharding.round_up(min(batch_size, len(dataset)), mesh.size)
  variables = jax.device_put(variables, sharding.replicated(mesh))
  base_key = jax.random.PRNGKey(seed)
  out = {}
  for index, (name, attack) in enumerate({"clean": None, **attacks}.items()):
    score = _compile(model, attack, dataset.num_classes, mesh)
    attack_key = jax.random.fold_in(base_key, index)
    total = np.zeros((dataset.num_classes,) * 2, np.int64)
    for number, batch in enumerate(data.eval_batches(dataset, rows)):
      key = jax.random.fold_in(attack_key, number)
      total += np.asarray(score(variables, sharding.put_batch(batch, mesh), key))
    out[name] = total
  return out


def to_record(confusions: Mapping[str, np.ndarray], *, dataset: data.ArrayDataset, norm: str,
              eps: float, attacks: dict[str, str], model: str,
              checkpoint_step: int | None = None) -> dict:
  """The JSON record of a segmentation evaluation: the classification record's identification
  fields (dataset, model, threat_model, eps, n_ex, checkpoint_step, attacks), `task`
  "segmentation", and per attack ("clean" first) pixel_accuracy, miou, per_class_iou (%) and
  the confusion matrix (rows true, columns predicted)."""
  metrics = {name: segmentation_metrics(c) for name, c in confusions.items()}
  return {
      "task": "segmentation",
      "dataset": dataset.name,
      "model": model,
      "threat_model": norm.capitalize(),
      "eps": eps,
      "n_ex": len(dataset),
      "n_pixels": int(next(iter(confusions.values())).sum()),
      "checkpoint_step": checkpoint_step,
      "attacks": attacks,
      **{field: {name: m[field] for name, m in metrics.items()}
         for field in ("pixel_accuracy", "miou", "per_class_iou")},
      "confusion_matrix": {name: c.tolist() for name, c in confusions.items()},
  }


def markdown_table(record: dict) -> str:
  """Rows: pixel accuracy, mIoU, then the IoU of each class; a column (%) per attack."""
  columns = list(record["pixel_accuracy"])
  cell = lambda value: "-" if value is None or math.isnan(value) else f"{value:.2f}"
  rows = [("pixel accuracy", record["pixel_accuracy"]), ("mIoU", record["miou"])]
  num_classes = len(record["per_class_iou"][columns[0]])
  rows += [(f"IoU {k}", {name: record["per_class_iou"][name][k] for name in columns})
           for k in range(num_classes)]
  lines = ["| metric | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
  lines += [f"| {label} | " + " | ".join(cell(values[c]) for c in columns) + " |"
            for label, values in rows]
  return "\n".join(lines)


def evaluate_segmentation(model, variables, dataset: data.ArrayDataset, *, suite, eps: float,
                          norm: str, step_size: float | None, batch_size: int, seed: int = 0,
                          model_name: str = "", checkpoint_step=None, out_dir=None,
                          tag: str = "", quiet: bool = False, mesh=None) -> dict:
  """Evaluates `suite` (fgsm, pgdN; classification-only names raise ValueError) on the dense
  `dataset`; prints the table and writes `eval.json` into `out_dir` when given
  (`eval_<tag>.json` with a `tag`). Returns the record (`to_record`)."""
  step = eps / 4 if step_size is None else step_size
  attacks = suites.build(suite, eps=eps, norm=norm, num_classes=dataset.num_classes,
                         step_size=step, dense=True)
  descriptions = {name: suites.describe(name, eps=eps, norm=norm, step_size=step, dense=True)
                  for name in attacks}
  confusions = confusion_matrices(model, variables, dataset, attacks, batch_size=batch_size,
                                  seed=seed, mesh=mesh)
  record = to_record(confusions, dataset=dataset, norm=norm, eps=eps, attacks=descriptions,
                     model=model_name, checkpoint_step=checkpoint_step)
  if not quiet:
    print(f"\n{model_name} on {record['n_ex']} test images ({record['n_pixels']} pixels) of "
          f"{dataset.name}, {norm} eps={eps:.4g}, model in eval mode, segmentation (%)")
    for name, text in descriptions.items():
      print(f"  {name}: {text}")
    print("\n" + markdown_table(record))
    print("\nGradient-masking checks: classification-only, not run on per-pixel labels.")
  if out_dir is not None:
    report.write_json(record, pathlib.Path(out_dir) / f"eval{f'_{tag}' if tag else ''}.json")
  return record
