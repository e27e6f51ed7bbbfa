"""What a trained run reports: its evaluation (clean and the attack suite, per class, masking
checks; pixel accuracy and mIoU for a dataset with per-pixel labels), its accuracy under natural
shifts, and the reports its methods offer (`jaxadv.methods.reports`, e.g. "vulnerability").
"""

from __future__ import annotations

import json
import pathlib
import re

from jaxadv import methods, sharding
from jaxadv import config as config_lib
from jaxadv.eval import runner
from jaxadv.eval import shifts as shifts_lib
from jaxadv.train import state as state_lib
from jaxadv.train import workdir as workdir_lib
from jaxadv.train.stages import MODEL, train


def evaluate_state(config, variables, *, checkpoint_step=None, workdir=None, suite=None,
                   num_examples: int = 0, checks=None, tag: str = "", checkpoint: str = "last",
                   save_adversarial: bool = False):
  """Evaluates what the run's method scores for the model-stage `variables` (of the
  `checkpoint` "last" or "best", as the report names it; `workdir.predictor`: the model itself,
  or e.g. a defended model) on the test split with the configured (or given) suite; prints the
  table and, with a workdir, writes eval.json and per_class.png there (eval_<tag>.json and
  per_class_<tag>.png with a tag; with `save_adversarial`, adversarial[_<tag>].npz). A test
  split with per-pixel labels gets the segmentation evaluation (`runner.evaluate_suite`)."""
  test_ds = workdir_lib.load_dataset(config, "test")
  if num_examples > 0:
    test_ds = test_ds.take(num_examples)
  e = config.eval
  predictor, variables = workdir_lib.predictor(config, variables, workdir, dataset=test_ds)
  return runner.evaluate_suite(
      predictor, variables, test_ds, suite=suite or e.suite,
      eps=e.eps, norm=e.norm, step_size=e.step_size, batch_size=e.batch_size, seed=config.seed,
      model_name=f"{config.name} ({config.model.name}"
                 f"{', best checkpoint' if checkpoint == workdir_lib.BEST else ''})",
      checkpoint_step=checkpoint_step, architecture=config.model.name,
      checks=e.masking_checks if checks is None else checks, out_dir=workdir, tag=tag,
      save_adversarial=save_adversarial)


def train_and_evaluate(config, workdir, *, stages=None, progress: bool = True):
  """`train` (all stages, or those named in `stages`), then, when the model stage was among
  them, `evaluate_state` of its final variables; returns the eval record, or None."""
  state = train(config, workdir, stages=stages, progress=progress)
  if stages is not None and MODEL not in stages:
    return None
  if config.eval.checkpoint == workdir_lib.BEST:
    _, variables, step = workdir_lib.restore(workdir, checkpoint=workdir_lib.BEST)
  else:
    variables, step = state_lib.variables(state), int(state.step)
  return evaluate_state(config, variables, checkpoint_step=step, workdir=workdir,
                        checkpoint=config.eval.checkpoint)


def _check_tag(tag: str) -> None:
  if tag and not re.fullmatch(r"[A-Za-z0-9_.-]+", tag):
    raise ValueError(f"bad eval tag {tag!r}: use letters, digits, '_', '-' and '.' only.")


def evaluate_workdir(workdir, *, suite=None, num_examples: int = 0, checks=None, tag: str = "",
                     checkpoint: str | None = None, overrides=(),
                     save_adversarial: bool = False):
  """Evaluates the latest (or, with `checkpoint="best"`, the best) checkpoint of the run in
  `workdir` (its config.json decides how, `eval.checkpoint` included, unless `suite`,
  `num_examples`, `checks` or `checkpoint` override it, or `overrides`, "eval.eps=8/255"
  strings, change the config for this evaluation only; config.json is left alone); `tag` and
  `save_adversarial` name its output files as `evaluate_state` does.

  Raises ValueError for a tag other than letters, digits, '_', '-' and '.'.
  """
  _check_tag(tag)
  checkpoint = checkpoint or workdir_lib.read_config(workdir).eval.checkpoint
  config, variables, step = workdir_lib.restore(workdir, checkpoint=checkpoint)
  if overrides:
    config = config_lib.validate(config_lib.apply_overrides(config, overrides))
  return evaluate_state(config, variables, checkpoint_step=step, workdir=workdir, suite=suite,
                        num_examples=num_examples, checks=checks, tag=tag, checkpoint=checkpoint,
                        save_adversarial=save_adversarial)


def evaluate_shifts_workdir(workdir, shifts, *, num_examples: int = 0, tag: str = "shifts",
                           checkpoint: str | None = None) -> dict:
  """Clean accuracy of the run in `workdir` (its latest, or "best", checkpoint) on its test
  split under each natural shift in `shifts` (`jaxadv.data.shifts`); prints the table and
  writes eval_<tag>.json into the run directory. Per-image labels only."""
  _check_tag(tag)
  checkpoint = checkpoint or workdir_lib.read_config(workdir).eval.checkpoint
  config, variables, step = workdir_lib.restore(workdir, checkpoint=checkpoint)
  test_ds = workdir_lib.load_dataset(config, "test")
  if test_ds.dense:
    raise ValueError("--shifts scores per-image accuracy; dataset "
                     f"{config.dataset.name!r} has per-pixel labels.")
  if num_examples > 0:
    test_ds = test_ds.take(num_examples)
  predictor, variables = workdir_lib.predictor(config, variables, workdir, dataset=test_ds)
  record = shifts_lib.evaluate_shifts(predictor, variables, test_ds, tuple(shifts),
                                      batch_size=config.eval.batch_size, seed=config.seed)
  record.update(model=f"{config.name} ({config.model.name})", checkpoint_step=step)
  print(f"\n{record['model']} on {record['n_ex']} test points of {record['dataset']}, "
        "natural shifts (jaxadv.data.shifts)\n\n| input | accuracy |\n|---|---:|")
  for name, value in record["accuracy"].items():
    print(f"| {name} | {value:.2f} |")
  path = pathlib.Path(workdir) / f"eval_{tag}.json"
  path.write_text(json.dumps(record, indent=2) + "\n")
  return record


def report(name: str, workdir, *, num_examples: int = 0, **options) -> dict:
  """Runs the report `name` (one of `jaxadv.methods.reports()`) on the latest checkpoint of the
  run in `workdir`; `options` are the report's own (`Report.options`). Returns its record."""
  available = methods.reports()
  if name not in available:
    raise ValueError(f"unknown report {name!r}; choose one of {sorted(available)}.")
  chosen = available[name]
  unknown = set(options) - set(chosen.options)
  if unknown:
    raise ValueError(f"report {name!r} has no option(s) {sorted(unknown)}; its options are "
                     f"{sorted(chosen.options)}.")
  run = workdir_lib.open_run(workdir, mesh=sharding.data_mesh())
  return chosen.measure(run, num_examples=num_examples, **options)
