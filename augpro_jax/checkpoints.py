"""Checkpoints: an orbax CheckpointManager for resumable training state, and exported final models.

Training state (step, params, optimizer, rng) goes to `<workdir>/checkpoints/<step>` through orbax,
which writes into a temporary directory and renames it when complete, so a killed save never
becomes the latest step. If the latest step cannot be read (corrupt or partial), we warn and fall
back to the previous one.

A finished model is exported to `<workdir>/final/` (`model.json` + `params.msgpack`), written to a
temporary directory and renamed into place; `--teacher_ckpt` points at such a directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any, Optional

import jax
import numpy as np
from absl import logging
from flax import serialization
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy

from augpro_jax.errors import UserError
from augpro_jax.model import BertConfig


def make_manager(directory: str | pathlib.Path, *, keep: int, best_metric: Optional[str]
                 ) -> ocp.CheckpointManager:
  """Keep the last `keep` steps plus the best one by `best_metric` (higher is better)."""
  policies = [preservation_policy.LatestN(keep)]
  if best_metric:
    policies.append(preservation_policy.BestN(
        get_metric_fn=lambda metrics: metrics.get(best_metric, float("-inf")), reverse=False, n=1,
        keep_checkpoints_without_metrics=False))
  options = ocp.CheckpointManagerOptions(
      preservation_policy=preservation_policy.AnyPreservationPolicy(policies),
      enable_async_checkpointing=False,  # the loop is short-stepped; a sync save is simplest to reason about
      cleanup_tmp_directories=True,
      create=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         metrics: Optional[dict[str, float]] = None) -> None:
  """Save a host (numpy) copy of `state` at `step`."""
  try:
    manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)
    manager.wait_until_finished()
  except OSError as exc:
    raise UserError(f"cannot write checkpoint {step} in {manager.directory}: "
                    f"{exc.strerror or exc}") from None


def restore_latest(manager: ocp.CheckpointManager, target: Any) -> tuple[Optional[int], Any]:
  """Restore the newest readable step into the structure of `target`; (None, target) if none."""
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = manager.restore(step, args=ocp.args.StandardRestore(target))
      _check_finite_structure(restored, target)
      return step, restored
    except Exception as exc:  # pylint: disable=broad-except  # any unreadable step: try an older one
      logging.warning("checkpoint %d in %s is unreadable (%s); falling back to an older one",
                      step, manager.directory, str(exc).splitlines()[0][:200])
      print(f"warning: checkpoint step {step} is corrupt or partial; trying the previous one",
            flush=True)
  return None, target


def _check_finite_structure(restored: Any, target: Any) -> None:
  got = jax.tree.structure(restored)
  want = jax.tree.structure(target)
  if got != want:
    raise ValueError("checkpoint structure differs from the model's")
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(target)):
    if np.shape(a) != np.shape(b):
      raise ValueError(f"checkpoint array shape {np.shape(a)} != {np.shape(b)}")


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
                 info: dict[str, Any]) -> pathlib.Path:
  """Write `model.json` + `params.msgpack` atomically (temp dir + rename)."""
  directory = pathlib.Path(directory)
  directory.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
  try:
    (tmp / "params.msgpack").write_bytes(serialization.msgpack_serialize(
        jax.tree.map(np.asarray, params)))
    (tmp / "model.json").write_text(json.dumps(
        {"config": dataclasses.asdict(config), **info}, indent=2, sort_keys=True))
    if directory.exists():
      shutil.rmtree(directory)
    os.replace(tmp, directory)
  except OSError as exc:
    shutil.rmtree(tmp, ignore_errors=True)
    raise UserError(f"cannot write {directory}: {exc.strerror or exc}") from None
  return directory


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
  return config, params, meta
