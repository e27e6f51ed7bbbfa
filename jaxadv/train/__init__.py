"""Training: a run's stages on one jitted, sharded step and one resumable loop, its run
directory, and what it reports.

| module | job |
|---|---|
| `state` | the TrainState pytree |
| `step` | objective + optimizer + mesh -> one jitted train step |
| `loop` | resumable steps over epochs: metrics, checkpoints, preemption |
| `stages` | a method's stages in order (`train`) |
| `workdir` | run directories: build, create, restore |
| `reports` | the evaluation and the methods' reports of a trained run |
| `checkpoint`, `metrics`, `schedules`, `sweep`, `plot` | orbax saves, metric logs, LR schedules, seed sweeps, curves |
"""

from jaxadv.train.loop import NonFiniteLoss, Preempted, run_steps
from jaxadv.train.reports import (evaluate_shifts_workdir, evaluate_state, evaluate_workdir,
                                  report, train_and_evaluate)
from jaxadv.train.stages import MODEL, train
from jaxadv.train.workdir import build_model, load_dataset, open_run, restore

__all__ = ["MODEL", "NonFiniteLoss", "Preempted", "build_model", "evaluate_shifts_workdir",
           "evaluate_state",
           "evaluate_workdir", "load_dataset", "open_run", "report", "restore", "run_steps",
           "train", "train_and_evaluate"]
