"""PyTorch reference modules with the key layouts of RobustBench's CIFAR architectures, written
for the weight-conversion tests (tests/test_torch_weights.py); needs torch.

Parameter names, registration order and forward passes follow RobustBench's
`robustbench/model_zoo/architectures/resnet.py` (kuangliu's CIFAR ResNet: `ResNet`,
`BasicBlock`; `PreActResNet` with `PreActBlock` / `PreActBlockV2`, `bn_before_fc`) and
`wide_resnet.py` (the TRADES `WideResNet`, `NetworkBlock`, `BasicBlock` with `equalInOut` and
`convShortcut`, the unused `sub_block1`), and its wrappers' normalisation buffers `mu`, `sigma`.
The fixed `F.avg_pool2d(out, 4)` / `(out, 8)` there is written as a global average pool, the
same for 32x32 inputs, so that small test images work too.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class _Normalised(nn.Module):
  """Base of the references: optional RobustBench-style buffers mu, sigma (1, C, 1, 1),
  registered after the layers (so last in the state dict), applied as (x - mu) / sigma."""

  def _normalisation(self, mean, std):
    self.normalises = mean is not None
    if self.normalises:
      self.register_buffer("mu", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
      self.register_buffer("sigma", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

  def _normalise(self, x):
    return (x - self.mu) / self.sigma if self.normalises else x


class ResNetBlock(nn.Module):
  """kuangliu's BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""

  def __init__(self, c_in, c_out, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)
    self.bn1 = nn.BatchNorm2d(c_out)
    self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(c_out)
    self.shortcut = nn.Sequential()
    if stride != 1 or c_in != c_out:
      self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                    nn.BatchNorm2d(c_out))

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return F.relu(out + self.shortcut(x))


class ResNet(_Normalised):
  """CIFAR ResNet: conv1-bn1-relu, layer1..layerN of ResNetBlocks, pool, linear."""

  def __init__(self, stage_sizes=(2, 2, 2, 2), width=64, num_classes=10, in_channels=3,
               mean=None, std=None):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, width, 3, 1, padding=1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    c_in = width
    for stage, num_blocks in enumerate(stage_sizes):
      c_out = width * 2**stage
      blocks = []
      for i in range(num_blocks):
        blocks.append(ResNetBlock(c_in, c_out, 2 if stage > 0 and i == 0 else 1))
        c_in = c_out
      setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
    self.num_stages = len(stage_sizes)
    self.linear = nn.Linear(c_in, num_classes)
    self._normalisation(mean, std)

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(self._normalise(x))))
    for stage in range(self.num_stages):
      out = getattr(self, f"layer{stage + 1}")(out)
    return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


class PreActBlock(nn.Module):
  """Pre-activation block: out = conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut, the 1x1
  shortcut (when the shape changes) of relu(bn1(x)) (`preact_shortcut`, RobustBench's
  PreActBlockV2) or of x (its PreActBlock)."""

  def __init__(self, c_in, c_out, stride, preact_shortcut=True):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(c_in)
    self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(c_out)
    self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, padding=1, bias=False)
    self.preact_shortcut = preact_shortcut
    if stride != 1 or c_in != c_out:
      self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False))

  def forward(self, x):
    out = F.relu(self.bn1(x))
    if hasattr(self, "shortcut"):
      shortcut = self.shortcut(out if self.preact_shortcut else x)
    else:
      shortcut = x
    out = self.conv1(out)
    out = self.conv2(F.relu(self.bn2(out)))
    return out + shortcut


class PreActResNet(_Normalised):
  """conv1, layer1..layerN of PreActBlocks, optional final bn-relu (`bn_before_fc`), pool,
  linear."""

  def __init__(self, stage_sizes=(2, 2, 2, 2), width=64, num_classes=10, in_channels=3,
               bn_before_fc=True, preact_shortcut=True, mean=None, std=None):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, width, 3, 1, padding=1, bias=False)
    c_in = width
    for stage, num_blocks in enumerate(stage_sizes):
      c_out = width * 2**stage
      blocks = []
      for i in range(num_blocks):
        blocks.append(PreActBlock(c_in, c_out, 2 if stage > 0 and i == 0 else 1,
                                  preact_shortcut))
        c_in = c_out
      setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
    self.num_stages = len(stage_sizes)
    self.bn_before_fc = bn_before_fc
    if bn_before_fc:
      self.bn = nn.BatchNorm2d(c_in)
    self.linear = nn.Linear(c_in, num_classes)
    self._normalisation(mean, std)

  def forward(self, x):
    out = self.conv1(self._normalise(x))
    for stage in range(self.num_stages):
      out = getattr(self, f"layer{stage + 1}")(out)
    if self.bn_before_fc:
      out = F.relu(self.bn(out))
    return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


class WideBlock(nn.Module):
  """The TRADES WRN block: bn1-relu1, conv1, bn2-relu2, conv2; when in != out channels the
  pre-activated input also feeds the 1x1 `convShortcut`, else x is added unchanged."""

  def __init__(self, c_in, c_out, stride):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(c_in)
    self.relu1 = nn.ReLU()
    self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(c_out)
    self.relu2 = nn.ReLU()
    self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, padding=1, bias=False)
    self.equal_in_out = c_in == c_out
    self.convShortcut = (None if self.equal_in_out  # pylint: disable=invalid-name
                         else nn.Conv2d(c_in, c_out, 1, stride, padding=0, bias=False))

  def forward(self, x):
    a = self.relu1(self.bn1(x))
    out = self.conv2(self.relu2(self.bn2(self.conv1(a))))
    return (x if self.equal_in_out else self.convShortcut(a)) + out


class NetworkBlock(nn.Module):
  """`layer`: an nn.Sequential of WideBlocks, the first with the stride."""

  def __init__(self, num_blocks, c_in, c_out, stride):
    super().__init__()
    self.layer = nn.Sequential(*[WideBlock(c_in if i == 0 else c_out, c_out,
                                           stride if i == 0 else 1) for i in range(num_blocks)])

  def forward(self, x):
    return self.layer(x)


class WideResNet(_Normalised):
  """conv1, block1..block3 (widths 16k, 32k, 64k; strides 1, 2, 2), bn1-relu, pool, fc;
  `sub_block1` builds RobustBench's unused extra block."""

  def __init__(self, depth=34, widen_factor=10, num_classes=10, in_channels=3, sub_block1=False,
               mean=None, std=None):
    super().__init__()
    widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
    n = (depth - 4) // 6
    self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, padding=1, bias=False)
    self.block1 = NetworkBlock(n, widths[0], widths[1], 1)
    if sub_block1:
      self.sub_block1 = NetworkBlock(n, widths[0], widths[1], 1)
    self.block2 = NetworkBlock(n, widths[1], widths[2], 2)
    self.block3 = NetworkBlock(n, widths[2], widths[3], 2)
    self.bn1 = nn.BatchNorm2d(widths[3])
    self.relu = nn.ReLU()
    self.fc = nn.Linear(widths[3], num_classes)
    self._normalisation(mean, std)

  def forward(self, x):
    out = self.block3(self.block2(self.block1(self.conv1(self._normalise(x)))))
    out = self.relu(self.bn1(out))
    return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def randomise(net: nn.Module, images: torch.Tensor, seed: int = 0) -> nn.Module:
  """`net` with random weights and BatchNorm statistics, in eval mode: convolutions and linear
  layers He-normal, BN scale in [0.5, 1.5] and bias N(0, 0.1^2); the running statistics are
  those of `images` (one train-mode pass with cumulative averaging), then perturbed (mean +
  N(0, 0.1^2), var * U[0.5, 2]) so that they are not the batch's. Activations stay O(1)."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in net.modules():
      if isinstance(module, (nn.Conv2d, nn.Linear)):
        fan_in = module.weight[0].numel()
        module.weight.copy_(torch.randn(module.weight.shape, generator=generator)
                            * (2.0 / fan_in) ** 0.5)
        if module.bias is not None:
          module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
      elif isinstance(module, nn.BatchNorm2d):
        module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=generator))
        module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
        module.reset_running_stats()
        module.momentum = None  # cumulative average: the statistics of the one batch
    net.train()
    net(images)
    for module in net.modules():
      if isinstance(module, nn.BatchNorm2d):
        shape = module.running_mean.shape
        module.running_mean.add_(0.1 * torch.randn(shape, generator=generator))
        module.running_var.mul_(0.5 + 1.5 * torch.rand(shape, generator=generator))
        module.num_batches_tracked.fill_(7)
        module.momentum = 0.1
  return net.eval()
