"""`jaxadv.evaluate`: any classifier (a closure, a BoundModel, an NNX module), its result
object and reports, the adversarial examples, and clear errors for bad input."""

import json
import subprocess
import sys

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxadv
from jaxadv import models
from jaxadv.eval import robustness, suites

from helpers import TinyNet

KEY = jax.random.PRNGKey(0)
W = jax.random.normal(KEY, (16, 3))
LINEAR = lambda x: x.reshape(x.shape[0], -1) @ W


def _points(n=24):
  images = np.asarray(jax.random.uniform(jax.random.PRNGKey(1), (n, 4, 4, 1)))
  labels = np.array(jnp.argmax(LINEAR(images), -1))
  labels[:3] = (labels[:3] + 1) % 3
  return images, labels


def test_a_closure_gets_the_evaluators_numbers_and_a_robustbench_record(tmp_path):
  images, labels = _points()
  result = jaxadv.evaluate(LINEAR, images, labels, suite="fgsm,pgd10", eps=8 / 255,
                           batch_size=8, checks=False, log=None, name="linear")
  dataset = jaxadv.eval.api.as_dataset(images, labels, 3)
  attacks = suites.build(["fgsm", "pgd10"], eps=8 / 255, norm="linf", num_classes=3)
  direct = robustness.evaluate(lambda _: LINEAR, {}, dataset, attacks, batch_size=8)
  assert result.accuracy == direct.accuracy()
  assert result.accuracy["clean"] == pytest.approx(100 * 21 / 24)
  assert result.robust_accuracy == result.accuracy["worst_case"]
  record = json.loads(result.to_json(tmp_path / "eval.json"))
  assert json.loads((tmp_path / "eval.json").read_text()) == record
  assert (record["name"], record["eps"], record["eps_value"], record["threat_model"]) == (
      "linear", "8/255", 8 / 255, "Linf")
  assert record["number_forward_passes"] == 1 and record["additional_data"] is False
  provenance = record["provenance"]
  assert provenance["test_points"] == 24 and provenance["jax"] == jax.__version__
  assert {"jaxadv", "commit", "jaxlib", "devices", "date"} <= set(provenance)
  assert "| all | 24 |" in result.to_markdown()
  figure = result.plot(tmp_path / "chart.png")
  assert (tmp_path / "chart.png").stat().st_size > 0 and figure.axes


class _NNXLinear(nnx.Module):
  def __init__(self):
    self.w = nnx.Param(W)

  def __call__(self, x):
    return x.reshape(x.shape[0], -1) @ self.w[...]


def test_a_bound_model_and_an_nnx_module_score_like_the_closure():
  images, labels = _points()
  options = dict(suite=("pgd5",), eps=0.1, batch_size=8, checks=False, log=None)
  expected = jaxadv.evaluate(LINEAR, images, labels, **options).accuracy
  assert jaxadv.evaluate(_NNXLinear(), images, labels, **options).accuracy == expected
  model = TinyNet()
  variables = model.init(KEY, jnp.asarray(images[:2]))
  bound = jaxadv.evaluate(models.BoundModel(model, variables, "eval"), images, labels,
                          **options).accuracy
  linen = jaxadv.evaluate(model, images, labels, variables=variables, **options).accuracy
  assert bound == linen


def test_the_adversarial_examples_are_the_worst_case(tmp_path):
  images, labels = _points()
  result = jaxadv.evaluate(LINEAR, images, labels, suite="fgsm,pgd10", eps=0.1, checks=False,
                           return_adversarial=True, log=None)
  x_adv, robust = result.adversarial, result.robustness.worst_case
  assert np.all(np.abs(x_adv - images) <= 0.1 + 1e-6) and np.all((x_adv >= 0) & (x_adv <= 1))
  predictions = np.asarray(jnp.argmax(LINEAR(x_adv), -1))
  np.testing.assert_array_equal(result.predictions, predictions)
  np.testing.assert_array_equal(predictions == labels, robust)
  np.testing.assert_array_equal(x_adv[robust], images[robust])
  saved = np.load(result.save_adversarial(tmp_path / "adv.npz"))
  np.testing.assert_array_equal(saved["x_adv"], x_adv)
  np.testing.assert_array_equal(saved["labels"], labels)
  np.testing.assert_array_equal(saved["predictions"], predictions)


@pytest.mark.parametrize("model, images, labels, kwargs, message", [
    (lambda x: x.sum(axis=(1, 2, 3)), None, None, {}, r"logits of shape \(B, K\)"),
    (lambda x: jnp.full((x.shape[0], 3), jnp.nan), None, None, {}, "non-finite logits"),
    (LINEAR, "scaled", None, {}, r"must lie in \[0, 1\]"),
    (LINEAR, None, "short", {}, "labels must be integers of shape"),
    (LINEAR, None, "large", {}, "labels"),
    (TinyNet(), None, None, {}, "a Linen module needs its variables"),
    ("model", None, None, {}, "must be a function x -> logits"),
    (LINEAR, None, None, dict(eps=-0.1), "eps must be >= 0"),
    (LINEAR, None, None, dict(suite="pgd10,bogus"), "unknown attack 'bogus'"),
    (LINEAR, None, None, dict(return_adversarial=True, journal=object()), "journal"),
])
def test_bad_input_is_a_clear_error(model, images, labels, kwargs, message):
  clean_images, clean_labels = _points()
  images = {None: clean_images, "scaled": clean_images * 255}[images]
  labels = {None: clean_labels, "short": clean_labels[:5], "large": clean_labels + 3}[labels]
  with pytest.raises(ValueError, match=message):
    jaxadv.evaluate(model, images, labels, **{"suite": "fgsm", "eps": 0.1, "checks": False,
                                               "log": None, **kwargs})


def test_evaluate_works_in_a_fresh_process_that_never_imported_nnx():
  """The test session imports flax.nnx itself; a user's process may not have (regression: the
  model check read `flax.nnx` after a bare `import flax`)."""
  code = ("import jax, numpy as np, jaxadv; w = np.ones((16, 3), np.float32); "
          "x = np.random.default_rng(0).random((8, 4, 4, 1), dtype=np.float32); "
          "r = jaxadv.evaluate(lambda v: v.reshape(v.shape[0], -1) @ w, x, np.zeros(8, int), "
          "suite='fgsm', eps=0.1, checks=False, log=None); print(r.accuracy['clean'])")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  assert float(done.stdout.split()[-1]) == 100.0  # x @ ones: equal logits, argmax 0
