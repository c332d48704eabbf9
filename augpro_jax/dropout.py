"""Inverted dropout with a choice of 16 or 32 random bits per decision (`model` uses it)."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from augpro_jax.errors import UserError


class Dropout(nn.Module):
  """Inverted dropout: keep each element with probability 1 - rate and scale it by 1 / (1 - rate).

  bits=32 is `nn.Dropout` exactly (same module name, same key, same mask). bits=16 splits every
  32-bit random word into two 16-bit draws, so a mask costs half the threefry work; an element is
  kept when its draw is below round((1 - rate) * 2^16), a keep probability within 2^-17 of
  1 - rate. On CPU the masks are a large part of the student's step (docs/benchmarks.md).
  `broadcast_dims` share one decision along those axes, as in `nn.Dropout`.
  """

  rate: float
  bits: int = 32
  broadcast_dims: tuple[int, ...] = ()

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    keep_prob = 1.0 - self.rate
    key = self.make_rng("dropout")
    shape = tuple(1 if axis in self.broadcast_dims else size for axis, size in enumerate(x.shape))
    if self.bits == 32:
      keep = jax.random.bernoulli(key, p=keep_prob, shape=shape)
    elif self.bits == 16:
      count = math.prod(shape)
      words = jax.random.bits(key, (-(-count // 2),), jnp.uint32)  # [ceil(count / 2)]
      draws = jnp.concatenate([words & 0xFFFF, words >> 16])[:count].reshape(shape)
      keep = draws < jnp.uint32(round(keep_prob * 65536))
    else:
      raise UserError(f"dropout bits must be 16 or 32, got {self.bits}")
    keep = jnp.broadcast_to(keep, x.shape)
    return jax.lax.select(keep, x / keep_prob, jnp.zeros_like(x))
