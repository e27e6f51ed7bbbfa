"""Sweeps: one config run over seeds and a grid of overrides, with a mean ± std summary.

Each combination of grid values and seed trains (or resumes) in its own work directory,
`<root>/<field=value,...>/seed<k>`, then is evaluated; a run that already holds `eval.json` is
not redone. The summary (`<root>/sweep.json` and `sweep.md`) gives, per grid point and
attack, the accuracy (mIoU for a segmentation task) of every seed and their mean and sample
standard deviation.
"""

from __future__ import annotations

import copy
import itertools
import json
import pathlib

import numpy as np

from jaxadv import config as config_lib
from jaxadv.train import reports


def grid_points(grid: dict[str, list]) -> list[dict]:
  """Every combination {field: value} of `grid` (field -> values), in row-major order."""
  fields = list(grid)
  return [dict(zip(fields, values)) for values in itertools.product(*grid.values())]


def point_name(point: dict) -> str:
  """Directory name of a grid point: "field=value,..." (or "base" for the empty point)."""
  return ",".join(f"{field}={value}" for field, value in point.items()) or "base"


def summarise(records: list[dict]) -> dict[str, dict]:
  """attack -> {"values", "mean", "std"} of the accuracies (%) over `records` (eval.json
  records of the seeds), of the mIoU (%) for segmentation records; std is the sample
  standard deviation (0 for one seed)."""
  field = "miou" if records[0].get("task") == "segmentation" else "accuracy"
  out = {}
  for name in records[0][field]:
    values = [r[field][name] for r in records]
    out[name] = {"values": values, "mean": float(np.mean(values)),
                 "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
  return out


def markdown(summary: dict[str, dict[str, dict]], seeds) -> str:
  """Table with a row per grid point and a "mean ± std" column per attack."""
  attacks = list(next(iter(summary.values())))
  lines = [f"| grid point (seeds {', '.join(map(str, seeds))}) | " + " | ".join(attacks) + " |",
           "|---|" + "---:|" * len(attacks)]
  for point, stats in summary.items():
    cells = [f"{stats[a]['mean']:.2f} ± {stats[a]['std']:.2f}" for a in attacks]
    lines.append(f"| {point} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def run(config, root, *, seeds, grid: dict[str, list] | None = None,
        progress: bool = True) -> dict:
  """Trains and evaluates `config` for each seed and grid point under `root`; writes and
  returns the summary {grid point name: {attack: {"values", "mean", "std"}}}."""
  if not seeds:
    raise ValueError("a sweep needs at least one seed.")
  root = pathlib.Path(root)
  summary = {}
  for point in grid_points(grid or {}):
    records = []
    for seed in seeds:
      run_config = copy.deepcopy(config)
      config_lib.apply_overrides(run_config, [f"{k}={v!r}" for k, v in point.items()])
      run_config.seed = seed
      config_lib.validate(run_config)
      workdir = root / point_name(point) / f"seed{seed}"
      result = workdir / "eval.json"
      if result.is_file():
        records.append(json.loads(result.read_text()))
      else:
        print(f"jaxadv sweep: {point_name(point)} seed {seed} -> {workdir}", flush=True)
        records.append(reports.train_and_evaluate(run_config, workdir, progress=progress))
    summary[point_name(point)] = summarise(records)
  root.mkdir(parents=True, exist_ok=True)
  (root / "sweep.json").write_text(json.dumps(summary, indent=2))
  (root / "sweep.md").write_text(markdown(summary, seeds) + "\n")
  return summary
