"""The quickstart notebook runs top to bottom (on CPU here), as a Colab user would run it; its
set-up, its picture of adversarial images and the plots that leave the user's matplotlib backend
alone are checked in seconds."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import matplotlib
import pytest

from helpers import linear_apply_fn, random_images

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"


def _code_cells(path: pathlib.Path) -> list[str]:
  """Source of each code cell, without shell (`!`) and magic (`%`) lines."""
  cells = json.loads(path.read_text())["cells"]
  return ["".join(line for line in cell["source"] if not line.lstrip().startswith(("!", "%")))
          for cell in cells if cell["cell_type"] == "code"]


def _markdown(path: pathlib.Path) -> str:
  cells = json.loads(path.read_text())["cells"]
  return "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown")


def test_notebook_installs_jaxadv_from_the_repository_it_sits_in(monkeypatch):
  """The first code cell pip-installs the clone around the notebook when jaxadv is missing (and
  does nothing when it is importable); the set-up says how to bring the repository to Colab
  without naming a URL the project does not have."""
  setup = _markdown(NOTEBOOK)
  assert "/content/jaxadv" in setup and "upload a zip" in setup
  install = _code_cells(NOTEBOOK)[0]
  calls = []
  monkeypatch.setattr(subprocess, "run", lambda command, check: calls.append(command))
  exec(compile(install, "install cell", "exec"), {})  # pylint: disable=exec-used
  assert not calls  # jaxadv is importable here
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "jaxadv" else find_spec(name, *a))
  monkeypatch.chdir(REPO / "notebooks")  # where Jupyter runs the notebook of a clone
  monkeypatch.setattr(sys, "path", list(sys.path))
  exec(compile(install, "install cell", "exec"), {})  # pylint: disable=exec-used
  assert calls == [[sys.executable, "-m", "pip", "install", "-q", "-e", str(REPO)]]
  assert sys.path[0] == str(REPO)  # importable without restarting the runtime


def test_notebook_shows_clean_and_adversarial_images_with_predictions():
  (grid,) = [cell for cell in _code_cells(NOTEBOOK) if "imshow" in cell]
  x = random_images((12, 8, 8, 1))
  apply_fn = linear_apply_fn(64, num_classes=10)
  y = jnp.argmax(apply_fn(x), -1)
  namespace = dict(jnp=jnp, apply_fn=apply_fn, x=x, y=y, x_adv=jnp.clip(1 - x, 0, 1))
  matplotlib.use("Agg")
  exec(compile(grid, "grid cell", "exec"), namespace)  # pylint: disable=exec-used
  axes = namespace["figure"].axes
  assert len(axes) == 16
  titles = [axis.get_title() for axis in axes]
  assert all(t.startswith("clean: ") for t in titles[:8])
  assert all(t.startswith("PGD: ") for t in titles[8:])
  assert not any("matplotlib.use" in cell for cell in _code_cells(NOTEBOOK))


def test_plotting_curves_leaves_the_matplotlib_backend_alone(tmp_path):
  """`jaxadv plot` (and the notebook's last cell) must not switch a notebook's inline backend."""
  from jaxadv.train import plot  # pylint: disable=import-outside-toplevel
  rows = [{"step": s, "epoch": s / 4, "loss": 1.0 / s, "accuracy": 0.1 * s} for s in (1, 2, 4)]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  previous = matplotlib.get_backend()
  matplotlib.use("svg")
  try:
    assert plot.plot_run(tmp_path).is_file()
    assert matplotlib.get_backend() == "svg"
  finally:
    matplotlib.use(previous)


@pytest.mark.slow  # about 1.5 min: trains and attacks as the notebook does; run with --runslow
def test_quickstart_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXADV_NOTEBOOK_WORKDIR", str(tmp_path))
  namespace = {}
  for index, source in enumerate(_code_cells(REPO / "notebooks" / "quickstart.ipynb")):
    exec(compile(source, f"quickstart.ipynb cell {index}", "exec"), namespace)  # pylint: disable=exec-used
  assert int(namespace["state"].step) == 2 * 22  # 2 epochs of 1,437 digits in batches of 64
  record = namespace["record"]
  assert 0 <= record["accuracy"]["cw30"] <= record["clean_acc"] <= 100
  for name in ("per_class.png", "curves.png", "eval.json", "metrics.jsonl"):
    assert (tmp_path / name).is_file()
