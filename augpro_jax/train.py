"""The modes: teacher fine-tuning, distillation, fine-tuning and evaluation.

`run(cfg)` is the library's entry point. Each training mode is `loop.fit` applied to a different
model and objective:
- train_teacher: the teacher on gold labels, exported to `<workdir>/final`;
- distill: trains (or reuses, or loads `--teacher_ckpt`) the teacher, caches its logits on the
  training examples, then distils into the student;
- finetune: the student on gold labels alone (the baseline for KD), with the same augmentations;
- eval and predict (in `predict.py`): dev metrics of, or predictions by, a trained model.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import time
from typing import Any

import jax
import numpy as np
from absl import logging

from augpro_jax import augmentations
from augpro_jax import checkpoints
from augpro_jax import distributed
from augpro_jax import context
from augpro_jax import evaluation
from augpro_jax import hf_io
from augpro_jax import input_pipeline as pipeline
from augpro_jax import interrupts
from augpro_jax import loop
from augpro_jax import model as model_lib
from augpro_jax import sharding
from augpro_jax import students
from augpro_jax import model_card
from augpro_jax import train_step as step_lib
from augpro_jax import workdir as workdir_lib
from augpro_jax.config import Config
from augpro_jax.errors import UserError

Context = context.Context


# ----------------------------------------------------------------------------------------------
# Modes.
# ----------------------------------------------------------------------------------------------


def _pretrained(ctx: Context):
  config, params = _backbone(str(ctx.teacher_dir), _file_stamp(pathlib.Path(ctx.teacher_dir)),
                             ctx.task.num_labels, ctx.cfg.dropout, ctx.cfg.dtype)
  context.check_token_types(ctx, config, ctx.teacher_dir)
  pipeline.check_vocab_size(ctx.tokenizer, config.vocab_size, ctx.teacher_dir)
  return dataclasses.replace(config, dropout_bits=ctx.cfg.dropout_bits,
                             dropout_rng=ctx.cfg.dropout_rng,
                             attention_dropout_mask=ctx.cfg.attention_dropout_mask), params


@functools.lru_cache(maxsize=1)
def _backbone(directory: str, stamp: tuple, num_labels: int, dropout: float, dtype: str):
  """`load_pretrained`, once per run: distill starts the teacher and the student from it."""
  del stamp  # part of the cache key only: a changed file is read again
  return hf_io.load_pretrained(directory, num_labels=num_labels, dropout_rate=dropout, dtype=dtype)


def _file_stamp(directory: pathlib.Path) -> tuple:
  """What identifies the contents of a model directory's files without reading them."""
  stamps = []
  for name in ("config.json", "model.safetensors", "pytorch_model.bin"):
    try:
      st = (directory / name).stat()
    except OSError:
      continue
    stamps.append((name, st.st_ino, st.st_size, st.st_mtime_ns))
  return tuple(stamps)


def _export(ctx: Context, workdir: pathlib.Path, config: model_lib.BertConfig, params: Any,
            info: dict[str, Any], summary: dict[str, Any], role: str) -> None:
  """`<workdir>/final`: our format, and `hf/` for transformers (with the run's tokenizer and a
  model card)."""
  if distributed.is_main_process():
    checkpoints.export_model(workdir / "final", config, params, info,
                             tokenizer_dir=ctx.tokenizer_dir)
    card = model_card.card_text(ctx.cfg, summary, role=role,
                                architecture=f"{config.num_layers}x{config.hidden_size}")
    model_card.write_card(workdir / "final" / "hf", card)


def train_teacher(ctx: Context, workdir: pathlib.Path) -> tuple[model_lib.BertConfig, Any, dict]:
  """Fine-tune the pretrained teacher on gold labels; export it to `<workdir>/final`."""
  cfg = ctx.cfg
  config, params = _pretrained(ctx)
  head = hf_io.head_size(ctx.teacher_dir)
  if head is not None and distributed.is_main_process():
    print(f"note: --teacher={cfg.teacher} has a {head}-output classifier head; it is discarded and "
          f"a new {ctx.task.num_labels}-output head is trained (to use that teacher as it is, pass "
          f"--teacher_ckpt={ctx.teacher_dir})", flush=True)
  spec = step_lib.StepSpec.from_config(cfg, objective="labels", num_labels=ctx.task.num_labels,
                                       is_regression=ctx.task.is_regression, aug="none")
  steps = loop.total_train_steps(cfg.replace(num_train_steps=None), len(ctx.train),
                            cfg.teacher_num_epochs)
  print(f"fine-tuning the teacher ({config.num_layers}x{config.hidden_size}) on {ctx.task.name}: "
        f"{steps} steps", flush=True)
  params, summary = loop.fit(ctx, workdir=workdir, model=model_lib.BertClassifier(config),
                             params=params, spec=spec, num_steps=steps,
                             learning_rate=cfg.teacher_learning_rate,
                             extra_summary={"mode": "train_teacher", "role": "teacher"})
  summary.update(shift_degree=None, aug="none")
  info = {"task": ctx.task.name, "label_names": list(ctx.task.label_names or []),
          "num_labels": ctx.task.num_labels, "dev": summary["export"]["dev"], "source": cfg.teacher}
  _export(ctx, workdir, config, params, info, summary, "teacher")
  loop.write_summary(workdir, summary)
  return config, params, info


def load_or_train_teacher(ctx: Context) -> tuple[model_lib.BertConfig, Any, dict, str]:
  """The fine-tuned teacher: --teacher_ckpt, else `<workdir>/teacher/final`, else train it there."""
  cfg = ctx.cfg
  if cfg.teacher_ckpt:
    found = checkpoints.find_model(cfg.teacher_ckpt)
    path = found.path
    config, params, info = checkpoints.load_model(
        found, task_name=ctx.task.name, num_labels=ctx.task.num_labels,
        task_labels=ctx.task.label_names, dtype=cfg.dtype)
    context.check_token_types(ctx, config, path)
    pipeline.check_vocab_size(ctx.tokenizer, config.vocab_size, path)
    if found.kind == "huggingface":
      info["dev"] = _teacher_dev(ctx, config, params, info)
  else:
    path = pathlib.Path(cfg.workdir) / "teacher"
    if (path / "final" / "model.json").exists():
      config, params, info = checkpoints.load_exported(path)
      print(f"reusing the teacher in {path / 'final'}", flush=True)
    else:
      config, params, info = train_teacher(ctx, path)
      interrupts.stop_if_requested("between_phases", f"after fine-tuning the teacher (exported to "
                                   f"{path / 'final'}), before distillation")
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


def _teacher_dev(ctx: Context, config: model_lib.BertConfig, params: Any,
                 info: dict[str, Any]) -> dict[str, float]:
  """Dev metrics of a teacher used as it is, shown before distilling from it."""
  dev = evaluation.evaluate(ctx, model_lib.BertClassifier(dataclasses.replace(config,
                                                                              dropout_rate=0.0)),
                            sharding.put_tree(ctx.mesh, params))
  if distributed.is_main_process():
    if info.get("label_note"):
      print(f"note: teacher {info['source']}: {info['label_note']}", flush=True)
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted(dev.items()))
    print(f"teacher {info['source']} (its own head, not fine-tuned) dev: {metrics}", flush=True)
  return dev


def cache_teacher_logits(ctx: Context, teacher: model_lib.BertClassifier, teacher_params: Any,
                         num_steps: int) -> np.ndarray:
  """The teacher's logits [N_train, C] on the training examples the run draws (others zero).

  Eval mode, as inside the step, so the values are the ones the step would compute. Only the
  examples the run draws (half an epoch needs half). A resumed run recomputes the same rows in the
  same batches, so its logits, and hence its parameters, are bit for bit the same.
  """
  cfg = ctx.cfg
  start = time.perf_counter()
  rows = pipeline.rows_drawn(ctx.train, cfg.batch_size, cfg.seed, 0, num_steps, ctx.buckets)
  cached = np.zeros((len(ctx.train), teacher.config.num_labels), np.float32)
  if len(rows):
    try:
      cached[rows] = evaluation.predict(ctx, teacher, sharding.put_tree(ctx.mesh, teacher_params),
                                        ctx.train.take(rows), phase="teacher_logits")
    except interrupts.StopRequested as exc:  # before the student's steps: nothing new to save
      raise interrupts.Preempted(f"stopped by {exc.signal_name} during {exc.during}, before the student's "
                      "next step; the checkpoints so far are kept; run the same command again to "
                      "resume") from None
  print(f"teacher logits on {len(rows)} of {len(ctx.train)} training examples in "
        f"{time.perf_counter() - start:.1f}s", flush=True)
  return cached


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
  s_config = students.student_config(cfg, pretrained_config, ctx.task.num_labels)
  # Both modes start the student from the *pretrained* teacher backbone (same start for a fair
  # KD-vs-fine-tuning comparison); see docs/design.md "Implementation".
  start_config, start_params = pretrained_config, pretrained_params
  if cfg.student_init == "fine_tuned":  # distill only (Config.validate)
    start_config, start_params = t_config, t_params
  s_params = students.student_from_teacher(s_config, start_config, start_params,
                                            jax.random.PRNGKey(cfg.seed + 1), init=cfg.student_init)
  spec = step_lib.StepSpec.from_config(cfg, objective=objective, num_labels=ctx.task.num_labels,
                                       is_regression=ctx.task.is_regression)
  steps = loop.total_train_steps(cfg, len(ctx.train), cfg.num_epochs)
  student = model_lib.BertClassifier(s_config)
  aug = augmentations.get(spec.aug)
  if aug.check:
    # Augmentations work on word embeddings: the tables' width (ELECTRA's may be narrower).
    aug.check(spec.augment, s_config.embedding_width,
              teacher[0].config.embedding_width if teacher else None)
  if teacher:  # on the mesh once, for its logits, the steps and the speed comparison
    teacher = (teacher[0], sharding.put_tree(ctx.mesh, teacher[1]))
  per_example = {}
  if teacher and spec.cached_teacher_logits:
    per_example["teacher_logits"] = cache_teacher_logits(ctx, *teacher, steps)
  print(f"{'distilling' if objective == 'kd' else 'fine-tuning'} a {s_config.num_layers}x"
        f"{s_config.hidden_size} student on {ctx.task.name} (aug={cfg.aug}): {steps} steps",
        flush=True)
  params, summary = loop.fit(ctx, workdir=workdir, model=student, params=s_params, spec=spec,
                             num_steps=steps, learning_rate=cfg.learning_rate, teacher=teacher,
                             per_example=per_example,
                             extra_summary={"mode": cfg.mode, "teacher_ckpt": teacher_ckpt,
                                            "teacher_dev": teacher_dev})
  _export(ctx, workdir, s_config, params,
          {"task": ctx.task.name, "num_labels": ctx.task.num_labels,
           "label_names": list(ctx.task.label_names or []), "dev": summary["export"]["dev"]},
          summary, "student")
  if teacher:  # what distillation bought: the student's size and prediction speed-up
    summary["inference"] = evaluation.inference_speed(
        ctx, {"teacher": teacher, "student": (student, params)})
  loop.write_summary(workdir, summary)
  return summary


def plan_lines(ctx: Context) -> list[str]:
  """What the run will do, before it does it: phases, steps, examples, buckets, where results go."""
  cfg, workdir = ctx.cfg, pathlib.Path(ctx.cfg.workdir)
  dev = ", ".join(f"{name} {len(split):,}" for name, split in ctx.dev.items())
  every = cfg.eval_every if str(cfg.eval_every) == "epoch" else int(cfg.eval_every)
  evals = ("at the end" if not every else
           f"every {'epoch' if every == 'epoch' else f'{every} steps'} and at the end")
  lines = [f"{cfg.mode} on {ctx.task.name}: {len(ctx.train):,} training examples, dev: {dev}; "
           f"batches padded to lengths {','.join(map(str, ctx.buckets)) or cfg.max_seq_len}"]
  student_steps = loop.total_train_steps(cfg, len(ctx.train), cfg.num_epochs)
  if cfg.mode == "train_teacher" or (cfg.mode == "distill" and not cfg.teacher_ckpt and not (
      workdir / "teacher" / "final" / "model.json").exists()):
    steps = loop.total_train_steps(cfg.replace(num_train_steps=None), len(ctx.train),
                                   cfg.teacher_num_epochs)
    where = workdir if cfg.mode == "train_teacher" else workdir / "teacher"
    epochs = f"{cfg.teacher_num_epochs:g} epoch{'' if cfg.teacher_num_epochs == 1 else 's'}"
    lines.append(f"  fine-tune the teacher ({cfg.teacher}): {steps:,} steps of {cfg.batch_size} "
                 f"({epochs}), into {where}")
  elif cfg.mode == "distill":
    lines.append(f"  teacher: {cfg.teacher_ckpt or workdir / 'teacher' / 'final'} (already trained)")
  if cfg.mode != "train_teacher":
    verb = "distil" if cfg.mode == "distill" else "fine-tune"
    lines.append(f"  {verb} a {cfg.student_layers}x{cfg.student_hidden} student (aug={cfg.aug}): "
                 f"{student_steps:,} steps of {cfg.batch_size}")
  lines.append(f"  evaluate {evals}; export {cfg.export} step"
               + (f"; stop after {cfg.early_stopping_patience} evaluations without improvement"
                  if cfg.early_stopping_patience else ""))
  lines.append(f"results: {workdir}/ (summary.json, metrics.jsonl, tensorboard/, final/hf/); a time "
               "estimate follows the first steps of each phase")
  return lines


def run(cfg: Config) -> dict[str, Any]:
  """Run one mode end to end and return its summary (also written to `<workdir>/summary.json`)."""
  cfg.validate()
  if cfg.mode == "benchmark":
    from augpro_jax import bench  # pylint: disable=g-import-not-at-top
    return bench.run(cfg)
  if cfg.mode == "compile":
    from augpro_jax import aot  # pylint: disable=g-import-not-at-top
    return aot.run(cfg)
  with interrupts.handle_signals(jax.process_count()):
    if cfg.mode in ("eval", "predict"):
      from augpro_jax import predict  # pylint: disable=g-import-not-at-top
      return predict.run(cfg)
    ctx = context.build_context(cfg)  # validates data first
    workdir = pathlib.Path(cfg.workdir)
    created = not workdir.exists()
    try:
      return _train_in(ctx, workdir)
    except BaseException:
      # A start that failed leaves no empty workdir behind. Whichever process made it removes it
      # (processes race to make it); a workdir with anything in it stays.
      if created:
        _remove_if_empty(workdir)
      raise


def _remove_if_empty(directory: pathlib.Path) -> None:
  try:
    directory.rmdir()  # refused (OSError) unless empty
  except OSError:
    pass


def _train_in(ctx: Context, workdir: pathlib.Path) -> dict[str, Any]:
  """Claim `workdir` (lock, identity), then train the mode's model in it."""
  cfg = ctx.cfg
  context.ensure_workdir(cfg.workdir)
  interrupts.stop_if_requested("between_phases", "while reading the data, before anything was "
                               "written")
  if distributed.is_main_process():
    print("\n".join(plan_lines(ctx)), flush=True)
  digests = workdir_lib.data_digest({"train": ctx.train, **ctx.dev})
  distributed.same_data(digests)
  identity = workdir_lib.identity(cfg, digests, ctx.task.label_names)
  with workdir_lib.claim(workdir, identity, agree=distributed.agree,
                         adopt=cfg.adopt_checkpoints):
    if distributed.is_main_process():  # what a killed export left behind
      checkpoints.tidy_exports(workdir)
      checkpoints.tidy_exports(workdir / "teacher")
    if cfg.mode == "train_teacher":
      _, _, info = train_teacher(ctx, workdir)
      summary = (json.loads((workdir / "summary.json").read_text())
                 if distributed.is_main_process() else info)
    else:
      summary = train_student(ctx, "kd" if cfg.mode == "distill" else "labels")
    # A signal during the final save, export or summary: the results are complete, but the
    # process was asked to stop and must not look like it ignored that.
    interrupts.stop_if_requested("between_phases", "after the run finished",
                                 f"its results in {workdir} are complete")
  return summary
