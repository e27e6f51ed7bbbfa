"""The method structure: the core never names a method, the registry, config groups and the
migration of older configs, the auxiliary BatchNorm wired from the config, stage selection."""

import json
import pathlib
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxadv import config as config_lib
from jaxadv import methods, models
from jaxadv import train as training
from jaxadv.methods.common import train_forward

from helpers import tiny_config

PACKAGE = pathlib.Path(methods.__file__).resolve().parents[1]
RESULTS = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "results"
CORE = [PACKAGE / "config.py", PACKAGE / "cli.py",
        *sorted((PACKAGE / "train").glob("*.py")), *sorted((PACKAGE / "eval").glob("*.py"))]
# The methods' names, and how their papers write them.
METHOD_WORDS = sorted({*methods.names(), "namid", "adml", "trades", "mart", "awp", "fgsm-rs",
                       "pgd-at"})


@pytest.mark.parametrize("path", CORE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_core_neither_imports_nor_names_a_method(path):
  text = path.read_text()
  imports = re.findall(r"^\s*(?:from|import)\s+(jaxadv\.methods\.\w+)", text, re.MULTILINE)
  imports += [f"jaxadv.methods.{name}" for name in re.findall(
      r"^\s*from\s+jaxadv\.methods\s+import\s+(\w+)", text, re.MULTILINE)]
  assert not imports, f"{path} imports method modules {imports}"
  named = sorted({word for word in METHOD_WORDS
                  if re.search(rf"(?<![\w.-]){re.escape(word)}(?![\w-])", text, re.IGNORECASE)})
  assert not named, f"{path} names the method(s) {named}"


def test_every_registered_method_has_a_valid_default_group_in_the_base_config():
  base = config_lib.base_config()
  assert methods.DEFAULT in methods.names() and base.objective.name == methods.DEFAULT
  for name in methods.names():
    method = methods.get(name)
    assert base.objective[name] == method.defaults()
    method.validate(method.defaults(), None)
    assert method.stages_of(base)[-1].name == ""  # the last stage is the run's model
  assert set(methods.reports()) == {"vulnerability", "mi", "ood"}
  with pytest.raises(ValueError, match="registered already"):
    methods.register(methods.get("trades"))
  with pytest.raises(ValueError, match="unknown method 'magic'"):
    methods.get("magic")


def test_a_registered_method_is_configured_trained_and_found_by_name(tmp_path):
  """A user's own method: one registry call gives it a config group, validation and a run."""
  def make_objective(model, attack, group, inputs):
    del attack, inputs
    erm = methods.build("erm", model)
    return lambda *args: (lambda out: (group.scale * out[0], out[1]))(erm(*args))

  def validate(group, config):
    del config
    if group.scale <= 0:
      raise ValueError(f"scale must be > 0, got {group.scale}.")

  method = methods.Method(name="scaled_erm", summary="scaled clean CE (a test method)",
                          defaults=lambda: ml_collections.ConfigDict({"scale": 2.0}),
                          make_objective=make_objective, validate=validate, needs_attack=False)
  methods.register(method)
  try:
    with pytest.raises(ValueError, match="objective.scaled_erm.scale must be > 0"):
      tiny_config(**{"objective.name": "scaled_erm", "objective.scaled_erm.scale": -1.0})
    config = tiny_config(**{"objective.name": "scaled_erm", "num_epochs": 1})
    state = training.train(config, tmp_path, progress=False)
    assert int(state.step) == 8
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert np.isfinite(row["loss"])
  finally:
    methods._REGISTRY.pop("scaled_erm")  # pylint: disable=protected-access


def _record_configs():
  return sorted(RESULTS.rglob("config.json"))


@pytest.mark.parametrize("path", _record_configs(), ids=lambda p: str(p.relative_to(RESULTS)))
def test_every_recorded_config_migrates_to_the_method_groups(path):
  """The run directories behind docs/results.md were written with flat objective options
  (adml_theta, namid_alpha, beta, ...) and a top-level `mi` group: they load into the method
  groups with the same values."""
  old = json.loads(path.read_text())
  config = config_lib.from_json(path.read_text())
  objective = old["objective"]
  if "beta" in objective:
    for name in ("trades", "mart", "awp", "namid"):
      assert config.objective[name].beta == objective["beta"]
  for old_field, (group, field) in {"adml_theta": ("adml", "theta"), "adml_base": ("adml", "base"),
                                    "namid_alpha": ("namid", "alpha"),
                                    "namid_lam": ("namid", "lam"),
                                    "namid_estimators": ("namid", "estimators"),
                                    "awp_gamma": ("awp", "gamma"),
                                    "fgsm_step_ratio": ("fgsm_rs", "step_ratio")}.items():
    if old_field in objective:
      value = config.objective[group][field]
      assert value == (tuple(objective[old_field]) if isinstance(value, tuple)
                       else objective[old_field])
  if "mi" in old:
    assert config.objective.namid.estimator.width == old["mi"]["width"]
    assert config.objective.namid.estimator.dv_variant == old["mi"]["dv_variant"]
  assert "mi" not in config and config.objective.name == objective["name"]


def test_model_aux_bn_builds_the_twin_batchnorms_and_bn_routes_the_training_forward():
  config = tiny_config(**{"model.name": "preact_resnet18", "model.aux_bn": True,
                          "model.width": 4})
  dataset = training.load_dataset(config, "test").take(4)
  model = training.build_model(config, dataset)
  assert model.aux_bn
  x = jnp.asarray(dataset.images)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  state = models.model_state(variables)
  flat = lambda tree, route: {k: v for k, v in
                              jax.tree_util.tree_flatten_with_path(tree)[0]
                              if f"'{route}'" in jax.tree_util.keystr(k)}
  _, aux_updated = jax.jit(train_forward, static_argnames=("model", "bn"))(
      model, variables["params"], state, x, bn="aux")
  for route, moved in (("aux", True), ("main", False)):
    before, after = flat(state, route), flat(aux_updated, route)
    assert before and all(bool(np.any(np.asarray(after[k]) != np.asarray(before[k]))) == moved
                          for k in before)
  with pytest.raises(ValueError, match="model.aux_bn: model 'small_cnn' has no BatchNorm"):
    tiny_config(**{"model.aux_bn": True})


def test_train_runs_the_named_stages_only(tmp_path):
  config = tiny_config(num_epochs=1)
  with pytest.raises(ValueError, match=r"unknown stage\(s\) \['estimators'\]"):
    training.train(config, tmp_path, stages=["estimators"], progress=False)
  assert training.train_and_evaluate(config, tmp_path, stages=["model"], progress=False)
  assert (tmp_path / "eval.json").is_file()


def test_validation_split_is_held_out_of_training_and_fixed_across_seeds():
  config = tiny_config(**{"dataset.num_val": 50, "dataset.num_train": 0})
  train, val = training.load_dataset(config, "train"), training.load_dataset(config, "val")
  whole = training.load_dataset(tiny_config(**{"dataset.num_train": 0}), "train")
  assert len(train) + len(val) == len(whole) and len(val) == 50
  as_rows = lambda d: {row.tobytes() for row in d.images.reshape(len(d), -1)}
  assert not as_rows(train) & as_rows(val)
  other_seed = training.load_dataset(tiny_config(seed=3, **{"dataset.num_val": 50}), "val")
  np.testing.assert_array_equal(other_seed.labels, val.labels)
  with pytest.raises(ValueError, match="holds out no validation split"):
    training.load_dataset(tiny_config(), "val")
  with pytest.raises(ValueError, match="eval.checkpoint='best' selects by the monitored"):
    tiny_config(**{"eval.checkpoint": "best"})


def test_best_checkpoint_is_the_highest_validation_score_and_is_evaluated(tmp_path, capsys):
  config = tiny_config(num_epochs=3, **{"dataset.num_val": 64, "eval.monitor_every_epochs": 1.0,
                                        "eval.monitor_examples": 64, "eval.monitor_steps": 2,
                                        "eval.checkpoint": "best"})
  record = training.train_and_evaluate(config, tmp_path, progress=False)
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  monitored = [(row["step"], row["val_pgd2"]) for row in rows if "val_pgd2" in row]
  assert [step for step, _ in monitored] == [8, 16, 24]
  best_step, best_score = max(monitored, key=lambda item: (item[1], -item[0]))
  kept = json.loads((tmp_path / "best" / "best.json").read_text())
  assert (kept["step"], kept["score"]) == (best_step, best_score)
  assert record["checkpoint_step"] == best_step and "best checkpoint" in record["model"]
  _, best_variables, _ = training.restore(tmp_path, checkpoint="best")
  _, last_variables, last_step = training.restore(tmp_path)
  assert last_step == 24
  if best_step != 24:
    assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, best_variables, last_variables)))
  again = training.evaluate_workdir(tmp_path)
  assert again["checkpoint_step"] == best_step
