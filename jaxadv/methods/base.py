"""What a training method is to the core: a `Method` (config group, validation, objective,
stages, reports), a `Stage`, and what the core hands them (`StageContext`, `Run`).

A method never imports `jaxadv.train`, `jaxadv.config` or `jaxadv.cli` (it may use the evaluation
API, `jaxadv.eval`, for its reports); the core finds it by name in the registry (`jaxadv.methods.get`) and passes it everything it needs through these types:

* an **objective** is a pure function
  `(params, model_state, batch, key, step) -> (loss, (model_state, metrics))`: `params` any pytree,
  `model_state` every mutable collection of the model (BatchNorm statistics, auxiliary BN, ...;
  `{}` for none), `batch` = {"image": (B, H, W, C) in [0, 1], "label": (B,)}, `key` the step's
  PRNG key (attack starts, stochastic layers), `step` the int32 optimizer step, `metrics` a dict
  of scalars;
* a **stage** trains one set of parameters with one objective; `jaxadv train` runs a method's
  stages in order, each resumable, and the last one is the model the run evaluates;
* a **report** measures something of a trained run and writes it beside the run's evaluation.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Callable, Mapping

import ml_collections

from jaxadv.methods.common import check_number, training_attack

Objective = Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class StageContext:
  """What a stage's callables receive.

  config: the run's validated config; model: the classifier module it configures;
  image_shape (H, W, C) and num_classes of the training data; batch_size and steps_per_epoch
  of this stage;
  inputs: stage name -> (config, variables) of the stages this one `reads` (trained earlier in
  the run or loaded from their `source`), `config` being the one they were trained with;
  restore: `(directory, stage="") -> (config, variables, step)`, the latest checkpoint of the
  stage `stage` trained in `directory` (variables replicated over the run's devices);
  open_run: `directory -> Run`, a trained run as reports see it;
  load: `split -> ArrayDataset`, the run's "train", "val" or "test" split as its config cuts it.
  """
  config: ml_collections.ConfigDict
  model: Any
  image_shape: tuple[int, ...]
  num_classes: int
  batch_size: int
  steps_per_epoch: int
  inputs: Mapping[str, Any]
  restore: Callable[..., tuple]
  open_run: Callable[..., "Run"]
  load: Callable[[str], Any]


@dataclasses.dataclass(frozen=True)
class Stage:
  """One training stage of a method.

  Attributes:
    name: "" for the run's model (trained in the run directory itself, evaluated after
      training); any other name trains in the subdirectory `<workdir>/<name>`.
    objective: `StageContext -> objective`.
    init: `(StageContext, key) -> (params, model_state)`; None: the classifier's own
      initialisation (from the seed, or from `config.init_from`).
    optimizer: `(StageContext, total_steps) -> (optax transformation, schedule)`; None: the
      config's `optim` group.
    num_epochs: epochs of this stage; None: `config.num_epochs`.
    batch_size: examples per step of this stage; None: `config.batch_size`.
    reads: names of stages whose final variables the objective reads (`StageContext.inputs`).
    source: a run directory that already holds this stage trained (its `<source>` holds the
      checkpoints): the stage is loaded from there instead of trained.
    finish: `(StageContext, variables, workdir) -> None`, called once the stage is trained (a
      report of it), or None.
  """
  name: str
  objective: Callable[[StageContext], Objective]
  init: Callable[[StageContext, Any], tuple[Any, Any]] | None = None
  optimizer: Callable[[StageContext, int], tuple[Any, Callable]] | None = None
  num_epochs: int | None = None
  batch_size: int | None = None
  reads: tuple[str, ...] = ()
  source: str = ""
  finish: Callable[[StageContext, Any, pathlib.Path], None] | None = None


@dataclasses.dataclass(frozen=True)
class Run:
  """A trained run as a report sees it: its directory, validated config, the variables and step
  of its latest checkpoint, its model, its test split (the config's dataset, cut to
  `dataset.num_test`), `restore` as in `StageContext`, and what the evaluation scores
  (`Method.predictor`): `predictor` (a Flax module or `variables -> apply_fn`, for
  `jaxadv.models.bind`) with `predictor_variables`; the model and its variables unless the
  method wraps them."""
  workdir: pathlib.Path
  config: ml_collections.ConfigDict
  variables: Any
  step: int
  model: Any
  test_set: Any
  restore: Callable[..., tuple]
  predictor: Any = None
  predictor_variables: Any = None


@dataclasses.dataclass(frozen=True)
class Report:
  """A measurement of a trained run: `measure(run, *, num_examples, **options) -> record`
  prints its table and writes its files into the run directory. `options` names the extra
  options (name -> (type, default, help)) the command line offers."""
  measure: Callable[..., dict]
  help: str
  options: Mapping[str, tuple[type, Any, str]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Method:
  """A training method (baselines included), as the registry holds it.

  Attributes:
    name: its registry name, also the name of its config group `objective.<name>`.
    summary: one line naming the method and its paper.
    defaults: `() -> ConfigDict`, its config group with every field's default.
    make_objective: `(model, attack, group, inputs) -> objective` of the run's model: `attack`
      the training attack's keywords (eps, step_size, steps, norm, attack_mode,
      eps_warmup_steps; `jaxadv.methods.common.training_attack`), `group` the method's config
      group, `inputs` the variables of the stages it reads.
    validate: `(group, config) -> None`, raising ValueError whose message starts with the field
      name; called when a config selecting this method loads, and with config None when an
      objective is built directly (`jaxadv.methods.build`): checks of the whole run skip then.
    stages: `config -> tuple[Stage, ...]`; None: one stage, the run's model with
      `make_objective`.
    reports: report name -> `Report`.
    legacy: a field of configs written before method groups existed, as a dotted path from the
      config's root (e.g. "objective.adml_beta") -> the field of this method's group it became
      ("beta"); `jaxadv.config.from_json` migrates them, so older run directories still load.
    needs_attack: whether the objective uses the training attack (False for clean training).
    predictor: `(context, variables, workdir) -> (predictor, variables)`: what the evaluation
      scores for a run of this method, given the `StageContext` of its model stage, the
      variables of that stage and the run directory: a predictor for `jaxadv.models.bind` (a
      Flax module in eval mode, or a function `variables -> apply_fn`) and the variables it
      takes. None: the model stage's module itself. A defense wraps it (the OOD->ID
      translation defense: gate, translator and a frozen classifier).
  """
  name: str
  summary: str
  defaults: Callable[[], ml_collections.ConfigDict]
  make_objective: Callable[..., Objective]
  validate: Callable[[ml_collections.ConfigDict, ml_collections.ConfigDict], None] = (
      lambda group, config: None)
  stages: Callable[[ml_collections.ConfigDict], tuple[Stage, ...]] | None = None
  reports: Mapping[str, Report] = dataclasses.field(default_factory=dict)
  legacy: Mapping[str, str] = dataclasses.field(default_factory=dict)
  needs_attack: bool = True
  predictor: Callable[..., tuple[Any, Any]] | None = None

  def stages_of(self, config) -> tuple[Stage, ...]:
    """The stages `config` runs, in order; the last one is the run's model."""
    if self.stages is not None:
      return self.stages(config)
    return (model_stage(self),)


def model_stage(method: Method, **fields) -> Stage:
  """The stage that trains the run's model with `method.make_objective` (its config group, the
  configured training attack, and the inputs of the stages it reads); `fields` are further
  `Stage` fields (reads, ...)."""
  def objective(context: StageContext):
    group = context.config.objective[method.name]
    return method.make_objective(context.model, training_attack(context), group, context.inputs)
  return Stage(name="", objective=objective, **fields)


def kl_weighted_method(name: str, summary: str, objective) -> Method:
  """The `Method` of a base objective whose one constant is its KL weight β (TRADES, MART):
  config group {"beta": 6.0}, β >= 0, `objective(model, *, beta, **attack)`."""
  return Method(
      name=name, summary=summary,
      defaults=lambda: ml_collections.ConfigDict({"beta": 6.0}),
      make_objective=lambda model, attack, group, inputs: objective(model, beta=group.beta,
                                                                    **attack),
      validate=lambda group, config: check_number(group, "beta"),
      legacy={"objective.beta": "beta"})
