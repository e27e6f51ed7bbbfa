"""Natural shifts: their maths, range and determinism, and the shift evaluation."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import cli
from jaxadv import train as training
from jaxadv.data import shifts
from jaxadv.data.dataset import ArrayDataset
from jaxadv.eval.shifts import evaluate_shifts

from helpers import TinyNet, random_images, tiny_config

KEY = jax.random.PRNGKey(0)


@pytest.mark.parametrize("name", sorted(shifts.SHIFTS))
def test_every_shift_keeps_shape_dtype_and_the_unit_range(name):
  x = random_images((4, 8, 8, 3))
  y = shifts.get(name)(x, KEY)
  assert y.shape == x.shape and y.dtype == x.dtype
  assert float(y.min()) >= 0 and float(y.max()) <= 1
  assert not np.allclose(y, x)
  np.testing.assert_allclose(jax.jit(shifts.get(name))(x, KEY), y, rtol=1e-5, atol=1e-6)


def test_brightness_shifts_follow_their_formulas():
  x = random_images((2, 4, 4, 1))
  np.testing.assert_allclose(shifts.darker(x), 0.6 * x, rtol=1e-6)
  np.testing.assert_allclose(shifts.brighter(x), x + 0.3 * (1 - x), rtol=1e-6)


def test_blur_averages_neighbours_and_sharpening_undoes_it_in_the_interior():
  x = jnp.zeros((1, 5, 5, 1)).at[0, 2, 2, 0].set(1.0)  # one bright pixel
  blurred = shifts.blur(x)
  taps = np.exp(-np.arange(-1, 2) ** 2 / 2.0)
  taps /= taps.sum()
  np.testing.assert_allclose(blurred[0, 1:4, 1:4, 0], np.outer(taps, taps), rtol=1e-5)
  np.testing.assert_allclose(float(blurred.sum()), 1.0, rtol=1e-5)
  sharp = shifts.sharper(x)
  assert float(sharp[0, 2, 2, 0]) == 1.0 and float(sharp[0, 1, 2, 0]) == 0.0  # clipped


def test_noise_depends_on_the_key_only_and_has_the_stated_scale():
  x = jnp.full((8, 16, 16, 1), 0.5)
  a, b = shifts.noise(x, KEY), shifts.noise(x, jax.random.PRNGKey(1))
  np.testing.assert_array_equal(a, shifts.noise(x, KEY))
  assert not np.allclose(a, b)
  assert abs(float(jnp.std(a - x)) - shifts.NOISE_STD) < 0.01
  with pytest.raises(ValueError, match="needs a PRNG key"):
    shifts.noise(x, None)


def test_unknown_shift_and_bad_rank_are_value_errors():
  with pytest.raises(ValueError, match="unknown shift 'fog'"):
    shifts.get("fog")
  with pytest.raises(ValueError, match="images must be \\(B, H, W, C\\)"):
    shifts.darker(jnp.zeros((4, 4)))


def test_the_evaluation_scores_each_shifted_test_set_and_keeps_no_worst_case():
  model, x = TinyNet(), random_images((40, 6, 6, 1))
  variables = model.init(jax.random.PRNGKey(0), x)
  dataset = ArrayDataset(np.asarray(x), np.arange(40, dtype=np.int32) % 3, 3, "random",
                         (0.5,), (0.5,))
  record = evaluate_shifts(model, variables, dataset, ("darker", "noise"), batch_size=16)
  assert set(record["accuracy"]) == {"clean", "darker", "noise"}
  logits = model.apply(variables, x)
  np.testing.assert_allclose(record["accuracy"]["clean"],
                             100 * np.mean(np.argmax(logits, -1) == dataset.labels))
  dark = model.apply(variables, shifts.darker(x))
  np.testing.assert_allclose(record["accuracy"]["darker"],
                             100 * np.mean(np.argmax(dark, -1) == dataset.labels))
  assert record == evaluate_shifts(model, variables, dataset, ("darker", "noise"),
                                   batch_size=16)  # the noise is seeded


@pytest.mark.slow  # a run and its evaluation
def test_jaxadv_eval_shifts_writes_its_record_beside_the_runs_evaluation(tmp_path, capsys):
  config = tiny_config(**{"num_epochs": 1, "dataset.num_train": 64})
  training.train(config, tmp_path, progress=False)
  assert cli.main(["eval", "--workdir", str(tmp_path), "--shifts", "darker,noise",
                   "--num-examples", "32"]) == 0
  record = json.loads((tmp_path / "eval_shifts.json").read_text())
  assert record["n_ex"] == 32 and set(record["accuracy"]) == {"clean", "darker", "noise"}
  assert "| darker |" in capsys.readouterr().out
  assert cli.main(["eval", "--workdir", str(tmp_path), "--shifts", "fog"]) == 2
  assert "unknown shift 'fog'" in capsys.readouterr().err
