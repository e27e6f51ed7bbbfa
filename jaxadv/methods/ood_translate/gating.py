"""Fitting the defense's gate once the translator is trained, and keeping it with the run.

The gate (`jaxadv.defenses.gate`) scores each input; its threshold is the q-quantile of the
scores of held-out in-distribution points: the run's validation split (`dataset.num_val`
training images the translator never saw). With the Mahalanobis score (default) the class means
and the shared covariance come from the classifier's penultimate features (eval mode) of the
first `fit_examples` images of the run's training split; with the reconstruction score
‖T(x) − x‖₂ nothing else is fitted. The result is written to `<workdir>/gate.npz` with the image
shape it was fitted for, and read from there afterwards: a run killed between training and this
fit gets it on its next evaluation.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv.defenses import gate as gate_lib

FILE = "gate.npz"
SCORES = ("mahalanobis", "reconstruction")


@jax.jit
def _call(fn, x):
  return fn(x)


def batched(fn, images: np.ndarray, batch_size: int) -> np.ndarray:
  """`fn` (a pytree callable, e.g. a `BoundModel`; compiled once per batch shape) over images
  (N, ...) in batches of `batch_size`, the last one padded by repeating rows; the outputs
  concatenated, (N, ...)."""
  batch_size = min(batch_size, len(images))
  outputs = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    rows = np.resize(np.arange(len(chunk)), batch_size)
    outputs.append(np.asarray(_call(fn, jnp.asarray(chunk[rows])))[:len(chunk)])
  return np.concatenate(outputs)


def fit(score: str, *, q: float, classifier_features, translate, train_set, val_set,
        fit_examples: int, ridge: float, batch_size: int) -> dict[str, np.ndarray]:
  """The gate's arrays: "threshold" (the q-quantile of the validation scores), "image_shape",
  "q", and for the Mahalanobis score "means" (K, D) and "precision" (D, D).

  Args:
    score: "mahalanobis" or "reconstruction".
    q: the quantile, in (0, 1).
    classifier_features: x (B, H, W, C) -> penultimate features (B, D), eval mode.
    translate: x -> T(x), eval mode.
    train_set, val_set: `ArrayDataset`s, the run's training and validation splits.
    fit_examples: training images for the class means and covariance (all when larger).
    ridge: `gate.fit_mahalanobis`'s relative ridge.
    batch_size: images per forward pass.
  """
  if score not in SCORES:
    raise ValueError(f"unknown gate score {score!r}; choose one of {list(SCORES)}.")
  arrays = {"q": np.float32(q), "image_shape": np.asarray(train_set.image_shape, np.int32)}
  if score == "mahalanobis":
    reference = train_set.take(fit_examples)
    stats = gate_lib.fit_mahalanobis(
        jnp.asarray(batched(classifier_features, reference.images, batch_size)),
        jnp.asarray(reference.labels), reference.num_classes, ridge=ridge)
    arrays.update(means=np.asarray(stats.means), precision=np.asarray(stats.precision))
    score_fn = gate_lib.mahalanobis_gate(classifier_features, stats)
  else:
    score_fn = gate_lib.reconstruction_gate(translate)
  scores = batched(score_fn, val_set.images, batch_size)
  arrays["threshold"] = np.asarray(gate_lib.fit_threshold(jnp.asarray(scores), q))
  return arrays


def save(arrays: dict, workdir) -> pathlib.Path:
  """Writes the gate's arrays to `<workdir>/gate.npz` (through a temporary file, so a killed
  write leaves no partial gate); returns the path."""
  path = pathlib.Path(workdir) / FILE
  partial = path.with_suffix(".tmp.npz")
  np.savez(partial, **arrays)
  partial.replace(path)
  return path


def load(workdir) -> dict[str, np.ndarray] | None:
  """The gate's arrays saved in `workdir`, or None when it holds none. Raises ValueError naming
  the file when it is unreadable."""
  path = pathlib.Path(workdir) / FILE
  if not path.is_file():
    return None
  try:
    with np.load(path) as stored:
      return {name: stored[name] for name in stored.files}
  except Exception as error:  # a truncated or foreign file: say which
    raise ValueError(f"{path} is not a readable gate file ({error}); delete it and run "
                     "`jaxadv eval` again to refit the gate.") from None
