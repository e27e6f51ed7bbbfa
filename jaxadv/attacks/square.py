"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020): score-based black-box.

Random search over the vertices (L-inf) or the sphere (L2) of the eps-ball that only reads the
model's outputs. With margin m(x) = z_y(x) - max_{j != y} z_j(x) (minimised; the library's
"cw" loss is -m), each query draws a candidate that changes one square window of side s,

    x_new = Proj_{ball(x, eps) ∩ [0,1]^d}( x_best + delta ),   delta ~ P(eps, s, x_best, x),

and keeps it, per example, when it lowers the loss: x_best <- x_new if L(x_new) < L(x_best).
An example stops changing once it is misclassified (m < 0), including before the first query.

The window covers a fraction p of the pixels, s = round(sqrt(p * H * W)) clipped to
[1, min(H, W)], and p halves after queries 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000
of a 10,000-query budget (rescaled to the budget at hand).

* L-inf: start from vertical stripes x + eps * sigma_col (one random sign per column and
  channel); a proposal sets the window, channel by channel, to x +- eps with a random sign.
* L2: start from a 5x5 grid of tiles, each holding the meta-pattern below with a random sign
  per channel, scaled to ||delta||_2 = eps. A proposal picks two windows W1, W2 and, per
  channel, moves the perturbation mass of W1 ∪ W2 plus an even share of the unused budget
  eps^2 - ||nu||^2 into W1, along the old W1 direction plus a random +- meta-pattern. W2 is
  zeroed, so ||delta||_2 stays eps up to the [0, 1] clip.

Every iteration is one query per example, state has fixed shapes, and the loop is a
`lax.fori_loop`: the attack jits once per (shape, queries, norm, loss) and needs no gradients.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv import validation
from jaxadv.attacks import geometry
from jaxadv.attacks import losses
from jaxadv.attacks.base import (ApplyFn, as_pytree, cast_toward, check_attack_inputs,
                                  check_finite_logits, to_compute)
from jaxadv.attacks.worst_case import select

# Per-example objectives that the search increases: "margin" is -m above, "ce" the
# cross-entropy of the true class.
SQUARE_LOSSES = {"margin": losses.cw_margin, "ce": losses.cross_entropy}
# Queries after which p halves, for a budget of _REFERENCE_QUERIES queries.
_HALVING_QUERIES = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_REFERENCE_QUERIES = 10_000
_INIT_TILES = 5
_TINY = 1e-12


class _State(NamedTuple):
  """Per-example search state: best point (B, H, W, C), its objective and cw margin (B,)."""
  x_best: jax.Array
  loss_best: jax.Array
  margin_best: jax.Array


def _window_fraction(query, queries: int, p_init):
  """p at `query` of `queries`: p_init / 2^k, k = #{t in _HALVING_QUERIES : q' > t},
  with q' = query * 10000 / queries."""
  progress = query * (_REFERENCE_QUERIES / queries)
  halvings = jnp.sum(progress > jnp.asarray(_HALVING_QUERIES, jnp.float32))
  return p_init * 0.5 ** halvings


def _window_side(p, height: int, width: int):
  """Side of a square covering a fraction p of an H x W image, in [1, min(H, W)] (int32)."""
  side = jnp.round(jnp.sqrt(p * height * width)).astype(jnp.int32)
  return jnp.clip(side, 1, min(height, width))


def _uniform(key, shape):
  """U[0, 1) draws of `shape`, taken flat: XLA compiles a 1-D threefry draw several times faster
  than a multi-dimensional one (seconds per draw on CPU)."""
  return jax.random.uniform(key, (math.prod(shape),)).reshape(shape)


def _uniform_index(u, count):
  """floor(u * count) for u ~ U[0, 1): uniform on {0, ..., count - 1} (int32)."""
  return jnp.minimum(jnp.floor(u * count).astype(jnp.int32), count - 1)


def _signs(u):
  """-1 where u < 1/2, else +1: Rademacher signs from uniforms, same shape."""
  return jnp.where(u < 0.5, -1.0, 1.0)


def _random_window(u, height: int, width: int, side):
  """Window-relative pixel coordinates (row - top, col - left), shapes (B, H, 1) and (B, 1, W),
  of a side x side window with a uniform top-left corner drawn from u (B, 2) ~ U[0, 1)."""
  top = _uniform_index(u[:, 0], height - side + 1)
  left = _uniform_index(u[:, 1], width - side + 1)
  rows = jnp.arange(height)[None, :, None] - top[:, None, None]
  cols = jnp.arange(width)[None, None, :] - left[:, None, None]
  return rows, cols


def _in_window(rows, cols, side):
  """True where 0 <= rows < side and 0 <= cols < side (broadcast shape)."""
  return (rows >= 0) & (rows < side) & (cols >= 0) & (cols < side)


def _meta_pattern(rows, cols, side, transpose, max_side: int):
  """The L2 meta-pattern of a side x side window at window-relative coordinates (rows, cols).

  The window is split into a left block of k = floor(side/2) columns and a right block of
  side - k columns, [eta(side, k), -eta(side, side - k)], each a stack of concentric
  rectangles around its centre (c_r, c_c) = (floor(h_1/2), floor(h_2/2)):

      eta(h_1, h_2)_{r,c} = sum_{m = d + 1}^{n + 1} 1 / m^2,
      n = floor(h_1 / 2),  d = max(|r - c_r|, |c - c_c|),

  largest at the centre and decaying outwards. `transpose` (bool, broadcastable) swaps rows
  and columns. Not normalised; zero outside the window. `max_side` (static) bounds `side`.
  """
  rows, cols = jnp.where(transpose, cols, rows), jnp.where(transpose, rows, cols)
  left_width = side // 2
  in_right = cols >= left_width
  block_width = jnp.where(in_right, side - left_width, left_width)
  block_cols = jnp.where(in_right, cols - left_width, cols)
  ring = jnp.maximum(jnp.abs(rows - side // 2), jnp.abs(block_cols - block_width // 2))
  # partial_sums[k] = sum_{m=1}^{k} 1 / m^2, for k = 0 .. max_side // 2 + 1.
  partial_sums = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, max_side // 2 + 2) ** 2)])
  partial_sums = jnp.asarray(partial_sums, jnp.float32)
  value = partial_sums[side // 2 + 1] - jnp.take(partial_sums, ring, mode="clip")
  return jnp.where(_in_window(rows, cols, side), jnp.where(in_right, -value, value), 0.0)


def _spatial_norm(v):
  """Per-example, per-channel L2 norm over (H, W): (B, H, W, C) -> (B, 1, 1, C)."""
  return jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2), keepdims=True))


def _linf_init(key, x, eps):
  """Vertical stripes: x + eps * sigma with sigma in {-1, 1}^(B, 1, W, C), clipped to [0, 1]."""
  batch, _, width, channels = x.shape
  stripes = _signs(_uniform(key, (batch, 1, width, channels)))
  return jnp.clip(x + geometry.per_example(eps, x, 1) * stripes, 0.0, 1.0)


def _l2_init(key, x, eps):
  """A centred grid of up to 5 x 5 tiles of side t = max(1, min(H, W) // 5), each the
  meta-pattern (randomly transposed) times a random sign per channel, scaled to
  ||delta||_2 = eps and clipped to [0, 1]."""
  batch, height, width, channels = x.shape
  tile = max(1, min(height, width) // _INIT_TILES)
  grid = min(_INIT_TILES, height // tile), min(_INIT_TILES, width // tile)
  offsets = jnp.arange(tile)
  pattern = _meta_pattern(offsets[:, None], offsets[None, :], tile, False, tile)  # (t, t)
  u = _uniform(key, (batch, *grid, 1 + channels))
  tiles = jnp.where(u[..., :1, None] < 0.5, pattern.T, pattern)  # (B, gh, gw, t, t)
  delta = tiles[..., None] * _signs(u[..., None, None, 1:])  # (B, gh, gw, t, t, C)
  delta = delta.transpose(0, 1, 3, 2, 4, 5).reshape(batch, grid[0] * tile, grid[1] * tile,
                                                     channels)
  top, left = (height - grid[0] * tile) // 2, (width - grid[1] * tile) // 2
  delta = jnp.pad(delta, ((0, 0), (top, height - top - grid[0] * tile),
                          (left, width - left - grid[1] * tile), (0, 0)))
  delta = geometry.per_example(eps, x, 1) * delta / jnp.maximum(geometry.l2_norm(delta, 1), _TINY)
  return jnp.clip(x + delta.astype(x.dtype), 0.0, 1.0)


def _linf_candidate(key, x, x_best, eps, side):
  """x_best with one random side x side window set to clip(x + eps * sigma_c), sigma_c = +-1
  per channel. A draw that would change nothing is replaced by its opposite signs (for one
  channel, the only draw that changes the window), so no query is wasted."""
  batch, height, width, channels = x.shape
  u = _uniform(key, (batch, 2 + channels))
  window = _in_window(*_random_window(u[:, :2], height, width, side), side)[..., None]
  eps = geometry.per_example(eps, x, 1)
  propose = lambda signs: jnp.where(window, jnp.clip(x + eps * signs, 0.0, 1.0), x_best)
  signs = _signs(u[:, None, None, 2:])
  x_new = propose(signs)
  unchanged = jnp.all(x_new == x_best, axis=(1, 2, 3), keepdims=True)
  return jnp.where(unchanged, propose(-signs), x_new)


def _l2_candidate(key, x, x_best, eps, side):
  """The paper's L2 proposal. With nu = x_best - x, windows W1, W2 and, per channel c,

      u_c   = rho_c * eta / ||eta||_2 + nu_{W1,c} / ||nu_{W1,c}||_2,    rho_c = +-1,
      b_c   = sqrt(||nu_{W1 ∪ W2,c}||_2^2 + (eps^2 - ||nu||_2^2) / C),
      nu'_c = b_c * u_c / ||u_c||_2 on W1,   0 on W2 \\ W1,   nu_c elsewhere,

  so ||nu'||_2 = eps; returns Proj(x + nu'), which only clips to [0, 1]."""
  batch, height, width, channels = x.shape
  u = _uniform(key, (batch, 5 + channels))
  first_rows, first_cols = _random_window(u[:, :2], height, width, side)
  first = _in_window(first_rows, first_cols, side)[..., None]
  second = _in_window(*_random_window(u[:, 2:4], height, width, side), side)[..., None]
  transpose = u[:, 4, None, None] < 0.5
  eta = _meta_pattern(first_rows, first_cols, side, transpose, min(height, width))[..., None]
  eta = eta / jnp.maximum(geometry.l2_norm(eta, 1), _TINY)
  signs = _signs(u[:, None, None, 5:])

  nu = x_best - x
  nu_first = jnp.where(first, nu, 0.0)
  direction = signs * eta + nu_first / jnp.maximum(_spatial_norm(nu_first), _TINY)
  direction = direction / jnp.maximum(_spatial_norm(direction), _TINY)
  unused = jnp.maximum(geometry.per_example(eps, x, 1) ** 2 - geometry.l2_norm(nu, 1) ** 2, 0.0)
  budget = jnp.sqrt(_spatial_norm(jnp.where(first | second, nu, 0.0)) ** 2 + unused / channels)
  nu = jnp.where(first, budget * direction, jnp.where(second, 0.0, nu))
  return geometry.project(x + nu.astype(x.dtype), x, eps, "l2", 1)


def _evaluate(apply_fn, x_adv, y, loss: str):
  """One query: the search objective and the cw margin (> 0 iff misclassified), both (B,)."""
  logits = apply_fn(x_adv)
  return SQUARE_LOSSES[loss](logits, y), losses.cw_margin(logits, y)


def _accept(better, new: _State, old: _State) -> _State:
  """Fields of `new` for the examples where `better` (B,), those of `old` elsewhere."""
  return select(better, new, old)


def _initial_state(apply_fn, x, y, key, eps, *, norm: str, loss: str) -> _State:
  """Query 0: the stripes (L-inf) or grid (L2) start, or x itself where x is misclassified."""
  start = (_linf_init if norm == "linf" else _l2_init)(jax.random.fold_in(key, 0), x, eps)
  misclassified = losses.cw_margin(apply_fn(x), y) > 0
  x_init = select(misclassified, x, start)
  return _State(x_init, *_evaluate(apply_fn, x_init, y, loss))


def _square_step(query, state: _State, *, apply_fn, x, y, key, eps, p_init, queries: int,
                 norm: str, loss: str) -> _State:
  """Query `query` (1 .. queries - 1): propose, evaluate, keep improvements of the unfooled."""
  side = _window_side(_window_fraction(query, queries, p_init), x.shape[1], x.shape[2])
  propose = _linf_candidate if norm == "linf" else _l2_candidate
  x_new = propose(jax.random.fold_in(key, query), x, state.x_best, eps, side)
  candidate = _State(x_new, *_evaluate(apply_fn, x_new, y, loss))
  better = (state.margin_best <= 0) & (candidate.loss_best > state.loss_best)
  return _accept(better, candidate, state)


@functools.partial(jax.jit, static_argnames=("queries", "norm", "loss"))
def _square(apply_fn, x, y, key, eps, p_init, *, queries, norm, loss):
  """Jitted Square Attack core; arguments as in `square`, already validated."""
  state = _initial_state(apply_fn, x, y, key, eps, norm=norm, loss=loss)
  step = functools.partial(_square_step, apply_fn=apply_fn, x=x, y=y, key=key, eps=eps,
                           p_init=p_init, queries=queries, norm=norm, loss=loss)
  state = jax.lax.fori_loop(1, queries, step, state)
  return jax.lax.stop_gradient(state.x_best)


def square(apply_fn: ApplyFn, x: jax.Array, y: jax.Array, key: jax.Array, *, eps,
           norm: str = "linf", queries: int = 5000, p_init=0.8,
           loss: str = "margin") -> jax.Array:
  """Square Attack; returns `x_adv` with ||x_adv - x|| <= eps and x_adv in [0, 1].

  Untargeted random search that calls `apply_fn` only forward (no gradients, so it also works
  on non-differentiable or gradient-masking models). Per example it keeps the best point so
  far, x_best, and the objective L (the margin max_{j != y} z_j - z_y by default, increased),
  and for q = 1, ..., queries - 1 evaluates one candidate that redraws a square window of
  side s_q = round(sqrt(p_q H W)):

      x_best <- x_new  if  L(f(x_new), y) > L(f(x_best), y)  and x_best is still classified y.

  Query 0 evaluates the initial point (vertical stripes of +-eps for L-inf, a 5x5 grid of
  meta-patterns with ||delta||_2 = eps for L2). Examples already misclassified at `x` are
  returned unchanged; the clean evaluation that finds them is one extra query per example.

  Args:
    apply_fn: `x -> logits`, shape (B, H, W, C) -> (B, K), with parameters and mode fixed.
    x: clean images in [0, 1], shape (B, H, W, C).
    y: integer labels, shape (B,).
    key: PRNG key; the draws of query q come from `fold_in(key, q)`.
    eps: radius, a scalar or per-example array of shape (B,), >= 0.
    norm: "linf" or "l2".
    queries: queries per example, counting the initial point, static (paper: 10,000).
    p_init: initial fraction of pixels in the window, in (0, 1] (paper: 0.8 on MNIST L-inf,
      0.05 on ImageNet L-inf, 0.1 for L2).
    loss: "margin" (the paper's untargeted choice) or "ce".

  Returns:
    Adversarial images, same shape and dtype as `x`, carrying no gradient.

  Example: L-inf Square Attack on a linear model with 3 classes, forward passes only (a Flax
  model enters as `jaxadv.models.BoundModel(model, variables, "eval")`).
    >>> import jax, jax.numpy as jnp
    >>> from jaxadv.attacks import square
    >>> w = jax.random.normal(jax.random.PRNGKey(0), (16, 3))
    >>> apply_fn = lambda v: v.reshape(v.shape[0], -1) @ w
    >>> x = jax.random.uniform(jax.random.PRNGKey(1), (4, 4, 4, 1))
    >>> y = jnp.argmax(apply_fn(x), axis=-1)
    >>> key = jax.random.PRNGKey(2)
    >>> x_adv = square(apply_fn, x, y, key, eps=0.3, queries=100)
    >>> x_adv.shape, x_adv.dtype
    ((4, 4, 4, 1), dtype('float32'))
    >>> bool(jnp.all(jnp.abs(x_adv - x) <= 0.3 + 1e-6)), bool(jnp.all((0 <= x_adv) & (x_adv <= 1)))
    (True, True)
    >>> int(jnp.sum(jnp.argmax(apply_fn(x_adv), axis=-1) != y))   # examples fooled, of 4
    4
  """
  check_attack_inputs(x, y, eps=eps, norm=norm)
  if x.ndim != 4 or y.ndim != 1:
    raise ValueError(f"square needs images of shape (B, H, W, C) and labels (B,), got "
                     f"{tuple(x.shape)} and {tuple(y.shape)}.")
  validation.check_positive_int(queries, "queries")
  validation.check_choice(loss, "square loss", SQUARE_LOSSES)
  if validation.is_concrete(p_init) and not 0.0 < float(p_init) <= 1.0:
    raise ValueError(f"p_init must lie in (0, 1], got {p_init}.")
  if key is None:
    raise ValueError("square needs a PRNG key.")
  check_finite_logits(apply_fn, x, labels=y)
  if x.shape[0] == 0:
    return x
  return cast_toward(_square(as_pytree(apply_fn), to_compute(x), y, key, eps, p_init,
                             queries=queries, norm=norm, loss=loss), x)
