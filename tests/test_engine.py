"""The training engine beyond one step: compilation count, EMA, SIGTERM, monitor, TensorBoard,
plots and sweeps."""

import json
import os
import signal
import subprocess
import sys

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxadv import cli, data, methods, models
from jaxadv.eval import robustness, suites
from jaxadv import train as training
from jaxadv.train import loop, metrics, plot, sweep
from jaxadv import sharding
from jaxadv.train import state as state_lib
from jaxadv.train.checkpoint import Checkpointer
from jaxadv.train.step import make_optimizer, make_train_step

from helpers import tiny_config


def _digits_step(objective_name="pgd_at", ema_decay=0.0, dtype=jnp.float32):
  mesh = sharding.data_mesh()
  model = models.get("small_cnn", num_classes=10, width=8, hidden=16, dtype=dtype)
  tx = optax.sgd(0.05, momentum=0.9)
  state = state_lib.create(model, tx, (8, 8, 1), 0, ema=ema_decay > 0)
  state = jax.device_put(state, sharding.replicated(mesh))
  objective = methods.build(objective_name, model,
                               dict(eps=0.1, step_size=0.05, steps=2, norm="linf"))
  step = make_train_step(objective, tx, mesh, ema_decay=ema_decay)
  batches = data.train_batches(data.load("digits", "train"), 32, seed=0)
  return state, step, (sharding.put_batch(next(batches), mesh) for _ in iter(int, 1))


def test_train_step_compiles_once():
  state, step, batches = _digits_step()
  for _ in range(3):
    state, metrics_ = step(state, next(batches))
    jax.block_until_ready(metrics_)
  assert step._cache_size() == 1  # pylint: disable=protected-access


def test_bfloat16_compute_trains_with_float32_parameters():
  state, step, batches = _digits_step(dtype=jnp.bfloat16)
  state, metrics_ = step(state, next(batches))
  assert np.isfinite(float(metrics_["loss"]))
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state.params))


def test_gradient_clipping_bounds_the_update_and_the_step_logs_the_gradient_norm():
  mesh = sharding.data_mesh()
  model = models.get("small_cnn", num_classes=10, width=8, hidden=16)
  objective = methods.build("erm", model, dict(eps=0.1, step_size=0.05, steps=2, norm="linf"))
  batch = sharding.put_batch(next(data.train_batches(data.load("digits", "train"), 32, 0)), mesh)
  moves = {}
  for clip in (0.0, 0.01):  # plain SGD with lr 1: the update is -clip(g)
    optim = tiny_config(**{"optim.weight_decay": 0.0, "optim.momentum": 0.0, "optim.lr": 1.0,
                           "optim.schedule": "constant", "optim.grad_clip_norm": clip}).optim
    tx, _ = make_optimizer(optim, 10, 10)
    state = jax.device_put(state_lib.create(model, tx, (8, 8, 1), 0), sharding.replicated(mesh))
    before = jax.device_get(state.params)
    state, metrics_ = make_train_step(objective, tx, mesh)(state, batch)
    delta = jax.tree.map(lambda a, b: a - b, jax.device_get(state.params), before)
    moves[clip] = (float(optax.tree.norm(delta)), float(metrics_["grad_norm"]))
  (plain_move, grad_norm), (clipped_move, clipped_grad_norm) = moves[0.0], moves[0.01]
  assert plain_move == pytest.approx(grad_norm, rel=1e-4)
  assert clipped_move == pytest.approx(0.01, rel=1e-4) and grad_norm > 0.01
  assert clipped_grad_norm == pytest.approx(grad_norm, rel=1e-5)  # logged before clipping
  with pytest.raises(ValueError, match="optim.grad_clip_norm must be >= 0"):
    tiny_config(**{"optim.grad_clip_norm": -1.0})


def test_ema_follows_its_definition():
  state, step, batches = _digits_step(ema_decay=0.99)
  chex.assert_trees_all_equal(state.ema, state_lib.raw_variables(state))
  before = jax.device_get(state.ema)
  state, _ = step(state, next(batches))
  d = float(state_lib.ema_decay_at(0.99, 0))  # step 0: min(0.99, 1/10)
  assert d == pytest.approx(0.1)
  expected = jax.tree.map(lambda a, v: d * a + (1 - d) * v, before,
                          jax.device_get(state_lib.raw_variables(state)))
  chex.assert_trees_all_close(jax.device_get(state.ema), expected, rtol=1e-6, atol=1e-7)
  assert state_lib.variables(state) is state.ema
  plain, _, _ = _digits_step()
  assert plain.ema is None and state_lib.variables(plain)["params"] is plain.params


@pytest.mark.slow  # a run, its resume and evaluation
def test_ema_run_resumes_and_evaluates_the_average(tmp_path):
  config = tiny_config(**{"optim.ema_decay": 0.9})
  whole = training.train(config, tmp_path / "whole", progress=False)
  training.train(config, tmp_path / "split", stop_after_step=6, progress=False)
  resumed = training.train(config, tmp_path / "split", progress=False)
  chex.assert_trees_all_equal(jax.device_get(resumed.ema), jax.device_get(whole.ema))
  _, restored, step = training.restore(tmp_path / "whole")
  assert step == 16
  chex.assert_trees_all_equal(jax.device_get(restored), jax.device_get(whole.ema))


def _sigterm_at_batch(monkeypatch, batch_number):
  """Makes the loop receive SIGTERM while it fetches its `batch_number`-th batch."""
  calls = []
  put_batch = sharding.put_batch

  def put_and_maybe_signal(batch, mesh):
    calls.append(1)
    if len(calls) == batch_number:
      signal.raise_signal(signal.SIGTERM)
    return put_batch(batch, mesh)
  monkeypatch.setattr(loop.sharding, "put_batch", put_and_maybe_signal)


def test_sigterm_saves_the_current_step_and_resume_is_exact(tmp_path, monkeypatch, capsys):
  config = tiny_config()
  whole = training.train(config, tmp_path / "whole", progress=False)
  workdir = tmp_path / "preempted"
  _sigterm_at_batch(monkeypatch, 6)
  with pytest.raises(training.Preempted) as stop:
    training.train(config, workdir, progress=False)
  assert 0 < stop.value.step < 16  # batches may be fetched ahead of the step that uses them
  assert Checkpointer(workdir).latest_step() == stop.value.step  # saved off the 4-step cadence too
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler removed again
  monkeypatch.undo()
  resumed = training.train(config, workdir, progress=False)
  chex.assert_trees_all_equal(jax.device_get(resumed.params), jax.device_get(whole.params))
  # Through the command line: exit code 143 and a message saying how to resume.
  _sigterm_at_batch(monkeypatch, 3)
  code = cli.main(["train", "--workdir", str(tmp_path / "cli"), "--no-progress",
                   "dataset.num_train=256", "batch_size=32", "num_epochs=2", "attack.steps=2"])
  assert code == cli.PREEMPTED_EXIT_CODE
  assert "run the same command again to resume" in capsys.readouterr().err


def test_monitor_and_tensorboard_and_plot(tmp_path):
  config = tiny_config(**{"eval.monitor_every_epochs": 1.0, "eval.monitor_examples": 32,
                          "eval.monitor_steps": 2})
  training.train(config, tmp_path, progress=False)
  rows = metrics.read(tmp_path)
  tests = [r for r in rows if "test_clean" in r]
  assert [r["epoch"] for r in tests] == [1.0, 2.0]
  assert all(0 <= r["test_pgd2"] <= r["test_clean"] <= 100 for r in tests)
  train_rows = [r for r in rows if "loss" in r]
  assert [r["step"] for r in train_rows] == [4, 8, 12, 16]

  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
  (events_file,) = (tmp_path / metrics.TENSORBOARD_DIR).iterdir()
  tags = set()
  raw = events_file.read_bytes()
  offset = 0
  while offset < len(raw):  # TFRecord framing: length, crc, payload, crc
    length = int.from_bytes(raw[offset:offset + 8], "little")
    event = event_pb2.Event.FromString(raw[offset + 12:offset + 12 + length])
    tags.update(v.tag for v in event.summary.value)
    offset += 12 + length + 4
  assert {"train/loss", "train/accuracy", "train/lr", "test/test_clean",
          "test/test_pgd2"} <= tags

  assert cli.main(["plot", "--workdir", str(tmp_path)]) == 0
  png = (tmp_path / "curves.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
  assert set(plot.curves(rows)) == {"loss", "accuracy", "test_clean", "test_pgd2"}


def test_plot_without_metrics_is_a_clear_error(tmp_path, capsys):
  assert cli.main(["plot", "--workdir", str(tmp_path)]) == 2
  assert "holds no training metrics" in capsys.readouterr().err


def test_evaluator_compiles_each_attack_once_across_variables():
  test = data.load("digits", "test").take(32)
  model = models.get("small_cnn", num_classes=10, width=8, hidden=16)
  attacks = suites.build(["pgd2"], eps=0.1, norm="linf", num_classes=10, step_size=0.05)
  evaluator = robustness.Evaluator(model, test, batch_size=32)
  for seed in range(2):
    variables = model.init(jax.random.PRNGKey(seed), test.images[:1])
    evaluator(variables, attacks)
  compiled = evaluator._scorer._compiled  # pylint: disable=protected-access
  sizes = [f._cache_size() for f in compiled.values()]
  assert len(compiled) == 2 and all(size <= 14 for size in sizes)  # batch shapes: see rows()
  evaluator(variables, attacks)
  assert [f._cache_size() for f in compiled.values()] == sizes  # nothing new compiled


@hypothesis.given(batches=st.integers(1, 64), num_points=st.data())
def test_short_last_batch_pads_by_at_most_a_quarter(batches, num_points):
  devices = jax.device_count()
  batch_size = batches * devices
  scorer = robustness._Scorer(None, range(batch_size), batch_size,  # pylint: disable=protected-access
                              sharding.data_mesh())
  n = num_points.draw(st.integers(1, batch_size))
  rows = scorer.rows(n)
  assert n <= rows <= batch_size and rows % devices == 0
  assert rows < max(1.25 * n, batch_size / 8 + 1) + devices  # at most 25% padding
  assert len({scorer.rows(k) for k in range(1, batch_size + 1)}) <= 14  # few compiled shapes


def test_evaluator_batch_never_exceeds_the_dataset():
  """A 20-point evaluation with batch_size 500 attacks batches of 20 (rounded up to the
  devices), not 500 rows of which 480 are padding; the results are unchanged."""
  test = data.load("digits", "test").take(20)
  model = models.get("small_cnn", num_classes=10, width=8, hidden=16)
  variables = model.init(jax.random.PRNGKey(0), test.images[:1])
  attacks = suites.build(["fgsm"], eps=0.1, norm="linf", num_classes=10)
  fitted = -(-20 // jax.device_count()) * jax.device_count()
  big = robustness.Evaluator(model, test, batch_size=500)
  assert big._scorer.batch_size == fitted  # pylint: disable=protected-access
  results = [evaluator(variables, attacks).correct for evaluator in
             (big, robustness.Evaluator(model, test, batch_size=fitted))]
  assert all(np.array_equal(results[0][k], results[1][k]) for k in results[0])


@pytest.mark.slow  # four training runs
def test_sweep_summarises_seeds_and_grid(tmp_path, capsys):
  config = tiny_config(num_epochs=1)
  summary = sweep.run(config, tmp_path, seeds=[0, 1], grid={"attack.eps": [0.0, 0.2]},
                      progress=False)
  assert list(summary) == ["attack.eps=0.0", "attack.eps=0.2"]
  for point, stats in summary.items():
    records = [json.loads((tmp_path / point / f"seed{s}" / "eval.json").read_text())
               for s in (0, 1)]
    clean = [r["accuracy"]["clean"] for r in records]
    assert stats["clean"]["values"] == clean
    assert stats["clean"]["mean"] == pytest.approx(np.mean(clean))
    assert stats["clean"]["std"] == pytest.approx(np.std(clean, ddof=1))
  table = (tmp_path / "sweep.md").read_text()
  assert "| attack.eps=0.2 |" in table and "±" in table
  assert capsys.readouterr().out.count("jaxadv sweep:") == 4
  # A second call reuses the finished runs (no training) and gives the same summary.
  assert sweep.run(config, tmp_path, seeds=[0, 1], grid={"attack.eps": [0.0, 0.2]},
                   progress=False) == summary
  assert "jaxadv sweep:" not in capsys.readouterr().out


def test_sweep_cli_rejects_a_bad_grid(capsys):
  assert cli.main(["sweep", "--config", "experiments/configs/digits_pgd_at.py",
                   "--grid", "attack.eps"]) == 2
  assert "field=value1,value2" in capsys.readouterr().err


@hypothesis.given(count=st.integers(1, 4096), cap=st.integers(1, 4096),
                  multiple=st.sampled_from([1, 2, 8]))
def test_padded_rows_holds_the_points_with_at_most_a_quarter_of_padding(count, cap, multiple):
  count = min(count, cap)
  rows = sharding.padded_rows(count, cap, multiple)
  assert rows % multiple == 0 and count <= rows < sharding.round_up(cap, multiple) + 1
  assert rows < 1.25 * count + multiple  # at most 25% padding before the rounding to devices
  shapes = {sharding.padded_rows(n, cap, multiple) for n in range(1, cap + 1)}
  assert len(shapes) <= 4 * cap.bit_length() + 1  # four shapes per octave


def test_the_cli_device_count_is_one_per_core_split_by_the_batch_sizes():
  assert sharding.cpu_device_count(2) == 2
  assert sharding.cpu_device_count(2, {128, 64}) == 2
  assert sharding.cpu_device_count(4, {6}) == 3 and sharding.cpu_device_count(8, {7}) == 7
  assert sharding.cpu_device_count(3, {5}) == 1 and sharding.cpu_device_count(0) == 1


def _devices_in_a_fresh_process(start: str, **env) -> int:
  clean = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
  code = ("import argparse, jax; from jaxadv import cli; "
          f"cli._start_jax(argparse.Namespace(no_compilation_cache=True), {start}); "
          "print(jax.device_count())")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        env={**clean, "JAX_PLATFORMS": "cpu", **env}, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  return int(done.stdout.split()[-1])


def test_the_cli_starts_jax_with_a_device_per_core_unless_the_user_chose():
  cores = len(os.sched_getaffinity(0))
  assert _devices_in_a_fresh_process("{64 * 3 * 5 * 7}") == sharding.cpu_device_count(
      cores, {64 * 3 * 5 * 7})
  assert _devices_in_a_fresh_process("()", JAX_NUM_CPU_DEVICES="3") == 3  # the user's choice


def test_train_and_sweep_choose_devices_by_every_batch_size():
  config = cli._load_config("experiments/configs/digits_pgd_at.py", ["batch_size=48"])
  assert cli._batch_sizes(config, None) == {48}
  assert cli._batch_sizes(config, {"batch_size": [32, 96], "seed": [0, 1]}) == {32, 96}


