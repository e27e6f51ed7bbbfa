"""Weights between PyTorch and Flax (`jaxadv.models.torch_weights`) and `jaxadv import`, against
reference modules with RobustBench's key layouts (tests/torch_reference.py).

Random weights and BatchNorm statistics in eval mode; logits must agree to 1e-4 both ways.
ResNet-18 and PreActResNet-18 are tested at full size; the WRN layout at depth 16 / width 2
(under the name wrn28_10) and depth 10 / width 1 (wrn34_10; its first stage keeps the width,
so it has no shortcut conv), and at full size (WRN-28-10, WRN-34-10) for key names and shapes
only. Needs torch (the `test` extra); skipped without it.
"""

import json
import pathlib

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch_reference as ref  # pylint: disable=wrong-import-position

from jaxadv import cli, data, models, train  # pylint: disable=wrong-import-position
from jaxadv.models import torch_weights  # pylint: disable=wrong-import-position
from jaxadv.train import importing  # pylint: disable=wrong-import-position

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
TOLERANCE = 1e-4

# name -> (reference factory, jaxadv model kwargs)
CASES = {
    "resnet18": (ref.ResNet, {}),
    "preact_resnet18": (ref.PreActResNet, {}),
    "wrn28_10": (lambda **kw: ref.WideResNet(depth=16, widen_factor=2, **kw),
                 {"depth": 16, "widen_factor": 2}),
    "wrn34_10": (lambda **kw: ref.WideResNet(depth=10, widen_factor=1, **kw),
                 {"depth": 10, "widen_factor": 1}),
}
FULL_SIZE = {
    "resnet18": lambda: ref.ResNet(),
    "preact_resnet18": lambda: ref.PreActResNet(),
    "wrn28_10": lambda: ref.WideResNet(depth=28, widen_factor=10),
    "wrn34_10": lambda: ref.WideResNet(depth=34, widen_factor=10),
}

torch.set_num_threads(1)


def _images(n, shape=(32, 32, 3), seed=0):
  return np.random.default_rng(seed).uniform(size=(n, *shape)).astype(np.float32)


def _nchw(x):
  """NHWC numpy images as an NCHW tensor with standard strides: `copy`, not
  `np.ascontiguousarray`, which keeps the transposed strides of a 1-channel batch (flagged
  contiguous by numpy), on which torch 2.13's single-threaded conv backward crashed."""
  return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def _torch_logits(net, x):
  with torch.no_grad():
    return net(_nchw(x)).numpy()


def _flax_logits(model, variables, x):
  return np.asarray(jax.jit(lambda v, images: model.apply(v, images))(variables, x))


def _tensors(state_dict):
  return {key: torch.from_numpy(value) for key, value in state_dict.items()}


def _leaves(variables):
  return jax.tree_util.tree_leaves_with_path(jax.device_get(variables))


@pytest.fixture(scope="module")
def images():
  return _images(4)


@pytest.fixture(scope="module")
def reference(images):
  """name -> the randomised reference module with RobustBench's normalisation buffers."""
  nets = {}

  def get(name):
    if name not in nets:
      factory, _ = CASES[name]
      nets[name] = ref.randomise(factory(mean=MEAN, std=STD), _nchw(_images(16, seed=1)))
    return nets[name]
  return get


def _random_flax(name, seed=0):
  """(model, variables) of the jaxadv model with random weights and BN statistics: kernels
  LeCun-normal (variance 1 / fan-in, so that the logits stay O(1)), biases N(0, 0.1^2), BN
  scales and variances in [0.5, 1.5], BN means N(0, 0.1^2). Drawn with numpy on the shapes of
  `jax.eval_shape` (no Flax init to run)."""
  model = models.get(name, num_classes=10, mean=MEAN, std=STD, **CASES[name][1])
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3),
                                                                      np.float32))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    field = jax.tree_util.keystr(path[-1:])
    if "kernel" in field:
      value = rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
    elif "scale" in field or "var" in field:
      value = 0.5 + rng.uniform(size=leaf.shape)
    else:  # biases and BN means
      value = 0.1 * rng.normal(size=leaf.shape)
    return value.astype(np.float32)
  return model, jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.mark.parametrize("name", list(CASES))
def test_torch_weights_give_the_reference_logits(name, reference, images):
  net = reference(name)
  model, variables = torch_weights.from_torch(net.state_dict(), name, **CASES[name][1])
  expected, logits = _torch_logits(net, images), _flax_logits(model, variables, images)
  diff = float(np.max(np.abs(expected - logits)))
  print(f"{name} torch->flax: max |dlogit| {diff:.2e} (max |logit| {np.abs(expected).max():.2f})")
  assert np.abs(expected).max() > 0.1 and diff <= TOLERANCE
  assert np.allclose(model.mean, MEAN) and np.allclose(model.std, STD)  # from mu and sigma
  assert model.num_classes == 10


@pytest.mark.parametrize("name", list(CASES))
def test_flax_weights_load_strictly_into_the_reference_with_the_same_logits(name, images):
  model, variables = _random_flax(name)
  state_dict = torch_weights.to_torch(variables, name, mean=MEAN, std=STD, **CASES[name][1])
  net = CASES[name][0](mean=MEAN, std=STD)
  assert list(state_dict) == list(net.state_dict())  # every key, in the module's order
  net.load_state_dict(_tensors(state_dict), strict=True)
  net.eval()
  expected, logits = _flax_logits(model, variables, images), _torch_logits(net, images)
  diff = float(np.max(np.abs(expected - logits)))
  print(f"{name} flax->torch: max |dlogit| {diff:.2e} (max |logit| {np.abs(expected).max():.2f})")
  assert np.abs(expected).max() > 0.1 and diff <= TOLERANCE


@pytest.mark.parametrize("name", list(CASES))
def test_round_trips_are_exact(name, reference):
  kwargs = CASES[name][1]
  _, variables = _random_flax(name, seed=3)
  model, back = torch_weights.from_torch(
      torch_weights.to_torch(variables, name, mean=MEAN, std=STD, **kwargs), name, **kwargs)
  assert jax.tree.structure(back) == jax.tree.structure(variables)
  for (path, a), (_, b) in zip(_leaves(variables), _leaves(back)):
    assert np.array_equal(a, b), jax.tree_util.keystr(path)
  assert model.mean == pytest.approx(MEAN) and model.std == pytest.approx(STD)
  state_dict = reference(name).state_dict()
  again = torch_weights.to_torch(torch_weights.from_torch(state_dict, name, **kwargs)[1], name,
                                 mean=MEAN, std=STD, **kwargs)
  assert list(again) == list(state_dict)
  for key, value in state_dict.items():
    if not key.endswith("num_batches_tracked"):  # written as 0
      assert np.array_equal(again[key], value.numpy()), key


@pytest.mark.parametrize("name", list(FULL_SIZE))
def test_full_size_key_names_and_shapes_match_the_reference(name):
  with torch.device("meta"):  # shapes only, no memory
    expected = {key: tuple(v.shape) for key, v in FULL_SIZE[name]().state_dict().items()}
  model = models.get(name, num_classes=10)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3), np.float32))
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  state_dict = torch_weights.to_torch(zeros, name)
  assert list(state_dict) == list(expected)
  assert {key: tuple(v.shape) for key, v in state_dict.items()} == expected
  assert [t.key for t in torch_weights.layout(name)] == [
      key for key in expected if not key.endswith("num_batches_tracked")]


def test_robustbench_wrn_with_its_unused_sub_block1_imports():
  net = ref.WideResNet(depth=10, widen_factor=2, sub_block1=True, mean=MEAN, std=STD)
  keys = net.state_dict()
  assert any(key.startswith("sub_block1.") for key in keys)
  model, variables = torch_weights.from_torch(keys, "wrn34_10", depth=10, widen_factor=2)
  assert model.depth == 10 and "sub_block1" not in str(jax.tree.structure(variables))


def _problem(state_dict, name="resnet18", **kwargs):
  with pytest.raises(ValueError) as error:
    torch_weights.from_torch(state_dict, name, **kwargs)
  return str(error.value)


def test_missing_extra_and_misshaped_tensors_are_named(reference):
  state_dict = dict(reference("resnet18").state_dict())
  del state_dict["layer2.0.shortcut.1.running_var"]
  state_dict["layer5.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
  state_dict["layer1.1.conv2.weight"] = torch.zeros(64, 64, 1, 1)
  message = _problem(state_dict)
  assert "missing 1 tensor(s): layer2.0.shortcut.1.running_var" in message
  assert "unexpected 1 tensor(s): layer5.0.conv1.weight" in message
  assert "layer1.1.conv2.weight (64, 64, 1, 1), expected (64, 64, 3, 3)" in message
  head = dict(reference("resnet18").state_dict())
  message = _problem(head, num_classes=100)  # a head of another size
  assert "linear.weight (10, 512), expected (100, 512)" in message
  assert "linear.bias (10,), expected (100,)" in message


def test_unknown_architectures_list_the_known_ones():
  for name in ("vgg16", "small_cnn"):
    message = _problem({"conv1.weight": np.zeros((1, 3, 3, 3))}, name)
    assert all(known in message for known in torch_weights.ARCHITECTURES), message
    with pytest.raises(ValueError, match="wrn34_10"):
      torch_weights.to_torch({"params": {}}, name)


def test_checkpoint_wrappers_and_dataparallel_prefixes_are_accepted(reference):
  state_dict = reference("wrn34_10").state_dict()
  _, plain = torch_weights.from_torch(state_dict, "wrn34_10", depth=10, widen_factor=1)
  prefixed = {f"module.{key}": value for key, value in state_dict.items()}
  for checkpoint in ({"state_dict": prefixed, "epoch": 3}, {"model_state_dict": state_dict},
                     {key: value.numpy() for key, value in prefixed.items()}):
    _, variables = torch_weights.from_torch(checkpoint, "wrn34_10", depth=10, widen_factor=1)
    for (_, a), (_, b) in zip(_leaves(plain), _leaves(variables)):
      assert np.array_equal(a, b)


def test_normalisation_must_be_stated_when_the_state_dict_has_none(reference, images):
  net = reference("wrn34_10")
  bare = {k: v for k, v in net.state_dict().items() if k not in ("mu", "sigma")}
  assert "mean= and std=" in _problem(bare, "wrn34_10", depth=10, widen_factor=1)
  model, variables = torch_weights.from_torch(bare, "wrn34_10", depth=10, widen_factor=1,
                                              mean=MEAN, std=STD)
  assert np.max(np.abs(_flax_logits(model, variables, images)
                       - _torch_logits(net, images))) <= TOLERANCE
  assert "disagrees" in _problem(net.state_dict(), "wrn34_10", depth=10, widen_factor=1,
                                 mean=(0.5, 0.5, 0.5))


def test_preact_resnet_without_a_final_bn_is_refused_with_the_reason():
  net = ref.PreActResNet(bn_before_fc=False, preact_shortcut=False, mean=MEAN, std=STD)
  message = _problem(net.state_dict(), "preact_resnet18")
  assert "missing 4 tensor(s): bn.weight, bn.bias" in message and "bn_before_fc=False" in message


def test_to_torch_names_variables_that_do_not_fit():
  _, variables = _random_flax("resnet18")
  params = dict(variables["params"])
  del params["Dense_0"]
  with pytest.raises(ValueError, match="params/Dense_0/kernel"):
    torch_weights.to_torch({**variables, "params": params}, "resnet18", num_classes=10)
  with pytest.raises(ValueError, match="missing 83 tensor.*PreActBlock_0"):
    torch_weights.to_torch(variables, "preact_resnet18")


def test_aux_bn_models_import_the_main_bn_and_copy_it_to_the_auxiliary_one(reference, images):
  net = reference("resnet18")
  model, variables = torch_weights.from_torch(net.state_dict(), "resnet18", aux_bn=True)
  stem = variables["batch_stats"]["AuxBatchNorm_0"]
  assert np.array_equal(stem["main"]["var"], stem["aux"]["var"])
  assert np.max(np.abs(_flax_logits(model, variables, images)
                       - _torch_logits(net, images))) <= TOLERANCE
  exported = torch_weights.to_torch(variables, "resnet18", mean=MEAN, std=STD)
  assert list(exported) == list(net.state_dict())  # the main BNs only


def test_torch_files_missing_corrupt_or_pickling_objects_are_clear_errors(tmp_path, reference):
  with pytest.raises(FileNotFoundError, match="not found"):
    torch_weights.load_torch_file(tmp_path / "absent.pt")
  corrupt = tmp_path / "corrupt.pt"
  corrupt.write_bytes(b"not a checkpoint")
  with pytest.raises(ValueError, match="cannot read"):
    torch_weights.load_torch_file(corrupt)
  pickled = tmp_path / "object.pt"
  torch.save({"state_dict": reference("wrn34_10").state_dict(), "args": pathlib.Path("x")},
             pickled)
  with pytest.raises(ValueError, match="cannot read"):  # weights_only refuses the object
    torch_weights.load_torch_file(pickled)
  good = tmp_path / "good.pt"
  torch.save({"state_dict": reference("wrn34_10").state_dict(), "epoch": 1}, good)
  assert "fc.weight" in torch_weights.load_torch_file(good)


def test_import_keeps_the_checkpoint_normalisation_in_the_run_config(tmp_path, capsys):
  # A model that normalises nothing (mean 0, std 1, as RobustBench's plain WideResNets) on
  # digits, whose statistics differ: the run normalises as the checkpoint did.
  net = ref.randomise(ref.ResNet(stage_sizes=(2, 2, 2, 2), width=4, in_channels=1, mean=(0.0,),
                                 std=(1.0,)), _nchw(data.load("digits", "test").images[:16]))
  state_dict = {k: v for k, v in net.state_dict().items() if k not in ("mu", "sigma")}
  checkpoint, workdir = tmp_path / "plain.pt", tmp_path / "run"
  torch.save(state_dict, checkpoint)
  argv = ["import", "--torch-checkpoint", str(checkpoint), "--arch", "resnet18", "--dataset",
          "digits", "--workdir", str(workdir), "--mean", "0", "--std", "1"]
  assert cli.main(argv) == 0
  config, variables, _ = train.restore(workdir)
  assert config.model.mean == (0.0,) and config.model.std == (1.0,)
  assert json.loads((workdir / "import.json").read_text())["normalisation"] == "the checkpoint's"
  test = data.load("digits", "test").take(32)
  logits = _flax_logits(train.build_model(config, test), variables, test.images)
  assert np.max(np.abs(logits - _torch_logits(net, test.images))) <= TOLERANCE
  assert importing.parse_channels("0.5, 1/4") == (0.5, 0.25)
  with pytest.raises(ValueError, match="8/255"):
    importing.parse_channels("0.5,eight")


def _trained_digits_resnet(stage_sizes=(2, 2, 2, 2), steps=60):
  """A PyTorch ResNet of width 4 for 1-channel images, normalising with digits' mean and another
  std (0.5 for 0.4, which the run config keeps), trained briefly on digits, in eval mode."""
  train_set = data.load("digits", "train")
  torch.manual_seed(0)
  net = ref.ResNet(stage_sizes=stage_sizes, width=4, in_channels=1, mean=train_set.mean,
                   std=(0.5,))
  x, y = _nchw(train_set.images), torch.from_numpy(train_set.labels.astype(np.int64))
  optimiser = torch.optim.Adam(net.parameters(), lr=0.01)
  net.train()
  for step in range(steps):
    rows = torch.from_numpy(np.random.default_rng(step).choice(len(y), 64, replace=False))
    optimiser.zero_grad()
    torch.nn.functional.cross_entropy(net(x[rows]), y[rows]).backward()
    optimiser.step()
  return net.eval()


@pytest.mark.slow  # a CLI import and evaluation
def test_import_command_makes_a_run_that_eval_scores_like_torch(tmp_path, capsys):
  checkpoint, workdir = tmp_path / "digits_resnet.pt", tmp_path / "run"
  argv = ["import", "--torch-checkpoint", str(checkpoint), "--arch", "resnet18", "--dataset",
          "digits", "--workdir", str(workdir), "--eps", "8/255", "--norm", "Linf"]
  assert cli.main(argv) == 2 and "not found" in capsys.readouterr().err
  # The run's model is resnet18, stage sizes (2, 2, 2, 2): a (1, 1) network is refused, named.
  torch.save(_trained_digits_resnet((1, 1), steps=0).state_dict(), checkpoint)
  assert cli.main(argv) == 2
  assert "missing" in capsys.readouterr().err and not (workdir / "checkpoints").exists()

  net = _trained_digits_resnet()
  torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 9},
             checkpoint)
  assert cli.main(argv) == 0
  config = json.loads((workdir / "config.json").read_text())
  assert config["model"]["name"] == "resnet18" and config["model"]["width"] == 4
  assert config["eval"]["eps"] == pytest.approx(8 / 255) and config["eval"]["norm"] == "linf"
  assert config["model"]["std"] == [0.5]
  assert json.loads((workdir / "import.json").read_text())["normalisation"] == "the checkpoint's"
  assert cli.main(argv) == 2  # the workdir holds a checkpoint now

  test = data.load("digits", "test").take(64)
  expected = _torch_logits(net, test.images)
  torch_accuracy = 100.0 * float(np.mean(expected.argmax(1) == test.labels))
  run_config, variables, step = train.restore(workdir)
  logits = _flax_logits(train.build_model(run_config, test), variables, test.images)
  diff = float(np.max(np.abs(logits - expected)))
  print(f"jaxadv import (digits ResNet-18, width 4): max |dlogit| {diff:.2e}, "
        f"torch accuracy {torch_accuracy:.2f}%")
  assert step == 0 and diff <= TOLERANCE and torch_accuracy > 50
  assert cli.main(["eval", "--workdir", str(workdir), "--num-examples", str(len(test)),
                   "--suite", "fgsm", "--no-checks"]) == 0
  record = json.loads((workdir / "eval.json").read_text())
  assert record["n_ex"] == len(test) and record["clean_acc"] == pytest.approx(torch_accuracy)
