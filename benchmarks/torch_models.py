"""PyTorch twins of jaxadv's models, loaded with Flax weights, for comparisons with PyTorch.

`from_flax(model, variables, image_shape)` builds the PyTorch module that computes the same
function as the Flax `model` with `variables` in eval mode: the same layers and widths, the
same in-model normalisation `(x - mean) / std`, BatchNorm on its running averages. Flax
images are NHWC, PyTorch's NCHW, so the weights are permuted on the way, by jaxadv's own
conversion (`jaxadv.models.torch_weights`):

    conv kernel   (kh, kw, c_in, c_out) -> (c_out, c_in, kh, kw)
    dense kernel  (in, out)             -> (out, in); SmallCNN's first dense layer also has
                  its input rows reordered from an (h, w, c) flatten to a (c, h, w) one.

The ResNet twin has the key layout of RobustBench's CIFAR ResNet (`conv1`, `bn1`,
`layer1.0.conv1`, ..., `linear`, normalisation buffers `mu`, `sigma`) and loads the state dict
of `jaxadv.models.to_torch`; SmallCNN, which has no PyTorch reference, is loaded layer by layer
with the same kernel conversions.

`check_twin` measures max |logits difference| on a batch; `short_pgd_at` gives the
comparisons (benchmarks/attack_speed.py, tests/test_reference_torchattacks.py) a briefly
PGD-trained model, built from jaxadv's own objective and train step.

Used by benchmarks/pgd_speed.py, benchmarks/pgd_profile.py, benchmarks/attack_speed.py and
tests/test_reference_torchattacks.py; needs torch (not a jaxadv dependency).
"""

from __future__ import annotations

import jax
import numpy as np
import optax
import torch
from torch import nn
from torch.nn import functional as F

from jaxadv import data, methods, models
from jaxadv import sharding
from jaxadv.models import torch_weights
from jaxadv.train import state as state_lib
from jaxadv.train.step import make_train_step


class Normalize(nn.Module):
  """(x - mean) / std per channel, x of shape (B, C, H, W)."""

  def __init__(self, mean, std):
    super().__init__()
    self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
    self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

  def forward(self, x):
    return (x - self.mean) / self.std


class SmallCNN(nn.Module):
  """conv(w)-conv(w)-pool-conv(2w)-conv(2w)-pool-fc(h)-fc(h)-fc(K), ReLU; mirrors `SmallCNN`.

  Input (B, C, H, W); the 2x2 pools floor odd sizes, as the Flax model's do.
  """

  def __init__(self, *, in_channels, height, width_px, width, hidden, num_classes, mean, std):
    super().__init__()
    self.normalize = Normalize(mean, std)
    chans = (in_channels, width, width, 2 * width, 2 * width)
    self.convs = nn.ModuleList(
        nn.Conv2d(c_in, c_out, 3, padding=1) for c_in, c_out in zip(chans[:-1], chans[1:]))
    self.pooled = (2 * width, height // 2 // 2, width_px // 2 // 2)  # (c, h, w) before flatten
    self.fc1 = nn.Linear(int(np.prod(self.pooled)), hidden)
    self.fc2 = nn.Linear(hidden, hidden)
    self.fc3 = nn.Linear(hidden, num_classes)

  def forward(self, x):
    x = self.normalize(x)
    for i, conv in enumerate(self.convs):
      x = F.relu(conv(x))
      if i % 2 == 1:
        x = F.max_pool2d(x, 2)
    x = x.flatten(1)
    x = F.relu(self.fc1(x))
    x = F.relu(self.fc2(x))
    return self.fc3(x)


class BasicBlock(nn.Module):
  """Two 3x3 conv-BN layers, identity or 1x1 conv-BN shortcut; mirrors `BasicBlock` (RobustBench
  key names: conv1, bn1, conv2, bn2, shortcut.0, shortcut.1)."""

  def __init__(self, c_in, c_out, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)
    self.bn1 = nn.BatchNorm2d(c_out, eps=1e-5)
    self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(c_out, eps=1e-5)
    self.shortcut = nn.Sequential()
    if stride != 1 or c_in != c_out:
      self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                    nn.BatchNorm2d(c_out, eps=1e-5))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(self.shortcut(x) + y)


class ResNet(nn.Module):
  """CIFAR ResNet (3x3 stem, no max-pool, stages layer1, layer2, ... of BasicBlocks, global
  average pool, `linear`); mirrors `ResNet`, normalising with buffers `mu`, `sigma`."""

  def __init__(self, *, in_channels, stage_sizes, width, num_classes, mean, std):
    super().__init__()
    self.register_buffer("mu", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
    self.register_buffer("sigma", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
    self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
    self.bn1 = nn.BatchNorm2d(width, eps=1e-5)
    self.stages, c_in = [], width
    for stage, num_blocks in enumerate(stage_sizes):
      c_out, blocks = width * 2**stage, []
      for block in range(num_blocks):
        blocks.append(BasicBlock(c_in, c_out, 2 if stage > 0 and block == 0 else 1))
        c_in = c_out
      self.add_module(f"layer{stage + 1}", nn.Sequential(*blocks))
      self.stages.append(f"layer{stage + 1}")
    self.linear = nn.Linear(c_in, num_classes)

  def forward(self, x):
    x = F.relu(self.bn1(self.conv1((x - self.mu) / self.sigma)))
    for stage in self.stages:
      x = getattr(self, stage)(x)
    return self.linear(x.mean(dim=(2, 3)))


def _t(a) -> torch.Tensor:
  return torch.from_numpy(np.array(a, dtype=np.float32))


def _load_conv(conv: nn.Conv2d, p) -> None:
  """Flax kernel (kh, kw, c_in, c_out) -> torch weight (c_out, c_in, kh, kw)."""
  conv.weight.data.copy_(_t(torch_weights.conv_kernel_to_torch(np.asarray(p["kernel"]))))
  if conv.bias is not None:
    conv.bias.data.copy_(_t(p["bias"]))


def _load_dense(fc: nn.Linear, p, chw=None) -> None:
  """Flax kernel (in, out) -> torch weight (out, in); `chw` reorders an NHWC flatten to NCHW."""
  kernel = np.asarray(p["kernel"])
  if chw is not None:
    c, h, w = chw
    kernel = kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(c * h * w, -1)
  fc.weight.data.copy_(_t(torch_weights.dense_kernel_to_torch(kernel)))
  fc.bias.data.copy_(_t(p["bias"]))


def _small_cnn(model: models.SmallCNN, variables, image_shape) -> SmallCNN:
  height, width_px, channels = image_shape
  net = SmallCNN(in_channels=channels, height=height, width_px=width_px, width=model.width,
                 hidden=model.hidden, num_classes=model.num_classes, mean=model.mean,
                 std=model.std)
  p = variables["params"]
  for i, conv in enumerate(net.convs):
    _load_conv(conv, p[f"Conv_{i}"])
  _load_dense(net.fc1, p["Dense_0"], chw=net.pooled)
  _load_dense(net.fc2, p["Dense_1"])
  _load_dense(net.fc3, p["Dense_2"])
  return net


def _resnet(model: models.ResNet, variables, image_shape) -> ResNet:
  """The twin loaded with `jaxadv.models.to_torch`'s state dict (strict: every key)."""
  net = ResNet(in_channels=image_shape[-1], stage_sizes=model.stage_sizes, width=model.width,
               num_classes=model.num_classes, mean=model.mean, std=model.std)
  state_dict = torch_weights.to_torch(
      {"params": variables["params"], "batch_stats": variables["batch_stats"]}, "resnet18",
      stage_sizes=tuple(model.stage_sizes), width=model.width, mean=tuple(model.mean),
      std=tuple(model.std))
  net.load_state_dict({key: torch.from_numpy(value) for key, value in state_dict.items()})
  return net


def from_flax(model, variables, image_shape, device: str = "cpu") -> nn.Module:
  """The PyTorch twin of a jaxadv SmallCNN or ResNet with `variables`, in eval mode.

  Args:
    model: a `jaxadv.models.SmallCNN` or `jaxadv.models.ResNet` (e.g. `models.get(...)`).
    variables: its Flax variables {"params", "batch_stats"}.
    image_shape: (H, W, C) of the Flax inputs; the twin takes (B, C, H, W).
    device: torch device of the returned module.

  Returns:
    A float32 `nn.Module` in eval mode whose parameters do not require gradients.
  """
  if isinstance(model, models.SmallCNN):
    net = _small_cnn(model, variables, image_shape)
  elif isinstance(model, models.ResNet):
    net = _resnet(model, variables, image_shape)
  else:
    raise ValueError(f"no PyTorch twin for {type(model).__name__}; SmallCNN and ResNet have one.")
  n_flax = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(variables["params"]))
  n_torch = sum(p.numel() for p in net.parameters())
  if n_flax != n_torch:
    raise ValueError(f"the twin of {type(model).__name__} has {n_torch} parameters, the Flax "
                     f"model {n_flax}.")
  net = net.to(device).eval()
  for p in net.parameters():
    p.requires_grad_(False)
  return net


def to_torch(images: np.ndarray, labels: np.ndarray, device: str = "cpu"):
  """NHWC float32 images (B, H, W, C) and labels (B,) -> NCHW float32 and int64 tensors."""
  x = torch.from_numpy(np.ascontiguousarray(np.asarray(images, np.float32).transpose(0, 3, 1, 2)))
  y = torch.from_numpy(np.asarray(labels, np.int64))
  return x.to(device), y.to(device)


def check_twin(apply_fn, net: nn.Module, images: np.ndarray, tol: float) -> float:
  """max |apply_fn(images) - net(images)| over a batch; ValueError when it exceeds `tol`."""
  x, _ = to_torch(images, np.zeros(len(images)), next(net.parameters()).device)
  with torch.no_grad():
    diff = float(np.max(np.abs(np.asarray(apply_fn(images)) - net(x).cpu().numpy())))
  if not diff <= tol:
    raise ValueError(f"the Flax model and its PyTorch twin disagree: max |logits diff| "
                     f"{diff:.2e} > {tol:.0e}.")
  return diff


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
  """Accuracy (%) of the PyTorch model on NCHW images x and labels y."""
  with torch.no_grad():
    correct = sum(int((net(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
                  for i in range(0, len(y), batch_size))
  return 100.0 * correct / len(y)


def short_pgd_at(model, train_ds: data.ArrayDataset, *, steps: int, batch_size: int, eps: float,
                 attack_steps: int, lr: float, seed: int = 0):
  """Variables of `model` after `steps` PGD-AT steps on `train_ds` (jaxadv's objective).

  L-inf PGD-`attack_steps` with step 2.5 eps / attack_steps in eval mode, eps warmed up
  linearly over the first half of training; SGD with momentum 0.9 and a cosine-decayed `lr`;
  batches from `jaxadv.data.train_batches(train_ds, batch_size, seed)` on the data mesh.
  """
  tx = optax.sgd(optax.cosine_decay_schedule(lr, steps), momentum=0.9)
  objective = methods.build(
      "pgd_at", model, {"eps": eps, "step_size": 2.5 * eps / attack_steps,
                        "steps": attack_steps, "norm": "linf"},
      attack_mode="eval", eps_warmup_steps=steps // 2)
  mesh = sharding.data_mesh()
  train_step = make_train_step(objective, tx, mesh)
  state = jax.device_put(state_lib.create(model, tx, train_ds.image_shape, seed),
                         sharding.replicated(mesh))
  sync_each_step = sharding.must_sync_each_step(mesh)  # fake CPU devices, as in the tests
  for _, batch in zip(range(steps), data.train_batches(train_ds, batch_size, seed)):
    state, metrics = train_step(state, sharding.put_batch(batch, mesh))
    if sync_each_step:
      jax.block_until_ready(metrics)
  return jax.device_get(state_lib.variables(state))
