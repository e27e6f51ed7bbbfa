"""AutoAttack (Croce & Hein, ICML 2020) as a function: a cascade of parameter-free attacks.

Each stage attacks only the points that every earlier stage left correctly classified, and a
point is robust when it is classified correctly clean and after every stage. The versions
follow the reference implementation's definitions (`AutoAttack.set_version`):

| version  | stages, in order (targets capped at K - 1)                                         |
|----------|------------------------------------------------------------------------------------|
| standard | APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5,000 queries), 1 restart |
| standard, L1 | APGD-CE (5 restarts), APGD-T (5 targets)                                     |
| plus     | APGD-CE, APGD-DLR (5 restarts each), FAB (5 restarts), Square, APGD-T, FAB-T      |
| rand     | APGD-CE, APGD-DLR, each with EOT over 20 draws of a randomised model, 1 restart    |

Every APGD and FAB runs 100 iterations. Differences from the reference, by decision: in L1
FAB-T and Square are left out (jaxadv has no L1 FAB or Square) and APGD does not run its
"large epsilon" warm-up schedule; `plus` is refused in L1 for the same reason. With
`version="rand"` the model is randomised, `apply_fn(x, key) -> logits`: the attacks see the
EOT average of 20 draws (`jaxadv.attacks.EOT`) and, as in the reference, a point counts as
robust when one fresh draw classifies it correctly.

The cascade runs on the host: the still-robust points of a stage are gathered into batches of
at most `batch_size`, the last one padded by repeating points (by at most 25%, to one of four
sizes per octave: `jaxadv.sharding.padded_rows`), so a stage compiles for a few shapes only;
each batch is split over the devices of a data mesh (all devices by default: with
`JAX_NUM_CPU_DEVICES` = the cores of a CPU host, one shard per core).
For journaled evaluation of a dataset, use the "autoattack" suite of `jaxadv.eval` instead; it
runs the same stages (`stages`). `autoattack_stages` is `autoattack` as a generator, one stage
per `next()` (benchmarks/attack_speed.py times the stages with it).
"""

from __future__ import annotations

import functools
from typing import Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv import sharding, validation
from jaxadv.attacks.apgd import apgd, apgd_targeted
from jaxadv.attacks.base import as_pytree, check_attack_inputs, check_finite_logits
from jaxadv.attacks.eot import EOT
from jaxadv.attacks.fab import fab, fab_targeted
from jaxadv.attacks.square import square

VERSIONS = ("standard", "plus", "rand")
EOT_SAMPLES = 20
_STEPS = 100
_QUERIES = 5000

Attack = Callable[..., jax.Array]


class AutoAttackResult(NamedTuple):
  """x_adv: the worst case per point, (N, ...), the clean point where no stage broke it;
  robust: bool (N,), correct clean and after every stage; stages: stage name -> bool (N,),
  robust after that stage (in order; "clean" first)."""
  x_adv: np.ndarray
  robust: np.ndarray
  stages: dict[str, np.ndarray]


def stages(version: str, *, eps, norm: str, num_classes: int) -> list[tuple[str, Attack]]:
  """The (name, attack) stages of `version` for a K-class model; each attack is
  `attack(apply_fn, x, y, key) -> x_adv` (a `functools.partial` of a jaxadv attack)."""
  validation.check_choice(version, "AutoAttack version", VERSIONS)
  if version == "plus" and norm == "l1":
    raise ValueError("AutoAttack 'plus' adds FAB and Square, which jaxadv has in L-inf and L2 "
                     "only; use version='standard' for L1.")
  targets = min(9, num_classes - 1)
  common = dict(eps=eps, norm=norm)
  apgd_ce = lambda restarts: functools.partial(apgd, loss="ce", steps=_STEPS, restarts=restarts,
                                               **common)
  apgd_dlr = lambda restarts: functools.partial(apgd, loss="dlr", steps=_STEPS,
                                                restarts=restarts, **common)
  apgd_t = lambda count: functools.partial(apgd_targeted, steps=_STEPS, num_targets=count,
                                           **common)
  fab_t = functools.partial(fab_targeted, steps=_STEPS, num_targets=targets, **common)
  square_5000 = functools.partial(square, queries=_QUERIES, **common)
  if version == "standard" and norm == "l1":
    return [("apgd-ce", apgd_ce(5)), ("apgd-t", apgd_t(min(5, num_classes - 1)))]
  if version == "standard":
    return [("apgd-ce", apgd_ce(1)), ("apgd-t", apgd_t(targets)), ("fab-t", fab_t),
            ("square", square_5000)]
  if version == "plus":
    return [("apgd-ce", apgd_ce(5)), ("apgd-dlr", apgd_dlr(5)),
            ("fab", functools.partial(fab, steps=_STEPS, restarts=5, **common)),
            ("square", square_5000), ("apgd-t", apgd_t(targets)), ("fab-t", fab_t)]
  return [("apgd-ce", apgd_ce(1)), ("apgd-dlr", apgd_dlr(1))]


def autoattack(apply_fn, x, y, key, *, eps, norm: str = "linf", version: str = "standard",
               batch_size: int | None = None, mesh=None,
               log: Callable[[str], None] | None = None) -> AutoAttackResult:
  """Runs AutoAttack's cascade (module docstring) on the points (x, y).

  Args:
    apply_fn: `x -> logits` (B, ...) -> (B, K), eval mode fixed (a closure, a
      `jaxadv.models.BoundModel`, an NNX module); for version "rand", a randomised
      `apply_fn(x, key) -> logits`.
    x: images (N, ...) in [0, 1]; y: integer labels (N,).
    key: PRNG key; stage i of batch j uses fold_in(fold_in(key, i), j).
    eps: radius >= 0 (a scalar); norm: "linf", "l2" or "l1".
    version: "standard", "plus" or "rand".
    batch_size: most points per attack call (default: all N at once), before the rounding up
      to a multiple of the mesh's devices.
    mesh: data mesh each batch is split over (default: `jaxadv.sharding.data_mesh()`, all
      devices); single-process only.
    log: receives one line per finished stage.

  Returns:
    AutoAttackResult with the worst-case x_adv (N, ...) in x's dtype, the robust flags (N,)
    and the flags after each stage.

  Example: on a linear model every point is broken at a large radius.
    >>> import jax, jax.numpy as jnp
    >>> from jaxadv.attacks import autoattack
    >>> w = jax.random.normal(jax.random.PRNGKey(0), (16, 4))
    >>> apply_fn = lambda v: v.reshape(v.shape[0], -1) @ w
    >>> x = jax.random.uniform(jax.random.PRNGKey(1), (6, 4, 4, 1))
    >>> y = jnp.argmax(apply_fn(x), axis=-1)
    >>> result = autoattack(apply_fn, x, y, jax.random.PRNGKey(2), eps=0.5)
    >>> list(result.stages), int(result.robust.sum())
    (['clean', 'apgd-ce', 'apgd-t', 'fab-t', 'square'], 0)
  """
  *_, (_, result) = autoattack_stages(  # runs every stage; the last yield is the result
      apply_fn, x, y, key, eps=eps, norm=norm, version=version, batch_size=batch_size,
      mesh=mesh, log=log)
  return result


def autoattack_stages(apply_fn, x, y, key, *, eps, norm: str = "linf",
                      version: str = "standard", batch_size: int | None = None, mesh=None,
                      log: Callable[[str], None] | None = None
                      ) -> Iterator[tuple[str, AutoAttackResult]]:
  """`autoattack` one stage at a time, for callers that time or inspect the stages.

  A generator with `autoattack`'s arguments: nothing runs until the first `next()`, which checks
  the inputs and classifies the clean points, then yields ("clean", result); each later `next()`
  runs one stage of the cascade on the points still robust and yields (stage name, result).
  Each result is an `AutoAttackResult` of the cascade so far: `robust` and `stages` are the
  flags after that stage (copies), while `x_adv` is one array that the later stages update in
  place (copy it to keep one stage's worst case). `autoattack` returns the last result, so
  running every stage here gives exactly its x_adv and flags.

  Example: the stages of the linear model of `autoattack`'s example, one by one.
    >>> import jax, jax.numpy as jnp
    >>> from jaxadv.attacks.autoattack import autoattack_stages
    >>> w = jax.random.normal(jax.random.PRNGKey(0), (16, 4))
    >>> apply_fn = lambda v: v.reshape(v.shape[0], -1) @ w
    >>> x = jax.random.uniform(jax.random.PRNGKey(1), (6, 4, 4, 1))
    >>> y = jnp.argmax(apply_fn(x), axis=-1)
    >>> cascade = autoattack_stages(apply_fn, x, y, jax.random.PRNGKey(2), eps=0.5)
    >>> name, result = next(cascade)
    >>> name, int(result.robust.sum())
    ('clean', 6)
    >>> [name for name, _ in cascade]
    ['apgd-ce', 'apgd-t', 'fab-t', 'square']
  """
  validation.check_choice(version, "AutoAttack version", VERSIONS)
  if version == "rand":
    draw = lambda v, k: apply_fn(v, k)
    predict_key, eot_key = jax.random.split(jax.random.fold_in(key, 10_000))
    attacked = EOT(as_pytree(apply_fn), eot_key, samples=EOT_SAMPLES)
  else:
    draw = lambda v, _: apply_fn(v)
    predict_key, attacked = key, apply_fn
  x, y = jnp.asarray(x), jnp.asarray(y)
  check_attack_inputs(x, y, eps=eps, norm=norm, norms=("linf", "l2", "l1"))
  if np.ndim(eps) != 0:
    raise ValueError(f"AutoAttack takes one radius for all points, got eps of shape "
                     f"{np.shape(eps)}.")
  check_finite_logits(attacked, x, labels=y)
  num_classes = jax.eval_shape(attacked, x[:1]).shape[-1]
  cascade = stages(version, eps=eps, norm=norm, num_classes=num_classes)
  if batch_size is None:
    batch_size = max(len(x), 1)
  validation.check_positive_int(batch_size, "batch_size")
  mesh = sharding.data_mesh() if mesh is None else mesh
  # The model's arrays (a BoundModel's variables, often committed to one device by a restore)
  # replicated over the mesh that the batches are split over.
  attacked = jax.device_put(as_pytree(attacked), sharding.replicated(mesh))
  predict = jax.jit(lambda v, k: jnp.argmax(draw(v, k), axis=-1))

  x_host, y_host = np.asarray(x), np.asarray(y)
  x_adv = x_host.copy()
  robust = np.asarray(predict(x, predict_key)) == y_host
  after = {"clean": robust.copy()}
  yield "clean", AutoAttackResult(x_adv, robust.copy(), dict(after))
  for index, (name, attack) in enumerate(cascade):
    stage_key = jax.random.fold_in(key, index)
    chosen = np.flatnonzero(robust)
    for batch, start in enumerate(range(0, chosen.size, batch_size)):
      rows = chosen[start:start + batch_size]
      padded = np.resize(rows, sharding.padded_rows(rows.size, batch_size, mesh.size))
      batch_key = jax.random.fold_in(stage_key, batch)
      x_batch, y_batch = sharding.put_batch((x_host[padded], y_host[padded]), mesh)
      found = attack(attacked, x_batch, y_batch, batch_key)
      fooled = np.asarray(predict(found, jax.random.fold_in(batch_key, 1))) != y_host[padded]
      fooled = fooled[:rows.size]
      x_adv[rows[fooled]] = np.asarray(found)[:rows.size][fooled]
      robust[rows[fooled]] = False
    after[name] = robust.copy()
    if log:
      log(f"autoattack / {name}: {int(robust.sum())} of {len(robust)} points robust "
          f"({chosen.size} attacked)")
    yield name, AutoAttackResult(x_adv, robust.copy(), dict(after))
