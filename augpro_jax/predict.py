"""Using a trained model: dev metrics (--mode=eval) and predictions on new text (--mode=predict).

The model is --teacher_ckpt, else --workdir: a run's workdir, an export (`final/`), or a Hugging
Face sequence-classification directory such as `final/hf/`. Its own tokenizer is used where it has
one (`final/hf/`, a Hugging Face directory), else --teacher's.

eval reads the task's dev sets, or one labelled --eval_file (the task's columns, or
--text_fields/--label_field). predict writes one row per --predict_file input, in input order:

  .jsonl  {"index": 0, "label": "1", "probabilities": {"0": 0.08, "1": 0.92}}   ({"index", "score"}
          for regression)
  .tsv    index, label, prob_<name> for every label   (index, score for regression)

or, with a directory --predict_out on a GLUE task, the GLUE submission files (`glue_submission`).
Logits come from `evaluation.predict`, as in eval: every local device and every process compute
their part of each batch, the rows are gathered in order, and process 0 writes them.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
from typing import Any

import numpy as np

from augpro_jax import checkpoints
from augpro_jax import config as config_lib
from augpro_jax import data as data_lib
from augpro_jax import distributed
from augpro_jax import context
from augpro_jax import evaluation
from augpro_jax import files
from augpro_jax import glue_submission
from augpro_jax import input_pipeline as pipeline
from augpro_jax import model as model_lib
from augpro_jax import tasks as tasks_lib
from augpro_jax import sharding
from augpro_jax.config import Config


def run(cfg: Config) -> dict[str, Any]:
  """--mode=eval or --mode=predict: a summary (not written to disk)."""
  found = checkpoints.find_model(cfg.teacher_ckpt or cfg.workdir,
                                 "--teacher_ckpt" if cfg.teacher_ckpt else "--workdir")
  task = model_task(cfg, found)
  ctx = context.build_context(cfg, need_train=False, need_dev=cfg.mode == "eval", task=task,
                                 tokenizer_dir=found.tokenizer_dir)
  config, params, info = checkpoints.load_model(found, task_name=task.name,
                                                num_labels=task.num_labels,
                                                task_labels=task.label_names, dtype=cfg.dtype)
  context.check_token_types(ctx, config, found.path)
  pipeline.check_vocab_size(ctx.tokenizer, config.vocab_size, found.path)
  if info.get("label_note") and distributed.is_main_process():
    print(f"note: model {found.path}: {info['label_note']}", flush=True)
  model = model_lib.BertClassifier(dataclasses.replace(config, dropout_rate=0.0))
  placed = sharding.put_tree(ctx.mesh, params)  # on the mesh
  summary = {"task": task.name, "mode": cfg.mode, "model": str(found.path)}
  if cfg.mode == "eval":
    return _eval(ctx, model, placed, summary)
  out = pathlib.Path(cfg.predict_out)
  out_format = config_lib.predict_out_format(cfg.predict_out)
  if out_format == "dir":
    return {**summary, "out": str(out), "files": _glue_submission(ctx, model, placed, out)}
  texts, _ = data_lib.read_texts(cfg.predict_file, "--predict_file",
                                 cfg.text_fields or task.text_fields)
  logits = _logits(ctx, model, placed, texts, cfg.predict_file)
  if distributed.is_main_process():
    _write(out, format_rows(task, logits, out_format))
  return {**summary, "out": str(out), "predictions": len(texts)}


def _eval(ctx: context.Context, model: model_lib.BertClassifier, placed: Any,
          summary: dict[str, Any]) -> dict[str, Any]:
  """Metrics on the dev splits (or --eval_file), written to `<workdir>/eval_results.json`."""
  cfg = ctx.cfg
  sources = {name: {"source": split_source(cfg, ctx.task, name), "examples": len(split)}
             for name, split in ctx.dev.items()}
  out = pathlib.Path(cfg.workdir) / "eval_results.json"
  if distributed.is_main_process():
    read = "; ".join(f"{v['source']} ({v['examples']:,} examples)" for v in sources.values())
    print(f"evaluating {summary['model']} on {read}; results to {out}", flush=True)
  results = {**summary, "splits": sources, "eval_size": cfg.eval_size, "out": str(out),
             "dev": evaluation.evaluate(ctx, model, placed)}
  if distributed.is_main_process():
    _write(out, json.dumps(results, indent=2, sort_keys=True) + "\n")
  return results


def split_source(cfg: Config, task: tasks_lib.TaskSpec, split: str) -> str:
  """Where `data.load_split` reads an evaluation split from, for the console and the results."""
  if cfg.dev_from_train:
    return f"{cfg.dev_from_train} examples held out of the training set (--dev_from_train)"
  if cfg.eval_file:
    return cfg.eval_file
  if cfg.data_source == "tfds":
    return f"TFDS {task.tfds_name} {split}"
  return str(data_lib.glue_dir_from(cfg) / (task.glue_name or "") / f"{split}.tsv")


def model_task(cfg: Config, found: checkpoints.ModelDir) -> tasks_lib.TaskSpec:
  """The task to evaluate or predict. A custom task without --train_file takes its labels from
  the model; a model trained on other labels is used in the task's label order, with a warning."""
  if cfg.task == "custom" and cfg.train_file is None:
    regression = found.num_labels == 1
    return tasks_lib.TaskSpec("custom", None, None, tuple(cfg.text_fields),
                              cfg.label_field or "", None if regression else found.label_names,
                              ("dev",), "pearson" if regression else "accuracy")
  task = data_lib.resolve_task(cfg)
  if found.kind == "exported" and found.label_names and task.label_names and \
     tuple(found.label_names) != tuple(task.label_names) and distributed.is_main_process():
    print(f"warning: model {found.path} was trained on the labels "
          f"{', '.join(found.label_names)}, task {task.name} has {', '.join(task.label_names)}; "
          "its outputs are taken in that order (for custom data, pass --task=custom and "
          "--text_fields)", file=sys.stderr, flush=True)
  return task


def _logits(ctx: context.Context, model: model_lib.BertClassifier, placed: Any,
            texts: list[tuple[str, ...]], source: str) -> np.ndarray:
  """Logits [N, C] of `texts`, in order."""
  examples = data_lib.Examples(texts, np.zeros(len(texts), np.int32))  # no labels
  split = pipeline.tokenize(examples, ctx.tokenizer, ctx.cfg.max_seq_len)
  if split.num_truncated and distributed.is_main_process():
    print(f"warning: {split.num_truncated} of {len(split)} examples of {source} are longer than "
          f"--max_seq_len={ctx.cfg.max_seq_len} tokens and were truncated", file=sys.stderr)
  buckets = context.choose_length_buckets(ctx.cfg, split, ctx.layout, ctx.cfg.eval_batch_size)
  return evaluation.predict(ctx, model, placed, split, buckets=buckets)


def format_rows(task: tasks_lib.TaskSpec, logits: np.ndarray, out_format: str) -> str:
  """The predictions file: one row per example of logits [N, C], in order."""
  if task.is_regression:
    scores = logits[:, 0].astype(np.float64)
    if out_format == ".jsonl":
      return "".join(json.dumps({"index": i, "score": float(s)}) + "\n"
                     for i, s in enumerate(scores))
    return "index\tscore\n" + "".join(f"{i}\t{s:.6f}\n" for i, s in enumerate(scores))
  names = task.label_names
  z = logits.astype(np.float64)
  probs = np.exp(z - z.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)  # [N, C]
  labels = probs.argmax(-1)
  if out_format == ".jsonl":
    return "".join(json.dumps({"index": i, "label": names[labels[i]],
                               "probabilities": dict(zip(names, map(float, p)))}) + "\n"
                   for i, p in enumerate(probs))
  header = "\t".join(["index", "label", *(f"prob_{tsv_cell(name)}" for name in names)])
  rows = ("\t".join([str(i), tsv_cell(names[labels[i]]), *(f"{x:.6f}" for x in p)]) + "\n"
          for i, p in enumerate(probs))
  return header + "\n" + "".join(rows)


def tsv_cell(text: str) -> str:
  """`text` as one .tsv cell: a tab or line break in a label would split the row."""
  return (text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
          .replace("\r", "\\r"))


def _glue_submission(ctx: context.Context, model: model_lib.BertClassifier, placed: Any,
                     out: pathlib.Path) -> dict[str, int]:
  """Predict every test set of the task into `out`; {file name: rows}."""
  glue_dir = data_lib.glue_dir_from(ctx.cfg)
  # Every test file is read (and checked) before any prediction is made.
  test_sets = [(t, glue_submission.read_test_set(glue_dir, ctx.task, t))
               for t in glue_submission.test_sets(ctx.task)]
  written = {}
  for test_set, found in test_sets:
    if found is None:
      continue
    ids, texts = found
    logits = _logits(ctx, model, placed, texts, test_set.source)
    if distributed.is_main_process():
      _write(out / test_set.submission, glue_submission.submission_text(ctx.task, ids, logits))
    written[test_set.submission] = len(ids)
  return written


def _write(path: pathlib.Path, text: str) -> None:
  files.atomic_write(path, text, mkdir=True)
