"""NAMID (Zhou et al., ICML 2022): adversarial training that keeps the natural and adversarial
mutual information of the model's outputs unmoved by the attack, with its two stages and its
report.

Stages (`jaxadv train` runs them in order, each resumable):

1. "estimators" (`<workdir>/estimators`): the natural and adversarial MI estimators
   (`jaxadv.methods.namid.estimators`) trained on the frozen classifier of the run directory
   `objective.namid.estimator.classifier` (adversarially trained beforehand), Adam with
   `estimator.lr` for `estimator.num_epochs` epochs, x_adv from the configured training attack
   at its full eps; then the MI report of that classifier (`mi.json` in the stage directory).
   With `objective.namid.estimators` set to a directory holding such a stage, the estimators
   are loaded from there instead (several NAMID runs can share one set).
2. the model: NAMID (base "pgd_at"), NAMID-T ("trades") or NAMID-M ("mart") with the
   estimators frozen (`jaxadv.methods.namid.objective`).

Report `mi` (`jaxadv report mi --workdir W [estimators=E]`): natural and adversarial MI of any
run's outputs (`jaxadv.methods.namid.mutual_info`).

Config group `objective.namid`: base, alpha (α), lam (λ), beta (KL weight of the TRADES and
MART bases), estimators (a directory of trained estimators, or "" to train them in this run),
and `estimator`: classifier, width, conv_features, dv_variant ("exact": the paper's DV;
"authors": the NAMID code's), score_clip (critic bound τ > 0: scores τ tanh(u / τ); 0:
unbounded), objective ("paper" or "code", `jaxadv.methods.namid.estimators.OBJECTIVES`), lr,
num_epochs, batch_size (0: the run's). docs/estimators.md states the maths and the choices.
"""

from __future__ import annotations

import pathlib

import ml_collections
import optax

from jaxadv.estimators import MIEstimator
from jaxadv.estimators.mutual_info import DV_VARIANTS
from jaxadv.methods import base_losses
from jaxadv.methods.base import Method, Report, Stage, model_stage
from jaxadv.methods.common import check_choice, check_number
from jaxadv.methods.namid import estimators as estimators_lib
from jaxadv.methods.namid import mutual_info
from jaxadv.methods.namid.objective import PRESETS, NamidEstimators, namid_objective
from jaxadv.models import BoundModel

STAGE = "estimators"  # the name (and subdirectory) of the estimator stage


def defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "base": "pgd_at", "alpha": 5.0, "lam": 0.1, "beta": 6.0, "estimators": "",
      "estimator": ml_collections.ConfigDict({
          "classifier": "", "width": 2048, "conv_features": (64, 128), "dv_variant": "exact",
          "score_clip": 0.0, "objective": "paper", "lr": 1e-4, "num_epochs": 5,
          "batch_size": 0}),
  })


def _validate_estimator(e) -> None:
  """Checks the `estimator` group; messages start with the field's name within it."""
  if not isinstance(e.width, int) or e.width < 1:
    raise ValueError(f"width must be an int >= 1, got {e.width!r}.")
  if not e.conv_features or not all(isinstance(f, int) and not isinstance(f, bool) and f >= 1
                                    for f in e.conv_features):
    raise ValueError(f"conv_features must be a non-empty tuple of ints >= 1, got "
                     f"{e.conv_features!r}.")
  check_choice(e, "dv_variant", DV_VARIANTS)
  check_number(e, "score_clip")
  check_choice(e, "objective", estimators_lib.OBJECTIVES)
  check_number(e, "lr", positive=True)
  if not isinstance(e.num_epochs, int) or e.num_epochs < 1:
    raise ValueError(f"num_epochs must be an int >= 1, got {e.num_epochs!r}.")
  if e.batch_size < 0 or e.batch_size == 1:
    raise ValueError(f"batch_size must be 0 (the run's) or >= 2, got {e.batch_size}.")


def validate(group, config) -> None:
  """Checks every field; a run (config not None) needs `estimators` or
  `estimator.classifier`."""
  check_choice(group, "base", base_losses.NAMES)
  for field in ("alpha", "lam", "beta"):
    check_number(group, field)
  try:
    _validate_estimator(group.estimator)
  except ValueError as error:
    raise ValueError(f"estimator.{error}") from None
  if config is not None and not group.estimators and not group.estimator.classifier:
    raise ValueError("estimators: NAMID needs its MI estimators: set estimators to a directory "
                     "holding a trained estimator stage, or estimator.classifier to the run "
                     "directory of the adversarially trained classifier to train them on.")


def estimator_module(estimator_group) -> MIEstimator:
  """The `MIEstimator` of an `objective.namid.estimator` group (width, conv_features,
  score_clip)."""
  return MIEstimator(width=estimator_group.width,
                     conv_features=tuple(estimator_group.conv_features),
                     score_clip=estimator_group.score_clip)


def as_estimators(config, variables) -> NamidEstimators:
  """The `NamidEstimators` of an estimator stage trained with `config`, from its variables
  {"params": {"natural", "adversarial"}}."""
  e = config.objective.namid.estimator
  params = variables["params"]
  return NamidEstimators(estimator_module(e), {"params": params["natural"]},
                         {"params": params["adversarial"]}, e.dv_variant)


def _frozen_classifier(context) -> BoundModel:
  """The eval-mode classifier of the latest checkpoint of `estimator.classifier`."""
  directory = context.config.objective.namid.estimator.classifier
  config, variables, _ = context.restore(directory)
  if (config.model.name, config.dataset.name) != (context.config.model.name,
                                                  context.config.dataset.name):
    raise ValueError(f"estimator.classifier {directory} holds a {config.model.name} on "
                     f"{config.dataset.name}, not a {context.config.model.name} on "
                     f"{context.config.dataset.name}.")
  return BoundModel(context.model, variables, "eval")


def _estimator_objective(context):
  e = context.config.objective.namid.estimator
  attack = dict(context.config.attack)
  return estimators_lib.estimator_objective(
      estimator_module(e), _frozen_classifier(context), attack, dv_variant=e.dv_variant,
      objective=e.objective, eps_warmup_steps=0)  # the classifier is trained: full eps


def _estimator_init(context, key):
  module = estimator_module(context.config.objective.namid.estimator)
  return estimators_lib.init_params(module, key, context.image_shape, context.num_classes), {}


def _estimator_report(context, variables, workdir: pathlib.Path) -> None:
  """The MI report of the classifier the estimators were trained on, into their directory."""
  run = context.open_run(context.config.objective.namid.estimator.classifier)
  mutual_info.report(run, as_estimators(context.config, variables), estimators_dir=workdir,
                     estimators_batch_size=context.batch_size, out_dir=workdir)


def estimator_stage(group) -> Stage:
  """NAMID's estimator stage for the config group `objective.namid`."""
  lr = group.estimator.lr
  return Stage(name=STAGE, objective=_estimator_objective, init=_estimator_init,
               optimizer=lambda context, total_steps: (optax.adam(lr), lambda step: lr),
               num_epochs=group.estimator.num_epochs,
               batch_size=group.estimator.batch_size or None, source=group.estimators,
               finish=_estimator_report)


def make_objective(model, attack, group, inputs):
  """The NAMID objective of `model` with the estimators `inputs["estimators"]`: the
  (config, variables) of a trained estimator stage, or a `NamidEstimators`."""
  if STAGE not in inputs:
    raise ValueError("NAMID needs its trained estimators: inputs={'estimators': "
                     "NamidEstimators(...)}, or a run whose estimator stage trains them.")
  estimators = inputs[STAGE]
  if not isinstance(estimators, NamidEstimators):
    estimators = as_estimators(*estimators)
  attack = dict(attack)
  attack_mode, eps_warmup_steps = attack.pop("attack_mode"), attack.pop("eps_warmup_steps")
  return namid_objective(
      model, attack, estimator=estimators.module, natural_variables=estimators.natural,
      adversarial_variables=estimators.adversarial, dv_variant=estimators.dv_variant,
      base=group.base, alpha=group.alpha, lam=group.lam, beta=group.beta,
      attack_mode=attack_mode, eps_warmup_steps=eps_warmup_steps)


def _mi_report(run, *, num_examples: int = 0, estimators: str = "", batch_size: int = 0):
  """The `mi` report: `estimators` is a directory holding a trained estimator stage (default:
  the run's own `<workdir>/estimators`, else its `objective.namid.estimators`)."""
  own = run.workdir / STAGE
  directory = estimators or (str(own) if (own / "config.json").is_file() else
                             run.config.objective.namid.estimators)
  if not directory:
    raise ValueError("the mi report needs estimators: pass estimators=DIR, a directory holding "
                     "a trained NAMID estimator stage.")
  config, variables, _ = run.restore(directory, STAGE)
  return mutual_info.report(
      run, as_estimators(config, variables), estimators_dir=directory,
      estimators_batch_size=config.objective.namid.estimator.batch_size or config.batch_size,
      num_examples=num_examples, batch_size=batch_size)


METHOD = Method(
    name="namid", summary="NAMID, NAMID-T, NAMID-M (Zhou et al., 2022)",
    defaults=defaults,
    make_objective=make_objective,
    validate=validate,
    stages=lambda config: (estimator_stage(config.objective.namid),
                           model_stage(METHOD, reads=(STAGE,))),
    reports={"mi": Report(
        measure=_mi_report,
        help="natural and adversarial MI of a run's outputs, scored by NAMID's estimators",
        options={"estimators": (str, "", "directory of a trained estimator stage"),
                 "batch_size": (int, 0, "points per DV estimate (0: the estimators' training "
                                        "batch size)")})},
    legacy={"objective.namid_base": "base", "objective.namid_alpha": "alpha",
            "objective.namid_lam": "lam", "objective.beta": "beta",
            "objective.namid_estimators": "estimators",
            **{f"mi.{field}": f"estimator.{field}" for field in (
                "width", "conv_features", "dv_variant", "score_clip", "objective", "lr")}})

__all__ = ["METHOD", "PRESETS", "STAGE", "NamidEstimators", "as_estimators", "estimator_module",
           "estimator_stage", "namid_objective"]
