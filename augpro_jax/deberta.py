"""DeBERTa-v2 (and v3) disentangled attention: the relative-position part of the scores.

DeBERTa adds to BERT's content-to-content scores q_i . k_j two terms that read a table of
relative-distance embeddings R [2 * span, hidden] (the encoder's `rel_embeddings`, LayerNorm-ed
when `norm_rel_ebd`):

  c2p[i, j] = q_i . K_R[delta(i, j) + span]     (content to position, "c2p")
  p2c[i, j] = k_j . Q_R[span - delta(j, i)]     (position to content, "p2c")

with delta(i, j) = i - j, log-bucketed beyond `position_buckets / 2` (`relative_positions`) and
clipped to the table. K_R, Q_R are R through the attention's own key/query projections
(`share_att_key`) or through `pos_key`/`pos_query`. Every term is divided by
sqrt(head_dim * (1 + number of terms)), the content scores included. Pure functions; the
modules that own the parameters are `model.SelfAttention` and `model.Encoder`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _named_terms(config: Any) -> tuple[str, ...]:
  return tuple(t for t in ("c2p", "p2c") if t in config.pos_att_type.split("|"))


def terms(config: Any) -> tuple[str, ...]:
  """The relative terms in use ("c2p", "p2c"); none when relative attention is off."""
  return _named_terms(config) if config.max_relative_positions > 0 else ()


def score_scale(config: Any) -> float:
  """What every score is divided by: sqrt(head_dim) for BERT, sqrt(head_dim * (1 + the terms
  pos_att_type names)) for DeBERTa, even with relative attention off (as transformers does)."""
  return math.sqrt(config.head_dim * (1 + len(_named_terms(config))))


def span(config: Any) -> int:
  """Half the rows of the relative-embedding table."""
  return config.position_buckets if config.position_buckets > 0 else config.max_relative_positions


def _log_buckets(rel: np.ndarray, bucket_size: int, max_position: int) -> np.ndarray:
  # float32 as transformers computes it, so that bucket edges fall on the same side.
  mid = bucket_size // 2
  sign = np.sign(rel)
  far = np.where((rel < mid) & (rel > -mid), mid - 1, np.abs(rel)).astype(np.float32)
  scale = np.log(np.float32((max_position - 1) / mid))
  log_pos = np.ceil(np.log(far / np.float32(mid)) / scale * np.float32(mid - 1)) + mid
  return np.where(far <= mid, rel, log_pos * sign).astype(np.int32)


def relative_positions(seq_len: int, config: Any) -> np.ndarray:
  """delta [seq, seq] int32: i - j, log-bucketed when `position_buckets` > 0 (static)."""
  ids = np.arange(seq_len)
  rel = ids[:, None] - ids[None, :]
  if config.position_buckets > 0 and config.max_relative_positions > 0:
    rel = _log_buckets(rel, config.position_buckets, config.max_relative_positions)
  return rel.astype(np.int32)


def relative_table(config: Any, layer_norm: nn.Module, init_std: float) -> Optional[jax.Array]:
  """The encoder's `rel_embeddings` [2 * span, hidden] (LayerNorm-ed when `norm_rel_ebd`), or
  None without relative attention. Called inside the encoder, which owns the parameters."""
  if not terms(config):
    return None
  size = 2 * span(config)
  table = nn.Embed(size, config.hidden_size, dtype=jnp.float32, param_dtype=jnp.float32,
                   embedding_init=nn.initializers.normal(init_std),
                   name="rel_embeddings")(jnp.arange(size))
  return layer_norm(table) if config.norm_rel_ebd else table


def relative_scores(q: jax.Array, k: jax.Array, rel_embeddings: jax.Array, config: Any,
                    project: Callable[[str, jax.Array], jax.Array]) -> jax.Array:
  """The c2p + p2c scores [batch, heads, seq_q, seq_k] f32, already scaled.

  q, k: [batch, seq, heads, head_dim]; rel_embeddings [2 * span, hidden];
  project(which, x): x through the key ("key") or query ("query") projection of the positions.
  """
  seq, heads, head_dim = q.shape[1], q.shape[2], q.shape[3]
  size = span(config)
  table = rel_embeddings[:2 * size]  # [2 * span, hidden]
  delta = relative_positions(seq, config)  # [seq, seq]
  split = lambda t: t.reshape(2 * size, heads, head_dim)
  score = jnp.zeros((q.shape[0], heads, seq, seq), jnp.float32)
  scale = score_scale(config)
  if "c2p" in terms(config):
    pos_key = split(project("key", table))  # [2 * span, heads, head_dim]
    c2p = jnp.einsum("bqhd,rhd->bhqr", q, pos_key, preferred_element_type=jnp.float32)
    index = np.clip(delta + size, 0, 2 * size - 1)[None, None]  # [1, 1, seq_q, seq_k]
    score = score + jnp.take_along_axis(c2p, jnp.asarray(index), axis=-1) / scale
  if "p2c" in terms(config):
    pos_query = split(project("query", table))
    p2c = jnp.einsum("bkhd,rhd->bhkr", k, pos_query, preferred_element_type=jnp.float32)
    index = np.clip(-delta + size, 0, 2 * size - 1)[None, None]  # rows: keys
    score = score + jnp.swapaxes(jnp.take_along_axis(p2c, jnp.asarray(index), axis=-1),
                                 -1, -2) / scale
  return score


def conv(config: Any, init_std: float) -> nn.Conv:
  """The encoder's convolution (`conv_kernel_size` > 0: DeBERTa-v2 xlarge and xxlarge) over the
  sequence, 'same' length for the odd kernels transformers accepts. Created inside the encoder."""
  pad = (config.conv_kernel_size - 1) // 2
  return nn.Conv(config.hidden_size, (config.conv_kernel_size,), padding=[(pad, pad)],
                 feature_group_count=config.conv_groups, dtype=config.compute_dtype,
                 param_dtype=jnp.float32, kernel_init=nn.initializers.normal(init_std),
                 name="conv")


def add_conv(embeddings: jax.Array, layer_out: jax.Array, keep: jax.Array,
             conv_layer: nn.Module, layer_norm: nn.Module, dropout: nn.Module,
             act: Callable[[jax.Array], jax.Array], deterministic: bool) -> jax.Array:
  """Layer 0's output plus the convolution of the embeddings, normalised, padding zeroed.

  embeddings, layer_out: [batch, seq, hidden]; keep [batch, seq] (1 on real tokens).
  """
  keep = keep[..., None]  # [batch, seq, 1]
  out = conv_layer(embeddings).astype(jnp.float32) * keep  # [batch, seq, hidden]
  out = act(dropout(out, deterministic=deterministic))
  return layer_norm(layer_out + out) * keep
