"""experiments/mnist_tables.py end to end on the smoke configs, one seed and one NAMID variant
(slow: 12 training processes and a 4-point AutoAttack of each run, about 10 minutes on 2 cores)."""

import importlib.util
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "mnist_tables.py"


@pytest.mark.slow
def test_smoke_launch_writes_every_table_and_resumes(mnist_dir, tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("JAXADV_MNIST_DIR", str(mnist_dir))
  spec = importlib.util.spec_from_file_location("mnist_tables", SCRIPT)
  tables = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tables)
  args = ["--root", str(tmp_path), "--seeds", "0", "--jobs", "2", "--smoke", "--baselines",
          "pgd_at", "--namid", "namid", "--autoattack-examples", "4"]
  assert tables.main(args) == 0
  text = (tmp_path / "tables.md").read_text()
  for heading in ("## Baselines", "## ADML", "## NAMID", "| pgd_at_finetune |", "| adml_theta |",
                  "| namid |", "autoattack (first 4)"):
    assert heading in text
  assert (tmp_path / "adml_per_class.png").read_bytes()[:4] == b"\x89PNG"
  logs = {path: path.stat().st_mtime_ns for path in (tmp_path / "logs").iterdir()}
  capsys.readouterr()
  assert tables.main(args) == 0  # everything on disk: nothing is run again
  assert {path: path.stat().st_mtime_ns for path in (tmp_path / "logs").iterdir()} == logs
  assert capsys.readouterr().out.strip().endswith(text.strip())
