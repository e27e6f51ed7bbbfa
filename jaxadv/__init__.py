"""jaxadv: adversarial-robustness research in JAX/Flax.

Attacks (`jaxadv.attacks`), models (`jaxadv.models`), training methods (`jaxadv.methods`),
defenses wrapped around a classifier (`jaxadv.defenses`), the sharded training engine
(`jaxadv.train`), evaluation (`jaxadv.eval`; any classifier: `jaxadv.evaluate`) and datasets
(`jaxadv.data`).
"""

__version__ = "0.1.0"

__all__ = ["evaluate"]


def __getattr__(name: str):
  """`jaxadv.evaluate` (`jaxadv.eval.api.evaluate`), imported on first use so that importing
  jaxadv (the CLI's `--help`, config errors) does not wait for JAX."""
  if name == "evaluate":
    from jaxadv.eval.api import evaluate  # pylint: disable=import-outside-toplevel
    return evaluate
  raise AttributeError(f"module 'jaxadv' has no attribute {name!r}")
