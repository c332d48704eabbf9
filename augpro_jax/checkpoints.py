"""Checkpoints: an orbax CheckpointManager for resumable training state, and exported final models.

Training state (step, params, optimizer, rng) goes to `<workdir>/checkpoints/<step>` through orbax,
which writes into a temporary directory and renames it when complete, so a killed save never
becomes the latest step (leftover `<step>.orbax-checkpoint-tmp` directories are ignored, and removed
when the manager opens). If the latest step cannot be read (corrupt or partial), we warn and fall
back to the previous one; if no step can be read, that is a one-line error. A save that fails for
lack of space (or any storage error) is a one-line error too, and leaves the previous step latest.

Only directories that orbax finished writing count as steps (they hold `_CHECKPOINT_METADATA`).
Anything else in the checkpoint folder (a stray `999/` directory, notes, a copy) is ignored with
one warning: it must not be taken for the latest step, nor change how the real steps are read.

A finished model is exported to `<workdir>/final/` (`model.json` + `params.msgpack`, and `hf/`: the
same model as a Hugging Face `BertForSequenceClassification` with its tokenizer), written to a
temporary directory and renamed into place. `--teacher_ckpt`, eval and predict take such a
directory, a run's workdir, or any Hugging Face BERT sequence-classification directory
(`find_model`, `load_model`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import re
import secrets
import shutil
import sys
from typing import Any, Optional

import jax
import numpy as np
from absl import logging
from flax import serialization
import orbax.checkpoint as ocp
from orbax.checkpoint import step as step_lib
from orbax.checkpoint.checkpoint_managers import preservation_policy

from augpro_jax import hf_io
from augpro_jax import library_noise
from augpro_jax import model as model_lib
from augpro_jax.errors import UserError
from augpro_jax.model import BertConfig


def make_manager(directory: str | pathlib.Path, *, keep: int, best_metric: Optional[str]
                 ) -> ocp.CheckpointManager:
  """Keep the last `keep` steps plus the best one by `best_metric` (higher is better)."""
  policies = [preservation_policy.LatestN(keep)]
  best_fn = None
  if best_metric:
    def best_fn(metrics):
      return metrics.get(best_metric, float("-inf"))
    policies.append(preservation_policy.BestN(get_metric_fn=best_fn, reverse=False, n=1,
                                              keep_checkpoints_without_metrics=False))
  warn_about_foreign_entries(directory)
  options = ocp.CheckpointManagerOptions(
      # best_fn makes orbax write each step's metrics to disk (without it they live in memory
      # only), so a resumed run still knows, and keeps, the best step.
      best_fn=best_fn,
      preservation_policy=preservation_policy.AnyPreservationPolicy(policies),
      enable_async_checkpointing=False,  # the loop is short-stepped; a sync save is simplest to reason about
      cleanup_tmp_directories=True,
      step_name_format=_FinishedStepsOnly(),
      create=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


# The file orbax writes last into a step directory it finished (before the rename, or with the
# commit marker on object stores); a directory without it was not written by a completed save.
_STEP_MARKER = "_CHECKPOINT_METADATA"


def is_finished_step(path: pathlib.Path) -> bool:
  return path.name.isdigit() and path.is_dir() and (path / _STEP_MARKER).is_file()


class _FinishedStepsOnly(step_lib.NameFormat):
  """orbax's standard step names (`<step>/`), listing only directories orbax finished writing."""

  def __init__(self):
    self._standard = step_lib.standard_name_format()

  def build_name(self, step: int) -> str:
    return self._standard.build_name(step)

  def find_all(self, base_path):
    return (metadata for metadata in self._standard.find_all(base_path)
            if is_finished_step(pathlib.Path(metadata.path)))

  def find_step(self, base_path, step: int):
    metadata = self._standard.find_step(base_path, step)
    if not is_finished_step(pathlib.Path(metadata.path)):
      raise ValueError(f"no finished checkpoint for step {step} in {base_path}")
    return metadata


def foreign_entries(directory: str | pathlib.Path) -> list[str]:
  """Names in a checkpoint folder that are neither finished steps nor orbax's own temporaries."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    return []
  return sorted(p.name for p in directory.iterdir()
                if not is_finished_step(p) and ".orbax-checkpoint-tmp" not in p.name)


def warn_about_foreign_entries(directory: str | pathlib.Path) -> None:
  names = foreign_entries(directory)
  if names and jax.process_index() == 0:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    print(f"warning: ignoring {len(names)} entr{'ies' if len(names) > 1 else 'y'} in {directory} "
          f"that {'are not checkpoints' if len(names) > 1 else 'is not a checkpoint'} written by this program: "
          f"{shown}", file=sys.stderr, flush=True)


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         metrics: Optional[dict[str, float]] = None) -> None:
  """Save a host (numpy) copy of `state` at `step`.

  A full disk (or any other storage failure) is a `UserError`: the partial temporary directory is
  removed, so the previous step stays the latest.
  """
  try:
    with library_noise.quiet_orbax_errors():
      # {} rather than None for a step saved without evaluation: orbax warns about None.
      manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics or {}, force=True)
      manager.wait_until_finished()
  except Exception as exc:  # pylint: disable=broad-except  # only storage failures are re-raised
    reason = storage_error(exc)
    if reason is None:
      raise
    _remove_partial_step(manager.directory, step)
    raise UserError(f"cannot write checkpoint {step} in {manager.directory}: {reason}; the "
                    f"previous checkpoint is kept") from None


def storage_error(exc: BaseException) -> Optional[str]:
  """A one-line reason if `exc` is a storage failure (full disk, permissions...), else None.

  Python file I/O raises OSError; orbax writes arrays through tensorstore, whose errors arrive as
  ValueError("RESOURCE_EXHAUSTED: ... No space left on device [os_error_code='28']").
  """
  if isinstance(exc, OSError):
    return exc.strerror or str(exc).splitlines()[0][:200]
  text = str(exc)
  code = re.search(r"os_error_code='?(\d+)", text)
  if code:
    return os.strerror(int(code.group(1))).lower()
  if "RESOURCE_EXHAUSTED" in text or "No space left" in text:
    return "no space left on device"
  return None


def _remove_partial_step(directory: Any, step: int) -> None:
  """Delete what a failed save left (`<step>.orbax-checkpoint-tmp*`), to give the space back."""
  for path in pathlib.Path(directory).glob(f"{step}.orbax-checkpoint-tmp*"):
    shutil.rmtree(path, ignore_errors=True)


def restore_latest(manager: ocp.CheckpointManager, target: Any) -> tuple[Optional[int], Any]:
  """Restore the newest readable step into the structure of `target`; (None, target) if none.

  An unreadable step (corrupt, partial, or from another model) is skipped with a warning that
  names the step it falls back to, and moved to `<directory>-unreadable/` so that the resumed run
  can write that step again. Steps that exist but are all unreadable are a `UserError`: starting
  over would silently throw the run away and then collide with the old step numbers.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  for i, step in enumerate(steps):
    try:
      restored = manager.restore(step, args=ocp.args.StandardRestore(target))
      _check_finite_structure(restored, target)
      if i:
        _set_aside(manager, steps[:i])
      return step, restored
    except Exception as exc:  # pylint: disable=broad-except  # any unreadable step: try an older one
      library_noise.drop_closed_event_loop_reports()
      reason = " ".join(str(exc).split()) or type(exc).__name__
      logging.info("checkpoint %d in %s is unreadable: %s", step, manager.directory, reason)
      fallback = f"falling back to step {steps[i + 1]}" if i + 1 < len(steps) else "no older step"
      print(f"warning: checkpoint step {step} in {manager.directory} is corrupt or partial "
            f"({reason[:120]}); {fallback}", file=sys.stderr, flush=True)
  if steps:
    raise UserError(f"no readable checkpoint in {manager.directory} (steps "
                    f"{', '.join(map(str, sorted(steps)))} are corrupt or from another model); "
                    f"move it away to start over")
  return None, target


def _set_aside(manager: ocp.CheckpointManager, steps: list[int]) -> None:
  """Move unreadable `steps` out of the manager's directory (kept, not deleted: a step may only
  be unreadable for now, e.g. on a flaky mount) and make the manager forget them."""
  root = pathlib.Path(manager.directory)
  if jax.process_index() == 0:
    aside = root.parent / f"{root.name}-unreadable"
    aside.mkdir(exist_ok=True)
    for step in steps:
      source = root / str(step)  # orbax's step directory name (make_manager sets no prefix)
      if not source.is_dir():
        continue
      dest = aside / str(step)
      for n in range(1, 1000):  # the same step may go bad twice
        if not dest.exists():
          break
        dest = aside / f"{step}.{n}"
      os.replace(source, dest)
      print(f"warning: moved unreadable checkpoint step {step} to {dest}", file=sys.stderr,
            flush=True)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("augpro_jax: unreadable checkpoints set aside")
  manager.reload()


def _check_finite_structure(restored: Any, target: Any) -> None:
  got = jax.tree.structure(restored)
  want = jax.tree.structure(target)
  if got != want:
    raise ValueError("checkpoint structure differs from the model's")
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(target)):
    if np.shape(a) != np.shape(b):
      raise ValueError(f"checkpoint array shape {np.shape(a)} != {np.shape(b)}")
    # A different dtype would compile a different step program: resume would not be exact.
    if np.asarray(a).dtype != np.asarray(b).dtype:
      raise ValueError(f"checkpoint dtype {np.asarray(a).dtype} != {np.asarray(b).dtype}")


def params_sha256(params: Any) -> str:
  """A digest of the parameter values (path, dtype, shape and bytes of every leaf, in tree order)."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    array = np.ascontiguousarray(np.asarray(leaf))
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(f"{array.dtype}{array.shape}".encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# Exported models.
# ----------------------------------------------------------------------------------------------


def export_model(directory: str | pathlib.Path, config: BertConfig, params: Any,
                 info: dict[str, Any], *,
                 tokenizer_dir: Optional[str | pathlib.Path] = None) -> pathlib.Path:
  """Write `model.json` + `params.msgpack` (+ `hf/` with `tokenizer_dir`) atomically.

  Everything goes to a temporary directory that is renamed into place. An existing export is
  moved aside, not deleted, until the new one is in place: a failure (full disk) leaves the old
  one where it was. Storage failures are a one-line `UserError`.
  """
  directory = pathlib.Path(directory)
  tmp = old = None
  try:
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()  # honours the umask, where mkdtemp's 0700 would make final/ private
    (tmp / "params.msgpack").write_bytes(serialization.msgpack_serialize(
        jax.tree.map(np.asarray, params)))
    if tokenizer_dir is not None:
      hf_io.write_hf(tmp / "hf", config, params, task_labels=info.get("label_names") or (),
                     tokenizer_dir=tokenizer_dir)
    # model.json last: a directory that has it is complete.
    (tmp / "model.json").write_text(json.dumps(
        {"config": dataclasses.asdict(config), **info}, indent=2, sort_keys=True))
    if directory.exists():
      old = tmp.with_name(tmp.name.replace(".tmp-", ".old-"))
      os.replace(directory, old)
    os.replace(tmp, directory)
  except OSError as exc:
    if tmp is not None:
      shutil.rmtree(tmp, ignore_errors=True)
    if old is not None and old.exists() and not directory.exists():
      os.replace(old, directory)
    raise UserError(f"cannot write {directory}: {exc.strerror or exc}") from None
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)
  return directory


def tidy_exports(directory: pathlib.Path) -> None:
  """Finish what a killed export left in `directory`: a moved-aside export whose replacement never
  arrived goes back into place; half-written temporary exports are removed."""
  for old in directory.glob(".*.old-*"):
    target = directory / old.name[1:].split(".old-")[0]
    if not target.exists():
      os.replace(old, target)
    else:
      shutil.rmtree(old, ignore_errors=True)
  for tmp in directory.glob(".*.tmp-*"):
    if tmp.is_dir():
      shutil.rmtree(tmp, ignore_errors=True)


def load_exported(directory: str | pathlib.Path) -> tuple[BertConfig, Any, dict[str, Any]]:
  """Read an exported model: (config, params, info). Accepts a run workdir (uses its `final/`)."""
  directory = pathlib.Path(directory)
  if (directory / "final" / "model.json").exists():
    directory = directory / "final"
  meta_path, params_path = directory / "model.json", directory / "params.msgpack"
  if not meta_path.is_file() or not params_path.is_file():
    raise UserError(f"{directory} is not an exported model (needs model.json and params.msgpack)")
  try:
    meta = json.loads(meta_path.read_text())
    config = BertConfig(**meta.pop("config"))
    params = serialization.msgpack_restore(params_path.read_bytes())
  except Exception as exc:  # pylint: disable=broad-except  # corrupt json/msgpack/config
    raise UserError(f"cannot read model {directory}: {str(exc).splitlines()[0][:200]}") from None
  check_params_match(directory, config, params)
  return config, params, meta


def _leaf_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  return {"/".join(str(getattr(k, "key", k)) for k in path): tuple(np.shape(leaf))
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_params_match(directory: pathlib.Path, config: BertConfig, params: Any) -> None:
  """Refuse params.msgpack unless it is exactly the tree model.json's config describes."""
  try:
    want = _leaf_shapes(model_lib.param_shapes(config))
  except Exception as exc:  # pylint: disable=broad-except  # sizes flax cannot build
    raise UserError(f"model {directory}: model.json describes no valid model ({exc!s:.200})"
                    ) from None
  have = _leaf_shapes(params) if isinstance(params, dict) else {}
  if want == have:
    return
  layers = {k.split("/")[1] for k in have if k.startswith("encoder/layer_")}
  where = f"model {directory}: params.msgpack does not match model.json"
  if len(layers) != config.num_layers:
    raise UserError(f"{where}: model.json says {config.num_layers} layers, params.msgpack has "
                    f"{len(layers)}")
  head = have.get("classifier/bias")
  if head and head != (config.num_labels,):
    raise UserError(f"{where}: model.json says {config.num_labels} labels, params.msgpack's "
                    f"classifier has {head[0]}")
  name = next(k for k in sorted(set(want) | set(have)) if want.get(k) != have.get(k))
  raise UserError(f"{where}: {name} is {_show_shape(have.get(name))} in params.msgpack, "
                  f"{_show_shape(want.get(name))} from model.json (vocab_size "
                  f"{config.vocab_size}, hidden_size {config.hidden_size})")


def _show_shape(shape: Optional[tuple[int, ...]]) -> str:
  return "missing" if shape is None else str(list(shape))


@dataclasses.dataclass(frozen=True)
class ModelDir:
  """A trained classifier on disk: our export, or a Hugging Face sequence-classification dir."""

  path: pathlib.Path
  kind: str  # "exported" | "huggingface"
  num_labels: Optional[int]  # None: a Hugging Face backbone without a classifier head
  label_names: tuple[str, ...]  # the model's names for its outputs; () for regression
  task: Optional[str]  # the task it was trained on, where recorded
  tokenizer_dir: Optional[pathlib.Path]  # its own tokenizer, where it has one


def find_model(path: str | pathlib.Path, flag: str = "--teacher_ckpt") -> ModelDir:
  """What `path` holds: a run's workdir (its final/), an export, or a Hugging Face directory."""
  path = pathlib.Path(path)
  if not path.exists():
    raise UserError(f"{flag}={path} does not exist")
  for directory in (path / "final", path):
    if (directory / "model.json").is_file():
      try:
        meta = json.loads((directory / "model.json").read_text())
        num_labels = int(meta.get("num_labels", meta["config"]["num_labels"]))
      except Exception as exc:  # pylint: disable=broad-except  # corrupt json or fields
        raise UserError(f"cannot read model {directory}: "
                        f"{str(exc).splitlines()[0][:200]}") from None
      hf_dir = directory / "hf"
      return ModelDir(directory, "exported", num_labels, tuple(meta.get("label_names") or ()),
                      meta.get("task"), hf_dir if (hf_dir / "tokenizer.json").is_file() else None)
  if hf_io.is_hf_dir(path):
    num_labels = hf_io.head_size(path)
    names = hf_io.label_names(path, num_labels) if num_labels and num_labels > 1 else ()
    return ModelDir(path, "huggingface", num_labels, names, None,
                    path if (path / "tokenizer.json").is_file() else None)
  raise UserError(f"{flag}={path} is not a trained model: expected an exported model (model.json "
                  "and params.msgpack, or a run's workdir holding final/) or a Hugging Face model "
                  "directory (config.json and model.safetensors)")


def load_model(model: ModelDir, *, task_name: str, num_labels: int, task_labels: Any = (),
               dtype: str = "float32") -> tuple[BertConfig, Any, dict[str, Any]]:
  """Load `model` for a task with `num_labels` outputs: (config, params, info)."""
  if model.kind == "huggingface":
    return hf_io.load_classifier(model.path, task_name=task_name, num_labels=num_labels,
                                 task_labels=tuple(task_labels or ()), dtype=dtype)
  config, params, info = load_exported(model.path)
  if config.num_labels != num_labels:
    raise UserError(f"model {model.path} has {config.num_labels} labels but task {task_name} has "
                    f"{num_labels}: it was trained for another task")
  return dataclasses.replace(config, dtype=dtype), params, info


def restore_step(manager: ocp.CheckpointManager, step: int, target: Any) -> Any:
  """The state saved at `step`, in the structure of `target` (host arrays)."""
  try:
    return manager.restore(step, args=ocp.args.StandardRestore(target))
  except Exception as exc:  # pylint: disable=broad-except  # unreadable: one line, not a traceback
    reason = " ".join(str(exc).split())[:200] or type(exc).__name__
    raise UserError(f"cannot read checkpoint {step} in {manager.directory}: {reason}") from None
