"""Training curves of a run: loss and accuracy against epoch, from `<workdir>/metrics.jsonl`."""

from __future__ import annotations

import pathlib

from jaxadv.train import metrics as metrics_lib

MONITORED = ("val_", "test_")  # prefixes of the monitor's accuracies


def curves(rows: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
  """name -> (epochs, values) for the training loss and accuracy and every monitored accuracy
  (`val_*` or `test_*` fields written by the monitor), in step order."""
  out: dict[str, tuple[list[float], list[float]]] = {}
  for row in rows:
    for name, value in row.items():
      if name in ("loss", "accuracy") or name.startswith(MONITORED):
        epochs, values = out.setdefault(name, ([], []))
        epochs.append(row["epoch"])
        values.append(value)
  return out


def plot_run(workdir, out_path=None) -> pathlib.Path:
  """Draws `workdir`'s loss (left) and accuracies in % (right) against epoch to a PNG
  (default `<workdir>/curves.png`); returns its path. Draws on a bare `Figure`, without
  pyplot, so the caller's matplotlib backend (a notebook's inline one) is left alone."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

  workdir = pathlib.Path(workdir)
  data = curves(metrics_lib.read(workdir))
  if "loss" not in data:
    raise ValueError(f"{workdir / metrics_lib.METRICS_FILE} has no training loss to plot.")
  figure = Figure(figsize=(10, 3.6))
  left, right = figure.subplots(1, 2)
  left.plot(*data["loss"], label="training loss")
  left.set(xlabel="epoch", ylabel="loss", title="loss")
  right.plot(data["accuracy"][0], [100 * a for a in data["accuracy"][1]],
             label="training batches (as trained on)")
  for name in sorted(n for n in data if n.startswith(MONITORED)):
    right.plot(*data[name], marker="o", label=name.replace("_", " ", 1))
  right.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
  for axis in (left, right):
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
  figure.suptitle(workdir.name)
  figure.tight_layout()
  out_path = pathlib.Path(out_path) if out_path else workdir / "curves.png"
  figure.savefig(out_path, dpi=120)
  return out_path
