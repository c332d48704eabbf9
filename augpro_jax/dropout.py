"""Inverted dropout with a choice of 16 or 32 random bits per decision (`model` uses it)."""

from __future__ import annotations

import contextlib
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from augpro_jax import sharding
from augpro_jax.errors import UserError


class Dropout(nn.Module):
  """Inverted dropout: keep each element with probability 1 - rate and scale it by 1 / (1 - rate).

  bits=32 is `nn.Dropout` exactly (same module name, same key, same mask). bits=16 splits every
  32-bit random word into two 16-bit draws, so a mask costs half the threefry work; an element is
  kept when its draw is below round((1 - rate) * 2^16), a keep probability within 2^-17 of
  1 - rate. On CPU the masks are a large part of the student's step (docs/benchmarks.md).
  `broadcast_dims` share one decision along those axes, as in `nn.Dropout`.

  rng="rbg" draws the bits with XLA's RngBitGenerator (`jax.random`'s rbg implementation) from a
  key of four words that the module's threefry key gives: the same masks' statistics, other bits.
  TPUs generate them in hardware (T5X and MaxText use rbg there); on CPU both cost about the same
  (docs/benchmarks.md). Under `jit`, rbg bits may depend on how a draw is split over devices.
  """

  rate: float
  bits: int = 32
  broadcast_dims: tuple[int, ...] = ()
  rng: str = "threefry"

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    keep_prob = 1.0 - self.rate
    key = self.make_rng("dropout")
    if self.rng == "rbg":
      key = jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl="rbg")
    elif self.rng != "threefry":
      raise UserError(f"dropout rng must be threefry or rbg, got {self.rng!r}")
    shape = tuple(1 if axis in self.broadcast_dims else size for axis, size in enumerate(x.shape))
    # With the examples split over `fsdp`, the partitionable threefry scheme lets each device
    # draw only its examples' bits; the original scheme (the default, see train_step) would have
    # every device draw the whole data slice's mask, gigabytes per layer on a pod.
    split = sharding.auto_fsdp_size() > 1 and shape[0] > 1
    with jax.threefry_partitionable(True) if split else contextlib.nullcontext():
      keep = sharding.split_examples(self._keep(key, keep_prob, shape))
    return jax.lax.select(jnp.broadcast_to(keep, x.shape), x / keep_prob, jnp.zeros_like(x))

  def _keep(self, key: jax.Array, keep_prob: float, shape: tuple[int, ...]) -> jax.Array:
    """The keep decisions, bool [shape]."""
    if self.bits == 32:
      return jax.random.bernoulli(key, p=keep_prob, shape=shape)
    if self.bits == 16:
      count = math.prod(shape)
      words = jax.random.bits(key, (-(-count // 2),), jnp.uint32)  # [ceil(count / 2)]
      draws = jnp.concatenate([words & 0xFFFF, words >> 16])[:count].reshape(shape)
      return draws < jnp.uint32(round(keep_prob * 65536))
    raise UserError(f"dropout bits must be 16 or 32, got {self.bits}")
