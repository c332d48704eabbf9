"""Training progress: a live bar on a terminal, a plain line every N steps anywhere else.

A bar redraws itself with carriage returns, which in a log file (a batch job's output, a pipe)
become one long line of overwritten text; so the bar is shown only when stderr is a terminal, and
otherwise the loop prints `step 20/100 (20%), 3.1 steps/s, 26s left` every `every` steps.
"""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


class Progress:
  """`update(n)` after every n steps, `close()` at the end (also after an exception)."""

  def __init__(self, total: int, initial: int, every: int, enabled: bool,
               terminal: Optional[bool] = None, stream: Optional[TextIO] = None):
    self.total, self.step, self.every = total, initial, max(1, every)
    self.enabled = enabled
    self.stream = stream or sys.stdout
    self._start_step, self._start_time = initial, time.perf_counter()
    self._bar = None
    if terminal is None:
      terminal = _is_terminal(sys.stderr)
    if enabled and terminal:
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                       file=sys.stderr, leave=False)

  def update(self, n: int = 1) -> None:
    self.step += n
    if self._bar is not None:
      self._bar.update(n)
    elif self.enabled and (self.step % self.every == 0 or self.step == self.total):
      print(self.line(), file=self.stream, flush=True)

  def line(self) -> str:
    done = self.step - self._start_step
    seconds = time.perf_counter() - self._start_time
    text = f"step {self.step}/{self.total} ({100 * self.step / max(self.total, 1):.0f}%)"
    if done and seconds > 0:
      rate = done / seconds
      text += f", {rate:.2f} steps/s, {_duration((self.total - self.step) / rate)} left"
    return text

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None


def _is_terminal(stream: TextIO) -> bool:
  try:
    return stream.isatty()
  except (AttributeError, ValueError):  # a replaced or closed stream
    return False


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
