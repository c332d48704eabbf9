"""A workdir belongs to one run: its identity (`run.json`) and one writer at a time (`run.lock`).

Resuming is "run the same command again". A command that is *not* the same would train the first
steps one way and the rest another, and `summary.json` would describe only the second half, so
the first start writes the run's identity: every setting that can change the trained parameters,
plus a digest of the tokenized data. Every later start compares, and refuses with one line that
names each differing flag.

Settings that cannot change the parameters may differ between starts; they are `MAY_DIFFER`, and
settings a mode never reads are `NOT_READ_BY` that mode. Everything else is compared.

The lock is an advisory `flock` on the workdir directory, which the kernel releases when the
holder exits in any way, SIGKILL included; `run.lock` names the holder (PID, host, start time) for
the message a second writer gets, and a clean exit removes it, so a `run.lock` found while the
lock is free was left by a run that died: it is taken over with a warning. Only process 0 of a
multi-process run locks (the other processes share its workdir).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import pathlib
import socket
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np

from augpro_jax.config import Config
from augpro_jax.errors import UserError

IDENTITY_FILE = "run.json"
LOCK_FILE = "run.lock"
IDENTITY_VERSION = 1

# Settings that may change between the starts of one run, and why each cannot change the trained
# parameters. Keep this list short: anything not here is part of the run's identity.
MAY_DIFFER: dict[str, str] = {
    "workdir": "the run's own location",
    "log_every": "how often metrics are logged",
    "eval_every": "how often the dev set is evaluated (evaluation never changes the parameters)",
    "checkpoint_every": "how often state is saved (every step is a function of (seed, step))",
    "keep_checkpoints": "how many checkpoints are kept",
    "progress": "the progress display",
    "skip_nonfinite_steps": "a tolerance: with it a run skips the same steps a stopped run hit",
    "glue_dir": "where the data is read from (the data's digest is compared instead)",
    "data_source": "where the data is read from (the data's digest is compared instead)",
    "tfds_data_dir": "where the data is read from (the data's digest is compared instead)",
    "train_file": "where the data is read from (the data's digest is compared instead)",
    "eval_file": "where the data is read from (the data's digest is compared instead)",
    "coordinator_address": "the process layout (layouts agree up to floating-point rounding)",
    "num_processes": "the process layout (layouts agree up to floating-point rounding)",
    "process_id": "the process layout (layouts agree up to floating-point rounding)",
    "distributed_timeout": "how long to wait for other processes",
    "mesh_data": "the device layout (layouts agree up to floating-point rounding)",
    "mesh_fsdp": "the device layout (layouts agree up to floating-point rounding)",
}
# --mode=benchmark and --mode=compile write no workdir; their knobs never matter to a training run.
_BENCHMARK_ONLY = ("benchmark_steps", "benchmark_warmup", "benchmark_rounds", "benchmark_augs",
                   "benchmark_peers", "benchmark_out", "benchmark_data", "teacher_layers",
                   "teacher_hidden", "topology", "compile_step", "compile_teacher", "compile_out")
_STUDENT = ("aug", "shift_degree", "aug_copies", "mix_alpha", "fgsm_eps", "projection_metric",
            "projection_table", "projection_chunk", "exclude_original", "knn_k", "shift_rounding",
            "temperature", "alpha_ce", "aug_weight", "num_epochs", "num_train_steps",
            "learning_rate", "student_layers", "student_hidden", "student_heads",
            "student_intermediate", "student_init", "cache_teacher_logits", "wordnet_dir",
            "teacher_ckpt")
_KD_ONLY = ("temperature", "alpha_ce", "teacher_ckpt", "teacher_num_epochs",
            "teacher_learning_rate", "cache_teacher_logits")
# Settings added after workdirs were first written, with the value that runs before them had in
# effect (which is not always today's default).
VALUE_BEFORE_ADDED: dict[str, Any] = {"dropout_bits": 32, "attention_dropout_mask": "per_head"}
# Settings recorded but not compared because the mode does not read them.
NOT_READ_BY: dict[str, tuple[str, ...]] = {
    "train_teacher": _STUDENT,
    "finetune": _KD_ONLY,
    "distill": (),
}


def compared_settings(cfg: Config) -> dict[str, Any]:
  """The settings of `cfg` that make up the run's identity, as JSON values."""
  skipped = set(MAY_DIFFER) | set(_BENCHMARK_ONLY) | set(NOT_READ_BY.get(cfg.mode, ()))
  return {f.name: _jsonable(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
          if f.name not in skipped}


def data_digest(splits: dict[str, Any]) -> dict[str, str]:
  """sha256 of each tokenized split (ids, masks, segment ids, labels): what training reads."""
  digests = {}
  for name, split in splits.items():
    digest = hashlib.sha256()
    for array in (split.input_ids, split.attention_mask, split.token_type_ids, split.labels):
      array = np.ascontiguousarray(array)
      digest.update(f"{array.dtype}{array.shape}".encode())
      digest.update(array.tobytes())
    digests[name] = digest.hexdigest()
  return digests


def identity(cfg: Config, data: dict[str, str], label_names: Optional[Iterable[str]]
             ) -> dict[str, Any]:
  return {"version": IDENTITY_VERSION, "mode": cfg.mode, "settings": compared_settings(cfg),
          "label_names": None if label_names is None else list(label_names), "data_sha256": data}


@contextlib.contextmanager
def claim(workdir: pathlib.Path, current: dict[str, Any],
          agree: Callable[[Callable[[], None]], None]) -> Iterator[None]:
  """Hold `workdir` for the duration: lock it, then check (or record) its identity.

  `agree(fn)` runs `fn` where the decision is made (process 0 of a multi-process run, or the only
  process) and raises its `UserError` on every process (`distributed.agree`).
  """
  lock = WorkdirLock(workdir)
  fresh = {"identity": False}

  def take() -> None:
    lock.acquire()
    try:
      fresh["identity"] = not holds_results(workdir)
      check_identity(workdir, current, write=True)
    except BaseException:
      lock.release()
      raise

  agree(take)
  try:
    yield
  except BaseException:
    # A start that failed before training anything (bad teacher weights, say) leaves the workdir
    # as it found it.
    if fresh["identity"] and lock.held and not holds_results(workdir):
      (workdir / IDENTITY_FILE).unlink(missing_ok=True)
    raise
  finally:
    lock.release()


def holds_results(workdir: pathlib.Path) -> bool:
  """Whether anything trained is in `workdir` (a resumed run would continue it)."""
  return any((workdir / name).exists() for name in
             ("checkpoints", "final", "summary.json", "teacher"))


def check_identity(workdir: pathlib.Path, current: dict[str, Any], *, write: bool) -> None:
  """Refuse to continue a different run in `workdir`; record `current` if nothing is there yet.

  A workdir with nothing trained in it (a start that failed on bad input, say) takes the new
  identity: there is nothing to mix.
  """
  path = workdir / IDENTITY_FILE
  recorded = _read_identity(path)
  if recorded is not None and holds_results(workdir):
    differences = describe_differences(recorded, current)
    if differences:
      raise UserError(f"workdir {workdir} holds another run: {'; '.join(differences)}; rerun with "
                      f"the workdir's settings to resume, or use another --workdir")
    return
  if recorded is None and holds_results(workdir) and write:
    print(f"warning: workdir {workdir} has results but no {IDENTITY_FILE} (an older version wrote "
          f"it); recording the current settings as its identity", file=sys.stderr, flush=True)
  if write:
    _write_json(path, current)


def describe_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
  """One `--flag: old in the workdir, new now` clause per difference."""
  out = []
  if recorded.get("mode") != current["mode"]:
    out.append(f"--mode: {recorded.get('mode')} in the workdir, {current['mode']} now")
  else:
    defaults = {f.name: _jsonable(f.default) for f in dataclasses.fields(Config)}
    old, new = recorded.get("settings", {}), current["settings"]
    for name in sorted(set(old) | set(new)):
      if name in MAY_DIFFER or name in _BENCHMARK_ONLY or name not in defaults:
        continue
      if name in NOT_READ_BY.get(current["mode"], ()):
        continue
      # A setting added after the workdir was written had its old value (or default) there.
      missing = VALUE_BEFORE_ADDED.get(name, defaults[name])
      before, after = old.get(name, missing), new.get(name, defaults[name])
      if before != after:
        out.append(f"--{name}: {_show(before)} in the workdir, {_show(after)} now")
    if recorded.get("label_names") != current["label_names"] and not any(
        c.startswith(("--label_names", "--task", "--label_type")) for c in out):
      out.append(f"the labels: {_show(recorded.get('label_names'))} in the workdir, "
                 f"{_show(current['label_names'])} now")
  if not out:
    old, new = recorded.get("data_sha256", {}), current["data_sha256"]
    for split in sorted(set(old) | set(new)):
      if old.get(split) != new.get(split):
        out.append(f"the {split} data: sha256 {str(old.get(split))[:12]} in the workdir, "
                   f"{str(new.get(split))[:12]} now (the data files changed)")
  return out


def _read_identity(path: pathlib.Path) -> Optional[dict[str, Any]]:
  if not path.exists():
    return None
  try:
    recorded = json.loads(path.read_text(encoding="utf-8"))
  except (OSError, ValueError) as exc:
    raise UserError(f"cannot read {path} ({getattr(exc, 'strerror', None) or exc}): the run's "
                    f"identity is unknown; move the workdir away to start over") from None
  if not isinstance(recorded, dict):
    raise UserError(f"{path} is not a run identity; move the workdir away to start over")
  return recorded


def _write_json(path: pathlib.Path, value: dict[str, Any]) -> None:
  tmp = path.with_name(path.name + ".tmp")
  try:
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
  except OSError as exc:
    tmp.unlink(missing_ok=True)
    raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def _jsonable(value: Any) -> Any:
  return list(value) if isinstance(value, tuple) else value


def _show(value: Any) -> str:
  if isinstance(value, list):
    return ",".join(map(str, value)) or "(none)"
  return str(value)


# ----------------------------------------------------------------------------------------------
# One writer at a time.
# ----------------------------------------------------------------------------------------------


class WorkdirLock:
  """An exclusive, advisory lock on the workdir, held from `acquire` to `release`.

  The lock is a `flock` on the directory itself; `run.lock` beside it only names the holder, for
  the message a second writer gets, and is removed on release. A `run.lock` found while the lock
  is free was left by a holder that died.
  """

  def __init__(self, workdir: pathlib.Path):
    self.workdir = pathlib.Path(workdir)
    self.path = self.workdir / LOCK_FILE
    self._fd: Optional[int] = None

  def acquire(self) -> "WorkdirLock":
    try:
      fd = os.open(self.workdir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
      raise UserError(f"cannot open workdir {self.workdir}: {exc.strerror or exc}") from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
      os.close(fd)
      if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise UserError(f"cannot lock workdir {self.workdir}: {exc.strerror or exc}") from None
      raise UserError(f"workdir {self.workdir} is in use by {_describe(self._holder())}; wait "
                      f"for it to finish or stop it, or use another --workdir") from None
    self._fd = fd
    previous = self._holder()
    if previous:
      print(f"warning: workdir {self.workdir} was held by {_describe(previous)}, which ended "
            f"without releasing it; taking it over", file=sys.stderr, flush=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
      _write_json(self.path, me)
    except UserError:
      self.release()
      raise
    return self

  @property
  def held(self) -> bool:
    return self._fd is not None

  def release(self) -> None:
    if self._fd is None:
      return
    self.path.unlink(missing_ok=True)  # before unlocking: the next holder must not see ours
    fcntl.flock(self._fd, fcntl.LOCK_UN)
    os.close(self._fd)
    self._fd = None

  def _holder(self) -> Optional[dict[str, Any]]:
    try:
      raw = self.path.read_text(encoding="utf-8", errors="replace")
    except OSError:
      return None
    if not raw.strip():
      return None
    try:
      holder = json.loads(raw)
    except ValueError:
      return {"pid": "?", "host": "?"}
    return holder if isinstance(holder, dict) else {"pid": "?", "host": "?"}

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc_info) -> None:
    self.release()


def _describe(holder: Optional[dict[str, Any]]) -> str:
  if not holder:
    return "another process"
  since = f", since {holder['started']}" if holder.get("started") else ""
  return f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}{since}"
