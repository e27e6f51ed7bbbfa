"""experiments/mnist_tables.py: which `jaxadv` commands the baseline stage and each NAMID recipe
launch (fast, with the commands recorded instead of run), and the whole launch end to end on the
smoke configs, one seed and one NAMID variant (slow: 15 training processes and a 4-point
AutoAttack of most runs, about 10 minutes on 2 cores)."""

import json
import pathlib

import pytest

from helpers import load_experiment

pytestmark = pytest.mark.campaign


def _load_script():
  return load_experiment("mnist_tables")


def _recorded_stage(tables, root, stage, baselines=("pgd_at",), recipe="authors"):
  """The (command, workdir, flags) that `stage` (run_baselines, run_namid) launches for seed 0
  with NAMID and NAMID-T, in order; each fake command writes the file that marks it done."""
  commands = []

  def run(self, log_name, *args):  # pylint: disable=unused-argument
    workdir = pathlib.Path(args[args.index("--workdir") + 1])
    command = args[0] if args[0] == "train" else args[1]  # train, or the report's name
    if "--stages" in args:
      command = "train " + args[args.index("--stages") + 1]
    done = {"train": "eval.json", "train estimators": "estimators/mi.json", "mi": "mi.json",
            "vulnerability": "vulnerability.json"}[command]
    (workdir / done).parent.mkdir(parents=True, exist_ok=True)
    (workdir / done).write_text("{}")
    flags = {a.split("=")[0]: a.split("=", 1)[1] for a in args if "=" in a}
    if "--config" in args:
      flags["--config"] = args[args.index("--config") + 1]
    commands.append((command, workdir.relative_to(root).as_posix(), flags))

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
      ("train estimators", "namid_estimators_code"), ("train", "erm_warmup/seed0"),
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
  estimators = str(tmp_path / "namid_estimators_code" / "estimators")
  assert flags["namid_warm_clip/seed0"]["objective.namid.estimators"] == estimators
  assert commands[0][2]["--config"].endswith("mnist_namid.py:code")
  assert commands[0][2]["objective.namid.estimator.classifier"] == str(
      tmp_path / "pgd_at" / "seed0")
  mi = [f for c, _, f in commands if c == "mi"]
  assert {f["estimators"] for f in mi} == {estimators}


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
      ("train estimators", "namid_estimators"), ("train", "namid/seed0"), ("mi", "namid/seed0"),
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


def _write_run(root, run, seed, clean, pgd20, mi=None):
  """A finished run's reports as the launch leaves them, with a checkpoint beside them."""
  workdir = root / run / f"seed{seed}"
  (workdir / "checkpoints" / "100").mkdir(parents=True)
  (workdir / "checkpoints" / "100" / "params").write_bytes(b"weights")
  (workdir / "config.json").write_text("{}")
  (workdir / "metrics.jsonl").write_text('{"step": 100}\n')
  (workdir / "eval.json").write_text(json.dumps({"accuracy": {"clean": clean, "pgd20": pgd20}}))
  if mi is not None:
    keys = ("natural_clean", "natural_adv", "adversarial_clean", "adversarial_adv")
    (workdir / "mi.json").write_text(json.dumps({"n_selected": 10,
                                                 "selected": dict.fromkeys(keys, mi)}))


def test_a_partial_launch_reports_each_run_over_its_finished_seeds(tmp_path):
  tables = _load_script()
  for seed, pgd20 in ((0, 90.0), (1, 92.0)):
    _write_run(tmp_path, "namid_t_warm_clip", seed, 97.0, pgd20, mi=-1.0)
  _write_run(tmp_path, "trades_warm_clip", 0, 98.0, 91.0, mi=-0.5)
  launch = tables.Launch(tmp_path, [0, 1, 2], 1, False, ["pgd20"], ["trades"], ["namid_t"])
  text = tables.summarise(launch)
  assert "## Baselines" not in text and "## ADML" not in text
  accuracy, mi = (part.splitlines() for part in text.split("Natural and adversarial MI"))
  assert "| namid_t_warm_clip | 0, 1 | 97.00 ± 0.00 | 91.00 ± 1.41 |" in accuracy
  assert "| trades_warm_clip | 0 | 98.00 ± 0.00 | 91.00 ± 0.00 |" in accuracy
  assert ("| namid_t_warm_clip | 0, 1 | 10.00 ± 0.00 | " + " | ".join(["-1.00 ± 0.00"] * 4)
          + " |") in mi


def test_namid_is_compared_with_its_base_on_the_seeds_both_finished(tmp_path):
  tables = _load_script()
  for seed, (base, target) in enumerate(((91.0, 90.0), (92.0, 90.0), (89.0, None))):
    _write_run(tmp_path, "trades_warm_clip", seed, 98.0, base)
    if target is not None:
      _write_run(tmp_path, "namid_t_warm_clip", seed, 97.5, target)
  (tmp_path / "namid_t_warm_clip" / "seed1" / "eval_autoattack_n100.json").write_text(
      json.dumps({"accuracy": {"clean": 100.0, "autoattack": 80.0}}))
  (tmp_path / "trades_warm_clip" / "seed1" / "eval_autoattack_n100.json").write_text(
      json.dumps({"accuracy": {"clean": 100.0, "autoattack": 83.0}}))
  launch = tables.Launch(tmp_path, [0, 1, 2], 1, False, ["pgd20"], ["trades"],
                         ["namid", "namid_t"], autoattack_examples=100)
  lines = tables.summarise(launch).splitlines()
  assert ("| namid_t_warm_clip − trades_warm_clip | 0, 1 | -0.50 ± 0.00 | -1.50 ± 0.71 | "
          "-3.00 ± 0.00 (seeds 1) | -1.00, -2.00 |") in lines
  assert "| namid_warm_clip − pgd_at_warm_clip | none | - | - | - | - |" in lines


def test_a_run_without_a_finished_seed_is_listed_as_not_run(tmp_path):
  tables = _load_script()
  _write_run(tmp_path, "pgd_at", 1, 98.0, 90.0)
  launch = tables.Launch(tmp_path, [0, 1], 1, False, ["pgd20"], ["pgd_at", "trades"], [])
  lines = tables.summarise(launch).splitlines()
  assert "| pgd_at | 1 | 98.00 ± 0.00 | 90.00 ± 0.00 |" in lines
  assert "| trades | none | - | - |" in lines


def test_the_subset_autoattack_columns_name_their_seeds_when_fewer(tmp_path):
  tables = _load_script()
  for seed in (0, 1):
    _write_run(tmp_path, "pgd_at", seed, 98.0, 90.0)
  (tmp_path / "pgd_at" / "seed1" / "eval_autoattack_n100.json").write_text(
      json.dumps({"accuracy": {"clean": 100.0, "autoattack": 88.0}}))
  launch = tables.Launch(tmp_path, [0, 1], 1, False, ["pgd20"], ["pgd_at", "trades"], [],
                         autoattack_examples=100)
  lines = tables.summarise(launch).splitlines()
  assert ("| pgd_at | 0, 1 | 98.00 ± 0.00 | 90.00 ± 0.00 | 100.00 ± 0.00 (seeds 1) | "
          "88.00 ± 0.00 (seeds 1) |") in lines
  assert "| trades | none | - | - | - | - |" in lines


def test_exported_records_hold_no_checkpoint_and_reproduce_the_tables(tmp_path):
  tables = _load_script()
  root, dest = tmp_path / "root", tmp_path / "records"
  for seed in (0, 1):
    _write_run(root, "pgd_at", seed, 98.0 + seed, 90.0)
  (root / "pgd_at" / "seed0" / "eval_autoattack_n100.json").write_text("{}")
  (root / "trades" / "seed0").mkdir(parents=True)  # still training: not a record yet
  (root / "trades" / "seed0" / "config.json").write_text("{}")
  args = ["--seeds", "0,1", "--suite", "pgd20", "--baselines", "pgd_at", "--namid", "",
          "--stages", ""]
  assert tables.main(["--root", str(root), "--export", str(dest), *args]) == 0
  copied = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
  assert copied == ["pgd_at/seed0/config.json", "pgd_at/seed0/eval.json",
                    "pgd_at/seed0/eval_autoattack_n100.json", "pgd_at/seed0/metrics.jsonl",
                    "pgd_at/seed1/config.json", "pgd_at/seed1/eval.json",
                    "pgd_at/seed1/metrics.jsonl", "tables.md"]
  exported = (dest / "tables.md").read_text()
  assert "| pgd_at | 0, 1 | 98.50 ± 0.71 | 90.00 ± 0.00 |" in exported
  assert tables.main(["--root", str(dest), *args]) == 0
  assert (dest / "tables.md").read_text() == exported


def _write_adml_run(root, run, seed, theta, pgd20, autoattack):
  """A finished ADML-stage run with per-class PGD-20 and AutoAttack accuracy (3 classes) and
  its θ̂; the overall accuracy is the mean over classes."""
  workdir = root / run / f"seed{seed}"
  workdir.mkdir(parents=True)
  for file, attack, accuracy in (("eval.json", "pgd20", pgd20),
                                 ("eval_autoattack_n100.json", "autoattack", autoattack)):
    (workdir / file).write_text(json.dumps({
        "accuracy": {"clean": 99.0, attack: sum(accuracy) / 3},
        "per_class_accuracy": {"clean": [99.0] * 3, attack: accuracy}}))
  (workdir / "vulnerability.json").write_text(json.dumps({"theta": theta}))


def test_the_weakest_class_table_follows_each_seeds_most_negative_base_theta(tmp_path):
  tables = _load_script()
  # The two most negative base θ̂ are classes 2, 1 on seed 0 and 0, 2 on seed 1; the
  # fine-tunes' own θ̂ (most negative: 1, 0) do not choose the classes.
  base_theta = {0: [-0.1, -0.5, -2.0], 1: [-3.0, 0.2, -1.0]}
  for seed in (0, 1):
    for shift, run in enumerate(("pgd_at", "pgd_at_finetune", "adml", "adml_theta")):
      pgd20 = ([90.0 + shift, 80.0, 70.0 + 2 * shift] if seed == 0
               else [60.0 + 4 * shift, 90.0, 90.0])
      theta = base_theta[seed] if run == "pgd_at" else [-2.0, -3.0, 0.0]
      _write_adml_run(tmp_path, run, seed, theta, pgd20, [x - 10.0 for x in pgd20])
  launch = tables.Launch(tmp_path, [0, 1], 1, False, ["pgd20"], ["pgd_at"], [],
                         autoattack_examples=100)
  text = tables.summarise(launch)
  assert "Weakest classes by the base's θ̂ (seed 0: 2, 1; seed 1: 0, 2)" in text
  lines = text.splitlines()
  assert ("| run | pgd20 weakest | pgd20 all | autoattack weakest | autoattack all |"
          in lines)
  # pgd_at: weakest = mean((70 + 80) / 2, (60 + 90) / 2) = 75; all = mean(80, 80) = 80.
  assert "| pgd_at | 75.00 | 80.00 | 65.00 | 70.00 |" in lines
  # adml (shift 2): seed 0 weakest (74 + 80) / 2 = 77, seed 1 (68 + 90) / 2 = 79: 78;
  # all: seed 0 (92 + 80 + 74) / 3 = 82, seed 1 (68 + 90 + 90) / 3 = 82.67: 82.33.
  assert "| adml | 78.00 | 82.33 | 68.00 | 72.33 |" in lines


def test_the_weakest_class_table_leaves_out_autoattack_unless_every_run_has_it(tmp_path):
  tables = _load_script()
  for run in ("pgd_at", "pgd_at_finetune", "adml", "adml_theta"):
    _write_adml_run(tmp_path, run, 0, [-1.0, -2.0, 0.0], [90.0, 80.0, 70.0], [80.0, 70.0, 60.0])
  (tmp_path / "adml_theta" / "seed0" / "eval_autoattack_n100.json").unlink()
  launch = tables.Launch(tmp_path, [0], 1, False, ["pgd20"], ["pgd_at"], [],
                         autoattack_examples=100)
  lines = tables.summarise(launch).splitlines()
  assert "| run | pgd20 weakest | pgd20 all |" in lines
  assert "| adml_theta | 85.00 | 80.00 |" in lines
