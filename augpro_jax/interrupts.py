"""SIGTERM and SIGINT: noted at once, honoured at the next safe point of whatever phase is running.

`handle_signals()` is held for a whole run (teacher fine-tuning, the teacher-logit pass, student
training, evaluation, checkpointing, export). The handler only records the signal. The phases ask
`requested(phase)` at their safe points: `fit` after every step (and saves that step before
raising `Preempted`), `predict` before every eval batch (raising `StopRequested`, which `fit`
turns into a checkpoint of the step it had finished), and `run` between phases. So a stop lands
within one step or one eval batch, never later, and never silently: the process then exits with
status 3, even when the signal came after the last step.

A second signal while stopping gets the default action (the process ends at once): checkpoints
already written are complete, orbax renames a step into place only when it is whole.

Multi-process runs install no handler: JAX's preemption service owns SIGTERM there, and the
hosts agree on a step to stop at (see `loop.preemption_guard`).

For tests, `AUGPRO_JAX_SIGNAL_AT=<phase>:<n>` makes the process send itself SIGTERM when
`requested(<phase>)` is asked for the n-th time, so that a signal lands inside a chosen phase
whatever the speed of the machine. Phases: step, eval, teacher_logits, save, between_phases.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
from typing import Optional

_HANDLED = (signal.SIGTERM, signal.SIGINT)
_state = {"signal": None, "depth": 0, "previous": {}}
_asked: collections.Counter = collections.Counter()


class Preempted(Exception):
  """A signal stopped the run; everything it finished is saved. main.py exits with status 3."""


class StopRequested(Preempted):
  """A signal arrived inside a phase that has no checkpoint of its own (an eval or teacher-logit
  pass); the caller saves what it has and says so. Uncaught (--mode=eval), nothing needed saving.
  """

  def __init__(self, signal_name: str, during: str):
    super().__init__(f"stopped by {signal_name} during {during}; nothing needed saving")
    self.signal_name, self.during = signal_name, during


@contextlib.contextmanager
def handle_signals(process_count: int = 1):
  """Record SIGTERM/SIGINT for the duration; nested uses share the outermost handler."""
  if process_count > 1:
    yield
    return
  _state["depth"] += 1
  installed = []
  if _state["depth"] == 1:
    _state["signal"] = None
    for sig in _HANDLED:
      try:
        _state["previous"][sig] = signal.signal(sig, _handler)
        installed.append(sig)
      except ValueError:  # not the main thread (some test runners): no handler
        pass
  try:
    yield
  finally:
    _state["depth"] -= 1
    for sig in installed:
      signal.signal(sig, _state["previous"].pop(sig))


def _handler(signum, frame) -> None:  # pylint: disable=unused-argument
  if _state["signal"] is not None:
    # Asked twice: stop now, the default way.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return
  _state["signal"] = signal.Signals(signum).name


def requested(phase: str) -> Optional[str]:
  """The name of the signal received so far ('SIGTERM'), or None. Called at a phase's safe point."""
  _asked[phase] += 1
  target = os.environ.get("AUGPRO_JAX_SIGNAL_AT", "")
  if target and _state["depth"] and target == f"{phase}:{_asked[phase]}":
    os.kill(os.getpid(), signal.SIGTERM)
  return _state["signal"]


# What each phase that checks inside itself is called in messages.
_DURING = {"eval": "evaluation", "teacher_logits": "the teacher-logit pass"}


def stop_inside(phase: str, process_count: int = 1) -> None:
  """Raise `StopRequested` if a signal arrived; called before each batch of an eval or
  teacher-logit pass. Multi-process runs stop only at a step all hosts agree on."""
  if process_count == 1:
    name = requested(phase)
    if name:
      raise StopRequested(name, _DURING.get(phase, phase))


def received() -> Optional[str]:
  """The signal received so far, without counting as a safe point."""
  return _state["signal"]


def stop_if_requested(phase: str, where: str, then: str = "run the same command again to resume"
                      ) -> None:
  """Raise `Preempted` (saying `where` the run stopped, and what `then`) if a signal arrived."""
  name = requested(phase)
  if name:
    raise Preempted(f"stopped by {name} {where}; {then}")
