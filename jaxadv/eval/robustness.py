"""Robust accuracy of a model under a set of attacks, per example, overall and per class.

Each attack is `attack(apply_fn, x, y, key) -> x_adv`; the model is attacked and scored in
eval mode (BatchNorm running averages). Batches are padded to a fixed size and split over
the data mesh; padded rows are masked out, so every example of the dataset counts once.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv.data import ArrayDataset, eval_batches
from jaxadv.models import BoundModel
from jaxadv.train import mesh as mesh_lib

Attack = Callable[..., jax.Array]


@dataclasses.dataclass
class RobustnessResult:
  """correct[name]: bool (N,) per attack ("clean" first); labels: int (N,)."""
  correct: dict[str, np.ndarray]
  labels: np.ndarray
  num_classes: int

  @property
  def worst_case(self) -> np.ndarray:
    """bool (N,): correct under every entry (clean and all attacks)."""
    return np.logical_and.reduce(list(self.correct.values()))

  def accuracy(self) -> dict[str, float]:
    """Overall accuracy (in %) per attack, plus "worst_case"."""
    rows = dict(self.correct, worst_case=self.worst_case)
    return {name: 100.0 * float(np.mean(c)) for name, c in rows.items()}

  def per_class(self) -> dict[str, list[float]]:
    """Accuracy (in %) per class and attack; NaN for a class absent from the data."""
    rows = dict(self.correct, worst_case=self.worst_case)
    out = {}
    for name, c in rows.items():
      out[name] = [100.0 * float(np.mean(c[self.labels == k])) if np.any(self.labels == k)
                   else float("nan") for k in range(self.num_classes)]
    return out


def evaluate(model, variables, dataset: ArrayDataset, attacks: Mapping[str, Attack], *,
             batch_size: int, seed: int = 0, mesh=None) -> RobustnessResult:
  """Scores `model` with `variables` on `dataset`, clean and under each attack.

  Args:
    model: Flax module; variables: {"params", "batch_stats"}.
    dataset: images (N, H, W, C) in [0, 1] and labels (N,).
    attacks: name -> attack(apply_fn, x, y, key) -> x_adv. The name "clean" is reserved.
    batch_size: evaluation batch size (rounded up to a multiple of the device count).
    seed: randomness of the attacks (random starts), fixed per batch.
    mesh: data mesh (default: all devices).
  """
  if "clean" in attacks:
    raise ValueError("the attack name 'clean' is reserved for the unattacked accuracy.")
  mesh = mesh_lib.data_mesh() if mesh is None else mesh
  batch_size = -(-batch_size // mesh.size) * mesh.size
  names = ("clean", *attacks)

  def score(variables, batch, key):
    apply_fn = BoundModel(model, variables, "eval")
    x, y = batch["image"], batch["label"]
    correct = [jnp.argmax(apply_fn(x), -1) == y]
    for index, attack in enumerate(attacks.values()):
      x_adv = attack(apply_fn, x, y, jax.random.fold_in(key, index))
      correct.append(jnp.argmax(apply_fn(x_adv), -1) == y)
    return jnp.stack(correct)

  score = jax.jit(score, in_shardings=(mesh_lib.replicated(mesh), mesh_lib.batch_sharded(mesh),
                                       mesh_lib.replicated(mesh)),
                  out_shardings=mesh_lib.replicated(mesh))
  variables = jax.device_put(variables, mesh_lib.replicated(mesh))
  base_key = jax.random.PRNGKey(seed)
  chunks = []
  for index, batch in enumerate(eval_batches(dataset, batch_size)):
    mask = batch.pop("mask").astype(bool)
    result = score(variables, mesh_lib.put_batch(batch, mesh), jax.random.fold_in(base_key, index))
    chunks.append(np.asarray(result)[:, mask])
  stacked = np.concatenate(chunks, axis=1)
  return RobustnessResult(dict(zip(names, stacked)), dataset.labels.copy(), dataset.num_classes)
