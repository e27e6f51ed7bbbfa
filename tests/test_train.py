"""Train step, sharding, resumption, checkpoints and the command line, end to end."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import optax
import pytest

from jaxadv import cli, data, methods, models
from jaxadv import config as config_lib
from jaxadv import train as training
from jaxadv import sharding
from jaxadv.train import state as state_lib
from jaxadv.train.checkpoint import CheckpointError, Checkpointer
from jaxadv.train.step import make_optimizer, make_train_step

from helpers import tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run_steps(mesh, num_steps=2):
  """PGD-AT steps of a small BatchNorm ResNet on CIFAR-shaped data over `mesh`.

  The attack is L2 PGD: its normalised gradient step moves continuously with rounding, where
  the L-inf step's sign turns a last-bit difference into a 2/255 pixel change (on an AMD AVX2
  host that broke a 2e-5 match of two steps)."""
  model = models.ResNet(stage_sizes=(1, 1), width=8, num_classes=10)
  tx = optax.sgd(0.1, momentum=0.9)
  objective = methods.build("pgd_at", model,
                               dict(eps=0.5, step_size=0.25, steps=2, norm="l2"))
  state = jax.device_put(state_lib.create(model, tx, (16, 16, 3), seed=0),
                         sharding.replicated(mesh))
  step = make_train_step(objective, tx, mesh)
  rng = np.random.default_rng(0)
  for _ in range(num_steps):
    batch = {"image": rng.uniform(0, 1, (16, 16, 16, 3)).astype(np.float32),
             "label": rng.integers(0, 10, 16).astype(np.int32)}
    state, metrics = step(state, sharding.put_batch(batch, mesh))
    jax.block_until_ready(metrics)
  return jax.device_get(state), jax.device_get(metrics)


def test_sharded_step_matches_single_device_step():
  assert jax.device_count() == 8
  state_8, metrics_8 = _run_steps(sharding.data_mesh())
  state_1, metrics_1 = _run_steps(sharding.data_mesh(jax.devices()[:1]))
  assert int(state_8.step) == 2
  chex.assert_trees_all_close(state_8.params, state_1.params, atol=2e-5, rtol=1e-4)
  chex.assert_trees_all_close(state_8.model_state, state_1.model_state, atol=2e-5, rtol=1e-4)
  chex.assert_trees_all_close(metrics_8, metrics_1, atol=1e-5)


def test_step_donates_the_old_state():
  mesh = sharding.data_mesh()
  model = models.get("small_cnn", num_classes=10)
  tx = optax.sgd(0.1)
  state = jax.device_put(state_lib.create(model, tx, (8, 8, 1), 0), sharding.replicated(mesh))
  step = make_train_step(methods.build("erm", model), tx, mesh)
  batch = next(data.train_batches(data.load("digits", "train"), 16, 0))
  new_state, metrics = step(state, sharding.put_batch(batch, mesh))
  jax.block_until_ready(metrics)
  assert jax.tree.leaves(state.params)[0].is_deleted()
  assert not jax.tree.leaves(new_state.params)[0].is_deleted()


def test_resume_after_preemption_equals_uninterrupted_run(tmp_path):
  config = tiny_config()
  reference = training.train(config, tmp_path / "whole", progress=False)
  training.train(config, tmp_path / "split", stop_after_step=6, progress=False)
  assert Checkpointer(tmp_path / "split").all_steps() == [4]  # step 5-6 were lost
  resumed = training.train(config, tmp_path / "split", progress=False)
  assert int(resumed.step) == int(reference.step) == 16
  chex.assert_trees_all_equal(jax.device_get(resumed.params), jax.device_get(reference.params))
  # What eval restores (from a target built by jax.eval_shape) is the same final state.
  _, variables, step = training.restore(tmp_path / "whole")
  assert step == 16
  chex.assert_trees_all_equal(jax.device_get(variables["params"]),
                              jax.device_get(reference.params))
  rows = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
  assert rows[-1]["step"] == 16 and np.isfinite(rows[-1]["loss"])


def test_resume_with_another_config_is_refused(tmp_path):
  training.train(tiny_config(), tmp_path, stop_after_step=1, progress=False)
  with pytest.raises(ValueError, match="different config"):
    training.train(tiny_config(**{"optim.lr": 0.2}), tmp_path, progress=False)


def _corrupt_every_step(workdir: pathlib.Path) -> None:
  files = [p for p in (workdir / "checkpoints").rglob("*") if p.is_file()]
  assert files
  for path in files:
    path.write_bytes(b"\x00garbage" * 3)


def test_corrupt_checkpoint_gives_a_clear_error(tmp_path):
  """Every step unreadable: an error naming the directory (a damaged latest step with an intact
  earlier one falls back to it: tests/test_checkpoint_integrity.py)."""
  config = tiny_config(num_epochs=1)
  training.train(config, tmp_path, progress=False)
  _corrupt_every_step(tmp_path)
  with pytest.raises(CheckpointError, match="no intact checkpoint in .*checkpoints: step 8 "):
    training.evaluate_workdir(tmp_path)
  with pytest.raises(CheckpointError, match="no intact checkpoint"):
    training.train(config, tmp_path, progress=False)


def test_eval_of_a_directory_without_a_run(tmp_path, capsys):
  assert cli.main(["eval", "--workdir", str(tmp_path)]) == 2
  assert "not a jaxadv run directory" in capsys.readouterr().err


def test_cli_rejects_bad_override(capsys):
  assert cli.main(["train", "attack.eps=-1"]) == 2
  assert "attack.eps must be >= 0" in capsys.readouterr().err


def test_cli_train_then_eval_end_to_end(tmp_path, capsys):
  workdir = tmp_path / "run"
  config_file = REPO / "experiments" / "configs" / "digits_pgd_at.py"
  code = cli.main(["train", "--config", f"{config_file}:smoke", "--workdir", str(workdir),
                   "--no-progress", "eval.batch_size=64",
                   "eval.masking_checks=False"])  # the checks: tests/test_eval.py
  assert code == 0
  out = capsys.readouterr().out
  assert "| all | 100 |" in out and "pgd5" in out
  record = json.loads((workdir / "eval.json").read_text())
  assert record["n_ex"] == 100 and record["eps"] == "0.2" and record["threat_model"] == "Linf"
  assert 0 <= record["robust_acc"] <= record["clean_acc"] <= 100
  assert len(record["per_class_accuracy"]["pgd5"]) == 10
  assert cli.main(["eval", "--workdir", str(workdir)]) == 0
  again = json.loads((workdir / "eval.json").read_text())
  assert again["clean_acc"] == record["clean_acc"]  # same checkpoint, same attack seed
  assert again["robust_acc"] == record["robust_acc"]
  assert cli.main(["eval", "--workdir", str(workdir), "--suite", "fgsm", "--num-examples", "20",
                   "--tag", "fgsm_n20"]) == 0  # a tagged evaluation keeps eval.json
  tagged = json.loads((workdir / "eval_fgsm_n20.json").read_text())
  assert tagged["n_ex"] == 20 and "fgsm" in tagged["accuracy"]
  assert (workdir / "per_class_fgsm_n20.png").is_file()
  assert json.loads((workdir / "eval.json").read_text()) == again
  capsys.readouterr()
  assert cli.main(["eval", "--workdir", str(workdir), "--tag", "../x"]) == 2
  assert "bad eval tag" in capsys.readouterr().err


def _final_params(workdir, config):
  train_ds = training.load_dataset(config, "train")
  model = training.build_model(config, train_ds)
  tx, _ = make_optimizer(config.optim, 1, 1)
  target = state_lib.create(model, tx, train_ds.image_shape, config.seed)
  checkpoints = Checkpointer(workdir)
  _, state = checkpoints.restore(target)
  checkpoints.close()
  return state


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
  """A real kill -9 of `jaxadv train` mid-run, then a restart of the same command."""
  overrides = ["dataset.num_train=512", "batch_size=32", "num_epochs=2", "attack.steps=2",
               "checkpoint_every_steps=4", "eval.suite=('pgd2',)", "eval.masking_checks=False", "dataset.num_test=50"]
  command = [sys.executable, "-m", "jaxadv.cli", "train", "--no-progress"]
  env = dict(os.environ, XLA_FLAGS="")
  subprocess.run(command + ["--workdir", str(tmp_path / "whole")] + overrides, check=True,
                 env=env, capture_output=True)
  killed = subprocess.Popen(command + ["--workdir", str(tmp_path / "killed")] + overrides,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  checkpoints = tmp_path / "killed" / "checkpoints"
  deadline = time.time() + 120
  while time.time() < deadline and not (checkpoints / "8").is_dir():
    time.sleep(0.2)
  killed.send_signal(signal.SIGKILL)
  killed.wait()
  assert 8 <= Checkpointer(tmp_path / "killed").latest_step() < 32
  subprocess.run(command + ["--workdir", str(tmp_path / "killed")] + overrides, check=True,
                 env=env, capture_output=True)
  config = config_lib.from_json((tmp_path / "whole" / "config.json").read_text())
  whole, resumed = _final_params(tmp_path / "whole", config), _final_params(tmp_path / "killed", config)
  assert int(whole.step) == int(resumed.step) == 32
  chex.assert_trees_all_equal(whole.params, resumed.params)


def test_diverging_run_stops_with_a_clear_error_and_saves_no_bad_state(tmp_path, capsys):
  config = tiny_config(**{"optim.lr": 1e30, "attack.steps": 1})
  with pytest.raises(training.NonFiniteLoss, match="not finite") as stopped:
    training.train(config, tmp_path, progress=False)
  saved = Checkpointer(tmp_path).all_steps()
  assert all(step < stopped.value.step for step in saved)
  assert cli.main(["train", "--workdir", str(tmp_path / "cli"), "--no-progress", "optim.lr=1e30",
                   "dataset.num_train=256", "num_epochs=1", "batch_size=32",
                   "log_every_steps=2"]) == 2
  assert "not finite" in capsys.readouterr().err
