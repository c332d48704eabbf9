"""The encoder's Dense layer and GELU, written for the step's speed on CPU (`model` uses them).

`Dense` is `nn.Dense` (same parameter names, shapes, initialisers and dtypes, so checkpoints and
imported weights are unchanged). On CPU (`jax.lax.platform_dependent`; other platforms get
`nn.Dense`'s own product) it differs in how XLA gets the work:
- the product is a 2-D matmul over [batch * seq, in]. With [batch, seq] as two contracting
  dimensions, the kernel's gradient made XLA:CPU first copy the cotangent transposed and then run
  both gradient matmuls in a slow layout: the backward of one [32, 64, 384] x [384, 1536] layer
  took about twice its two products (docs/benchmarks.md, "Why, from the profiles");
- the bias gradient, a sum over [batch * seq] rows, is a product with a vector of ones
  (`add_bias`), which runs in the dot library (threaded, vectorised) instead of a single-threaded
  reduction loop.

`gelu` is the exact GELU, on CPU as x * (1 + erf(x / sqrt(2))) / 2. `jax.nn.gelu(approximate=False)`
is the same function written with erfc, whose polynomial costs about twice erf's on CPU; the two
differ by float32 rounding only. Other platforms keep `jax.nn.gelu`.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def gelu(x: jax.Array) -> jax.Array:
  """The exact GELU, x * Phi(x): with erf on CPU, `jax.nn.gelu`'s erfc form elsewhere (on TPU
  the erf form's compiled fine-tuning step needed more memory, docs/multihost.md)."""
  return jax.lax.platform_dependent(x, cpu=_gelu_erf,
                                    default=lambda v: jax.nn.gelu(v, approximate=False))


def _gelu_erf(x: jax.Array) -> jax.Array:
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
    args = [x.astype(self.dtype), kernel.astype(self.dtype)]
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
      args.append(bias.astype(self.dtype))
    return jax.lax.platform_dependent(*args, cpu=_dense_as_rows, default=_dense_general)


def _dense_as_rows(x: jax.Array, kernel: jax.Array, bias: Optional[jax.Array] = None
                   ) -> jax.Array:
  """CPU: x [..., in] as [rows, in] times kernel [in, out], plus `add_bias`."""
  y = (x.reshape(-1, x.shape[-1]) @ kernel).reshape(*x.shape[:-1], kernel.shape[1])
  return y if bias is None else add_bias(y, bias)


def _dense_general(x: jax.Array, kernel: jax.Array, bias: Optional[jax.Array] = None
                   ) -> jax.Array:
  """Other platforms: `nn.Dense`'s product (compiled for TPU, the step accessed fewer bytes than
  with the 2-D form, docs/multihost.md)."""
  y = jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
  return y if bias is None else y + bias
