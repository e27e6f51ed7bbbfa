"""AdvAmd: mediate samples, the learning ratio, the reductions to AdvProp and ERM, the auxiliary
BN's isolation and shared affine, dense prediction, one sharded step, validation."""

import json
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxadv import config as config_lib
from jaxadv import methods, models, sharding
from jaxadv import train as training
from jaxadv.attacks import losses, pgd
from jaxadv.methods.advamd import mediate, ratio
from jaxadv.models import BoundModel, apply_model
from jaxadv.models.layers import tie_affine
from jaxadv.train import state as state_lib
from jaxadv.train.step import make_train_step

from helpers import TinyAuxNet, random_images, tiny_config

ATTACK = dict(eps=0.1, step_size=0.05, steps=3, norm="linf")
MODEL = TinyAuxNet()
DENSE = TinyAuxNet(dense=True)
KEY, STEP = jax.random.PRNGKey(1), jnp.int32(3)


def _setup(model, dense=False):
  images = random_images((8, 6, 6, 1))
  variables = model.init(jax.random.PRNGKey(0), images)
  labels = (jnp.arange(8 * 36).reshape(8, 6, 6) % 3 if dense else jnp.arange(8) % 3)
  return variables["params"], models.model_state(variables), {"image": images,
                                                             "label": labels.astype(jnp.int32)}


def _run(objective, params, model_state, batch):
  """(loss, model_state, metrics, grads) of `objective`, jitted."""
  (loss, (state, metrics)), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(
      params, model_state, batch, KEY, STEP)
  return loss, state, metrics, grads


def _build(options, model=MODEL, attack_mode="eval"):
  return methods.build("advamd", model, ATTACK, attack_mode=attack_mode, options=options)


# --- mediate samples and the learning ratio -------------------------------------------------

def test_mediate_samples_lie_between_x_and_x_adv_with_lambdas_from_the_schedule():
  x, x_adv = random_images((64, 4, 4, 1), seed=0), random_images((64, 4, 4, 1), seed=1)
  lam = mediate.sample_lambdas(jax.random.PRNGKey(0), (0.0, 0.5, 1.0), 64)
  assert set(np.asarray(lam).tolist()) == {0.0, 0.5, 1.0}
  x_m = mediate.interpolate(x, x_adv, lam)
  for value, target in ((0.0, x), (1.0, x_adv), (0.5, (x + x_adv) / 2)):
    rows = np.asarray(lam) == value
    np.testing.assert_allclose(x_m[rows], target[rows], atol=1e-7)


def test_learning_ratio_has_batch_mean_one_no_gradient_and_each_sign_orders_it():
  logits = jax.random.normal(jax.random.PRNGKey(0), (32, 5)) * 3
  labels = jnp.arange(32) % 5
  p = np.asarray(ratio.true_probability(logits, labels))
  for form in ("linear", "exp"):
    up = ratio.learning_ratio(logits, labels, form=form, sign=1)
    down = ratio.learning_ratio(logits, labels, form=form, sign=-1)
    np.testing.assert_allclose([up.mean(), down.mean()], [1.0, 1.0], rtol=1e-5)
    order = np.argsort(p)  # most vulnerable (lowest p[y]) first
    assert np.all(np.diff(np.asarray(up)[order]) <= 1e-6)
    assert np.all(np.diff(np.asarray(down)[order]) >= -1e-6)
  np.testing.assert_allclose(ratio.learning_ratio(logits, labels, form="linear"),
                             (1 - p) / (1 - p).mean(), rtol=1e-5)
  grad = jax.grad(lambda z: jnp.sum(ratio.learning_ratio(z, labels) * z[:, 0]))(logits)
  np.testing.assert_allclose(grad[:, 0], ratio.learning_ratio(logits, labels), rtol=1e-6)
  assert np.all(np.asarray(ratio.learning_ratio(logits, labels, form="none")) == 1)
  certain = jnp.where(jax.nn.one_hot(labels, 5) > 0, 100.0, -100.0)  # v = 0 everywhere
  np.testing.assert_allclose(ratio.learning_ratio(certain, labels), np.ones(32))


def test_true_probability_averages_the_pixels_of_dense_outputs():
  logits = jnp.log(jnp.array([[[[0.9, 0.1], [0.3, 0.7]]]]))  # (1, 1, 2, 2)
  np.testing.assert_allclose(ratio.true_probability(logits, jnp.array([[[0, 0]]])), [0.6],
                             rtol=1e-6)


# --- reductions -----------------------------------------------------------------------------

def _advprop_reference(params, model_state, batch, key, step):
  """AdvProp (Xie et al., 2020) written out: PGD on CE through the aux BN in eval mode, then
  CE of the clean batch through the main BN plus CE of x_adv through the aux BN."""
  del step
  variables = {"params": params, **model_state}
  attacker = BoundModel(MODEL, jax.lax.stop_gradient(variables), "eval", "aux")
  x_adv = pgd(attacker, batch["image"], batch["label"], key, **ATTACK)
  clean, state = apply_model(MODEL, variables, batch["image"], "train")
  adv, state = apply_model(MODEL, {"params": params, **state}, x_adv, "train", "aux")
  loss = (jnp.mean(losses.cross_entropy(clean, batch["label"]))
          + jnp.mean(losses.cross_entropy(adv, batch["label"])))
  return loss, (state, {})


def test_without_mediate_samples_and_ratios_the_loss_is_advprops():
  params, model_state, batch = _setup(MODEL)
  got = _run(_build({"mediate_weight": 0.0, "ratio": "none"}), params, model_state, batch)
  want = _run(_advprop_reference, params, model_state, batch)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
  chex.assert_trees_all_close(got[1], want[1], rtol=1e-6)  # both BNs' statistics
  chex.assert_trees_all_close(got[3], want[3], rtol=1e-5, atol=1e-7)


def test_with_the_aux_terms_off_it_is_erm_and_runs_no_attack():
  params, model_state, batch = _setup(MODEL)
  got = _run(_build({"mediate_weight": 0.0, "adversarial_weight": 0.0}), params, model_state,
             batch)
  want = _run(methods.build("erm", MODEL), params, model_state, batch)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-7)
  chex.assert_trees_all_close(got[1], want[1])
  chex.assert_trees_all_close(got[3], want[3], rtol=1e-6)
  aux = jax.tree.leaves(got[3]["AuxBatchNorm_0"]["aux"])
  assert all(np.all(np.asarray(leaf) == 0) for leaf in aux)  # no aux forward at all
  jaxpr = str(jax.make_jaxpr(_build({"mediate_weight": 0.0, "adversarial_weight": 0.0}))(
      params, model_state, batch, KEY, STEP))
  assert "while" not in jaxpr and "scan" not in jaxpr


def test_the_full_loss_is_the_weighted_sum_of_its_terms():
  params, model_state, batch = _setup(MODEL)
  loss, _, metrics, _ = _run(_build({"adversarial_weight": 0.5, "mediate_weight": 2.0}),
                             params, model_state, batch)
  np.testing.assert_allclose(
      loss, metrics["clean_loss"] + 0.5 * metrics["adv_loss"] + 2.0 * metrics["mediate_loss"],
      rtol=1e-6)
  for mode in ("interpolate", "iterate"):
    _, _, metrics, _ = _run(_build({"mediate": mode, "iterate_steps": 1}), params, model_state,
                            batch)
    assert np.isfinite(float(metrics["mediate_loss"]))


# --- the auxiliary BatchNorm ----------------------------------------------------------------

def test_inference_never_reads_the_aux_variables():
  params, model_state, batch = _setup(MODEL)
  variables = {"params": params, **model_state}
  scramble = lambda tree: {**tree, "AuxBatchNorm_0": {**tree["AuxBatchNorm_0"], "aux": jax.tree.map(
      lambda v: v * 7.0 + 3.0, tree["AuxBatchNorm_0"]["aux"])}}
  changed = {name: scramble(value) for name, value in variables.items()}
  same = apply_model(MODEL, variables, batch["image"], "eval")[0]
  np.testing.assert_array_equal(apply_model(MODEL, changed, batch["image"], "eval")[0], same)
  _, state, _, _ = _run(_build({}), params, model_state, batch)
  main = lambda s: s["batch_stats"]["AuxBatchNorm_0"]["main"]
  aux = lambda s: s["batch_stats"]["AuxBatchNorm_0"]["aux"]
  assert not np.allclose(aux(state)["mean"], aux(model_state)["mean"])   # aux saw x_adv, x_m
  assert not np.allclose(main(state)["mean"], main(model_state)["mean"])  # main saw x


def test_share_affine_runs_the_aux_route_with_the_main_scale_and_bias():
  params, model_state, batch = _setup(MODEL)
  params = jax.tree_util.tree_map_with_path(  # make the two affine sets differ
      lambda path, v: v + 0.5 if "aux" in jax.tree_util.keystr(path) else v, params)
  tied = tie_affine(params)
  for name in ("scale", "bias"):
    np.testing.assert_array_equal(tied["AuxBatchNorm_0"]["aux"][name],
                                  params["AuxBatchNorm_0"]["main"][name])
  chex.assert_trees_all_equal(tied["Conv_0"], params["Conv_0"])
  shared, _, _, grads = _run(_build({"share_affine": True}), params, model_state, batch)
  separate = _run(_build({}), params, model_state, batch)[0]
  assert not np.isclose(shared, separate)
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads["AuxBatchNorm_0"]["aux"]))
  assert all(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads["AuxBatchNorm_0"]["main"]))


# --- dense prediction -----------------------------------------------------------------------

def test_the_objective_takes_per_pixel_labels_and_the_attack_raises_the_mean_pixel_loss():
  params, model_state, batch = _setup(DENSE, dense=True)
  loss, _, metrics, grads = _run(_build({"mediate_weight": 0.0, "ratio": "none"}, DENSE),
                                 params, model_state, batch)
  variables = {"params": params, **model_state}
  clean = apply_model(DENSE, variables, batch["image"], "train")[0]
  np.testing.assert_allclose(metrics["clean_loss"], jnp.mean(
      losses.cross_entropy(clean, batch["label"])), rtol=1e-6)
  assert metrics["adv_loss"] > metrics["clean_loss"]
  assert np.isfinite(float(loss)) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


# --- sharding, validation -------------------------------------------------------------------

def test_sharded_step_equals_the_single_device_step():
  assert jax.device_count() == 8
  _, _, batch = _setup(MODEL)
  objective = _build({"ratio": "exp", "share_affine": True})
  tx = optax.sgd(0.1)
  results = []
  for mesh in (sharding.data_mesh(), sharding.data_mesh(jax.devices()[:1])):
    state = jax.device_put(state_lib.create(MODEL, tx, (6, 6, 1), seed=0),
                           sharding.replicated(mesh))
    state, metrics = make_train_step(objective, tx, mesh)(
        state, sharding.put_batch(jax.tree.map(np.asarray, batch), mesh))
    results.append((jax.device_get(state.params), jax.device_get(state.model_state),
                    jax.device_get(metrics)))
  (params, stats, metrics), (params1, stats1, metrics1) = results
  np.testing.assert_allclose(metrics["loss"], metrics1["loss"], rtol=1e-5)
  chex.assert_trees_all_close(params, params1, rtol=1e-4, atol=1e-6)
  chex.assert_trees_all_close(stats, stats1, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("options, message", [
    ({"lambdas": (0.5, 1.5)}, "lambdas must lie in \\[0, 1\\]"),
    ({"lambdas": ()}, "lambdas must be a non-empty sequence"),
    ({"mediate_weight": -1.0}, "mediate_weight must be a finite number >= 0"),
    ({"ratio": "square"}, "ratio 'square' is unknown"),
    ({"ratio_sign": 0}, "ratio_sign 0 is unknown"),
    ({"ratio_temperature": 0.0}, "ratio_temperature must be a finite number > 0"),
    ({"mediate": "between"}, "mediate 'between' is unknown"),
    ({"iterate_steps": 0}, "iterate_steps must be an int >= 1"),
])
def test_bad_options_are_value_errors_naming_the_field(options, message):
  with pytest.raises(ValueError, match=message):
    _build(options)


def test_aux_terms_need_a_model_with_aux_bn():
  with pytest.raises(ValueError, match="model.aux_bn must be True"):
    _build({}, TinyAuxNet(aux_bn=False))
  _build({"adversarial_weight": 0.0, "mediate_weight": 0.0}, TinyAuxNet(aux_bn=False))
  with pytest.raises(ValueError, match="model.aux_bn must be True"):
    tiny_config(**{"objective.name": "advamd", "model.name": "preact_resnet18"})
  with pytest.raises(ValueError, match="iterate_steps must be < attack.steps"):
    tiny_config(**{"objective.name": "advamd", "model.name": "preact_resnet18",
                   "model.aux_bn": True, "objective.advamd.mediate": "iterate",
                   "objective.advamd.iterate_steps": 2})


# --- configs --------------------------------------------------------------------------------

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs"


def _config(name, variant=""):
  return config_lib.validate(config_lib.load_file(f"{CONFIGS / name}.py:{variant}")).to_dict()


def _differing(a, b, prefix=""):
  """Dotted paths of the leaves where the dicts a and b differ."""
  if not isinstance(a, dict):
    return set() if a == b else {prefix[:-1]}
  return set().union(*(_differing(a[k], b[k], f"{prefix}{k}.") for k in a))


@pytest.mark.parametrize("family, erm", [("mnist", "mnist_advamd_erm"),
                                         ("mnist_seg", "mnist_seg_erm"),
                                         ("cifar10_resnet18", None)])
def test_the_baselines_differ_from_advamd_only_in_their_switches(family, erm):
  variant = "jpeg,cpu" if family.startswith("cifar10") else ""
  advamd = _config(f"{family}_advamd", variant)
  advprop = _config(f"{family}_advprop", variant)
  assert _differing(advprop, advamd) == {"name", "objective.advamd.mediate_weight",
                                         "objective.advamd.ratio"}
  assert advprop["objective"]["advamd"]["mediate_weight"] == 0
  if erm:
    assert _differing(_config(erm), advamd) == {"name", "objective.name", "model.aux_bn"}
  for word in ("no_mediate", "no_ratio", "ratio_down", "share_affine", "iterate"):
    assert _config("mnist_advamd", word)["name"] == f"mnist_advamd_{word}"


@pytest.mark.parametrize("name", [
    # about 1 min on 2 cores (PreActResNet-18's compilation): run with --runslow; the
    # segmentation smoke run keeps AdvAmd's path through training and evaluation in the suite
    pytest.param("mnist_advamd", marks=pytest.mark.slow), "mnist_seg_advamd"])
def test_the_smoke_variants_train_and_evaluate(name, tmp_path, mnist_dir):  # pylint: disable=unused-argument
  config = config_lib.load_file(f"{CONFIGS / name}.py:smoke")
  record = training.train_and_evaluate(config, tmp_path, progress=False)
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert rows[-1]["step"] == 2  # 128 images, batches of 64
  assert {"clean_loss", "adv_loss", "mediate_loss", "ratio_max"} <= set(rows[-1])
  assert record == json.loads((tmp_path / "eval.json").read_text())
  if name == "mnist_seg_advamd":  # pixel accuracy and mIoU, clean and under PGD-2 (which
    # ascends the mean pixel loss: after 2 small steps of a barely trained net, the accuracy
    # may even rise)
    assert record["task"] == "segmentation"
    for metric in ("pixel_accuracy", "miou"):
      assert all(0 <= record[metric][name] <= 100 for name in ("clean", "pgd2"))
  else:
    assert 0 <= record["accuracy"]["pgd2"] <= record["accuracy"]["clean"] <= 100
