"""ADML training: the DML loss term by term, the half split, the stop-gradient weight, the
empty flipped set, the θ̂-weighted extension, options, presets, one sharded train step, and
the fine-tune start `init_from`."""

import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxadv import config as config_lib
from jaxadv import methods, models
from jaxadv.attacks import losses
from jaxadv.methods.adml.objective import LOG_FLOOR, adml_loss, dml_risk
from jaxadv.methods.mart import mart_loss
from jaxadv.methods.pgd_at import pgd_at_loss
from jaxadv.methods.trades import trades_loss
from jaxadv import train as training
from jaxadv import sharding
from jaxadv.train import state as state_lib
from jaxadv.train.checkpoint import Checkpointer
from jaxadv.train.step import make_optimizer, make_train_step

from helpers import TinyNet, random_images, tiny_config

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs"

# A 3-class example: adversarial probabilities, labels and clean probabilities.
ADV_PROBS = np.array([[0.2, 0.5, 0.3],   # y=0, ŷ=1: flipped, p_t=0.2, p_w=0.5, w=1
                      [0.7, 0.2, 0.1],   # y=0, ŷ=0: not flipped
                      [0.1, 0.1, 0.8]])  # y=1, ŷ=2: flipped, p_t=0.1, p_w=0.8, w=0.25
LABELS = jnp.array([0, 0, 1])
CLEAN_PROBS = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.2, 0.5, 0.3]])


MODEL = TinyNet()


@pytest.fixture(scope="module")
def setup():
  """TinyNet's variables, a batch of 16 random 4x4x1 images with 3 classes and an x_adv."""
  images = random_images((16, 4, 4, 1))
  variables = MODEL.init(jax.random.PRNGKey(0), images)
  batch = {"image": images, "label": jnp.arange(16, dtype=jnp.int32) % 3}
  x_adv = jnp.clip(images + 0.1 * jnp.sign(random_images((16, 4, 4, 1), seed=1) - 0.5), 0, 1)
  return variables["params"], models.model_state(variables), batch, x_adv


def test_dml_risk_by_hand():
  """Every term of L_dml on the 3-class example, with w = 1/p_w - 1 and with θ̂[y]."""
  log = lambda p: math.log(p + LOG_FLOOR)
  clean_ce = -(math.log(0.6) + math.log(0.2) + math.log(0.5)) / 3
  loss, metrics = dml_risk(jnp.log(CLEAN_PROBS), jnp.log(ADV_PROBS), LABELS)
  expected = ((1.0 * -log(0.2) + 0.25 * -log(0.1)) / 2 + (1.0 * log(0.5) + 0.25 * log(0.8)) / 2
              + clean_ce)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  np.testing.assert_allclose(metrics["flipped"], 2 / 3, rtol=1e-6)
  np.testing.assert_allclose(metrics["accuracy"], 1 / 3, rtol=1e-6)
  np.testing.assert_allclose(metrics["clean_accuracy"], 2 / 3, rtol=1e-6)
  theta = (0.5, 2.0, 1.0)  # weights θ̂[y] = 0.5 for the first flipped sample, 2 for the second
  loss, _ = dml_risk(jnp.log(CLEAN_PROBS), jnp.log(ADV_PROBS), LABELS, theta=theta)
  expected = ((0.5 * -log(0.2) + 2.0 * -log(0.1)) / 2 + (0.5 * log(0.5) + 2.0 * log(0.8)) / 2
              + clean_ce)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_empty_flipped_set_is_clean_ce():
  """No sample flipped: L_dml is exactly the clean CE, and value and gradient are finite."""
  adv_logits = jnp.log(ADV_PROBS[[1, 1, 2]])  # predictions 0, 0, 2 = labels
  labels = jnp.array([0, 0, 2])
  clean_logits = jnp.log(CLEAN_PROBS)
  risk = lambda c, a: dml_risk(c, a, labels)[0]
  loss, grads = jax.value_and_grad(risk, argnums=(0, 1))(clean_logits, adv_logits)
  assert loss == jnp.mean(losses.cross_entropy(clean_logits, labels))
  assert all(np.isfinite(g).all() for g in grads)
  np.testing.assert_array_equal(grads[1], 0.0)


def test_weight_carries_no_gradient():
  """∇ L_dml w.r.t. the adversarial logits equals that with w = 1/p_w - 1 held constant, and
  differs from that with a w that carries gradient."""
  adv_logits = jnp.log(ADV_PROBS)
  flipped = np.asarray([1.0, 0.0, 1.0])

  def by_hand(logits, weight_of):
    probs = jax.nn.softmax(logits)
    p_t = probs[jnp.arange(3), LABELS]
    p_w = jnp.max(probs, axis=-1)
    w = flipped * weight_of(p_w)
    return (jnp.sum(w * -jnp.log(p_t + LOG_FLOOR)) + jnp.sum(w * jnp.log(p_w + LOG_FLOOR))) / 2

  constant = jnp.asarray(1.0 / ADV_PROBS.max(axis=1) - 1.0)
  grad = jax.grad(lambda a: dml_risk(jnp.log(CLEAN_PROBS), a, LABELS)[0])(adv_logits)
  held = jax.grad(by_hand)(adv_logits, lambda p_w: constant)
  live = jax.grad(by_hand)(adv_logits, lambda p_w: 1.0 / p_w - 1.0)
  np.testing.assert_allclose(grad, held, rtol=1e-5, atol=1e-7)
  assert not np.allclose(grad, live, rtol=1e-3)


@pytest.mark.parametrize("base, loss_fn, options", [
    ("pgd_at", pgd_at_loss, {}), ("trades", trades_loss, {"beta": 2.0}),
    ("mart", mart_loss, {"beta": 2.0})])
def test_half_split(setup, base, loss_fn, options):
  """Total = base loss of the first 8 examples + L_dml of the last 8 (BN stats threaded)."""
  params, model_state, batch, x_adv = setup
  loss, (new_stats, metrics) = adml_loss(params, model_state, batch, x_adv, model=MODEL,
                                         base=base, beta=2.0)
  first = {k: v[:8] for k, v in batch.items()}
  base_value, (stats, _) = loss_fn(params, model_state, first, x_adv[:8], model=MODEL, **options)
  variables = lambda s: {"params": params, **s}
  adv_logits, updates = MODEL.apply(variables(stats), x_adv[8:], train=True,
                                    mutable=["batch_stats"])
  clean_logits, updates = MODEL.apply(variables(updates), batch["image"][8:],
                                      train=True, mutable=["batch_stats"])
  dml_value, _ = dml_risk(clean_logits, adv_logits, batch["label"][8:])
  np.testing.assert_allclose(loss, base_value + dml_value, rtol=1e-5)
  np.testing.assert_allclose(metrics["base_loss"], base_value, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), new_stats, updates)


def test_identical_halves_give_ce_on_adversarial_batch(setup):
  """With two identical halves, ADML-AT's first half is the mean CE on the whole x_adv."""
  params, model_state, batch, x_adv = setup
  doubled = {k: jnp.concatenate([v[:8], v[:8]]) for k, v in batch.items()}
  x_doubled = jnp.concatenate([x_adv[:8], x_adv[:8]])
  _, (_, metrics) = adml_loss(params, model_state, doubled, x_doubled, model=MODEL,
                              base="pgd_at", beta=2.0)
  ce, _ = pgd_at_loss(params, model_state, doubled, x_doubled, model=MODEL)
  np.testing.assert_allclose(metrics["base_loss"], ce, rtol=1e-5)


def test_bad_inputs(setup):
  """Unknown base, a batch of 1, theta of the wrong length and bad options raise ValueError."""
  params, model_state, batch, x_adv = setup
  with pytest.raises(ValueError, match="base"):
    adml_loss(params, model_state, batch, x_adv, model=MODEL, base="awp", beta=2.0)
  one = {k: v[:1] for k, v in batch.items()}
  with pytest.raises(ValueError, match=">= 2 examples"):
    adml_loss(params, model_state, one, x_adv[:1], model=MODEL, base="pgd_at", beta=2.0)
  with pytest.raises(ValueError, match="theta has 2 entries"):
    adml_loss(params, model_state, batch, x_adv, model=MODEL, base="pgd_at", beta=2.0,
              theta=(1.0, 1.0))
  for field, value in [("base", "erm"), ("beta", -1.0), ("theta", (1.0, -2.0)),
                       ("theta", (math.nan,))]:
    with pytest.raises(ValueError, match=f"^{field}"):
      methods.group("adml", {field: value})


def test_sharded_train_step(setup):
  """`build("adml")` of ADML-TRADES with θ̂ weights trains one sharded step on 8 devices (the
  default options are in test_objectives' every-objective step)."""
  batch = setup[2]
  objective = methods.build(
      "adml", MODEL, dict(eps=0.1, step_size=0.023, steps=2, norm="linf"),
      options={"base": "trades", "theta": (1.0, 2.0, 0.5)})
  tx = optax.sgd(0.1)
  state = state_lib.create(MODEL, tx, (4, 4, 1), 0)
  before = jax.tree.map(np.asarray, state.params)
  mesh = sharding.data_mesh()
  step = make_train_step(objective, tx, mesh)
  new_state, metrics = step(jax.device_put(state, sharding.replicated(mesh)),
                            sharding.put_batch(batch, mesh))
  assert np.isfinite(float(metrics["loss"])) and 0.0 <= float(metrics["flipped"]) <= 1.0
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), new_state.params, before)
  assert any(jax.tree.leaves(changed))


@pytest.mark.parametrize("name", ["mnist_adml", "cifar10_resnet18_adml"])
def test_presets(name):
  """The presets validate: PGD-10 with step 2.3·eps/10, 10 epochs, cyclic LR peaking at 1e-3."""
  config = config_lib.validate(config_lib.load_file(str(CONFIG_DIR / f"{name}.py")))
  assert config.objective.name == "adml" and config.num_epochs == 10
  assert config.attack.steps == 10
  np.testing.assert_allclose(config.attack.step_size, 2.3 * config.attack.eps / 10)
  assert config.optim.schedule == "cyclic" and config.optim.lr == 1e-3
  assert config.optim.momentum == 0.9 and config.optim.weight_decay == 5e-4
  smoke = config_lib.validate(config_lib.load_file(str(CONFIG_DIR / f"{name}.py") + ":smoke"))
  assert smoke.objective.name == "adml"


def _saved_run(config, workdir):
  """A run directory holding `config` and its seed's initial state as checkpoint 1 (no training)."""
  workdir.mkdir()
  (workdir / "config.json").write_text(config_lib.to_json(config))
  dataset = training.load_dataset(config, "train")
  tx, _ = make_optimizer(config.optim, 1, 1)
  checkpointer = Checkpointer(workdir)
  checkpointer.save(1, state_lib.create(training.build_model(config, dataset), tx,
                                        dataset.image_shape, config.seed))
  checkpointer.close()


@pytest.mark.slow  # two training runs
def test_init_from(tmp_path):
  """A workdir without a checkpoint starts from the latest params of the `init_from` run; a
  missing run directory is an error."""
  _saved_run(tiny_config(seed=1), tmp_path / "base")
  _, variables, _ = training.restore(tmp_path / "base")
  tuned = tiny_config(init_from=str(tmp_path / "base"), **{"objective.name": "adml"})
  state = training.train(tuned, tmp_path / "tuned", stop_after_step=0, progress=False)
  jax.tree.map(np.testing.assert_array_equal, state_lib.raw_variables(state), variables)
  fresh = training.train(tiny_config(), tmp_path / "fresh", stop_after_step=0, progress=False)
  assert not all(jax.tree.leaves(jax.tree.map(np.allclose, fresh.params, state.params)))
  with pytest.raises(FileNotFoundError, match="not a jaxadv run directory"):
    training.train(tiny_config(init_from=str(tmp_path / "missing")), tmp_path / "bad",
               stop_after_step=0, progress=False)
