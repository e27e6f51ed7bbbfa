"""Model registry, output shapes, the three explicit model modes, parameter counts of the zoo
and the auxiliary BatchNorm route."""

import functools
import re

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import models


def test_registry_rejects_unknown_names():
  with pytest.raises(ValueError, match="unknown model 'resnet1000'.*small_cnn"):
    models.get("resnet1000", num_classes=10)
  with pytest.raises(ValueError, match="num_classes"):
    models.get("small_cnn", num_classes=1)


@pytest.mark.parametrize("name, shape", [("small_cnn", (28, 28, 1)), ("small_cnn", (8, 8, 1)),
                                         ("resnet18", (32, 32, 3))])
def test_logits_shape(name, shape):
  model = models.get(name, num_classes=7)
  variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), jnp.zeros((1, *shape)))
  logits = jax.jit(model.apply)(variables, jnp.zeros((2, *shape)))
  chex.assert_shape(logits, (2, 7))
  chex.assert_type(logits, jnp.float32)


def test_bound_model_is_a_pytree_that_reuses_compilation():
  model = models.get("small_cnn", num_classes=3)
  x = jnp.zeros((2, 8, 8, 1))
  traces = []

  @jax.jit
  def logits(apply_fn, x):
    traces.append(1)
    return apply_fn(x)

  init = jax.jit(model.init)
  for seed in range(3):
    variables = init(jax.random.key(seed, impl="rbg"), x)
    logits(models.BoundModel(model, variables), x)
  assert len(traces) == 1


def test_small_cnn_max_pool_matches_flax_max_pool_and_its_gradient():
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  from jaxadv.models.small_cnn import max_pool_2x2  # pylint: disable=import-outside-toplevel
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 9, 3))
  reference = lambda v: nn.max_pool(v, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(max_pool_2x2(x), reference(x))
  grad = lambda pool: jax.grad(lambda v: jnp.sum(jnp.sin(pool(v))))(x)
  np.testing.assert_array_equal(grad(max_pool_2x2), grad(reference))


# Small members of every model family, so that `init` and compilation take about a second.
SMALL = {
    "small_cnn": dict(width=4, hidden=8),
    "resnet18": dict(width=4, stage_sizes=(1, 1)),
    "preact_resnet18": dict(width=4, stage_sizes=(1, 1)),
    "wrn34_10": dict(depth=10, widen_factor=1),
    "vit_tiny": dict(dim=16, depth=2, heads=2, mlp_dim=32),
    "fcn": dict(width=4),
}
BN_MODELS = ("resnet18", "preact_resnet18", "wrn34_10", "fcn")
X = jax.random.uniform(jax.random.PRNGKey(0), (4, 8, 8, 3))


def _small_model(name, **kwargs):
  return models.get(name, num_classes=5, **SMALL[name], **kwargs)


@functools.lru_cache(maxsize=None)
def _small(name, aux_bn=False):
  """(model, variables) of the small member of `name`'s family, initialised once per session."""
  model = _small_model(name, **({"aux_bn": True} if aux_bn else {}))
  return model, jax.jit(model.init)(jax.random.key(1, impl="rbg"), X)


def _param_count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _shapes(name, **kwargs):
  """Variable shapes of the registered `name` (10 classes, 32x32x3 input), without computing."""
  model = models.get(name, num_classes=10, **kwargs)
  return jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))


def _vit_count(dim, depth, mlp, patch=4, channels=3, tokens=64, classes=10):
  """ViT parameters by hand: patch embedding, position embeddings, blocks (attention q, k, v, out
  with biases; MLP; two LayerNorms), final LayerNorm and head."""
  block = 4 * (dim * dim + dim) + 2 * dim * mlp + mlp + dim + 2 * 2 * dim
  return ((patch**2 * channels + 1) * dim + tokens * dim + depth * block + 2 * dim
          + (dim + 1) * classes)


@pytest.mark.parametrize("name, count, published, tolerance", [
    ("resnet18", 11_173_962, 11.17e6, 0.005e6),       # unchanged by the aux-BN option
    ("preact_resnet18", 11_172_170, 11.17e6, 0.005e6),
    ("wrn34_10", 46_160_474, 46.16e6, 0.005e6),
    ("wrn28_10", 36_479_194, 36.5e6, 0.05e6),         # Zagoruyko & Komodakis, Table 1
    ("vit_tiny", _vit_count(192, 12, 768), None, None),
    ("vit_small", _vit_count(384, 12, 1536), None, None),
])
def test_parameter_counts_of_the_full_size_models(name, count, published, tolerance):
  params = _shapes(name)["params"]
  assert _param_count(params) == count
  if published is not None:
    assert abs(count - published) <= tolerance


def test_every_registered_model_has_a_small_test_member():
  families = {"wrn28_10": "wrn34_10", "vit_small": "vit_tiny"}
  assert {families.get(name, name) for name in models.names()} == set(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_model_jits_in_every_mode_and_in_bfloat16(name):
  model, variables = _small(name)
  before = models.model_state(variables)
  logits, stats = {}, {}
  for mode in models.MODES:
    run = jax.jit(functools.partial(models.apply_model, model, mode=mode))
    logits[mode], stats[mode] = run(variables, X)
    chex.assert_shape(logits[mode], (4, 8, 8, 5) if models.is_dense(name) else (4, 5))
    chex.assert_type(logits[mode], jnp.float32)
  chex.assert_trees_all_equal(stats["eval"], before)
  chex.assert_trees_all_equal(stats["batch_stats"], before)
  moved = jax.tree.map(lambda new, old: bool(np.any(new != old)), stats["train"], before)
  assert all(jax.tree.leaves(moved))  # every running mean and variance of a BN model moves
  if name in BN_MODELS:  # batch statistics differ from the running ones
    assert not np.allclose(logits["eval"], logits["batch_stats"])
  bf16_model = _small_model(name, dtype=jnp.bfloat16)
  bf16_logits = jax.jit(functools.partial(models.apply_model, bf16_model, mode="eval"))(
      variables, X)[0]
  chex.assert_type(bf16_logits, jnp.float32)
  scale = np.abs(logits["eval"]).max()
  np.testing.assert_allclose(bf16_logits, logits["eval"], atol=0.05 * scale)


@pytest.mark.parametrize("name", BN_MODELS)
def test_aux_bn_adds_a_second_set_of_bn_variables_and_nothing_else(name):
  plain, aux = _shapes(name, **SMALL[name]), _shapes(name, aux_bn=True, **SMALL[name])
  plain_paths = flax.traverse_util.flatten_dict(plain, sep="/")
  aux_paths = flax.traverse_util.flatten_dict(aux, sep="/")
  assert not any("Aux" in path for path in plain_paths)
  for route, other in (("main", "aux"), ("aux", "main")):
    as_plain = {re.sub(rf"AuxBatchNorm_(\d+)/{route}/", r"BatchNorm_\1/", path): leaf
                for path, leaf in aux_paths.items() if f"/{other}/" not in path}
    chex.assert_trees_all_equal_shapes(as_plain, plain_paths)
  extra = _param_count(aux["params"]) - _param_count(plain["params"])
  assert extra == _param_count(plain["batch_stats"])  # one scale and bias per mean and var


@pytest.mark.parametrize("name", BN_MODELS)
def test_aux_route_uses_and_updates_only_the_aux_bn(name):
  model, variables = _small(name, aux_bn=True)
  flat = lambda tree, route: {path: leaf for path, leaf in
                              flax.traverse_util.flatten_dict(tree, sep="/").items()
                              if f"/{route}/" in path}
  before = models.model_state(variables)
  for route, other in (("aux", "main"), ("main", "aux")):
    _, stats = models.apply_model(model, variables, X, "train", bn=route)
    chex.assert_trees_all_equal(flat(stats, other), flat(before, other))
    moved = jax.tree.map(lambda new, old: bool(np.any(new != old)), flat(stats, route),
                         flat(before, route))
    assert all(moved.values())
    _, stats = models.apply_model(model, variables, X, "batch_stats", bn=route)
    chex.assert_trees_all_equal(stats, before)

  main_eval = models.apply_model(model, variables, X, "eval")[0]
  np.testing.assert_array_equal(models.BoundModel(model, variables, "eval", "aux")(X), main_eval)
  shifted = 0.5 * X + 0.5  # aux statistics learnt on other inputs than the main ones
  _, aux_stats = models.apply_model(model, variables, shifted, "train", bn="aux")
  diverged = {**variables, **aux_stats}
  np.testing.assert_array_equal(models.apply_model(model, diverged, X, "eval")[0], main_eval)
  assert not np.allclose(models.BoundModel(model, diverged, "eval", "aux")(X), main_eval)


def test_aux_route_gradient_reaches_only_the_aux_bn_parameters():
  model, variables = _small("preact_resnet18", aux_bn=True)
  loss = lambda p, bn: models.apply_model(model, {**variables, "params": p}, X, "train",
                                          bn=bn)[0].sum()
  for route, other in (("aux", "main"), ("main", "aux")):
    grads = flax.traverse_util.flatten_dict(jax.jit(jax.grad(loss), static_argnums=1)(
        variables["params"], route), sep="/")
    assert all(np.all(g == 0) for path, g in grads.items() if f"/{other}/" in path)
    assert all(np.any(g != 0) for path, g in grads.items() if f"/{route}/" in path)


def test_bound_model_bn_route_is_static():
  model, variables = _small("resnet18", aux_bn=True)
  bound = models.BoundModel(model, variables, "eval", "aux")
  assert len(jax.tree.leaves(bound)) == len(jax.tree.leaves(variables))
  assert jax.tree.structure(bound) != jax.tree.structure(models.BoundModel(model, variables))


def test_modes_and_bn_routes_are_validated():
  model, variables = _small("resnet18")
  with pytest.raises(ValueError, match="unknown model mode"):
    models.apply_model(model, variables, X, "inference")
  with pytest.raises(ValueError, match="unknown BatchNorm route bn='adv'"):
    models.apply_model(model, variables, X, "eval", bn="adv")
  with pytest.raises(ValueError, match="aux_bn=True"):
    models.apply_model(model, variables, X, "train", bn="aux")
  with pytest.raises(ValueError, match="aux_bn=True"):
    model.apply(variables, X, bn="aux")
  for name in ("small_cnn", "vit_tiny"):
    model, variables = _small(name)
    with pytest.raises(ValueError, match="aux_bn=True"):
      models.apply_model(model, variables, X, "eval", bn="aux")


def test_model_configurations_are_validated():
  with pytest.raises(ValueError, match="depth must be 6n \\+ 4"):
    models.get("wrn34_10", num_classes=10, depth=33)
  with pytest.raises(ValueError, match="widen_factor"):
    models.WideResNet(widen_factor=0)
  with pytest.raises(ValueError, match="dim a multiple of heads"):
    models.ViT(dim=10, heads=3)
  model, variables = _small("vit_tiny")
  with pytest.raises(ValueError, match="multiples of patch=4"):
    model.apply(variables, jnp.zeros((1, 10, 8, 3)))


def test_wide_resnet_convolutions_are_he_normal_fan_out():
  model = models.WideResNet(depth=10, widen_factor=4)
  params = jax.jit(model.init)(jax.random.key(0, impl="rbg"), X[:1])["params"]
  kernel = params["PreActBlock_0"]["Conv_1"]["kernel"]  # 3x3, 64 -> 64: std sqrt(2 / (9 * 64))
  np.testing.assert_allclose(np.std(kernel), np.sqrt(2 / (9 * 64)), rtol=0.05)


# --- feature-statistics uncertainty layers (jaxadv.models.uncertainty) ----------------------

UNCERTAINTY_MODELS = ("small_cnn", "resnet18", "preact_resnet18", "wrn34_10")


@functools.lru_cache(maxsize=None)
def _layered(name, points="all", **constants):
  """The small `name` with uncertainty layers at `points`, and the plain one's variables."""
  model, variables = _small(name)
  return model.clone(uncertainty=models.Uncertainty(points=points, **constants)), variables


@pytest.mark.parametrize("name", UNCERTAINTY_MODELS)
def test_uncertainty_layers_add_no_variables_and_are_the_identity_unless_asked(name):
  plain, variables = _small(name)
  layered, _ = _layered(name, p=1.0)
  chex.assert_trees_all_equal(jax.jit(layered.init)(jax.random.key(1, impl="rbg"), X),
                              variables)
  for mode in models.MODES:  # never active by accident, eval mode included
    got = models.apply_model(layered, variables, X, mode)
    chex.assert_trees_all_equal(got, models.apply_model(plain, variables, X, mode))
  np.testing.assert_array_equal(models.BoundModel(layered, variables)(X),
                                models.BoundModel(plain, variables)(X))
  key = {"uncertainty": jax.random.PRNGKey(0)}
  never, _ = models.apply_model(_layered(name, p=0.0)[0], variables, X, "train", rngs=key,
                                resample=True)
  np.testing.assert_array_equal(never, models.apply_model(plain, variables, X, "train")[0])
  resampled, state = models.apply_model(layered, variables, X, "train", rngs=key, resample=True)
  assert not np.allclose(resampled, never)
  assert set(state) == set(models.model_state(variables))


@pytest.mark.parametrize("name, points, expected", [
    ("small_cnn", "last", ["stage2"]),
    ("resnet18", "last", ["stage2"]),    # the small member has two stages
    ("preact_resnet18", "all", ["stage1", "stage2"]),
    ("wrn34_10", "stage1,stage3", ["stage1", "stage3"]),
])
def test_uncertainty_layers_sit_at_the_chosen_points_and_record_their_statistics(
    name, points, expected):
  layered, variables = _layered(name, points=points)
  _, state = models.apply_model(layered, variables, X, "eval",
                                collect=(models.uncertainty.STATS,))
  recorded = state[models.uncertainty.STATS]
  assert sorted(recorded) == [f"uncertainty_{point}" for point in expected]
  for statistics in recorded.values():
    assert statistics["mu"].shape[0] == 4 and statistics["sigma"].shape == statistics["mu"].shape


def test_uncertainty_layers_are_asked_for_explicitly_and_need_their_rng():
  layered, variables = _layered("resnet18")
  with pytest.raises(ValueError, match="rng_stream: .* without its rng stream 'uncertainty'"):
    models.apply_model(layered, variables, X, "train", resample=True)
  with pytest.raises(ValueError, match="resample=True needs a model built with uncertainty"):
    models.apply_model(_small("resnet18")[0], variables, X, "train",
                       rngs={"uncertainty": jax.random.PRNGKey(0)}, resample=True)
  guided, _ = _layered("resnet18", guided=True)
  with pytest.raises(ValueError, match="guided: clean-guided sampling needs the clean"):
    models.apply_model(guided, variables, X, "train", rngs={"uncertainty": jax.random.PRNGKey(0)},
                       resample=True)
  with pytest.raises(ValueError, match="points \\['stage4'\\] are not insertion points"):
    _layered("wrn34_10", points="stage4")[0].init(jax.random.PRNGKey(0), X)
  four = ("stage1", "stage2", "stage3", "stage4")
  assert {name: models.insertion_points(name) for name in models.names()} == {
      "small_cnn": four[:2], "resnet18": four, "preact_resnet18": four, "wrn34_10": four[:3],
      "wrn28_10": four[:3], "vit_tiny": (), "vit_small": (), "fcn": ()}
