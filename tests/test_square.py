"""Square Attack: threat model, frozen examples, monotone search, gradient-free strength, checks."""

import functools
import importlib

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import attacks

# The module, for its private steps: `jaxadv.attacks.square` is the exported function.
square_lib = importlib.import_module("jaxadv.attacks.square")

from helpers import linear_apply_fn, random_images

# One model object for the small tests, so the attack compiles once per (norm, loss, queries).
_LINEAR = linear_apply_fn(4 * 4 * 2)
_SHAPE = (6, 4, 4, 2)
_EPS = jnp.linspace(0.05, 0.3, _SHAPE[0])  # Per-example radii.


def _norms(delta):
  flat = np.asarray(delta).reshape(delta.shape[0], -1)
  return np.abs(flat).max(axis=1), np.linalg.norm(flat, axis=1)


def _predict(apply_fn, x):
  return jnp.argmax(apply_fn(x), axis=-1)


@hypothesis.settings(max_examples=10)
@hypothesis.given(eps=st.floats(0.0, 1.0), norm=st.sampled_from(["linf", "l2"]),
                  seed=st.integers(0, 2**16))
def test_square_stays_in_ball_and_box(eps, norm, seed):
  x = random_images(_SHAPE, seed)
  eps = jnp.linspace(0.0, eps, _SHAPE[0])  # Per example, from 0 to eps.
  x_adv = attacks.square(_LINEAR, x, jnp.arange(6) % 3, jax.random.PRNGKey(seed), eps=eps,
                         norm=norm, queries=20)
  chex.assert_equal_shape([x, x_adv])
  chex.assert_trees_all_equal_dtypes(x, x_adv)
  assert np.all(np.asarray(x_adv) >= 0.0) and np.all(np.asarray(x_adv) <= 1.0)
  linf, l2 = _norms(x_adv - x)
  np.testing.assert_array_less((linf if norm == "linf" else l2), np.asarray(eps) + 1e-5)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_square_spends_the_whole_budget_away_from_the_box(norm):
  """Inside the box, L-inf iterates are vertices (|delta_i| = eps) and L2 ones on the sphere."""
  x = 0.35 + 0.3 * random_images(_SHAPE, 1)
  x_adv = attacks.square(_LINEAR, x, _predict(_LINEAR, x), jax.random.PRNGKey(0), eps=_EPS,
                         norm=norm, queries=20)
  delta = np.asarray(x_adv - x)
  if norm == "linf":
    np.testing.assert_allclose(np.abs(delta), np.broadcast_to(_EPS[:, None, None, None],
                                                              delta.shape), rtol=1e-5)
  else:
    np.testing.assert_allclose(_norms(delta)[1], _EPS, rtol=1e-4)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_square_leaves_misclassified_examples_alone(norm):
  x = random_images(_SHAPE, 2)
  clean = _predict(_LINEAR, x)
  wrong = jnp.arange(6) % 2 == 0
  y = jnp.where(wrong, (clean + 1) % 3, clean)
  x_adv = attacks.square(_LINEAR, x, y, jax.random.PRNGKey(0), eps=_EPS, norm=norm, queries=20)
  np.testing.assert_array_equal(np.asarray(x_adv)[wrong], np.asarray(x)[wrong])
  assert np.all(_norms(x_adv - x)[0][~wrong] > 0)


@pytest.mark.parametrize("norm, loss", [("linf", "margin"), ("l2", "ce")])
def test_square_search_is_monotone_and_freezes_fooled_examples(norm, loss):
  """Query by query: the kept loss never drops, it is the loss of the kept point, and an
  example's point stops changing once it is misclassified."""
  x = random_images((8, 4, 4, 2), 3)
  y = _predict(_LINEAR, x)
  key, eps, queries = jax.random.PRNGKey(0), 0.15, 60
  state = jax.jit(functools.partial(square_lib._initial_state, _LINEAR, norm=norm, loss=loss))(
      x, y, key, eps)
  step = jax.jit(functools.partial(square_lib._square_step, apply_fn=_LINEAR, x=x, y=y, key=key,
                                   eps=eps, p_init=0.8, queries=queries, norm=norm, loss=loss))
  history = [state]
  for query in range(1, queries):
    history.append(step(query, history[-1]))
  stacked = jax.tree.map(lambda *leaves: np.stack(leaves), *history)
  assert np.all(np.diff(stacked.loss_best, axis=0) >= 0)
  fooled = stacked.margin_best[:-1] > 0
  moved = np.any(np.diff(stacked.x_best, axis=0) != 0, axis=(2, 3, 4))
  assert not np.any(fooled & moved)
  final_logits = _LINEAR(history[-1].x_best)
  np.testing.assert_allclose(stacked.margin_best[-1], attacks.losses.cw_margin(final_logits, y),
                             rtol=1e-5, atol=1e-5)
  # Not vacuous: the search improved some examples after the start and fooled some of them.
  assert np.any(stacked.loss_best[-1] > stacked.loss_best[0])
  assert np.any(fooled[-1]) and not np.all(fooled[0])


def test_window_schedule_follows_the_paper():
  p = lambda query, queries: square_lib._window_fraction(query, queries, 0.8) / 0.8
  assert p(10, 10_000) == 1 and p(11, 10_000) == 1 / 2 and p(9_999, 10_000) == 1 / 512
  assert p(1, 1_000) == 1 and p(2, 1_000) == 1 / 2 and p(801, 1_000) == 1 / 512
  side = lambda fraction: int(square_lib._window_side(fraction, 8, 6))
  assert side(1.0) == 6 and side(0.5) == 5 and side(1e-4) == 1


def test_meta_pattern_is_two_opposite_blocks_of_concentric_squares():
  rows, cols = jnp.arange(4)[:, None], jnp.arange(4)[None, :]
  pattern = np.asarray(square_lib._meta_pattern(rows - 1, cols - 1, 3, False, 3))
  # Left block (3 x 1) and right block (3 x 2), centred on rows 1, columns 0 and 1 of each.
  expected = np.array([[0.25, -0.25, -0.25], [1.25, -0.25, -1.25], [0.25, -0.25, -0.25]])
  np.testing.assert_allclose(pattern[1:, 1:], expected)
  assert not pattern[0].any() and not pattern[:, 0].any()
  transposed = square_lib._meta_pattern(rows - 1, cols - 1, 3, True, 3)
  np.testing.assert_allclose(transposed, pattern.T)


def test_square_breaks_undefended_digits_cnn(digits_cnn):
  apply_fn, x, y = digits_cnn.apply_fn, digits_cnn.images[:120], digits_cnn.labels[:120]
  accuracy = jax.jit(lambda v: jnp.mean(_predict(apply_fn, v) == y))
  assert accuracy(x) > 0.9
  x_adv = attacks.square(apply_fn, x, y, jax.random.PRNGKey(0), eps=0.3, queries=200)
  assert accuracy(x_adv) < 0.05


def test_square_needs_no_gradients(digits_cnn):
  """Rounding the input to the 17 grey levels of digits is the identity on clean images but has
  zero gradient everywhere: PGD cannot move, Square still breaks the model."""
  apply_fn, x, y = digits_cnn.apply_fn, digits_cnn.images[:120], digits_cnn.labels[:120]
  quantised = jax.jit(lambda v: apply_fn(jnp.round(v * 16) / 16))
  accuracy = jax.jit(lambda v: jnp.mean(_predict(quantised, v) == y))
  assert accuracy(x) > 0.9
  x_pgd = attacks.pgd(quantised, x, y, None, eps=0.3, step_size=0.03, steps=10,
                      random_start=False)
  np.testing.assert_array_equal(x_pgd, x)
  x_adv = attacks.square(quantised, x, y, jax.random.PRNGKey(0), eps=0.3, queries=200)
  assert accuracy(x_adv) < 0.1


@pytest.mark.parametrize("kwargs, message", [
    (dict(eps=-0.1), "eps must be >= 0"),
    (dict(eps=float("nan")), "eps must be finite"),
    (dict(queries=0), "queries must be an integer >= 1"),
    (dict(queries=2.5), "queries must be an integer >= 1"),
    (dict(norm="l1"), "unknown norm"),
    (dict(loss="dlr"), "unknown square loss"),
    (dict(p_init=0.0), r"p_init must lie in \(0, 1\]"),
    (dict(p_init=1.5), r"p_init must lie in \(0, 1\]"),
    (dict(key=None), "PRNG key"),
    (dict(x=jnp.full(_SHAPE, 1.5)), r"must lie in \[0, 1\]"),
    (dict(x=jnp.zeros((6, 32))), r"\(B, H, W, C\)"),
    (dict(y=jnp.zeros(5, jnp.int32)), "does not match"),
    (dict(y=jnp.zeros(6)), "integer"),
])
def test_square_rejects_bad_inputs(kwargs, message):
  args = dict(x=random_images(_SHAPE), y=jnp.zeros(6, jnp.int32), key=jax.random.PRNGKey(0),
              eps=0.1, queries=2) | kwargs
  with pytest.raises(ValueError, match=message):
    attacks.square(_LINEAR, args.pop("x"), args.pop("y"), args.pop("key"), **args)
