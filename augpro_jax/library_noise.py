"""What orbax and tensorstore print around a failure that the project's one-line messages replace.

The project promises one line and no traceback for bad input, a full disk or a corrupt
checkpoint; these libraries log or print their own tracebacks for the same events. Each helper
drops exactly those reports and passes every other one on.
"""

from __future__ import annotations

import contextlib
import logging as pylogging
import os
import sys
from typing import Any, Optional

from absl import logging


@contextlib.contextmanager
def quiet_orbax_errors():
  """Drop orbax's ERROR log records (with tracebacks) while saving: `save` reports the failure
  as one line instead, and the project promises no traceback for bad input or a full disk."""

  def keep(record: pylogging.LogRecord) -> bool:
    return not (record.levelno >= pylogging.ERROR and f"{os.sep}orbax{os.sep}" in record.pathname)

  logger = logging.get_absl_logger()
  logger.addFilter(keep)
  try:
    yield
  finally:
    logger.removeFilter(keep)


def drop_closed_event_loop_reports() -> None:
  """Drop the "Event loop is closed" reports (and asyncio's reports of the same failed reads) that
  a failed restore leaves behind.

  When a restore fails part way, orbax closes its event loop while tensorstore still has reads in
  flight. Each of them then fails in `loop.call_soon_threadsafe` and reports it from tensorstore's
  own thread, a traceback apiece, some after `restore` returned: through `sys.excepthook` (its
  callbacks end in `PyErr_Print`) or `sys.unraisablehook`. They say nothing the fallback warning
  does not, so from the first failed restore on, this process drops exactly those reports (that
  error, raised in `call_soon_threadsafe`) and passes every other one on.
  """
  if getattr(sys.excepthook, "_drops_closed_event_loop", False):
    return
  # The same reads' errors also end in asyncio tasks nobody awaits any more; asyncio logs each
  # one ("Task exception was never retrieved") with a traceback when the task is collected.
  pylogging.getLogger("asyncio").addFilter(_keep_asyncio_record)
  previous_excepthook, previous_unraisablehook = sys.excepthook, sys.unraisablehook

  def excepthook(kind, value, traceback):
    if not _is_closed_loop_report(value, traceback):
      previous_excepthook(kind, value, traceback)

  def unraisablehook(unraisable):
    if not _is_closed_loop_report(unraisable.exc_value, unraisable.exc_traceback):
      previous_unraisablehook(unraisable)

  excepthook._drops_closed_event_loop = True  # pylint: disable=protected-access
  sys.excepthook, sys.unraisablehook = excepthook, unraisablehook


def _keep_asyncio_record(record: pylogging.LogRecord) -> bool:
  """False for asyncio's report of a never-retrieved tensorstore read error (a failed restore's
  leftover reads); True for everything else."""
  # The loop's handler logs the message, then a "future: <Task ...>" line: match the first line.
  if not str(record.msg).split("\n", 1)[0].endswith("exception was never retrieved"):
    return True
  exc = record.exc_info[1] if record.exc_info else None
  return not (isinstance(exc, ValueError) and "tensorstore_spec" in str(exc))


def _is_closed_loop_report(exc: Optional[BaseException], traceback: Any) -> bool:
  if not (isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"):
    return False
  frames = []
  while traceback is not None:
    frames.append(traceback.tb_frame.f_code.co_name)
    traceback = traceback.tb_next
  return "call_soon_threadsafe" in frames
