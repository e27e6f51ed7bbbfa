"""Training a run: the stages of its method in order, each on the one step and loop.

`train(config, workdir)` looks the method `config.objective.name` up in the registry
(`jaxadv.methods`), and runs its stages (`Method.stages_of`) in order: a stage with a `source`
is loaded from there, any other is trained (or resumed) in its directory
(`jaxadv.train.workdir.stage_dir`) with `jaxadv.train.loop.run_steps`, and its final variables
become the `inputs` of the stages that read it. The last stage is the run's model; a workdir
without a checkpoint of it starts from the seed's initialisation, or, with `config.init_from`,
from the latest variables of that run directory (a fine-tune).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxadv import config as config_lib
from jaxadv import data, methods, models, sharding
from jaxadv.eval import robustness, suites
from jaxadv.train import state as state_lib
from jaxadv.train import workdir as workdir_lib
from jaxadv.train.checkpoint import Checkpointer
from jaxadv.train.loop import run_steps
from jaxadv.train.step import make_train_step


def monitor_split(config) -> str:
  """The split the monitor scores: "val" when the run holds one out, else "test"."""
  return "val" if config.dataset.num_val > 0 else "test"


def _monitor(config, model, mesh):
  """`variables -> {"<split>_clean": %, "<split>_pgdN": %}` on the first eval.monitor_examples
  points of `monitor_split` (compiled once for the run), or None when
  eval.monitor_every_epochs is 0."""
  e = config.eval
  if e.monitor_every_epochs <= 0:
    return None
  split = monitor_split(config)
  points = workdir_lib.load_dataset(config, split).take(e.monitor_examples)
  name = f"pgd{e.monitor_steps}"
  attacks = suites.build([name], eps=e.eps, norm=e.norm, num_classes=points.num_classes,
                         step_size=e.step_size)
  evaluator = robustness.Evaluator(model, points, batch_size=e.batch_size, mesh=mesh)

  def monitor(variables):
    accuracy = evaluator(variables, attacks, seed=config.seed).accuracy()
    return {f"{split}_clean": accuracy["clean"], f"{split}_{name}": accuracy[name]}
  return monitor


def _initialised_from(state, config, mesh):
  """`state` with the variables (and EMA) of the latest checkpoint of the run
  `config.init_from`; `state` itself when that field is empty."""
  if not config.init_from:
    return state
  base_config, variables, _ = workdir_lib.restore(config.init_from, mesh=mesh)
  if base_config.model.name != config.model.name:
    raise ValueError(f"init_from {config.init_from} holds a {base_config.model.name}, not a "
                     f"{config.model.name}.")
  ema = None if state.ema is None else jax.tree.map(jnp.copy, variables)
  return state.replace(params=variables["params"], model_state=models.model_state(variables),
                       ema=ema)


def _train_stage(stage, ctx, directory, train_ds, mesh, *, stop_after_step, progress):
  """Trains (or resumes) `stage` in `directory`; returns its final TrainState, whether it was
  complete before this call, and whether it is complete now."""
  config = ctx.config
  workdir_lib.prepare(config, directory)
  num_epochs = stage.num_epochs or config.num_epochs
  total_steps = _total_steps(stage, config, train_ds)
  state, tx, schedule = workdir_lib.initial_state(stage, ctx, total_steps)
  state = jax.device_put(state, sharding.replicated(mesh))
  checkpointer = Checkpointer(directory, max_to_keep=config.keep_checkpoints)
  was_done = checkpointer.latest_step() == total_steps
  checkpointer.close()
  is_model = not stage.name
  train_step = make_train_step(
      stage.objective(ctx), tx, mesh, ema_decay=config.optim.ema_decay if is_model else 0.0,
      augment=data.augment.get(config.dataset.augment) if is_model else None)
  keep_best = is_model and config.eval.checkpoint == workdir_lib.BEST
  split = monitor_split(config)
  state = run_steps(config, directory, state, train_step, train_ds, mesh, schedule,
                    num_epochs=num_epochs, batch_size=ctx.batch_size,
                    initialise=(lambda s: _initialised_from(s, config, mesh)) if is_model else None,
                    monitor=_monitor(config, ctx.model, mesh) if is_model else None,
                    monitor_prefix=f"{split}/",
                    keep_best=f"{split}_pgd{config.eval.monitor_steps}" if keep_best else None,
                    stop_after_step=stop_after_step, progress=progress)
  return state, was_done, int(state.step) == total_steps


MODEL = "model"  # how `stages` names the run's model stage (whose `Stage.name` is "")


def _selected(method: methods.Method, all_stages, stages) -> set[str] | None:
  """The `Stage.name`s of the stages named in `stages` ("model" for the model stage), or None
  for all; ValueError naming the method's stages for an unknown name."""
  if stages is None:
    return None
  known = [stage.name or MODEL for stage in all_stages]
  if set(stages) - set(known):
    raise ValueError(f"unknown stage(s) {sorted(set(stages) - set(known))} of method "
                     f"{method.name!r}; its stages are {known}.")
  return {"" if name == MODEL else name for name in stages}


def stage_batch_size(stage: methods.Stage, config) -> int:
  """The global batch size `stage` trains with: its own, else the run's `batch_size`."""
  return stage.batch_size or config.batch_size


def batch_sizes(config) -> set[int]:
  """The training batch sizes of every stage of the run's method (no JAX device is touched, so
  the CLI calls it before choosing the device count)."""
  return {stage_batch_size(stage, config)
          for stage in methods.get(config.objective.name).stages_of(config)}


def _total_steps(stage: methods.Stage, config, train_ds: data.ArrayDataset) -> int:
  """The steps `stage` trains for: its epochs (else `num_epochs`) of `train_ds` in its batches
  (else `batch_size`)."""
  steps_per_epoch = data.steps_per_epoch(train_ds, stage_batch_size(stage, config))
  return steps_per_epoch * (stage.num_epochs or config.num_epochs)


def is_complete(config, workdir, *, stages=None) -> bool:
  """Whether `train(config, workdir, stages=stages)` would train nothing: `workdir` holds a run
  of this very config (its config.json) whose every stage that call would train (not those
  loaded from a `source`) has saved its final step. Reads the run directory and the size of
  the training split; restores, compiles and writes nothing."""
  workdir = workdir_lib.local_dir(workdir)
  method = methods.get(config.objective.name)
  all_stages = method.stages_of(config)
  selected = _selected(method, all_stages, stages)
  recorded = workdir / "config.json"
  if not recorded.is_file() or recorded.read_text() != config_lib.to_json(config):
    return False
  train_ds = workdir_lib.load_dataset(config, "train")
  for stage in all_stages:
    if stage.source or (selected is not None and stage.name not in selected):
      continue
    directory = workdir_lib.stage_dir(workdir, stage)
    if not (directory / "checkpoints").is_dir():
      return False
    checkpointer = Checkpointer(directory, max_to_keep=config.keep_checkpoints)
    try:
      latest = checkpointer.latest_step()
    finally:
      checkpointer.close()
    if latest != _total_steps(stage, config, train_ds):
      return False
  return True


def train(config, workdir, *, stages=None, stop_after_step: int | None = None,
          progress: bool = True):
  """Trains (or resumes) the run in `workdir`: the stages of its method, or only those named in
  `stages` ("model" for the model stage; the others they read are loaded from their `source`
  or their directory). Returns the
  final TrainState of the last stage trained. Raises `Preempted` after saving when SIGTERM
  arrives; `stop_after_step` stops each trained stage after that step, as a killed process
  would (for tests of resumption)."""
  workdir = workdir_lib.prepare(config, workdir)
  method = methods.get(config.objective.name)
  all_stages = method.stages_of(config)
  stages = _selected(method, all_stages, stages)
  train_ds = workdir_lib.load_dataset(config, "train")
  mesh = sharding.data_mesh()
  for stage in all_stages:
    sharding.check_divisible(stage_batch_size(stage, config), mesh,
                             f"batch size of stage {stage.name or MODEL!r}")
  outputs, state = {}, None
  for stage in all_stages:
    selected = stages is None or stage.name in stages
    needed = any(stage.name in later.reads for later in all_stages)
    directory = workdir_lib.stage_dir(workdir, stage)
    if stage.source or not selected:
      if needed or selected:
        source = stage.source or directory
        stage_config, variables, _ = workdir_lib.restore(source, stage.name, mesh=mesh)
        outputs[stage.name] = (stage_config, variables)
      continue
    inputs = {name: outputs[name] for name in stage.reads}
    ctx = workdir_lib.context(config, train_ds, mesh, stage, inputs=inputs)
    state, was_done, done = _train_stage(stage, ctx, directory, train_ds, mesh,
                                         stop_after_step=stop_after_step, progress=progress)
    if not done:  # stopped early (`stop_after_step`): the later stages wait for this one
      return state
    variables = state_lib.variables(state)
    outputs[stage.name] = (config, variables)
    if stage.finish is not None and not was_done:
      stage.finish(ctx, variables, directory)
  return state
