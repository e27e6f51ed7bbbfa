"""Reports of a RobustnessResult: a Markdown table for the screen and a JSON record."""

from __future__ import annotations

import json
import math
import pathlib

from jaxadv.eval.robustness import RobustnessResult


def markdown_table(result: RobustnessResult, class_names=None) -> str:
  """Rows: "all" then each class; columns: n, then accuracy (%) per attack and worst case."""
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


def to_record(result: RobustnessResult, *, dataset: str, threat_model: str, eps: float,
              attacks: dict[str, str], model: str, checkpoint_step: int | None) -> dict:
  """A JSON-serialisable record; accuracies in %, field names as RobustBench uses them."""
  overall = result.accuracy()
  return {
      "dataset": dataset,
      "model": model,
      "threat_model": threat_model,
      "eps": eps,
      "n_ex": int(len(result.labels)),
      "checkpoint_step": checkpoint_step,
      "clean_acc": overall["clean"],
      "robust_acc": overall["worst_case"],
      "attacks": attacks,
      "accuracy": overall,
      "per_class_accuracy": result.per_class(),
  }


def write_json(record: dict, path) -> None:
  """Writes `record` to `path` (NaN -> null)."""
  text = json.dumps(record, indent=2, allow_nan=True).replace("NaN", "null")
  pathlib.Path(path).write_text(text + "\n")
