"""jaxadv: adversarial-robustness research in JAX/Flax.

Attacks (`jaxadv.attacks`), models (`jaxadv.models`), training methods (`jaxadv.methods`),
defenses wrapped around a classifier (`jaxadv.defenses`), the sharded training engine
(`jaxadv.train`), evaluation (`jaxadv.eval`) and datasets (`jaxadv.data`).
"""

__version__ = "0.1.0"
