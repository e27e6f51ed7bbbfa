"""The out-of-distribution inputs the translator learns to map back: adversarial examples of
several attacks and budgets against the frozen classifier, and natural shifts.

jaxadv's reconstruction of the paper's training pairs (Amich & Eshete, arXiv 2202.08944;
`shared/spec/methods.md` §4, item 1), whose attacks and budgets are not published. A *source*
is a function `(classifier_apply, x, y, key) -> x_ood` of a batch x (B, H, W, C) in [0, 1]:

    pgd_linf@s   PGD, L-inf ball of radius s·ε (s in `budgets`), CE loss, random start
    pgd_l2@s     PGD, L2 ball of radius s·ε₂
    fgsm         one signed-gradient step of length ε (L-inf)
    cw           PGD on the CW margin loss, L-inf ε
    <shift>      a natural shift of `jaxadv.data.shifts` (darker, brighter, sharper, blur, noise)

with ε the run's training-attack eps and ε₂ the group's `l2_eps`; PGD takes `steps` steps of
2.5·radius/steps (Madry et al.'s step rule). `ood_batch` splits a batch into one contiguous
chunk per source (`np.array_split` sizes), so a step costs about one attack on the batch
whatever the number of sources; the data loader shuffles, so every example meets every source
over the epochs. Attacks run on the classifier in eval mode and carry no gradient.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv.attacks import fgsm, pgd
from jaxadv.data import shifts

ATTACKS = ("pgd_linf", "pgd_l2", "fgsm", "cw")
STEP_FACTOR = 2.5  # PGD step = 2.5 * radius / steps

Source = Callable[..., jax.Array]


def _pgd_source(classifier_apply, x, y, key, *, eps, steps: int, norm: str, loss: str):
  return pgd(classifier_apply, x, y, key, eps=eps, step_size=STEP_FACTOR * eps / steps,
             steps=steps, norm=norm, loss=loss)


def _fgsm_source(classifier_apply, x, y, key, *, eps):
  del key
  return fgsm(classifier_apply, x, y, eps=eps)


def _shift_source(classifier_apply, x, y, key, *, shift):
  del classifier_apply, y
  return shift(x, key)


def sources(*, attacks: Sequence[str], budgets: Sequence[float], shift_names: Sequence[str],
            eps: float, l2_eps: float, steps: int) -> dict[str, Source]:
  """Name -> source (module docstring), in the order attacks x budgets, then shifts.

  Raises ValueError for an unknown attack or shift, a budget <= 0, no source at all, or
  PGD sources with steps < 1.
  """
  unknown = set(attacks) - set(ATTACKS)
  if unknown:
    raise ValueError(f"unknown OOD attack(s) {sorted(unknown)}; choose from {list(ATTACKS)}.")
  if any(not s > 0 for s in budgets):
    raise ValueError(f"budgets must be > 0 (multiples of eps), got {tuple(budgets)}.")
  if {"pgd_linf", "pgd_l2", "cw"} & set(attacks) and steps < 1:
    raise ValueError(f"steps must be >= 1 for the PGD sources, got {steps}.")
  table: dict[str, Source] = {}
  for attack in attacks:
    if attack in ("pgd_linf", "pgd_l2"):
      norm, radius = ("linf", eps) if attack == "pgd_linf" else ("l2", l2_eps)
      for scale in budgets:
        table[f"{attack}@{scale:g}"] = functools.partial(
            _pgd_source, eps=scale * radius, steps=steps, norm=norm, loss="ce")
    elif attack == "fgsm":
      table["fgsm"] = functools.partial(_fgsm_source, eps=eps)
    else:
      table["cw"] = functools.partial(_pgd_source, eps=eps, steps=steps, norm="linf",
                                      loss="cw")
  for name in shift_names:
    table[name] = functools.partial(_shift_source, shift=shifts.get(name))
  if not table:
    raise ValueError("the translator needs at least one OOD source (attacks or shifts).")
  return table


def chunk_sizes(batch_size: int, num_sources: int) -> list[int]:
  """Rows of each source's chunk of a batch: `np.array_split` sizes (the first
  batch_size % num_sources chunks one row longer). Raises ValueError when a source would get
  no row."""
  if batch_size < num_sources:
    raise ValueError(f"a batch of {batch_size} cannot give a row to each of the {num_sources} "
                     "OOD sources: raise the batch size or drop sources.")
  return [len(part) for part in np.array_split(np.arange(batch_size), num_sources)]


def ood_batch(table: dict[str, Source], classifier_apply, x: jax.Array, y: jax.Array,
              key: jax.Array) -> jax.Array:
  """x_ood (B, H, W, C): chunk i of x (`chunk_sizes`) corrupted by the i-th source of `table`,
  each with its own key; no gradient flows back to x or the classifier."""
  sizes = chunk_sizes(x.shape[0], len(table))
  keys = jax.random.split(key, len(table))
  parts, start = [], 0
  for source, size, source_key in zip(table.values(), sizes, keys):
    parts.append(source(classifier_apply, x[start:start + size], y[start:start + size],
                        source_key))
    start += size
  return jax.lax.stop_gradient(jnp.concatenate(parts, axis=0))
