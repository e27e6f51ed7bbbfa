"""Where adversarial examples go: the confusion matrix of finished runs under their attack.

    python experiments/adversarial_confusion.py RUN_DIR [RUN_DIR ...] [--num-examples N]

For each run directory (a `jaxadv train` workdir), restores the latest checkpoint, attacks the
first N test points (all with N = 0) with the first attack of the run's `eval.suite` (PGD-20 at
the configured eps and step for the MNIST presets), and prints the confusion matrix C (K, K),
C[y, ŷ] = #{i : y_i = y, argmax f(x_adv_i) = ŷ}, its diagonal being the robust points. A summary
table then gives per class c and run the flows off the diagonal: `out` = points of class c
predicted as another class, `in` = points of other classes predicted as c. docs/results.md uses
it to show that the θ̂-weighted ADML variant, which gives one class weight 0, turns the attack's
flows around that class.

The attack's random starts are keyed by fold_in(PRNGKey(run seed), batch index) over batches of
`eval.batch_size` and every point is attacked, including clean errors: the robust accuracy (the
trace over N) is therefore an independent PGD run, within a fraction of a point of eval.json's.
"""

from __future__ import annotations

import argparse
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv.data import ArrayDataset, eval_batches
from jaxadv.eval import suites
from jaxadv.models import BoundModel
from jaxadv import train as training


def adversarial_predictions(model, variables, dataset: ArrayDataset, attack, *,
                            batch_size: int, seed: int) -> np.ndarray:
  """argmax f(attack(x)) of every point, (N,), over `eval_batches` of `batch_size` (padded
  rows dropped); batch b's attack key is fold_in(PRNGKey(seed), b)."""
  apply_fn = BoundModel(model, variables, "eval")
  predict = jax.jit(lambda x, y, key: jnp.argmax(apply_fn(attack(apply_fn, x, y, key)), -1))
  key = jax.random.PRNGKey(seed)
  parts = []
  for index, batch in enumerate(eval_batches(dataset, batch_size)):
    predicted = predict(batch["image"], batch["label"], jax.random.fold_in(key, index))
    parts.append(np.asarray(predicted)[batch["mask"] > 0])
  return np.concatenate(parts)


def confusion(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
  """C (K, K) with C[y, ŷ] the number of points of class y predicted as ŷ."""
  matrix = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(matrix, (labels, predictions), 1)
  return matrix


def flows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(out, in), each (K,): off-diagonal row sums (class c sent elsewhere) and column sums
  (other classes sent to c)."""
  off_diagonal = matrix - np.diag(np.diag(matrix))
  return off_diagonal.sum(axis=1), off_diagonal.sum(axis=0)


def run_confusion(workdir, *, num_examples: int = 0) -> dict:
  """{"name", "attack", "n_ex", "robust_accuracy", "confusion"} of the run in `workdir`."""
  config, variables, _ = training.restore(workdir)
  dataset = training.load_dataset(config, "test").take(num_examples)
  e = config.eval
  attack_name = e.suite[0]
  attack = suites.build([attack_name], eps=e.eps, norm=e.norm, step_size=e.step_size,
                        num_classes=dataset.num_classes)[attack_name]
  predictions = adversarial_predictions(training.build_model(config, dataset), variables, dataset,
                                        attack, batch_size=min(e.batch_size, len(dataset)),
                                        seed=config.seed)
  matrix = confusion(dataset.labels, predictions, dataset.num_classes)
  return {"name": pathlib.Path(workdir).parent.name + "/" + pathlib.Path(workdir).name,
          "attack": suites.describe(attack_name, eps=e.eps, norm=e.norm, step_size=e.step_size),
          "n_ex": len(dataset), "robust_accuracy": 100.0 * np.trace(matrix) / len(dataset),
          "confusion": matrix}


def markdown_confusion(record: dict) -> str:
  """The confusion matrix as a markdown table, rows true class, columns predicted class."""
  matrix = record["confusion"]
  classes = range(matrix.shape[0])
  lines = ["| true \\ adv | " + " | ".join(map(str, classes)) + " |",
           "|---|" + "---:|" * matrix.shape[0]]
  lines += [f"| {c} | " + " | ".join(str(v) for v in matrix[c]) + " |" for c in classes]
  return "\n".join(lines)


def markdown_flows(records) -> str:
  """Per class, each run's flows off the diagonal as `out / in`."""
  lines = ["| class | " + " | ".join(r["name"] for r in records) + " |",
           "|---|" + "---:|" * len(records)]
  run_flows = [flows(r["confusion"]) for r in records]
  for c in range(records[0]["confusion"].shape[0]):
    lines.append(f"| {c} | " + " | ".join(f"{out[c]} / {into[c]}" for out, into in run_flows)
                 + " |")
  return "\n".join(lines)


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("workdirs", nargs="+", help="run directories of `jaxadv train`")
  parser.add_argument("--num-examples", type=int, default=0,
                      help="first N test points (0: all)")
  args = parser.parse_args(argv)
  records = [run_confusion(w, num_examples=args.num_examples) for w in args.workdirs]
  for record in records:
    print(f"\n{record['name']}: {record['attack']}, {record['n_ex']} test points, "
          f"robust {record['robust_accuracy']:.2f}\n")
    print(markdown_confusion(record))
  print("\nflows off the diagonal per class (out: sent to another class / in: received)\n")
  print(markdown_flows(records))
  return records


if __name__ == "__main__":
  main()
