"""experiments/mnist_tables.py: which `jaxadv` commands the baseline stage and each NAMID recipe
launch (fast, with the commands recorded instead of run), and the whole launch end to end on the
smoke configs, one seed and one NAMID variant (slow: 15 training processes and a 4-point
AutoAttack of most runs, about 10 minutes on 2 cores)."""

import importlib.util
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "mnist_tables.py"


def _load_script():
  spec = importlib.util.spec_from_file_location("mnist_tables", SCRIPT)
  tables = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tables)
  return tables


def _recorded_stage(tables, root, stage, baselines=("pgd_at",), recipe="authors"):
  """The (command, workdir, flags) that `stage` (run_baselines, run_namid) launches for seed 0
  with NAMID and NAMID-T, in order; each fake command writes the file that marks it done."""
  commands = []

  def run(self, log_name, *args):  # pylint: disable=unused-argument
    workdir = pathlib.Path(args[args.index("--workdir") + 1])
    workdir.mkdir(parents=True, exist_ok=True)
    done = {"train": "eval.json", "train-mi": "mi.json", "mi": "mi.json"}[args[0]]
    (workdir / done).write_text("{}")
    flags = {a.split("=")[0]: a.split("=", 1)[1] for a in args if "=" in a}
    for option in ("--config", "--estimators"):
      if option in args:
        flags[option] = args[args.index(option) + 1]
    commands.append((args[0], workdir.relative_to(root).as_posix(), flags))

  launch = tables.Launch(root, [0], 1, False, ["pgd20"], baselines, ["namid", "namid_t"],
                         namid_recipe=recipe)
  tables.Launch.run = run
  stage(launch)
  return commands


def test_mart_and_awp_alone_of_the_baselines_start_from_the_clean_warmup(tmp_path):
  tables = _load_script()
  commands = _recorded_stage(tables, tmp_path, tables.run_baselines, ("trades", "mart", "awp"))
  assert [(c, w) for c, w, _ in commands] == [
      ("train", "erm_warmup/seed0"), ("train", "trades/seed0"), ("train", "mart/seed0"),
      ("train", "awp/seed0")]
  flags = {w: f for _, w, f in commands}
  assert "init_from" not in flags["trades/seed0"]
  for run in ("mart/seed0", "awp/seed0"):
    assert flags[run]["init_from"] == str(tmp_path / "erm_warmup" / "seed0")


def test_baselines_from_scratch_train_no_warmup(tmp_path):
  tables = _load_script()
  commands = _recorded_stage(tables, tmp_path, tables.run_baselines, ("erm", "trades"))
  assert [w for _, w, _ in commands] == ["erm/seed0", "trades/seed0"]


def test_authors_recipe_starts_namid_and_its_base_from_one_clean_warmup(tmp_path):
  tables = _load_script()
  commands = _recorded_stage(tables, tmp_path, tables.run_namid)
  assert [(c, w) for c, w, _ in commands] == [
      ("train-mi", "namid_estimators_code"), ("train", "erm_warmup/seed0"),
      ("train", "namid_warm_clip/seed0"), ("mi", "namid_warm_clip/seed0"),
      ("train", "pgd_at_warm_clip/seed0"), ("mi", "pgd_at_warm_clip/seed0"),
      ("train", "namid_t_warm_clip/seed0"), ("mi", "namid_t_warm_clip/seed0"),
      ("train", "trades_warm_clip/seed0"), ("mi", "trades_warm_clip/seed0")]
  flags = {w: f for c, w, f in commands if c == "train"}
  assert flags["erm_warmup/seed0"]["num_epochs"] == "2"
  assert flags["erm_warmup/seed0"]["--config"].endswith("mnist_erm.py:")
  for run in ("namid_warm_clip", "pgd_at_warm_clip", "namid_t_warm_clip", "trades_warm_clip"):
    assert flags[f"{run}/seed0"]["init_from"] == str(tmp_path / "erm_warmup" / "seed0")
  assert flags["namid_t_warm_clip/seed0"]["--config"].endswith("mnist_namid.py:trades,code")
  assert flags["trades_warm_clip/seed0"]["--config"].endswith("mnist_trades.py:")
  assert flags["namid_warm_clip/seed0"]["objective.namid_estimators"] == str(
      tmp_path / "namid_estimators_code")
  assert commands[0][2]["--config"].endswith("mnist_namid_estimators.py:code")
  mi = [f for c, _, f in commands if c == "mi"]
  assert {f["--estimators"] for f in mi} == {str(tmp_path / "namid_estimators_code")}


def test_authors_recipe_clips_both_runs_of_every_pair(tmp_path):
  tables = _load_script()
  commands = _recorded_stage(tables, tmp_path, tables.run_namid)
  clip = {w: f.get("optim.grad_clip_norm") for c, w, f in commands if c == "train"}
  assert clip == {"erm_warmup/seed0": None, "namid_warm_clip/seed0": "1.0",
                  "pgd_at_warm_clip/seed0": "1.0", "namid_t_warm_clip/seed0": "1.0",
                  "trades_warm_clip/seed0": "1.0"}


def test_namid_m_pairs_with_a_clipped_mart_from_the_warmup(tmp_path):
  tables = _load_script()
  launch = tables.Launch(tmp_path, [0], 1, False, ["pgd20"], ["mart"], ["namid_m"])
  assert launch.namid_runs() == [("mart_warm_clip", "namid_m_warm_clip")]


def test_paper_recipe_trains_namid_from_scratch_against_the_stage1_baselines(tmp_path):
  tables = _load_script()
  commands = _recorded_stage(tables, tmp_path, tables.run_namid, recipe="paper")
  assert [(c, w) for c, w, _ in commands] == [
      ("train-mi", "namid_estimators"), ("train", "namid/seed0"), ("mi", "namid/seed0"),
      ("mi", "pgd_at/seed0"), ("train", "namid_t/seed0"), ("mi", "namid_t/seed0"),
      ("mi", "trades/seed0")]
  flags = {w: f for c, w, f in commands if c == "train"}
  assert "init_from" not in flags["namid/seed0"]
  assert flags["namid_t/seed0"]["--config"].endswith("mnist_namid.py:trades")
  assert "optim.grad_clip_norm" not in flags["namid_t/seed0"]


@pytest.mark.slow
def test_smoke_launch_writes_every_table_and_resumes(mnist_dir, tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("JAXADV_MNIST_DIR", str(mnist_dir))
  tables = _load_script()
  args = ["--root", str(tmp_path), "--seeds", "0", "--jobs", "2", "--smoke", "--baselines",
          "pgd_at", "--namid", "namid", "--autoattack-examples", "4"]
  assert tables.main(args) == 0
  text = (tmp_path / "tables.md").read_text()
  for heading in ("## Baselines", "## ADML", "## NAMID", "| pgd_at_finetune |", "| adml_theta |",
                  "| namid_warm_clip |", "| pgd_at_warm_clip |", "autoattack (first 4)"):
    assert heading in text
  assert (tmp_path / "adml_per_class.png").read_bytes()[:4] == b"\x89PNG"
  logs = {path: path.stat().st_mtime_ns for path in (tmp_path / "logs").iterdir()}
  capsys.readouterr()
  assert tables.main(args) == 0  # everything on disk: nothing is run again
  assert {path: path.stat().st_mtime_ns for path in (tmp_path / "logs").iterdir()} == logs
  assert capsys.readouterr().out.strip().endswith(text.strip())
