"""OOD->ID translation (Amich & Eshete, arXiv 2202.08944): adversarial examples treated as
out-of-distribution inputs and translated back before an unchanged classifier. Reconstructed
from the paper's description; not the authors' code (neither the code nor a method section is
public): each module states jaxadv's reading, docs/defenses.md the whole.

A run of this method trains one stage, its model: the translator T (`jaxadv.models.UNet`, with
an optional `PatchDiscriminator`) against the frozen classifier f of the run directory
`objective.ood_translate.classifier` (`objective`, `corruptions`). Its checkpoint holds T (and
D); once it is trained the gate is fitted and kept in `<workdir>/gate.npz` (`gating`). What the
run's evaluation scores (`jaxadv eval`, `--shifts` included) is the defended model
`f(where(gate(x) > τ, T(x), x))` (`jaxadv.defenses.defended_apply`), with exact gradients;
`jaxadv report ood --workdir W` adds the bare classifier, the routed share, and oblivious,
transfer and adaptive attacks, labelled (`evaluation`).

The run's config describes the classifier: `model` and `dataset` must match the classifier
run's (its weights are read from there); `attack.eps` is the L-inf budget ε of the OOD sources
and `eval` the evaluation's threat model. Config group `objective.ood_translate` (defaults in
brackets):

    classifier [""]                the classifier's run directory (required)
    translator_features [64]       the U-Net's ngf
    gan_weight [0.0]               λ_gan of the PatchGAN term (0: no discriminator; pix2pix: 1)
    discriminator_features [64]    the PatchGAN's ndf;  discriminator_layers [3]
    l1_weight [100.0]              λ₁ of L1(T(x_ood), x) (pix2pix's λ_L1)
    identity_weight [100.0]        λ_id of L1(T(x), x)
    lr [2e-4], b1 [0.5]            Adam (pix2pix's)
    attacks [pgd_linf, pgd_l2, fgsm, cw], budgets [(0.5, 1.0, 1.5)], l2_eps [2.0], steps [10],
    shifts [darker, brighter, sharper, blur, noise]     the OOD sources (`corruptions`)
    gate.score ["mahalanobis"]     or "reconstruction";  gate.q [0.95]
    gate.fit_examples [10000]      training images for the Mahalanobis means and covariance
    gate.ridge [0.0]               relative ridge of the covariance (0: SSD's pseudo-inverse)

The spec names no weight for the identity term; jaxadv gives it λ₁'s, so leaving clean inputs
unchanged weighs as much as repairing corrupted ones. The run needs `dataset.num_val > 0` (the
gate's held-out points), `eval.monitor_every_epochs = 0` and `eval.checkpoint = "last"` (the
core's monitor scores classifiers, and this stage trains a translator).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxadv.defenses import MahalanobisStats, defended_apply, mahalanobis_gate
from jaxadv.defenses import reconstruction_gate
from jaxadv.methods.base import Method, Report, Stage
from jaxadv.methods.common import check_choice, check_number
from jaxadv.methods.ood_translate import corruptions, evaluation, gating
from jaxadv.methods.ood_translate.objective import (DISCRIMINATOR, TRANSLATOR, part,
                                                    translator_objective)
from jaxadv.models import BoundFeatures, BoundModel, PatchDiscriminator, UNet


def defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "classifier": "", "translator_features": 64, "gan_weight": 0.0,
      "discriminator_features": 64, "discriminator_layers": 3, "l1_weight": 100.0,
      "identity_weight": 100.0, "lr": 2e-4, "b1": 0.5,
      "attacks": corruptions.ATTACKS, "budgets": (0.5, 1.0, 1.5), "l2_eps": 2.0, "steps": 10,
      "shifts": ("darker", "brighter", "sharper", "blur", "noise"),
      "gate": ml_collections.ConfigDict({"score": "mahalanobis", "q": 0.95,
                                         "fit_examples": 10000, "ridge": 0.0}),
  })


def _check_int(group, field: str, minimum: int = 1) -> None:
  value = group[field]
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f"{field} must be an int >= {minimum}, got {value!r}.")


def _sources(group, eps: float):
  """The OOD sources of the group at L-inf budget `eps` (`corruptions.sources`)."""
  return corruptions.sources(attacks=tuple(group.attacks), budgets=tuple(group.budgets),
                             shift_names=tuple(group.shifts), eps=eps, l2_eps=group.l2_eps,
                             steps=group.steps)


def validate(group, config) -> None:
  """Checks every field (messages start with the field's name); a run (config not None) also
  needs a classifier, held-out points, a batch that gives every OOD source a row, and no
  classifier monitor."""
  for field in ("translator_features", "discriminator_features", "discriminator_layers"):
    _check_int(group, field)
  _check_int(group, "steps", 0)
  for field in ("gan_weight", "l1_weight", "identity_weight", "l2_eps"):
    check_number(group, field)
  for field in ("lr", "b1"):
    check_number(group, field, positive=True)
  if not group.b1 < 1:
    raise ValueError(f"b1 must lie in (0, 1), got {group.b1}.")
  try:
    table = _sources(group, 1.0)
  except ValueError as error:
    raise ValueError(f"attacks/budgets/shifts/steps: {error}") from None
  check_choice(group.gate, "score", gating.SCORES)
  if not 0.0 < group.gate.q < 1.0:
    raise ValueError(f"gate.q must lie in (0, 1), got {group.gate.q!r}.")
  try:
    _check_int(group.gate, "fit_examples")
    check_number(group.gate, "ridge")
  except ValueError as error:
    raise ValueError(f"gate.{error}") from None
  if config is None:
    return
  if not group.classifier:
    raise ValueError("classifier: the defense needs the run directory of the classifier it "
                     "protects.")
  if config.dataset.num_val <= 0:
    raise ValueError("dataset.num_val: the gate's threshold is a quantile of held-out "
                     "in-distribution scores; set dataset.num_val > 0.")
  if config.eval.monitor_every_epochs > 0 or config.eval.checkpoint != "last":
    raise ValueError("eval.monitor_every_epochs / eval.checkpoint: this run trains a "
                     "translator, which the classifier monitor cannot score; set "
                     "eval.monitor_every_epochs = 0 and eval.checkpoint = 'last'.")
  try:
    corruptions.chunk_sizes(config.batch_size, len(table))
  except ValueError as error:
    raise ValueError(f"batch_size: {error}") from None


def translator_module(group) -> UNet:
  return UNet(features=group.translator_features)


def discriminator_module(group) -> PatchDiscriminator:
  return PatchDiscriminator(features=group.discriminator_features,
                            num_layers=group.discriminator_layers)


def classifier(context):
  """(config, variables) of the latest checkpoint of the frozen classifier; ValueError when its
  run directory is missing, holds no checkpoint, or holds another model or dataset."""
  directory = context.config.objective.ood_translate.classifier
  try:
    config, variables, _ = context.restore(directory)
  except FileNotFoundError as error:
    raise ValueError(f"classifier: {error}") from None
  mine, theirs = context.config, config
  for field in ("dataset.name", "model.name", "model.width", "model.aux_bn"):
    section, name = field.split(".")
    if theirs[section][name] != mine[section][name]:
      raise ValueError(f"classifier {directory} has {field} = {theirs[section][name]!r}, this "
                       f"run {mine[section][name]!r}: the defense's config must describe the "
                       "classifier it protects.")
  return config, variables


def make_objective(model, attack, group, inputs):
  """The translator's objective (`objective.translator_objective`) against the classifier
  `model` with the variables `inputs["classifier"]` (eval mode), OOD sources at the L-inf
  budget `attack["eps"]`."""
  if "classifier" not in inputs:
    raise ValueError("the translator trains against a frozen classifier: inputs={'classifier': "
                     "its variables}.")
  return translator_objective(
      translator_module(group), discriminator_module(group),
      BoundModel(model, inputs["classifier"], "eval"), _sources(group, attack["eps"]),
      l1_weight=group.l1_weight, identity_weight=group.identity_weight,
      gan_weight=group.gan_weight)


def _objective(context):
  _, variables = classifier(context)
  return make_objective(context.model, dict(context.config.attack),
                        context.config.objective.ood_translate, {"classifier": variables})


def _init(context, key):
  """Variables of T (and D when gan_weight > 0): ({"translator"[, "discriminator"]},
  {"batch_stats": same keys})."""
  group = context.config.objective.ood_translate
  x = jnp.zeros((1, *context.image_shape), jnp.float32)
  translator_key, discriminator_key = jax.random.split(key)
  networks = {TRANSLATOR: translator_module(group).init(translator_key, x)}
  if group.gan_weight > 0:
    networks[DISCRIMINATOR] = discriminator_module(group).init(discriminator_key, x, x)
  return ({name: v["params"] for name, v in networks.items()},
          {"batch_stats": {name: v["batch_stats"] for name, v in networks.items()}})


def _optimizer(context, total_steps: int):
  del total_steps
  group = context.config.objective.ood_translate
  return optax.adam(group.lr, b1=group.b1), lambda step: group.lr


def _fit_gate(context, variables, workdir):
  """Fits the gate (`gating.fit`) and saves it into the run directory; returns its arrays."""
  group = context.config.objective.ood_translate
  _, classifier_variables = classifier(context)
  translate = BoundModel(translator_module(group), part(variables, TRANSLATOR), "eval")
  arrays = gating.fit(group.gate.score, q=group.gate.q,
                      classifier_features=BoundFeatures(context.model, classifier_variables,
                                                        "eval"),
                      translate=translate, train_set=context.load("train"),
                      val_set=context.load("val"), fit_examples=group.gate.fit_examples,
                      ridge=group.gate.ridge, batch_size=context.config.eval.batch_size)
  gating.save(arrays, workdir)
  return arrays


def defended(classifier_module, translator, score: str, variables):
  """The defended model `jaxadv.defenses.Defended` of `predictor`'s variables {"classifier",
  "translator", "gate": {"threshold"[, "means", "precision"]}}."""
  classify = BoundModel(classifier_module, variables["classifier"], "eval")
  translate = BoundModel(translator, variables["translator"], "eval")
  gate = variables["gate"]
  if score == "mahalanobis":
    scorer = mahalanobis_gate(BoundFeatures(classifier_module, variables["classifier"], "eval"),
                              MahalanobisStats(gate["means"], gate["precision"]))
  else:
    scorer = reconstruction_gate(translate)
  return defended_apply(classify, translate, scorer, gate["threshold"])


def predictor(context, variables, workdir):
  """(`variables -> Defended`, its variables) for the evaluation: the frozen classifier, this
  run's translator and the gate saved in `workdir` (fitted and saved first when missing).
  Raises ValueError when the gate was fitted for images of another shape."""
  group = context.config.objective.ood_translate
  if workdir is None:
    raise ValueError("the OOD->ID defense is evaluated from its run directory, which holds its "
                     "gate: pass workdir.")
  arrays = gating.load(workdir)
  if arrays is None:
    arrays = _fit_gate(context, variables, workdir)
  if tuple(arrays["image_shape"].tolist()) != tuple(context.image_shape):
    raise ValueError(f"the translator and gate in {workdir} were fitted for images of shape "
                     f"{tuple(arrays['image_shape'].tolist())}, the evaluation's are "
                     f"{tuple(context.image_shape)}.")
  _, classifier_variables = classifier(context)
  gate = {name: jnp.asarray(arrays[name]) for name in ("threshold", "means", "precision")
          if name in arrays}
  return (functools.partial(defended, context.model, translator_module(group),
                            group.gate.score),
          {"classifier": classifier_variables, "translator": part(variables, TRANSLATOR),
           "gate": gate})


METHOD = Method(
    name="ood_translate",
    summary="OOD->ID translation defense (Amich & Eshete, 2022; reconstructed)",
    defaults=defaults,
    make_objective=make_objective,
    validate=validate,
    stages=lambda config: (Stage(name="", objective=_objective, init=_init,
                                 optimizer=_optimizer, finish=_fit_gate),),
    reports={"ood": Report(
        measure=evaluation.measure,
        help="the defense's bare and defended clean accuracy, routed share, oblivious, "
             "transfer and adaptive attacks and natural shifts (eval_ood.json)",
        options={"steps": (int, 100, "PGD steps"), "restarts": (int, 1, "PGD restarts"),
                 "surrogate": (str, "", "run directory of a transfer surrogate"),
                 "autoattack": (int, 1, "1: also AutoAttack, oblivious and adaptive"),
                 "checks": (int, 1, "1: gradient-masking checks on the defended model")})},
    predictor=predictor)

__all__ = ["METHOD", "classifier", "corruptions", "defended", "evaluation", "gating",
           "predictor"]
