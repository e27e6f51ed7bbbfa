"""Penultimate features of a classifier: the input z of its last `nn.Dense` layer, the head.

Every classifier of the zoo (SmallCNN, ResNet, PreActResNet, WideResNet, ViT) ends in one
linear head, logits = z W + b, with z (B, D) the pooled (or, for SmallCNN, the second hidden
layer's) features: what SSD-style OOD detectors read (`jaxadv.defenses.gate`). `features`
records z by intercepting the model's calls to `nn.Dense` (`flax.linen.intercept_methods`)
and keeping the input of the last one, so no model changes, variables stay as they are, and any
Flax module whose last `nn.Dense` call is its head works the same way. Under `jit` the head
itself is dead code and compiled away.

Example: the features of a SmallCNN, and its logits from them.
  >>> import jax, jax.numpy as jnp
  >>> from jaxadv.models import SmallCNN
  >>> model = SmallCNN(num_classes=3, width=2, hidden=5)
  >>> x = jnp.full((2, 8, 8, 1), 0.5)
  >>> variables = model.init(jax.random.PRNGKey(0), x)
  >>> z = features(model, variables, x)
  >>> head = variables["params"]["Dense_2"]
  >>> z.shape, bool(jnp.allclose(z @ head["kernel"] + head["bias"], model.apply(variables, x)))
  ((2, 5), True)
"""

from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxadv.models.modes import BoundModel, apply_model


def features(model: nn.Module, variables, x: jax.Array, mode: str = "eval",
             bn: str = "main") -> jax.Array:
  """The input of the last `nn.Dense` call of `model` on x, in float32: (B, ...) -> (B, D).

  The model runs as `apply_model(model, variables, x, mode, bn)` (eval mode by default: BN
  running averages); its logits and any updated state are dropped. Raises ValueError for a
  model that calls no `nn.Dense` (the dense `fcn`, say).
  """
  inputs = []

  def record_dense_input(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
      inputs.append(args[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record_dense_input):
    apply_model(model, variables, x, mode, bn)
  if not inputs:
    raise ValueError(f"{type(model).__name__} calls no nn.Dense layer: features() reads the "
                     "input of a classifier's final Dense head.")
  return inputs[-1].astype(jnp.float32)


@flax.struct.dataclass
class BoundFeatures(BoundModel):
  """`x -> features(model, variables, x, mode, bn)` with fixed variables, mode and route: the
  `BoundModel` of the penultimate features, a pytree like it."""

  def __call__(self, x: jax.Array) -> jax.Array:
    return features(self.model, self.variables, x, self.mode, self.bn)
