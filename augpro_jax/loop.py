"""The generic training loop: `fit` runs the step on the mesh with checkpoints, evaluation and logging.

Its parts are small and separate: `run_log` (the writers, the step timer and the metric logger),
`compile_steps` (one compile per length bucket before the loop, with XLA's memory analysis) and
`build_summary`. Run counters (measured shift, non-finite steps, real and processed tokens) live in
the checkpointed `TrainState`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import pathlib
from typing import Any, Callable, Optional

import jax
import numpy as np
from absl import logging

from augpro_jax import augmentations
from augpro_jax import checkpoints
from augpro_jax import distributed
from augpro_jax import context
from augpro_jax import evaluation
from augpro_jax import files
from augpro_jax import flops as flops_lib
from augpro_jax import input_pipeline as pipeline
from augpro_jax import interrupts
from augpro_jax import model as model_lib
from augpro_jax import optimizer as optimizer_lib
from augpro_jax import progress as progress_lib
from augpro_jax import selection
from augpro_jax import sharding
from augpro_jax.run_log import MetricLogger, StepTimer, Writers
from augpro_jax import train_step as step_lib
from augpro_jax.config import Config


@contextlib.contextmanager
def preemption_guard(process_count: int = 1):
  """SIGTERM/SIGINT set a flag; the loop finishes its step, checkpoints, and raises Preempted.

  Multi-process runs install no handler: `jax.distributed.initialize` started JAX's preemption
  service, whose own (C++) SIGTERM handler tells every host, and `reached_preemption_sync_point`
  then names one step at which all of them stop. A Python handler would replace JAX's, and a host
  stopping on its own would leave the others waiting in a collective forever.
  """
  # The handler is `interrupts.handle_signals`, which `train.run` already holds for the whole run,
  # so a signal between phases is not lost; this makes `fit` safe to call on its own too.
  with interrupts.handle_signals(process_count):
    yield


def _preemption_requested(step: int, process_count: int) -> bool:
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
  return interrupts.requested("step") is not None


def total_train_steps(cfg: Config, num_examples: int, num_epochs: float) -> int:
  if cfg.num_train_steps:
    return cfg.num_train_steps
  return max(1, int(math.ceil(num_epochs * pipeline.steps_per_epoch(num_examples, cfg.batch_size))))


def compile_steps(ctx: context.Context, step: Callable, state: Any, teacher_params: Any,
                  first_batch: Any, start_step: int, num_steps: int
                  ) -> tuple[step_lib.CompiledSteps, float, dict[str, float]]:
  """Compile the step once per bucket length the remaining steps use, before the loop:
  (callable, seconds, XLA memory analysis in MB of the longest). `state` and `teacher_params` are
  on the mesh; `first_batch` is a host batch."""
  run_step = step_lib.CompiledSteps(step)
  remaining = pipeline.bucket_steps(ctx.train, ctx.cfg.batch_size, ctx.cfg.seed, start_step,
                                    num_steps, ctx.buckets)
  for length in sorted(remaining or {first_batch["input_ids"].shape[-1]: 1}, reverse=True):
    run_step.compile(state, teacher_params,
                     sharding.put_batch(ctx.mesh, pipeline.with_length(first_batch, length)))
  seconds = sum(run_step.compile_seconds.values())
  memory = flops_lib.memory_summary(run_step.executables[max(run_step.executables)])
  logging.info("compiled the train step for lengths %s in %.1fs; memory: %s",
               sorted(run_step.executables), seconds, memory)
  return run_step, seconds, memory


def bucket_summary(ctx: context.Context, final_state: step_lib.TrainState,
                   steps_per_length: dict[int, int],
                   compile_seconds: dict[int, float]) -> dict[str, Any]:
  """summary.json's length-bucket fields: the buckets, steps and compile time per length, and the
  token utilisation (real tokens / tokens processed) of training (every step, resumes included)
  and of evaluation (all dev splits)."""
  padded = float(final_state.padded_tokens)
  return {
      "length_buckets": list(ctx.buckets),
      "steps_per_length": {str(k): v for k, v in steps_per_length.items()},
      "compile_seconds_per_length": {str(k): v for k, v in sorted(compile_seconds.items())},
      "token_utilisation": {
          "train": float(final_state.real_tokens) / padded if padded else None,
          "eval": pipeline.eval_token_utilisation(list(ctx.dev.values()), ctx.cfg.eval_batch_size,
                                                  ctx.buckets, ctx.layout)},
  }


def restore_or_init(manager: Any, state: step_lib.TrainState) -> tuple[int, step_lib.TrainState]:
  """(step, state) of the newest readable checkpoint, else (0, the given fresh state)."""
  restored, state = checkpoints.restore_latest(manager, jax.device_get(state))
  start_step = int(state.step) if restored is not None else 0
  if start_step:
    print(f"resuming {pathlib.Path(manager.directory).parent} from step {start_step}", flush=True)
  return start_step, state


class Saver:
  """A run's checkpoints: saves through orbax and remembers the newest step on disk."""

  def __init__(self, manager: Any, step: int):
    self.manager, self.step = manager, step

  def save(self, step: int, state: Any, metrics: Optional[dict[str, float]] = None) -> None:
    interrupts.requested("save")  # a signal during a save is honoured after it
    # Whole arrays, not the mesh's shards: a checkpoint restores onto any mesh.
    checkpoints.save(self.manager, step, sharding.gather(state), metrics)
    self.step = step

  def ensure(self, step: int, state: Any, metrics: Optional[dict[str, float]] = None) -> None:
    """Save `step` unless it is on disk already (orbax refuses a second save of one step)."""
    if self.step != step:
      self.save(step, state, metrics)


def evaluate_and_log(ctx: context.Context, model: model_lib.BertClassifier, predict_step,
                     state: Any, step: int, *, writers: Writers, tracker: selection.Tracker,
                     saver: Saver, predictions: Optional[dict[str, np.ndarray]] = None
                     ) -> dict[str, float]:
  """Dev metrics at `step`, logged and tracked for the best; a signal between evaluation batches
  checkpoints the step and stops the run."""
  predictions = {} if predictions is None else predictions
  try:
    metrics = evaluation.evaluate(ctx, model, state.params, predict_step, predictions)
  except interrupts.StopRequested as exc:  # stopped between eval batches: keep the step
    saver.ensure(step, state)
    raise interrupts.Preempted(
        f"stopped by {exc.signal_name} during {exc.during} at step {step}; checkpoint saved in "
        f"{pathlib.Path(saver.manager.directory).parent}; run the same command again to resume"
    ) from None
  # The shares go to the log only: the summary and the best-step tracking keep the task's metrics.
  writers.write(step, "eval", {**metrics, **evaluation.predicted_shares(ctx, predictions)})
  tracker.update(step, metrics)
  return metrics


def run_flops(ctx: context.Context, spec: step_lib.StepSpec, model: model_lib.BertClassifier,
              teacher_model: Optional[model_lib.BertClassifier], num_steps: int
              ) -> tuple[dict[int, int], dict[str, float]]:
  """(steps per bucket length, analytic FLOPs of the run's mean step by part)."""
  cfg = ctx.cfg
  steps_per_length = pipeline.bucket_steps(ctx.train, cfg.batch_size, cfg.seed, 0, num_steps,
                                           ctx.buckets)
  return steps_per_length, flops_lib.mean_step_flops(
      steps_per_length, aug=spec.aug, objective=spec.objective,
      teacher=teacher_model.config if teacher_model else None, student=model.config,
      batch=cfg.batch_size, shift_degree=spec.augment.shift_degree,
      aug_copies=spec.augment.aug_copies, cached_teacher_logits=spec.cached_teacher_logits,
      fgsm_loss=spec.augment.fgsm_loss)


def fit(ctx: context.Context, *, workdir: pathlib.Path, model: model_lib.BertClassifier,
        params: Any, spec: step_lib.StepSpec, num_steps: int, learning_rate: float,
        teacher: Optional[tuple[model_lib.BertClassifier, Any]] = None,
        per_example: Optional[dict[str, np.ndarray]] = None,
        extra_summary: Optional[dict[str, Any]] = None) -> tuple[Any, dict[str, Any]]:
  """Train `model` from `params` for `num_steps` under `spec`; resume from `workdir` if possible.

  per_example: arrays [N_train, ...] that ride along with each batch (cached teacher logits).
  Returns the params to export (the last step's, or with --export=best the best evaluated step's)
  and the run's summary. With --early_stopping_patience the run may end before `num_steps`.
  """
  cfg = ctx.cfg
  context.ensure_workdir(workdir)
  optimizer, schedule = optimizer_lib.make_optimizer(learning_rate, num_steps,
                                                     cfg.warmup_fraction, cfg.weight_decay)
  manager = checkpoints.make_manager(workdir / "checkpoints", keep=cfg.keep_checkpoints,
                                     best_metric=evaluation.main_metric_key(ctx))
  start_step, state = restore_or_init(manager, step_lib.init_state(params, optimizer, cfg.seed))
  tracker = selection.make_tracker(
      cfg, evaluation.main_metric_key(ctx),
      pipeline.steps_per_epoch(len(ctx.train), cfg.batch_size)).restore(manager, start_step)
  teacher_model, teacher_params = teacher if teacher else (None, {})
  aug = augmentations.get(spec.aug)
  step_fn = step_lib.make_train_step(spec, model, teacher_model, optimizer, ctx.is_special,
                                     ctx.is_candidate, ctx.token_flags)
  host_augment = aug.make_host_augment(cfg) if aug.make_host_augment else None
  state = sharding.put_tree(ctx.mesh, state)
  teacher_params = sharding.put_tree(ctx.mesh, teacher_params)

  def make_batch(step):
    return pipeline.train_batch(ctx.train, step, cfg.batch_size, cfg.seed, ctx.layout,
                                host_augment, ctx.tokenizer, cfg.max_seq_len, per_example or {},
                                ctx.buckets)

  first_batch = make_batch(min(start_step, num_steps - 1))
  step = sharding.mesh_step(step_fn, ctx.mesh, state, teacher_params, first_batch)
  run_step, compile_seconds, memory = compile_steps(ctx, step, state, teacher_params, first_batch,
                                                    start_step, num_steps)
  steps_per_length, step_flops = run_flops(ctx, spec, model, teacher_model, num_steps)
  writers = Writers(workdir, distributed.is_main_process(), start_step)
  writers.write(start_step, "compile", {"seconds": compile_seconds, **memory,
                                        "flops_per_step": step_flops["total"],
                                        "seconds_per_length": run_step.compile_seconds})
  timer = StepTimer()
  saver = Saver(manager, start_step)
  loop = Loop(ctx, run_step, make_batch, MetricLogger(cfg, writers, schedule, step_flops["total"],
                                                      timer), timer, saver, tracker,
              functools.partial(evaluate_and_log, ctx, model,
                                step_lib.make_predict_step(model, ctx.mesh),
                                writers=writers, tracker=tracker, saver=saver))
  state, end_step = loop.run(state, teacher_params, start_step, num_steps)
  if loop.last_eval is None:  # not evaluated at end_step yet (stopping early, it was)
    loop.last_eval = loop.evaluate(state, end_step, predictions=loop.predictions)
  dev = loop.last_eval
  evaluation.write_dev_predictions(workdir / "dev_predictions.npz", ctx, loop.predictions)
  saver.ensure(end_step, state, dev)
  writers.close()
  final_state = sharding.gather(state)
  export_step, export_params, export_dev = choose_export(cfg, tracker, manager, final_state,
                                                         end_step, dev)
  summary = build_summary(ctx, final_state, dev=dev, best=tracker.summary(), start_step=start_step,
                          num_steps=num_steps, timer=timer, compile_seconds=compile_seconds,
                          step_flops=step_flops, aug=aug)
  summary.update(steps_trained=end_step, early_stopped_at=end_step if end_step < num_steps else None,
                 export={"which": cfg.export, "step": export_step, "dev": export_dev})
  buckets = bucket_summary(ctx, final_state, steps_per_length, run_step.compile_seconds)
  return export_params, {**summary, **buckets, **(extra_summary or {})}


class Loop:
  """The steps of one `fit`: train, log, evaluate, checkpoint, stop early or on a signal."""

  def __init__(self, ctx: context.Context, run_step: Callable, make_batch: Callable,
               logger: MetricLogger, timer: StepTimer, saver: Saver, tracker: selection.Tracker,
               evaluate: Callable):
    self.ctx, self.cfg, self.run_step, self.make_batch = ctx, ctx.cfg, run_step, make_batch
    self.logger, self.timer, self.saver, self.tracker = logger, timer, saver, tracker
    self.evaluate = evaluate
    # The newest evaluation's metrics and predictions when the run stopped right after it.
    self.last_eval: Optional[dict[str, float]] = None
    self.predictions: dict[str, np.ndarray] = {}

  def run(self, state: Any, teacher_params: Any, start_step: int, num_steps: int
          ) -> tuple[Any, int]:
    """(state, the step the run ended at: `num_steps`, or earlier when it stopped early)."""
    cfg, process_count = self.cfg, self.ctx.layout.process_count
    if self.tracker.should_stop(start_step):  # a run that stopped early, started again
      self._say(self.tracker.stop_message(start_step))
      return state, start_step
    progress = progress_lib.Progress(num_steps, start_step, cfg.log_every,
                                     cfg.progress and distributed.is_main_process())
    try:
      mesh = self.ctx.mesh
      # Host work and the host->device copy both happen on the prefetch thread, which an early
      # exit (an error, a signal, early stopping) stops and joins.
      with preemption_guard(process_count), contextlib.closing(pipeline.prefetch(
          lambda i: sharding.put_batch(mesh, self.make_batch(i)), start_step, num_steps)) as batches:
        self.timer.lap()
        for step in range(start_step, num_steps):
          state, metrics = self.run_step(state, teacher_params, next(batches))
          self.logger.add(step, metrics)
          done = step + 1
          if done % cfg.log_every == 0 or done == num_steps:
            self.logger.flush(done)  # the only host sync on ordinary steps
          progress.update(1, self.logger.last, self.timer)
          if done == num_steps:
            break
          if self._evaluate_or_save(state, done):
            self._say(self.tracker.stop_message(done))
            return state, done
          if _preemption_requested(done, process_count):
            self.logger.flush(done)
            self.saver.ensure(done, state)  # a signal during a checkpoint step has its checkpoint
            raise interrupts.Preempted(
                f"stopped at step {done} by {interrupts.received() or 'a signal'}; checkpoint "
                f"saved in {pathlib.Path(self.saver.manager.directory).parent}; run the same "
                "command again to resume")
        self.logger.flush(num_steps)
    finally:
      progress.close()
    return state, num_steps

  @staticmethod
  def _say(text: str) -> None:
    if distributed.is_main_process():
      print(text, flush=True)

  def _evaluate_or_save(self, state: Any, done: int) -> bool:
    """Evaluate and checkpoint when due after step `done`; True if the run should stop early."""
    eval_now = self.tracker.is_eval_step(done)
    # Selecting runs checkpoint every evaluation: the best step stays on disk, for export and resume.
    save_now = (self.cfg.checkpoint_every and done % self.cfg.checkpoint_every == 0) or \
        (eval_now and self.tracker.selects)
    if not (eval_now or save_now):
      return False
    self.logger.flush(done)
    with self.timer.paused():
      self.predictions = {}
      last_eval = self.evaluate(state, done, predictions=self.predictions) if eval_now else None
      if save_now:
        self.saver.save(done, state, last_eval)
    if not (eval_now and self.tracker.should_stop(done)):
      return False
    self.last_eval = last_eval
    return True


def choose_export(cfg: Config, tracker: selection.Tracker, manager: Any,
                  final_state: step_lib.TrainState, end_step: int, dev: dict[str, float]
                  ) -> tuple[int, Any, dict[str, float]]:
  """(step, params, dev metrics) of the model to export: the last step's, or the best's."""
  if cfg.export != "best" or tracker.best_step in (None, end_step):
    return end_step, final_state.params, dev
  best_state = checkpoints.restore_step(manager, tracker.best_step, final_state)
  if distributed.is_main_process():
    print(f"exporting step {tracker.best_step} ({tracker.metric}={tracker.best_value:.4f}), the "
          f"best evaluated step, not the last ({end_step})", flush=True)
  return tracker.best_step, best_state.params, tracker.best_metrics


def build_summary(ctx: context.Context, final_state: step_lib.TrainState, *, dev: dict,
                  best: dict, start_step: int, num_steps: int, timer: StepTimer,
                  compile_seconds: float, step_flops: dict[str, float],
                  aug: augmentations.Augmentation) -> dict[str, Any]:
  """What `summary.json` says about a finished `fit`."""
  cfg = ctx.cfg
  shift_steps = int(final_state.shift_steps)
  return {
      "task": ctx.task.name,
      "aug": cfg.aug,
      "shift_degree": cfg.shift_degree if aug.reports_shift else None,
      "measured_shift": float(final_state.shift_sum) / shift_steps if shift_steps else None,
      "measured_shift_steps": shift_steps,
      "projection_profile": step_lib.run_profile(final_state) if aug.projects else None,
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
      "examples_per_sec": timer.examples_per_sec(cfg.batch_size),
      "train_seconds": timer.seconds,
      "compile_seconds": compile_seconds,
      "flops_per_step": step_flops,
      "devices": jax.device_count(),
      "mesh": {axis: int(size) for axis, size in ctx.mesh.shape.items()},
      "processes": ctx.layout.process_count,
      "device_kind": jax.local_devices()[0].device_kind,
      "student_params_sha256": checkpoints.params_sha256(final_state.params),
      "params": model_lib.count_params(final_state.params),
  }


def write_summary(workdir: pathlib.Path, summary: dict[str, Any]) -> None:
  if not distributed.is_main_process():
    return
  # A failure leaves the export and checkpoints on disk: only the summary is missing.
  files.atomic_write(workdir / "summary.json", json.dumps(summary, indent=2, sort_keys=True))
