"""What a run writes as it trains: metrics.jsonl and TensorBoard (`Writers`), the training wall
time with evaluation and checkpoint pauses left out (`StepTimer`), and the step metrics fetched in
blocks, with learning rate, throughput, MFU and the non-finite policy (`MetricLogger`)."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import pathlib
import sys
import threading
import time
from typing import Any, Callable, Optional

import jax

from augpro_jax import files
from augpro_jax import flops as flops_lib
from augpro_jax.config import Config
from augpro_jax.errors import UserError


def _summary_writer_class() -> type:
  """tensorboardX's SummaryWriter, imported without torch where torch is installed: tensorboardX
  only uses torch to accept torch tensors (these writers get Python floats), and importing it
  costs about a second of every run's start-up."""
  block = "torch" not in sys.modules
  if block:
    sys.modules["torch"] = None  # `import torch` raises ImportError, which tensorboardX handles
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  finally:
    if block:
      del sys.modules["torch"]
  return SummaryWriter


class Writers:
  """metrics.jsonl + TensorBoard, written by process 0 only."""

  def __init__(self, workdir: pathlib.Path, enabled: bool, start_step: int = 0):
    self.enabled = enabled
    self.jsonl = None
    self.tb = None
    if enabled:
      _rewind_metrics(workdir / "metrics.jsonl", start_step)
      # Unbuffered bytes: each record is one write, undone if it fails (see `_append`).
      self.jsonl = open(workdir / "metrics.jsonl", "ab", buffering=0)
      self.tb = _summary_writer_class()(str(workdir / "tensorboard"))
      _catch_event_writer_errors()

  def write(self, step: int, kind: str, values: dict[str, Any]) -> None:
    if not self.enabled:
      return
    record = {"step": step, "kind": kind, **values}
    try:
      _append(self.jsonl, (json.dumps(record) + "\n").encode("utf-8"))
      if _EVENT_WRITER_ERRORS:  # its thread died: a put would block once the queue is full
        raise _EVENT_WRITER_ERRORS[0]
      for key, value in values.items():
        if isinstance(value, (int, float)) and value is not None and math.isfinite(value):
          self.tb.add_scalar(f"{kind}/{key}", value, step)
    except OSError as exc:  # a full disk: the checkpoints written so far are intact
      raise UserError(f"cannot write metrics in {self.jsonl.name}: {exc.strerror or exc}; "
                      "checkpoints so far are kept, rerun the same command to resume") from None

  def close(self) -> None:
    if self.enabled:
      self.jsonl.close()
      if not _EVENT_WRITER_ERRORS:  # else closing would wait for the dead thread forever
        try:
          self.tb.close()
        except OSError as exc:
          raise UserError(f"cannot write TensorBoard events in {self.jsonl.name}'s folder: "
                          f"{exc.strerror or exc}") from None


# OSErrors of tensorboardX's writer thread (a full disk): kept for the main thread to report as
# one line, instead of a thread traceback followed by a hang on the writer's full queue.
_EVENT_WRITER_ERRORS: list[OSError] = []


def _catch_event_writer_errors() -> None:
  previous = threading.excepthook
  if getattr(previous, "catches_event_writer_errors", False):
    return

  def hook(args) -> None:
    if isinstance(args.exc_value, OSError) and type(args.thread).__name__ == "_EventLoggerThread":
      _EVENT_WRITER_ERRORS.append(args.exc_value)
    else:
      previous(args)

  hook.catches_event_writer_errors = True
  threading.excepthook = hook


def _append(file, data: bytes) -> None:
  """Append `data` whole or not at all: a full disk must not leave half a JSON line."""
  size = os.fstat(file.fileno()).st_size
  try:
    if file.write(data) != len(data):
      raise OSError(errno.ENOSPC, "No space left on device (a short write)")
  except OSError:
    os.ftruncate(file.fileno(), size)
    raise


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
  files.atomic_write(path, "".join(kept_lines))


class StepTimer:
  """Training wall time between host syncs; `paused()` leaves evaluation and checkpoints out."""

  def __init__(self):
    self.seconds, self.steps = 0.0, 0
    self._start = time.perf_counter()

  def lap(self, steps: int = 0) -> None:
    now = time.perf_counter()
    self.seconds += now - self._start
    self.steps += steps
    self._start = now

  @contextlib.contextmanager
  def paused(self):
    self.lap()
    try:
      yield
    finally:
      self._start = time.perf_counter()

  def examples_per_sec(self, batch_size: int) -> Optional[float]:
    return batch_size * self.steps / max(self.seconds, 1e-9) if self.steps else None


class MetricLogger:
  """Device metrics of each step, fetched in blocks (one host sync per block) and written."""

  def __init__(self, cfg: Config, writers: Writers, schedule: Callable[[int], Any],
               flops_per_step: float, timer: StepTimer):
    self.cfg, self.writers, self.schedule, self.timer = cfg, writers, schedule, timer
    self.flops_per_step = flops_per_step
    self.peak = flops_lib.device_peak_flops()
    self.devices = jax.device_count()
    self.pending: list[tuple[int, Any]] = []
    self.last: dict[str, float] = {}  # the newest logged step's values (for the console)

  def add(self, step: int, metrics: Any) -> None:
    if self.pending:
      # At most one step queued ahead of the device: it stays busy, and a signal stops the run
      # within a step (a host running ahead would reach the next sync before it noticed).
      jax.block_until_ready(self.pending[-1][1])
    self.pending.append((step, metrics))

  def flush(self, now_step: int) -> None:
    """Write the buffered steps (block first: the timer's lap ends here)."""
    if not self.pending:
      return
    jax.block_until_ready(self.pending[-1][1])
    self.timer.lap(len(self.pending))
    for s, m in jax.device_get(self.pending):
      values = {k: float(v) for k, v in m.items()}  # replicated scalars
      if values.get("nonfinite"):
        if values["nonfinite_steps"] > self.cfg.skip_nonfinite_steps:
          raise UserError(f"non-finite loss or gradient at step {s + 1}; parameters were not "
                          f"updated and the last good checkpoint is kept (see "
                          f"--skip_nonfinite_steps)")
        print(f"warning: skipped non-finite step {s + 1}", flush=True)
      values["learning_rate"] = float(self.schedule(s))
      if s + 1 == now_step or (s + 1) % self.cfg.log_every == 0:
        values.update(self.throughput())
        self.writers.write(s + 1, "train", values)
        self.last = values
    self.pending.clear()

  def throughput(self) -> dict[str, float]:
    eps = self.timer.examples_per_sec(self.cfg.batch_size)
    if eps is None:
      return {}
    out = {"examples_per_sec": eps,
           "tflops_per_sec": eps / self.cfg.batch_size * self.flops_per_step / 1e12}
    if self.peak:
      out["mfu"] = out["tflops_per_sec"] * 1e12 / (self.peak * self.devices)
    return out
