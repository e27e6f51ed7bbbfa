"""NAMID's estimator stage and the config path of NAMID: the estimator loss against a reference
with boolean indexing, empty selections, a frozen classifier, training raising the gains, a
checkpointed and resumable stage, loading the estimators into a NAMID run, and the MI report."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxadv import cli
from jaxadv import config as config_lib
from jaxadv import train as training
from jaxadv.attacks import pgd
from jaxadv.estimators import MIEstimator, dv_per_sample
from jaxadv.methods import namid
from jaxadv.methods.namid import NamidEstimators
from jaxadv.methods.namid.estimators import code_loss, estimator_objective, init_params
from jaxadv.train.checkpoint import Checkpointer

from helpers import tiny_config

ESTIMATOR = MIEstimator(width=16, conv_features=(8, 16))
ATTACK = dict(eps=0.3, step_size=0.1, steps=5, norm="linf")
SMALL_MI = {"objective.namid.estimator.width": 16,
            "objective.namid.estimator.conv_features": (8, 16),
            "objective.namid.estimator.lr": 1e-3, "objective.namid.estimator.num_epochs": 2}


@pytest.fixture(scope="module")
def setup(digits_cnn):
  """The undefended digits CNN, a batch of 32 test points and the estimators' parameters."""
  batch = {"image": digits_cnn.images[:32], "label": digits_cnn.labels[:32]}
  params = jax.jit(init_params, static_argnums=(0, 2, 3))(ESTIMATOR, jax.random.PRNGKey(0),
                                                          (8, 8, 1), 10)
  return digits_cnn.apply_fn, batch, params


def _loss_and_grads(objective, params, batch):
  (loss, (stats, metrics)), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(
      params, {}, batch, jax.random.PRNGKey(1), jnp.int32(0))
  return loss, stats, metrics, grads


def test_estimator_loss_matches_a_reference_with_boolean_indexing(setup):
  classifier, batch, params = setup
  # Four wrong labels: those points are misclassified clean, so the selection is never the whole
  # batch, whichever points the attack flips on this CPU (on an AMD host it flipped all 32).
  wrong = (batch["label"][:4] + 1) % 10
  batch = {**batch, "label": np.concatenate([wrong, batch["label"][4:]])}
  loss, stats, metrics, _ = _loss_and_grads(estimator_objective(ESTIMATOR, classifier, ATTACK),
                                            params, batch)
  x, y = batch["image"], batch["label"]
  x_adv = pgd(classifier, x, y, jax.random.PRNGKey(1), **ATTACK)
  clean, adv = np.asarray(classifier(x)), np.asarray(classifier(x_adv))
  chosen = (clean.argmax(-1) == np.asarray(y)) & (adv.argmax(-1) != np.asarray(y))
  assert 0 < chosen.sum() < 32 and stats == {}
  estimate = lambda name, local, logits: np.asarray(dv_per_sample(
      ESTIMATOR.apply({"params": params[name]}, local, jnp.asarray(logits))), np.float64)[chosen]
  natural_gain = np.mean(estimate("natural", x, clean) - estimate("natural", x, adv))
  adversarial_gain = np.mean(estimate("adversarial", x_adv - x, adv)
                             - estimate("adversarial", x_adv - x, clean))
  np.testing.assert_allclose(metrics["natural_gain"], natural_gain, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(metrics["adversarial_gain"], adversarial_gain, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(loss, -(natural_gain + adversarial_gain), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(metrics["selected"], chosen.mean())


def test_empty_selection_gives_zero_loss_and_zero_finite_gradients(setup):
  classifier, batch, params = setup
  no_attack = dict(ATTACK, eps=0.0)  # x_adv = x: nothing is adversarially wrong
  loss, _, metrics, grads = _loss_and_grads(estimator_objective(ESTIMATOR, classifier, no_attack),
                                            params, batch)
  assert float(loss) == 0.0 and float(metrics["selected"]) == 0.0
  for grad in jax.tree.leaves(grads):
    assert np.all(np.isfinite(grad)) and not np.any(grad)


def _adam_on_one_batch(objective, params, batch, steps=40):
  """`steps` + 1 Adam(1e-3) steps of `objective` on one fixed batch; returns the first step's
  (loss, metrics, grads) and the last step's (loss, metrics)."""
  tx = optax.adam(1e-3)

  @jax.jit
  def step(params, opt_state):
    (loss, (_, metrics)), grads = jax.value_and_grad(objective, has_aux=True)(
        params, {}, batch, jax.random.PRNGKey(1), jnp.int32(0))
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss, metrics, grads

  params, opt_state, *first = step(params, tx.init(params))
  for _ in range(steps):
    params, opt_state, loss, metrics, _ = step(params, opt_state)
  return first, (loss, metrics)


def test_both_estimators_learn_and_the_gains_grow(setup):
  """Adam on one fixed batch: each estimator gets a gradient, and 40 steps raise G_N + G_A."""
  classifier, batch, params = setup
  (first, _, grads), (last, _) = _adam_on_one_batch(
      estimator_objective(ESTIMATOR, classifier, ATTACK), params, batch)
  for name in ("natural", "adversarial"):
    assert any(np.any(g) for g in jax.tree.leaves(grads[name]))
  assert float(last) < float(first) - 0.5


def _code_loss_reference(mi, clean_correct, non_robust):
  """The "code" objective with boolean indexing and Python branches, as the authors' loop."""
  mi = {k: np.asarray(v, np.float64) for k, v in mi.items()}
  robust = clean_correct & ~non_robust
  cos = lambda a, b: float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
  if not clean_correct.any():
    return -mi["natural_clean"].mean() - mi["adversarial_adv"].mean()
  nat, nat_adv = mi["natural_clean"], mi["natural_adv"]
  adv, adv_clean = mi["adversarial_adv"], mi["adversarial_clean"]
  n_clean = clean_correct.sum()
  loss = 0.0
  if non_robust.any():
    w = non_robust
    loss += 5 * abs(cos(nat[w], nat_adv[w])) - nat[w].sum() / n_clean
    loss += 5 * abs(cos(adv[w], adv_clean[w])) - adv[w].mean()
  if robust.any():
    r = robust
    loss += 0.5 * (5 * abs(1 - cos(nat[r], nat_adv[r])) - nat[r].sum() / n_clean)
    loss += 0.5 * (8 * abs(1 - cos(adv_clean[r], adv[r])) + 0.1 * adv[r].mean())
  return loss


@pytest.mark.parametrize("case", ["mixed", "no_robust", "no_non_robust", "none_correct"])
def test_code_objective_matches_the_authors_branches(case):
  """`code_loss` with masks equals the branchy reference on each combination of empty sets."""
  rng = np.random.default_rng(3)
  mi = {k: jnp.asarray(rng.normal(size=12), jnp.float32) for k in
        ("natural_clean", "natural_adv", "adversarial_clean", "adversarial_adv")}
  clean_correct = {"none_correct": np.zeros(12, bool)}.get(case, np.arange(12) < 9)
  non_robust = {"mixed": np.arange(12) % 3 == 0, "no_robust": np.arange(12) < 9,
                "no_non_robust": np.zeros(12, bool),
                "none_correct": np.zeros(12, bool)}[case] & clean_correct
  loss = jax.jit(code_loss)(mi, jnp.asarray(clean_correct), jnp.asarray(non_robust))
  np.testing.assert_allclose(loss, _code_loss_reference(mi, clean_correct, non_robust),
                             rtol=1e-5, atol=1e-5)
  grads = jax.grad(code_loss)(mi, jnp.asarray(clean_correct), jnp.asarray(non_robust))
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_code_objective_raises_the_natural_and_adversarial_mi(setup):
  """The code objective trains each estimator up on its own pairing: 40 Adam steps on a batch
  raise the selection's Î_N(h(x)) and Î_A(h(x_adv)) and lower the loss."""
  classifier, batch, params = setup
  (first, start, _), (last, end) = _adam_on_one_batch(
      estimator_objective(ESTIMATOR, classifier, ATTACK, objective="code"), params, batch)
  assert float(last) < float(first) - 0.5
  assert float(end["natural_mi"]) > float(start["natural_mi"])
  assert float(end["adversarial_mi"]) > float(start["adversarial_mi"])


def test_bad_dv_variant_is_rejected(setup):
  classifier, _, _ = setup
  with pytest.raises(ValueError, match="dv_variant"):
    estimator_objective(ESTIMATOR, classifier, ATTACK, dv_variant="jsd")
  with pytest.raises(ValueError, match="estimator objective"):
    estimator_objective(ESTIMATOR, classifier, ATTACK, objective="gap")


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
  """A tiny digits PGD-AT run directory (the classifier of the estimator stage)."""
  workdir = tmp_path_factory.mktemp("base")
  training.train(tiny_config(num_epochs=3), workdir, progress=False)
  return workdir


def _namid_config(base_run, **overrides):
  """A tiny NAMID run whose estimator stage trains on `base_run`."""
  return tiny_config(**{"objective.name": "namid",
                        "objective.namid.estimator.classifier": str(base_run), **SMALL_MI,
                        **overrides})


def _estimators(directory) -> NamidEstimators:
  config, variables, _ = training.restore(directory, "estimators")
  return namid.as_estimators(config, variables)


@pytest.mark.slow  # about 1 min; test_one_run_trains_both_stages_in_order keeps the stages
def test_stage_resumes_exactly_and_loads_into_a_namid_run(base_run, tmp_path):
  config = _namid_config(base_run, **{"objective.namid.estimator.dv_variant": "authors"})
  whole = training.train(config, tmp_path / "whole", stages=["estimators"], progress=False)
  training.train(config, tmp_path / "split", stages=["estimators"], stop_after_step=6,
                 progress=False)
  assert Checkpointer(tmp_path / "split" / "estimators").all_steps() == [4]
  resumed = training.train(config, tmp_path / "split", stages=["estimators"], progress=False)
  assert int(resumed.step) == int(whole.step) == 16
  chex.assert_trees_all_equal(jax.device_get(resumed.params), jax.device_get(whole.params))
  stage_dir = tmp_path / "whole" / "estimators"
  rows = [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]
  assert {"natural_gain", "adversarial_gain", "selected"} <= set(rows[-1])
  assert json.loads((stage_dir / "mi.json").read_text())["run"] == str(base_run)
  assert not (tmp_path / "whole" / "checkpoints").exists()  # the model stage did not run

  estimators = _estimators(stage_dir)
  assert isinstance(estimators, NamidEstimators) and estimators.dv_variant == "authors"
  assert estimators.module == MIEstimator(width=16, conv_features=(8, 16))
  chex.assert_trees_all_equal(estimators.natural["params"],
                              jax.device_get(whole.params["natural"]))

  namid_config = tiny_config(**{"objective.name": "namid", "objective.namid.base": "trades",
                                "objective.namid.lam": 0.0,
                                "objective.namid.estimators": str(stage_dir)})
  state = training.train(namid_config, tmp_path / "namid", stop_after_step=4, progress=False)
  row = json.loads((tmp_path / "namid" / "metrics.jsonl").read_text().splitlines()[0])
  assert int(state.step) == 4 and row["step"] == 4
  assert {"mi_loss", "cos_natural", "risk"} <= set(row) and np.isfinite(row["loss"])
  assert not (tmp_path / "namid" / "estimators").exists()  # loaded from their source


@pytest.mark.slow  # about 1 min: both stages by the CLI
def test_one_run_trains_both_stages_in_order(base_run, tmp_path):
  """Without `estimators`, `train` trains the estimator stage in <workdir>/estimators, then the
  NAMID model with them; running it again changes nothing."""
  config = _namid_config(base_run, num_epochs=1)
  state = training.train(config, tmp_path, progress=False)
  assert int(state.step) == 8 and Checkpointer(tmp_path / "estimators").latest_step() == 16
  assert (tmp_path / "estimators" / "mi.json").is_file()
  mi_time = (tmp_path / "estimators" / "mi.json").stat().st_mtime_ns
  again = training.train(config, tmp_path, progress=False)
  chex.assert_trees_all_equal(jax.device_get(again.params), jax.device_get(state.params))
  assert (tmp_path / "estimators" / "mi.json").stat().st_mtime_ns == mi_time  # not redone


def test_mi_report_of_a_run(base_run, tmp_path, capsys):
  training.train(_namid_config(base_run), tmp_path, stages=["estimators"], progress=False)
  estimators = str(tmp_path / "estimators")
  record = training.report("mi", base_run, estimators=estimators)
  assert record["batch_size"] == 32 and record["n"] == 64  # 64 test points, batches of 32
  assert 0 <= record["n_selected"] <= record["n"]
  assert all(np.isfinite(v) for v in record["all"].values())
  assert json.loads((base_run / "mi.json").read_text())["n"] == 64
  assert "natural MI" in capsys.readouterr().out
  with pytest.raises(ValueError, match="whole batches"):
    training.report("mi", base_run, estimators=estimators, batch_size=100)
  assert cli.main(["report", "mi", "--workdir", str(base_run), f"estimators={estimators}",
                   "--num-examples", "32"]) == 0
  assert json.loads((base_run / "mi.json").read_text())["n"] == 32


def test_stage_and_namid_config_errors(base_run, tmp_path, capsys):
  field = "objective.namid.estimator."
  with pytest.raises(ValueError, match="objective.namid.estimators: NAMID needs its MI"):
    tiny_config(**{"objective.name": "namid"})
  with pytest.raises(ValueError, match=f"{field}dv_variant"):
    _namid_config(base_run, **{f"{field}dv_variant": "jsd"})
  with pytest.raises(ValueError, match=f"{field}objective"):
    _namid_config(base_run, **{f"{field}objective": "gap"})
  with pytest.raises(ValueError, match=f"{field}score_clip must be a finite number >= 0"):
    _namid_config(base_run, **{f"{field}score_clip": -1.0})
  with pytest.raises(ValueError, match=f"{field}conv_features"):
    _namid_config(base_run, **{f"{field}conv_features": ()})
  with pytest.raises(ValueError, match="unknown stage"):
    training.train(_namid_config(base_run), tmp_path / "s", stages=["critic"], progress=False)
  missing = tiny_config(**{"objective.name": "namid", "objective.namid.estimators":
                           str(tmp_path / "none")})
  with pytest.raises(FileNotFoundError, match="not a jaxadv run directory"):
    training.train(missing, tmp_path / "n", progress=False)
  wrong_model = _namid_config(base_run, **{"model.name": "resnet18"})
  with pytest.raises(ValueError, match="holds a small_cnn on digits, not a resnet18"):
    training.train(wrong_model, tmp_path / "w", progress=False)
  assert cli.main(["report", "mi", "--workdir", str(base_run),
                   f"estimators={tmp_path / 'none'}"]) == 2
  assert "not a jaxadv run directory" in capsys.readouterr().err
  assert cli.main(["report", "mi", "--workdir", str(base_run), "critic=1"]) == 2
  assert "option=value pairs among ['batch_size', 'estimators']" in capsys.readouterr().err


@pytest.mark.parametrize("variant", ["", "trades", "mart,code", "smoke"])
def test_namid_configs_select_the_objective(variant):
  config = config_lib.validate(
      config_lib.load_file(f"experiments/configs/mnist_namid.py:{variant}"))
  assert config.objective.name == "namid"
  namid_group = config.objective.namid
  assert namid_group.base == {"": "pgd_at", "trades": "trades", "mart,code": "mart",
                              "smoke": "pgd_at"}[variant]
  assert namid_group.lam == (0.0 if "code" in variant else 0.1)
  assert namid_group.estimator.objective == ("code" if "code" in variant else "paper")
  assert namid_group.estimator.dv_variant == ("authors" if "code" in variant else "exact")
  with pytest.raises(ValueError, match="variant"):
    config_lib.load_file("experiments/configs/mnist_namid.py:trades,mart")


def test_namid_configs_set_the_estimator_stage_and_critic_bound():
  load = lambda variant: config_lib.load_file(f"experiments/configs/mnist_namid.py:{variant}")
  assert load("").objective.namid.estimator.score_clip == 0.0
  assert load("").objective.namid.estimator.classifier == "runs/mnist_pgd_at"
  assert load("code,clipped").objective.namid.estimator.score_clip == 10.0
  cifar = config_lib.validate(config_lib.load_file(
      "experiments/configs/cifar10_resnet18_namid.py:code")).objective.namid.estimator
  assert cifar.objective == "code" and cifar.dv_variant == "authors" and cifar.batch_size == 256


@pytest.mark.slow  # test_one_run_trains_both_stages_in_order covers the chain on digits
def test_mnist_smoke_configs_chain_base_estimators_and_namid(mnist_dir, tmp_path):
  # pylint: disable=unused-argument
  """The shipped MNIST configs, smoke variants: base run -> NAMID-M (code), whose run trains its
  estimator stage on the base, then the model."""
  load = lambda name: config_lib.load_file(f"experiments/configs/{name}")
  training.train(load("mnist_pgd_at.py:smoke"), tmp_path / "base", progress=False)
  config = config_lib.apply_overrides(
      load("mnist_namid.py:mart,code,smoke"),
      [f"objective.namid.estimator.classifier={tmp_path / 'base'}"])
  assert int(training.train(config, tmp_path / "namid", progress=False).step) == 4
  assert Checkpointer(tmp_path / "namid" / "estimators").latest_step() == 4
  estimators = _estimators(tmp_path / "namid" / "estimators")
  assert estimators.dv_variant == "authors" and estimators.module.score_clip == 0.0
