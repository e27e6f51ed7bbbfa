"""Run directories: what a config builds (dataset, model, stages' contexts), creating a run
directory, and restoring the latest checkpoint of any stage of one.

A run directory holds `config.json`, `checkpoints/` of its model stage, the metrics and the
reports; a method's other stages train in subdirectories `<workdir>/<stage name>` laid out the
same way (`jaxadv.methods.Stage`). Run directories are local paths: a URL such as
`gs://bucket/run` is refused (`local_dir`), since metrics, reports and journals are written
with local file operations.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

import jax
import jax.numpy as jnp

from jaxadv import config as config_lib
from jaxadv import data, methods, models, sharding
from jaxadv.data.dataset import split_indices
from jaxadv.train import state as state_lib
from jaxadv.train.checkpoint import Checkpointer
from jaxadv.train.step import make_optimizer


BEST = "best"  # the subdirectory of the best checkpoint (`eval.checkpoint = "best"`)
VAL_SEED = 1  # fixed, so that every run and seed holds out the same validation points


def load_dataset(config, split: str) -> data.ArrayDataset:
  """Split "train", "val" or "test" of the configured dataset: "val" is a fixed random subset
  of `dataset.num_val` training examples, "train" the other training examples cut to
  `dataset.num_train`, "test" the test split cut to `dataset.num_test`."""
  if split not in ("train", "val", "test"):
    raise ValueError(f"unknown split {split!r}; choose 'train', 'val' or 'test'.")
  d = config.dataset
  source = "test" if split == "test" else "train"
  dataset = data.load(d.name, source, data_dir=d.data_dir or None, download=d.download)
  if split == "test":
    return dataset.take(d.num_test)
  if split == "val" and d.num_val <= 0:
    raise ValueError("this run holds out no validation split: set dataset.num_val > 0.")
  if d.num_val > 0:
    if d.num_val >= len(dataset):
      raise ValueError(f"dataset.num_val {d.num_val} leaves no training example of the "
                       f"{len(dataset)} in {d.name}.")
    kept, held_out = split_indices(len(dataset), d.num_val, seed=VAL_SEED)
    rows = held_out if split == "val" else kept
    dataset = dataclasses.replace(dataset, images=dataset.images[rows],
                                  labels=dataset.labels[rows])
  return dataset if split == "val" else dataset.take(d.num_train)


def build_model(config, dataset: data.ArrayDataset):
  """The configured model, normalising with `model.mean` / `model.std` when set, else with the
  dataset's channel statistics (with auxiliary BatchNorms when `model.aux_bn`, of base width
  `model.width` when it is not 0). ValueError when the set normalisation has another number
  of channels than the dataset's images."""
  extra = {"aux_bn": True} if config.model.aux_bn else {}
  if config.model.width:
    extra["width"] = config.model.width
  mean, std = dataset.mean, dataset.std
  if config.model.mean:
    channels = dataset.image_shape[-1]
    if len(config.model.mean) != channels:
      raise ValueError(f"invalid config: model.mean {config.model.mean} has "
                       f"{len(config.model.mean)} channels, the images of {dataset.name} "
                       f"{channels}.")
    mean, std = (tuple(float(v) for v in field)
                 for field in (config.model.mean, config.model.std))
  return models.get(config.model.name, num_classes=dataset.num_classes, mean=mean, std=std,
                    dtype=jnp.dtype(config.model.dtype), **extra)


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")  # scheme://..., e.g. gs://bucket/run


def local_dir(directory, what: str = "workdir") -> pathlib.Path:
  """`directory` as a local `pathlib.Path`; ValueError for a URL (`gs://bucket/run`, `s3://`,
  `file://`), which `pathlib` would turn into a local folder named "gs:".

  Decision (docs/engine.md, "Cloud storage"): jaxadv writes its run directories with local
  file operations (config.json, metrics.jsonl, TensorBoard events, eval.json and its journal,
  reports), so cloud paths are refused rather than half supported (orbax alone could write
  gs://).
  """
  text = str(directory)
  if _URL.match(text):
    raise ValueError(
        f"{what} {text!r} is a URL: jaxadv writes run directories with local file operations "
        "only, so it would create a local folder named "
        f"{text.split('/', 1)[0]!r}. Give a local path (on several hosts: one shared file "
        "system mounted at the same path on every host) and copy the run directory to the "
        "bucket afterwards (e.g. `gcloud storage cp -r runs/NAME gs://BUCKET/runs/`).")
  return pathlib.Path(directory)


def stage_dir(workdir, stage: methods.Stage) -> pathlib.Path:
  """Where `stage` of the run in `workdir` trains: `workdir` for the model stage, else
  `<workdir>/<stage name>`."""
  workdir = local_dir(workdir)
  return workdir / stage.name if stage.name else workdir


def read_config(directory):
  """The validated config of the run (or stage) directory `directory` (a local path:
  `local_dir`)."""
  path = local_dir(directory, "run directory") / "config.json"
  if not path.is_file():
    raise FileNotFoundError(f"{directory} is not a jaxadv run directory: {path} is missing.")
  return config_lib.from_json(path.read_text())


def prepare(config, directory) -> pathlib.Path:
  """Validates `config`, creates `directory` (a local path: `local_dir`) and writes (or
  checks) its config.json."""
  config_lib.validate(config)
  directory = local_dir(directory)
  directory.mkdir(parents=True, exist_ok=True)
  path = directory / "config.json"
  text = config_lib.to_json(config)
  if path.exists() and path.read_text() != text:
    raise ValueError(f"{directory} holds a run with a different config ({path}); resume it with "
                     "the same config or choose a new workdir.")
  path.write_text(text)
  return directory


def find_stage(config, name: str) -> methods.Stage:
  """The stage `name` of the method `config` selects; ValueError naming its stages otherwise."""
  stages = methods.get(config.objective.name).stages_of(config)
  for stage in stages:
    if stage.name == name:
      return stage
  raise ValueError(f"method {config.objective.name!r} has no stage {name!r}; its stages are "
                   f"{[s.name or '(model)' for s in stages]}.")


def context(config, dataset: data.ArrayDataset, mesh, stage: methods.Stage | None = None, *,
            inputs=None) -> methods.StageContext:
  """The `StageContext` of `stage` (default: the model's) of the run `config` trained on
  `dataset`."""
  batch_size = (stage and stage.batch_size) or config.batch_size
  return methods.StageContext(
      config=config, model=build_model(config, dataset), image_shape=dataset.image_shape,
      num_classes=dataset.num_classes, batch_size=batch_size,
      steps_per_epoch=data.steps_per_epoch(dataset, batch_size),
      inputs=dict(inputs or {}), restore=lambda directory, stage="": restore(directory, stage,
                                                                             mesh=mesh),
      open_run=lambda directory: open_run(directory, mesh=mesh),
      load=lambda split: load_dataset(config, split))


def predictor(config, variables, workdir, *, mesh=None, dataset=None):
  """(predictor, variables) that the evaluation scores for the model-stage `variables` of the
  run `config` in `workdir` (`jaxadv.methods.Method.predictor`; by default the configured model
  and `variables`). `dataset` (default: the test split) gives the model its input statistics.
  `workdir`, where the evaluation writes, is a local path or None (`local_dir`)."""
  workdir = None if workdir is None else local_dir(workdir)
  dataset = load_dataset(config, "test") if dataset is None else dataset
  method = methods.get(config.objective.name)
  if method.predictor is None:
    return build_model(config, dataset), variables
  return method.predictor(context(config, dataset, mesh, find_stage(config, "")), variables,
                          workdir)


def initial_state(stage: methods.Stage, ctx: methods.StageContext, total_steps: int):
  """(step-0 TrainState, optimizer, schedule) of `stage`: the seed's initialisation (the
  stage's own `init`, else the model's) and the stage's optimizer (else the config's `optim`
  group). Only the model stage keeps a moving average (`optim.ema_decay`)."""
  config = ctx.config
  if stage.optimizer is not None:
    tx, schedule = stage.optimizer(ctx, total_steps)
  else:
    tx, schedule = make_optimizer(config.optim, total_steps, ctx.steps_per_epoch)
  ema = not stage.name and config.optim.ema_decay > 0
  if stage.init is None:
    state = state_lib.create(ctx.model, tx, ctx.image_shape, config.seed, ema=ema)
  else:
    init_key, run_key = jax.random.split(jax.random.PRNGKey(config.seed))
    params, model_state = stage.init(ctx, init_key)
    state = state_lib.from_variables(params, model_state, tx, run_key, ema=ema)
  return state, tx, schedule


def restore(directory, stage: str = "", *, mesh=None, checkpoint: str = "last"):
  """(config, variables, step) of the newest intact checkpoint (`Checkpointer.restore`: `step`
  is the one restored) of stage `stage` ("" the model) trained in `directory` (a run directory
  for the model, the stage's own directory otherwise), or with `checkpoint="best"` of the best
  one the run kept (`<directory>/best`): variables
  {"params", **model_state}, or their moving average when the run keeps one, replicated over
  `mesh` when given.

  Raises FileNotFoundError when `directory` holds no run or no checkpoint, ValueError when its
  method has no such stage, and `CheckpointError` when no checkpoint step is intact.
  """
  config = read_config(directory)
  found = find_stage(config, stage)
  test_ds = load_dataset(config, "test")
  ctx = context(config, test_ds, mesh, found)
  target = jax.eval_shape(lambda: initial_state(found, ctx, 1)[0])
  if checkpoint not in ("last", BEST):
    raise ValueError(f"checkpoint must be 'last' or {BEST!r}, got {checkpoint!r}.")
  checkpointer = Checkpointer(pathlib.Path(directory) / BEST if checkpoint == BEST else directory,
                              max_to_keep=config.keep_checkpoints)
  try:
    restored = checkpointer.restore(target)
  finally:
    checkpointer.close()
  if restored is None:
    raise FileNotFoundError(f"no checkpoint in {checkpointer.directory}; train first"
                            f"{' with eval.checkpoint=best' if checkpoint == BEST else ''}.")
  step, state = restored
  variables = state_lib.variables(state)
  if mesh is not None:
    variables = jax.device_put(variables, sharding.replicated(mesh))
  return config, variables, step


def open_run(directory, *, mesh=None) -> methods.Run:
  """The trained run in `directory` as a report sees it (`jaxadv.methods.Run`)."""
  config, variables, step = restore(directory, mesh=mesh)
  test_set = load_dataset(config, "test")
  scored, scored_variables = predictor(config, variables, directory, mesh=mesh, dataset=test_set)
  return methods.Run(workdir=pathlib.Path(directory), config=config, variables=variables,
                     step=step, model=build_model(config, test_set), test_set=test_set,
                     restore=lambda other, stage="": restore(other, stage, mesh=mesh),
                     predictor=scored, predictor_variables=scored_variables)
