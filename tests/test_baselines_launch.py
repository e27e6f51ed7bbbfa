"""experiments/baselines.py: its config entries, run names and config paths (the launch itself
runs `jaxadv` commands: experiments/configs' smoke variants are trained in test_objectives)."""

import pathlib

import pytest

from jaxadv import config as config_lib

from helpers import load_experiment

baselines = load_experiment("baselines")


def test_entries_split_on_spaces_or_commas_and_keep_variant_words():
  assert baselines.entries("a,b") == ["a", "b"]
  assert baselines.entries("a b:x,y") == ["a", "b:x,y"]
  assert baselines.entries("") == []


def test_an_entry_names_its_run_directory_and_adds_its_words_to_the_variant(tmp_path):
  launch = baselines.Launch(tmp_path, [0], 1, ["pgd40"], ["mnist60k_uadat:no_align"], "cpu", 0)
  assert launch.run_name("mnist60k_uadat:no_align") == "mnist60k_uadat_no_align"
  path = launch.config("mnist60k_uadat:no_align")
  assert path.endswith("mnist60k_uadat.py:cpu,no_align")
  config = config_lib.load_file(path)
  assert config.objective.uadat.align is False and config.model.width == 16
  assert launch.config("mnist60k_trades").endswith("mnist60k_trades.py:cpu")


def _launched(monkeypatch, tmp_path, *flags):
  """The `jaxadv` commands (subcommand, tag, --num-examples, dataset override) that
  `baselines.main` launches for one CIFAR config and seed; each fake command writes the file
  that marks it done."""
  commands = []

  def run(self, log_name, *args):  # pylint: disable=unused-argument
    workdir = pathlib.Path(args[args.index("--workdir") + 1])
    tag = args[args.index("--tag") + 1] if "--tag" in args else None
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / (f"eval_{tag}.json" if tag else "eval.json")).write_text("{}")
    examples = args[args.index("--num-examples") + 1] if "--num-examples" in args else None
    dataset = [a for a in args if a.startswith("dataset.name=")]
    suite = args[args.index("--suite") + 1] if "--suite" in args else None
    commands.append((args[0], tag, suite, examples, dataset[0] if dataset else None))

  monkeypatch.setattr(baselines.Launch, "run", run)
  baselines.main(["--root", str(tmp_path), "--configs", "cifar10_jpeg_preact18_pgd_at",
                  "--variant", "smoke", "--seeds", "0", *flags])
  return commands


def test_autoattack_runs_on_the_test_set_and_the_exact_images_by_default(monkeypatch, tmp_path):
  assert _launched(monkeypatch, tmp_path, "--autoattack-examples", "500", "--exact", "1000") == [
      ("train", None, None, None, None),
      ("eval", "autoattack_n500", "autoattack", "500", None),
      ("eval", "exact1000", "pgd20,autoattack", "1000", "dataset.name=cifar10_exact")]


def test_autoattack_on_exact_runs_it_on_the_exact_images_only(monkeypatch, tmp_path):
  assert _launched(monkeypatch, tmp_path, "--autoattack-examples", "500", "--exact", "1000",
                   "--autoattack-on", "exact") == [
      ("train", None, None, None, None),
      ("eval", "exact_autoattack_n500", "autoattack", "500", "dataset.name=cifar10_exact"),
      ("eval", "exact1000", "pgd20", "1000", "dataset.name=cifar10_exact")]
  with pytest.raises(SystemExit):
    baselines.main(["--root", str(tmp_path), "--configs", "x", "--autoattack-on", "exact"])
