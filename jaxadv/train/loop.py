"""The training runs (a classifier, or NAMID's MI estimators) and the evaluation of a run's
workdir, as importable functions.

`train(config, workdir)` resumes from the latest checkpoint in `workdir` when there is one:
batches, randomness and the schedule are functions of the step, so a resumed run computes
exactly what an uninterrupted run would have. On SIGTERM (a preemption notice) it saves the
current step, waits for the save to finish and raises `Preempted`; running it again resumes.
A workdir without a checkpoint starts from the seed's initialisation, or, with
`config.init_from`, from the latest parameters of that run directory (a fine-tune).
"""

from __future__ import annotations

import contextlib
import math
import pathlib
import re
import signal
import threading

import jax
import jax.numpy as jnp
from tqdm import tqdm

from jaxadv import config as config_lib
from jaxadv import data, models, objectives
from jaxadv.eval import mutual_info, robustness, runner, suites, vulnerability
from jaxadv.models import BoundModel
from jaxadv.objectives.namid_estimators import estimator_objective
from jaxadv.train import mesh as mesh_lib
from jaxadv.train import namid_stage
from jaxadv.train import state as state_lib
from jaxadv.train.checkpoint import Checkpointer
from jaxadv.train.metrics import MetricsLog
from jaxadv.train.step import make_optimizer, make_train_step


def load_dataset(config, split: str) -> data.ArrayDataset:
  """The configured dataset split, cut to dataset.num_train / num_test examples."""
  dataset = data.load(config.dataset.name, split, data_dir=config.dataset.data_dir or None,
                      download=config.dataset.download)
  return dataset.take(config.dataset.num_train if split == "train" else config.dataset.num_test)


def build_model(config, dataset: data.ArrayDataset):
  """The configured model, normalising with the dataset's channel statistics."""
  return models.get(config.model.name, num_classes=dataset.num_classes, mean=dataset.mean,
                    std=dataset.std, dtype=jnp.dtype(config.model.dtype))


class NonFiniteLoss(FloatingPointError):
  """The logged training loss became NaN or infinite; the run stopped without saving it."""

  def __init__(self, step: int, workdir, last_saved):
    super().__init__(
        f"the training loss is not finite in the steps logged at step {step}; stopped without "
        f"saving. The latest checkpoint in {workdir} is step {last_saved}. Lower the learning "
        "rate or the loss weights, or inspect metrics.jsonl for the first bad row.")
    self.step = step


class Preempted(RuntimeError):
  """Training stopped on SIGTERM after saving its current step; run it again to resume."""

  def __init__(self, step: int, workdir):
    super().__init__(f"preempted (SIGTERM): saved step {step} in {workdir}; run the same "
                     "command again to resume from it.")
    self.step = step


@contextlib.contextmanager
def _sigterm_flag():
  """Yields a list that becomes non-empty once SIGTERM arrives (main thread of a single-host
  run only; multi-host runs rely on orbax's synchronised `reached_preemption`)."""
  received = []
  if threading.current_thread() is not threading.main_thread() or jax.process_count() > 1:
    yield received
    return
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
  try:
    yield received
  finally:
    signal.signal(signal.SIGTERM, previous)


def _monitor(config, model, mesh):
  """`variables -> {"test_clean": %, "test_pgdN": %}` on the first eval.monitor_examples test
  points (compiled once for the run), or None when eval.monitor_every_epochs is 0."""
  e = config.eval
  if e.monitor_every_epochs <= 0:
    return None
  test_ds = load_dataset(config, "test").take(e.monitor_examples)
  name = f"pgd{e.monitor_steps}"
  attacks = suites.build([name], eps=e.eps, norm=e.norm, num_classes=test_ds.num_classes,
                         step_size=e.step_size)
  evaluator = robustness.Evaluator(model, test_ds, batch_size=e.batch_size, mesh=mesh)

  def monitor(variables):
    accuracy = evaluator(variables, attacks, seed=config.seed).accuracy()
    return {"test_clean": accuracy["clean"], f"test_{name}": accuracy[name]}
  return monitor


def _write_config(config, workdir: pathlib.Path) -> None:
  path = workdir / "config.json"
  text = config_lib.to_json(config)
  if path.exists() and path.read_text() != text:
    raise ValueError(f"{workdir} holds a run with a different config ({path}); resume it with "
                     "the same config or choose a new workdir.")
  path.write_text(text)


def _initialised_from(state, config, mesh):
  """`state` with the params and batch_stats (and EMA) of the latest checkpoint of the run
  `config.init_from`; `state` itself when that field is empty."""
  if not config.init_from:
    return state
  base_config, variables, _ = restore_variables(config.init_from)
  if base_config.model.name != config.model.name:
    raise ValueError(f"init_from {config.init_from} holds a {base_config.model.name}, not a "
                     f"{config.model.name}.")
  variables = jax.device_put(variables, mesh_lib.replicated(mesh))
  ema = None if state.ema is None else jax.tree.map(jnp.copy, variables)
  return state.replace(params=variables["params"], batch_stats=variables["batch_stats"], ema=ema)


def prepare_workdir(config, workdir) -> pathlib.Path:
  """Validates `config`, creates `workdir` and writes (or checks) its config.json."""
  config_lib.validate(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  _write_config(config, workdir)
  return workdir


def run_steps(config, workdir, state, train_step, train_ds, mesh, schedule, *,
              initialise=None, monitor=None, stop_after_step: int | None = None,
              progress: bool = True):
  """Runs `train_step` over `config.num_epochs` epochs of `train_ds`; returns the final state.

  The loop every training stage shares: resume from the latest checkpoint in `workdir` (else
  `initialise(state)`, when given), deterministic batches from the resumed step, JSONL and
  TensorBoard metrics every `config.log_every_steps`, `monitor(variables) -> metrics` every
  `config.eval.monitor_every_epochs`, checkpoints every `config.checkpoint_every_steps` and at
  the end (each preceded by a metrics row), and save-then-`Preempted` on SIGTERM. A logged
  loss that is NaN or infinite raises `NonFiniteLoss` before that step is saved, so no
  checkpoint holds a diverged state (the check rides on the logging transfer: no extra host
  round trip in the hot path). `stop_after_step` ends the run after that step
  without a final save, as a killed process would (for tests of resumption).
  """
  steps_per_epoch = data.steps_per_epoch(train_ds, config.batch_size)
  total_steps = steps_per_epoch * config.num_epochs
  checkpointer = Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
  restored = checkpointer.restore(state)
  if restored is not None:
    state = restored
  elif initialise is not None:
    state = initialise(state)
  start = int(state.step)
  batches = data.prefetch(data.train_batches(train_ds, config.batch_size, config.seed, start,
                                             jax.process_index(), jax.process_count()),
                          lambda batch: mesh_lib.put_batch(batch, mesh))
  log = MetricsLog(workdir)
  end = total_steps if stop_after_step is None else min(total_steps, stop_after_step)
  sync_each_step = mesh_lib.must_sync_each_step(mesh)
  monitor_every = max(1, round(config.eval.monitor_every_epochs * steps_per_epoch))
  bar = tqdm(range(start, end), initial=start, total=total_steps, disable=not progress,
             desc=config.name, unit="step")
  with _sigterm_flag() as sigterm:
    for step in bar:
      state, metrics = train_step(state, next(batches))
      if sync_each_step:
        jax.block_until_ready(metrics)
      log.add(metrics)
      done = step + 1
      save = done % config.checkpoint_every_steps == 0 or done == total_steps
      if save or done % config.log_every_steps == 0:
        row = log.flush(done, epoch=done / steps_per_epoch, lr=float(schedule(step)))
        bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['accuracy']:.3f}")
        if not math.isfinite(row["loss"]):
          last_saved = checkpointer.latest_step()
          _close(bar, log, checkpointer)
          raise NonFiniteLoss(done, workdir, last_saved)
      if monitor is not None and (done % monitor_every == 0 or done == total_steps):
        log.write(done, dict(monitor(state_lib.variables(state)), epoch=done / steps_per_epoch),
                  prefix="test/")
      if sigterm or checkpointer.reached_preemption(done):
        log.flush(done, epoch=done / steps_per_epoch, lr=float(schedule(step)))
        checkpointer.save(done, state, force=True)
        _close(bar, log, checkpointer)
        raise Preempted(done, workdir)
      if save:
        checkpointer.save(done, state)
  _close(bar, log, checkpointer)
  return state


def _close(bar, log: MetricsLog, checkpointer: Checkpointer) -> None:
  """Ends a training loop: the progress bar, the metrics files, pending checkpoint saves."""
  bar.close()
  log.close()
  checkpointer.close()


def train(config, workdir, *, stop_after_step: int | None = None, progress: bool = True):
  """Trains (or resumes) the classifier run in `workdir` (`run_steps`); returns the final
  TrainState. Raises `Preempted` after saving when SIGTERM arrives."""
  workdir = prepare_workdir(config, workdir)
  train_ds = load_dataset(config, "train")
  model = build_model(config, train_ds)
  mesh = mesh_lib.data_mesh()
  mesh_lib.check_divisible(config.batch_size, mesh)
  steps_per_epoch = data.steps_per_epoch(train_ds, config.batch_size)
  tx, schedule = make_optimizer(config.optim, steps_per_epoch * config.num_epochs,
                                steps_per_epoch)
  state = state_lib.create(model, tx, train_ds.image_shape, config.seed,
                           ema=config.optim.ema_decay > 0)
  state = jax.device_put(state, mesh_lib.replicated(mesh))
  estimators = None
  if config.objective.name == "namid":
    estimators = namid_stage.load(config.objective.namid_estimators, mesh)
  objective = objectives.build(config.objective.name, model, config.attack,
                               config.objective.attack_mode,
                               int(config.attack.warmup_epochs * steps_per_epoch),
                               options=config.objective, namid_estimators=estimators)
  train_step = make_train_step(objective, tx, mesh, ema_decay=config.optim.ema_decay,
                               augment=data.augment.get(config.dataset.augment))
  return run_steps(config, workdir, state, train_step, train_ds, mesh, schedule,
                   initialise=lambda state: _initialised_from(state, config, mesh),
                   monitor=_monitor(config, model, mesh), stop_after_step=stop_after_step,
                   progress=progress)


def train_estimators(config, workdir, *, stop_after_step: int | None = None,
                     progress: bool = True):
  """NAMID's estimator stage (`jaxadv.objectives.namid_estimators`): trains (or resumes) the
  natural and adversarial MI estimators in `workdir` on the frozen classifier of the run
  `config.init_from` (eval mode), with x_adv from the configured training attack, Adam with
  `config.mi.lr` and the `config.mi` architecture and DV variant. Returns the final TrainState
  (params {"natural", "adversarial"}); checkpoints and resumption as `run_steps`.
  """
  if not config.init_from:
    raise ValueError("the estimator stage needs init_from: the run directory of the "
                     "(adversarially trained) classifier whose outputs the estimators score.")
  workdir = prepare_workdir(config, workdir)
  train_ds = load_dataset(config, "train")
  mesh = mesh_lib.data_mesh()
  mesh_lib.check_divisible(config.batch_size, mesh)
  classifier = _frozen_classifier(config, train_ds, mesh)
  steps_per_epoch = data.steps_per_epoch(train_ds, config.batch_size)
  state = jax.device_put(namid_stage.create_state(config, train_ds), mesh_lib.replicated(mesh))
  objective = estimator_objective(namid_stage.estimator_module(config), classifier, config.attack,
                                  dv_variant=config.mi.dv_variant, objective=config.mi.objective,
                                  eps_warmup_steps=int(config.attack.warmup_epochs *
                                                       steps_per_epoch))
  tx = namid_stage.optimizer(config)
  train_step = make_train_step(objective, tx, mesh)
  return run_steps(config, workdir, state, train_step, train_ds, mesh,
                   lambda step: config.mi.lr, stop_after_step=stop_after_step,
                   progress=progress)


def _frozen_classifier(config, dataset, mesh) -> BoundModel:
  """The eval-mode classifier of the latest checkpoint of `config.init_from`, replicated."""
  base_config, variables, _ = restore_variables(config.init_from)
  if base_config.model.name != config.model.name or base_config.dataset.name != config.dataset.name:
    raise ValueError(f"init_from {config.init_from} holds a {base_config.model.name} on "
                     f"{base_config.dataset.name}, not a {config.model.name} on "
                     f"{config.dataset.name}.")
  variables = jax.device_put(variables, mesh_lib.replicated(mesh))
  return BoundModel(build_model(config, dataset), variables, "eval")


def mi_report(workdir, estimators_dir, *, num_examples: int = 0, batch_size: int = 0,
              out_dir=None) -> dict:
  """Natural and adversarial MI (`jaxadv.eval.mutual_info`) of the latest checkpoint of the
  classifier run `workdir`, scored by the estimators of `estimators_dir`, under PGD-20 at the
  run's evaluation eps and step; batches of the estimators' training batch size unless
  `batch_size` is given. Prints the table and writes mi.json into `out_dir` (default
  `workdir`). Returns the record."""
  config, variables, step = restore_variables(workdir)
  estimators = namid_stage.load(estimators_dir)
  test_ds = load_dataset(config, "test").take(num_examples)
  e = config.eval
  record = mutual_info.measure(build_model(config, test_ds), variables, estimators, test_ds,
                               eps=e.eps, norm=e.norm, step_size=e.step_size, steps=20,
                               batch_size=batch_size or
                               namid_stage.read_config(estimators_dir).batch_size,
                               seed=config.seed)
  record.update(checkpoint_step=step, run=str(workdir), estimators=str(estimators_dir))
  print(f"\n{config.name} (step {step}): MI of its outputs on {record['n']} test points, "
        f"{record['attack']}, estimators {estimators_dir} (DV {record['dv_variant']}, batches of "
        f"{record['batch_size']}); clean {record['clean_acc']:.2f}%, attacked "
        f"{record['adv_acc']:.2f}%\n")
  print(mutual_info.markdown_table(record))
  mutual_info.write(record, out_dir or workdir)
  return record


def evaluate_state(config, variables, *, checkpoint_step=None, workdir=None, suite=None,
                   num_examples: int = 0, checks=None, tag: str = ""):
  """Evaluates `variables` on the test split with the configured (or given) suite; prints
  the table and, with a workdir, writes eval.json and per_class.png there (eval_<tag>.json and
  per_class_<tag>.png with a tag)."""
  test_ds = load_dataset(config, "test")
  if num_examples > 0:
    test_ds = test_ds.take(num_examples)
  e = config.eval
  return runner.evaluate_suite(
      build_model(config, test_ds), variables, test_ds, suite=suite or e.suite, eps=e.eps,
      norm=e.norm, step_size=e.step_size, batch_size=e.batch_size, seed=config.seed,
      model_name=f"{config.name} ({config.model.name})", checkpoint_step=checkpoint_step,
      checks=e.masking_checks if checks is None else checks, out_dir=workdir, tag=tag)


def train_and_evaluate(config, workdir, *, progress: bool = True):
  """`train`, then `evaluate_state` of the final parameters; returns the eval record."""
  state = train(config, workdir, progress=progress)
  return evaluate_state(config, state_lib.variables(state), checkpoint_step=int(state.step),
                        workdir=workdir)


def restore_variables(workdir):
  """(config, variables, step) of the latest checkpoint of the run in `workdir`."""
  workdir = pathlib.Path(workdir)
  config_path = workdir / "config.json"
  if not config_path.is_file():
    raise FileNotFoundError(f"{workdir} is not a jaxadv run directory: {config_path} is missing.")
  config = config_lib.from_json(config_path.read_text())
  test_ds = load_dataset(config, "test")
  model = build_model(config, test_ds)
  tx, _ = make_optimizer(config.optim, 1, 1)
  target = jax.eval_shape(lambda: state_lib.create(model, tx, test_ds.image_shape, config.seed,
                                                   ema=config.optim.ema_decay > 0))
  checkpointer = Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
  step = checkpointer.latest_step()
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {checkpointer.directory}; train first.")
  state = checkpointer.restore(target, step)
  checkpointer.close()
  return config, state_lib.variables(state), step


def vulnerability_workdir(workdir, *, num_examples: int = 0, steps: int = 10):
  """Per-class vulnerability θ̂ (`jaxadv.eval.vulnerability`) of the latest checkpoint of the
  run in `workdir` at its evaluation eps; prints the table, writes vulnerability.json and .png."""
  config, variables, step = restore_variables(workdir)
  test_ds = load_dataset(config, "test").take(num_examples)
  record = vulnerability.measure(build_model(config, test_ds), variables, test_ds,
                                 eps=config.eval.eps, norm=config.eval.norm, steps=steps,
                                 batch_size=config.eval.batch_size, seed=config.seed)
  record["checkpoint_step"] = step
  print(f"\n{config.name} (step {step}) on {record['n_ex']} test points of {test_ds.name}: "
        f"{record['treatment']}; outcome {record['outcome']}\n")
  print(vulnerability.markdown_table(record))
  print("\nθ̂-weighted ADML fine-tune of this run: objective.adml_theta="
        f"{tuple(record['adml_theta'])}")
  vulnerability.write(record, workdir, title=f"{config.name}: per-class vulnerability")
  return record


def evaluate_workdir(workdir, *, suite=None, num_examples: int = 0, checks=None, tag: str = ""):
  """Evaluates the latest checkpoint of the run in `workdir` (its config.json decides how,
  unless `suite`, `num_examples` or `checks` override it); `tag` names its output files as
  `evaluate_state` does.

  Raises ValueError for a tag other than letters, digits, '_', '-' and '.'.
  """
  if tag and not re.fullmatch(r"[A-Za-z0-9_.-]+", tag):
    raise ValueError(f"bad eval tag {tag!r}: use letters, digits, '_', '-' and '.' only.")
  config, variables, step = restore_variables(workdir)
  return evaluate_state(config, variables, checkpoint_step=step, workdir=workdir, suite=suite,
                        num_examples=num_examples, checks=checks, tag=tag)
