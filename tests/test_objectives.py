"""Baseline objectives (ERM, PGD-AT, TRADES, MART, AWP, FGSM-RS): their maths, one sharded
train step each, their options and configs, and the MNIST smoke runs."""

import functools
import json
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxadv import config as config_lib
from jaxadv import methods, models
from jaxadv.methods import awp as awp_lib
from jaxadv.methods import base_losses
from jaxadv.methods.mart import boosted_cross_entropy, mart_risk
from jaxadv.methods.namid import NamidEstimators
from jaxadv.methods.trades import trades_risk
from jaxadv.attacks import losses, pgd
from jaxadv.estimators import MIEstimator
from jaxadv.methods.fgsm_rs import fgsm_rs_attack
from jaxadv.methods.pgd_at import pgd_at_attack, pgd_at_loss
from jaxadv.methods.trades import INIT_STD, trades_attack
from jaxadv import train as training
from jaxadv import sharding
from jaxadv.train import state as state_lib
from jaxadv.train.step import make_train_step

from helpers import TinyAuxNet, TinyNet, random_images

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs"
ATTACK = dict(eps=0.1, step_size=0.05, steps=2, norm="linf")


MODEL = TinyNet()


@pytest.fixture(scope="module")
def setup():
  """Initial variables of TinyNet and a batch of 16 random 4x4x1 images with 3 classes."""
  images = random_images((16, 4, 4, 1))
  variables = MODEL.init(jax.random.PRNGKey(0), images)
  batch = {"image": images, "label": jnp.arange(16, dtype=jnp.int32) % 3}
  return variables["params"], models.model_state(variables), batch


def _value_and_grad(objective, setup, key=jax.random.PRNGKey(1), step=jnp.int32(5)):
  params, model_state, batch = setup
  (loss, (_, metrics)), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(
      params, model_state, batch, key, step)
  return loss, grads, metrics


def _assert_same_value_and_grad(a, b, setup):
  loss_a, grads_a, _ = _value_and_grad(a, setup)
  loss_b, grads_b, _ = _value_and_grad(b, setup)
  np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)
  chex.assert_trees_all_close(grads_a, grads_b, rtol=1e-5, atol=1e-7)


def test_trades_with_beta_zero_is_erm(setup):
  trades = methods.build("trades", MODEL, ATTACK, options={"beta": 0.0})
  _assert_same_value_and_grad(trades, methods.build("erm", MODEL), setup)


def test_trades_attack_raises_the_kl_inside_the_ball(setup):
  params, model_state, batch = setup
  key = jax.random.PRNGKey(4)
  x_adv = trades_attack(params, model_state, batch, key, 0, model=MODEL, **ATTACK)
  x = batch["image"]
  assert np.all(np.abs(x_adv - x) <= ATTACK["eps"] + 1e-6) and np.all((x_adv >= 0) & (x_adv <= 1))
  logits = models.BoundModel(MODEL, {"params": params, **model_state},
                             "batch_stats")  # the attack's model mode
  kl_at = losses.kl_from(logits(x))
  start = x + INIT_STD * jax.random.normal(key, x.shape)
  assert jnp.mean(kl_at(logits(x_adv), batch["label"])) > 10 * jnp.mean(
      kl_at(logits(start), batch["label"]))


def test_pgd_start_is_checked():
  x, y = random_images((2, 3)), jnp.zeros(2, jnp.int32)
  apply_fn = lambda z: z
  with pytest.raises(ValueError, match="random_start=False and restarts=1"):
    pgd(apply_fn, x, y, jax.random.PRNGKey(0), eps=0.1, step_size=0.1, steps=1, start=x)
  with pytest.raises(ValueError, match="does not match x"):
    pgd(apply_fn, x, y, None, eps=0.1, step_size=0.1, steps=1, random_start=False,
        start=x[:1])


@pytest.mark.parametrize("name, term", [("trades", "kl"), ("mart", "weighted_kl")])
def test_kl_term_vanishes_when_x_adv_is_x(setup, name, term):
  objective = methods.build(name, MODEL, dict(ATTACK, eps=0.0))
  _, _, metrics = _value_and_grad(objective, setup)
  assert float(metrics[term]) == pytest.approx(0.0, abs=1e-7)
  assert float(metrics["accuracy"]) == float(metrics["clean_accuracy"])


def _softmax(z):
  e = np.exp(z - z.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def test_mart_loss_matches_a_hand_computation():
  clean = np.array([[2.0, 0.5, -1.0], [0.1, 0.3, 1.2]])
  adv = np.array([[1.0, 1.5, -0.5], [0.2, -0.4, 0.9]])
  labels = np.array([0, 2])
  p, q = _softmax(clean), _softmax(adv)
  # example 0: runner-up class 1; example 1: runner-up class 0.
  bce = [-np.log(q[0, 0]) - np.log(1 - q[0, 1]), -np.log(q[1, 2]) - np.log(1 - q[1, 0])]
  kl = np.sum(p * np.log(p / q), axis=-1)
  weight = 1 - p[[0, 1], labels]
  expected = np.mean(bce) + 6.0 * np.mean(kl * weight)
  loss, metrics = mart_risk(jnp.asarray(clean, jnp.float32),
                                       jnp.asarray(adv, jnp.float32), jnp.asarray(labels),
                                       beta=6.0)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  np.testing.assert_allclose(metrics["weighted_kl"], np.mean(kl * weight), rtol=1e-5)
  # -log(1 - p_k) stays finite (= 100 - log 2 + log(1 + ...)) where p_k rounds to 1.
  confident = boosted_cross_entropy(jnp.array([[0.0, 100.0, 0.0]]), jnp.array([0]))
  assert np.all(np.isfinite(confident)) and float(confident[0]) > 100


def test_trades_risk_matches_a_hand_computation():
  clean = np.array([[2.0, 0.5, -1.0]])
  adv = np.array([[1.0, 1.5, -0.5]])
  p, q = _softmax(clean), _softmax(adv)
  expected = -np.log(p[0, 0]) + 2.0 * np.sum(p * np.log(p / q))
  loss, _ = trades_risk(jnp.asarray(clean, jnp.float32), jnp.asarray(adv, jnp.float32),
                                   jnp.array([0]), beta=2.0)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


@pytest.mark.parametrize("base", base_losses.NAMES)
def test_awp_with_gamma_zero_is_its_base(setup, base):
  awp = methods.build("awp", MODEL, ATTACK, options={"base": base, "gamma": 0.0})
  _assert_same_value_and_grad(awp, methods.build(base, MODEL, ATTACK), setup)


def test_awp_perturbs_each_weight_tensor_by_gamma_times_its_norm(setup):
  params, model_state, batch = setup
  x_adv = pgd_at_attack(params, model_state, batch, jax.random.PRNGKey(1), 0, model=MODEL,
                        **ATTACK)
  base = lambda p: pgd_at_loss(p, model_state, batch, x_adv, model=MODEL)[0]
  grads = jax.grad(base)(params)
  v = awp_lib.weight_perturbation(params, grads, 0.02)
  for w, g, d in zip(jax.tree.leaves(params), jax.tree.leaves(grads), jax.tree.leaves(v)):
    if w.ndim < 2:  # biases and BatchNorm scale / bias stay put
      assert not np.any(d)
      continue
    np.testing.assert_allclose(jnp.linalg.norm(d), 0.02 * jnp.linalg.norm(w), rtol=1e-5)
    cosine = jnp.vdot(d, g) / (jnp.linalg.norm(d) * jnp.linalg.norm(g))
    np.testing.assert_allclose(cosine, 1.0, rtol=1e-5)  # an ascent step along the gradient
  # The AWP gradient is the base gradient at the perturbed weights w + v.
  awp = functools.partial(
      awp_lib.awp, attack=functools.partial(pgd_at_attack, model=MODEL, **ATTACK),
      loss=functools.partial(pgd_at_loss, model=MODEL), gamma=0.02)
  awp_grads = jax.grad(lambda p: awp(p, model_state, batch, jax.random.PRNGKey(1), 0)[0])(params)
  chex.assert_trees_all_close(awp_grads, jax.grad(base)(jax.tree.map(jnp.add, params, v)),
                              rtol=1e-5, atol=1e-7)
  assert not np.allclose(jax.tree.leaves(awp_grads)[1], jax.tree.leaves(grads)[1])


def test_fgsm_rs_takes_one_step_of_alpha_from_a_random_start(setup):
  params, model_state, _ = setup
  images = 0.2 + 0.6 * random_images((16, 4, 4, 1), seed=3)  # no pixel near 0 or 1
  batch = {"image": images, "label": jnp.zeros(16, jnp.int32)}
  x_adv = fgsm_rs_attack(params, model_state, batch, jax.random.PRNGKey(2), 0, model=MODEL,
                         eps=0.1, step_ratio=1.25)
  delta = np.asarray(x_adv - images)
  assert np.all(np.abs(delta) <= 0.1 + 1e-6) and np.all((x_adv >= 0) & (x_adv <= 1))
  # A step of 1.25 eps from delta_0 ~ U(-eps, eps) reaches the boundary with probability 5/8.
  on_boundary = np.mean(np.isclose(np.abs(delta), 0.1, atol=1e-6))
  assert 0.5 < on_boundary < 0.75


# The OOD->ID defense trains a translator in front of a classifier run, not the model itself:
# tests/test_ood_translate.py trains its stage over the 8-device mesh.
@pytest.mark.parametrize("name", [n for n in methods.names() if n != "ood_translate"])
def test_every_objective_trains_one_sharded_step(name):
  assert jax.device_count() == 8
  mesh = sharding.data_mesh()
  tx = optax.sgd(0.1)
  model = TinyAuxNet() if name == "advamd" else MODEL  # AdvAmd needs an auxiliary BN
  state = jax.device_put(state_lib.create(model, tx, (4, 4, 1), seed=0),
                         sharding.replicated(mesh))
  before = jax.device_get(state.params)
  inputs = {}
  if name == "namid":  # two fresh (untrained) estimators suffice for one step
    module = MIEstimator(width=8, conv_features=(4,))
    init = lambda seed: module.init(jax.random.PRNGKey(seed), jnp.zeros((2, 4, 4, 1)),
                                    jnp.zeros((2, 3)))
    inputs = {"estimators": NamidEstimators(module, init(1), init(2))}
  # TinyNet has no insertion points for UAD-AT's uncertainty layers (tests/test_uadat.py steps
  # the method with them).
  options = {"uncertainty": False} if name == "uadat" else None
  objective = methods.build(name, model, ATTACK, eps_warmup_steps=4, inputs=inputs,
                            options=options)
  step = make_train_step(objective, tx, mesh)
  batch = {"image": np.asarray(random_images((16, 4, 4, 1))),
           "label": np.arange(16, dtype=np.int32) % 3}
  state, metrics = step(state, sharding.put_batch(batch, mesh))
  assert int(state.step) == 1 and np.isfinite(float(metrics["loss"]))
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), before, jax.device_get(state.params))
  assert any(jax.tree.leaves(changed))


def test_build_rejects_unknown_names_and_bad_options():
  with pytest.raises(ValueError, match="unknown method 'magic'"):
    methods.build("magic", MODEL, ATTACK)
  with pytest.raises(ValueError, match="needs the training attack"):
    methods.build("trades", MODEL)
  with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
    methods.build("trades", MODEL, ATTACK, options={"beta": -1.0})
  with pytest.raises(ValueError, match="base 'erm' is unknown"):
    methods.build("awp", MODEL, ATTACK, options={"base": "erm"})
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['awp_base'\]"):
    methods.build("awp", MODEL, ATTACK, options={"awp_base": "trades"})
  with pytest.raises(ValueError, match="needs its trained estimators"):
    methods.build("namid", MODEL, ATTACK)


@pytest.mark.parametrize("override, message", [
    ("objective.name=trades objective.trades.beta=-1",
     "objective.trades.beta must be a finite number >= 0"),
    ("objective.name=awp objective.awp.gamma=-0.01",
     "objective.awp.gamma must be a finite number >= 0"),
    ("objective.name=awp objective.awp.base=sgd", "objective.awp.base 'sgd' is unknown"),
    ("objective.name=fgsm_rs objective.fgsm_rs.step_ratio=0",
     "objective.fgsm_rs.step_ratio must be a finite number > 0"),
    ("objective.trades.beta=many", "objective.trades.beta must be a number"),
    ("objective.beta=1", "unknown field 'objective.beta'"),
    ("objective.name=namid objective.namid.estimators=E objective.namid.base=awp",
     "objective.namid.base 'awp' is unknown"),
    ("objective.name=namid objective.namid.estimators=E objective.namid.alpha=-5",
     "objective.namid.alpha must be a finite number >= 0"),
    ("objective.name=namid objective.namid.estimators=E objective.namid.lam=-0.1",
     "objective.namid.lam must be a finite number >= 0"),
    ("objective.name=namid", "objective.namid.estimators: NAMID needs its MI estimators"),
    ("objective.name=adml objective.adml.theta=(1.0,-2.0)",
     "objective.adml.theta must be a tuple of finite numbers >= 0"),
])
def test_config_rejects_bad_objective_options(override, message):
  with pytest.raises(ValueError, match=message):
    config_lib.validate(config_lib.apply_overrides(config_lib.base_config(), override.split()))


def _baseline_configs():
  """(config file, its dataset/model's pgd_at file) for every baseline config but pgd_at (UAD-AT's
  configs are TRADES's with the objective swapped: tests/test_uadat.py checks them; AdvAmd's
  have their own model and attack: tests/test_advamd.py; the OOD->ID defense's describe a
  classifier run: tests/test_ood_translate.py)."""
  return [(path, path.with_name(path.stem[:-len(name)] + "pgd_at.py"))
          for path in sorted(CONFIG_DIR.glob("*.py")) for name in methods.names()
          if name not in ("erm", "pgd_at", "adml", "namid", "uadat", "advamd", "ood_translate")
          and path.stem.endswith("_" + name)]


@pytest.mark.parametrize("path, reference", _baseline_configs(), ids=lambda p: p.stem)
def test_baseline_configs_differ_from_pgd_at_only_in_objective(path, reference):
  """Baselines of a dataset and model share its pgd_at budget; FGSM-RS keeps its short
  cyclic schedule (Wong et al.), CIFAR TRADES and MART their authors' schedules."""
  config = config_lib.validate(config_lib.load_file(str(path))).to_dict()
  base = config_lib.validate(config_lib.load_file(str(reference))).to_dict()
  assert path.stem.endswith(config["objective"]["name"])
  allowed = {"name", "objective"}
  if config["objective"]["name"] == "fgsm_rs" and config["dataset"]["name"] == "cifar10":
    allowed |= {"optim", "num_epochs"}
  method, dataset = config["objective"]["name"], config["dataset"]["name"]
  if method in ("trades", "mart") and dataset.startswith("cifar10"):
    allowed |= {"optim", "num_epochs", "attack"}  # the authors' schedules and step sizes
  if method == "trades" and dataset == "mnist":
    allowed |= {"attack"}  # the authors train TRADES without PGD-AT's eps warm-up
  assert {key for key in config if config[key] != base[key]} <= allowed


@pytest.mark.parametrize("path", [
    # PGD-AT's and TRADES' run in the default suite, the rest (10-25 s each) with --runslow
    p if p.stem in ("mnist_pgd_at", "mnist_trades") else pytest.param(p, marks=pytest.mark.slow)
    for p in sorted(CONFIG_DIR.glob("mnist*.py"))
    # test_namid_stage.py chains NAMID's, test_advamd.py trains AdvAmd's (budgets of their
    # own), test_ood_translate.py the defense in front of a classifier run
    if "namid" not in p.stem and "ood_translate" not in p.stem
    and not p.stem.startswith(("mnist_adv", "mnist_seg"))], ids=lambda p: p.stem)
def test_mnist_smoke_variants_train(path, tmp_path, mnist_dir):  # pylint: disable=unused-argument
  config = config_lib.load_file(f"{path}:smoke")
  state = training.train(config, tmp_path, progress=False)
  assert int(state.step) == 4  # 512 images, batches of 128, 1 epoch
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert rows[-1]["step"] == 4 and np.isfinite(rows[-1]["loss"])
