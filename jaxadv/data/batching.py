"""Deterministic batch iteration: epoch permutations fixed by (seed, epoch), eval padding.

A training batch is a pure function of (seed, step), so a resumed run sees exactly the batches
an uninterrupted run would have seen. Multi-host: each process keeps rows
[process_index * B/P, (process_index + 1) * B/P) of every global batch of size B.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from jaxadv.data.dataset import ArrayDataset


def steps_per_epoch(dataset: ArrayDataset, batch_size: int) -> int:
  """Full batches per epoch (the remainder is dropped, reshuffled into later epochs)."""
  steps = len(dataset) // batch_size
  if steps < 1:
    raise ValueError(f"batch size {batch_size} exceeds the {len(dataset)} training examples.")
  return steps


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """The example order of `epoch`: a permutation that depends only on (seed, epoch)."""
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def train_batches(dataset: ArrayDataset, batch_size: int, seed: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
  """Yields this process's part of every global batch from `start_step` on, forever.

  Each item is {"image": float32 (B/P, H, W, C), "label": int32 (B/P,)}, or (B/P, H, W) labels
  for a dense dataset.
  """
  if batch_size % process_count:
    raise ValueError(f"batch size {batch_size} is not divisible by {process_count} processes.")
  per_epoch = steps_per_epoch(dataset, batch_size)
  local = batch_size // process_count
  step = start_step
  while True:
    epoch, index = divmod(step, per_epoch)
    order = epoch_permutation(len(dataset), seed, epoch)
    rows = order[index * batch_size:(index + 1) * batch_size]
    rows = rows[process_index * local:(process_index + 1) * local]
    yield {"image": dataset.images[rows], "label": dataset.labels[rows]}
    step += 1


def eval_batches(dataset: ArrayDataset, batch_size: int) -> Iterator[dict]:
  """Yields fixed-size batches covering the dataset once, in order.

  The last batch is padded by repeating example 0; {"mask": float32 (B,)} marks real rows, so
  every batch has the same shape (one compilation) and padded rows never count.
  """
  for start in range(0, len(dataset), batch_size):
    rows = np.arange(start, start + batch_size)
    mask = rows < len(dataset)
    rows = np.where(mask, rows, 0)
    yield {"image": dataset.images[rows], "label": dataset.labels[rows],
           "mask": mask.astype(np.float32)}
