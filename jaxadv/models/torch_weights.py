"""Weight conversion between PyTorch state dicts and Flax variables.

`from_torch(state_dict, name, **model_kwargs) -> (model, variables)` reads the state dict of a
RobustBench / PyTorch reference module into the jaxadv model registered as `name`;
`to_torch(variables, name, **model_kwargs) -> {key: numpy array}` writes the reverse, a state
dict that the reference module loads with `load_state_dict(..., strict=True)` after
`{k: torch.from_numpy(v) ...}`. numpy arrays, not tensors, so that the export needs no torch.

The reference modules, whose eval-mode function the jaxadv models compute:

* `resnet18`: RobustBench's `ResNet18()` = `ResNet(BasicBlock, [2, 2, 2, 2])` (kuangliu's CIFAR
  ResNet). Keys `conv1`, `bn1`, `layer1.0.conv1`, `.bn1`, `.conv2`, `.bn2`, `.shortcut.0`
  (1x1 conv), `.shortcut.1` (its BN), ..., `layer4.1....`, `linear`.
* `preact_resnet18`: `PreActResNet(PreActBlockV2, [2, 2, 2, 2], bn_before_fc=True)` (the
  fast-AT / AWP / Rice et al. form). Keys `conv1`, `layer1.0.bn1`, `.conv1`, `.bn2`, `.conv2`,
  `.shortcut.0`, ..., `bn`, `linear`.
* `wrn28_10`, `wrn34_10`: RobustBench's (TRADES') `WideResNet(depth, widen_factor)`. Keys
  `conv1`, `block1.layer.0.bn1`, `.conv1`, `.bn2`, `.conv2`, `.convShortcut`, ...,
  `block3.layer....`, `bn1`, `fc`; other depths and widths with `depth=`, `widen_factor=`.

Tensors map as

    conv weight (O, I, kh, kw)                 <->  kernel (kh, kw, I, O)      ["params"]
    linear weight (out, in), bias (out,)       <->  kernel (in, out), bias     ["params"]
    BN weight, bias                            <->  scale, bias                ["params"]
    BN running_mean, running_var               <->  mean, var                  ["batch_stats"]
    BN num_batches_tracked                     ---  ignored; written as 0 by to_torch

BatchNorm is PyTorch's default in both (eps 1e-5; momentum 0.1 there is 0.9 here), so eval-mode
logits agree to float rounding. The references pool with `F.avg_pool2d(out, 4)` (ResNets) or
`(out, 8)` (WRN): a global average for 32x32 inputs, which is what jaxadv computes at any size.

What jaxadv cannot represent is refused, never approximated:

* RobustBench's plain `PreActResNet18()` = `PreActResNet(PreActBlock, [2, 2, 2, 2])`
  (Wong2020Fast, Andriushchenko2020Understanding) has no final BN (`bn.*`; jaxadv's model
  always ends with BN-ReLU), and its `PreActBlock` feeds the *raw* input to the 1x1 shortcut,
  jaxadv's block the pre-activated one (as `PreActBlockV2`). A state dict without `bn.*` is
  refused with this explanation; one from `PreActBlock` with `bn_before_fc=True` has the same keys
  as the supported form and cannot be told apart: check the block of your checkpoint's model.
* A WRN head without bias (`bias_last=False`): `fc.bias` is reported missing; add zeros for it.
* Other RobustBench models (DMWideResNet, ResNeXt, ...) have other layouts.

Input normalisation: jaxadv models normalise inside (`(x - mean) / std`, fields of the module).
RobustBench's wrappers register it as buffers `mu` and `sigma` (1, C, 1, 1), which `from_torch`
reads into the model's mean and std; a state dict without them (a model that normalises
outside its weights, or not at all, like RobustBench's plain WideResNet entries) needs `mean=`
and `std=` (zeros and ones for none): `from_torch` refuses to guess. `to_torch` writes `mu` and
`sigma` when given `mean=` and `std=`.

Also accepted: a checkpoint dict holding the weights under "state_dict" or "model_state_dict",
keys prefixed "module." (DataParallel), tensors or numpy arrays; for the WRN, RobustBench's unused
`sub_block1.*` (built with `sub_block1=True`, never run in `forward`) is dropped. Any other
missing, extra or mis-shaped tensor is a ValueError naming it.

A model built with `aux_bn=True` (jaxadv's auxiliary BatchNorms) is not a PyTorch layout:
`from_torch(..., aux_bn=True)` fills the main BNs and gives each auxiliary BN a copy of its main
BN; `to_torch` exports the main BNs and drops the auxiliary ones.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxadv.models.preact_resnet import PreActResNet
from jaxadv.models.resnet import ResNet
from jaxadv.models.wide_resnet import WideResNet

ARCHITECTURES = ("preact_resnet18", "resnet18", "wrn28_10", "wrn34_10")
REFERENCES = {
    "preact_resnet18": "PreActResNet(PreActBlockV2, [2, 2, 2, 2], bn_before_fc=True)",
    "resnet18": "ResNet(BasicBlock, [2, 2, 2, 2]) (RobustBench's ResNet18)",
    "wrn28_10": "WideResNet(depth=28, widen_factor=10) (RobustBench / TRADES)",
    "wrn34_10": "WideResNet(depth=34, widen_factor=10) (RobustBench / TRADES)",
}
_HEAD = {"preact_resnet18": "linear", "resnet18": "linear", "wrn28_10": "fc", "wrn34_10": "fc"}
_STATE_DICT_ENTRIES = ("state_dict", "model_state_dict")
_NORMALISATION = ("mu", "sigma")
_LISTED = 8  # names shown per kind of problem in an error message


def conv_kernel_from_torch(weight: np.ndarray) -> np.ndarray:
  """PyTorch conv weight (O, I, kh, kw) -> Flax kernel (kh, kw, I, O)."""
  return np.transpose(weight, (2, 3, 1, 0))


def conv_kernel_to_torch(kernel: np.ndarray) -> np.ndarray:
  """Flax conv kernel (kh, kw, I, O) -> PyTorch weight (O, I, kh, kw)."""
  return np.transpose(kernel, (3, 2, 0, 1))


def dense_kernel_from_torch(weight: np.ndarray) -> np.ndarray:
  """PyTorch linear weight (out, in) -> Flax kernel (in, out)."""
  return np.transpose(weight)


def dense_kernel_to_torch(kernel: np.ndarray) -> np.ndarray:
  """Flax dense kernel (in, out) -> PyTorch weight (out, in)."""
  return np.transpose(kernel)


_FROM = {"conv": conv_kernel_from_torch, "dense": dense_kernel_from_torch, "copy": lambda a: a}
_TO = {"conv": conv_kernel_to_torch, "dense": dense_kernel_to_torch, "copy": lambda a: a}


class Tensor(NamedTuple):
  """One tensor of a layout: its state-dict key, its Flax path ("params" or "batch_stats"
  first) and how it converts ("conv", "dense" or "copy")."""
  key: str
  path: tuple[str, ...]
  kind: str


def _as_numpy(value) -> np.ndarray:
  """A torch tensor (any device, float types cast to float32) or array-like as numpy."""
  if hasattr(value, "detach"):  # a torch.Tensor, without importing torch
    value = value.detach().cpu()
    if value.is_floating_point():
      value = value.float()
    return value.numpy()
  return np.asarray(value)


def unwrap_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """The flat {key: numpy array} state dict in `checkpoint`: the checkpoint itself, or its
  "state_dict" / "model_state_dict" entry, with a "module." key prefix (DataParallel) removed.
  Floating tensors become float32 numpy arrays. ValueError when there is no such mapping."""
  if not isinstance(checkpoint, Mapping):
    raise ValueError(f"a state dict is a mapping of names to tensors, got "
                     f"{type(checkpoint).__name__}.")
  for entry in _STATE_DICT_ENTRIES:
    if isinstance(checkpoint.get(entry), Mapping):
      checkpoint = checkpoint[entry]
      break
  state_dict = {}
  for key, value in checkpoint.items():
    if not isinstance(key, str) or isinstance(value, Mapping):
      raise ValueError(f"entry {key!r} of the checkpoint is not a tensor; expected a state dict "
                       f"(or a checkpoint with one under {' or '.join(_STATE_DICT_ENTRIES)}).")
    name = key[len("module."):] if key.startswith("module.") else key
    if name in state_dict:
      raise ValueError(f"the state dict holds {name!r} both with and without 'module.'.")
    array = _as_numpy(value)
    state_dict[name] = array.astype(np.float32) if np.issubdtype(array.dtype, np.floating) \
        else array
  return state_dict


def load_torch_file(path) -> dict[str, np.ndarray]:
  """The state dict of the PyTorch checkpoint file `path` (`torch.load(path,
  map_location="cpu", weights_only=True)`, then `unwrap_state_dict`).

  Raises FileNotFoundError for a missing file, RuntimeError without torch, ValueError for a
  file torch cannot read as tensors (corrupt, or pickling Python objects that `weights_only`
  refuses: re-save its `state_dict()` with `torch.save`).
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"PyTorch checkpoint {path} not found.")
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise RuntimeError("reading a PyTorch checkpoint needs torch, which jaxadv does not depend "
                       "on: pip install torch") from None
  try:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as error:  # torch raises many types for unreadable files.
    message = " ".join(str(error).split())[:300]
    raise ValueError(f"cannot read {path} as a PyTorch checkpoint of tensors "
                     f"({type(error).__name__}: {message}).") from None
  return unwrap_state_dict(checkpoint)


def _build(name: str, model_kwargs: dict):
  """The jaxadv model `name` built with `model_kwargs`; ValueError for a name without layout."""
  if name not in ARCHITECTURES:
    raise ValueError(f"no PyTorch layout for model {name!r}; weights convert for "
                     f"{list(ARCHITECTURES)}.")
  from jaxadv import models  # pylint: disable=import-outside-toplevel  # (the package's registry)
  return models.get(name, **model_kwargs)


def _abstract_variables(model, channels: int) -> dict[tuple[str, ...], Any]:
  """{Flax path: ShapeDtypeStruct} of `model`'s variables for `channels` input channels."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 32, 32, channels), jnp.float32))
  return traverse_util.flatten_dict(shapes)


def _bn_path(parent: tuple[str, ...], index: int, aux_bn: bool) -> tuple[str, ...]:
  return (*parent, f"AuxBatchNorm_{index}", "main") if aux_bn else (*parent, f"BatchNorm_{index}")


def _layers(model, expected) -> list[tuple[str, tuple[str, ...], str]]:
  """(PyTorch module name, Flax module path, "conv" | "dense" | "bn") of every layer of
  `model`, in the reference module's registration order (its state-dict order)."""
  aux = bool(getattr(model, "aux_bn", False))

  def bn(parent, index):
    return _bn_path(parent, index, aux)

  def has_shortcut(block):
    return ("params", block, "Conv_2", "kernel") in expected

  layers = []
  if isinstance(model, ResNet):
    layers += [("conv1", ("Conv_0",), "conv"), ("bn1", bn((), 0), "bn")]
    block = 0
    for stage, num_blocks in enumerate(model.stage_sizes):
      for i in range(num_blocks):
        b, t = f"BasicBlock_{block}", f"layer{stage + 1}.{i}"
        layers += [(f"{t}.conv1", (b, "Conv_0"), "conv"), (f"{t}.bn1", bn((b,), 0), "bn"),
                   (f"{t}.conv2", (b, "Conv_1"), "conv"), (f"{t}.bn2", bn((b,), 1), "bn")]
        if has_shortcut(b):
          layers += [(f"{t}.shortcut.0", (b, "Conv_2"), "conv"),
                     (f"{t}.shortcut.1", bn((b,), 2), "bn")]
        block += 1
    return layers + [("linear", ("Dense_0",), "dense")]
  if isinstance(model, WideResNet):
    n = (model.depth - 4) // 6
    stages, names = (n, n, n), [f"block{stage + 1}.layer" for stage in range(3)]
    last_bn, head, shortcut = "bn1", "fc", "convShortcut"
  elif isinstance(model, PreActResNet):
    stages = model.stage_sizes
    names = [f"layer{stage + 1}" for stage in range(len(stages))]
    last_bn, head, shortcut = "bn", "linear", "shortcut.0"
  else:
    raise ValueError(f"no PyTorch layout for {type(model).__name__}.")
  layers.append(("conv1", ("Conv_0",), "conv"))
  block = 0
  for stage, num_blocks in enumerate(stages):
    for i in range(num_blocks):
      b, t = f"PreActBlock_{block}", f"{names[stage]}.{i}"
      layers += [(f"{t}.bn1", bn((b,), 0), "bn"), (f"{t}.conv1", (b, "Conv_0"), "conv"),
                 (f"{t}.bn2", bn((b,), 1), "bn"), (f"{t}.conv2", (b, "Conv_1"), "conv")]
      if has_shortcut(b):
        layers.append((f"{t}.{shortcut}", (b, "Conv_2"), "conv"))
      block += 1
  return layers + [(last_bn, bn((), 0), "bn"), (head, ("Dense_0",), "dense")]


def _tensors(layers) -> list[Tensor]:
  """The state-dict tensors of `layers` (without num_batches_tracked), in state-dict order."""
  tensors = []
  for module, path, kind in layers:
    if kind == "conv":
      tensors.append(Tensor(f"{module}.weight", ("params", *path, "kernel"), "conv"))
    elif kind == "dense":
      tensors += [Tensor(f"{module}.weight", ("params", *path, "kernel"), "dense"),
                  Tensor(f"{module}.bias", ("params", *path, "bias"), "copy")]
    else:
      tensors += [Tensor(f"{module}.weight", ("params", *path, "scale"), "copy"),
                  Tensor(f"{module}.bias", ("params", *path, "bias"), "copy"),
                  Tensor(f"{module}.running_mean", ("batch_stats", *path, "mean"), "copy"),
                  Tensor(f"{module}.running_var", ("batch_stats", *path, "var"), "copy")]
  return tensors


def _torch_shape(shape, kind: str) -> tuple[int, ...]:
  if kind == "conv":
    return tuple(shape[i] for i in (3, 2, 0, 1))
  return tuple(reversed(shape)) if kind == "dense" else tuple(shape)


def _listed(names) -> str:
  names = list(names)
  shown = ", ".join(names[:_LISTED])
  return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def _with(model_kwargs) -> str:
  """The structural keywords for an error message (" with depth=16, ..."), or nothing."""
  shown = {k: v for k, v in model_kwargs.items() if k not in ("mean", "std")}
  return " with " + ", ".join(f"{k}={v!r}" for k, v in shown.items()) if shown else ""


def _raise_problems(what: str, missing, extra, misshaped, hint: str = "") -> None:
  """ValueError naming the missing, extra and mis-shaped tensors, if there are any."""
  problems = []
  if missing:
    problems.append(f"missing {len(missing)} tensor(s): {_listed(missing)}")
  if extra:
    problems.append(f"unexpected {len(extra)} tensor(s): {_listed(extra)}")
  if misshaped:
    problems.append(f"{len(misshaped)} tensor(s) of the wrong shape: {_listed(misshaped)}")
  if problems:
    raise ValueError(f"{what}: {'; '.join(problems)}.{hint}")


def layout(name: str, **model_kwargs) -> list[Tensor]:
  """The state-dict tensors (`Tensor`: key, Flax path, conversion) of the reference module of
  the model registered as `name` built with `model_kwargs` (num_classes defaults to 10; a
  `channels` keyword, default 3, sets the input channels), num_batches_tracked left out.

  >>> [t.key for t in layout("wrn28_10", depth=10, widen_factor=1)][:3]
  ['conv1.weight', 'block1.layer.0.bn1.weight', 'block1.layer.0.bn1.bias']
  """
  channels = model_kwargs.pop("channels", 3)
  model = _build(name, {"num_classes": 10, **model_kwargs})
  return _tensors(_layers(model, _abstract_variables(model, channels)))


def _normalisation(state_dict, model_kwargs, channels: int) -> tuple[tuple, tuple]:
  """(mean, std) of the input normalisation: the state dict's mu and sigma, else mean= and
  std= of `model_kwargs`; both given must agree. ValueError when neither says."""
  given = [model_kwargs.get(field) for field in ("mean", "std")]
  stored = [state_dict.pop(field, None) for field in _NORMALISATION]
  if (stored[0] is None) != (stored[1] is None):
    raise ValueError("the state dict holds only one of the normalisation buffers mu and sigma.")
  if stored[0] is not None:
    stored = [tuple(float(v) for v in np.ravel(a)) for a in stored]
    for field, buffer, mine, theirs in zip(("mean", "std"), _NORMALISATION, given, stored):
      if mine is not None and (len(mine) != len(theirs)
                               or not np.allclose(mine, theirs, rtol=0, atol=1e-6)):
        raise ValueError(f"{field}={tuple(mine)} disagrees with the state dict's {buffer} "
                         f"{theirs}.")
    mean, std = stored
  elif given[0] is None or given[1] is None:
    raise ValueError(
        "the state dict holds no input normalisation (buffers mu and sigma): pass the mean= and "
        "std= its model normalises [0, 1] inputs with (mean=(0,)*C, std=(1,)*C when it "
        "normalises nothing, like RobustBench's plain WideResNet entries).")
  else:
    mean, std = (tuple(float(v) for v in g) for g in given)
  if len(mean) != channels or len(std) != channels:
    raise ValueError(f"mean and std need one value per input channel ({channels}), got "
                     f"{len(mean)} and {len(std)}.")
  if min(std) <= 0:
    raise ValueError(f"std must be positive, got {std}.")
  return mean, std


def from_torch(state_dict: Mapping[str, Any], name: str, **model_kwargs):
  """The jaxadv model `name` and its variables from the state dict of its PyTorch reference.

  Args:
    state_dict: {key: torch tensor or numpy array} of the reference module (listed in the
      module docstring), or a checkpoint dict with it under "state_dict" / "model_state_dict";
      keys may carry a "module." prefix. Buffers `mu`, `sigma` (RobustBench's normalisation)
      set the model's mean and std.
    name: one of `ARCHITECTURES`.
    **model_kwargs: for `jaxadv.models.get` (depth, widen_factor, width, aux_bn, dtype, ...);
      num_classes defaults to the head's output size. mean and std are required unless the
      state dict has mu and sigma.

  Returns:
    (model, variables): `models.get(name, num_classes=K, mean=..., std=..., **model_kwargs)` and
    {"params", "batch_stats"} (float32), whose eval-mode logits on (B, H, W, C) images in [0, 1]
    are the reference's on the same images as (B, C, H, W).

  Raises:
    ValueError: unknown `name`; missing, unexpected or mis-shaped tensors (all named); no or
      inconsistent normalisation.
  """
  if name not in ARCHITECTURES:
    _build(name, {})  # raises, naming the architectures
  state_dict = unwrap_state_dict(state_dict)
  head, stem = state_dict.get(f"{_HEAD[name]}.weight"), state_dict.get("conv1.weight")
  kwargs = dict(model_kwargs)
  if "num_classes" not in kwargs:
    kwargs["num_classes"] = int(head.shape[0]) if head is not None and head.ndim == 2 else 10
  channels = int(stem.shape[1]) if stem is not None and stem.ndim == 4 else 3
  kwargs["mean"], kwargs["std"] = _normalisation(state_dict, kwargs, channels)
  model = _build(name, kwargs)
  expected = _abstract_variables(model, channels)
  tensors = _tensors(_layers(model, expected))
  ignored = {t.key.rsplit(".", 1)[0] + ".num_batches_tracked" for t in tensors
             if t.key.endswith(".running_mean")}
  flat, missing, misshaped = {}, [], []
  for tensor in tensors:
    if tensor.key not in state_dict:
      missing.append(tensor.key)
      continue
    value = state_dict[tensor.key]
    want = _torch_shape(expected[tensor.path].shape, tensor.kind)
    if tuple(value.shape) != want:
      misshaped.append(f"{tensor.key} {tuple(value.shape)}, expected {want}")
      continue
    flat[tensor.path] = _FROM[tensor.kind](value)
  known = {t.key for t in tensors} | ignored
  extra = [key for key in state_dict if key not in known
           and not (isinstance(model, WideResNet) and key.startswith("sub_block1."))]
  hint = ""
  if name == "preact_resnet18" and all(f"bn.{p}" in missing for p in ("weight", "bias")):
    hint = (" Without a final BN (bn.*) this is RobustBench's PreActResNet(PreActBlock, ...) "
            "with bn_before_fc=False (e.g. Wong2020Fast), which jaxadv's PreActResNet18 (final "
            "BN-ReLU, shortcut on the pre-activated input) cannot represent.")
  _raise_problems(f"the state dict does not match {name} = {REFERENCES[name]}"
                  f"{_with(model_kwargs)}", missing, extra, misshaped, hint)
  for path in expected:  # the auxiliary BNs start as copies of the main ones
    if path not in flat and "aux" in path:
      main = tuple("main" if part == "aux" else part for part in path)
      if main in flat:
        flat[path] = flat[main]
  unfilled = [path for path in expected if path not in flat]
  if unfilled:
    raise ValueError(f"the jaxadv model {name} has variables without a PyTorch counterpart: "
                     f"{_listed('/'.join(p) for p in unfilled)}.")
  variables = {path: jnp.asarray(np.ascontiguousarray(flat[path]), expected[path].dtype)
               for path in expected}
  return model, traverse_util.unflatten_dict(variables)


def to_torch(variables: Mapping[str, Any], name: str, **model_kwargs) -> dict[str, np.ndarray]:
  """The state dict of the PyTorch reference of model `name` with the Flax `variables`.

  Args:
    variables: {"params", "batch_stats"} of the jaxadv model `name` (a model with `aux_bn`
      exports its main BNs).
    name: one of `ARCHITECTURES`.
    **model_kwargs: what the model was built with beyond its preset (depth, widen_factor, width,
      ...; num_classes and aux_bn are read from `variables`). mean and std, when given, are
      written as RobustBench's normalisation buffers `mu` and `sigma`, (1, C, 1, 1).

  Returns:
    {key: numpy array} in the reference module's state-dict order (`mu`, `sigma` first, as a
    wrapper's own buffers come): float32 weights (writable C-ordered copies), int64
    `num_batches_tracked` of 0. `net.load_state_dict({k: torch.from_numpy(v) for k, v in
    sd.items()})` loads it.

  Raises:
    ValueError: unknown `name`, or variables that are not those of the model (paths named).
  """
  if name not in ARCHITECTURES:
    _build(name, {})
  if not isinstance(variables, Mapping) or "params" not in variables:
    raise ValueError("variables must be a Flax variables dict with a 'params' collection.")
  flat = {path: np.asarray(jax.device_get(leaf))
          for path, leaf in traverse_util.flatten_dict(dict(variables)).items()}
  kwargs = dict(model_kwargs)
  head, stem = flat.get(("params", "Dense_0", "kernel")), flat.get(("params", "Conv_0", "kernel"))
  kwargs.setdefault("num_classes", int(head.shape[-1]) if head is not None else 10)
  kwargs.setdefault("aux_bn", any(part.startswith("AuxBatchNorm_") for p in flat for part in p))
  channels = int(stem.shape[2]) if stem is not None and stem.ndim == 4 else 3
  model = _build(name, kwargs)
  expected = _abstract_variables(model, channels)
  _raise_problems(
      f"the variables are not those of {name}{_with(model_kwargs)}",
      ["/".join(p) for p in expected if p not in flat],
      ["/".join(p) for p in flat if p not in expected],
      [f"{'/'.join(p)} {tuple(flat[p].shape)}, expected {tuple(expected[p].shape)}"
       for p in expected if p in flat and tuple(flat[p].shape) != tuple(expected[p].shape)])
  state_dict = {}  # a module's own buffers come before its children's tensors
  if kwargs.get("mean") is not None and kwargs.get("std") is not None:
    for key, value in zip(_NORMALISATION, (kwargs["mean"], kwargs["std"])):
      state_dict[key] = np.asarray(value, np.float32).reshape(1, -1, 1, 1)
  for tensor in _tensors(_layers(model, expected)):
    state_dict[tensor.key] = np.array(_TO[tensor.kind](flat[tensor.path]), np.float32, order="C")
    if tensor.key.endswith(".running_var"):
      state_dict[tensor.key[:-len("running_var")] + "num_batches_tracked"] = np.array(0, np.int64)
  return state_dict
