"""The command line's frictions (issue 52): URL workdirs, re-running a finished run, `eval`'s
--eps/--norm/--batch-size, the files each command wrote, progress bars off a terminal and
--version."""

import importlib.metadata
import io
import json
import pathlib

import pytest
from etils import epath

from jaxadv import cli
from jaxadv import config as config_lib
from jaxadv import train as training
from jaxadv.train import stages as stages_lib
from jaxadv.train import workdir as workdir_lib

from helpers import tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]
SMOKE = [f"{REPO / 'experiments' / 'configs' / 'digits_pgd_at.py'}:smoke", "eval.batch_size=64",
         "eval.masking_checks=False", "dataset.num_test=64"]


def test_version_comes_from_the_package_metadata(capsys):
  with pytest.raises(SystemExit) as stop:
    cli.main(["--version"])
  assert stop.value.code == 0
  assert capsys.readouterr().out.strip() == f"jaxadv {importlib.metadata.version('jaxadv')}"


# 1. Cloud workdirs are refused, never turned into a local folder named "gs:".

@pytest.mark.parametrize("argv", [
    ["train", "--workdir", "gs://bucket/runs/r18", "num_epochs=1"],
    ["eval", "--workdir", "gs://bucket/runs/r18"],
    ["report", "vulnerability", "--workdir", "s3://bucket/run"],
    ["plot", "--workdir", "gs://bucket/runs/r18"],
    ["sweep", "--config", str(REPO / "experiments" / "configs" / "digits_pgd_at.py"), "--root",
     "gs://bucket/sweep"],
])
def test_a_url_workdir_is_refused_with_what_to_do(argv, tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert "is a URL: jaxadv writes run directories with local file operations only" in err
  assert "copy the run directory to the bucket afterwards" in err
  assert not list(tmp_path.iterdir())  # no folder "gs:" or "s3:"


def test_the_python_api_refuses_url_workdirs_and_takes_local_epaths(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  config = tiny_config()
  with pytest.raises(ValueError, match="workdir 'gs://b/run' is a URL"):
    training.train(config, "gs://b/run")
  with pytest.raises(ValueError, match="run directory 'gs://b/run' is a URL"):
    training.evaluate_workdir("gs://b/run")
  with pytest.raises(ValueError, match="is a URL"):
    training.evaluate_state(config, {}, workdir="gs://b/run")
  assert not list(tmp_path.iterdir())
  # A local etils path (what orbax hands around) is a local path like any other.
  directory = workdir_lib.prepare(config, epath.Path(tmp_path) / "run")
  assert directory == tmp_path / "run" and (directory / "config.json").is_file()
  assert workdir_lib.read_config(epath.Path(directory)).name == "tiny"


# 6. Progress bars only on a terminal.

class _Terminal(io.StringIO):
  def isatty(self):
    return True


@pytest.mark.parametrize("terminal, flag, drawn", [
    (False, [], False), (True, [], True), (True, ["--no-progress"], False)])
def test_the_progress_bar_is_drawn_only_on_a_terminal(terminal, flag, drawn, tmp_path,
                                                      monkeypatch):
  seen = {}
  monkeypatch.setattr(training, "train_and_evaluate",
                      lambda config, workdir, stages, progress: seen.update(progress=progress))
  if terminal:
    monkeypatch.setattr("sys.stderr", _Terminal())
  assert cli.main(["train", "--workdir", str(tmp_path / "run"), *flag]) == 0
  assert seen == {"progress": drawn}


# 5. eval's --eps, --norm and --batch-size, fractions included.

@pytest.mark.parametrize("argv, message", [
    (["--eps", "8/x"], "argument --eps: expected a number (a decimal such as 0.03 or a "
                       "fraction such as 8/255), got '8/x'"),
    (["--eps", "1/0"], "argument --eps: '1/0' divides by zero"),
    (["--norm", "l3"], "argument --norm: invalid choice: 'l3'"),
    (["--batch-size", "many"], "argument --batch-size: invalid int value"),
])
def test_eval_options_reject_garbage(argv, message, capsys):
  with pytest.raises(SystemExit) as stop:
    cli.main(["eval", "--workdir", "runs/x", *argv])
  assert stop.value.code == 2
  assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A digits smoke run trained and evaluated by `jaxadv train` (its output kept)."""
  workdir = tmp_path_factory.mktemp("cli") / "run"
  capture = io.StringIO()
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr("sys.stdout", capture)
    assert cli.main(["train", "--config", *SMOKE[:1], "--workdir", str(workdir),
                     *SMOKE[1:]]) == 0
  return workdir, capture.getvalue()


def test_train_lists_the_files_it_wrote(finished_run):
  workdir, out = finished_run
  listed = out[out.index("jaxadv train: wrote\n"):].splitlines()[1:]
  assert listed == [f"  {workdir}/{name}" for name in (
      "checkpoints/", "config.json", "eval.json", "metrics.jsonl", "per_class.png",
      "tensorboard/")]


def test_rerunning_a_finished_run_says_where_its_results_are(finished_run, capsys):
  """4. The second `jaxadv train` neither trains nor evaluates again, nor rewrites eval.json."""
  workdir, _ = finished_run
  record = workdir / "eval.json"
  before = (record.stat().st_mtime_ns, record.read_text())
  assert cli.main(["train", "--config", *SMOKE[:1], "--workdir", str(workdir), *SMOKE[1:]]) == 0
  out = capsys.readouterr().out
  assert f"jaxadv train: {workdir} holds this run, complete and evaluated: nothing to do" in out
  assert f"Its results: {record} and {workdir / 'per_class.png'}" in out
  assert f"To evaluate it again: jaxadv eval --workdir {workdir} --tag NEW" in out
  assert "| all |" not in out and "wrote" not in out
  assert (record.stat().st_mtime_ns, record.read_text()) == before
  # Another config, or another selection of stages, is not this complete run.
  config = config_lib.validate(config_lib.apply_overrides(config_lib.load_file(SMOKE[0]),
                                                          SMOKE[1:]))
  assert stages_lib.is_complete(config, workdir)
  assert stages_lib.is_complete(config, workdir, stages=["model"])
  assert not stages_lib.is_complete(config_lib.apply_overrides(config.copy_and_resolve_references(),
                                                                ["seed=1"]), workdir)
  with pytest.raises(ValueError, match="unknown stage"):
    stages_lib.is_complete(config, workdir, stages=["estimators"])


def test_eval_overrides_eps_norm_and_batch_size_for_one_evaluation(finished_run, capsys):
  workdir, _ = finished_run
  own = (workdir / "eval.json").read_text()
  config_json = (workdir / "config.json").read_text()
  assert cli.main(["eval", "--workdir", str(workdir), "--eps", "8/255", "--norm", "l2",
                   "--batch-size", "32", "--num-examples", "32", "--no-checks",
                   "--tag", "l2"]) == 0
  out = capsys.readouterr().out
  assert ("jaxadv eval: eval.eps=0.03137254901960784, eval.norm='l2', eval.batch_size=32 for "
          "this evaluation") in out
  assert out.rstrip().endswith(f"jaxadv eval: wrote\n  {workdir}/eval_l2.json\n"
                               f"  {workdir}/per_class_l2.png")
  record = json.loads((workdir / "eval_l2.json").read_text())
  assert (record["eps"], record["eps_value"]) == ("8/255", 8 / 255)
  assert record["threat_model"] == "L2" and record["n_ex"] == 32
  assert "l2 eps=0.03137" in record["attacks"]["pgd5"]
  assert (workdir / "eval.json").read_text() == own  # the run's own evaluation is kept
  assert (workdir / "config.json").read_text() == config_json
  # Any field, for this evaluation only.
  assert cli.main(["eval", "--workdir", str(workdir), "--num-examples", "16", "--no-checks",
                   "--tag", "fgsm", "eval.suite=('fgsm',)"]) == 0
  assert list(json.loads((workdir / "eval_fgsm.json").read_text())["attacks"]) == ["fgsm"]
  assert (workdir / "config.json").read_text() == config_json
  # Shifts are not attacks; a bad tag is still refused.
  assert cli.main(["eval", "--workdir", str(workdir), "--shifts", "noise", "--eps", "0.1"]) == 2
  assert "apply to attacks only" in capsys.readouterr().err
  assert cli.main(["eval", "--workdir", str(workdir), "--eps", "0.1", "--tag", "../x"]) == 2
  assert "bad eval tag" in capsys.readouterr().err
