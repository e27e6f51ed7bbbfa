"""Evaluation: cascade semantics, suites, reports, and the gradient-masking checks."""

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import attacks
from jaxadv.data import ArrayDataset
from jaxadv.eval import masking, report, robustness, runner, suites


class Linear(nn.Module):
  """Flattened input -> logits; optionally quantised input (a masked, step-function model)
  or softmax outputs."""
  num_classes: int = 3
  quantise: bool = False
  softmax: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    if self.quantise:
      x = jnp.round(x * 4.0) / 4.0  # zero gradient almost everywhere
    logits = nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))
    return jax.nn.softmax(logits) if self.softmax else logits


def _dataset(n=48, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.uniform(0.2, 0.8, (n, 4, 4, 1)).astype(np.float32)
  return images


def _fit(model, n=48):
  """A model and a dataset labelled by the model itself (clean accuracy 100%)."""
  images = _dataset(n)
  variables = model.init(jax.random.PRNGKey(0), images[:1])
  labels = np.asarray(jnp.argmax(model.apply(variables, images), -1), np.int32)
  return variables, ArrayDataset(images, labels, 3, "toy", (0.5,), (0.5,))


def test_attacks_run_only_on_clean_correct_points_and_cascades_only_on_robust_ones():
  model = Linear()
  variables, dataset = _fit(model)
  wrong = np.arange(len(dataset)) % 4 == 0
  labels = np.where(wrong, (dataset.labels + 1) % 3, dataset.labels).astype(np.int32)
  dataset = ArrayDataset(dataset.images, labels, 3, "toy", (0.5,), (0.5,))
  seen = []

  def spy(apply_fn, x, y, key):
    seen.append(x.shape[0])
    return attacks.pgd(apply_fn, x, y, key, eps=0.05, step_size=0.02, steps=3)

  cascade = robustness.Cascade((("a", spy), ("b", functools.partial(
      attacks.pgd, eps=0.3, step_size=0.1, steps=10))))
  result = robustness.evaluate(model, variables, dataset, {"casc": cascade}, batch_size=8)
  np.testing.assert_array_equal(result.correct["clean"], ~wrong)
  assert not np.any(result.correct["casc"][wrong])  # clean-wrong points are never robust
  stage_a, stage_b = result.stages["casc"]["a"], result.stages["casc"]["b"]
  assert np.all(stage_b <= stage_a)  # each stage only removes robust points
  np.testing.assert_array_equal(result.correct["casc"], stage_b)
  assert result.accuracy()["clean"] == pytest.approx(75.0)


def test_suites_build_and_reject_unknown_names():
  built = suites.build(["clean", "pgd20", "cw30", "fgsm", "autoattack"], eps=0.1, norm="linf",
                       num_classes=10)
  assert list(built) == ["pgd20", "cw30", "fgsm", "autoattack"]
  assert [name for name, _ in built["autoattack"].stages] == ["apgd-ce", "apgd-t", "fab-t", "square"]
  with pytest.raises(ValueError, match="unknown attack 'pgd'"):
    suites.build(["pgd"], eps=0.1, norm="linf", num_classes=10)
  with pytest.raises(ValueError, match="eps must be >= 0"):
    suites.build(["pgd20"], eps=-1.0, norm="linf", num_classes=10)
  assert "PGD-7, CE loss, step 0.025" in suites.describe("pgd7", eps=0.1, norm="linf")


def test_report_files_and_fields(tmp_path):
  model = Linear()
  variables, dataset = _fit(model)
  runner.evaluate_suite(model, variables, dataset, suite=("pgd5", "cw5"), eps=0.1, norm="linf",
                        step_size=0.03, batch_size=16, model_name="toy", out_dir=tmp_path,
                        quiet=True)
  on_disk = json.loads((tmp_path / "eval.json").read_text())
  for field in ("clean_acc", "robust_acc", "eps", "threat_model", "dataset", "n_ex",
                "per_class_accuracy", "attacks", "masking_flags"):
    assert field in on_disk
  assert on_disk["threat_model"] == "Linf" and on_disk["n_ex"] == 48
  assert on_disk["clean_acc"] == 100.0
  assert on_disk["robust_acc"] <= min(on_disk["accuracy"]["pgd5"], on_disk["accuracy"]["cw5"])
  assert (tmp_path / "per_class.png").stat().st_size > 1000
  assert {f["name"] for f in on_disk["masking_flags"]} >= {"randomness", "zero_gradients",
                                                             "softmax_outputs", "eps_monotonicity"}
  assert not any(f["raised"] for f in on_disk["masking_flags"]), on_disk["masking_flags"]
  table = report.markdown_table(robustness.RobustnessResult(
      {"clean": np.array([True, False])}, np.array([0, 1]), 3))
  assert "| 2 | 0 | - |" in table  # an absent class shows "-", not NaN


def test_quantised_model_is_flagged():
  model = Linear(quantise=True)
  variables, dataset = _fit(model)
  record = runner.evaluate_suite(model, variables, dataset, suite=("pgd10",), eps=0.1,
                                 norm="linf", step_size=0.03, batch_size=16, quiet=True)
  flags = {f["name"]: f["raised"] for f in record["masking_flags"]}
  assert flags["zero_gradients"] and not flags["randomness"]
  assert record["accuracy"]["pgd10"] >= 90.0  # PGD is nearly blind: the number is not robustness


def test_softmax_random_and_monotonicity_flags():
  x = jnp.asarray(_dataset(8))
  model = Linear(softmax=True)
  variables = model.init(jax.random.PRNGKey(0), x)
  assert masking.check_softmax_outputs(lambda v: model.apply(variables, v), x).raised
  noisy = lambda v: jax.random.normal(jax.random.PRNGKey(np.random.randint(1 << 30)), (8, 3))
  assert masking.check_randomness(noisy, x).raised
  assert masking.check_eps_monotonicity({0.1: 50.0, 0.2: 60.0}).raised
  assert not masking.check_eps_monotonicity({0.1: 50.0, 0.2: 40.0}).raised
  flag = masking.check_black_box_gain(np.array([True, True, False]), np.array([True, False, False]))
  assert flag.raised and "broke 1 points" in flag.detail
