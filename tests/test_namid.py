"""NAMID, NAMID-T, NAMID-M: their MI term against a reference with boolean indexing, the base
loss at alpha = 0, empty selections, frozen estimators and a sharded train step."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxadv import methods, models
from jaxadv.estimators import MIEstimator, dv_per_sample
from jaxadv.methods import base_losses
from jaxadv.methods.common import masked_cosine, train_forward
from jaxadv.methods.namid.objective import PRESETS, mi_loss, namid_objective, selection_mask
from jaxadv.methods.trades import trades_attack
from jaxadv import sharding
from jaxadv.train import state as state_lib
from jaxadv.train.step import make_train_step

from helpers import TinyNet, random_images

MODEL = TinyNet()
ATTACK = dict(eps=0.3, step_size=0.15, steps=2, norm="linf")
ESTIMATOR = MIEstimator(width=16, conv_features=(8, 16))
SHAPE = (16, 8, 8, 1)


@pytest.fixture(scope="module")
def setup():
  """TinyNet variables, a batch of 16 random 8x8x1 images with 3 classes, and two estimators'
  variables (natural, adversarial) initialised from different keys."""
  images = random_images(SHAPE)
  variables = jax.jit(MODEL.init)(jax.random.PRNGKey(0), images)
  batch = {"image": images, "label": jnp.arange(16, dtype=jnp.int32) % 3}
  init = jax.jit(ESTIMATOR.init)
  natural, adversarial = (init(jax.random.PRNGKey(seed), images, jnp.zeros((16, 3)))
                          for seed in (10, 11))
  return variables["params"], models.model_state(variables), batch, natural, adversarial


def _objective(setup, base="pgd_at", **options):
  _, _, _, natural, adversarial = setup
  return namid_objective(MODEL, ATTACK, estimator=ESTIMATOR, natural_variables=natural,
                         adversarial_variables=adversarial, base=base, **options)


def _run(objective, setup, batch=None):
  """jit(value_and_grad) of objective at setup's parameters: (loss, new_stats, metrics, grads)."""
  params, model_state, default_batch, _, _ = setup
  (loss, (stats, metrics)), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(
      params, model_state, default_batch if batch is None else batch, jax.random.PRNGKey(1),
      jnp.int32(3))
  return loss, stats, metrics, grads


def _reference_mi_loss(setup, x, x_adv, clean_logits, adv_logits, labels, lam):
  """L_mi with the selected samples picked by boolean indexing and numpy cosines."""
  _, _, _, natural, adversarial = setup
  apply = jax.jit(ESTIMATOR.apply)
  estimate = lambda variables, local, logits: np.asarray(
      dv_per_sample(apply(variables, local, logits)), np.float64)
  chosen = ((np.argmax(clean_logits, -1) == labels) & (np.argmax(adv_logits, -1) != labels))
  n_adv, n_clean = (estimate(natural, x, z)[chosen] for z in (adv_logits, clean_logits))
  a_adv, a_clean = (estimate(adversarial, x_adv - x, z)[chosen] for z in (adv_logits, clean_logits))
  cos = lambda a, b: a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
  return abs(1 - cos(n_adv, n_clean)) + abs(1 - cos(a_adv, a_clean)) + lam * np.mean(a_adv - n_adv)


def test_trades_loss_is_mi_term_of_a_reference_with_boolean_indexing(setup):
  params, model_state, batch, _, _ = setup
  loss, _, metrics, _ = _run(_objective(setup, "trades", lam=0.1), setup)
  x = batch["image"]
  x_adv = trades_attack(params, model_state, batch, jax.random.PRNGKey(1), jnp.int32(3),
                        model=MODEL, **ATTACK)
  clean_logits, stats = train_forward(MODEL, params, model_state, x)
  adv_logits, _ = train_forward(MODEL, params, stats, x_adv)
  labels = np.asarray(batch["label"])
  expected = _reference_mi_loss(setup, x, x_adv, np.asarray(clean_logits), np.asarray(adv_logits),
                                labels, 0.1)
  assert 0 < float(metrics["selected"]) < 1
  np.testing.assert_allclose(metrics["mi_loss"], expected, rtol=1e-4)
  np.testing.assert_allclose(loss, metrics["risk"] + 5.0 * metrics["mi_loss"], rtol=1e-6)


@pytest.mark.parametrize("base", base_losses.NAMES)
def test_alpha_zero_is_the_base_loss(setup, base):
  loss, stats, metrics, grads = _run(_objective(setup, base, alpha=0.0), setup)
  assert float(metrics["mi_loss"]) > 0  # the MI term is there, only weighted by 0
  if base == "pgd_at":  # PGD-AT's single forward pass: its batch statistics differ
    reference = methods.build("pgd_at", MODEL, ATTACK)
  else:
    reference = methods.build(base, MODEL, ATTACK, options={"beta": 6.0})
  ref_loss, ref_stats, _, ref_grads = _run(reference, setup)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  chex.assert_trees_all_close(grads, ref_grads, rtol=1e-5, atol=1e-7)
  if base != "pgd_at":
    chex.assert_trees_all_close(stats, ref_stats, rtol=1e-6)


def test_empty_selection_gives_the_risk_and_finite_gradients(setup):
  params, model_state, batch, _, _ = setup
  clean_logits, _ = train_forward(MODEL, params, model_state, batch["image"])
  wrong = dict(batch, label=(jnp.argmax(clean_logits, -1) + 1).astype(jnp.int32) % 3)
  loss, _, metrics, grads = _run(_objective(setup, lam=0.1), setup, wrong)
  assert float(metrics["selected"]) == 0 and float(metrics["mi_loss"]) == 0
  assert float(loss) == float(metrics["risk"])
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_masked_cosine_is_safe_for_empty_and_zero_vectors():
  a, b = jnp.arange(1.0, 5.0), jnp.array([2.0, -1.0, 0.5, 3.0])
  for mask in (jnp.zeros(4, bool), jnp.array([True, False, True, False])):
    zero = jnp.zeros(4)
    value, grad = jax.value_and_grad(masked_cosine, argnums=(0, 1))(zero * mask, b, mask)
    assert float(value) == 0 and all(np.all(np.isfinite(g)) for g in grad)
  mask = jnp.array([True, False, True, True])
  chosen = np.asarray(mask)
  expected = (np.asarray(a)[chosen] @ np.asarray(b)[chosen]
              / (np.linalg.norm(np.asarray(a)[chosen]) * np.linalg.norm(np.asarray(b)[chosen])))
  np.testing.assert_allclose(masked_cosine(a, b, mask), expected, rtol=1e-6)
  np.testing.assert_allclose(masked_cosine(a, 3.0 * a, mask), 1.0, rtol=1e-6)


def test_cosine_terms_vanish_for_identical_inputs(setup):
  _, _, batch, natural, adversarial = setup
  x = batch["image"]
  logits = jax.random.normal(jax.random.PRNGKey(2), (16, 3))
  estimate = lambda variables, local: lambda z: dv_per_sample(ESTIMATOR.apply(variables, local, z))
  mask = jnp.arange(16) % 2 == 0
  noise = 0.1 * jax.random.normal(jax.random.PRNGKey(3), x.shape)
  loss, metrics = mi_loss(estimate(natural, x), estimate(adversarial, noise), logits, logits, mask,
                          lam=0.0)
  np.testing.assert_allclose(loss, 0.0, atol=1e-6)
  np.testing.assert_allclose([metrics["cos_natural"], metrics["cos_adversarial"]], 1.0, rtol=1e-6)


def test_selection_is_clean_correct_and_adversarially_wrong():
  eye = jnp.eye(3)
  clean, adv = eye[jnp.array([0, 0, 1, 2])], eye[jnp.array([0, 1, 1, 0])]
  mask = selection_mask(clean, adv, jnp.array([0, 0, 2, 2]))
  np.testing.assert_array_equal(mask, [False, True, False, True])


def test_estimators_get_zero_gradient_and_the_mi_term_trains_the_model(setup):
  params, model_state, batch, natural, adversarial = setup

  def loss(natural_variables, adversarial_variables, params):
    objective = namid_objective(MODEL, ATTACK, estimator=ESTIMATOR,
                                natural_variables=natural_variables,
                                adversarial_variables=adversarial_variables)
    return objective(params, model_state, batch, jax.random.PRNGKey(1), jnp.int32(3))[0]

  grad_n, grad_a, grad_params = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(natural, adversarial,
                                                                          params)
  for grad in jax.tree.leaves((grad_n, grad_a)):
    assert not np.any(grad)
  _, _, _, base_grads = _run(_objective(setup, alpha=0.0), setup)
  differs = jax.tree.map(lambda a, b: not np.allclose(a, b), grad_params, base_grads)
  assert any(jax.tree.leaves(differs))


def test_presets_and_bad_options():
  assert PRESETS["paper"]["lam"] == 0.1 and PRESETS["code"]["lam"] == 0.0
  assert PRESETS["paper"]["alpha"] == PRESETS["code"]["alpha"] == 5.0
  kwargs = dict(estimator=ESTIMATOR, natural_variables={}, adversarial_variables={})
  with pytest.raises(ValueError, match="unknown base loss 'awp'"):
    namid_objective(MODEL, ATTACK, base="awp", **kwargs)
  with pytest.raises(ValueError, match="dv_variant"):
    namid_objective(MODEL, ATTACK, dv_variant="jsd", **kwargs)
  with pytest.raises(ValueError, match="alpha"):
    namid_objective(MODEL, ATTACK, alpha=-1.0, **kwargs)
  with pytest.raises(ValueError, match="lam"):
    namid_objective(MODEL, ATTACK, lam=float("nan"), **kwargs)


def test_namid_m_code_preset_trains_one_sharded_step(setup):
  assert jax.device_count() == 8
  mesh = sharding.data_mesh()
  tx = optax.sgd(0.1)
  state = jax.device_put(state_lib.create(MODEL, tx, SHAPE[1:], seed=0),
                         sharding.replicated(mesh))
  before = jax.device_get(state.params)
  step = make_train_step(_objective(setup, "mart", **PRESETS["code"]), tx, mesh)
  batch = {"image": np.asarray(random_images(SHAPE)), "label": np.arange(16, dtype=np.int32) % 3}
  state, metrics = step(state, sharding.put_batch(batch, mesh))
  assert int(state.step) == 1 and np.isfinite(float(metrics["loss"]))
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), before, jax.device_get(state.params))
  assert any(jax.tree.leaves(changed))
