"""Training progress: a live bar on a terminal, a plain line every N steps anywhere else.

A bar redraws itself with carriage returns, which in a log file (a batch job's output, a pipe)
become one long line of overwritten text; so the bar is shown only when stderr is a terminal, and
otherwise the loop prints `step 20/100 (20%), loss 0.6931, lr 4.0e-05, 3.1 steps/s, 26s left` every
`every` steps. Either way, once the first `ESTIMATE_AFTER` steps are timed, one line says how long
the phase will take.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Optional, TextIO

ESTIMATE_AFTER = 10  # timed steps before the one-line estimate: fewer mislead, as the first
# steps may all be short length buckets (3 steps of a 375-step SST-2 run said a third of the time)


class Progress:
  """`update(n)` after every n steps, `close()` at the end (also after an exception)."""

  def __init__(self, total: int, initial: int, every: int, enabled: bool,
               terminal: Optional[bool] = None, stream: Optional[TextIO] = None):
    self.total, self.step, self.every = total, initial, max(1, every)
    self.enabled = enabled
    self.stream = stream or sys.stdout
    self._start_step, self._start_time = initial, time.perf_counter()
    self._bar = None
    self._estimated = False
    self.values: dict[str, float] = {}
    if terminal is None:
      terminal = _is_terminal(sys.stderr)
    if enabled and terminal:
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                       file=sys.stderr, leave=False)

  def update(self, n: int = 1, values: Optional[dict[str, float]] = None, timer: Any = None
             ) -> None:
    """After `n` more steps; `values`: the newest logged train metrics (loss, learning_rate);
    `timer`: the loop's `StepTimer` (its time leaves evaluation and checkpoints out)."""
    self.step += n
    self.values = values or self.values
    if self._bar is not None:
      self._bar.update(n)
      if self.values:
        self._bar.set_postfix_str(self._metrics_text(), refresh=False)
    elif self.enabled and (self.step % self.every == 0 or self.step == self.total):
      print(self.line(), file=self.stream, flush=True)
    if self.enabled and not self._estimated and self.step - self._start_step >= ESTIMATE_AFTER:
      self._estimated = True
      remaining = self.total - self.step
      if remaining > 0:
        self._write(self.estimate(timer))

  def _metrics_text(self) -> str:
    parts = []
    if "loss" in self.values:
      parts.append(f"loss {self.values['loss']:.4f}")
    if "learning_rate" in self.values:
      parts.append(f"lr {self.values['learning_rate']:.1e}")
    return ", ".join(parts)

  def _seconds_per_step(self, timer: Any = None) -> Optional[float]:
    if timer is not None and timer.steps:
      return timer.seconds / timer.steps
    done = self.step - self._start_step
    return (time.perf_counter() - self._start_time) / done if done else None

  def estimate(self, timer: Any = None) -> str:
    per_step = self._seconds_per_step(timer) or 0.0
    remaining = self.total - self.step
    return (f"estimate: {per_step:.2f} s/step over the first {self.step - self._start_step} "
            f"steps, about {duration(per_step * remaining)} for the remaining {remaining} "
            "steps (plus evaluation)")

  def line(self) -> str:
    done = self.step - self._start_step
    seconds = time.perf_counter() - self._start_time
    text = f"step {self.step}/{self.total} ({100 * self.step / max(self.total, 1):.0f}%)"
    if self.values:
      text += ", " + self._metrics_text()
    if done and seconds > 0:
      rate = done / seconds
      text += f", {rate:.2f} steps/s, {duration((self.total - self.step) / rate)} left"
    return text

  def _write(self, text: str) -> None:
    if self._bar is not None:
      self._bar.write(text, file=sys.stderr)
    else:
      print(text, file=self.stream, flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None
    self._estimated = False
    self.values: dict[str, float] = {}


def _is_terminal(stream: TextIO) -> bool:
  try:
    return stream.isatty()
  except (AttributeError, ValueError):  # a replaced or closed stream
    return False


def duration(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
