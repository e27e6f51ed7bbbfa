"""Natural and adversarial MI of a classifier's outputs on a test set (NAMID's measurement),
and the `mi` report of a trained run.

With NAMID's two trained estimators (`jaxadv.methods.namid.NamidEstimators`), every test batch of
N points is attacked (PGD in eval mode) and the four per-sample DV estimates of
`jaxadv.methods.namid.objective.mi_estimates` are taken over the batch:

    Î_N(h(x)), Î_N(h(x_adv))      natural MI of the clean and of the adversarial output
    Î_A(h(x)), Î_A(h(x_adv))      adversarial MI of the clean and of the adversarial output

The report gives their means over all points and over the selection (clean-correct and
adversarially wrong, the samples NAMID trains on). A DV estimate depends on its batch (the
other samples are its negatives), so the report uses one fixed batch size, that of the
estimators' training by default, and leaves out the last incomplete batch.
"""

from __future__ import annotations

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv.attacks import pgd
from jaxadv.data import ArrayDataset
from jaxadv.methods.namid.estimators import batch_estimates
from jaxadv.methods.namid.objective import NamidEstimators, selection_mask
from jaxadv.models import BoundModel

ESTIMATES = ("natural_clean", "natural_adv", "adversarial_clean", "adversarial_adv")


@functools.partial(jax.jit, static_argnames=("estimator", "steps", "norm", "dv_variant"))
def _batch_report(estimator, params, classifier, x, y, key, *, eps, step_size, steps: int,
                  norm: str, dv_variant: str):
  """The four estimates (B,), the selection (B,) and the clean and adversarial correctness (B,)
  of one batch attacked by PGD-`steps` from a random start."""
  x_adv = pgd(classifier, x, y, key, eps=eps, step_size=step_size, steps=steps, norm=norm)
  out = batch_estimates(estimator, params, classifier, x, x_adv, dv_variant=dv_variant)
  clean_correct = jnp.argmax(out["clean_logits"], -1) == y
  adv_correct = jnp.argmax(out["adv_logits"], -1) == y
  selected = selection_mask(out["clean_logits"], out["adv_logits"], y)
  return {**{name: out[name] for name in ESTIMATES}, "selected": selected,
          "clean_correct": clean_correct, "adv_correct": adv_correct}


def measure(model, variables, estimators: NamidEstimators, dataset: ArrayDataset, *, eps: float,
            norm: str, step_size: float, steps: int = 20, batch_size: int = 128,
            seed: int = 0) -> dict:
  """Mean MI estimates of `model` with `variables` (eval mode) on `dataset`.

  Returns a JSON-ready record: n (points used: whole batches of `batch_size` >= 2), n_selected,
  batch_size, the attack, dv_variant, clean and PGD accuracy (%) of those points, and
  "all" / "selected": {estimate name: mean} over all points and over the selection (None
  when nothing is selected). Raises ValueError when the dataset has no whole batch.
  """
  if batch_size < 2 or len(dataset) < batch_size:
    raise ValueError(f"the MI report needs whole batches of >= 2 points; got batch size "
                     f"{batch_size} for {len(dataset)} points.")
  classifier = BoundModel(model, variables, "eval")
  params = {"natural": estimators.natural["params"],
            "adversarial": estimators.adversarial["params"]}
  key = jax.random.PRNGKey(seed)
  parts = []
  for index in range(len(dataset) // batch_size):
    rows = slice(index * batch_size, (index + 1) * batch_size)
    out = _batch_report(estimators.module, params, classifier, dataset.images[rows],
                        dataset.labels[rows], jax.random.fold_in(key, index), eps=eps,
                        step_size=step_size, steps=steps, norm=norm,
                        dv_variant=estimators.dv_variant)
    parts.append(jax.device_get(out))
  columns = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
  selected = columns["selected"]
  mean_of = lambda rows: ({name: float(np.mean(columns[name][rows])) for name in ESTIMATES}
                          if np.any(rows) else None)
  return {"n": int(selected.size), "n_selected": int(selected.sum()), "batch_size": batch_size,
          "attack": f"pgd{steps} {norm} eps={eps:g} step={step_size:g}",
          "dv_variant": estimators.dv_variant,
          "clean_acc": 100.0 * float(np.mean(columns["clean_correct"])),
          "adv_acc": 100.0 * float(np.mean(columns["adv_correct"])),
          "all": mean_of(np.ones_like(selected)), "selected": mean_of(selected)}


def markdown_table(record: dict) -> str:
  """Rows: output (clean, adversarial) x points (all, selected); columns Î_N and Î_A."""
  lines = ["| points | output | natural MI Î_N | adversarial MI Î_A |", "|---|---|---:|---:|"]
  for points in ("all", "selected"):
    means = record[points]
    label = f"{points} ({record['n'] if points == 'all' else record['n_selected']})"
    for output, suffix in (("clean h(x)", "clean"), ("adversarial h(x_adv)", "adv")):
      cells = (["-", "-"] if means is None else
               [f"{means[f'{kind}_{suffix}']:.4f}" for kind in ("natural", "adversarial")])
      lines.append(f"| {label} | {output} | {cells[0]} | {cells[1]} |")
  return "\n".join(lines)


def write(record: dict, out_dir) -> pathlib.Path:
  """Writes `record` to `<out_dir>/mi.json`; returns the path."""
  path = pathlib.Path(out_dir) / "mi.json"
  path.write_text(json.dumps(record, indent=2))
  return path


def report(run, estimators: NamidEstimators, *, estimators_dir, estimators_batch_size: int,
           num_examples: int = 0, batch_size: int = 0, out_dir=None) -> dict:
  """MI of the latest checkpoint of `run` (a `jaxadv.methods.Run`) scored by `estimators`
  (trained in `estimators_dir`), under PGD-20 at the run's evaluation eps and step, on its
  first `num_examples` test points (0: all), in batches of `batch_size` (0: the estimators'
  training batch size, `estimators_batch_size`). Prints the table and writes mi.json into
  `out_dir` (default: the run directory). Returns the record."""
  config = run.config
  e = config.eval
  record = measure(run.model, run.variables, estimators, run.test_set.take(num_examples),
                   eps=e.eps, norm=e.norm, step_size=e.step_size, steps=20,
                   batch_size=batch_size or estimators_batch_size, seed=config.seed)
  record.update(checkpoint_step=run.step, run=str(run.workdir), estimators=str(estimators_dir))
  print(f"\n{config.name} (step {run.step}): MI of its outputs on {record['n']} test points, "
        f"{record['attack']}, estimators {estimators_dir} (DV {record['dv_variant']}, batches of "
        f"{record['batch_size']}); clean {record['clean_acc']:.2f}%, attacked "
        f"{record['adv_acc']:.2f}%\n")
  print(markdown_table(record))
  write(record, out_dir or run.workdir)
  return record
