"""experiments/ood_defense.py: the commands of the OOD->ID defense's launch, their order, and
its resumption (the commands themselves are the CLI's, tested elsewhere)."""

import pathlib

from helpers import load_experiment

ood_defense = load_experiment("ood_defense")


def _launched(monkeypatch, root, *flags):
  """(subcommand, run directory relative to `root`, config file name, classifier override) of
  every command the launch runs; each fake command writes the file that marks it done."""
  commands = []

  def run(self, log_name, *args):  # pylint: disable=unused-argument
    workdir = pathlib.Path(args[args.index("--workdir") + 1])
    workdir.mkdir(parents=True, exist_ok=True)
    done = {"train": "eval.json", "report": "eval_ood.json"}.get(
        args[0], f"eval_{args[-1]}.json")  # eval: its --tag
    (workdir / done).write_text("{}")
    config = pathlib.Path(args[args.index("--config") + 1]).name if "--config" in args else None
    classifier = [a.split("=", 1)[1] for a in args if a.startswith("objective.ood_translate.")]
    at = args.index("--workdir")
    what = {"train": "train", "report": "report ood"}.get(
        args[0], " ".join(args[:at] + args[at + 2:]))  # eval: the whole command line
    commands.append((what,
                     workdir.relative_to(root).as_posix(), config,
                     pathlib.Path(classifier[0]).relative_to(root).as_posix()
                     if classifier else None))

  monkeypatch.setattr(ood_defense.mnist_tables.Launch, "run", run)
  ood_defense.main(["--root", str(root), "--seeds", "0,1", *flags])
  return commands


def test_classifiers_translators_bare_autoattack_then_reports_seed_by_seed(monkeypatch, tmp_path):
  pgd_at, erm = "mnist60k/mnist60k_pgd_at/seed0", "mnist60k/mnist60k_erm/seed0"
  bare = "eval --suite autoattack --num-examples 500 --no-checks --tag bare_autoattack_n500"
  assert _launched(monkeypatch, tmp_path) == [
      ("train", pgd_at, "mnist60k_pgd_at.py:cpu", None),
      ("train", erm, "mnist60k_erm.py:cpu", None),
      ("train", "ood/mnist_ood_translate_pgd_at/seed0", "mnist_ood_translate.py:cpu", pgd_at),
      ("train", "ood/mnist_ood_translate_erm/seed0", "mnist_ood_translate.py:cpu", erm),
      ("train", "ood/mnist_ood_translate_pgd_at/seed1", "mnist_ood_translate.py:cpu", pgd_at),
      ("train", "ood/mnist_ood_translate_erm/seed1", "mnist_ood_translate.py:cpu", erm),
      (bare, pgd_at, None, None),
      (bare, erm, None, None),
      ("report ood", "ood/mnist_ood_translate_pgd_at/seed0", None, None),
      ("report ood", "ood/mnist_ood_translate_erm/seed0", None, None),
      ("report ood", "ood/mnist_ood_translate_pgd_at/seed1", None, None),
      ("report ood", "ood/mnist_ood_translate_erm/seed1", None, None)]


def test_a_finished_launch_runs_nothing_again(monkeypatch, tmp_path):
  _launched(monkeypatch, tmp_path, "--classifiers", "erm")
  assert _launched(monkeypatch, tmp_path, "--classifiers", "erm") == []


def test_a_run_name_with_a_directory_logs_there(tmp_path):
  launch = ood_defense.mnist_tables.Launch(tmp_path, [0], 1, False, ["pgd20"], (), ())
  launch.run("mnist60k/mnist60k_erm_seed0", "--help")
  assert "usage: jaxadv" in (tmp_path / "logs" / "mnist60k" / "mnist60k_erm_seed0.log").read_text()
