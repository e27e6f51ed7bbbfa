"""An evaluation run: a suite of attacks, the masking checks, and the reports on disk; for a
dataset with per-pixel labels, the segmentation evaluation (`jaxadv.eval.segmentation`)."""

from __future__ import annotations

import functools
import pathlib

import jax

from jaxadv.data import ArrayDataset
from jaxadv.eval import api, journal, report, segmentation, suites


def evaluate_suite(model, variables, dataset: ArrayDataset, *, suite, eps: float, norm: str,
                   step_size: float | None, batch_size: int, seed: int = 0, model_name: str = "",
                   checkpoint_step=None, checks: bool = True, out_dir=None, tag: str = "",
                   quiet: bool = False, architecture: str = "",
                   save_adversarial: bool = False):
  """Evaluates `suite` (attack names) on `dataset` with `api.evaluate`; prints the table and
  writes `eval.json` and `per_class.png` into `out_dir` when given (`eval_<tag>.json` and
  `per_class_<tag>.png` with a `tag`, so another evaluation keeps its files). Returns the JSON
  record.

  With an `out_dir`, scored batches are journaled in `eval[_<tag>].journal.npz` until the
  reports are written (`jaxadv.eval.journal`): rerunning a killed evaluation resumes it.
  `save_adversarial` also writes `adversarial[_<tag>].npz` (`EvaluationResult.save_adversarial`:
  the worst-case x_adv, labels, predictions); that evaluation keeps every attacked image, so
  it is not journaled.

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
  descriptions = {name: suites.describe(name, eps=eps, norm=norm, step_size=step)
                  for name in suite if name != "clean"}
  suffix = f"_{tag}" if tag else ""
  evaluation_journal = None if out_dir is None or save_adversarial else journal.EvalJournal(
      pathlib.Path(out_dir) / f"eval{suffix}.journal.npz",
      journal.fingerprint(variables, dataset.images, dataset.labels, attacks=descriptions,
                          num_classes=dataset.num_classes, seed=seed, batch_size=batch_size,
                          devices=jax.device_count()))
  evaluation = api.evaluate(
      model, dataset, variables=variables, suite=suite, eps=eps, norm=norm, step_size=step,
      batch_size=batch_size, seed=seed, checks=checks, name=model_name,
      architecture=architecture, checkpoint_step=checkpoint_step, journal=evaluation_journal,
      return_adversarial=save_adversarial,
      log=None if quiet else functools.partial(print, flush=True))
  if evaluation_journal and evaluation_journal.restored_points:
    print(f"resumed from {evaluation_journal.path}: {evaluation_journal.restored_points} "
          "point-attack outcomes were read from it instead of recomputed.")
  result, flags, record = evaluation.robustness, evaluation.flags, evaluation.record
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
    if save_adversarial:
      evaluation.save_adversarial(out_dir / f"adversarial{suffix}.npz")
    elif evaluation_journal:
      evaluation_journal.discard()
  return record
