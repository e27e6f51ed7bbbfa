"""`jaxadv import`: a PyTorch (RobustBench) checkpoint file as a jaxadv run directory.

`import_torch(path, arch=..., dataset=..., workdir=...)` reads the state dict
(`jaxadv.models.torch_weights.load_torch_file`), converts it (`jaxadv.models.from_torch`) and
writes what a trained run has: `config.json` (model, dataset, evaluation threat model) and a
checkpoint at step 0 of the model stage's TrainState, so that `jaxadv eval --workdir W` scores
it (and `jaxadv train --workdir W` would fine-tune it from there). `import.json` records the
source file, its SHA-256 and the normalisation.

Normalisation. The checkpoint's model normalises its inputs with its own (mu, sigma):
RobustBench's buffers `mu`, `sigma` when the state dict has them, else the `mean`, `std` the
caller states (zeros and ones: a model that normalises nothing). The run keeps them: when they
differ from the dataset's statistics they are written to the run config's `model.mean` /
`model.std`, which `workdir.build_model` uses instead of the dataset's, so the imported weights
are used exactly as converted, for any normalisation.
"""

from __future__ import annotations

import hashlib
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv import config as config_lib
from jaxadv import models
from jaxadv.attacks import geometry
from jaxadv.models import torch_weights
from jaxadv.train import state as state_lib
from jaxadv.train import workdir as workdir_lib
from jaxadv.train.checkpoint import Checkpointer
from jaxadv.train.step import make_optimizer

# RobustBench's CIFAR thresholds, the default eval eps of an import per norm.
DEFAULT_EPS = {"linf": 8 / 255, "l2": 0.5, "l1": 12.0}


def parse_channels(text) -> tuple[float, ...]:
  """Comma-separated per-channel numbers: "0.4914,0.4822,0.4465" -> a tuple of floats."""
  return tuple(config_lib.parse_number(part) for part in str(text).split(","))


def _config(arch: str, dataset: str, name: str, eps: float, norm: str, width: int, data_dir: str):
  """The run config of an import: base defaults, the model (normalising with the dataset's
  statistics until `import_torch` sets its own), dataset and eval threat model."""
  config = config_lib.base_config()
  config.name = name
  config.model.name = arch
  config.model.width = width
  config.dataset.name = dataset
  config.dataset.data_dir = data_dir
  config.eval.eps = eps  # shared with attack.eps
  config.eval.norm = norm  # shared with attack.norm
  config.eval.step_size = eps / 4
  config.attack.step_size = eps / 4
  return config_lib.validate(config)


def _state_like(state, target) -> bool:
  """Whether `state` has the tree structure, shapes and dtypes of the abstract `target`."""
  if jax.tree.structure(state) != jax.tree.structure(target):
    return False
  return all(tuple(a.shape) == tuple(b.shape) and jnp.dtype(a.dtype) == jnp.dtype(b.dtype)
             for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(target)))


def import_torch(checkpoint, *, arch: str, dataset: str, workdir, name: str = "",
                 eps: float | None = None, norm: str = "linf", mean=None, std=None,
                 data_dir: str = "") -> pathlib.Path:
  """Writes the run directory `workdir` holding the PyTorch checkpoint file `checkpoint`.

  Args:
    checkpoint: a `torch.save`d state dict of the reference module of `arch` (or a dict with
      it under "state_dict" / "model_state_dict"; `jaxadv.models.torch_weights`).
    arch: one of `torch_weights.ARCHITECTURES`.
    dataset: the jaxadv dataset the run evaluates on (`jaxadv.data.names()`).
    workdir: the new run directory; one that holds checkpoints already is refused.
    name: the run's config name (default: the file's stem).
    eps, norm: the evaluation threat model (default eps: `DEFAULT_EPS[norm]`); norm "linf",
      "l2" or "l1", any case.
    mean, std: the checkpoint model's input normalisation, needed when the state dict has no
      `mu`, `sigma` buffers (zeros and ones: none), checked against them otherwise.
    data_dir: `dataset.data_dir` of the run.

  Returns:
    The run directory. Raises FileNotFoundError (no file, no dataset files), RuntimeError (no
    torch) and ValueError (unreadable file, unknown arch or dataset, weights that do not fit,
    a normalisation of another number of channels).
  """
  if arch not in torch_weights.ARCHITECTURES:
    raise ValueError(f"unknown architecture {arch!r}; importable: "
                     f"{list(torch_weights.ARCHITECTURES)}.")
  norm = norm.lower()
  if norm not in geometry.NORMS:
    raise ValueError(f"unknown norm {norm!r}; choose one of {list(geometry.NORMS)}.")
  eps = DEFAULT_EPS[norm] if eps is None else float(eps)
  path = pathlib.Path(checkpoint)
  workdir = pathlib.Path(workdir)
  if (workdir / "checkpoints").is_dir() and any((workdir / "checkpoints").iterdir()):
    raise ValueError(f"{workdir} already holds checkpoints; import into a new workdir.")
  state_dict = torch_weights.load_torch_file(path)
  stem = state_dict.get("conv1.weight")
  width = 0
  if "width" in models.fields(arch) and stem is not None and stem.ndim == 4:
    default = models.get(arch, num_classes=2).width
    width = 0 if int(stem.shape[0]) == default else int(stem.shape[0])
  config = _config(arch, dataset, name or path.stem, eps, norm, width, data_dir)
  test_set = workdir_lib.load_dataset(config, "test")
  given = {field: tuple(value) for field, value in (("mean", mean), ("std", std))
           if value is not None}
  extra = {"width": config.model.width} if config.model.width else {}
  model, variables = torch_weights.from_torch(
      state_dict, arch, num_classes=test_set.num_classes, dtype=jnp.dtype(config.model.dtype),
      **extra, **given)
  channels = variables["params"]["Conv_0"]["kernel"].shape[2]
  if channels != test_set.image_shape[-1]:
    raise ValueError(f"the checkpoint's model takes {channels}-channel images; dataset "
                     f"{dataset!r} has {test_set.image_shape[-1]}.")
  if not (np.array_equal(model.mean, test_set.mean) and np.array_equal(model.std, test_set.std)):
    config.model.mean = tuple(float(v) for v in model.mean)
    config.model.std = tuple(float(v) for v in model.std)

  stage = workdir_lib.find_stage(config, "")
  ctx = workdir_lib.context(config, test_set, None, stage)
  target = jax.eval_shape(lambda: workdir_lib.initial_state(stage, ctx, 1)[0])
  if stage.optimizer is not None:
    tx, _ = stage.optimizer(ctx, 1)
  else:
    tx, _ = make_optimizer(config.optim, 1, ctx.steps_per_epoch)
  run_key = jax.random.split(jax.random.PRNGKey(config.seed))[1]
  state = state_lib.from_variables(variables["params"], models.model_state(variables), tx,
                                   run_key, ema=config.optim.ema_decay > 0)
  if not _state_like(state, target):
    raise RuntimeError(f"the imported {arch} does not have the variables of the run's model "
                       f"{config.model.name}: jaxadv.train.importing is out of date.")

  workdir_lib.prepare(config, workdir)
  checkpointer = Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
  try:
    checkpointer.save(0, state)
  finally:
    checkpointer.close()
  record = {
      "source": str(path.resolve()),
      "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
      "arch": arch, "reference": torch_weights.REFERENCES[arch], "dataset": dataset,
      "reference_mean": list(model.mean), "reference_std": list(model.std),
      "run_mean": list(test_set.mean), "run_std": list(test_set.std),
      "normalisation": "the dataset's" if not config.model.mean else "the checkpoint's",
  }
  (workdir / "import.json").write_text(json.dumps(record, indent=2) + "\n")
  return workdir
