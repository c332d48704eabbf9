"""Evaluation: `predict` and `evaluate` run the eval step on the mesh over every example exactly
once, whole on every process, and report metrics in the examples' original order. Batches come in
length buckets (`context.choose_length_buckets`), as in training.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any, Optional

import numpy as np

from augpro_jax import buckets as buckets_lib
from augpro_jax import distributed
from augpro_jax import files
from augpro_jax import input_pipeline as pipeline
from augpro_jax import interrupts
from augpro_jax import model as model_lib
from augpro_jax import progress as progress_lib
from augpro_jax import sharding
from augpro_jax import tasks as tasks_lib
from augpro_jax import train_step as step_lib
from augpro_jax.context import Context
from augpro_jax.errors import UserError



def predict(ctx: Context, model: model_lib.BertClassifier, params: Any,
            split: pipeline.Tokenized, predict_step=None, phase: str = "eval",
            buckets: Optional[buckets_lib.Buckets] = None) -> np.ndarray:
  """Logits [N, C] for every example of `split`, each exactly once, on every process.

  params: on `ctx.mesh` (`sharding.put_tree`, or a train state's).
  Batched in `buckets` (default the run's, `ctx.buckets`); longer examples get one more bucket.

  A signal stops it before the next batch (`interrupts.StopRequested`, named after `phase`).
  """
  predict_step = predict_step or step_lib.make_predict_step(model, ctx.mesh)
  out = np.zeros((len(split), model.config.num_labels), np.float32)
  seen = np.zeros(len(split), np.int32)
  buckets = ctx.buckets if buckets is None else buckets
  timing = _EvalEstimate(len(split), phase, ctx.cfg.progress and distributed.is_main_process())
  for batch in pipeline.eval_batches(split, ctx.cfg.eval_batch_size, ctx.layout, buckets):
    timing.after(int(np.sum(seen)))
    interrupts.stop_inside(phase, ctx.layout.process_count)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    logits = np.asarray(predict_step(params, sharding.put_batch(ctx.mesh, inputs)))  # [global, C]
    index = batch["index"].reshape(-1)  # this process's rows, in order
    if ctx.layout.process_count > 1:  # the global batch's rows, in process order
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      index = np.asarray(multihost_utils.process_allgather(index)).reshape(-1)
    real = index >= 0
    out[index[real]] = logits[real]
    np.add.at(seen, index[real], 1)
  if not np.all(seen == 1):
    raise AssertionError("evaluation did not see every example exactly once")
  check_finite(out, phase)
  return out


_PHASES = {"eval": "evaluating", "teacher_logits": "computing the teacher's logits"}


def check_finite(logits: np.ndarray, phase: str) -> None:
  """Refuse logits [N, C] with NaN or infinity: a metric or a prediction from them means nothing."""
  bad = int(np.sum(~np.isfinite(logits).all(axis=-1)))
  if bad:
    raise UserError(f"the model gave non-finite logits (NaN or infinity) for {bad} of "
                    f"{len(logits)} examples while {_PHASES.get(phase, phase)}: its weights are "
                    "broken (NaN or infinity in them, or values that overflow)")


class _EvalEstimate:
  """One console line with the time a long prediction pass has left, once it is measured."""

  AFTER_SECONDS = 20.0

  def __init__(self, total: int, phase: str, enabled: bool):
    self.total, self.phase, self.enabled = total, phase, enabled
    self.start = time.perf_counter()

  def after(self, done: int) -> None:
    elapsed = time.perf_counter() - self.start
    if not self.enabled or not done or elapsed < self.AFTER_SECONDS:
      return
    self.enabled = False
    left = elapsed / done * (self.total - done)
    what = "teacher logits" if self.phase == "teacher_logits" else "evaluation"
    print(f"{what}: {done:,} of {self.total:,} examples in {elapsed:.0f}s, about "
          f"{progress_lib.duration(left)} left", flush=True)


def evaluate(ctx: Context, model: model_lib.BertClassifier, params: Any,
             predict_step=None, predictions: Optional[dict[str, np.ndarray]] = None
             ) -> dict[str, float]:
  """Dev metrics; with several dev splits (MNLI) keys are prefixed by the split name.

  predictions: if given, receives each split's predictions [N] in file order (class ids, or
  scores for regression).
  """
  results = {}
  for split_name, split in ctx.dev.items():
    logits = predict(ctx, model, params, split, predict_step)
    preds = logits[:, 0] if ctx.task.is_regression else logits.argmax(-1)
    if predictions is not None:
      predictions[split_name] = preds
    metrics = tasks_lib.compute_metrics(ctx.task, preds, split.labels)
    prefix = "" if len(ctx.dev) == 1 else f"{split_name}/"
    results.update({prefix + k: v for k, v in metrics.items()})
  return results


def predicted_shares(ctx: Context, predictions: dict[str, np.ndarray]) -> dict[str, float]:
  """The share of each dev split's examples predicted as each class (none for regression), keyed
  like the dev metrics: `predicted_share/<label>`. A student drifting onto one class shows here
  before its accuracy says why."""
  labels = ctx.task.label_names
  if labels is None:
    return {}
  out = {}
  for split_name, preds in predictions.items():
    prefix = "" if len(predictions) == 1 else f"{split_name}/"
    counts = np.bincount(np.asarray(preds, np.int64), minlength=len(labels))[:len(labels)]
    shares = counts / max(len(preds), 1)
    out.update({f"{prefix}predicted_share/{name}": float(v) for name, v in zip(labels, shares)})
  return out


def inference_speed(ctx: Context, models: dict[str, tuple[model_lib.BertClassifier, Any]],
                    max_examples: int = 256) -> dict[str, dict[str, float]]:
  """Each model's size and prediction speed on the first dev split (at most `max_examples`).

  models: {name: (model, params)}, params on the host or on ctx.mesh. The examples are padded to
  one length (the longest of them), so each model compiles one program: the first pass compiles,
  the second is timed. Returns {name: {"params": count, "examples_per_sec"}}.
  """
  split = next(iter(ctx.dev.values()))
  split = split.take(np.arange(min(len(split), max_examples)))
  one_length = (int(np.max(split.lengths)),)
  out = {}
  for name, (model, params) in models.items():
    placed = sharding.put_tree(ctx.mesh, params)
    predict_step = step_lib.make_predict_step(model, ctx.mesh)
    predict(ctx, model, placed, split, predict_step, buckets=one_length)  # compiles
    start = time.perf_counter()
    predict(ctx, model, placed, split, predict_step, buckets=one_length)
    out[name] = {"params": model_lib.count_params(params),
                 "examples_per_sec": len(split) / (time.perf_counter() - start)}
  return out


def write_dev_predictions(path: pathlib.Path, ctx: Context,
                          predictions: dict[str, np.ndarray]) -> None:
  """`path` (npz): for each dev split, `<split>/predictions` [N] and `<split>/labels` [N] in file
  order, so that any two runs on the same dev set compare example by example (process 0 only)."""
  if not distributed.is_main_process():
    return
  arrays = {}
  for name, preds in predictions.items():
    dtype = np.float32 if ctx.task.is_regression else np.int16
    arrays[f"{name}/predictions"] = np.asarray(preds).astype(dtype)
    arrays[f"{name}/labels"] = np.asarray(ctx.dev[name].labels).astype(dtype)
  files.atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def main_metric_key(ctx: Context) -> str:
  prefix = "" if len(ctx.dev) == 1 else f"{ctx.task.dev_splits[0]}/"
  return prefix + ctx.task.main_metric
