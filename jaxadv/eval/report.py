"""Reports of an evaluation: Markdown table, JSON record (RobustBench field names), bar chart."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np

from jaxadv.eval.masking import Flag
from jaxadv.eval.robustness import RobustnessResult


def markdown_table(result: RobustnessResult, class_names=None) -> str:
  """Rows: "all" then each class; columns: n, then accuracy (%) per attack (and worst case)."""
  overall, per_class = result.accuracy(), result.per_class()
  columns = list(overall)
  lines = ["| class | n | " + " | ".join(columns) + " |",
           "|---|---:|" + "---:|" * len(columns)]
  lines.append(f"| all | {len(result.labels)} | " +
               " | ".join(f"{overall[c]:.2f}" for c in columns) + " |")
  for k in range(result.num_classes):
    name = class_names[k] if class_names else str(k)
    count = int((result.labels == k).sum())
    cells = ["-" if math.isnan(per_class[c][k]) else f"{per_class[c][k]:.2f}" for c in columns]
    lines.append(f"| {name} | {count} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def flags_text(flags: list[Flag]) -> str:
  """One line per gradient-masking check: RAISED or ok, with its detail."""
  return "\n".join(f"- {'RAISED' if f.raised else 'ok'}: {f.name}: {f.detail}" for f in flags)


def to_record(result: RobustnessResult, *, dataset: str, norm: str, eps: float,
              attacks: dict[str, str], model: str, checkpoint_step: int | None = None,
              flags: list[Flag] = ()) -> dict:
  """A JSON-serialisable record; accuracies in %; RobustBench's names where they exist
  (clean_acc, autoattack_acc, eps, threat_model, dataset) and n_ex for the number of points."""
  overall = result.accuracy()
  record = {
      "dataset": dataset,
      "model": model,
      "threat_model": norm.capitalize(),
      "eps": eps,
      "n_ex": int(len(result.labels)),
      "checkpoint_step": checkpoint_step,
      "clean_acc": overall["clean"],
      "robust_acc": 100.0 * float(np.mean(result.worst_case)),
      "attacks": attacks,
      "accuracy": overall,
      "per_class_accuracy": result.per_class(),
      "cascade_accuracy": {name: {stage: 100.0 * float(np.mean(c)) for stage, c in stages.items()}
                           for name, stages in result.stages.items()},
      "masking_flags": [{"name": f.name, "raised": f.raised, "detail": f.detail} for f in flags],
  }
  if "autoattack" in result.correct:
    record["autoattack_acc"] = overall["autoattack"]
  return record


def write_json(record: dict, path) -> None:
  """Writes `record` to `path` as JSON (NaN -> null)."""
  def clean(value):
    if isinstance(value, float) and math.isnan(value):
      return None
    if isinstance(value, dict):
      return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
      return [clean(v) for v in value]
    return value
  pathlib.Path(path).write_text(json.dumps(clean(record), indent=2) + "\n")


def per_class_bar_chart(result: RobustnessResult, path, *, title: str = "",
                        class_names=None) -> None:
  """Grouped bars of per-class accuracy (%) for clean and each attack, saved as PNG."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  per_class = result.per_class()
  names = list(per_class)
  classes = np.arange(result.num_classes)
  width = 0.8 / len(names)
  fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * result.num_classes * len(names) ** 0.5), 3.5))
  for i, name in enumerate(names):
    ax.bar(classes + (i - (len(names) - 1) / 2) * width, np.nan_to_num(per_class[name]), width,
           label=name)
  ax.set_xticks(classes, class_names or [str(k) for k in classes])
  ax.set_ylabel("accuracy (%)")
  ax.set_ylim(0, 100)
  ax.set_title(title)
  ax.legend(fontsize="small", ncol=min(4, len(names)))
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
