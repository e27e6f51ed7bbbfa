"""UAD-AT: the uncertainty layer's maths, the refined reference, the matching risk, the gradient
alignment, the reductions to TRADES, one sharded step, validation and the configs."""

import functools
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxadv import config as config_lib
from jaxadv import methods, models, sharding
from jaxadv.methods.common import train_forward
from jaxadv.methods.uadat import SWITCHES, alignment, reference
from jaxadv.methods.uadat.objective import matching_risk, mixture_logits, reference_attack
from jaxadv.models import uncertainty as uncertainty_lib
from jaxadv.train import state as state_lib
from jaxadv.train.step import make_train_step

from helpers import TinyNet, random_images

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs"
ATTACK = dict(eps=0.1, step_size=0.05, steps=2, norm="linf")
# Every component off: TRADES.
OFF = dict(uncertainty=False, distributional=False, refine=False, match_each=False, align=False)
MODEL = models.get("small_cnn", num_classes=3, width=4, hidden=8)  # points: stage1, stage2


@pytest.fixture(scope="module")
def setup():
  """Initial variables of a narrow SmallCNN and a batch of 16 random 8x8x1 images, 3 classes."""
  images = random_images((16, 8, 8, 1))
  variables = jax.jit(MODEL.init)(jax.random.PRNGKey(0), images)
  batch = {"image": images, "label": jnp.arange(16, dtype=jnp.int32) % 3}
  return variables["params"], models.model_state(variables), batch


def _run(objective, params, model_state, batch, key=jax.random.PRNGKey(1), step=jnp.int32(5)):
  """(loss, model_state, metrics, grads) of `objective`, jitted."""
  (loss, (new_state, metrics)), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(
      params, model_state, batch, key, step)
  return loss, new_state, metrics, grads


# --- the uncertainty layer ------------------------------------------------------------------

def test_resampling_matches_a_numpy_reading_of_dsu():
  z = jax.random.normal(jax.random.PRNGKey(0), (5, 3, 4, 2)) * 2.0 + 1.0
  key = jax.random.PRNGKey(7)
  out = uncertainty_lib.resample_statistics(z, key, p=1.0, noise_scale=0.5)
  _, mean_key, std_key = jax.random.split(key, 3)
  n_mu = np.asarray(jax.random.normal(mean_key, (5, 2)))
  n_sigma = np.asarray(jax.random.normal(std_key, (5, 2)))
  x = np.asarray(z, np.float64)
  mu = x.mean(axis=(1, 2))
  sigma = np.sqrt(x.var(axis=(1, 2), ddof=1) + 1e-6)           # unbiased, as torch.var
  s_mu = np.sqrt(mu.var(axis=0, ddof=1) + 1e-6)
  s_sigma = np.sqrt(sigma.var(axis=0, ddof=1) + 1e-6)
  new_mu, new_sigma = mu + 0.5 * n_mu * s_mu, sigma + 0.5 * n_sigma * s_sigma
  expected = (new_sigma[:, None, None] * (x - mu[:, None, None]) / sigma[:, None, None]
              + new_mu[:, None, None])
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  # the resampled map has the statistics drawn: its mean is μ'
  np.testing.assert_allclose(np.asarray(out).mean(axis=(1, 2)), new_mu, rtol=1e-4, atol=1e-5)


def test_the_coin_is_one_per_call_with_probability_p():
  z = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 3, 2))
  resample = jax.jit(functools.partial(uncertainty_lib.resample_statistics, p=0.3))
  active = [not np.array_equal(resample(z, jax.random.PRNGKey(seed)), z) for seed in range(400)]
  assert 0.22 < np.mean(active) < 0.38
  for p, expected in ((0.0, True), (1.0, False)):
    same = uncertainty_lib.resample_statistics(z, jax.random.PRNGKey(3), p=p)
    assert np.array_equal(same, z) == expected


def test_zero_noise_scale_is_the_identity_up_to_rounding():
  z = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 3, 2))
  out = uncertainty_lib.resample_statistics(z, jax.random.PRNGKey(1), p=1.0, noise_scale=0.0)
  np.testing.assert_allclose(out, z, rtol=1e-5, atol=1e-6)


def test_guided_noise_follows_the_clean_to_adversarial_shift():
  z = jax.random.normal(jax.random.PRNGKey(0), (6, 3, 3, 4))
  mu, sigma = uncertainty_lib.feature_statistics(z)
  clean = (mu + jax.random.normal(jax.random.PRNGKey(1), mu.shape),
           sigma + 0.1 * jax.random.normal(jax.random.PRNGKey(2), sigma.shape))
  for seed in range(5):
    out = uncertainty_lib.resample_statistics(z, jax.random.PRNGKey(seed), p=1.0, clean=clean)
    new_mu, _ = uncertainty_lib.feature_statistics(out)
    moved, shift = np.asarray(new_mu - mu), np.asarray(mu - clean[0])
    assert np.all(np.sign(moved) == np.sign(shift))
  noise = jax.random.normal(jax.random.PRNGKey(3), (1000,))
  shift = jnp.repeat(jnp.array([1.0, -1.0, 0.0, 2.0]), 250)
  guided = uncertainty_lib.guided_noise(noise, shift)
  np.testing.assert_array_equal(jnp.abs(guided), jnp.abs(noise))  # a half-normal, no rejection
  np.testing.assert_array_equal(guided[500:750], noise[500:750])  # plain where shift is 0
  assert np.all(guided[:250] >= 0) and np.all(guided[250:500] <= 0)


def test_the_layer_needs_two_samples_and_two_positions():
  with pytest.raises(ValueError, match="B >= 2 and at least 2 spatial positions"):
    uncertainty_lib.resample_statistics(jnp.ones((1, 2, 2, 3)), jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="B >= 2 and at least 2 spatial positions"):
    uncertainty_lib.resample_statistics(jnp.ones((4, 1, 1, 3)), jax.random.PRNGKey(0))


@pytest.mark.parametrize("field, value, message", [
    ("p", 1.5, "p must be a probability in \\[0, 1\\]"),
    ("p", -0.1, "p must be a probability"),
    ("noise_scale", -1.0, "noise_scale must be a finite number >= 0"),
    ("points", "", "points must be 'last', 'all' or comma-separated"),
    ("rng_stream", "", "rng_stream: the uncertainty layer needs a named rng stream"),
    ("rng_stream", "params", "rng_stream: the uncertainty layer needs a named rng stream"),
])
def test_bad_layer_constants_are_value_errors_naming_the_field(field, value, message):
  with pytest.raises(ValueError, match=message):
    models.Uncertainty(**{field: value})


# --- the reference, the matching, the alignment ----------------------------------------------

def _softmax(z):
  e = np.exp(z - z.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def test_refined_reference_matches_a_hand_computation_with_boolean_indexing():
  logits = np.array([[3.0, 0.0, 0.0],    # y 0, correct
                     [2.0, 1.0, 0.0],    # y 0, correct
                     [0.0, 2.0, 0.0],    # y 0, wrong: mean of rows 0, 1
                     [0.0, 0.0, 1.0],    # y 1, wrong: no correct point of class 1 -> smoothed
                     [0.0, 0.5, 2.0]],   # y 2, correct
                    np.float32)
  labels = np.array([0, 0, 0, 1, 2])
  p = _softmax(logits.astype(np.float64))
  expected = p.copy()
  expected[2] = p[[0, 1]].mean(axis=0)
  expected[3] = [0.1 / 3, 0.9 + 0.1 / 3, 0.1 / 3]
  ref, refined = reference.refined_reference(jnp.asarray(logits), jnp.asarray(labels),
                                             smoothing=0.1)
  np.testing.assert_allclose(ref, expected, rtol=1e-6)
  np.testing.assert_array_equal(refined, [False, False, True, True, False])
  np.testing.assert_allclose(np.sum(ref, axis=-1), 1.0, rtol=1e-6)


def test_the_reference_carries_gradient_only_through_the_own_clean_softmax():
  logits = jnp.array([[3.0, 0.0], [0.0, 1.0]])  # both class 0: row 1 takes row 0's softmax
  labels = jnp.array([0, 0])
  grad = jax.grad(lambda z: reference.refined_reference(z, labels, smoothing=0.0)[0][1, 0])(
      logits)
  np.testing.assert_array_equal(grad, 0.0)
  grad = jax.grad(lambda z: reference.refined_reference(z, labels, smoothing=0.0)[0][0, 0])(
      logits)
  assert float(grad[0, 0]) > 0


def test_kl_is_nonnegative_zero_at_the_reference_and_finite_for_zero_entries():
  rng = np.random.default_rng(0)
  for _ in range(20):
    logits = jnp.asarray(rng.normal(size=(8, 5)) * 4, jnp.float32)
    ref = jnp.asarray(_softmax(rng.normal(size=(8, 5)) * 4), jnp.float32)
    ref = ref.at[:2].set(jax.nn.one_hot(jnp.array([1, 3]), 5))  # exact zeros
    kl = reference.kl_to_reference(ref, logits)
    assert np.all(np.isfinite(kl)) and np.all(kl >= -1e-6)
  np.testing.assert_allclose(reference.kl_to_reference(jax.nn.softmax(logits), logits), 0.0,
                             atol=1e-6)
  one_hot = jax.nn.one_hot(jnp.array([2]), 5)
  grad = jax.grad(lambda z: reference.kl_to_reference(one_hot, z).sum())(logits[:1])
  assert np.all(np.isfinite(grad))
  np.testing.assert_allclose(reference.kl_to_reference(one_hot, logits[:1]),
                             -jax.nn.log_softmax(logits[:1])[:, 2], rtol=1e-6)  # = CE


def test_matching_each_sample_bounds_matching_the_mixture():
  rng = np.random.default_rng(1)
  clean = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
  samples = [jnp.asarray(rng.normal(size=(6, 4)), jnp.float32) for _ in range(3)]
  labels = jnp.arange(6) % 4
  for ref in (None, reference.refined_reference(clean, labels, smoothing=0.1)[0]):
    each = matching_risk(clean, samples, labels, beta=6.0, reference=ref, match_each=True)[1]
    mixed = matching_risk(clean, samples, labels, beta=6.0, reference=ref, match_each=False)[1]
    assert 0 <= float(mixed["kl"]) < float(each["kl"])  # Jensen: KL is convex in q
  np.testing.assert_allclose(jnp.exp(mixture_logits(samples)),
                             np.mean([_softmax(np.asarray(s)) for s in samples], axis=0),
                             rtol=1e-5)


def test_alignment_vanishes_when_x_adv_is_x_and_trains_by_double_backprop(setup):
  params, model_state, batch = setup
  x, labels = batch["image"], batch["label"]
  same = alignment.gradient_alignment(MODEL, params, model_state, x, x, labels)
  assert abs(float(same)) < 1e-6
  x_adv = jnp.clip(x + 0.1 * jnp.sign(random_images(x.shape, seed=5) - 0.5), 0, 1)
  for through_clean in (False, True):
    term = lambda p, through=through_clean: alignment.gradient_alignment(
        MODEL, p, model_state, x, x_adv, labels, through_clean=through)
    value, grads = jax.jit(jax.value_and_grad(term))(params)
    assert 0 < float(value) <= 2
    leaves = jax.tree.leaves(grads)
    assert all(np.all(np.isfinite(g)) for g in leaves) and any(np.any(g != 0) for g in leaves)
  # one row's gradient is the hand-made ∇_x CE of that row alone
  grad = alignment.input_gradient(MODEL, params, model_state, x, labels)
  single = jax.grad(lambda row: optax.softmax_cross_entropy_with_integer_labels(
      MODEL.apply({"params": params}, row), labels[3:4]).sum())(x[3:4])
  np.testing.assert_allclose(grad[3:4], single, rtol=1e-5, atol=1e-8)


def test_alignment_term_is_zero_in_the_objective_when_eps_is_zero(setup):
  objective = methods.build("uadat", MODEL, dict(ATTACK, eps=0.0))
  _, _, metrics, _ = _run(objective, *setup)
  assert abs(float(metrics["alignment"])) < 1e-6


def test_reference_attack_stays_in_the_ball_and_raises_the_kl_from_the_reference(setup):
  params, model_state, batch = setup
  x = batch["image"]
  x_adv = reference_attack(params, model_state, batch, jax.random.PRNGKey(4), 0, model=MODEL,
                           smoothing=0.1, **ATTACK)
  assert np.all(np.abs(x_adv - x) <= ATTACK["eps"] + 1e-6) and np.all((x_adv >= 0) & (x_adv <= 1))
  logits = models.BoundModel(MODEL, {"params": params, **model_state}, "batch_stats")
  ref, _ = reference.refined_reference(logits(x), batch["label"], smoothing=0.1)
  kl = lambda z: float(jnp.mean(reference.kl_to_reference(ref, logits(z))))
  assert kl(x_adv) > kl(x)


# --- the objective: reductions, components, sharding ---------------------------------------

def _trades(setup, **attack):
  return _run(methods.build("trades", MODEL, dict(ATTACK, **attack)), *setup)


def test_every_switch_off_is_exactly_trades(setup):
  expected = _trades(setup)
  got = _run(methods.build("uadat", MODEL, ATTACK, options=OFF), *setup)
  assert float(got[0]) == float(expected[0])
  chex.assert_trees_all_equal(got[1], expected[1])
  chex.assert_trees_all_equal(got[3], expected[3])
  assert {k: float(v) for k, v in got[2].items()} == {k: float(v) for k, v in expected[2].items()}


@pytest.mark.parametrize("options", [
    dict(points="all"),
    dict(points="stage1", match_each=False),
    dict(points="all", guided=True),
])
def test_zero_uncertainty_is_trades_to_float_tolerance(setup, options):
  """Σ = 0 (noise_scale 0) with the layers always on and S = 2 samples: every sample is the
  point adversary, so the loss and gradient are TRADES'."""
  expected = _trades(setup)
  options = dict(OFF, uncertainty=True, distributional=True, samples=2, p=1.0,
                 noise_scale=0.0, **options)
  got = _run(methods.build("uadat", MODEL, ATTACK, options=options), *setup)
  np.testing.assert_allclose(got[0], expected[0], rtol=1e-6)
  chex.assert_trees_all_close(got[3], expected[3], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_each_component_changes_the_loss(setup):
  full = dict(p=1.0, points="all", samples=3)
  loss = lambda options: float(jax.jit(methods.build("uadat", MODEL, ATTACK, options=options))(
      *setup, jax.random.PRNGKey(1), jnp.int32(5))[0])
  losses = {"full": loss(full), "guided": loss(dict(full, guided=True))}
  for switch in SWITCHES:
    losses[switch] = loss(dict(full, **{switch: False}))
  assert len(set(losses.values())) == len(losses), losses


def test_the_samples_are_distinct_and_their_noise_comes_from_the_step_key(setup):
  params, model_state, batch = setup
  layered = MODEL.clone(uncertainty=models.Uncertainty(points="all", p=1.0))
  run = jax.jit(lambda key: models.apply_model(layered, {"params": params}, batch["image"],
                                               "train", rngs={"uncertainty": key},
                                               resample=True)[0])
  a, b = run(jax.random.PRNGKey(0)), run(jax.random.PRNGKey(1))
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(a, run(jax.random.PRNGKey(0)))
  first = _run(methods.build("uadat", MODEL, ATTACK), *setup, key=jax.random.PRNGKey(3))
  again = _run(methods.build("uadat", MODEL, ATTACK), *setup, key=jax.random.PRNGKey(3))
  assert float(first[0]) == float(again[0])


@pytest.mark.slow
def test_batchnorm_state_takes_the_clean_and_every_sampled_pass():
  model = models.get("resnet18", num_classes=3, width=4, stage_sizes=(1, 1))
  images = random_images((8, 8, 8, 3))
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), images)
  params, state = variables["params"], models.model_state(variables)
  batch = {"image": images, "label": jnp.arange(8, dtype=jnp.int32) % 3}
  objective = methods.build("uadat", model, ATTACK, options=dict(
      OFF, uncertainty=True, distributional=True, noise_scale=0.0, p=1.0))
  # A fixed x_adv stands in for the attack: its sign steps round differently in two compiled
  # programs (a separate `trades_attack` call moved 1% of the pixels by up to 2 eps), and this
  # test is about the BatchNorm state, not the attack.
  x_adv = jnp.clip(images + ATTACK["eps"] * jnp.sign(
      jax.random.normal(jax.random.PRNGKey(2), images.shape)), 0.0, 1.0)
  got = _run(functools.partial(objective, attack=lambda *_: x_adv), params, state, batch)
  expected = state
  for x in (images, x_adv, x_adv):  # clean, then S = 2 adversarial passes
    _, expected = train_forward(model, params, expected, x)
  chex.assert_trees_all_close(got[1], expected, rtol=1e-4, atol=1e-6)
  assert set(got[1]) == {"batch_stats"}  # no statistics collection leaks into the state


def test_sharded_step_equals_the_single_device_step(setup):
  assert jax.device_count() == 8
  params, model_state, batch = setup
  objective = methods.build("uadat", MODEL, ATTACK, eps_warmup_steps=4,
                            options=dict(points="all", guided=True, p=1.0))
  tx = optax.sgd(0.1)
  results = []
  for mesh in (sharding.data_mesh(), sharding.data_mesh(jax.devices()[:1])):
    state = jax.device_put(state_lib.create(MODEL, tx, (8, 8, 1), seed=0),
                           sharding.replicated(mesh))
    step = make_train_step(objective, tx, mesh)
    state, metrics = step(state, sharding.put_batch(jax.tree.map(np.asarray, batch), mesh))
    results.append((jax.device_get(state.params), jax.device_get(metrics)))
  (sharded, sharded_metrics), (single, single_metrics) = results
  assert np.isfinite(float(sharded_metrics["loss"]))
  np.testing.assert_allclose(sharded_metrics["loss"], single_metrics["loss"], rtol=1e-5)
  chex.assert_trees_all_close(sharded, single, rtol=1e-4, atol=1e-6)
  assert any(jax.tree.leaves(jax.tree.map(lambda a, b: not np.allclose(a, b), params, single)))


# --- validation and configs ----------------------------------------------------------------

@pytest.mark.parametrize("options, message", [
    ({"p": 1.5}, "p must be a probability in \\[0, 1\\]"),
    ({"p": -0.5}, "p must be a probability in \\[0, 1\\]"),
    ({"samples": 0}, "samples must be an int >= 1"),
    ({"beta": -1.0}, "beta must be a finite number >= 0"),
    ({"lam": -0.2}, "lam must be a finite number >= 0"),
    ({"smoothing": 1.5}, "smoothing must lie in \\[0, 1\\]"),
    ({"noise_scale": -1.0}, "noise_scale must be a finite number >= 0"),
    ({"rng_stream": ""}, "rng_stream: the uncertainty layer needs a named rng stream"),
    ({"points": "stage3"}, "points \\['stage3'\\] are not insertion points of the model"),
    ({"points": "stage1,,stage2"}, "points must be 'last', 'all' or comma-separated"),
])
def test_build_rejects_bad_options_naming_the_field(options, message):
  with pytest.raises(ValueError, match=message):
    methods.build("uadat", MODEL, ATTACK, options=options)


def test_a_model_without_insertion_points_is_rejected_unless_the_layer_is_off():
  with pytest.raises(ValueError, match="points: the model has no uncertainty insertion points"):
    methods.build("uadat", TinyNet(), ATTACK)
  methods.build("uadat", TinyNet(), ATTACK, options={"uncertainty": False})
  methods.build("uadat", TinyNet(), ATTACK, options={"uncertainty": False, "rng_stream": ""})


@pytest.mark.parametrize("overrides, message", [
    ("objective.uadat.p=1.5", "objective.uadat.p must be a probability in \\[0, 1\\]"),
    ("objective.uadat.samples=0", "objective.uadat.samples must be an int >= 1"),
    ("objective.uadat.beta=-6.0", "objective.uadat.beta must be a finite number >= 0"),
    ("objective.uadat.lam=-1.0", "objective.uadat.lam must be a finite number >= 0"),
    ("objective.uadat.rng_stream=''", "objective.uadat.rng_stream: the uncertainty layer needs"),
    ("model.name=wrn34_10 objective.uadat.points=stage4",
     "objective.uadat.points \\['stage4'\\] are not insertion points of the model, whose points "
     "are \\['stage1', 'stage2', 'stage3'\\] .* \\(model 'wrn34_10'\\)"),
    ("objective.uadat.points=stage3",
     "objective.uadat.points \\['stage3'\\] .* \\(model 'small_cnn'\\)"),
    ("model.name=vit_tiny", "objective.uadat.points: the model has no uncertainty insertion "
                            "points.* \\(model 'vit_tiny'\\)"),
])
def test_bad_config_fails_when_the_config_loads(overrides, message):
  config = config_lib.apply_overrides(config_lib.base_config(),
                                      ["objective.name=uadat", *overrides.split()])
  with pytest.raises(ValueError, match=message):
    config_lib.validate(config)


def test_every_model_with_insertion_points_validates_both_placements():
  for name in ("small_cnn", "resnet18", "preact_resnet18", "wrn34_10", "wrn28_10"):
    for points in ("last", "all", "stage2"):
      config = config_lib.apply_overrides(config_lib.base_config(), [
          "objective.name=uadat", f"model.name={name}", f"objective.uadat.points={points}"])
      config_lib.validate(config)
  config = config_lib.apply_overrides(config_lib.base_config(), [
      "objective.name=uadat", "model.name=vit_tiny", "objective.uadat.uncertainty=False"])
  config_lib.validate(config)


@pytest.mark.parametrize("name, base", [("mnist_uadat", "mnist_trades"),
                                        ("cifar10_resnet18_uadat", "cifar10_resnet18_trades")])
@pytest.mark.parametrize("variant", ["", "smoke"])
def test_configs_share_the_trades_budget(name, base, variant):
  config = config_lib.validate(config_lib.load_file(f"{CONFIG_DIR / name}.py:{variant}"))
  trades = config_lib.validate(config_lib.load_file(f"{CONFIG_DIR / base}.py:{variant}"))
  assert config.objective.name == "uadat" and config.name == name
  assert config.objective.uadat == methods.get("uadat").defaults()
  differ = {key for key in config.to_dict() if config.to_dict()[key] != trades.to_dict()[key]}
  assert differ == {"name", "objective"}
  assert config.objective.uadat.beta == trades.objective.trades.beta == 6.0
