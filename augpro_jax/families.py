"""Model families: what a RoBERTa, DistilBERT, ELECTRA or DeBERTa-v2 classifier does differently
from BERT.

One encoder (`model.BertClassifier`) serves every family; a `Family` spec names the parts that
differ, and `hf_io` reads and writes each family's Hugging Face names through `hf_name`. The
parameter tree keeps BERT's names for every family; the head is always `pooler` (the dense layer
on the first token) then `classifier` (the output layer):

  family       positions                  token types   head on the first token
  bert         0, 1, 2, ...               2 (used)      dense, tanh, dropout, classifier
  roberta      pad_id + 1 + #real so far  1 (always 0)  dropout, dense, tanh, dropout, out_proj
  electra      0, 1, 2, ...               2 (used)      dropout, dense, gelu, dropout, out_proj
  distilbert   0, 1, 2, ...               none          dense, relu, dropout, classifier
  deberta-v2   optional (relative attn)   0 or more     dropout, dense, gelu, dropout, classifier

ELECTRA's embeddings may be narrower than the encoder (`embedding_size`): the word, position and
type tables and their LayerNorm are `embedding_size` wide and `embeddings/project` maps them to
`hidden_size`. The word-embedding split (`embed`, then `apply_embeddings`) is before the project,
so augmentations mix and project in the table's own space.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

from augpro_jax import layers
from augpro_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Family:
  """The parts of one Hugging Face model family that differ from BERT."""

  model_type: str  # config.json "model_type"
  hf_class: str  # the ...ForSequenceClassification architecture
  prefix: str  # the backbone's prefix in a classifier's state dict
  token_types: str  # "used", "zero" (a 1-row table, ids ignored) or "none" (no table)
  offset_positions: bool = False  # RoBERTa: position ids count real tokens after pad_token_id
  head_activation: str = "tanh"  # on the head's dense layer: tanh, gelu or relu
  head_dropout_first: bool = False  # dropout on the first token before the head's dense layer
  pooler_in_head: bool = True  # the dense layer is the head's (fresh for a backbone), not BERT's
  head_names: tuple[str, str] = ("classifier.dense", "classifier.out_proj")  # dense, output
  disentangled: bool = False  # DeBERTa-v2: relative attention (`deberta`), its own embeddings
  tokenizer_class: str = "BertTokenizer"
  special_tokens: tuple[tuple[str, str], ...] = (
      ("unk_token", "[UNK]"), ("sep_token", "[SEP]"), ("pad_token", "[PAD]"),
      ("cls_token", "[CLS]"), ("mask_token", "[MASK]"))


_ROBERTA_TOKENS = (("bos_token", "<s>"), ("eos_token", "</s>"), ("unk_token", "<unk>"),
                   ("sep_token", "</s>"), ("pad_token", "<pad>"), ("cls_token", "<s>"),
                   ("mask_token", "<mask>"))

FAMILIES = {f.model_type: f for f in (
    Family("bert", "BertForSequenceClassification", "bert", "used", pooler_in_head=False,
           head_names=("pooler.dense", "classifier")),
    Family("roberta", "RobertaForSequenceClassification", "roberta", "zero",
           offset_positions=True, head_dropout_first=True, tokenizer_class="RobertaTokenizer",
           special_tokens=_ROBERTA_TOKENS),
    Family("xlm-roberta", "XLMRobertaForSequenceClassification", "roberta", "zero",
           offset_positions=True, head_dropout_first=True,
           tokenizer_class="XLMRobertaTokenizer", special_tokens=_ROBERTA_TOKENS),
    Family("electra", "ElectraForSequenceClassification", "electra", "used",
           head_activation="gelu", head_dropout_first=True, tokenizer_class="ElectraTokenizer"),
    Family("deberta-v2", "DebertaV2ForSequenceClassification", "deberta", "used",
           head_activation="gelu", head_dropout_first=True, disentangled=True,
           head_names=("pooler.dense", "classifier"), tokenizer_class="DebertaV2Tokenizer"),
    Family("distilbert", "DistilBertForSequenceClassification", "distilbert", "none",
           head_activation="relu", head_names=("pre_classifier", "classifier"),
           tokenizer_class="DistilBertTokenizer"),
)}

HEAD_ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "gelu": layers.gelu}  # HF "gelu": exact

# Configs of models that are not encoders (decoders, seq2seq): named in their own error.
_NOT_ENCODER_KEYS = ("is_decoder", "is_encoder_decoder")
_NOT_ENCODER_ARCHS = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration", "ForSeq2SeqLM")


def get(model_type: str) -> Family:
  """The family of a config.json `model_type`; UserError naming the supported ones."""
  if model_type not in FAMILIES:
    raise UserError(f"model_type {model_type!r} is not supported; supported: "
                    f"{', '.join(FAMILIES)}")
  return FAMILIES[model_type]


def check_encoder(raw: dict, path: object) -> None:
  """UserError when a config.json describes a decoder or an encoder-decoder model."""
  archs = [str(a) for a in raw.get("architectures") or []]
  kind = None
  if raw.get("is_encoder_decoder") or any(a.endswith("ForConditionalGeneration") for a in archs):
    kind = "an encoder-decoder (seq2seq) model"
  elif raw.get("is_decoder") or any(a.endswith(_NOT_ENCODER_ARCHS) for a in archs):
    kind = "a decoder (causal language) model"
  if kind:
    raise UserError(f"{path} is {kind} (model_type {raw.get('model_type')!r}); augpro-jax distils "
                    f"encoder classifiers: {', '.join(FAMILIES)}")


def usable_positions(family: Family, max_position_embeddings: int, pad_token_id: int) -> int:
  """The longest sequence the position table covers (RoBERTa's starts after pad_token_id)."""
  if family.offset_positions:
    return max_position_embeddings - pad_token_id - 1
  return max_position_embeddings


def position_ids(family: Family, seq_len: int, attention_mask: Optional[jax.Array],
                 pad_token_id: int) -> jax.Array:
  """Position ids [1, seq] (0, 1, 2, ...) or, for RoBERTa, [batch, seq]: real tokens numbered
  from pad_token_id + 1, padding at pad_token_id. The mask stands for `input_ids != pad`, which
  word embeddings alone cannot tell."""
  if not family.offset_positions:
    return jnp.arange(seq_len)[None, :]
  real = attention_mask.astype(jnp.int32)  # [batch, seq]
  return jnp.cumsum(real, axis=1) * real + pad_token_id


# ----------------------------------------------------------------------------------------------
# Hugging Face names.
# ----------------------------------------------------------------------------------------------

# A block's modules: our path -> its name in BERT (and RoBERTa, ELECTRA, DeBERTa), in DistilBERT.
_LAYER_NAMES = (
    (("attention", "query"), "attention.self.query", "attention.q_lin"),
    (("attention", "key"), "attention.self.key", "attention.k_lin"),
    (("attention", "value"), "attention.self.value", "attention.v_lin"),
    (("attention", "output"), "attention.output.dense", "attention.out_lin"),
    (("attention_layer_norm",), "attention.output.LayerNorm", "sa_layer_norm"),
    (("intermediate",), "intermediate.dense", "ffn.lin1"),
    (("output",), "output.dense", "ffn.lin2"),
    (("output_layer_norm",), "output.LayerNorm", "output_layer_norm"))
_BERT_LAYER = {ours: bert for ours, bert, _ in _LAYER_NAMES}
_DISTILBERT_LAYER = {ours: distilbert for ours, _, distilbert in _LAYER_NAMES}
_EMBEDDINGS = {"word_embeddings": "embeddings.word_embeddings",
               "position_embeddings": "embeddings.position_embeddings",
               "token_type_embeddings": "embeddings.token_type_embeddings",
               "layer_norm": "embeddings.LayerNorm", "project": "embeddings_project"}
# DeBERTa-v2's attention: its projections are "..._proj", with two for the relative positions.
_DEBERTA_LAYER = {("attention", "query"): "attention.self.query_proj",
                  ("attention", "key"): "attention.self.key_proj",
                  ("attention", "value"): "attention.self.value_proj",
                  ("attention", "pos_key"): "attention.self.pos_key_proj",
                  ("attention", "pos_query"): "attention.self.pos_query_proj"}
_DEBERTA_ENCODER = {"rel_embeddings": "encoder.rel_embeddings", "rel_layer_norm": "encoder.LayerNorm",
                    "conv": "encoder.conv.conv", "conv_layer_norm": "encoder.conv.LayerNorm"}
# "gamma"/"beta" are the LayerNorm names of old (TF-converted) checkpoints.
_SUFFIXES = {"kernel": ("weight",), "embedding": ("weight",), "scale": ("weight", "gamma"),
             "bias": ("bias", "beta")}


def hf_name(family: Family, path: tuple[str, ...]) -> tuple[str, Optional[str], tuple[str, ...],
                                                            bool]:
  """Our param path -> (HF module name, its optional prefix, accepted param suffixes, transpose?).

  The prefix (e.g. "roberta") is None for the head's modules, which are never prefixed; a
  backbone saved on its own (`BertModel`) has no prefix either, so readers try both.
  """
  *module, leaf = path
  prefix: Optional[str] = family.prefix
  if module[0] == "embeddings":
    base = _EMBEDDINGS[module[1]]
    if family.disentangled and module[1] == "project":
      base = "embeddings.embed_proj"
  elif module[0] == "encoder" and module[1] in _DEBERTA_ENCODER:
    base = _DEBERTA_ENCODER[module[1]]
  elif module[0] == "encoder":
    index = module[1].split("_")[1]
    if family.model_type == "distilbert":
      base = f"transformer.layer.{index}.{_DISTILBERT_LAYER[tuple(module[2:])]}"
    else:
      names = {**_BERT_LAYER, **_DEBERTA_LAYER} if family.disentangled else _BERT_LAYER
      base = f"encoder.layer.{index}.{names[tuple(module[2:])]}"
  else:
    dense, output = family.head_names
    base = dense if module[0] == "pooler" else output
    if module[0] == "classifier" or family.pooler_in_head:
      prefix = None
  return base, prefix, _SUFFIXES[leaf], leaf == "kernel"


# ----------------------------------------------------------------------------------------------
# config.json fields.
# ----------------------------------------------------------------------------------------------

# Our BertConfig field <- the family's config.json key (DistilBERT names its own).
_DISTILBERT_KEYS = {"hidden_size": "dim", "num_layers": "n_layers", "num_heads": "n_heads",
                    "intermediate_size": "hidden_dim"}
_BERT_KEYS = {"hidden_size": "hidden_size", "num_layers": "num_hidden_layers",
              "num_heads": "num_attention_heads", "intermediate_size": "intermediate_size"}


def config_keys(family: Family) -> dict[str, str]:
  """Our shape fields -> the config.json keys that hold them in `family`."""
  keys = _DISTILBERT_KEYS if family.model_type == "distilbert" else _BERT_KEYS
  return {"vocab_size": "vocab_size", **keys}


def activation(family: Family, raw: dict) -> str:
  """The encoder's activation named in a config.json (only the exact gelu is implemented)."""
  return str(raw.get("activation" if family.model_type == "distilbert" else "hidden_act", "gelu"))


def extra_fields(family: Family, raw: dict) -> dict:
  """Family-specific BertConfig fields from a config.json."""
  if family.model_type == "distilbert":
    return {"type_vocab_size": 1, "layer_norm_eps": 1e-12}
  fields = {"type_vocab_size": int(raw.get("type_vocab_size", 2)),
            "layer_norm_eps": float(raw.get("layer_norm_eps", 1e-12))}
  if family.model_type == "electra":  # transformers' ElectraConfig default is 128
    width = int(raw.get("embedding_size", 128))
    fields["embedding_size"] = 0 if width == int(raw["hidden_size"]) else width
  if family.disentangled:
    fields.update(_deberta_fields(raw))
  return fields


def _deberta_fields(raw: dict) -> dict:
  """DeBERTa-v2's fields, with transformers' defaults; what we do not implement is refused."""
  hidden = int(raw["hidden_size"])
  for key, ok, what in (("pooler_hidden_size", hidden, "a pooler of another width"),
                        ("pooler_hidden_act", "gelu", "a pooler activation other than gelu"),
                        ("attention_head_size", hidden // int(raw["num_attention_heads"]),
                         "another attention_head_size")):
    if raw.get(key, ok) != ok:
      raise UserError(f"{key}={raw[key]!r}: DeBERTa with {what} is not supported")
  types = raw.get("pos_att_type") or []
  types = types.lower().split("|") if isinstance(types, str) else [str(t) for t in types]
  width = int(raw.get("embedding_size") or hidden)
  relative = bool(raw.get("relative_attention", False))
  max_rel = int(raw.get("max_relative_positions", -1))
  return {"type_vocab_size": int(raw.get("type_vocab_size", 0)),
          "layer_norm_eps": float(raw.get("layer_norm_eps", 1e-7)),
          "embedding_size": 0 if width == hidden else width,
          "max_relative_positions": (max_rel if max_rel > 0 else
                                     int(raw.get("max_position_embeddings", 512))) if relative else 0,
          "position_buckets": int(raw.get("position_buckets", -1)) if relative else 0,
          "pos_att_type": "|".join(t.strip() for t in types if t.strip() in ("c2p", "p2c")),
          "share_att_key": bool(raw.get("share_att_key", False)),
          "norm_rel_ebd": "layer_norm" in str(raw.get("norm_rel_ebd", "none")).lower(),
          "position_biased_input": bool(raw.get("position_biased_input", True)),
          **_conv_fields(raw, hidden)}


def _conv_fields(raw: dict, hidden: int) -> dict:
  """The convolution of DeBERTa-v2 xlarge/xxlarge (`conv_kernel_size` > 0), transformers'
  defaults (groups 1, tanh) where config.json is silent."""
  kernel = int(raw.get("conv_kernel_size", 0) or 0)
  if kernel <= 0:
    return {}
  groups, act = int(raw.get("conv_groups", 1)), str(raw.get("conv_act", "tanh"))
  if kernel % 2 == 0:  # transformers' padding keeps the length only for odd kernels
    raise UserError(f"conv_kernel_size={kernel}: DeBERTa's convolution needs an odd kernel")
  if groups <= 0 or hidden % groups:
    raise UserError(f"conv_groups={groups} does not divide hidden_size={hidden}")
  if act not in HEAD_ACTIVATIONS:
    raise UserError(f"conv_act={act!r} is not supported; choose one of: "
                    f"{', '.join(HEAD_ACTIVATIONS)}")
  return {"conv_kernel_size": kernel, "conv_groups": groups, "conv_act": act}


def hf_config_fields(family: Family, config) -> dict:
  """The family-specific part of an exported config.json for a `model.BertConfig`."""
  if family.model_type == "distilbert":
    return {"dim": config.hidden_size, "n_layers": config.num_layers,
            "n_heads": config.num_heads, "hidden_dim": config.intermediate_size,
            "activation": "gelu", "dropout": config.dropout_rate,
            "attention_dropout": config.dropout_rate,
            "seq_classif_dropout": config.dropout_rate, "sinusoidal_pos_embds": False,
            "qa_dropout": config.dropout_rate}
  fields = {"hidden_size": config.hidden_size, "num_hidden_layers": config.num_layers,
            "num_attention_heads": config.num_heads,
            "intermediate_size": config.intermediate_size, "hidden_act": "gelu",
            "hidden_dropout_prob": config.dropout_rate,
            "attention_probs_dropout_prob": config.dropout_rate,
            "type_vocab_size": config.type_vocab_size, "layer_norm_eps": config.layer_norm_eps,
            "position_embedding_type": "absolute", "classifier_dropout": None}
  if family.model_type == "electra":
    fields["embedding_size"] = config.embedding_width
  if family.disentangled:
    relative = config.max_relative_positions > 0
    fields.update({"embedding_size": config.embedding_width, "relative_attention": relative,
                   "max_relative_positions": config.max_relative_positions if relative else -1,
                   "position_buckets": config.position_buckets if relative else -1,
                   "pos_att_type": config.pos_att_type.split("|") if config.pos_att_type else [],
                   "share_att_key": config.share_att_key,
                   "norm_rel_ebd": "layer_norm" if config.norm_rel_ebd else "none",
                   "position_biased_input": config.position_biased_input,
                   "pooler_hidden_size": config.hidden_size, "pooler_hidden_act": "gelu",
                   "pooler_dropout": config.dropout_rate})
    if config.conv_kernel_size:
      fields.update({"conv_kernel_size": config.conv_kernel_size,
                     "conv_groups": config.conv_groups, "conv_act": config.conv_act})
  return fields
