"""The OOD->ID translator (pix2pix U-Net) and its PatchGAN discriminator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxadv.models import PatchDiscriminator, UNet
from jaxadv.models.translator import UNetBlock, unet_depth

from helpers import random_images

# An "rbg" key compiles the initialisation in seconds instead of tens of seconds (conftest.py).
KEY = jax.random.key(0, impl="rbg")


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _levels(params) -> int:
  """How many UNetBlocks are nested in a UNet's params."""
  return 1 + _levels(params["UNetBlock_0"]) if "UNetBlock_0" in params else 0


def _down_channels(params) -> list[int]:
  """Output channels of each level's down conv, outermost first."""
  block = params["UNetBlock_0"]
  channels = [block["Conv_0"]["kernel"].shape[-1]]
  return channels + (_down_channels(block) if "UNetBlock_0" in block else [])


@pytest.mark.parametrize("shape, depth", [((28, 28, 1), 5), ((32, 32, 3), 5), ((64, 64, 3), 6)])
def test_unet_keeps_the_shape_and_range_with_a_level_per_halving(shape, depth):
  x = random_images((2, *shape))
  unet = UNet(features=4)
  variables = jax.jit(unet.init)(KEY, x)
  y = jax.jit(unet.apply)(variables, x)
  assert y.shape == x.shape and y.dtype == jnp.float32
  assert bool(jnp.all((y >= 0) & (y <= 1)))
  assert unet_depth(*shape[:2]) == depth == _levels(variables["params"])
  assert _down_channels(variables["params"]) == [4, 8, 16, 32, 32, 32][:depth]


def test_unet_depth_rejects_images_below_two_pixels():
  with pytest.raises(ValueError, match="at least 2 x 2"):
    unet_depth(1, 8)


def test_parameter_counts_are_pix2pix_s():
  """pix2pix prints 29.238 M (unet_64), 54.408 M (unet_256) and 2.765 M (basic D) for
  1-channel images (junyanz/pytorch-CycleGAN-and-pix2pix issue #1152); BN scale and bias are
  parameters there too."""
  def params(module, *shapes):
    variables = jax.eval_shape(module.init, KEY,
                               *[jnp.zeros(s) for s in shapes])
    return _count(variables["params"])
  assert params(UNet(), (1, 64, 64, 1)) == 29_237_889
  assert params(UNet(), (1, 256, 256, 1)) == 54_407_809
  assert params(PatchDiscriminator(), (1, 256, 256, 1), (1, 256, 256, 1)) == 2_764_609


def test_initialisation_is_pix2pix_s():
  """Conv kernels N(0, 0.02²), biases 0, BatchNorm scale N(1, 0.02²) and bias 0."""
  variables = jax.jit(UNet(features=8).init)(KEY, random_images((1, 32, 32, 3)))
  leaves = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
  by_kind = {}
  for path, leaf in leaves:
    layer, name = path[-2].key.split("_")[0], path[-1].key
    by_kind.setdefault((layer, name), []).append(np.ravel(leaf))
  kernels = np.concatenate(by_kind[("Conv", "kernel")] + by_kind[("ConvTranspose", "kernel")])
  scales = np.concatenate(by_kind[("BatchNorm", "scale")])
  assert kernels.size > 100_000 and scales.size > 100
  assert abs(kernels.mean()) < 1e-3 and kernels.std() == pytest.approx(0.02, rel=0.02)
  assert scales.mean() == pytest.approx(1.0, abs=0.01)
  assert scales.std() == pytest.approx(0.02, rel=0.2)
  biases = np.concatenate(by_kind[("ConvTranspose", "bias")] + by_kind[("BatchNorm", "bias")])
  assert np.all(biases == 0)


def test_one_level_is_conv_relu_and_pytorch_s_transposed_conv():
  """A block that is both outermost and innermost: conv4x4 stride 2 pad 1, ReLU, then
    ConvTranspose2d(4, 2, 1), the adjoint of that conv, plus its bias."""
  x = random_images((2, 6, 6, 3))
  block = UNetBlock(0, 1, features=5, out_features=3, norm=None)
  params = block.init(KEY, x)["params"]
  conv = lambda v, kernel: lax.conv_general_dilated(v, kernel, (2, 2), ((1, 1), (1, 1)),
                                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))
  hidden = jax.nn.relu(conv(x, params["Conv_0"]["kernel"]))
  up_kernel = params["ConvTranspose_0"]["kernel"]  # HWIO of the conv it is the adjoint of
  _, adjoint = jax.vjp(lambda v: conv(v, up_kernel), jnp.zeros_like(x))
  expected = adjoint(hidden)[0] + params["ConvTranspose_0"]["bias"]
  np.testing.assert_allclose(block.apply({"params": params}, x), expected, atol=1e-5)


def test_eval_mode_translates_each_image_on_its_own():
  """Running averages in eval mode: an image's output does not depend on its batch."""
  x = random_images((3, 8, 8, 1))
  unet = UNet(features=2)
  initial = jax.jit(unet.init)(KEY, x)
  state = jax.jit(lambda v, images: unet.apply(v, images, train=True,
                                               mutable=["batch_stats"])[1])(initial, x)
  assert not any(jax.tree.leaves(jax.tree.map(jnp.array_equal, state["batch_stats"],
                                              initial["batch_stats"])))
  variables = {"params": initial["params"], **state}
  apply = jax.jit(unet.apply)
  np.testing.assert_allclose(apply(variables, x)[:1], apply(variables, x[:1]), atol=1e-6)


@pytest.mark.parametrize("size, patches", [(28, 1), (32, 2)])
def test_patch_discriminator_gives_a_logit_per_patch(size, patches):
  x, y = random_images((2, size, size, 3)), random_images((2, size, size, 3), seed=1)
  disc = PatchDiscriminator(features=4)
  variables = jax.jit(disc.init)(KEY, x, y)
  assert jax.jit(disc.apply)(variables, x, y).shape == (2, patches, patches, 1)
  assert variables["params"]["Conv_0"]["kernel"].shape == (4, 4, 6, 4)


def test_patch_discriminator_rejects_small_or_mismatched_images():
  disc = PatchDiscriminator(features=2)
  with pytest.raises(ValueError, match="at least 24 x 24"):
    disc.init(KEY, jnp.zeros((1, 16, 16, 1)), jnp.zeros((1, 16, 16, 1)))
  with pytest.raises(ValueError, match="same shape"):
    disc.init(KEY, jnp.zeros((1, 28, 28, 1)), jnp.zeros((1, 28, 28, 3)))
  with pytest.raises(ValueError, match="features"):
    PatchDiscriminator(features=0)
  with pytest.raises(ValueError, match=r"images \(B, H, W, C\)"):
    UNet(features=2).init(KEY, jnp.zeros((28, 28, 1)))
