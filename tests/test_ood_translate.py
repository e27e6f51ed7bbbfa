"""The OOD->ID translation defense as a method: its OOD sources, the translator's objective
(L1 terms, PatchGAN gradients), a run that trains the translator, fits and keeps the gate and
evaluates the defended model, the labelled attacks of its report, and its bad inputs."""

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import config as config_lib
from jaxadv import attacks, defenses, models
from jaxadv import train as training
from jaxadv.data import ArrayDataset, shifts
from jaxadv.eval import robustness
from jaxadv.methods import ood_translate
from jaxadv.methods.ood_translate import corruptions, evaluation, gating
from jaxadv.methods.ood_translate.objective import TRANSLATOR, part, translator_objective
from jaxadv.train import reports
from jaxadv.train import workdir as workdir_lib

from helpers import linear_apply_fn, tiny_config

KEY = jax.random.PRNGKey(0)
SMALL = {"objective.name": "ood_translate", "dataset.num_val": 64,
         "objective.ood_translate.translator_features": 4,
         "objective.ood_translate.attacks": ("pgd_linf", "fgsm"),
         "objective.ood_translate.budgets": (1.0,), "objective.ood_translate.steps": 2,
         "objective.ood_translate.shifts": ("blur",),
         "objective.ood_translate.gate.fit_examples": 128}


def test_sources_stay_in_their_balls_and_give_every_source_a_chunk(digits_cnn):
  table = corruptions.sources(attacks=corruptions.ATTACKS, budgets=(0.5, 1.0), eps=0.2,
                              l2_eps=1.0, steps=3, shift_names=("darker", "noise"))
  assert list(table) == ["pgd_linf@0.5", "pgd_linf@1", "pgd_l2@0.5", "pgd_l2@1", "fgsm", "cw",
                         "darker", "noise"]
  x, y = digits_cnn.images[:20], digits_cnn.labels[:20]
  x_ood = jax.jit(lambda v, w, k: corruptions.ood_batch(table, digits_cnn.apply_fn, v, w, k))(
      x, y, KEY)
  sizes = corruptions.chunk_sizes(20, len(table))
  assert sizes == [3, 3, 3, 3, 2, 2, 2, 2]
  bounds = {"pgd_linf@0.5": ("linf", 0.1), "pgd_linf@1": ("linf", 0.2),
            "pgd_l2@0.5": ("l2", 0.5), "pgd_l2@1": ("l2", 1.0), "fgsm": ("linf", 0.2),
            "cw": ("linf", 0.2)}
  start = 0
  for name, size in zip(table, sizes):
    delta = np.asarray(x_ood[start:start + size] - x[start:start + size]).reshape(size, -1)
    if name in bounds:
      norm, radius = bounds[name]
      length = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
      assert np.all(length <= radius + 1e-5) and np.all(length > 0), name
    elif name == "darker":
      np.testing.assert_allclose(x_ood[start:start + size],
                                 shifts.darker(x[start:start + size]), atol=1e-6)
    start += size
  assert np.all((np.asarray(x_ood) >= 0) & (np.asarray(x_ood) <= 1))
  with pytest.raises(ValueError, match="cannot give a row"):
    corruptions.chunk_sizes(5, len(table))
  with pytest.raises(ValueError, match="unknown OOD attack"):
    corruptions.sources(attacks=("pgd",), budgets=(1.0,), eps=0.2, l2_eps=1.0, steps=3,
                        shift_names=())


def _objective_setup(gan_weight):
  """An 8 x 8 batch, a linear 3-class classifier, a width-2 U-Net and a one-layer PatchGAN (the
  smallest that sees 8 px; compiled in seconds), one FGSM source and one blur source."""
  x = jax.random.uniform(KEY, (4, 8, 8, 1))
  y = jnp.array([0, 1, 2, 0])
  unet, patch = models.UNet(features=2), models.PatchDiscriminator(features=2, num_layers=1)
  t_vars = jax.jit(unet.init)(KEY, x)
  params = {TRANSLATOR: t_vars["params"]}
  state = {"batch_stats": {TRANSLATOR: t_vars["batch_stats"]}}
  if gan_weight > 0:
    d_vars = jax.jit(patch.init)(KEY, x, x)
    params["discriminator"] = d_vars["params"]
    state["batch_stats"]["discriminator"] = d_vars["batch_stats"]
  table = corruptions.sources(attacks=("fgsm",), budgets=(), eps=0.1, l2_eps=1.0, steps=0,
                              shift_names=("blur",))
  classifier = linear_apply_fn(8 * 8)
  objective = translator_objective(unet, patch, classifier, table, l1_weight=100.0,
                                   identity_weight=10.0, gan_weight=gan_weight)
  return objective, params, state, {"image": x, "label": y}, unet, classifier, table


def test_objective_without_gan_is_the_two_l1_terms():
  objective, params, state, batch, unet, classifier, table = _objective_setup(0.0)
  loss, (new_state, metrics) = jax.jit(objective)(params, state, batch, KEY, 0)
  x = batch["image"]
  x_ood = jax.jit(lambda v: corruptions.ood_batch(table, classifier, v, batch["label"], KEY))(x)
  both = jax.jit(lambda v: unet.apply({"params": params[TRANSLATOR], **state}, v, train=True,
                                      mutable=["batch_stats"])[0])(jnp.concatenate([x_ood, x]))
  expected = (100.0 * jnp.mean(jnp.abs(both[:4] - x)) + 10.0 * jnp.mean(jnp.abs(both[4:] - x)))
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  np.testing.assert_allclose(metrics["loss"], loss)
  assert set(new_state["batch_stats"]) == {TRANSLATOR} and "d_loss" not in metrics


def test_gan_gradients_go_each_to_its_own_network():
  objective, params, state, batch, *_ = _objective_setup(1.0)

  def term(name):
    def loss(p):
      loss, (_, metrics) = objective(p, state, batch, KEY, 0)
      return {"all": loss, "d": metrics["d_loss"],
              "t": 100.0 * metrics["l1"] + 10.0 * metrics["identity"] + metrics["g_gan"]}[name]
    return jax.grad(loss)(params)

  grads, d_only, t_only = jax.jit(lambda: tuple(term(name) for name in ("all", "d", "t")))()
  # L_T reaches D's parameters only through a stop-gradient, L_D reaches T only through one.
  chex_close = lambda a, b: jax.tree.map(
      lambda u, v: np.testing.assert_allclose(u, v, rtol=2e-4, atol=1e-6), a, b)
  chex_close(grads["discriminator"], d_only["discriminator"])
  chex_close(grads[TRANSLATOR], t_only[TRANSLATOR])
  assert all(not np.any(g) for g in jax.tree.leaves(d_only[TRANSLATOR]))
  assert all(not np.any(g) for g in jax.tree.leaves(t_only["discriminator"]))


@pytest.fixture(scope="module")
def defended_run(tmp_path_factory):
  """A PGD-AT digits classifier (3 tiny epochs) and a defense run in front of it, both evaluated
  clean only (no test here reads an attack's figure of the run's own evaluation)."""
  root = tmp_path_factory.mktemp("ood")
  training.train(tiny_config(num_epochs=3, **{"eval.suite": ()}), root / "base", progress=False)
  config = tiny_config(**SMALL, **{"objective.ood_translate.classifier": str(root / "base"),
                                   "eval.suite": ()})
  record = reports.train_and_evaluate(config, root / "ood", progress=False)
  return root, config, record


def test_run_keeps_the_gate_and_passes_id_points_bit_for_bit(defended_run):
  root, config, record = defended_run
  workdir = root / "ood"
  arrays = gating.load(workdir)
  assert set(arrays) == {"q", "image_shape", "means", "precision", "threshold"}
  assert arrays["image_shape"].tolist() == [8, 8, 1] and arrays["means"].shape[0] == 10
  _, variables, _ = workdir_lib.restore(workdir)
  predictor, scored = workdir_lib.predictor(config, variables, workdir)
  defended = models.bind(predictor, scored)
  test = workdir_lib.load_dataset(config, "test")
  val = workdir_lib.load_dataset(config, "val")
  base_config, base_variables, _ = workdir_lib.restore(root / "base")
  bare = models.BoundModel(workdir_lib.build_model(base_config, test), base_variables, "eval")
  x = jnp.asarray(test.images)
  routes = np.asarray(defended.routes(x))
  logits, bare_logits = np.asarray(defended(x)), np.asarray(bare(x))
  assert (~routes).sum() > 0
  np.testing.assert_array_equal(logits[~routes], bare_logits[~routes])
  # The threshold is the 95% quantile of the held-out scores: about 5% of them are routed.
  assert np.mean(np.asarray(defended.routes(jnp.asarray(val.images)))) <= 0.05 + 1 / 64
  assert record["clean_acc"] == pytest.approx(
      100 * np.mean(logits.argmax(-1) == test.labels))


def test_a_missing_gate_is_refitted_identically(defended_run):
  root, config, _ = defended_run
  workdir = root / "ood"
  saved = gating.load(workdir)
  (workdir / gating.FILE).rename(workdir / "gate_kept.npz")
  try:
    _, variables, _ = workdir_lib.restore(workdir)
    workdir_lib.predictor(config, variables, workdir)
    for name, value in gating.load(workdir).items():
      np.testing.assert_allclose(value, saved[name], rtol=1e-5, atol=1e-6)
  finally:
    (workdir / "gate_kept.npz").replace(workdir / gating.FILE)


def test_a_gate_for_other_images_or_a_corrupt_gate_file_is_refused(defended_run, tmp_path):
  root, config, _ = defended_run
  _, variables, _ = workdir_lib.restore(root / "ood")
  arrays = dict(gating.load(root / "ood"), image_shape=np.array([32, 32, 3], np.int32))
  gating.save(arrays, tmp_path)
  with pytest.raises(ValueError, match=r"fitted for images of shape \(32, 32, 3\)"):
    workdir_lib.predictor(config, variables, tmp_path)
  (tmp_path / gating.FILE).write_bytes(b"not a gate")
  with pytest.raises(ValueError, match="not a readable gate file"):
    workdir_lib.predictor(config, variables, tmp_path)


@pytest.mark.slow  # about 1 min: the whole report
def test_report_labels_each_attack_and_adaptive_is_never_weaker(defended_run):
  root, _, _ = defended_run
  record = reports.report("ood", root / "ood", num_examples=32, steps=3, autoattack=0,
                          checks=0, surrogate=str(root / "base"))
  saved = json.loads((root / "ood" / evaluation.FILE).read_text())
  assert saved["kinds"] == {"pgd3_oblivious": "oblivious", "pgd3_transfer": "transfer",
                            "pgd3_adaptive": "adaptive"}
  assert list(saved["cascade_accuracy"]["pgd3_adaptive"]) == list(evaluation.VIEWS)
  accuracy = record["accuracy"]
  assert accuracy["pgd3_adaptive"] <= accuracy["pgd3_oblivious"]
  assert record["clean_acc"] >= record["clean_acc_bare"] - 100 * record["routed_share"] / 100
  assert set(record["shifts"]) == {"bare", "defended"}
  assert set(record["shifts"]["defended"]) == {"clean", *shifts.SHIFTS}


def test_adaptive_breaks_a_planted_masking_translator(digits_cnn):
  """A translator that rounds pixels to {0, 1} and a gate that routes everything: the rounding
  erases most small oblivious perturbations and has a zero gradient, so the exact attack
  stalls. The adaptive cascade is stronger than the oblivious attack, and BPDA on its own breaks
  what the exact gradient cannot (which of the cascade's stages breaks a given point depends on
  the trained classifier, so they are not compared with one another)."""
  classifier = digits_cnn.apply_fn
  x, y = digits_cnn.images[:64], digits_cnn.labels[:64]
  rounded = np.asarray(classifier(jnp.round(x))).argmax(-1) == np.asarray(y)

  def predictor(variables):
    return defenses.defended_apply(classifier, jnp.round, lambda v: jnp.zeros(v.shape[0]),
                                   variables["threshold"])

  points = ArrayDataset(np.asarray(x)[rounded], np.asarray(y)[rounded], 10, "digits", (0.0,),
                        (1.0,))
  table, kinds, _ = evaluation.attacks(eps=0.1, norm="linf", step_size=0.025, steps=20,
                                       restarts=1, num_classes=10, autoattack=False)
  base = functools.partial(attacks.pgd, eps=0.1, step_size=0.025, steps=20, norm="linf")
  table.update(exact_alone=evaluation.on_view(base, "end_to_end"),
               bpda_alone=evaluation.on_view(base, "bpda_identity"))
  result = robustness.evaluate(predictor, {"threshold": jnp.float32(-1.0)}, points, table,
                               batch_size=64)
  accuracy = result.accuracy()
  stages = [100 * np.mean(c) for c in result.stages["pgd20_adaptive"].values()]
  assert accuracy["clean"] == 100.0 and kinds["pgd20_adaptive"] == "adaptive"
  # Zero gradients: the exact attack moves only by its random start, which flips a few rounded
  # pixels (4 to 7 of 57 points broken, by the draw, for the classifier trained on AMD AVX-512).
  assert accuracy["exact_alone"] >= 85 and stages[0] >= 85
  # BPDA breaks points the exact gradient cannot: at least 3 of the ~60 (how many depends on
  # the trained classifier, which XLA:CPU rounds differently by host and by program: 5 and 9 of
  # 57 for two classifiers trained on AMD AVX-512, 6 or more on AMD AVX2).
  broken = len(points.labels) * (accuracy["exact_alone"] - accuracy["bpda_alone"]) / 100
  assert broken >= 3, accuracy
  assert accuracy["pgd20_adaptive"] < accuracy["pgd20_oblivious"]
  assert stages == sorted(stages, reverse=True)  # a cascade never gains robust points


def test_config_errors_name_the_field(defended_run, tmp_path):
  root, _, _ = defended_run
  base = str(root / "base")
  cases = [({"objective.ood_translate.gate.q": 1.0}, "gate.q"),
           ({"objective.ood_translate.gate.q": 0.0}, "gate.q"),
           ({"objective.ood_translate.classifier": ""}, "classifier"),
           ({"dataset.num_val": 0}, "dataset.num_val"),
           ({"batch_size": 2}, "batch_size"),
           ({"objective.ood_translate.attacks": ("pgd",)}, "attacks"),
           ({"objective.ood_translate.gate.score": "energy"}, "score"),
           ({"eval.monitor_every_epochs": 1.0}, "eval.monitor_every_epochs")]
  for overrides, field in cases:
    settings = {**SMALL, "objective.ood_translate.classifier": base, **overrides}
    with pytest.raises(ValueError, match=field):
      tiny_config(**settings)
  missing = tiny_config(**SMALL, **{"objective.ood_translate.classifier": str(tmp_path / "no")})
  with pytest.raises(ValueError, match="classifier: .*is not a jaxadv run directory"):
    training.train(missing, tmp_path / "run", progress=False)
  other = tiny_config(**SMALL, **{"objective.ood_translate.classifier": base,
                                  "model.width": 8})
  with pytest.raises(ValueError, match="model.width"):
    training.train(other, tmp_path / "run2", progress=False)


CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs"


@pytest.mark.parametrize("variant", ["smoke", "cpu", "cpu,gan", "cpu,reconstruction", ""])
def test_mnist_config_describes_the_classifier_it_protects(variant):
  config = config_lib.load_file(f"{CONFIGS / 'mnist_ood_translate.py'}:{variant}")
  config.objective.ood_translate.classifier = "runs/classifier"
  config_lib.validate(config)
  erm = config_lib.load_file(f"{CONFIGS / 'mnist60k_erm.py'}:{variant.split(',')[0]}")
  assert (config.model.name, config.model.width, config.dataset.name) == (
      erm.model.name, erm.model.width, erm.dataset.name)
  assert ood_translate.METHOD.predictor is ood_translate.predictor


@pytest.mark.parametrize("variant", ["smoke", "", "jpeg,gan"])
def test_cifar_config_describes_a_resnet18_classifier(variant):
  config = config_lib.load_file(f"{CONFIGS / 'cifar10_resnet18_ood_translate.py'}:{variant}")
  config.objective.ood_translate.classifier = "runs/classifier"
  config_lib.validate(config)
  classifier = config_lib.load_file(f"{CONFIGS / 'cifar10_resnet18_pgd_at.py'}")
  assert (config.model.name, config.model.width) == (classifier.model.name,
                                                     classifier.model.width)
  assert config.dataset.num_val == classifier.dataset.num_val == 1000 or variant == "smoke"
