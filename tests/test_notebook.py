"""The quickstart notebook runs top to bottom (on CPU here), as a Colab user would run it."""

import json
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _code_cells(path: pathlib.Path) -> list[str]:
  """Source of each code cell, without shell (`!`) and magic (`%`) lines."""
  cells = json.loads(path.read_text())["cells"]
  return ["".join(line for line in cell["source"] if not line.lstrip().startswith(("!", "%")))
          for cell in cells if cell["cell_type"] == "code"]


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
