"""experiments/baselines.py: its config entries, run names and config paths (the launch itself
runs `jaxadv` commands: experiments/configs' smoke variants are trained in test_objectives)."""

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
