"""The encoder's Dense layer and GELU, written for the step's speed on CPU (`model` uses them).

`Dense` is `nn.Dense` (same parameter names, shapes, initialisers and dtypes, so checkpoints and
imported weights are unchanged) with two differences in how XLA gets the work:
- the product is a 2-D matmul over [batch * seq, in]. With [batch, seq] as two contracting
  dimensions, the kernel's gradient made XLA:CPU first copy the cotangent transposed and then run
  both gradient matmuls in a slow layout: the backward of one [32, 64, 384] x [384, 1536] layer
  took about twice its two products (docs/benchmarks.md, "Where the time goes");
- the bias gradient, a sum over [batch * seq] rows, is a product with a vector of ones (`add_bias`),
  which runs in the dot library (threaded, vectorised) instead of a single-threaded reduction loop.

`gelu` is the exact GELU, x * (1 + erf(x / sqrt(2))) / 2. `jax.nn.gelu(approximate=False)` is the
same function written with erfc, whose polynomial costs about twice erf's on CPU; the two differ
by float32 rounding only. On accelerators every form compiles to the same fused kernels.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def gelu(x: jax.Array) -> jax.Array:
  """The exact GELU, x * Phi(x), with erf."""
  return 0.5 * x * (1.0 + jax.lax.erf(x * np.asarray(1.0 / np.sqrt(2.0), x.dtype)))


def _sum_rows(x: jax.Array) -> jax.Array:
  """[..., n] -> [n]: the sum over every leading axis, as a vector-matrix product (f32 sums)."""
  rows = x.reshape(-1, x.shape[-1])  # [m, n]
  ones = jnp.ones((rows.shape[0],), x.dtype)
  return jnp.einsum("m,mn->n", ones, rows, precision=jax.lax.Precision.HIGHEST,
                    preferred_element_type=jnp.float32).astype(x.dtype)


@jax.custom_vjp
def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
  """y [..., n] + bias [n]; the bias gradient is a matmul with ones."""
  return y + bias


def _add_bias_fwd(y: jax.Array, bias: jax.Array):
  return y + bias, None


def _add_bias_bwd(_, grad: jax.Array):
  return grad, _sum_rows(grad)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


class Dense(nn.Module):
  """`nn.Dense(features, dtype, param_dtype=float32)`: kernel [in, features] and bias [features]
  in float32, the product in `dtype`."""

  features: int
  dtype: Any = jnp.float32
  use_bias: bool = True
  kernel_init: Callable[..., jax.Array] = nn.initializers.lecun_normal()
  bias_init: Callable[..., jax.Array] = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x [..., in] -> [..., features] in `dtype`."""
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
    rows = x.reshape(-1, x.shape[-1]).astype(self.dtype)  # [batch * seq, in]
    y = (rows @ kernel.astype(self.dtype)).reshape(*x.shape[:-1], self.features)
    if not self.use_bias:
      return y
    bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
    return add_bias(y, bias.astype(self.dtype))
