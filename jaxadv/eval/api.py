"""Evaluate any classifier: `jaxadv.evaluate(apply_fn, images, labels, suite=..., eps=...)`.

The model may be a function `x -> logits` (a closure over its parameters), a
`jaxadv.models.BoundModel`, a Flax NNX module, or a predictor with its variables (a Linen
module, or a function `variables -> apply_fn`, with `variables=`); images (N, H, W, C) in
[0, 1] with labels (N,), or an `ArrayDataset`. The suite is attack names of
`jaxadv.eval.suites` (AutoAttack included) or name -> attack callables. Points are sharded over
every device (`jaxadv.eval.robustness`), and the result carries the accuracies (per attack,
worst case, per class), the gradient-masking checks, a RobustBench-style record, and on request
the worst-case adversarial examples:

    >>> import jax, jax.numpy as jnp, numpy as np, jaxadv
    >>> w = jax.random.normal(jax.random.PRNGKey(0), (16, 3))
    >>> apply_fn = lambda x: x.reshape(x.shape[0], -1) @ w
    >>> images = np.asarray(jax.random.uniform(jax.random.PRNGKey(1), (8, 4, 4, 1)))
    >>> labels = np.asarray(jnp.argmax(apply_fn(images), -1))
    >>> result = jaxadv.evaluate(apply_fn, images, labels, suite="pgd10", eps=0.3, checks=False,
    ...                          log=None)
    >>> result.accuracy["clean"], result.accuracy["pgd10"]
    (100.0, 0.0)

`jaxadv eval` and the training loop's final evaluation go through this function
(`jaxadv.eval.runner.evaluate_suite` adds the journal, the printed table and the files).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import pathlib
import subprocess
from typing import Callable, Mapping

from flax import nnx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxadv import sharding, validation
from jaxadv.attacks import pgd
from jaxadv.data import ArrayDataset
from jaxadv.eval import masking, report, robustness, suites
from jaxadv.eval.journal import EvalJournal
from jaxadv.models import BoundModel, bind

EPS_SCALES = (0.25, 0.5, 1.0, 2.0)


def as_predictor(model, variables=None):
  """(predictor, variables) for `robustness.Evaluator`, whose variables are jit arguments (so
  one compilation serves new parameters): a `BoundModel` is split into its module and
  variables, an NNX module into its graph and state; a plain function `x -> logits` keeps its
  parameters as constants (variables {}). With `variables`, `model` is already a predictor (a
  Linen module or a function `variables -> apply_fn`). ValueError for a Linen module without
  variables or anything that is not callable."""
  if variables is not None:
    return model, variables
  if isinstance(model, BoundModel):
    module, mode, route = model.model, model.mode, model.bn
    return (lambda v: BoundModel(module, v, mode, route)), model.variables
  if isinstance(model, nnx.Module):
    graph, state = nnx.split(model)
    return (lambda s: nnx.merge(graph, s)), state
  if isinstance(model, nn.Module):
    raise ValueError("a Linen module needs its variables: evaluate(model, images, labels, "
                     "variables={'params': ..., 'batch_stats': ...}), or pass "
                     "jaxadv.models.BoundModel(model, variables).")
  if callable(model):
    return (lambda _: model), {}
  raise ValueError(f"the model must be a function x -> logits, a BoundModel, an NNX module or "
                   f"a Linen module with variables=, got {type(model).__name__}.")


def _num_classes(predictor, variables, images: np.ndarray) -> int:
  """K of the model's logits (B, K) on two images; ValueError for any other output shape."""
  shape = jax.eval_shape(lambda v, x: bind(predictor, v)(x), variables,
                         jax.ShapeDtypeStruct((2,) + images.shape[1:], jnp.float32)).shape
  if len(shape) != 2 or shape[0] != 2 or shape[1] < 2:
    raise ValueError(f"the model must return logits of shape (B, K) with K >= 2; on 2 images "
                     f"of shape {images.shape[1:]} it returned shape {tuple(shape)}.")
  return int(shape[1])


def as_dataset(images, labels, num_classes: int, name: str = "arrays") -> ArrayDataset:
  """An ArrayDataset of float32 images (N, H, W, C) in [0, 1] and int labels (N,) in
  [0, num_classes); ValueError naming the problem otherwise."""
  images = np.asarray(images, np.float32)
  if labels is None:
    raise ValueError("labels (N,) are required with an array of images.")
  labels = np.asarray(labels)
  if images.ndim != 4:
    raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}.")
  if labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"labels must be integers of shape {images.shape[:1]}, got "
                     f"{labels.dtype} {labels.shape}.")
  validation.check_images(images, "images")
  validation.check_labels(labels, images, "labels", num_classes)
  channels = images.reshape(-1, images.shape[-1])
  return ArrayDataset(images, labels.astype(np.int32), num_classes, name,
                      tuple(channels.mean(0).tolist()), tuple(channels.std(0).tolist()))


def masking_checks(model, variables, dataset: ArrayDataset, result: robustness.RobustnessResult,
                   *, eps: float, norm: str, step_size: float, batch_size: int, seed: int,
                   num_points: int = 256) -> list[masking.Flag]:
  """Runs every check of `jaxadv.eval.masking` on the first `num_points` points."""
  subset = dataset.take(num_points)
  x, y = jnp.asarray(subset.images), jnp.asarray(subset.labels)
  apply_fn = bind(model, variables)
  flags = [masking.check_randomness(apply_fn, x), masking.check_zero_gradients(apply_fn, x, y),
           masking.check_softmax_outputs(apply_fn, x)]
  if eps > 0:
    sweep = {f"pgd@{s * eps:.4g}": functools.partial(pgd, eps=s * eps, step_size=s * step_size,
                                                     steps=20, norm=norm) for s in EPS_SCALES}
    swept = robustness.evaluate(model, variables, subset, sweep, batch_size=batch_size, seed=seed)
    accuracy = {s * eps: 100.0 * float(np.mean(swept.correct[name]))
                for s, name in zip(EPS_SCALES, sweep)}
    flags.append(masking.check_eps_monotonicity(accuracy))
  for attack, stages in result.stages.items():
    if "square" in stages and len(stages) > 1:
      names = list(stages)
      before = stages[names[names.index("square") - 1]]
      flags.append(masking.check_black_box_gain(before, stages["square"], attack))
  return flags


def _commit() -> str | None:
  """The git commit of the jaxadv checkout this code runs from, or None (not a checkout)."""
  try:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=pathlib.Path(__file__).parent,
                         capture_output=True, text=True, timeout=10, check=True)
  except (OSError, subprocess.SubprocessError):
    return None
  return out.stdout.strip() or None


def provenance(num_points: int) -> dict:
  """Where a record comes from: jaxadv version and commit, jax/jaxlib versions, devices, UTC
  date and the number of test points."""
  import jaxlib  # pylint: disable=import-outside-toplevel
  from jaxadv import __version__  # pylint: disable=import-outside-toplevel
  devices = jax.devices()
  return {"jaxadv": __version__, "commit": _commit(), "jax": jax.__version__,
          "jaxlib": jaxlib.__version__,
          "devices": f"{len(devices)} x {devices[0].device_kind} ({devices[0].platform})",
          "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "test_points": num_points}


@dataclasses.dataclass
class EvaluationResult:
  """What `evaluate` measured.

  robustness: the per-point outcomes (`robustness.RobustnessResult`; `.adversarial` holds the
    worst-case images when asked for). flags: the gradient-masking checks. record: the
    JSON-serialisable record (`report.to_record`, RobustBench field names). predictions: the
    model's class for each worst-case image (N,), with the adversarial examples.
  """
  robustness: robustness.RobustnessResult
  flags: list[masking.Flag]
  record: dict
  predictions: np.ndarray | None = None

  @property
  def accuracy(self) -> dict[str, float]:
    """Accuracy (%) clean, per attack, and "worst_case" over several attacks."""
    return self.robustness.accuracy()

  @property
  def robust_accuracy(self) -> float:
    """Accuracy (%) of points correct clean and under every attack."""
    return 100.0 * float(np.mean(self.robustness.worst_case))

  @property
  def per_class(self) -> dict[str, list[float]]:
    """Accuracy (%) per class and attack."""
    return self.robustness.per_class()

  @property
  def adversarial(self) -> np.ndarray | None:
    """The worst-case images (N, H, W, C), or None when not asked for."""
    return self.robustness.adversarial

  def to_json(self, path=None) -> str:
    """The record as JSON text (NaN -> null), also written to `path` when given."""
    if path is not None:
      report.write_json(self.record, path)
    return json.dumps(report.json_safe(self.record), indent=2)

  def to_markdown(self) -> str:
    """The accuracy table: all points, then each class; a column per attack."""
    table = report.markdown_table(self.robustness)
    return table + ("\n\nGradient-masking checks:\n" + report.flags_text(self.flags)
                    if self.flags else "")

  def plot(self, path=None, *, title: str = ""):
    """A matplotlib Figure of per-class accuracy per attack (saved as PNG to `path`)."""
    return report.per_class_bar_chart(self.robustness, path, title=title)

  def save_adversarial(self, path) -> pathlib.Path:
    """Writes `path` (.npz): x_adv (N, H, W, C), labels (N,) and predictions (N,) of the
    worst case. ValueError when the evaluation did not keep them."""
    if self.adversarial is None:
      raise ValueError("this evaluation kept no adversarial examples: "
                       "evaluate(..., return_adversarial=True).")
    path = pathlib.Path(path)
    np.savez_compressed(path, x_adv=self.adversarial, labels=self.robustness.labels,
                        predictions=self.predictions)
    return path


def _predictions(predictor, variables, images: np.ndarray, batch_size: int) -> np.ndarray:
  """argmax of the model's logits on `images` (N, ...), in batches: (N,)."""
  predict = jax.jit(lambda v, x: jnp.argmax(bind(predictor, v)(x), -1))
  return np.concatenate([np.asarray(predict(variables, images[i:i + batch_size]))
                         for i in range(0, len(images), batch_size)] or [np.zeros(0, int)])


def evaluate(model, images, labels=None, *, suite="autoattack", eps: float, norm: str = "linf",
             step_size: float | None = None, batch_size: int = 256, seed: int = 0,
             variables=None, checks: bool = True, return_adversarial: bool = False,
             name: str = "", architecture: str = "", checkpoint_step: int | None = None,
             mesh=None, journal: EvalJournal | None = None,
             log: Callable[[str], None] | None = print) -> EvaluationResult:
  """Clean and robust accuracy of any classifier (module docstring).

  Args:
    model: `x -> logits` (B, H, W, C) -> (B, K), eval mode fixed: a function, a `BoundModel`,
      an NNX module; or, with `variables`, a Linen module or a function `variables -> apply_fn`.
    images: float images (N, H, W, C) in [0, 1], or an `ArrayDataset` (then no `labels`).
    labels: integer labels (N,) in [0, K).
    suite: attack names (`jaxadv.eval.suites`: "autoattack", "apgd-ce", "pgd20", ...), as a
      sequence or a comma-separated string, or a mapping name -> attack(apply_fn, x, y, key)
      (or a `robustness.Cascade`).
    eps: radius >= 0; norm: "linf", "l2" or "l1"; step_size: of pgdN / cwN (default eps / 4).
    batch_size: points per batch over all devices; seed: the attacks' randomness.
    variables: the model's variables when `model` is a predictor.
    checks: run the gradient-masking checks (`jaxadv.eval.masking`) on 256 points.
    return_adversarial: keep each point's worst-case image and its prediction.
    name, architecture, checkpoint_step: for the record.
    mesh: data mesh (default all devices); journal: resume a killed evaluation
      (`jaxadv.eval.journal`; not with `return_adversarial`).
    log: receives progress lines (None: silent).

  Returns:
    EvaluationResult.
  """
  predictor, variables = as_predictor(model, variables)
  if isinstance(images, ArrayDataset):
    if labels is not None:
      raise ValueError("an ArrayDataset carries its labels: pass labels=None.")
    dataset = images
    num_classes = _num_classes(predictor, variables, dataset.images)
    if num_classes != dataset.num_classes:
      raise ValueError(f"the model returns {num_classes} logits and {dataset.name} has "
                       f"{dataset.num_classes} classes.")
  else:
    num_classes = _num_classes(predictor, variables, np.asarray(images, np.float32)[:1])
    dataset = as_dataset(images, labels, num_classes)
  validation.check_nonnegative(eps, "eps")
  validation.check_positive_int(batch_size, "batch_size")
  if isinstance(suite, str):
    suite = tuple(filter(None, suite.split(",")))
  step = eps / 4 if step_size is None else step_size
  if isinstance(suite, Mapping):
    attacks = dict(suite)
    descriptions = {key: getattr(attack, "__name__", type(attack).__name__)
                    for key, attack in attacks.items()}
  else:
    attacks = suites.build(suite, eps=eps, norm=norm, num_classes=num_classes, step_size=step)
    descriptions = {key: suites.describe(key, eps=eps, norm=norm, step_size=step)
                    for key in attacks}
  mesh = sharding.data_mesh() if mesh is None else mesh
  result = robustness.evaluate(predictor, variables, dataset, attacks, batch_size=batch_size,
                               seed=seed, mesh=mesh, journal=journal, log=log,
                               keep_adversarial=return_adversarial)
  flags = masking_checks(predictor, variables, dataset, result, eps=eps, norm=norm,
                         step_size=step, batch_size=batch_size, seed=seed) if checks else []
  record = report.to_record(
      result, dataset=dataset.name, norm=norm, eps=eps, model=name,
      architecture=architecture, checkpoint_step=checkpoint_step, flags=flags,
      attacks=descriptions, provenance=provenance(len(dataset)))
  predictions = (_predictions(predictor, variables, result.adversarial, batch_size)
                 if return_adversarial else None)
  return EvaluationResult(result, flags, record, predictions)
