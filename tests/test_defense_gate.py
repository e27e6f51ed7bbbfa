"""The OOD->ID defense's gate (penultimate features, Mahalanobis and reconstruction scores,
threshold, per-example routing) and its composition with translator and classifier."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxadv import attacks, defenses, models, sharding

from helpers import TinyAuxNet, random_images

KEY = jax.random.key(0, impl="rbg")  # compiles initialisations in seconds (conftest.py)


def _head_logits(variables, head: str, z):
  params = variables["params"][head]
  return z @ params["kernel"] + params["bias"]


@pytest.mark.parametrize("name, options, head", [
    ("small_cnn", dict(width=4, hidden=8), "Dense_2"),
    ("preact_resnet18", dict(width=4), "Dense_0"),
])
def test_features_are_the_input_of_the_head(name, options, head):
  model = models.get(name, num_classes=3, **options)
  x = random_images((4, 8, 8, 3))
  variables = jax.jit(model.init)(KEY, x)
  z, z_bound, logits = jax.jit(lambda v: (
      models.features(model, variables, v), models.BoundFeatures(model, variables, "eval")(v),
      models.BoundModel(model, variables, "eval")(v)))(x)
  assert z.shape == (4, 8 if name == "small_cnn" else 32) and z.dtype == jnp.float32
  np.testing.assert_allclose(_head_logits(variables, head, z), logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(z, z_bound)


def test_features_need_a_dense_head():
  model = TinyAuxNet(aux_bn=False)  # convolutions and a spatial mean, no nn.Dense
  x = random_images((1, 4, 4, 1))
  with pytest.raises(ValueError, match="calls no nn.Dense"):
    models.features(model, model.init(KEY, x), x)


Clusters = collections.namedtuple("Clusters", "features labels means")


@pytest.fixture(scope="module")
def clusters() -> Clusters:
  """3 Gaussian clusters of 40 points in 4-D with a shared, correlated covariance."""
  rng = np.random.default_rng(0)
  means = rng.normal(0.0, 5.0, (3, 4))
  mixing = rng.normal(0.0, 1.0, (4, 4))
  labels = np.repeat(np.arange(3), 40)
  features = means[labels] + rng.normal(0.0, 1.0, (120, 4)) @ mixing
  return Clusters(features.astype(np.float32), labels, means)


def _numpy_mahalanobis(features, labels, queries, ridge=0.0):
  """SSD's computation in float64: class means, tied covariance, pinv, nearest class."""
  features = features.astype(np.float64)
  means = np.stack([features[labels == k].mean(0) for k in range(labels.max() + 1)])
  centred = features - means[labels]
  covariance = centred.T @ centred / len(features)
  precision = np.linalg.pinv(covariance + ridge * np.trace(covariance) / 4 * np.eye(4))
  diff = queries[:, None, :] - means[None]
  return means, precision, np.einsum("bkd,de,bke->bk", diff, precision, diff).min(axis=1)


@pytest.mark.parametrize("ridge", [0.0, 0.1])
def test_mahalanobis_score_is_ssd_s(clusters, ridge):
  queries = np.random.default_rng(1).normal(0.0, 6.0, (16, 4)).astype(np.float32)
  stats = defenses.fit_mahalanobis(jnp.asarray(clusters.features), jnp.asarray(clusters.labels),
                                   num_classes=3, ridge=ridge)
  means, precision, scores = _numpy_mahalanobis(clusters.features, clusters.labels, queries,
                                                ridge)
  np.testing.assert_allclose(stats.means, means, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(stats.precision, precision, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(defenses.mahalanobis_score(stats, jnp.asarray(queries)), scores,
                             rtol=1e-4)


def test_mahalanobis_score_is_lowest_near_the_class_means(clusters):
  stats = defenses.fit_mahalanobis(jnp.asarray(clusters.features), jnp.asarray(clusters.labels),
                                   num_classes=3)
  near = stats.means + 0.01
  far = clusters.means + np.random.default_rng(2).normal(0.0, 3.0, (3, 4))
  near_scores = defenses.mahalanobis_score(stats, jnp.asarray(near, jnp.float32))
  train_scores = defenses.mahalanobis_score(stats, jnp.asarray(clusters.features))
  far_scores = defenses.mahalanobis_score(stats, jnp.asarray(far, jnp.float32))
  assert float(near_scores.max()) < 0.05 < float(train_scores.min())
  assert float(far_scores.min()) > float(np.median(train_scores))


@pytest.mark.parametrize("call, match", [
    (lambda z, y: defenses.fit_mahalanobis(z, y[:-1], 3),
     r"labels must be integers of shape \(120,\)"),
    (lambda z, y: defenses.fit_mahalanobis(z, y.astype(jnp.float32), 3), "labels must be integers"),
    (lambda z, y: defenses.fit_mahalanobis(z[:, 0], y, 3), r"features must be a floating \(N, D\)"),
    (lambda z, y: defenses.fit_mahalanobis(z, y, 4), r"classes \[3\] .* have no example"),
    (lambda z, y: defenses.fit_mahalanobis(z, y, 2), r"labels must lie in \[0, 2\)"),
    (lambda z, y: defenses.fit_mahalanobis(z, y - 1, 3), r"labels must lie in \[0, 3\)"),
    (lambda z, y: defenses.fit_mahalanobis(z, y, 0), "num_classes must be an integer >= 1"),
    (lambda z, y: defenses.fit_mahalanobis(z, y, 3, ridge=-1.0), "ridge must be >= 0"),
    (lambda z, y: defenses.mahalanobis_score(defenses.fit_mahalanobis(z, y, 3), z[:, :3]),
     "dimension D=3 but .* fitted on D=4"),
])
def test_gate_fits_reject_bad_inputs(clusters, call, match):
  with pytest.raises(ValueError, match=match):
    call(jnp.asarray(clusters.features), jnp.asarray(clusters.labels))


def test_threshold_is_the_quantile_and_routes_one_minus_q():
  scores = jnp.asarray(np.random.default_rng(0).exponential(size=1000), jnp.float32)
  threshold = defenses.fit_threshold(scores, q=0.95)
  np.testing.assert_allclose(threshold, np.quantile(np.asarray(scores), 0.95), rtol=1e-6)
  assert int(defenses.route(scores, threshold).sum()) == 50


@pytest.mark.parametrize("q", [0.0, 1.0, 1.5, -0.1, True])
def test_threshold_rejects_q_outside_the_open_unit_interval(q):
  with pytest.raises(ValueError, match=rf"q must lie in \(0, 1\).*q={q!r}"):
    defenses.fit_threshold(jnp.ones(10), q=q)


def test_threshold_and_route_reject_bad_scores():
  with pytest.raises(ValueError, match=r"scores must have shape \(B,\)"):
    defenses.fit_threshold(jnp.ones((4, 2)))
  with pytest.raises(ValueError, match="NaN"):
    defenses.fit_threshold(jnp.array([1.0, jnp.nan]))
  with pytest.raises(ValueError, match="threshold must be a scalar"):
    defenses.route(jnp.ones(3), jnp.ones(3))


def test_route_decides_per_example_where_a_batch_mean_would_not():
  scores = jnp.array([0.1, 0.2, 0.1, 5.0, 0.3, 0.1, 0.2, 0.1])
  threshold = 1.0
  assert float(scores.mean()) < threshold  # Morphence's per-batch rule would pass them all
  np.testing.assert_array_equal(defenses.route(scores, threshold), np.arange(8) == 3)


def test_reconstruction_score_is_the_l2_distance_to_the_translation():
  x = random_images((3, 4, 4, 2))
  translate = lambda v: jnp.clip(v + 0.1 * jnp.arange(3.0)[:, None, None, None], 0, 1)
  expected = np.linalg.norm(np.asarray(translate(x) - x).reshape(3, -1), axis=1)
  np.testing.assert_allclose(defenses.reconstruction_gate(translate)(x), expected, rtol=1e-6)
  with pytest.raises(ValueError, match="translate must keep the shape"):
    defenses.reconstruction_score(lambda v: v[..., :1], x)


Defense = collections.namedtuple("Defense", "defended classifier translate x ood")


@pytest.fixture(scope="module")
def defense() -> Defense:
  """SmallCNN (width 4) and UNet (ngf 2) on 8x8 grey images, a one-cluster Mahalanobis gate
  (Morphence's) fitted on dark noise images, q = 0.95; a batch of 6 dark (ID) and 2
  high-contrast checkerboard (OOD) images."""
  rng = np.random.default_rng(0)
  dark = lambda n: jnp.asarray(rng.uniform(0.0, 0.3, (n, 8, 8, 1)), jnp.float32)
  classifier_model = models.SmallCNN(num_classes=3, width=4, hidden=8)
  unet = models.UNet(features=2)
  classifier_vars = jax.jit(classifier_model.init)(KEY, dark(1))
  unet_vars = jax.jit(unet.init)(jax.random.fold_in(KEY, 1), dark(1))
  classifier = models.BoundModel(classifier_model, classifier_vars, "eval")
  feature_fn = models.BoundFeatures(classifier_model, classifier_vars, "eval")
  fit = feature_fn(dark(64))
  stats = defenses.fit_mahalanobis(fit, jnp.zeros(64, jnp.int32), num_classes=1, ridge=1e-3)
  held_out = defenses.mahalanobis_score(stats, feature_fn(dark(64)))
  translate = models.BoundModel(unet, unet_vars, "eval")
  defended = defenses.defended_apply(classifier, translate,
                                     defenses.mahalanobis_gate(feature_fn, stats),
                                     defenses.fit_threshold(held_out, q=0.95))
  ood = np.isin(np.arange(8), (2, 5))
  checkers = np.indices((8, 8)).sum(axis=0)[None, :, :, None] % 2
  bright = jnp.asarray(checkers * rng.uniform(0.7, 1.0, (8, 8, 8, 1)), jnp.float32)
  x = jnp.where(ood[:, None, None, None], bright, dark(8))
  return Defense(defended, classifier, translate, x, ood)


def test_the_gate_routes_ood_inputs_and_passes_id_ones_bit_for_bit(defense):
  routes = np.asarray(defense.defended.routes(defense.x))
  assert routes[defense.ood].all() and (~routes[~defense.ood]).sum() >= 5
  logits = jax.jit(lambda fn, v: fn(v))(defense.defended, defense.x)
  bare = jax.jit(lambda fn, v: fn(v))(defense.classifier, defense.x)
  np.testing.assert_array_equal(logits[~routes], bare[~routes])
  np.testing.assert_allclose(logits[routes],
                             defense.classifier(defense.translate(defense.x))[routes], atol=1e-5)


def test_an_infinite_threshold_forces_every_route(defense):
  parts = (defense.classifier, defense.translate, defense.defended.gate_score)
  routes = jax.jit(lambda fn, v: fn.routes(v))
  for threshold, expected in ((-jnp.inf, True), (jnp.inf, False)):
    np.testing.assert_array_equal(
        routes(defenses.defended_apply(*parts, threshold), defense.x), np.full(8, expected))


def test_defended_jits_vmaps_and_shards(defense):
  apply = jax.jit(lambda fn, v: fn(v))
  single = apply(defense.defended, defense.x)
  stacked = jnp.stack([defense.x, defense.x[::-1]])
  np.testing.assert_allclose(jax.vmap(defense.defended)(stacked),
                             jnp.stack([single, single[::-1]]), atol=1e-5)
  mesh = sharding.data_mesh()
  assert mesh.size == 8
  x_sharded = sharding.put_batch({"image": defense.x}, mesh)["image"]
  sharded = apply(defense.defended, x_sharded)
  assert len(sharded.sharding.device_set) == 8
  np.testing.assert_allclose(sharded, single, atol=1e-5)


@pytest.mark.parametrize("backward", defenses.BACKWARDS)
def test_pgd_through_the_defense_stays_in_the_ball(defense, backward):
  apply_fn = (defense.defended if backward == "exact"
              else defenses.straight_through(defense.defended, backward))
  y = jnp.argmax(defense.classifier(defense.x), axis=-1)
  x_adv = attacks.pgd(apply_fn, defense.x, y, jax.random.PRNGKey(0), eps=0.1, step_size=0.05,
                      steps=2)
  assert float(jnp.max(jnp.abs(x_adv - defense.x))) <= 0.1 + 1e-6
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


def _loss(logits, y):
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()


@jax.jit
def _reference_gradients(defended, x, y):
  """∇_{x'} L(f(x'), y) at the routed input x', that gradient pulled back through T at x, and
  the routes."""
  at_routed_input = jax.grad(lambda v: _loss(defended.classifier_apply(v), y))(
      defended.classifier_input(x))
  through_translator = jax.vjp(defended.translate, x)[1](at_routed_input)[0]
  return at_routed_input, through_translator, defended.routes(x)


@pytest.mark.parametrize("backward", defenses.BACKWARDS)
def test_straight_through_keeps_the_forward_and_replaces_the_backward(defense, backward):
  defended, x, y = defense.defended, defense.x, jnp.arange(8) % 3
  apply_fn = defended if backward == "exact" else defenses.straight_through(defended, backward)
  call = jax.jit(lambda fn, v: fn(v))
  np.testing.assert_array_equal(call(apply_fn, x), call(defended, x))
  at_routed_input, through_translator, routes = _reference_gradients(defended, x, y)
  expected = {"identity": at_routed_input, "translator": through_translator,
              "exact": jnp.where(routes[:, None, None, None], through_translator,
                                 at_routed_input)}[backward]
  gradient = jax.jit(jax.grad(lambda fn, v: _loss(fn(v), y), argnums=1))(apply_fn, x)
  np.testing.assert_allclose(gradient, expected, rtol=1e-4, atol=1e-6)


def test_composition_rejects_bad_parts(defense):
  classifier, translate = defense.classifier, defense.translate
  score = lambda v: v.reshape(v.shape[0], -1).mean(axis=1)
  with pytest.raises(ValueError, match="threshold must be a scalar and not NaN"):
    defenses.defended_apply(classifier, translate, score, jnp.ones(2))
  with pytest.raises(ValueError, match="threshold must be a scalar and not NaN"):
    defenses.defended_apply(classifier, translate, score, float("nan"))
  with pytest.raises(ValueError, match="translate must be a function"):
    defenses.defended_apply(classifier, None, score, 0.5)
  with pytest.raises(ValueError, match="translate must keep the shape"):
    defenses.defended_apply(classifier, lambda v: v[..., :0], score, 0.5)(defense.x)
  with pytest.raises(ValueError, match="one score per example"):
    defenses.defended_apply(classifier, translate, lambda v: score(v)[:1], 0.5)(defense.x)
  with pytest.raises(ValueError, match="unknown surrogate 'exact'"):
    defenses.straight_through(defense.defended, "exact")
  with pytest.raises(ValueError, match="takes a Defended"):
    defenses.straight_through(classifier)
  with pytest.raises(ValueError, match="surrogate of the value's shape"):
    defenses.with_gradient_of(jnp.ones(3), jnp.ones(2))
