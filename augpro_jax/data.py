"""Loading examples: GLUE directories, TFDS, or custom TSV/CSV/JSONL files, behind one interface.

`resolve_task(cfg)` gives the task spec, `load_split(cfg, task, split)` the examples of one split
as `Examples` (texts + label ids). Label ids always index `task.label_names`, whatever the source.

Every problem with the user's data is a `UserError` with one line naming the file (and line
number where there is one); nothing here prints a traceback for bad input. Long texts are not an
error: the tokenizer truncates them later and reports how many.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from typing import Any, Optional, Sequence

import numpy as np
from absl import logging

from augpro_jax import labels as labels_lib
from augpro_jax import tables
from augpro_jax import tasks as tasks_lib
from augpro_jax.config import Config
from augpro_jax.errors import UserError
from augpro_jax.errors import one_line
from augpro_jax.tasks import TaskSpec

# Seed of the --dev_from_train hold-out. Fixed and independent of --seed so that runs with
# different seeds are evaluated on the same held-out examples.
DEV_FROM_TRAIN_SEED = 20_230_101

# Files without a header row: their column names, in order. CoLA's columns are source code,
# label, original author mark, sentence.
_HEADERLESS = {"CoLA": ("source", "label", "author_label", "sentence")}

# TFDS `glue/*` feature names of the text inputs, in the order of `TaskSpec.text_fields`.
_TFDS_TEXT_FIELDS = {
    "cola": ("sentence",),
    "sst2": ("sentence",),
    "mrpc": ("sentence1", "sentence2"),
    "stsb": ("sentence1", "sentence2"),
    "rte": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"),
    "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"),
}
_TFDS_SPLITS = {"train": "train", "dev": "validation", "dev_matched": "validation_matched",
                "dev_mismatched": "validation_mismatched"}

_CUSTOM_FORMATS = (".tsv", ".csv", ".jsonl")

@dataclasses.dataclass
class Examples:
  """One split: `texts[i]` is a tuple of 1 or 2 strings, `labels[i]` its class id or score."""

  texts: list[tuple[str, ...]]
  labels: np.ndarray  # int32 ids into task.label_names, or float32 scores for regression

  def __len__(self) -> int:
    return len(self.texts)

  def select(self, indices: Sequence[int] | np.ndarray) -> "Examples":
    """The examples at `indices`, in that order."""
    indices = np.asarray(indices, np.int64)
    return Examples([self.texts[i] for i in indices], self.labels[indices])


# ----------------------------------------------------------------------------------------------
# Public API.
# ----------------------------------------------------------------------------------------------


def resolve_task(cfg: Config) -> TaskSpec:
  """The task spec of a run.

  Without --train_file: the GLUE task named by --task. With it and a GLUE task name: that task's
  labels and metrics, read from the custom file's --text_fields / --label_field columns. With
  --task=custom: a spec built from the train file (regression when --label_type=regression, or
  'auto' and every label is a number and not all are integers; else classification over
  --label_names, or the distinct train labels with numbers compared as numbers: see labels.py).
  """
  if cfg.train_file is None:
    if cfg.task == "custom":
      raise UserError("--task=custom needs --train_file, --eval_file, --text_fields and "
                      "--label_field")
    task = tasks_lib.get_task(cfg.task)
    if cfg.eval_file is None:
      return task
    # --mode=eval on one labelled file: the task's columns unless told otherwise, one dev split.
    return dataclasses.replace(task, text_fields=check_text_fields(cfg.text_fields or
                                                                   task.text_fields),
                               label_field=cfg.label_field or task.label_field, dev_splits=("dev",))
  text_fields = check_text_fields(cfg.text_fields)
  if not cfg.label_field:
    raise UserError("--label_field is required with --train_file (e.g. --label_field=label)")
  if cfg.task != "custom":
    return dataclasses.replace(tasks_lib.get_task(cfg.task), text_fields=text_fields,
                               label_field=cfg.label_field)

  table = _read_custom(cfg.train_file, "--train_file", text_fields, cfg.label_field)
  numbers = [labels_lib.as_number(label) for label in table.labels]
  all_numbers = all(v is not None for v in numbers)
  if cfg.label_type == "regression" or (
      cfg.label_type == "auto" and not cfg.label_names and all_numbers and
      not all(v.is_integer() for v in numbers)):
    return tasks_lib.TaskSpec("custom", None, None, text_fields, cfg.label_field, None, ("dev",),
                              "pearson")
  names = labels_lib.class_names(table.labels, cfg.label_names,
                                 where=f"{cfg.train_file}: column {cfg.label_field!r}: ")
  return tasks_lib.TaskSpec("custom", None, None, text_fields, cfg.label_field, names, ("dev",),
                            "accuracy")


def check_text_fields(text_fields: Sequence[str]) -> tuple[str, ...]:
  """--text_fields as a tuple of 1 or 2 column names."""
  text_fields = tuple(text_fields)
  if not 1 <= len(text_fields) <= 2:
    raise UserError(f"--text_fields takes 1 or 2 column names, got {len(text_fields)}: "
                    f"{','.join(text_fields)}")
  return text_fields


def read_texts(path: str, flag: str, text_fields: Sequence[str], id_field: Optional[str] = None
               ) -> tuple[list[tuple[str, ...]], Optional[list[str]]]:
  """The texts of an unlabelled .tsv/.csv/.jsonl file in file order, and its `id_field` column.

  Checked like training files (header, field counts, empty text), with line numbers.
  """
  table = _read_custom(path, flag, check_text_fields(text_fields), id_field)
  return list(table.texts), (list(table.labels) if id_field else None)


def label_warnings(cfg: Config, task: TaskSpec) -> list[str]:
  """Warnings about the training labels of a custom file (classes differing only in case, rare
  classes); none for GLUE files, whose labels are fixed and checked."""
  if cfg.train_file is None or task.is_regression:
    return []
  table = _read_custom(cfg.train_file, "--train_file", task.text_fields, task.label_field)
  return [f"{cfg.train_file}: {text}" for text in
          labels_lib.warnings_for(table.labels, task.label_names)]


def glue_dir_from(cfg: Config) -> pathlib.Path:
  """The GLUE data directory: --glue_dir, else $GLUE_DIR. It must exist."""
  if cfg.glue_dir:
    path, origin = pathlib.Path(cfg.glue_dir), "--glue_dir"
  elif os.environ.get("GLUE_DIR"):
    path, origin = pathlib.Path(os.environ["GLUE_DIR"]), "$GLUE_DIR"
  else:
    raise UserError("no GLUE data: pass --glue_dir or set GLUE_DIR to a glue_data directory "
                    "(one folder per task, e.g. SST-2/train.tsv), or use --data_source=tfds")
  if not path.exists():
    raise UserError(f"{origin} {path} does not exist")
  if not path.is_dir():
    raise UserError(f"{origin} {path} is not a directory")
  return path


def load_split(cfg: Config, task: TaskSpec, split: str) -> Examples:
  """Examples of `split` ('train' or one of `task.dev_splits`) with the size options applied.

  'train' is reduced by --dev_from_train (held-out examples removed) and then by --train_size
  (a random subset seeded by --seed, in file order). Dev splits are the held-out examples when
  --dev_from_train is set, and are cut to their first --eval_size examples. 'dev' is accepted as
  the first dev split (MNLI: dev_matched).
  """
  if split == "dev" and split not in task.dev_splits:
    split = task.dev_splits[0]
  if split != "train" and split not in task.dev_splits:
    raise ValueError(f"unknown split {split!r} for task {task.name}: use 'train' or one of "
                     f"{task.dev_splits}")
  if split == "train":
    examples = _read_split(cfg, task, "train")
    if cfg.dev_from_train:
      examples = examples.select(_hold_out(len(examples), cfg)[0])
    if cfg.train_size is not None and cfg.train_size < len(examples):
      # A permutation prefix: for one seed, smaller subsets are contained in larger ones.
      rng = np.random.default_rng(cfg.seed)
      examples = examples.select(np.sort(rng.permutation(len(examples))[:cfg.train_size]))
    elif cfg.train_size is not None:
      logging.info("--train_size=%d >= %d training examples: using all of them", cfg.train_size,
                   len(examples))
    return examples
  if cfg.dev_from_train:
    train = _read_split(cfg, task, "train")
    examples = train.select(_hold_out(len(train), cfg)[1])
  else:
    examples = _read_split(cfg, task, split)
  if cfg.eval_size is not None and cfg.eval_size < len(examples):
    examples = examples.select(np.arange(cfg.eval_size))
  return examples


# ----------------------------------------------------------------------------------------------
# Dispatch and subsets.
# ----------------------------------------------------------------------------------------------


def _read_split(cfg: Config, task: TaskSpec, split: str) -> Examples:
  """The full split from its source, before any size option."""
  if cfg.train_file is not None:
    if split == "train":
      path, flag = cfg.train_file, "--train_file"
    elif cfg.eval_file is not None:
      path, flag = cfg.eval_file, "--eval_file"
    else:
      raise UserError("--eval_file is required with --train_file (or pass --dev_from_train=N)")
    table = _read_custom(path, flag, task.text_fields, task.label_field)
    return _to_examples(table, task)
  if cfg.eval_file is not None and split != "train":
    return _to_examples(_read_custom(cfg.eval_file, "--eval_file", task.text_fields,
                                     task.label_field), task)
  if cfg.data_source == "tfds":
    # Downloading is allowed here: the user asked for TFDS explicitly.
    return _read_tfds(task, split, cfg.tfds_data_dir, download=True)
  return _read_glue(glue_dir_from(cfg), task, split)


def _hold_out(n: int, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
  """(kept, held-out) train indices for --dev_from_train, both in file order."""
  k = cfg.dev_from_train
  if k < 0:
    raise UserError(f"--dev_from_train must be >= 0, got {k}")
  if k >= n:
    raise UserError(f"--dev_from_train={k} must be smaller than the number of training examples "
                    f"({n})")
  perm = np.random.default_rng(DEV_FROM_TRAIN_SEED).permutation(n)
  return np.sort(perm[k:]), np.sort(perm[:k])


# ----------------------------------------------------------------------------------------------
# GLUE and custom files.
# ----------------------------------------------------------------------------------------------


def _read_glue(root: pathlib.Path, task: TaskSpec, split: str) -> Examples:
  if task.glue_name is None:
    raise UserError(f"task {task.name} has no GLUE folder: use --train_file/--eval_file")
  folder = root / task.glue_name
  path = folder / f"{split}.tsv"
  if not folder.is_dir():
    raise UserError(f"no {task.glue_name}/ folder in the GLUE dir {root}: --task={task.name} "
                    f"reads {task.glue_name}/{split}.tsv")
  if split == "train":
    missing = (f"GLUE file {path} not found: --task={task.name} expects "
               f"{task.glue_name}/train.tsv in the GLUE dir")
  else:
    missing = (f"GLUE file {path} not found: no {task.glue_name} {split} set; pass "
               f"--dev_from_train=N to hold out N train examples as a (non-official) dev set")
  table = tables.load_table(path, missing, "\t", _HEADERLESS.get(task.glue_name), task.text_fields,
                      task.label_field)
  return _to_examples(table, task)


def _read_custom(path: str, flag: str, text_fields: tuple[str, ...],
                 label_field: Optional[str]) -> tables.Table:
  suffix = pathlib.Path(path).suffix.lower()
  if suffix not in _CUSTOM_FORMATS:
    raise UserError(f"{flag} {path}: unsupported file type {suffix or '(no extension)'!r}; "
                    f"use {', '.join(_CUSTOM_FORMATS)}")
  delimiter = {".tsv": "\t", ".csv": ","}.get(suffix)  # None: JSONL
  return tables.load_table(pathlib.Path(path), f"{flag} {path} does not exist", delimiter, None,
                     tuple(text_fields), label_field)


def _to_examples(table: tables.Table, task: TaskSpec) -> Examples:
  """Label strings to ids (or scores), each checked against the task."""
  if task.is_regression:
    scores = np.empty(len(table.labels), np.float32)
    for i, label in enumerate(table.labels):
      value = labels_lib.as_number(label)
      if value is None or not math.isfinite(value):
        raise UserError(f"{table.path} line {table.lines[i]}: label {tables.short(label)} in column "
                        f"{task.label_field!r} is not a finite number (task {task.name} is "
                        "regression)")
      scores[i] = value
    return Examples(list(table.texts), scores)
  out = labels_lib.to_ids(table.labels, task.label_names)
  bad = np.flatnonzero(out < 0)
  if bad.size:
    i = int(bad[0])
    known = (f"the labels of task {task.name}" if task.name != "custom" else
             "the classes (the training labels, or --label_names)")
    raise UserError(f"{table.path} line {table.lines[i]}: label {tables.short(table.labels[i])} in "
                    f"column {task.label_field!r} is not one of {known}: "
                    f"{', '.join(task.label_names)}")
  return Examples(list(table.texts), out)


# ----------------------------------------------------------------------------------------------
# TFDS.
# ----------------------------------------------------------------------------------------------


def _read_tfds(task: TaskSpec, split: str, data_dir: Optional[str], download: bool) -> Examples:
  """One split of `task.tfds_name` through `tfds.data_source` (random access, no TensorFlow)."""
  if task.tfds_name is None or task.name not in _TFDS_TEXT_FIELDS:
    raise UserError(f"task {task.name} is not in TFDS: use --data_source=glue_dir or custom files")
  tfds_split = _TFDS_SPLITS[split]
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    # tfds imports its dataset modules lazily; `glue` must be imported to be registered.
    import tensorflow_datasets.text.glue  # pylint: disable=g-import-not-at-top,unused-import
    from tensorflow_datasets.proto import tf_example_pb2  # pylint: disable=g-import-not-at-top
  except ImportError as exc:
    raise UserError(f"--data_source=tfds needs the tensorflow-datasets package ({exc})") from None
  where = f"TFDS {task.tfds_name} split {tfds_split!r}"
  try:
    # Raw records, parsed below: tfds' per-record numpy decoding is ~6x slower than the read.
    source = tfds.data_source(task.tfds_name, split=tfds_split, data_dir=data_dir,
                              download=download,
                              deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
    records = _all_records(source)
  except ImportError as exc:
    # Downloading and preparing (not reading) needs extra packages, e.g. importlib_resources.
    raise UserError(f"{where} is not prepared in {data_dir or 'the default TFDS data dir'}, and "
                    f"preparing it needs a missing Python package: "
                    f"{exc.name or one_line(exc)}") from None
  except Exception as exc:  # pylint: disable=broad-except
    # tfds reports missing data with many exception types (not prepared, download failure,
    # unsupported file format...); all mean "this data is not available here".
    raise UserError(f"{where} could not be loaded from "
                    f"{data_dir or '--tfds_data_dir (default ~/tensorflow_datasets)'}: "
                    f"{type(exc).__name__}: {one_line(exc, 200)}") from None
  if not records:
    raise UserError(f"{where} is empty")
  fields = _TFDS_TEXT_FIELDS[task.name]
  texts, labels = [], []
  for i, record in enumerate(records):
    try:
      features = tf_example_pb2.Example.FromString(record).features.feature
      # Blank texts are kept (unlike in files): TFDS data cannot be fixed by the user, and the
      # tokenizer encodes an empty string as just [CLS] [SEP].
      texts.append(tuple(features[name].bytes_list.value[0].decode("utf-8") for name in fields))
      label = features["label"]
      labels.append(label.float_list.value[0] if task.is_regression else
                    label.int64_list.value[0])
    except Exception as exc:  # pylint: disable=broad-except
      # Protobuf, UTF-8 and missing-feature errors all mean the prepared files do not match
      # the glue features this reader expects.
      raise UserError(f"{where} example {i}: unexpected record ({type(exc).__name__}: "
                      f"{one_line(exc, 100)}); re-prepare it with this tfds version") from None
  if task.is_regression:
    return Examples(texts, np.asarray(labels, np.float32))
  ids = np.asarray(labels, np.int32)
  bad = np.flatnonzero((ids < 0) | (ids >= task.num_labels))
  if bad.size:
    raise UserError(f"{where} example {int(bad[0])}: label {int(ids[bad[0]])} is outside "
                    f"0..{task.num_labels - 1} (an unlabelled split?)")
  return Examples(texts, ids)


def _all_records(source: Sequence[Any]) -> list[Any]:
  """Every record of a TFDS data source, in order."""
  keys = list(range(len(source)))
  try:
    # Batched reads: one lookup per record is ~25x slower on array_record files.
    return [r for start in range(0, len(keys), 65536)
            for r in source.__getitems__(keys[start:start + 65536])]
  except (AttributeError, TypeError):
    # tfds' mock data sources (tfds.testing.mock_data) have no working __getitems__.
    return [source[i] for i in keys]
