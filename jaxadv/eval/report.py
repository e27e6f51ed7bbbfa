"""Reports of an evaluation: Markdown table, JSON record (RobustBench field names), bar chart."""

from __future__ import annotations

import fractions
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


def eps_text(eps: float) -> str:
  """eps as RobustBench writes it: a short decimal as itself ("0.3", "0.5"), else a whole
  number of 255ths as the fraction ("8/255"), else the number to 6 digits."""
  text = f"{eps:g}"
  if float(text) == eps:
    return text
  scaled = fractions.Fraction(eps).limit_denominator(255)
  if abs(float(scaled) - eps) < 1e-12 and 255 % scaled.denominator == 0:
    return f"{scaled.numerator * (255 // scaled.denominator)}/255"
  return text


def to_record(result: RobustnessResult, *, dataset: str, norm: str, eps: float,
              attacks: dict[str, str], model: str, checkpoint_step: int | None = None,
              flags: list[Flag] = (), architecture: str = "", provenance: dict | None = None,
              additional_data: bool = False, number_forward_passes: int = 1) -> dict:
  """A JSON-serialisable record; accuracies in %. RobustBench's model-card fields (name,
  architecture, additional_data, number_forward_passes, dataset, threat_model, eps written as
  RobustBench writes it, "8/255", clean_acc, autoattack_acc), then eps_value (the float), n_ex
  (the number of points), the per-attack, per-class and cascade accuracies, the masking flags
  and the provenance (`api.provenance`: versions, commit, devices, date)."""
  overall = result.accuracy()
  record = {
      "name": model,
      "architecture": architecture,
      "additional_data": additional_data,
      "number_forward_passes": number_forward_passes,
      "dataset": dataset,
      "model": model,
      "threat_model": norm.capitalize(),
      "eps": eps_text(eps),
      "eps_value": eps,
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
      "provenance": provenance or {},
  }
  if "autoattack" in result.correct:
    record["autoattack_acc"] = overall["autoattack"]
  return record


def json_safe(value):
  """`value` with every NaN float replaced by None, recursively (JSON has no NaN)."""
  if isinstance(value, float) and math.isnan(value):
    return None
  if isinstance(value, dict):
    return {k: json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  return value


def write_json(record: dict, path) -> None:
  """Writes `record` to `path` as JSON (NaN -> null)."""
  pathlib.Path(path).write_text(json.dumps(json_safe(record), indent=2) + "\n")


def per_class_bar_chart(result: RobustnessResult, path=None, *, title: str = "",
                        class_names=None):
  """Grouped bars of per-class accuracy (%) for clean and each attack: a matplotlib Figure,
  saved as PNG to `path` when given."""
  # A pyplot-free Figure: the caller's backend (a notebook's inline one) is left alone.
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  per_class = result.per_class()
  names = list(per_class)
  classes = np.arange(result.num_classes)
  width = 0.8 / len(names)
  fig = Figure(figsize=(max(6.0, 0.6 * result.num_classes * len(names) ** 0.5), 3.5))
  ax = fig.subplots()
  for i, name in enumerate(names):
    ax.bar(classes + (i - (len(names) - 1) / 2) * width, np.nan_to_num(per_class[name]), width,
           label=name)
  ax.set_xticks(classes, class_names or [str(k) for k in classes])
  ax.set_ylabel("accuracy (%)")
  ax.set_ylim(0, 100)
  ax.set_title(title)
  ax.legend(fontsize="small", ncol=min(4, len(names)))
  fig.tight_layout()
  if path is not None:
    fig.savefig(path, dpi=120)
  return fig
