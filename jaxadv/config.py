"""Experiment configuration: the base `ml_collections` schema, loading, overrides, validation.

Every experiment config (`experiments/configs/<name>.py`, a `get_config()` function) starts
from `base_config()`, whose fields and types are the schema: a config file or command-line
override that adds an unknown field, or gives a field a value of another type, is rejected
with a message naming the field. The base config is also the embedded default job: PGD
adversarial training of a SmallCNN on scikit-learn's digits.

The `objective` group names the training method (`objective.name`) and holds one subgroup per
registered method (`jaxadv.methods`) with that method's defaults, `objective.<method>.<field>`;
the method validates its own group when a config selecting it loads. This module names no
method: it asks the registry.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import math
import pathlib
import re

import ml_collections

from jaxadv import data, methods, models
from jaxadv.attacks import geometry
from jaxadv.eval import suites
from jaxadv.models import MODES
from jaxadv.train.schedules import SCHEDULES

CHECKPOINTS = ("last", "best")  # which checkpoint a run's evaluation scores (eval.checkpoint)


def base_config() -> ml_collections.ConfigDict:
  """Defaults of every field: the embedded default job, adversarial training (the registry's
  default method, `jaxadv.methods.DEFAULT`; L-inf, eps 0.2) of SmallCNN on scikit-learn's digits."""
  c = ml_collections.ConfigDict()
  c.name = "digits_pgd_at"
  c.seed = 0
  c.dataset = ml_collections.ConfigDict(dict(
      name="digits", data_dir="", download=False,
      num_train=0,  # 0: the whole training split (after the validation hold-out).
      num_test=0,   # 0: the whole test split.
      # Training examples held out for validation (a fixed random subset, the same for every
      # run and seed; `jaxadv.train.workdir.load_dataset(config, "val")`); 0: none.
      num_val=0,
      augment="none",  # on-device training augmentation: "none", "crop" or "crop_flip".
  ))
  # aux_bn: every BatchNorm gets an auxiliary twin (models with BatchNorm only), which methods
  # route adversarial inputs through (`jaxadv.models.apply_model(..., bn="aux")`).
  # width: the model's base width (its first layer's channels), 0 for the model's default.
  # mean, std: the per-channel input normalisation (x - mean) / std inside the model, both set
  # or both () for the dataset's statistics (an imported checkpoint keeps its own: `jaxadv
  # import`, e.g. mean (0, 0, 0), std (1, 1, 1) for a model that normalises nothing).
  c.model = ml_collections.ConfigDict(dict(name="small_cnn", dtype="float32", aux_bn=False,
                                           width=0, mean=(), std=()))
  eps = ml_collections.FieldReference(0.2)
  norm = ml_collections.FieldReference("linf")
  # The training method, the model mode of its inner attack, and one group of constants per
  # registered method (`objective.<method>.<field>`; docs/methods.md).
  c.objective = ml_collections.ConfigDict(dict(
      name=methods.DEFAULT, attack_mode="batch_stats",
      **{name: methods.get(name).defaults() for name in methods.names()}))
  # The training attack (inner maximisation).
  c.attack = ml_collections.ConfigDict(dict(eps=eps, step_size=0.05, steps=7, norm=norm,
                                             warmup_epochs=0.0))
  c.optim = ml_collections.ConfigDict(dict(
      lr=0.05, momentum=0.9, nesterov=False, weight_decay=5e-4, schedule="cosine",
      warmup_epochs=0.0, milestones=(0.5, 0.75), decay_factor=0.1,
      ema_decay=0.0,  # 0: no weight averaging; else evaluate the EMA of params and BN stats.
      grad_clip_norm=0.0,  # 0: off; else the loss gradient's global L2 norm is clipped to it.
  ))
  c.batch_size = 64
  c.num_epochs = 20
  c.log_every_steps = 20
  c.checkpoint_every_steps = 200
  c.keep_checkpoints = 3
  # A run directory whose latest params and model state start training (a fine-tune) when
  # the workdir has no checkpoint of its own; "": start from the seed's init.
  c.init_from = ""
  # Evaluation: clean and the named attacks (jaxadv.eval.suites) at the training eps unless
  # overridden; step_size is that of the PGD-type attacks (pgdN, cwN).
  c.eval = ml_collections.ConfigDict(dict(
      batch_size=500, eps=eps, step_size=0.02, norm=norm, suite=("pgd20",), masking_checks=True,
      # Accuracy during training (clean and PGD-`monitor_steps` on the first
      # `monitor_examples` points of the validation split, or of the test split when
      # dataset.num_val is 0) every `monitor_every_epochs` epochs; 0 turns it off.
      monitor_every_epochs=0.0, monitor_examples=500, monitor_steps=10,
      # Which checkpoint the run's evaluation scores: "last", or "best", the one of highest
      # monitored PGD accuracy (kept in <workdir>/best; needs the monitor and, to select
      # honestly, dataset.num_val > 0).
      checkpoint="last",
  ))
  return c


def _check(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(f"invalid config: {message}")


def _check_schema(config, reference, prefix: str = "") -> None:
  """Rejects fields absent from the base config and values whose type differs."""
  for key, value in config.items():
    path = f"{prefix}{key}"
    _check(key in reference, f"unknown field {path!r}; known fields here: {sorted(reference.keys())}.")
    expected = reference[key]
    if isinstance(expected, ml_collections.ConfigDict):
      _check(isinstance(value, ml_collections.ConfigDict), f"{path} must be a group of fields.")
      _check_schema(value, expected, path + ".")
    elif isinstance(expected, bool):
      _check(isinstance(value, bool), f"{path} must be a bool, got {value!r}.")
    elif isinstance(expected, float):
      _check(isinstance(value, (int, float)) and not isinstance(value, bool),
             f"{path} must be a number, got {value!r}.")
    elif isinstance(expected, (int, str, tuple)):
      _check(isinstance(value, type(expected)) and not isinstance(value, bool),
             f"{path} must be a {type(expected).__name__}, got {value!r}.")


def _check_task(config) -> None:
  """Checks that the dataset, the model, the augmentation, the monitor and the evaluation
  suite agree on the task: per-image labels (classification) or per-pixel labels
  (segmentation, `data.DENSE_DATASETS`)."""
  name = config.dataset.name
  dense = name in data.DENSE_DATASETS
  if dense:
    _check(models.is_dense(config.model.name),
           f"model.name: dataset {name!r} has per-pixel labels, which model "
           f"{config.model.name!r} (one prediction per image) cannot fit; choose one of "
           f"{[m for m in models.names() if models.is_dense(m)]}.")
    _check(config.dataset.augment == "none",
           f"dataset.augment: dataset {name!r} has per-pixel labels, which "
           f"{config.dataset.augment!r} would leave unaligned with the moved images; use 'none'.")
    _check(config.eval.monitor_every_epochs == 0,
           f"eval.monitor_every_epochs: the training monitor scores per-image accuracy, and "
           f"dataset {name!r} has per-pixel labels; set it to 0 (the final evaluation reports "
           "pixel accuracy and mIoU).")
  else:
    _check(not models.is_dense(config.model.name),
           f"model.name: model {config.model.name!r} predicts per pixel; dataset {name!r} has "
           f"one label per image (per-pixel datasets: {list(data.DENSE_DATASETS)}).")
  try:
    suites.check_names(config.eval.suite, dense=dense)
  except ValueError as error:
    _check(False, f"eval.suite: {error}")


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks field names, types and values; returns the config or raises ValueError."""
  _check_schema(config, base_config())
  _check(config.dataset.name in data.names(),
         f"dataset.name {config.dataset.name!r} is unknown; choose one of {data.names()}.")
  _check(config.dataset.augment in data.augment.AUGMENTATIONS,
         f"dataset.augment {config.dataset.augment!r} is unknown; choose one of "
         f"{list(data.augment.AUGMENTATIONS)}.")
  _check(config.model.name in models.names(),
         f"model.name {config.model.name!r} is unknown; choose one of {models.names()}.")
  _check(config.model.dtype in ("float32", "bfloat16"), "model.dtype must be float32 or bfloat16.")
  _check(config.model.aux_bn is False or "aux_bn" in models.fields(config.model.name),
         f"model.aux_bn: model {config.model.name!r} has no BatchNorm to twin; choose one of "
         f"{[name for name in models.names() if 'aux_bn' in models.fields(name)]}.")
  _check(config.model.width >= 0, f"model.width must be >= 0, got {config.model.width}.")
  _check(config.model.width == 0 or "width" in models.fields(config.model.name),
         f"model.width: model {config.model.name!r} has no width to set.")
  mean, std = config.model.mean, config.model.std
  _check(len(mean) == len(std), f"model.mean {mean} and model.std {std} are set together, one "
         "number per image channel, or both left () for the dataset's statistics.")
  _check(all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
             for v in mean + std), f"model.mean {mean} and model.std {std} must be numbers.")
  _check(all(v > 0 for v in std), f"model.std must be > 0 per channel, got {std}.")
  _check(config.objective.name in methods.names(),
         f"objective.name {config.objective.name!r} is unknown; choose one of {methods.names()}.")
  _check(config.objective.attack_mode in MODES[:2],
         f"objective.attack_mode must be one of {list(MODES[:2])}.")
  name = config.objective.name
  try:
    methods.get(name).validate(config.objective[name], config)
  except ValueError as error:
    _check(False, f"objective.{name}.{error}")
  for group in ("attack", "eval"):
    attack = config[group]
    _check(attack.eps >= 0, f"{group}.eps must be >= 0, got {attack.eps}.")
    _check(attack.step_size >= 0, f"{group}.step_size must be >= 0, got {attack.step_size}.")
    _check(attack.norm in geometry.NORMS, f"{group}.norm must be one of {list(geometry.NORMS)}.")
  _check(config.attack.steps >= 1, f"attack.steps must be >= 1, got {config.attack.steps}.")
  _check(config.attack.warmup_epochs >= 0, "attack.warmup_epochs must be >= 0.")
  _check_task(config)
  _check(config.optim.lr > 0, f"optim.lr must be > 0, got {config.optim.lr}.")
  _check(config.optim.schedule in SCHEDULES,
         f"optim.schedule {config.optim.schedule!r} is unknown; choose one of {list(SCHEDULES)}.")
  _check(all(0 < m < 1 for m in config.optim.milestones),
         "optim.milestones are fractions of training in (0, 1).")
  for field in ("batch_size", "num_epochs", "log_every_steps", "checkpoint_every_steps",
                "keep_checkpoints"):
    _check(config[field] >= 1, f"{field} must be >= 1, got {config[field]}.")
  _check(config.eval.batch_size >= 1, "eval.batch_size must be >= 1.")
  _check(0.0 <= config.optim.ema_decay < 1.0,
         f"optim.ema_decay must lie in [0, 1), got {config.optim.ema_decay}.")
  _check(config.optim.grad_clip_norm >= 0,
         f"optim.grad_clip_norm must be >= 0 (0: no clipping), got {config.optim.grad_clip_norm}.")
  _check(config.eval.monitor_every_epochs >= 0, "eval.monitor_every_epochs must be >= 0.")
  _check(config.eval.monitor_examples >= 1 and config.eval.monitor_steps >= 1,
         "eval.monitor_examples and eval.monitor_steps must be >= 1.")
  _check(config.dataset.num_val >= 0, f"dataset.num_val must be >= 0, got {config.dataset.num_val}.")
  _check(config.eval.checkpoint in CHECKPOINTS,
         f"eval.checkpoint must be one of {list(CHECKPOINTS)}, got {config.eval.checkpoint!r}.")
  _check(config.eval.checkpoint != "best" or config.eval.monitor_every_epochs > 0,
         "eval.checkpoint='best' selects by the monitored accuracy: set "
         "eval.monitor_every_epochs > 0 (and dataset.num_val > 0 to select on held-out data).")
  return config


def _load_module(path: str):
  """The module of the config file `path` (executed); FileNotFoundError when it is missing."""
  file = pathlib.Path(path)
  if not file.is_file():
    raise FileNotFoundError(f"config file {path} not found.")
  spec = importlib.util.spec_from_file_location(f"jaxadv_config_{file.stem}", file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_file(path: str) -> ml_collections.ConfigDict:
  """Calls `get_config()` of the Python file at `path` (`path:variant` passes `variant` to it).

  A file that declares its variant words, a module-level `VARIANTS` tuple (every shipped config
  does), accepts only variants made of those words, comma-separated (`variant_words`): a
  misspelt variant (`mnist_pgd_at.py:smoke-typo`) is a ValueError instead of the full job. A
  file without `VARIANTS` gets its variant unchecked.
  """
  path, _, arg = str(path).partition(":")
  module = _load_module(path)
  if not hasattr(module, "get_config"):
    raise ValueError(f"config file {path} defines no get_config().")
  declared = getattr(module, "VARIANTS", None)
  if arg and declared is not None:
    try:
      variant_words(arg, declared)
    except ValueError as error:
      raise ValueError(f"config file {path}: {error}") from None
  return module.get_config(arg) if arg else module.get_config()


def variants(path) -> tuple[str, ...]:
  """The variant words the config file `path` declares (its `VARIANTS`; () when none), e.g.
  for a config that hands its variant on to the one it derives from."""
  return tuple(getattr(_load_module(str(path)), "VARIANTS", ()))


def variant_words(variant: str, allowed) -> set[str]:
  """The comma-separated words of a config variant ("code,smoke" -> {"code", "smoke"});
  ValueError naming the allowed words (and the nearest one) for any other word."""
  words = set(filter(None, variant.split(",")))
  unknown = sorted(words - set(allowed))
  if unknown:
    near = difflib.get_close_matches(unknown[0], sorted(allowed), n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    raise ValueError(f"unknown config variant word(s) {unknown}{hint}; the variant words are "
                     f"{sorted(allowed)}, comma-separated.")
  return words


# A fraction of two plain numbers, "8/255" or "0.5/2" (no names, no other operators).
_FRACTION = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*/\s*"
                       r"((?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*")


def parse_value(text: str):
  """A Python literal parsed from `text`, a float for a fraction of two numbers ("8/255" ->
  0.0313...), or `text` itself for a bare word. ValueError for a fraction over 0."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    pass
  fraction = _FRACTION.fullmatch(text)
  if fraction:
    numerator, denominator = (float(part) for part in fraction.groups())
    if denominator == 0:
      raise ValueError(f"invalid config: {text!r} divides by zero.")
    return numerator / denominator
  return text


def parse_number(text) -> float:
  """A number written as a decimal or a fraction ("0.5", "8/255" -> 0.0313...); ValueError
  for anything else (a word, a fraction over 0)."""
  value = parse_value(str(text).strip())
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise ValueError(f"expected a number (a decimal such as 0.03 or a fraction such as 8/255), "
                     f"got {text!r}.")
  return float(value)


def apply_overrides(config: ml_collections.ConfigDict, overrides) -> ml_collections.ConfigDict:
  """Applies "a.b=value" strings (Python literals, fractions "8/255" for numbers; bare words
  are strings) to `config`; ValueError naming the field for an unknown field or a value of
  another type."""
  for item in overrides:
    field, sep, text = item.partition("=")
    _check(bool(sep), f"override {item!r} is not of the form field=value.")
    *parents, leaf = field.split(".")
    node = config
    for part in parents:
      _check(part in node and isinstance(node[part], ml_collections.ConfigDict),
             f"unknown field {field!r}.")
      node = node[part]
    _check(leaf in node, f"unknown field {field!r}; known fields here: {sorted(node.keys())}.")
    value = parse_value(text)
    if isinstance(node[leaf], float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    _check(not isinstance(node[leaf], float) or isinstance(value, float),
           f"{field} must be a number (a decimal such as 0.03 or a fraction such as 8/255), "
           f"got {text!r}.")
    if isinstance(node[leaf], tuple) and isinstance(value, list):
      value = tuple(value)
    try:
      node[leaf] = value
    except TypeError as error:
      raise ValueError(f"invalid config: {field} cannot be set to {text!r}: {error}") from None
  return config


def to_json(config: ml_collections.ConfigDict) -> str:
  """The config as JSON (references resolved)."""
  return json.dumps(config.to_dict(), indent=2, sort_keys=True)


def _pop_path(tree: dict, path: str, missing):
  """Removes and returns the value at the dotted `path` of the nested dict `tree`."""
  *parents, leaf = path.split(".")
  for part in parents:
    tree = tree.get(part)
    if not isinstance(tree, dict):
      return missing
  return tree.pop(leaf, missing)


def migrate(tree: dict) -> dict:
  """Moves the fields of configs written before method groups existed (the methods' `legacy`
  maps, "objective.<method>_<field>" -> "objective.<method>.<field>") into the method groups;
  a field several methods took over (the shared "objective.beta") goes to each. Returns
  `tree`."""
  missing = object()
  moves: dict[str, list[tuple[str, str]]] = {}
  for name in methods.names():
    for old, new in methods.get(name).legacy.items():
      moves.setdefault(old, []).append((name, new))
  for old, targets in moves.items():
    value = _pop_path(tree, old, missing)
    if value is missing:
      continue
    for name, new in targets:
      node = tree.setdefault("objective", {}).setdefault(name, {})
      *parents, leaf = new.split(".")
      for part in parents:
        node = node.setdefault(part, {})
      node.setdefault(leaf, value)
  if isinstance(tree.get("mi"), dict) and not tree["mi"]:
    del tree["mi"]  # a legacy group whose fields all moved
  return tree


def from_json(text: str) -> ml_collections.ConfigDict:
  """Inverse of `to_json`, validated; lists become tuples as in the base config. Fields added
  to the schema after the file was written take their base-config defaults, and legacy fields
  move to their method groups (`migrate`), so older run directories still load."""
  def merged(value, default):
    if isinstance(value, dict):
      default = default if isinstance(default, dict) else {}
      return {**default, **{k: merged(v, default.get(k)) for k, v in value.items()}}
    return tuple(value) if isinstance(value, list) else value
  tree = migrate(json.loads(text))
  return validate(ml_collections.ConfigDict(merged(tree, base_config().to_dict())))
