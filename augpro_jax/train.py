"""The training loop: teacher fine-tuning, distillation, fine-tuning and evaluation.

`run(cfg)` is the library's entry point. Each mode is `fit` (a generic loop over the pmapped step
with orbax checkpoints, eval, logging) applied to different models and objectives:
- train_teacher: the teacher on gold labels, exported to `<workdir>/final`;
- distill: trains (or reuses, or loads `--teacher_ckpt`) the teacher, then KD into the student;
- finetune: the student on gold labels alone (the baseline for KD), with the same augmentations;
- eval: dev metrics of `<workdir>/final` (or of `--teacher_ckpt`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pathlib
import signal
import sys
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from augpro_jax import augmentations
from augpro_jax import checkpoints
from augpro_jax import data as data_lib
from augpro_jax import flops as flops_lib
from augpro_jax import input_pipeline as pipeline
from augpro_jax import model as model_lib
from augpro_jax import tasks as tasks_lib
from augpro_jax import train_step as step_lib
from augpro_jax.config import Config
from augpro_jax.errors import UserError


class Preempted(Exception):
  """SIGTERM/SIGINT arrived: the current step finished and a checkpoint was written."""


@dataclasses.dataclass
class Context:
  """What every mode shares: the task, data, tokenizer, device layout."""

  cfg: Config
  task: tasks_lib.TaskSpec
  tokenizer: Any
  teacher_dir: pathlib.Path
  train: Optional[pipeline.Tokenized]
  dev: dict[str, pipeline.Tokenized]
  layout: pipeline.Layout
  is_special: np.ndarray
  is_candidate: np.ndarray


def local_layout() -> pipeline.Layout:
  return pipeline.Layout(jax.process_index(), jax.process_count(), jax.local_device_count())


def is_main_process() -> bool:
  return jax.process_index() == 0


def ensure_workdir(path: str | pathlib.Path) -> pathlib.Path:
  """Create the workdir and check that we can write there, before any work is done."""
  path = pathlib.Path(path)
  try:
    path.mkdir(parents=True, exist_ok=True)
    # Hosts of a pod share the workdir and, in containers, often the pid: name the process too.
    probe = path / f".write-probe-{jax.process_index()}-{os.getpid()}"
    probe.write_text("ok")
    probe.unlink()
  except OSError as exc:
    raise UserError(f"workdir {path} is not writable: {exc.strerror or exc}") from None
  return path


def build_context(cfg: Config, *, need_train: bool = True) -> Context:
  task = data_lib.resolve_task(cfg)
  teacher_dir = model_lib.resolve_pretrained_dir(cfg.teacher)
  tokenizer = pipeline.load_tokenizer(teacher_dir)
  layout = local_layout()
  pipeline.check_batch_divisible(cfg.batch_size, layout)
  pipeline.check_batch_divisible(cfg.eval_batch_size, layout, "eval_batch_size")
  train = None
  if need_train:
    train = pipeline.tokenize(data_lib.load_split(cfg, task, "train"), tokenizer, cfg.max_seq_len)
  dev = {split: pipeline.tokenize(data_lib.load_split(cfg, task, split), tokenizer, cfg.max_seq_len)
         for split in task.dev_splits}
  vocab_size = tokenizer.get_vocab_size()
  is_special, is_candidate = pipeline.vocab_masks(tokenizer, vocab_size)
  for name, split in ([("train", train)] if train else []) + list(dev.items()):
    if split.num_truncated and is_main_process():
      # Long text is not an error: it is truncated, counted, and reported (also in summary.json).
      print(f"warning: {split.num_truncated} of {len(split)} {name} examples are longer than "
            f"--max_seq_len={cfg.max_seq_len} tokens and were truncated", file=sys.stderr)
  return Context(cfg, task, tokenizer, teacher_dir, train, dev, layout, is_special, is_candidate)


# ----------------------------------------------------------------------------------------------
# Evaluation.
# ----------------------------------------------------------------------------------------------


def predict(ctx: Context, model: model_lib.BertClassifier, replicated_params: Any,
            split: pipeline.Tokenized, predict_step=None) -> np.ndarray:
  """Logits [N, C] for every example of `split`, each exactly once, gathered from all processes."""
  predict_step = predict_step or step_lib.make_predict_step(model)
  out = np.zeros((len(split), model.config.num_labels), np.float32)
  seen = np.zeros(len(split), np.int32)
  for batch in pipeline.eval_batches(split, ctx.cfg.eval_batch_size, ctx.layout):
    logits = predict_step(replicated_params, {k: batch[k] for k in
                                              ("input_ids", "attention_mask", "token_type_ids")})
    logits = np.asarray(logits).reshape(-1, out.shape[1])
    index = batch["index"].reshape(-1)
    if ctx.layout.process_count > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      logits = np.asarray(multihost_utils.process_allgather(logits)).reshape(-1, out.shape[1])
      index = np.asarray(multihost_utils.process_allgather(index)).reshape(-1)
    real = index >= 0
    out[index[real]] = logits[real]
    np.add.at(seen, index[real], 1)
  if not np.all(seen == 1):
    raise AssertionError("evaluation did not see every example exactly once")
  return out


def evaluate(ctx: Context, model: model_lib.BertClassifier, replicated_params: Any,
             predict_step=None) -> dict[str, float]:
  """Dev metrics; with several dev splits (MNLI) keys are prefixed by the split name."""
  results = {}
  for split_name, split in ctx.dev.items():
    logits = predict(ctx, model, replicated_params, split, predict_step)
    preds = logits[:, 0] if ctx.task.is_regression else logits.argmax(-1)
    metrics = tasks_lib.compute_metrics(ctx.task, preds, split.labels)
    prefix = "" if len(ctx.dev) == 1 else f"{split_name}/"
    results.update({prefix + k: v for k, v in metrics.items()})
  return results


def main_metric_key(ctx: Context) -> str:
  prefix = "" if len(ctx.dev) == 1 else f"{ctx.task.dev_splits[0]}/"
  return prefix + ctx.task.main_metric


# ----------------------------------------------------------------------------------------------
# The generic loop.
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def preemption_guard(process_count: int = 1):
  """SIGTERM/SIGINT set a flag; the loop finishes its step, checkpoints, and raises Preempted.

  Multi-process runs install no handler: `jax.distributed.initialize` started JAX's preemption
  service, whose own (C++) SIGTERM handler tells every host, and `reached_preemption_sync_point`
  then names one step at which all of them stop. A Python handler would replace JAX's, and a host
  stopping on its own would leave the others waiting in a collective forever.
  """
  flag = {"set": False}
  if process_count > 1:
    yield flag
    return

  def handler(signum, frame):  # pylint: disable=unused-argument
    flag["set"] = True

  previous = {}
  for sig in (signal.SIGTERM, signal.SIGINT):
    try:
      previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread (e.g. some test runners): no handler
      pass
  try:
    yield flag
  finally:
    for sig, old in previous.items():
      signal.signal(sig, old)


def _preemption_requested(flag, step: int, process_count: int) -> bool:
  """Whether to checkpoint and stop after `step`; called after every step, on every host."""
  if process_count > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    # Every host must agree on the step at which to stop, or they would deadlock and their
    # checkpoints would differ. The sync manager exists once jax.distributed.initialize ran with
    # jax_enable_preemption_service (the default); without it there is no coordinated stop.
    try:
      return bool(multihost_utils.reached_preemption_sync_point(step))
    except RuntimeError as exc:
      logging.log_first_n(logging.WARNING, "no coordinated preemption: %s", 1, exc)
      return False
  return flag["set"]


class _Writers:
  """metrics.jsonl + TensorBoard, written by process 0 only."""

  def __init__(self, workdir: pathlib.Path, enabled: bool, start_step: int = 0):
    self.enabled = enabled
    self.jsonl = None
    self.tb = None
    if enabled:
      _rewind_metrics(workdir / "metrics.jsonl", start_step)
      self.jsonl = open(workdir / "metrics.jsonl", "a", encoding="utf-8")
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self.tb = SummaryWriter(str(workdir / "tensorboard"))

  def write(self, step: int, kind: str, values: dict[str, Any]) -> None:
    if not self.enabled:
      return
    record = {"step": step, "kind": kind, **values}
    try:
      self.jsonl.write(json.dumps(record) + "\n")
      self.jsonl.flush()
      for key, value in values.items():
        if isinstance(value, (int, float)) and value is not None and math.isfinite(value):
          self.tb.add_scalar(f"{kind}/{key}", value, step)
    except OSError as exc:  # a full disk: the checkpoints written so far are intact
      raise UserError(f"cannot write metrics in {self.jsonl.name}: {exc.strerror or exc}; "
                      "checkpoints so far are kept, rerun the same command to resume") from None

  def close(self) -> None:
    if self.enabled:
      self.jsonl.close()
      self.tb.close()


def _rewind_metrics(path: pathlib.Path, step: int) -> None:
  """Keep the lines of `path` (metrics.jsonl) up to `step`, the step being resumed.

  Later lines come from a run killed before its next checkpoint: the resumed run writes those
  steps again, and a kill in the middle of a write leaves a partial last line.
  """
  if not path.exists():
    return
  kept_lines = []
  for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
      kept_lines.append(line + "\n")
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text("".join(kept_lines), encoding="utf-8")
  os.replace(tmp, path)


def total_train_steps(cfg: Config, num_examples: int, num_epochs: float) -> int:
  if cfg.num_train_steps:
    return cfg.num_train_steps
  return max(1, int(math.ceil(num_epochs * pipeline.steps_per_epoch(num_examples, cfg.batch_size))))


def fit(ctx: Context, *, workdir: pathlib.Path, model: model_lib.BertClassifier, params: Any,
        spec: step_lib.StepSpec, num_steps: int, learning_rate: float,
        teacher: Optional[tuple[model_lib.BertClassifier, Any]] = None,
        teacher_dev: Optional[dict[str, float]] = None,
        extra_summary: Optional[dict[str, Any]] = None) -> tuple[Any, dict[str, Any]]:
  """Train `model` from `params` for `num_steps` under `spec`; resume from `workdir` if possible.

  Returns the final (host) params and the summary written to `<workdir>/summary.json`.
  """
  cfg = ctx.cfg
  main = is_main_process()
  ensure_workdir(workdir)
  optimizer, schedule = step_lib.make_optimizer(learning_rate, num_steps, cfg.warmup_fraction,
                                                cfg.weight_decay)
  state = step_lib.init_state(params, optimizer, cfg.seed)
  manager = checkpoints.make_manager(workdir / "checkpoints", keep=cfg.keep_checkpoints,
                                     best_metric=main_metric_key(ctx))
  start_step, state = checkpoints.restore_latest(manager, jax.device_get(state))
  start_step = int(state.step) if start_step is not None else 0
  if start_step:
    print(f"resuming {workdir} from step {start_step}", flush=True)

  teacher_model, teacher_params = teacher if teacher else (None, {})
  aug = augmentations.get(spec.aug)
  if aug.check:
    aug.check(spec.augment, model.config.hidden_size,
              teacher_model.config.hidden_size if teacher_model else None)
  step_fn = step_lib.make_train_step(spec, model, teacher_model, optimizer, ctx.is_special,
                                     ctx.is_candidate)
  p_step = step_lib.pmap_train_step(step_fn)
  predict_step = step_lib.make_predict_step(model)
  host_augment = aug.make_host_augment(cfg) if aug.make_host_augment else None
  r_state = step_lib.replicate(state)
  r_teacher = step_lib.replicate(teacher_params)
  del state

  per_example = {}
  if spec.cached_teacher_logits:
    # Eval mode, as inside the step, so the values are the ones the step would compute. Only the
    # examples the run draws (half an epoch needs half). A resumed run recomputes the same rows in
    # the same batches, so its logits, and hence its parameters, are bit for bit the same.
    start = time.perf_counter()
    rows = pipeline.rows_drawn(len(ctx.train), cfg.batch_size, cfg.seed, 0, num_steps)
    cached = np.zeros((len(ctx.train), model.config.num_labels), np.float32)  # [N, C]
    if len(rows):
      cached[rows] = predict(ctx, teacher_model, r_teacher, ctx.train.take(rows))
    per_example["teacher_logits"] = cached
    print(f"teacher logits on {len(rows)} of {len(ctx.train)} training examples in "
          f"{time.perf_counter() - start:.1f}s", flush=True)

  def make_batch(step):
    return pipeline.train_batch(ctx.train, step, cfg.batch_size, cfg.seed, ctx.layout,
                                host_augment, ctx.tokenizer, cfg.max_seq_len, per_example)

  # Compile once, before the loop, and log what XLA says about memory and cost.
  compile_start = time.perf_counter()
  first = step_lib.shard(make_batch(min(start_step, num_steps - 1)))
  compiled = p_step.lower(r_state, r_teacher, first).compile()
  # Multi-process pmap turns each process's local arrays into global ones around every call; an
  # AOT executable skips that, so there we call the pmapped function (its compile is cached).
  run_step = compiled if ctx.layout.process_count == 1 else p_step
  compile_seconds = time.perf_counter() - compile_start
  memory = _memory_summary(compiled)
  logging.info("compiled train step in %.1fs; memory: %s", compile_seconds, memory)
  step_flops = flops_lib.step_flops(
      aug=spec.aug, objective=spec.objective, teacher=teacher_model.config if teacher_model else None,
      student=model.config, batch=cfg.batch_size, seq_len=cfg.max_seq_len,
      shift_degree=spec.augment.shift_degree, aug_copies=spec.augment.aug_copies,
      cached_teacher_logits=spec.cached_teacher_logits)
  peak = flops_lib.device_peak_flops()
  total_devices = jax.device_count()

  writers = _Writers(workdir, main, start_step)
  writers.write(start_step, "compile", {"seconds": compile_seconds, **memory,
                                        "flops_per_step": step_flops["total"]})
  pending: list[tuple[int, Any]] = []
  best = {}
  last_eval: dict[str, float] = {}
  # Throughput = steps / wall time between host syncs; eval and checkpoint pauses are excluded.
  train_seconds, steps_timed = 0.0, 0
  clock = {"start": time.perf_counter()}

  def tick():
    nonlocal train_seconds
    now = time.perf_counter()
    train_seconds += now - clock["start"]
    clock["start"] = now
  progress = _progress(cfg, start_step, num_steps, main)

  def flush_metrics(now_step):
    for s, m in jax.device_get(pending):
      values = {k: float(np.asarray(v)[0]) for k, v in m.items()}
      if values.get("nonfinite"):
        if values["nonfinite_steps"] > cfg.skip_nonfinite_steps:
          raise UserError(f"non-finite loss or gradient at step {s + 1}; parameters were not "
                          f"updated and the last good checkpoint is kept (see "
                          f"--skip_nonfinite_steps)")
        print(f"warning: skipped non-finite step {s + 1}", flush=True)
      values["learning_rate"] = float(schedule(s))
      if s + 1 == now_step or (s + 1) % cfg.log_every == 0:
        if steps_timed:
          values["examples_per_sec"] = cfg.batch_size * steps_timed / max(train_seconds, 1e-9)
          values["tflops_per_sec"] = values["examples_per_sec"] / cfg.batch_size * \
              step_flops["total"] / 1e12
          if peak:
            values["mfu"] = values["tflops_per_sec"] * 1e12 / (peak * total_devices)
        writers.write(s + 1, "train", values)
    pending.clear()

  saved = {"step": start_step}  # the newest step on disk

  def save(step, metrics=None):
    host_state = jax.device_get(step_lib.unreplicate(r_state))
    checkpoints.save(manager, step, host_state, metrics)
    saved["step"] = step

  step = start_step
  try:
    with preemption_guard(ctx.layout.process_count) as preempt_flag:
      # Host work and the host->device copy both happen on the prefetch thread.
      device_batches = pipeline.prefetch(lambda i: step_lib.shard(make_batch(i)), start_step,
                                         num_steps)
      clock["start"] = time.perf_counter()
      for step in range(start_step, num_steps):
        batch = next(device_batches)
        r_state, metrics = run_step(r_state, r_teacher, batch)
        pending.append((step, metrics))
        steps_timed += 1
        done = step + 1
        if done % cfg.log_every == 0 or done == num_steps:
          jax.block_until_ready(metrics)  # the only host sync on ordinary steps
          tick()
          flush_metrics(done)
        progress.update(1)
        if cfg.eval_every and done % cfg.eval_every == 0 and done != num_steps:
          jax.block_until_ready(metrics)
          tick()
          flush_metrics(done)
          last_eval = evaluate(ctx, model, r_state.params, predict_step)
          writers.write(done, "eval", last_eval)
          _track_best(best, last_eval, main_metric_key(ctx), done)
          if cfg.checkpoint_every and done % cfg.checkpoint_every == 0:
            save(done, last_eval)
          clock["start"] = time.perf_counter()  # the pause is not training time
        elif cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done != num_steps:
          jax.block_until_ready(metrics)
          tick()
          flush_metrics(done)
          save(done)
          clock["start"] = time.perf_counter()
        if _preemption_requested(preempt_flag, done, ctx.layout.process_count) and done != num_steps:
          flush_metrics(done)
          if saved["step"] != done:  # a signal during a checkpoint step: orbax refuses a 2nd save
            save(done)
          raise Preempted(f"stopped at step {done} by a signal; checkpoint saved in {workdir}; "
                          "run the same command again to resume")
      flush_metrics(num_steps)
  finally:
    progress.close()

  dev = evaluate(ctx, model, r_state.params, predict_step)
  writers.write(num_steps, "eval", dev)
  _track_best(best, dev, main_metric_key(ctx), num_steps)
  if start_step < num_steps:
    save(num_steps, dev)
  writers.close()
  final_state = jax.device_get(step_lib.unreplicate(r_state))
  final_params = final_state.params
  shift_steps = int(final_state.shift_steps)
  summary = {
      "task": ctx.task.name,
      "aug": cfg.aug,
      "shift_degree": cfg.shift_degree if aug.reports_shift else None,
      "measured_shift": float(final_state.shift_sum) / shift_steps if shift_steps else None,
      "measured_shift_steps": shift_steps,
      "nonfinite_steps": int(final_state.nonfinite_steps),
      "train_examples": len(ctx.train),
      "truncated_examples": {"train": ctx.train.num_truncated,
                             **{k: v.num_truncated for k, v in ctx.dev.items()}},
      "steps": num_steps,
      "resumed_from_step": start_step,
      "batch_size": cfg.batch_size,
      "seed": cfg.seed,
      "dev": dev,
      "best_dev": best,
      "teacher_dev": teacher_dev,
      "examples_per_sec": cfg.batch_size * steps_timed / train_seconds if steps_timed else None,
      "train_seconds": train_seconds,
      "compile_seconds": compile_seconds,
      "flops_per_step": step_flops,
      "devices": total_devices,
      "processes": ctx.layout.process_count,
      "device_kind": jax.local_devices()[0].device_kind,
      "student_params_sha256": checkpoints.params_sha256(final_params),
      "params": model_lib.count_params(final_params),
      **(extra_summary or {}),
  }
  return final_params, summary


def _track_best(best: dict, metrics: dict[str, float], key: str, step: int) -> None:
  if key in metrics and (not best or metrics[key] > best["value"]):
    best.update({"metric": key, "value": metrics[key], "step": step})


def _memory_summary(compiled) -> dict[str, float]:
  try:
    analysis = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  # not every backend implements it
    return {}
  if analysis is None:
    return {}
  fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
            "generated_code_size_in_bytes")
  return {f"memory_{f.replace('_size_in_bytes', '')}_mb": getattr(analysis, f, 0) / 2**20
          for f in fields if hasattr(analysis, f)}


def _progress(cfg: Config, start: int, total: int, main: bool):
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, initial=start, disable=not (cfg.progress and main), unit="step",
              dynamic_ncols=True, file=sys.stderr, leave=False)


def _write_summary(workdir: pathlib.Path, summary: dict[str, Any]) -> None:
  if not is_main_process():
    return
  tmp = workdir / "summary.json.tmp"
  try:
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True))
    os.replace(tmp, workdir / "summary.json")
  except OSError as exc:  # the export and checkpoints are already on disk
    tmp.unlink(missing_ok=True)
    raise UserError(f"cannot write {workdir / 'summary.json'}: {exc.strerror or exc}") from None


# ----------------------------------------------------------------------------------------------
# Modes.
# ----------------------------------------------------------------------------------------------


def _pretrained(ctx: Context):
  return model_lib.load_pretrained(str(ctx.teacher_dir), num_labels=ctx.task.num_labels,
                                   dropout_rate=ctx.cfg.dropout, dtype=ctx.cfg.dtype)


def train_teacher(ctx: Context, workdir: pathlib.Path) -> tuple[model_lib.BertConfig, Any, dict]:
  """Fine-tune the pretrained teacher on gold labels; export it to `<workdir>/final`."""
  cfg = ctx.cfg
  config, params = _pretrained(ctx)
  spec = step_lib.StepSpec.from_config(cfg, objective="labels", num_labels=ctx.task.num_labels,
                                       is_regression=ctx.task.is_regression, aug="none")
  steps = total_train_steps(cfg.replace(num_train_steps=None), len(ctx.train),
                            cfg.teacher_num_epochs)
  print(f"fine-tuning the teacher ({config.num_layers}x{config.hidden_size}) on {ctx.task.name}: "
        f"{steps} steps", flush=True)
  params, summary = fit(ctx, workdir=workdir, model=model_lib.BertClassifier(config), params=params,
                        spec=spec, num_steps=steps, learning_rate=cfg.teacher_learning_rate,
                        extra_summary={"mode": "train_teacher", "role": "teacher"})
  summary.update(shift_degree=None, aug="none")
  info = {"task": ctx.task.name, "label_names": list(ctx.task.label_names or []),
          "num_labels": ctx.task.num_labels, "dev": summary["dev"], "source": cfg.teacher}
  if is_main_process():
    checkpoints.export_model(workdir / "final", config, params, info)
  _write_summary(workdir, summary)
  return config, params, info


def load_or_train_teacher(ctx: Context) -> tuple[model_lib.BertConfig, Any, dict, str]:
  """The fine-tuned teacher: --teacher_ckpt, else `<workdir>/teacher/final`, else train it there."""
  cfg = ctx.cfg
  if cfg.teacher_ckpt:
    path = pathlib.Path(cfg.teacher_ckpt)
    if not path.exists():
      raise UserError(f"--teacher_ckpt={cfg.teacher_ckpt} does not exist")
    config, params, info = checkpoints.load_exported(path)
  else:
    path = pathlib.Path(cfg.workdir) / "teacher"
    if (path / "final" / "model.json").exists():
      config, params, info = checkpoints.load_exported(path)
      print(f"reusing the teacher in {path / 'final'}", flush=True)
    else:
      config, params, info = train_teacher(ctx, path)
    path = path / "final"
  if info.get("num_labels", config.num_labels) != ctx.task.num_labels or \
     config.num_labels != ctx.task.num_labels:
    raise UserError(f"teacher {path} has {config.num_labels} labels but task {ctx.task.name} has "
                    f"{ctx.task.num_labels}: it was trained for another task")
  if info.get("task") and info["task"] != ctx.task.name:
    logging.warning("teacher %s was trained on %s, used for %s", path, info["task"], ctx.task.name)
  if config.vocab_size != ctx.tokenizer.get_vocab_size():
    raise UserError(f"teacher {path} has a vocabulary of {config.vocab_size} but the tokenizer has "
                    f"{ctx.tokenizer.get_vocab_size()}: teacher and student vocabularies differ")
  config = dataclasses.replace(config, dtype=cfg.dtype, dropout_rate=0.0)
  return config, params, info, str(path)


def student_config(cfg: Config, teacher_config: model_lib.BertConfig,
                   num_labels: int) -> model_lib.BertConfig:
  return dataclasses.replace(
      teacher_config, num_layers=cfg.student_layers, hidden_size=cfg.student_hidden,
      num_heads=cfg.student_heads, intermediate_size=cfg.student_intermediate_size,
      num_labels=num_labels, dropout_rate=cfg.dropout, dtype=cfg.dtype)


def train_student(ctx: Context, objective: str) -> dict[str, Any]:
  """distill (objective 'kd') or finetune (objective 'labels')."""
  cfg = ctx.cfg
  workdir = pathlib.Path(cfg.workdir)
  pretrained_config, pretrained_params = _pretrained(ctx)
  teacher, teacher_dev, teacher_ckpt = None, None, None
  if objective == "kd":
    t_config, t_params, t_info, teacher_ckpt = load_or_train_teacher(ctx)
    teacher = (model_lib.BertClassifier(t_config), t_params)
    teacher_dev = t_info.get("dev")
  s_config = student_config(cfg, pretrained_config, ctx.task.num_labels)
  # Both modes start the student from the *pretrained* teacher backbone (same start for a fair
  # KD-vs-fine-tuning comparison); see docs/design.md "Implementation".
  s_params = model_lib.student_from_teacher(s_config, pretrained_config, pretrained_params,
                                            jax.random.PRNGKey(cfg.seed + 1), init=cfg.student_init)
  spec = step_lib.StepSpec.from_config(cfg, objective=objective, num_labels=ctx.task.num_labels,
                                       is_regression=ctx.task.is_regression)
  steps = total_train_steps(cfg, len(ctx.train), cfg.num_epochs)
  student = model_lib.BertClassifier(s_config)
  print(f"{'distilling' if objective == 'kd' else 'fine-tuning'} a {s_config.num_layers}x"
        f"{s_config.hidden_size} student on {ctx.task.name} (aug={cfg.aug}): {steps} steps",
        flush=True)
  params, summary = fit(ctx, workdir=workdir, model=student, params=s_params, spec=spec,
                        num_steps=steps, learning_rate=cfg.learning_rate, teacher=teacher,
                        teacher_dev=teacher_dev,
                        extra_summary={"mode": cfg.mode, "teacher_ckpt": teacher_ckpt})
  if is_main_process():
    checkpoints.export_model(workdir / "final", s_config, params,
                             {"task": ctx.task.name, "num_labels": ctx.task.num_labels,
                              "label_names": list(ctx.task.label_names or []), "dev": summary["dev"]})
  _write_summary(workdir, summary)
  return summary


def eval_only(ctx: Context) -> dict[str, Any]:
  cfg = ctx.cfg
  path = pathlib.Path(cfg.teacher_ckpt or cfg.workdir)
  config, params, info = checkpoints.load_exported(path)
  if config.num_labels != ctx.task.num_labels:
    raise UserError(f"model {path} has {config.num_labels} labels but task {ctx.task.name} has "
                    f"{ctx.task.num_labels}")
  model = model_lib.BertClassifier(dataclasses.replace(config, dtype=cfg.dtype))
  dev = evaluate(ctx, model, step_lib.replicate(params))
  return {"task": ctx.task.name, "mode": "eval", "model": str(path), "dev": dev}


def run(cfg: Config) -> dict[str, Any]:
  """Run one mode end to end and return its summary (also written to `<workdir>/summary.json`)."""
  cfg.validate()
  if cfg.mode == "benchmark":
    from augpro_jax import benchmark  # pylint: disable=g-import-not-at-top
    return benchmark.run(cfg)
  ctx = build_context(cfg, need_train=cfg.mode != "eval")  # validates data before writing anything
  ensure_workdir(cfg.workdir)
  if cfg.mode == "train_teacher":
    _, _, info = train_teacher(ctx, pathlib.Path(cfg.workdir))
    return json.loads((pathlib.Path(cfg.workdir) / "summary.json").read_text()) \
        if is_main_process() else info
  if cfg.mode == "eval":
    return eval_only(ctx)
  return train_student(ctx, "kd" if cfg.mode == "distill" else "labels")
