"""experiments/adversarial_confusion.py: the confusion matrix under attack and its flows."""

import numpy as np
import pytest

from jaxadv.eval import suites
from jaxadv import train as training

from helpers import load_experiment, tiny_config


def _load_script():
  return load_experiment("adversarial_confusion")


def test_confusion_counts_points_and_flows_balance():
  script = _load_script()
  labels = np.array([0, 0, 1, 1, 2, 2, 2])
  predicted = np.array([0, 1, 1, 2, 2, 0, 0])
  matrix = script.confusion(labels, predicted, 3)
  np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 1, 1], [2, 0, 1]])
  out, into = script.flows(matrix)
  np.testing.assert_array_equal(out, [1, 1, 2])
  np.testing.assert_array_equal(into, [2, 1, 1])
  assert out.sum() == into.sum() == np.sum(labels != predicted)


@pytest.mark.slow  # a trained run and its evaluation
def test_at_eps_zero_the_diagonal_is_the_evaluated_clean_accuracy(tmp_path, capsys):
  # eps 0 makes the attack the identity, so the matrix is the clean confusion and its diagonal
  # must give eval's per-class clean accuracy: the restore, the batching and the counting agree.
  training.train(tiny_config(num_epochs=1, **{"eval.eps": 0.0}), tmp_path, progress=False)
  evaluated = training.evaluate_workdir(tmp_path, num_examples=50)
  script = _load_script()
  (record,) = script.main([str(tmp_path), "--num-examples", "50"])
  matrix = record["confusion"]
  assert record["n_ex"] == matrix.sum() == 50
  per_class = 100.0 * np.diag(matrix) / np.maximum(matrix.sum(axis=1), 1)
  present = matrix.sum(axis=1) > 0
  np.testing.assert_allclose(per_class[present],
                             np.asarray(evaluated["per_class_accuracy"]["clean"])[present])
  np.testing.assert_allclose(record["robust_accuracy"], evaluated["accuracy"]["clean"])
  out = capsys.readouterr().out
  assert "| true \\ adv | 0 | 1 |" in out and "out: sent to another class" in out

  # At eps 0.2 the same weak model's points leave the diagonal: fewer robust than clean, and
  # the flows still balance.
  config, variables, _ = training.restore(tmp_path)
  dataset = training.load_dataset(config, "test").take(50)
  attack = suites.build(["pgd3"], eps=0.2, norm="linf", num_classes=10)["pgd3"]
  predicted = script.adversarial_predictions(training.build_model(config, dataset), variables,
                                             dataset, attack, batch_size=32, seed=0)
  attacked = script.confusion(dataset.labels, predicted, 10)
  assert attacked.sum() == 50 and np.trace(attacked) < np.trace(matrix)
  out_flow, in_flow = script.flows(attacked)
  assert out_flow.sum() == in_flow.sum() == 50 - np.trace(attacked)
