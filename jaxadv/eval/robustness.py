"""Robust accuracy of a model under attacks, per example, overall and per class.

An attack is `attack(apply_fn, x, y, key) -> x_adv`; a `Cascade` is a sequence of named
attacks run one after another, each only on the points that every earlier stage left
correctly classified (AutoAttack's protocol). Every attack runs only on clean-correct points:
a point counts as robust when it is classified correctly clean *and* after each attack.

Model calls are in eval mode (BatchNorm running averages). Points are gathered into
fixed-size batches split over the data mesh, the last one padded by at most 25% (to one of at
most 14 sizes between batch_size / 8 and batch_size), so a few compilations serve every batch;
the host decides which points go to the next stage, between attacks only.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable, Mapping, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv.data import ArrayDataset
from jaxadv.eval.journal import EvalJournal
from jaxadv.models import bind
from jaxadv import sharding, validation

Attack = Callable[..., jax.Array]


@dataclasses.dataclass(frozen=True)
class Cascade:
  """Named attacks run in order, each on the points still robust after the previous ones."""
  stages: Sequence[tuple[str, Attack]]


@dataclasses.dataclass
class RobustnessResult:
  """Per-point outcomes of an evaluation.

  correct: name -> bool (N,), "clean" first, then one entry per attack or cascade.
  stages: cascade name -> {stage name -> bool (N,) robust after that stage}.
  labels: int (N,); num_classes: K.
  adversarial: when asked for, the worst case per point (N, H, W, C): the first adversarial
    example that broke it (attacks in order, a cascade's stages in order), else the clean image.
  """
  correct: dict[str, np.ndarray]
  labels: np.ndarray
  num_classes: int
  stages: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)
  adversarial: np.ndarray | None = None

  @property
  def worst_case(self) -> np.ndarray:
    """bool (N,): correct clean and under every attack."""
    return np.logical_and.reduce(list(self.correct.values()))

  def _rows(self) -> dict[str, np.ndarray]:
    rows = dict(self.correct)
    if len(rows) > 2:
      rows["worst_case"] = self.worst_case
    return rows

  def accuracy(self) -> dict[str, float]:
    """Overall accuracy (%) per attack, plus "worst_case" when there are several attacks."""
    return {name: 100.0 * float(np.mean(c)) for name, c in self._rows().items()}

  def per_class(self) -> dict[str, list[float]]:
    """Accuracy (%) per class and attack; NaN for a class absent from the data."""
    out = {}
    for name, c in self._rows().items():
      out[name] = [100.0 * float(np.mean(c[self.labels == k])) if np.any(self.labels == k)
                   else float("nan") for k in range(self.num_classes)]
    return out


def attack_key(attack) -> object:
  """A hashable key equal for attacks that compute the same thing, or raises TypeError.

  A `functools.partial` is keyed by its function, positional arguments and keywords (sorted),
  a `Cascade` by its (name, stage) pairs, each part keyed in turn; anything else (a function, a
  jitted function, a callable object) is its own key, compared as its type defines (identity
  for functions). Every leaf carries its type, so `steps=10` and `steps=10.0` differ. The key
  holds the objects it names, so none of them is freed, and its id reused, while the key is.
  Raises TypeError when a part is unhashable (e.g. an array argument).
  """
  if isinstance(attack, functools.partial):
    keywords = tuple(sorted((name, attack_key(value)) for name, value in attack.keywords.items()))
    return (type(attack), attack_key(attack.func),
            tuple(attack_key(arg) for arg in attack.args), keywords)
  if isinstance(attack, Cascade):
    return (Cascade, tuple((name, attack_key(stage)) for name, stage in attack.stages))
  if isinstance(attack, tuple):
    return (type(attack), tuple(attack_key(item) for item in attack))
  hash(attack)
  return (type(attack), attack)


class _Scorer:
  """Runs `attack` + prediction on chosen points in fixed-size, mesh-sharded batches; each
  attack is compiled once per batch shape (`rows`) and serves any variables of the same
  structure."""

  def __init__(self, model, dataset: ArrayDataset, batch_size: int, mesh):
    self.dataset = dataset
    self.mesh = mesh
    # Never larger than the dataset (rounded up to the mesh): a 100-point evaluation with
    # batch_size 500 would otherwise attack 400 padding rows.
    self.batch_size = sharding.round_up(min(batch_size, len(dataset)), mesh.size)
    self.model = model
    # attack_key(attack) -> compiled function, for attacks that have a value key; for those
    # that do not (unhashable parts), (attack, compiled function) pairs found by identity: the
    # pair keeps the attack alive, so no other object can take its place while it is cached.
    self._compiled = {}
    self._compiled_by_identity: list[tuple[Attack, bool, Callable]] = []
    self._finite = None

  def _compile(self, attack: Attack | None, keep: bool):
    model = self.model

    def still_correct(variables, batch, key):
      apply_fn = bind(model, variables)
      x, y = batch["image"], batch["label"]
      if attack is not None:
        x = attack(apply_fn, x, y, key)
      correct = jnp.argmax(apply_fn(x), -1) == y
      return (correct, x) if keep else correct

    replicated = sharding.replicated(self.mesh)
    return jax.jit(still_correct,
                   in_shardings=(replicated, sharding.batch_sharded(self.mesh), replicated),
                   out_shardings=replicated)

  def compiled(self, attack: Attack | None, keep: bool = False):
    """The compiled scorer of `attack` (None: clean), compiled on first use; with `keep` it
    also returns the attacked images. Attacks equal by value (`attack_key`) share one
    compilation; an attack without a value key is cached by identity, holding a reference."""
    try:
      key = (attack_key(attack), keep)
    except TypeError:
      for cached, cached_keep, score in self._compiled_by_identity:
        if cached is attack and cached_keep == keep:
          return score
      score = self._compile(attack, keep)
      self._compiled_by_identity.append((attack, keep, score))
      return score
    if key not in self._compiled:
      self._compiled[key] = self._compile(attack, keep)
    return self._compiled[key]

  def non_finite(self, variables) -> np.ndarray:
    """Indices of the dataset's points whose clean logits hold NaN or inf (one compiled
    forward pass over the dataset, in the scorer's batches)."""
    if self._finite is None:
      model = self.model

      def finite(variables, batch):
        logits = bind(model, variables)(batch["image"])
        return jnp.all(jnp.isfinite(logits.reshape(logits.shape[0], -1)), axis=1)
      self._finite = jax.jit(finite, in_shardings=(sharding.replicated(self.mesh),
                                                   sharding.batch_sharded(self.mesh)),
                             out_shardings=sharding.replicated(self.mesh))
    flags = []
    for start in range(0, len(self.dataset), self.batch_size):
      rows = np.resize(np.arange(start, min(start + self.batch_size, len(self.dataset))),
                       self.batch_size)
      batch = {"image": self.dataset.images[rows]}
      flags.append(np.asarray(self._finite(variables, sharding.put_batch(batch, self.mesh)))[
          :min(self.batch_size, len(self.dataset) - start)])
    return np.flatnonzero(~np.concatenate(flags))

  def rows(self, num_points: int) -> int:
    """Rows of the batch that carries `num_points` (<= batch_size) points
    (`sharding.padded_rows`, at least batch_size / 8): at most 25% padding and 14 compiled
    shapes per attack."""
    return sharding.padded_rows(num_points, self.batch_size, self.mesh.size,
                                floor=self.batch_size // 8)

  def __call__(self, variables, attack: Attack | None, indices: np.ndarray, key,
               journal: EvalJournal | None = None, unit: str = "", keep: bool = False):
    """bool (len(indices),): correct after `attack` (None: clean) on dataset[indices];
    `variables` are replicated over the mesh. With a `journal`, batches it holds for `unit`
    are read from it and each new batch is recorded in it. With `keep`, returns also the
    attacked images (len(indices), H, W, C) (no journal then: it keeps flags only)."""
    score = self.compiled(attack, keep)
    out, done = journal.resume(unit, indices) if journal else (np.zeros(len(indices), bool), 0)
    images = np.empty((len(indices),) + self.dataset.images.shape[1:],
                      self.dataset.images.dtype) if keep else None
    for start in range(done, len(indices), self.batch_size):
      chunk = indices[start:start + self.batch_size]
      rows = np.resize(chunk, self.rows(len(chunk)))  # pad by repeating points; cut below
      batch = {"image": self.dataset.images[rows], "label": self.dataset.labels[rows]}
      batch_key = jax.random.fold_in(key, start // self.batch_size)
      result = score(variables, sharding.put_batch(batch, self.mesh), batch_key)
      if keep:
        result, attacked = result
        images[start:start + len(chunk)] = np.asarray(attacked)[:len(chunk)]
      out[start:start + len(chunk)] = np.asarray(result)[:len(chunk)]
      if journal:
        journal.record(unit, indices, out, start + len(chunk))
    return (out, images) if keep else out


class Evaluator:
  """Scores a model on a dataset, clean and under attacks, for any variables.

  Each attack is compiled on first use and reused afterwards, so calling the evaluator every
  epoch with new variables compiles nothing new. Attacks are told apart by value
  (`attack_key`): equal `functools.partial`s, even distinct objects, share one compilation,
  and a new attack never meets the compiled function of a freed one that had its id.
  """

  def __init__(self, model, dataset: ArrayDataset, *, batch_size: int, mesh=None):
    """model: a predictor (`jaxadv.models.bind`): a Flax module, run in eval mode, or a
    function `variables -> apply_fn`; dataset: images (N, H, W, C) in [0, 1] and labels (N,);
    batch_size: capped at N and rounded up to a multiple of the device count; mesh: default
    all devices. ValueError, before anything compiles, for images outside [0, 1] or not
    finite and for labels outside [0, num_classes): checked once here, not per batch."""
    validation.check_images(dataset.images, f"{dataset.name} images")
    validation.check_labels(dataset.labels, dataset.images, f"{dataset.name} labels",
                            dataset.num_classes)
    self.dataset = dataset
    self._scorer = _Scorer(model, dataset, batch_size,
                           sharding.data_mesh() if mesh is None else mesh)

  def __call__(self, variables, attacks: Mapping[str, Union[Attack, Cascade]], *,
               seed: int = 0, journal: EvalJournal | None = None,
               log: Callable[[str], None] | None = None,
               keep_adversarial: bool = False) -> RobustnessResult:
    """Results clean and under each attack or cascade (name -> attack(apply_fn, x, y, key)
    -> x_adv, or a Cascade; "clean" is reserved). `seed` fixes the attacks' randomness per
    (attack, stage, batch). With a `journal` (whose fingerprint must name this evaluation:
    `jaxadv.eval.journal.fingerprint`), scored batches are recorded as they finish and batches
    it already holds are not attacked again. `log` receives a line as each stage starts and
    one when it ends. With `keep_adversarial` the result holds each point's worst-case image
    (`RobustnessResult.adversarial`); it cannot resume from a journal, which keeps flags only."""
    if "clean" in attacks:
      raise ValueError("the attack name 'clean' is reserved for the unattacked accuracy.")
    if keep_adversarial and journal is not None:
      raise ValueError("keep_adversarial needs every attacked image, and a journal keeps only "
                       "the flags: evaluate without a journal to keep the adversarial examples.")
    scorer, dataset = self._scorer, self.dataset
    variables = jax.device_put(variables, sharding.replicated(scorer.mesh))
    broken = scorer.non_finite(variables)
    if broken.size:
      raise ValueError(f"the model returns non-finite logits (NaN or inf) on {broken.size} clean "
                       f"points of {dataset.name} (first: index {int(broken[0])}); an "
                       "evaluation of it would report meaningless accuracies.")
    base_key = jax.random.PRNGKey(seed)
    clean = scorer(variables, None, np.arange(len(dataset)), base_key, journal, "clean")
    result = RobustnessResult({"clean": clean}, dataset.labels.copy(), dataset.num_classes)
    if keep_adversarial:
      result.adversarial = dataset.images.copy()
      broken = ~clean  # points whose worst case is already decided (misclassified clean)
    for attack_index, (name, attack) in enumerate(attacks.items()):
      cascade = attack if isinstance(attack, Cascade) else Cascade(((name, attack),))
      robust = clean.copy()
      after_stage = {}
      for stage_index, (stage_name, stage) in enumerate(cascade.stages):
        indices = np.flatnonzero(robust)
        label = name if stage_name == name else f"{name} / {stage_name}"
        if log:
          log(f"{label}: attacking {indices.size} of {len(dataset)} points")
        start = time.perf_counter()
        if indices.size:
          key = jax.random.fold_in(jax.random.fold_in(base_key, attack_index + 1), stage_index)
          scored = scorer(variables, stage, indices, key, journal,
                          f"{attack_index}.{stage_index}", keep=keep_adversarial)
          if keep_adversarial:
            scored, attacked = scored
            first = ~scored & ~broken[indices]
            result.adversarial[indices[first]] = attacked[first]
            broken[indices[first]] = True
          robust[indices] = scored
        after_stage[stage_name] = robust.copy()
        if log:
          log(f"{label}: {robust.sum()} of {len(dataset)} points robust "
              f"({100 * robust.mean():.2f}%; {indices.size} attacked, "
              f"{time.perf_counter() - start:.0f} s)")
      result.correct[name] = robust
      if isinstance(attack, Cascade):
        result.stages[name] = after_stage
    return result


def evaluate(model, variables, dataset: ArrayDataset,
             attacks: Mapping[str, Union[Attack, Cascade]], *, batch_size: int, seed: int = 0,
             mesh=None, journal: EvalJournal | None = None,
             log: Callable[[str], None] | None = None,
             keep_adversarial: bool = False) -> RobustnessResult:
  """Scores `model` with `variables` on `dataset`, clean and under each attack or cascade.

  Args:
    model: a Flax module (run in eval mode) or a function `variables -> apply_fn`
      (`jaxadv.models.bind`); variables: its variables, e.g. {"params", "batch_stats"}.
    dataset: images (N, H, W, C) in [0, 1] and labels (N,).
    attacks: name -> attack(apply_fn, x, y, key) -> x_adv, or a Cascade. "clean" is reserved.
    batch_size: evaluation batch size (rounded up to a multiple of the device count).
    seed: randomness of the attacks, fixed per (attack, stage, batch).
    mesh: data mesh (default: all devices).
    journal: records scored batches and resumes from them (`Evaluator.__call__`).
    log: receives progress lines, as each attack stage starts and ends.
    keep_adversarial: also return each point's worst-case image (`RobustnessResult`).
  """
  return Evaluator(model, dataset, batch_size=batch_size, mesh=mesh)(
      variables, attacks, seed=seed, journal=journal, log=log, keep_adversarial=keep_adversarial)
