"""A BERT-family encoder with a classification head (Flax linen): BERT, RoBERTa, ELECTRA and
DistilBERT, whose differences `families` names; Hugging Face weights: `hf_io`.

The model is split at the word-embedding lookup so that augmentations can work on embeddings:

  logits = apply_embeddings(embed(input_ids), attention_mask, token_type_ids)

`embed` is the table lookup only; `apply_embeddings` adds position and token-type embeddings and
runs LayerNorm, the encoder, the pooler and the classifier. Both are differentiable, and all
methods share one parameter tree:

  params/embeddings/{word_embeddings,position_embeddings,token_type_embeddings}/embedding
  params/embeddings/layer_norm/{scale,bias}
  params/encoder/layer_{i}/attention/{query,key,value,output}/{kernel,bias}
  params/encoder/layer_{i}/{attention_layer_norm,intermediate,output,output_layer_norm}/...
  params/pooler/{kernel,bias}, params/classifier/{kernel,bias}  (the head's dense and output)

Parameters are always float32; `BertConfig.dtype` is the compute dtype of the matmuls. The residual
stream, LayerNorm, softmax and the logits stay float32 so that bfloat16 runs stay close to float32.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from augpro_jax import config as config_lib
from augpro_jax import deberta
from augpro_jax import families
from augpro_jax import layers
from augpro_jax import sharding
from augpro_jax.dropout import Dropout  # also `model.Dropout`
from augpro_jax.errors import UserError

Params = dict[str, Any]

_DTYPES = {name: getattr(jnp, name) for name in config_lib.choices("dtype")}
# Added to attention scores at padding keys. Finite, so a row with every key masked stays a
# (uniform) softmax instead of NaN, and far below any real score.
_MASK_BIAS = -1e9
# BERT's initializer_range.
_INIT_STD = 0.02


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Shape and numerics of a BERT classifier. Field names are ours; see `hf_io`."""

  vocab_size: int = 30522
  hidden_size: int = 384
  num_layers: int = 6
  num_heads: int = 12
  intermediate_size: int = 1536
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  dropout_rate: float = 0.1
  num_labels: int = 2  # 1 means regression (one output)
  dtype: str = "float32"  # compute dtype: "float32" or "bfloat16"; params always stay float32
  pad_token_id: int = 0
  dropout_bits: int = 32  # random bits per dropout decision: 32 or 16 (see `Dropout`)
  dropout_rng: str = "threefry"  # generator of the dropout bits: threefry or rbg (see `Dropout`)
  # "per_head": one attention-dropout mask per example and head, as BERT; "shared": one [q, k]
  # mask for the whole batch and all heads, as HF's Flax BERT (broadcast_dropout).
  attention_dropout_mask: str = "per_head"
  family: str = "bert"  # a config.json model_type of `families.FAMILIES`
  embedding_size: int = 0  # ELECTRA, DeBERTa: width of the embedding tables; 0: hidden_size
  # DeBERTa-v2 (`deberta`): relative attention when max_relative_positions > 0.
  max_relative_positions: int = 0
  position_buckets: int = 0
  pos_att_type: str = ""  # "c2p|p2c"
  share_att_key: bool = False
  norm_rel_ebd: bool = False  # LayerNorm on the relative-embedding table
  position_biased_input: bool = True  # an absolute position table (DeBERTa-v3 has none)
  # DeBERTa-v2 xlarge/xxlarge: a convolution over the embeddings added to layer 0's output.
  conv_kernel_size: int = 0  # 0: none
  conv_groups: int = 1
  conv_act: str = "tanh"  # a key of families.HEAD_ACTIVATIONS

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def embedding_width(self) -> int:
    return self.embedding_size or self.hidden_size

  @property
  def max_seq_len(self) -> int:
    return families.usable_positions(families.get(self.family), self.max_position_embeddings,
                                     self.pad_token_id)

  @property
  def compute_dtype(self) -> Any:
    if self.dtype not in _DTYPES:
      raise UserError(f"unknown model dtype {self.dtype!r}; choose one of: {', '.join(_DTYPES)}")
    return _DTYPES[self.dtype]


def _dense(config: BertConfig, features: int, name: str, dtype: Any = None) -> layers.Dense:
  """A Dense layer with float32 parameters computing in `dtype` (default: the compute dtype)."""
  return layers.Dense(features, dtype=dtype or config.compute_dtype, name=name,
                      kernel_init=nn.initializers.normal(_INIT_STD),
                      bias_init=nn.initializers.zeros)


def _layer_norm(config: BertConfig, name: str) -> nn.LayerNorm:
  # dtype float32: the normalisation and its output stay float32 even in bfloat16 runs.
  return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=jnp.float32, param_dtype=jnp.float32,
                      name=name)


# ----------------------------------------------------------------------------------------------
# Modules.
# ----------------------------------------------------------------------------------------------


def _small_lookup(table: nn.Embed, ids: jax.Array) -> jax.Array:
  """`table(ids)`; with the examples split over `fsdp`, as a one-hot matmul (the same values):
  the gather's gradient, a scatter-add, would gather every example's gradient on each device."""
  if sharding.auto_fsdp_size() == 1 or ids.shape[0] == 1:
    return table(ids)
  one_hot = jax.nn.one_hot(ids, table.num_embeddings, dtype=jnp.float32)  # [batch, seq, rows]
  return jnp.einsum("bsr,re->bse", one_hot, table.embedding, precision=jax.lax.Precision.HIGHEST)


class Embeddings(nn.Module):
  """Word, position and token-type tables, LayerNorm, and ELECTRA's project; tables are "emb" wide."""

  config: BertConfig

  def setup(self):
    cfg = self.config
    family = families.get(cfg.family)
    init = nn.initializers.normal(_INIT_STD)
    width = cfg.embedding_width
    # Lookups are float32: they feed augmentations (MixUp, FGSM) and the float32 LayerNorm.
    self.word_embeddings = nn.Embed(cfg.vocab_size, width, dtype=jnp.float32,
                                    param_dtype=jnp.float32, embedding_init=init)
    if cfg.position_biased_input:
      self.position_embeddings = nn.Embed(cfg.max_position_embeddings, width,
                                          dtype=jnp.float32, param_dtype=jnp.float32,
                                          embedding_init=init)
    if family.token_types != "none" and cfg.type_vocab_size:
      self.token_type_embeddings = nn.Embed(cfg.type_vocab_size, width, dtype=jnp.float32,
                                            param_dtype=jnp.float32, embedding_init=init)
    self.layer_norm = _layer_norm(cfg, "layer_norm")
    if width != cfg.hidden_size:  # float32: its output is the residual stream
      # ELECTRA projects after the LayerNorm, DeBERTa before it and without a bias.
      self.project = layers.Dense(cfg.hidden_size, dtype=jnp.float32,
                                  use_bias=not family.disentangled,
                                  kernel_init=nn.initializers.normal(_INIT_STD))
    self.dropout = Dropout(cfg.dropout_rate, cfg.dropout_bits, rng=cfg.dropout_rng)

  def words(self, input_ids: jax.Array) -> jax.Array:
    return self.word_embeddings(input_ids)  # [batch, seq, emb] f32

  def __call__(self, word_embeds: jax.Array, token_type_ids: jax.Array,
               deterministic: bool, attention_mask: Optional[jax.Array] = None) -> jax.Array:
    cfg = self.config
    family = families.get(cfg.family)
    seq_len = word_embeds.shape[1]
    if seq_len > cfg.max_seq_len:
      # Checked at trace time: an out-of-range position lookup would silently give garbage.
      raise UserError(f"sequence length {seq_len} exceeds the model's max_position_embeddings "
                      f"({cfg.max_position_embeddings}, {cfg.max_seq_len} usable positions)")
    x = word_embeds.astype(jnp.float32)  # [batch, seq, emb]
    if cfg.position_biased_input:
      x = x + _small_lookup(self.position_embeddings,
                            families.position_ids(family, seq_len, attention_mask, cfg.pad_token_id))
    if family.token_types == "used" and cfg.type_vocab_size:
      x = x + _small_lookup(self.token_type_embeddings, token_type_ids)  # [batch, seq, emb]
    elif family.token_types == "zero":  # one type: row 0 everywhere, whatever the ids say
      x = x + _small_lookup(self.token_type_embeddings, jnp.zeros_like(token_type_ids))
    projected = cfg.embedding_width != cfg.hidden_size
    if family.disentangled:  # DeBERTa: project, LayerNorm, then zero the padding
      x = self.layer_norm(self.project(x) if projected else x)
      x = x * attention_mask[..., None].astype(jnp.float32)
    else:
      x = self.layer_norm(x)
    x = self.dropout(x, deterministic=deterministic)  # [batch, seq, emb] f32
    return self.project(x) if projected and not family.disentangled else x


class SelfAttention(nn.Module):
  """Multi-head self-attention plus the output projection (no residual, no LayerNorm)."""

  config: BertConfig

  @nn.compact
  def __call__(self, x: jax.Array, bias: jax.Array, deterministic: bool,
               rel: Optional[jax.Array] = None, first_only: bool = False) -> jax.Array:
    """x [batch, seq, hidden] -> [batch, seq_q, hidden]; seq_q is 1 with `first_only` (the first
    token's query attends to every key), else seq. rel: DeBERTa's relative-embedding table
    [2 * span, hidden], else None."""
    cfg = self.config
    split = lambda t: t.reshape(*t.shape[:2], cfg.num_heads, cfg.head_dim)
    query, key = _dense(cfg, cfg.hidden_size, "query"), _dense(cfg, cfg.hidden_size, "key")
    q = split(query(x[:, :1] if first_only else x))  # [batch, seq_q, heads, head_dim]
    k = split(key(x))  # [batch, seq, heads, head_dim]
    v = split(_dense(cfg, cfg.hidden_size, "value")(x))
    with jax.named_scope("scores"):
      # Accumulate and normalise in float32 whatever the compute dtype.
      scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
      scores = scores / deberta.score_scale(cfg) + bias  # [batch, heads, seq_q, seq_k] f32
      if rel is not None:
        rel = Dropout(cfg.dropout_rate, cfg.dropout_bits, rng=cfg.dropout_rng)(rel, deterministic)
        own = {"key": key, "query": query}
        project = lambda which, t: (own[which] if cfg.share_att_key else
                                    _dense(cfg, cfg.hidden_size, f"pos_{which}"))(t)
        scores = scores + deberta.relative_scores(q, k, rel, cfg, project)
      probs = jax.nn.softmax(scores, axis=-1)
    masks = config_lib.choices("attention_dropout_mask")
    if cfg.attention_dropout_mask not in masks:
      raise UserError(f"attention dropout mask must be {' or '.join(masks)}, "
                      f"got {cfg.attention_dropout_mask!r}")
    shared = (0, 1) if cfg.attention_dropout_mask == "shared" else ()  # one [q, k] mask
    probs = Dropout(cfg.dropout_rate, cfg.dropout_bits, shared, cfg.dropout_rng)(probs, deterministic)  # [b,h,q,k]
    probs = probs.astype(cfg.compute_dtype)
    context = jnp.einsum("bhqk,bkhd->bqhd", probs, v)  # [batch, seq_q, heads, head_dim]
    context = context.reshape(*q.shape[:2], cfg.hidden_size)
    return _dense(cfg, cfg.hidden_size, "output")(context)  # [batch, seq_q, hidden]


class Layer(nn.Module):
  """One post-LayerNorm transformer block, as in BERT."""

  config: BertConfig

  def setup(self):
    cfg = self.config
    self.attention = SelfAttention(cfg)
    self.attention_layer_norm = _layer_norm(cfg, "attention_layer_norm")
    self.intermediate = _dense(cfg, cfg.intermediate_size, "intermediate")
    self.output = _dense(cfg, cfg.hidden_size, "output")
    self.output_layer_norm = _layer_norm(cfg, "output_layer_norm")
    # Named as the compact form named it: dropout keys derive from module paths.
    self.dropout = Dropout(cfg.dropout_rate, cfg.dropout_bits, rng=cfg.dropout_rng, name="Dropout_0")

  def __call__(self, x: jax.Array, bias: jax.Array, deterministic: bool,
               rel: Optional[jax.Array] = None, first_only: bool = False) -> jax.Array:
    """x: the float32 residual stream [batch, seq, hidden]; Dense casts it to the compute dtype.
    Returns [batch, seq, hidden], or the first token's [batch, 1, hidden] with `first_only`."""
    attn = self.attention(x, bias, deterministic, rel, first_only)
    x = x[:, :1] if first_only else x
    x = self.attention_layer_norm(x + self.dropout(attn, deterministic=deterministic))
    with jax.named_scope("ffn"):
      h = self.intermediate(x)  # [batch, seq or 1, intermediate]
      h = layers.gelu(h)  # HF BERT "gelu" is the exact erf form
      h = self.output(h)  # [batch, seq or 1, hidden]
    return self.output_layer_norm(x + self.dropout(h, deterministic=deterministic))


class Encoder(nn.Module):
  """The stack of `num_layers` blocks, named layer_0 ... layer_{n-1}."""

  config: BertConfig

  @nn.compact
  def __call__(self, x: jax.Array, bias: jax.Array, deterministic: bool,
               keep: jax.Array, first_token_only: bool = False) -> jax.Array:
    """x [batch, seq, hidden] embeddings; keep [batch, seq] f32, 1 on real tokens (for the
    DeBERTa convolution). Returns [batch, seq, hidden], or [batch, 1, hidden] when
    `first_token_only` and `prunes_last_layer(config)`: the last layer then runs its query,
    output projection and FFN on the first token only (the classifier's head reads nothing else)."""
    cfg = self.config
    # DeBERTa: one relative-embedding table [2 * span, hidden] for all layers.
    rel = deberta.relative_table(cfg, _layer_norm(cfg, "rel_layer_norm"), _INIT_STD)
    embeddings = x
    for i in range(cfg.num_layers):
      first_only = first_token_only and i == cfg.num_layers - 1 and prunes_last_layer(cfg)
      x = sharding.split_examples(Layer(cfg, name=f"layer_{i}")(x, bias, deterministic, rel,
                                                                first_only))
      if i == 0 and cfg.conv_kernel_size > 0:
        conv = deberta.conv(cfg, _INIT_STD)
        x = deberta.add_conv(embeddings, x, keep, conv, _layer_norm(cfg, "conv_layer_norm"),
                             Dropout(cfg.dropout_rate, cfg.dropout_bits, rng=cfg.dropout_rng),
                             families.HEAD_ACTIVATIONS[cfg.conv_act], deterministic)
    return x  # [batch, seq or 1, hidden] f32


def prunes_last_layer(config: BertConfig) -> bool:
  """Whether the logits' forward runs the last layer on the first token only (not for DeBERTa:
  its relative scores index query positions)."""
  return not families.get(config.family).disentangled


class BertClassifier(nn.Module):
  """Encoder + pooler (dense and activation on the first token) + linear classifier, for every
  family of `families` (BERT: tanh pooler). Logits are float32."""

  config: BertConfig

  def setup(self):
    cfg = self.config
    self.embeddings = Embeddings(cfg)
    self.encoder = Encoder(cfg)
    self.pooler = _dense(cfg, cfg.hidden_size, "pooler")
    # The classifier is tiny; float32 keeps the logits (and KD targets) precise.
    self.classifier = _dense(cfg, cfg.num_labels, "classifier", jnp.float32)
    self.dropout = Dropout(cfg.dropout_rate, cfg.dropout_bits, rng=cfg.dropout_rng)

  def embed(self, input_ids: jax.Array) -> jax.Array:
    """Word embeddings only (the table lookup): [batch, seq] -> [batch, seq, emb] f32."""
    return self.embeddings.words(input_ids)

  def encode(self, word_embeds: jax.Array, attention_mask: Optional[jax.Array],
             token_type_ids: Optional[jax.Array], *, deterministic: bool = True,
             first_token_only: bool = False) -> jax.Array:
    """Last hidden states [batch, seq, hidden] f32 from word embeddings [batch, seq, hidden];
    with `first_token_only`, at least the first token's ([batch, 1, hidden] where the last layer
    can skip the others, `prunes_last_layer`)."""
    batch, seq = word_embeds.shape[:2]
    if attention_mask is None:
      attention_mask = jnp.ones((batch, seq), jnp.int32)
    if token_type_ids is None:
      token_type_ids = jnp.zeros((batch, seq), jnp.int32)
    x = sharding.split_examples(self.embeddings(word_embeds, token_type_ids, deterministic,
                                                attention_mask))
    with jax.named_scope("mask_bias"):
      keep = attention_mask.astype(jnp.float32)
      bias = ((1.0 - keep) * _MASK_BIAS)[:, None, None, :]  # [batch, 1, 1, seq_k] f32
    return self.encoder(x, bias, deterministic, keep, first_token_only)

  def pool(self, hidden: jax.Array, *, deterministic: bool = True) -> jax.Array:
    """Pooled first-token output [batch, hidden] (before the classifier dropout)."""
    family = families.get(self.config.family)
    first = hidden[:, 0]  # [batch, hidden]
    if family.head_dropout_first:  # RoBERTa, ELECTRA; BERT's pooler has no dropout before it
      first = self.dropout(first, deterministic=deterministic)
    return families.HEAD_ACTIVATIONS[family.head_activation](self.pooler(first))

  def apply_embeddings(self, word_embeds: jax.Array, attention_mask: Optional[jax.Array],
                       token_type_ids: Optional[jax.Array], *,
                       deterministic: bool = True) -> jax.Array:
    """Logits [batch, num_labels] f32 from word embeddings [batch, seq, hidden]."""
    hidden = self.encode(word_embeds, attention_mask, token_type_ids, deterministic=deterministic,
                         first_token_only=True)  # [batch, 1 or seq, hidden]
    pooled = self.pool(hidden, deterministic=deterministic)
    pooled = self.dropout(pooled, deterministic=deterministic)  # [batch, hidden]
    return self.classifier(pooled).astype(jnp.float32)  # [batch, num_labels]

  def __call__(self, input_ids: jax.Array, attention_mask: Optional[jax.Array],
               token_type_ids: Optional[jax.Array], *, deterministic: bool = True) -> jax.Array:
    """Logits [batch, num_labels] f32 from token ids [batch, seq]."""
    return self.apply_embeddings(self.embed(input_ids), attention_mask, token_type_ids,
                                 deterministic=deterministic)


# ----------------------------------------------------------------------------------------------
# Parameters.
# ----------------------------------------------------------------------------------------------


def word_embedding_table(params: Params) -> jax.Array:
  """The [vocab, hidden] word-embedding table of a params dict (the dict under "params")."""
  return params["embeddings"]["word_embeddings"]["embedding"]


def _init_inputs(config: BertConfig) -> tuple[jax.Array, jax.Array, jax.Array]:
  seq = min(8, config.max_position_embeddings)
  ids = jnp.zeros((1, seq), jnp.int32)
  return ids, jnp.ones_like(ids), jnp.zeros_like(ids)


def param_shapes(config: BertConfig) -> Params:
  """The params tree of `config` as ShapeDtypeStructs, without allocating anything."""
  # Through __call__, so every method's parameters exist.
  variables = jax.eval_shape(BertClassifier(config).init, jax.random.PRNGKey(0),
                             *_init_inputs(config))
  return plain_dict(variables["params"])


def _seed_words(rng: jax.Array) -> list[int]:
  if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.key_data(rng)
  return [int(w) for w in np.asarray(rng).ravel()]


def _init_leaf(keys: tuple[str, ...], shape: tuple[int, ...], seed: list[int]) -> jax.Array:
  """BERT init of one parameter; each leaf's stream depends only on the seed and its path."""
  if keys[-1] in ("kernel", "embedding"):
    path_id = zlib.crc32("/".join(keys).encode())
    gen = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(path_id,)))
    return jnp.asarray(_INIT_STD * gen.standard_normal(shape, dtype=np.float32))
  fill = np.ones if keys[-1] == "scale" else np.zeros
  return jnp.asarray(fill(shape, np.float32))


def init_tree(shapes: Params, rng: jax.Array) -> Params:
  """BERT init of a (sub)tree of ShapeDtypeStructs; a leaf's values depend on its path, not on
  which other leaves are in the tree, so a subtree gets the values the whole model would."""
  seed = _seed_words(rng)
  return jax.tree_util.tree_map_with_path(
      lambda path, spec: _init_leaf(tuple(k.key for k in path), spec.shape, seed), shapes)


def init_params(config: BertConfig, rng: jax.Array) -> Params:
  """Random BERT init: normal(0.02) kernels and tables, zero biases, unit LayerNorm scales.

  Same distributions as the modules' own initializers, but drawn with numpy from `rng` (a
  concrete key): jitting Flax's init costs seconds of XLA compile per model shape on CPU.
  """
  return init_tree(param_shapes(config), rng)


def init_classifier(config: BertConfig, rng: jax.Array) -> Params:
  shapes = {"classifier": {
      "kernel": jax.ShapeDtypeStruct((config.hidden_size, config.num_labels), jnp.float32),
      "bias": jax.ShapeDtypeStruct((config.num_labels,), jnp.float32)}}
  return init_tree(shapes, rng)["classifier"]


def plain_dict(tree: Any) -> Any:
  """Plain nested dicts (FrozenDict or dict in, dict out)."""
  if hasattr(tree, "items"):
    return {k: plain_dict(v) for k, v in tree.items()}
  return tree


def count_params(params: Params) -> int:
  """Total number of scalars in a params tree."""
  return sum(math.prod(getattr(x, "shape", np.shape(x))) for x in jax.tree_util.tree_leaves(params))
