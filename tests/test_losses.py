"""Attack losses against hand-computed values."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv.attacks import losses

# One example, 5 classes, true class 1; sorted logits 4 > 3 > 2 > 1 > 0.
LOGITS = jnp.array([[1.0, 3.0, 4.0, 0.0, 2.0]])
LABELS = jnp.array([1])
TARGETS = jnp.array([4])


def test_cross_entropy():
  expected = -np.log(np.exp(3.0) / np.exp([1.0, 3.0, 4.0, 0.0, 2.0]).sum())
  np.testing.assert_allclose(losses.cross_entropy(LOGITS, LABELS), [expected], rtol=1e-6)
  np.testing.assert_allclose(losses.cross_entropy_targeted(LOGITS, LABELS, TARGETS),
                             -losses.cross_entropy(LOGITS, TARGETS), rtol=1e-6)


def test_cw_margin():
  np.testing.assert_allclose(losses.cw_margin(LOGITS, LABELS), [4.0 - 3.0])
  np.testing.assert_allclose(losses.cw_margin_targeted(LOGITS, LABELS, TARGETS), [2.0 - 4.0])


def test_dlr():
  # -(z_y - max_{j != y} z_j) / (z_(1) - z_(3)) = -(3 - 4) / (4 - 2)
  np.testing.assert_allclose(losses.dlr(LOGITS, LABELS), [0.5])
  # -(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2) = -(3 - 2) / (4 - 1.5)
  np.testing.assert_allclose(losses.dlr_targeted(LOGITS, LABELS, TARGETS), [-0.4])


def test_dlr_is_shift_and_scale_invariant():
  np.testing.assert_allclose(losses.dlr(3.0 * LOGITS + 7.0, LABELS), losses.dlr(LOGITS, LABELS),
                             rtol=1e-6)


def test_kl_divergence():
  np.testing.assert_allclose(losses.kl_divergence(LOGITS, LOGITS), [0.0], atol=1e-6)
  p = np.exp(LOGITS[0]) / np.exp(LOGITS[0]).sum()
  q = np.ones(5) / 5
  np.testing.assert_allclose(losses.kl_divergence(jnp.zeros((1, 5)), LOGITS),
                             [np.sum(p * np.log(p / q))], rtol=1e-5)


def test_unknown_loss():
  with pytest.raises(ValueError, match="unknown attack loss"):
    losses.get("hinge")
