"""Checkpoint integrity: the SHA-256 digests saved with every step, the fallback from a damaged
latest step to the newest intact one (one warning line), one clear error when no step is intact,
and no asyncio tracebacks on stderr."""

import json
import logging
import pathlib
import shutil
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxadv import train as training
from jaxadv.train import checkpoint as checkpoint_lib
from jaxadv.train.checkpoint import CheckpointError, Checkpointer

from helpers import tiny_config

NOISE = ("Traceback", "Event loop is closed", "never retrieved")


def _tree(step: int) -> dict:
  """A small state whose values depend on `step`: float32 weights, an int32 counter and a
  uint32 key."""
  rng = np.random.default_rng(step)
  return {"w": jnp.asarray(rng.normal(size=(64, 64)), jnp.float32),
          "b": jnp.asarray(rng.normal(size=(64,)), jnp.float32),
          "step": jnp.asarray(step, jnp.int32),
          "key": jnp.asarray(rng.integers(0, 2**32, 2, dtype=np.uint32))}


def _save(workdir: pathlib.Path, steps) -> None:
  """Saves `_tree(step)` as each of `steps` with `Checkpointer`."""
  checkpointer = Checkpointer(workdir)
  for step in steps:
    checkpointer.save(step, _tree(step))
  checkpointer.close()


def _restore(workdir: pathlib.Path):
  """`Checkpointer.restore` of `workdir` with the structure of `_tree`."""
  checkpointer = Checkpointer(workdir)
  try:
    return checkpointer.restore(_tree(0))
  finally:
    checkpointer.close()


def _xor_middle(path: pathlib.Path, size: int = 64) -> None:
  """Flips the bits of `size` bytes in the middle of the file `path`."""
  data = bytearray(path.read_bytes())
  start = max(0, len(data) // 2 - size // 2)
  data[start:start + size] = bytes(byte ^ 0xFF for byte in data[start:start + size])
  path.write_bytes(bytes(data))


def _garble_array_data(step_dir: pathlib.Path) -> None:
  """Garbles 64 bytes in the middle of the largest array data file of an orbax step (its OCDBT
  data files: the manifests and metadata that locate the arrays stay intact)."""
  files = [p for p in (step_dir / "default").glob("ocdbt.process_*/d/*") if p.is_file()]
  _xor_middle(max(files, key=lambda p: p.stat().st_size))


def _swap_state(step_dir: pathlib.Path, other_dir: pathlib.Path) -> None:
  """Replaces the state item of an orbax step with another step's: every array stays readable
  and wrong for `step_dir`'s digests. (Garbled bytes in a trained model's data files may instead
  make orbax fail to decode a chunk, depending on where they land.)"""
  shutil.rmtree(step_dir / "default")
  shutil.copytree(other_dir / "default", step_dir / "default")


def _garble_manifests(step_dir: pathlib.Path) -> None:
  """Garbles the OCDBT manifests of an orbax step, so that orbax fails to read its arrays."""
  for path in step_dir.glob("default/**/manifest.ocdbt"):
    _xor_middle(path)


def _assert_trees_equal(actual, expected) -> None:
  """Bit-exact equality of two trees of arrays, dtypes included."""
  chex.assert_trees_all_equal_dtypes(actual, expected)
  chex.assert_trees_all_equal(actual, expected)


def test_every_step_holds_the_digest_of_every_array(tmp_path):
  _save(tmp_path, [1, 2])
  step_dir = tmp_path / "checkpoints" / "2"
  recorded = json.loads((step_dir / checkpoint_lib.DIGESTS / "metadata").read_text())
  assert recorded == checkpoint_lib.digests(_tree(2))
  assert set(recorded) == {"['w']", "['b']", "['step']", "['key']"}
  assert checkpoint_lib.mismatched_paths(recorded, _tree(1)) == ["['b']", "['key']", "['step']",
                                                                 "['w']"]
  # A reader of the single-item layout (jaxadv before digests, plain orbax) still reads it.
  manager = ocp.CheckpointManager(tmp_path / "checkpoints")
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _tree(0))
  _assert_trees_equal(manager.restore(2, args=ocp.args.StandardRestore(abstract)), _tree(2))
  manager.close()


def test_damaged_latest_step_falls_back_with_one_warning(tmp_path, capfd):
  _save(tmp_path, [1, 2, 3])
  directory = tmp_path.resolve() / "checkpoints"
  _garble_array_data(directory / "3")
  # orbax alone reads the garbled step without complaint, and returns wrong values.
  manager = ocp.CheckpointManager(directory)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _tree(0))
  garbled = manager.restore(3, args=ocp.args.StandardRestore(abstract))
  manager.close()
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(garbled),
                                                      jax.tree.leaves(_tree(3))))
  capfd.readouterr()
  step, state = _restore(tmp_path)
  assert step == 2
  _assert_trees_equal(state, _tree(2))
  lines = capfd.readouterr().err.splitlines()
  assert len(lines) == 1, lines
  assert f"damaged checkpoint in {directory}: step 3 does not match its SHA-256" in lines[0]
  assert "restored step 2" in lines[0]


def test_unreadable_latest_step_falls_back(tmp_path, capfd):
  _save(tmp_path, [1, 2, 3])
  _garble_manifests(tmp_path / "checkpoints" / "3")
  capfd.readouterr()
  step, state = _restore(tmp_path)
  assert step == 2
  _assert_trees_equal(state, _tree(2))
  lines = capfd.readouterr().err.splitlines()
  assert len(lines) == 1, lines
  assert "step 3 cannot be read" in lines[0] and "restored step 2" in lines[0]


@pytest.mark.parametrize("garble", [_garble_array_data, _garble_manifests])
def test_no_intact_step_raises_one_clear_error(tmp_path, capfd, garble):
  _save(tmp_path, [1, 2])
  directory = tmp_path.resolve() / "checkpoints"
  for step_dir in directory.iterdir():
    garble(step_dir)
  capfd.readouterr()
  with pytest.raises(CheckpointError, match=f"no intact checkpoint in {directory}: step 2 .*"
                                            "; step 1 "):
    _restore(tmp_path)
  assert "warning" not in capfd.readouterr().err


# Restores a 48-leaf tree from the directory argv[1], then waits for the late reports of the
# reads an orbax failure abandoned. Run in a subprocess: pytest's own hooks would catch those
# reports before they reach stderr.
_RESTORE_WIDE_TREE = """
import gc, sys, time
import jax.numpy as jnp
from jaxadv.train.checkpoint import CheckpointError, Checkpointer
checkpointer = Checkpointer(sys.argv[1])
try:
  step, _ = checkpointer.restore({f"leaf{i:02d}": jnp.zeros(16) for i in range(48)})
  print("restored", step)
except CheckpointError as error:
  print("CheckpointError:", error)
checkpointer.close()
time.sleep(2.0)
gc.collect()
"""


def test_orbax_read_failures_leave_no_asyncio_tracebacks_on_stderr(tmp_path):
  """Orbax reads a step's arrays concurrently and closes its event loop at the first failure;
  with many arrays (here 48) the reads still in flight reported 'Event loop is closed' and
  'Task exception was never retrieved' tracebacks on stderr."""
  checkpointer = Checkpointer(tmp_path)
  for step in (1, 2):
    checkpointer.save(step, {f"leaf{i:02d}": jnp.full(16, i + step, jnp.float32)
                             for i in range(48)})
  checkpointer.close()
  directory = tmp_path.resolve() / "checkpoints"

  def restore():
    return subprocess.run([sys.executable, "-c", _RESTORE_WIDE_TREE, str(tmp_path)],
                          capture_output=True, text=True, check=True, timeout=300)

  _garble_manifests(directory / "2")
  fallback = restore()
  assert fallback.stdout == "restored 1\n"
  assert not any(noise in fallback.stderr for noise in NOISE), fallback.stderr
  warnings = [line for line in fallback.stderr.splitlines() if "damaged checkpoint" in line]
  assert len(warnings) == 1 and "step 2 cannot be read" in warnings[0], fallback.stderr
  _garble_manifests(directory / "1")
  failure = restore()
  assert failure.stdout.startswith(f"CheckpointError: no intact checkpoint in {directory}")
  assert not any(noise in failure.stderr for noise in NOISE), failure.stderr
  assert "damaged checkpoint" not in failure.stderr


def test_step_without_digests_is_restored_unchecked(tmp_path):
  """A step in the single-item layout of older versions (no digests) restores as it is."""
  manager = ocp.CheckpointManager(tmp_path / "checkpoints")
  manager.save(1, args=ocp.args.StandardSave(_tree(1)))
  manager.wait_until_finished()
  manager.close()
  step, state = _restore(tmp_path)
  assert step == 1
  _assert_trees_equal(state, _tree(1))
  _save(tmp_path, [2])  # a newer step of this version next to it
  step, state = _restore(tmp_path)
  assert step == 2
  _assert_trees_equal(state, _tree(2))


def test_evaluation_and_resumed_training_fall_back_end_to_end(tmp_path, capfd):
  """A run whose latest step (8) holds wrong arrays: evaluation restores step 4 and says so;
  training again resumes from step 4 and rewrites step 8 bit-exactly as the uninterrupted run
  wrote it."""
  config = tiny_config(num_epochs=1)  # 8 steps, checkpoints at 4 and 8
  run, pristine, earlier = tmp_path / "run", tmp_path / "pristine", tmp_path / "earlier"
  training.train(config, run, progress=False)
  shutil.copytree(run, pristine)
  shutil.copytree(run, earlier)
  shutil.rmtree(earlier / "checkpoints" / "8")
  _swap_state(run / "checkpoints" / "8", run / "checkpoints" / "4")
  capfd.readouterr()
  _, variables, step = training.restore(run)
  assert step == 4
  _, expected, _ = training.restore(earlier)
  _assert_trees_equal(variables, expected)
  assert "step 8 does not match its SHA-256 digests" in capfd.readouterr().err
  training.train(config, run, progress=False)
  assert "restored step 4" in capfd.readouterr().err
  _, variables, step = training.restore(run)
  _, expected, _ = training.restore(pristine)
  assert step == 8
  _assert_trees_equal(variables, expected)
  assert "warning" not in capfd.readouterr().err


def test_the_orphaned_read_filter_drops_only_reports_of_unreadable_steps(tmp_path):
  """Reads still in flight after a failed restore may log when collected, long after it: the
  asyncio filter drops those reports naming the failed step, and nothing else."""
  directory = tmp_path / "checkpoints" / "1"
  with pytest.raises(ValueError):
    with checkpoint_lib._contained_orbax_failure(directory):  # pylint: disable=protected-access
      raise ValueError("unreadable")
  asyncio_filter = checkpoint_lib._orphaned_reads_filter()  # pylint: disable=protected-access

  def passes(message: str) -> bool:
    return asyncio_filter.filter(logging.LogRecord("asyncio", logging.ERROR, __file__, 0,
                                                   message, None, None))

  late = f"future: <Future finished exception=ValueError('reading \"{directory}/default/\"')>"
  assert not passes("Task exception was never retrieved\n" + late)
  assert not passes("Future exception was never retrieved\n" + late)
  assert passes("Task exception was never retrieved\n" + late.replace("/1/", "/10/"))
  assert passes(f"Executing <Task> took 0.2 seconds {directory}/default/")
