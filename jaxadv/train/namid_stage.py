"""NAMID's trained estimators as a run directory: their TrainState, and loading them.

`jaxadv train-mi` (`jaxadv.train.loop.train_estimators`) trains the natural and adversarial MI
estimators of `jaxadv.objectives.namid_estimators` on the frozen classifier of
`config.init_from` and checkpoints them like any run: `<workdir>/config.json` (its `mi` group
fixes the architecture and the DV variant) and `<workdir>/checkpoints`. A NAMID run names that
directory in `objective.namid_estimators`, and `load` gives it the estimators.
"""

from __future__ import annotations

import pathlib

import jax
import optax

from jaxadv import config as config_lib
from jaxadv import data
from jaxadv.estimators import MIEstimator
from jaxadv.objectives import NamidEstimators
from jaxadv.objectives.namid_estimators import init_params
from jaxadv.train import mesh as mesh_lib
from jaxadv.train import state as state_lib
from jaxadv.train.checkpoint import Checkpointer


def estimator_module(config) -> MIEstimator:
  """The `MIEstimator` of the config's `mi` group (width, conv_features, score_clip)."""
  return MIEstimator(width=config.mi.width, conv_features=tuple(config.mi.conv_features),
                     score_clip=config.mi.score_clip)


def optimizer(config) -> optax.GradientTransformation:
  """Adam with the constant step size `config.mi.lr`."""
  return optax.adam(config.mi.lr)


def create_state(config, dataset: data.ArrayDataset) -> state_lib.TrainState:
  """Step-0 TrainState of the estimator stage: params {"natural", "adversarial"} from
  `config.seed`, no batch statistics, Adam(`config.mi.lr`) state."""
  init_key, run_key = jax.random.split(jax.random.PRNGKey(config.seed))
  params = init_params(estimator_module(config), init_key, dataset.image_shape,
                       dataset.num_classes)
  return state_lib.from_variables(params, {}, optimizer(config), run_key)


def read_config(workdir):
  """The validated config of the estimator run in `workdir`; FileNotFoundError when absent."""
  config_path = pathlib.Path(workdir) / "config.json"
  if not config_path.is_file():
    raise FileNotFoundError(f"{workdir} holds no trained NAMID estimators: {config_path} is "
                            "missing; train them with `jaxadv train-mi --config ... --workdir "
                            f"{workdir}`.")
  return config_lib.from_json(config_path.read_text())


def load(workdir, mesh=None) -> NamidEstimators:
  """The estimators of the latest checkpoint of the estimator run in `workdir`, replicated over
  `mesh` when given.

  Raises FileNotFoundError when `workdir` holds no run or no checkpoint, and
  `CheckpointError` when its checkpoint is not that of an estimator stage (`jaxadv train-mi`).
  """
  config = read_config(workdir)
  dataset = data.load(config.dataset.name, "test", data_dir=config.dataset.data_dir or None,
                      download=config.dataset.download)
  target = jax.eval_shape(lambda: create_state(config, dataset))
  checkpointer = Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
  step = checkpointer.latest_step()
  if step is None:
    checkpointer.close()
    raise FileNotFoundError(f"no estimator checkpoint in {checkpointer.directory}; run `jaxadv "
                            "train-mi` on that directory first.")
  params = checkpointer.restore(target, step).params
  checkpointer.close()
  if mesh is not None:
    params = jax.device_put(params, mesh_lib.replicated(mesh))
  wrap = lambda p: {"params": p}
  return NamidEstimators(estimator_module(config), wrap(params["natural"]),
                         wrap(params["adversarial"]), config.mi.dv_variant)
