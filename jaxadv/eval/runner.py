"""An evaluation run: a suite of attacks, the masking checks, and the reports on disk; for a
dataset with per-pixel labels, the segmentation evaluation (`jaxadv.eval.segmentation`)."""

from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv.attacks import pgd
from jaxadv.data import ArrayDataset
from jaxadv.eval import journal, masking, report, robustness, segmentation, suites
from jaxadv.models import bind

EPS_SCALES = (0.25, 0.5, 1.0, 2.0)


def masking_checks(model, variables, dataset: ArrayDataset, result: robustness.RobustnessResult,
                   *, eps: float, norm: str, step_size: float, batch_size: int, seed: int,
                   num_points: int = 256) -> list[masking.Flag]:
  """Runs every check of `jaxadv.eval.masking` on the first `num_points` points."""
  subset = dataset.take(num_points)
  x, y = jnp.asarray(subset.images), jnp.asarray(subset.labels)
  apply_fn = bind(model, variables)
  flags = [masking.check_randomness(apply_fn, x), masking.check_zero_gradients(apply_fn, x, y),
           masking.check_softmax_outputs(apply_fn, x)]
  if eps > 0:
    sweep = {f"pgd@{s * eps:.4g}": functools.partial(pgd, eps=s * eps, step_size=s * step_size,
                                                     steps=20, norm=norm) for s in EPS_SCALES}
    swept = robustness.evaluate(model, variables, subset, sweep, batch_size=batch_size, seed=seed)
    flags.append(masking.check_eps_monotonicity(
        {s * eps: 100.0 * float(np.mean(swept.correct[name])) for s, name in zip(EPS_SCALES, sweep)}))
  for stages in result.stages.values():
    if "square" in stages and len(stages) > 1:
      names = list(stages)
      before = stages[names[names.index("square") - 1]]
      flags.append(masking.check_black_box_gain(before, stages["square"]))
  return flags


def evaluate_suite(model, variables, dataset: ArrayDataset, *, suite, eps: float, norm: str,
                   step_size: float | None, batch_size: int, seed: int = 0, model_name: str = "",
                   checkpoint_step=None, checks: bool = True, out_dir=None, tag: str = "",
                   quiet: bool = False):
  """Evaluates `suite` (attack names) on `dataset`; prints the table and writes
  `eval.json` and `per_class.png` into `out_dir` when given (`eval_<tag>.json` and
  `per_class_<tag>.png` with a `tag`, so another evaluation keeps its files). Returns the JSON
  record.

  With an `out_dir`, scored batches are journaled in `eval[_<tag>].journal.npz` until the
  reports are written (`jaxadv.eval.journal`): rerunning a killed evaluation resumes it.

  A dense `dataset` (per-pixel labels) is evaluated by `segmentation.evaluate_segmentation`
  instead: pixel accuracy and mIoU into the same `eval[_<tag>].json`, without the masking
  checks (`checks` is ignored: they are classification-only), the journal or the chart.
  """
  if dataset.dense:
    return segmentation.evaluate_segmentation(
        model, variables, dataset, suite=suite, eps=eps, norm=norm, step_size=step_size,
        batch_size=batch_size, seed=seed, model_name=model_name,
        checkpoint_step=checkpoint_step, out_dir=out_dir, tag=tag, quiet=quiet)
  step = eps / 4 if step_size is None else step_size
  attacks = suites.build(suite, eps=eps, norm=norm, num_classes=dataset.num_classes,
                         step_size=step)
  descriptions = {name: suites.describe(name, eps=eps, norm=norm, step_size=step)
                  for name in attacks}
  log = None if quiet else functools.partial(print, flush=True)
  suffix = f"_{tag}" if tag else ""
  evaluation_journal = None if out_dir is None else journal.EvalJournal(
      pathlib.Path(out_dir) / f"eval{suffix}.journal.npz",
      journal.fingerprint(variables, dataset.images, dataset.labels, attacks=descriptions,
                          num_classes=dataset.num_classes, seed=seed, batch_size=batch_size,
                          devices=jax.device_count()))
  result = robustness.evaluate(model, variables, dataset, attacks, batch_size=batch_size,
                               seed=seed, journal=evaluation_journal, log=log)
  if evaluation_journal and evaluation_journal.restored_points:
    print(f"resumed from {evaluation_journal.path}: {evaluation_journal.restored_points} "
          "point-attack outcomes were read from it instead of recomputed.")
  flags = masking_checks(model, variables, dataset, result, eps=eps, norm=norm, step_size=step,
                         batch_size=batch_size, seed=seed) if checks else []
  record = report.to_record(
      result, dataset=dataset.name, norm=norm, eps=eps, model=model_name,
      checkpoint_step=checkpoint_step, flags=flags, attacks=descriptions)
  if not quiet:
    print(f"\n{model_name} on {record['n_ex']} test points of {dataset.name}, {norm} eps={eps:.4g}, "
          "model in eval mode")
    for name, text in record["attacks"].items():
      print(f"  {name}: {text}")
    print()
    print(report.markdown_table(result))
    if flags:
      print("\nGradient-masking checks:\n" + report.flags_text(flags))
  if out_dir is not None:
    out_dir = pathlib.Path(out_dir)
    report.write_json(record, out_dir / f"eval{suffix}.json")
    report.per_class_bar_chart(result, out_dir / f"per_class{suffix}.png",
                               title=f"{model_name} on {dataset.name}, {norm} eps={eps:.4g}")
    evaluation_journal.discard()
  return record
