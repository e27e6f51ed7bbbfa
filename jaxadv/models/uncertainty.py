"""Feature-statistics uncertainty: a parameter-free layer that resamples the per-sample,
per-channel mean and standard deviation of a feature map (DSU, Li et al., ICLR 2022, code
`lixiaotong97/DSU:dsu.py`), with FSU's clean-guided sampling as an option (arXiv 2503.20583,
code `TechTrekkerZ/FSU`), and where the models of the zoo insert it.

For a feature map z of shape (B, *spatial, C) (B >= 2 samples, at least 2 spatial positions):

    μ_bc = mean_s z_bsc,      σ_bc = sqrt(var_s z_bsc + eps)                 (B, C)
    Σ_μ,c = sqrt(Var_b μ_bc + eps),   Σ_σ,c = sqrt(Var_b σ_bc + eps)           (C,)
    μ'_bc = μ_bc + scale · ε₁_bc · Σ_μ,c,   σ'_bc = σ_bc + scale · ε₂_bc · Σ_σ,c
    z'    = σ' · (z − μ) / σ + μ'                                            (B, *spatial, C)

with ε₁, ε₂ ~ N(0, I) of shape (B, C). Both variances are unbiased (ddof = 1), as PyTorch's
`var` in the DSU code; eps = 1e-6 and scale = 1 (DSU's `factor`) are the DSU constants, and
scale = 0 gives Σ = 0: z' = z up to rounding. The layer is active with probability p (default
0.5, DSU's): one coin per call and layer, shared by the whole batch, as DSU's
`np.random.random() > p`.

**Clean-guided sampling** (`guided=True`, FSU's option): the noise moves the statistics further
along the clean -> adversarial shift. With (μ_clean, σ_clean) the statistics the same layer saw
on the clean batch,

    ε₁ <- |ε₁| · sign(μ − μ_clean),    ε₂ <- |ε₂| · sign(σ − σ_clean)

elementwise, and ε itself where the difference is exactly 0. This is the distribution FSU's
rejection loop samples from (a normal draw conditioned on the sign), written without the loop.
(FSU's code takes the σ sign from μ − σ_clean; jaxadv uses σ − σ_clean, as the method
states.)

**When it is active.** Only when the caller passes `resample=True` to the model's `__call__`
*and* a key in the rng stream `Uncertainty.rng_stream` ("uncertainty"):
`apply_model(model, variables, x, mode, rngs={"uncertainty": key}, resample=True)`. The default
is `resample=False`, under which every layer returns its input unchanged (no arithmetic), so
evaluation, the attacks and `BoundModel`, which never pass it, see the plain network whatever
the mode; `resample=True` without the key is a ValueError naming the stream. The layers have
no parameters: a model built with `uncertainty` has the variables of the one built without.

**Statistics in and out.** When the collection `STATS` is mutable (`apply_model(...,
collect=(STATS,))`), every layer records the (μ, σ) of its input there, resampled or not (the
clean pass of a guided method); a guided layer reads the clean (μ, σ) from the collection
`GUIDE` of the variables (`with_guide`). `split_statistics` takes both out of a returned model
state.

**Insertion points.** A model of the zoo with the field `uncertainty` (an `Uncertainty`, or
None: no layer) names its points "stage1", "stage2", ... after each stage (SmallCNN: after each
conv-conv-pool block; ResNet-18, PreActResNet-18: after each of the 4 stages; WRN: after each of
its 3 stages, before the final BN-ReLU of pre-activation nets), listed by its
`uncertainty_points`. `Uncertainty.points` picks "last" (default, FSU's place: after the last
stage, before pooling), "all" (DSU's every stage), or comma-separated names.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

STREAM = "uncertainty"       # the default rng stream of the layers
STATS = "feature_stats"      # collection the layers record their input statistics into
GUIDE = "feature_guide"      # collection a guided layer reads the clean statistics from
EPS = 1e-6                   # DSU's eps, in σ and in Σ
POINT_ALIASES = ("last", "all")


@dataclasses.dataclass(frozen=True)
class Uncertainty:
  """Where a model inserts `FeatureUncertainty` layers, and their constants (a model field).

  Attributes:
    points: "last", "all", or comma-separated names of the model's `uncertainty_points`.
    p: probability in [0, 1] that a layer is active in a resampling call.
    guided: FSU's clean-guided sampling (needs the clean statistics in `GUIDE`).
    noise_scale: scale >= 0 of ε₁, ε₂ (0: Σ = 0, the layer is the identity up to rounding).
    eps: the eps of σ and Σ (> 0).
    rng_stream: the Flax rng stream the layers draw from.

  Raises ValueError, starting with the field's name, for a bad value.
  """
  points: str = "last"
  p: float = 0.5
  guided: bool = False
  noise_scale: float = 1.0
  eps: float = EPS
  rng_stream: str = STREAM

  def __post_init__(self):
    _check_points_syntax(self.points)
    if not _is_number(self.p) or not 0.0 <= self.p <= 1.0:
      raise ValueError(f"p must be a probability in [0, 1], got {self.p!r}.")
    if not isinstance(self.guided, bool):
      raise ValueError(f"guided must be a bool, got {self.guided!r}.")
    if not _is_number(self.noise_scale) or self.noise_scale < 0:
      raise ValueError(f"noise_scale must be a finite number >= 0, got {self.noise_scale!r}.")
    if not _is_number(self.eps) or self.eps <= 0:
      raise ValueError(f"eps must be a finite number > 0, got {self.eps!r}.")
    if not isinstance(self.rng_stream, str) or not self.rng_stream.isidentifier() or (
        self.rng_stream == "params"):
      raise ValueError(f"rng_stream: the uncertainty layer needs a named rng stream (an "
                       f"identifier other than 'params'), got {self.rng_stream!r}.")

  def resolve(self, available: Sequence[str]) -> tuple[str, ...]:
    """The insertion points of a model offering `available` (in order) that `points` picks.

    >>> Uncertainty(points="all").resolve(("stage1", "stage2"))
    ('stage1', 'stage2')
    >>> Uncertainty().resolve(("stage1", "stage2"))
    ('stage2',)
    """
    available = tuple(available)
    if not available:
      raise ValueError("points: the model has no uncertainty insertion points; SmallCNN, "
                       "ResNet, PreActResNet and WideResNet have them.")
    if self.points == "last":
      return available[-1:]
    if self.points == "all":
      return available
    names = tuple(name.strip() for name in self.points.split(","))
    unknown = [name for name in names if name not in available]
    if unknown:
      raise ValueError(f"points {unknown} are not insertion points of the model, whose points "
                       f"are {list(available)} (or 'last', 'all').")
    return tuple(name for name in available if name in names)


def _is_number(value) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def _check_points_syntax(points) -> None:
  if not isinstance(points, str) or not points.strip() or any(
      not name.strip() for name in points.split(",")):
    raise ValueError(f"points must be 'last', 'all' or comma-separated insertion point names "
                     f"such as 'stage2,stage4', got {points!r}.")


def feature_statistics(z: jax.Array, eps: float = EPS) -> tuple[jax.Array, jax.Array]:
  """(μ, σ), each (B, C): the spatial mean and sqrt(unbiased spatial variance + eps) of z
  (B, *spatial, C), in float32."""
  axes = tuple(range(1, z.ndim - 1))
  z = z.astype(jnp.float32)
  return jnp.mean(z, axis=axes), jnp.sqrt(jnp.var(z, axis=axes, ddof=1) + eps)


def statistics_uncertainty(statistic: jax.Array, eps: float = EPS) -> jax.Array:
  """Σ (C,) = sqrt(unbiased batch variance + eps) of a statistic (B, C)."""
  return jnp.sqrt(jnp.var(statistic, axis=0, ddof=1) + eps)


def guided_noise(noise: jax.Array, shift: jax.Array) -> jax.Array:
  """FSU's clean-guided noise without rejection: |noise| · sign(shift), and noise itself where
  shift is 0; noise, shift of one shape.

  >>> guided_noise(jnp.array([-1.0, 2.0, -3.0]), jnp.array([1.0, -1.0, 0.0])).tolist()
  [1.0, -2.0, -3.0]
  """
  return jnp.where(shift == 0, noise, jnp.abs(noise) * jnp.sign(shift))


def resample_statistics(z: jax.Array, key: jax.Array, *, p: float = 0.5,
                        noise_scale: float = 1.0, eps: float = EPS,
                        clean: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
  """z' = σ'(z − μ)/σ + μ' with probability p, else z (the module docstring's maths).

  Args:
    z: features (B, *spatial, C), B >= 2 and at least 2 spatial positions.
    key: PRNG key of the coin and of ε₁, ε₂.
    p, noise_scale, eps: as `Uncertainty`.
    clean: (μ_clean, σ_clean), each (B, C), for clean-guided noise; None: plain DSU noise.

  Returns: the features, shape and dtype of z.
  """
  positions = math.prod(z.shape[1:-1])
  if z.ndim < 3 or z.shape[0] < 2 or positions < 2:
    raise ValueError(f"the uncertainty layer needs features (B, *spatial, C) with B >= 2 and "
                     f"at least 2 spatial positions (unbiased variances), got {z.shape}.")
  gate_key, mean_key, std_key = jax.random.split(key, 3)
  mu, sigma = feature_statistics(z, eps)
  noise_mu = jax.random.normal(mean_key, mu.shape)
  noise_sigma = jax.random.normal(std_key, sigma.shape)
  if clean is not None:
    clean_mu, clean_sigma = jax.lax.stop_gradient(clean)
    noise_mu = guided_noise(noise_mu, jax.lax.stop_gradient(mu) - clean_mu)
    noise_sigma = guided_noise(noise_sigma, jax.lax.stop_gradient(sigma) - clean_sigma)
  new_mu = mu + noise_scale * noise_mu * statistics_uncertainty(mu, eps)
  new_sigma = sigma + noise_scale * noise_sigma * statistics_uncertainty(sigma, eps)
  expand = lambda s: s.reshape(s.shape[0], *([1] * (z.ndim - 2)), s.shape[-1])
  resampled = (expand(new_sigma) * (z.astype(jnp.float32) - expand(mu)) / expand(sigma)
               + expand(new_mu)).astype(z.dtype)
  return jnp.where(jax.random.bernoulli(gate_key, p), resampled, z)


class FeatureUncertainty(nn.Module):
  """The layer: `resample_statistics` of its input when called with `resample=True` (drawing
  from the rng stream `rng_stream`), its input unchanged otherwise; records (μ, σ) into `STATS`
  when that collection is mutable; reads the clean (μ, σ) from `GUIDE` when `guided`.
  x: (B, *spatial, C) -> same shape."""
  p: float = 0.5
  guided: bool = False
  noise_scale: float = 1.0
  eps: float = EPS
  rng_stream: str = STREAM

  @nn.compact
  def __call__(self, z, resample: bool = False):
    if self.is_mutable_collection(STATS) and not self.is_initializing():
      mu, sigma = feature_statistics(z, self.eps)
      self.put_variable(STATS, "mu", mu)
      self.put_variable(STATS, "sigma", sigma)
    if not resample:
      return z
    if not self.has_rng(self.rng_stream):
      raise ValueError(f"rng_stream: the uncertainty layer was asked to resample "
                       f"(resample=True) without its rng stream {self.rng_stream!r}; pass "
                       f"rngs={{{self.rng_stream!r}: key}}.")
    clean = None
    if self.guided:
      if not self.has_variable(GUIDE, "mu"):
        raise ValueError(f"guided: clean-guided sampling needs the clean statistics in the "
                         f"collection {GUIDE!r} (`with_guide`).")
      clean = (self.get_variable(GUIDE, "mu"), self.get_variable(GUIDE, "sigma"))
    return resample_statistics(z, self.make_rng(self.rng_stream), p=self.p,
                               noise_scale=self.noise_scale, eps=self.eps, clean=clean)


def inserter(spec: Uncertainty | None, available: Sequence[str],
             resample: bool) -> Callable[[str, jax.Array], jax.Array]:
  """`(point, z) -> z` for a model's compact `__call__`: at each point `spec` picks (of the
  model's `available` ones) a `FeatureUncertainty` named "uncertainty_<point>", elsewhere the
  identity. Raises ValueError for `resample=True` on a model without layers (`spec` None) and
  for points the model does not have."""
  if spec is None:
    if resample:
      raise ValueError("resample=True needs a model built with uncertainty layers "
                       "(the model field `uncertainty`).")
    return lambda point, z: z
  chosen = spec.resolve(available)

  def insert(point: str, z: jax.Array) -> jax.Array:
    if point not in chosen:
      return z
    layer = FeatureUncertainty(p=spec.p, guided=spec.guided, noise_scale=spec.noise_scale,
                               eps=spec.eps, rng_stream=spec.rng_stream,
                               name=f"uncertainty_{point}")
    return layer(z, resample)
  return insert


def stage_points(count: int) -> tuple[str, ...]:
  """("stage1", ..., "stage<count>")."""
  return tuple(f"stage{index + 1}" for index in range(count))


def with_guide(variables: dict, statistics) -> dict:
  """`variables` with the clean statistics (the `STATS` collection of a recording call) as the
  `GUIDE` collection that guided layers read."""
  return {**variables, GUIDE: jax.lax.stop_gradient(statistics)}


def split_statistics(state: dict) -> tuple[dict, dict]:
  """(the model state without `STATS` and `GUIDE`, the recorded `STATS` or {})."""
  rest = {name: value for name, value in state.items() if name not in (STATS, GUIDE)}
  return rest, state.get(STATS, {})
