"""Multi-process start-up: one call before anything touches a device.

Single-process runs do nothing here. Multi-process runs (a TPU pod slice, a GPU cluster, or several
CPU processes on one machine for testing) call `jax.distributed.initialize`, after which
`jax.process_index()/process_count()` drive the input pipeline's sharding.

Where the platform announces its hosts (Cloud TPU VMs, GKE TPU jobs, SLURM `srun` steps) JAX finds
the coordinator, process count and process index itself; elsewhere main.py's
--coordinator_address/--num_processes/--process_id say them.

A missing process must not hang the others: before JAX connects (whose own time-outs end in a C++
abort with a stack trace), explicit multi-process runs meet at the coordinator address through a
small handshake of their own (rendezvous.py), which gives up after --distributed_timeout seconds
with one line naming the processes that did not come, and keeps a connection open between
process 0 and each other process so that a process that dies later ends its partners with one
line too. The same interval bounds JAX's own initialization and its heartbeat.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import math
import os
from typing import Callable, Optional

import jax
import numpy as np
from absl import logging

from augpro_jax import rendezvous as rendezvous_lib
from augpro_jax import workdir as workdir_lib
from augpro_jax.config import Config
from augpro_jax.errors import UserError


def _on_cloud_tpu_vm() -> bool:
  """libtpu is installed and TPU chips are attached (JAX then asks the metadata server for hosts)."""
  if importlib.util.find_spec("libtpu") is None:
    return False
  return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def _platform_cluster() -> Optional[str]:
  """The cluster whose environment lets `jax.distributed.initialize()` run without arguments."""
  tpu_hosts = os.environ.get("TPU_PROCESS_ADDRESSES") or os.environ.get("TPU_WORKER_HOSTNAMES", "")
  if "," in tpu_hosts:
    return "gke_tpu"
  # SLURM_STEP_NODELIST is set inside an `srun` step only; a bare sbatch script is one process.
  if "SLURM_STEP_NODELIST" in os.environ and int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1:
    return "slurm"
  # GCE pod slices set no environment variable: JAX reads the slice's workers from the metadata
  # server, so every Cloud TPU VM initializes (a single-host VM simply becomes process 0 of 1).
  if _on_cloud_tpu_vm():
    return "cloud_tpu"
  return None


def _has_accelerator_env() -> bool:
  return bool(os.environ.get("CUDA_VISIBLE_DEVICES") or os.environ.get("TPU_WORKER_ID"))


def _use_gloo_for_cpu() -> None:
  """CPU processes exchange gradients through gloo (over loopback when testing on one machine).

  Without it, a collective across CPU processes fails; GPU and TPU backends have their own.
  """
  if jax.config.jax_platforms in (None, "", "cpu") and not _has_accelerator_env():
    jax.config.update("jax_cpu_collectives_implementation", "gloo")


def initialize(cfg: Config) -> None:
  """Join the other processes of this run, if there are any."""
  explicit = cfg.coordinator_address is not None or (cfg.num_processes or 1) > 1
  if not explicit:
    cluster = _platform_cluster()
    if cluster is None:
      return
    _use_gloo_for_cpu()
    _set_topology_timeouts(cfg.distributed_timeout)
    try:
      jax.distributed.initialize(initialization_timeout=cfg.distributed_timeout,
                                 heartbeat_timeout_seconds=cfg.distributed_timeout)
    except (ValueError, RuntimeError) as exc:
      if cluster != "cloud_tpu":
        raise UserError(f"cannot join the {cluster} job ({str(exc).splitlines()[0][:200]}); pass "
                        "--coordinator_address, --num_processes and --process_id") from None
      # A TPU VM without a reachable metadata server (e.g. in a container) runs on its own.
      logging.warning("jax.distributed.initialize() found no TPU slice (%s); running as a single "
                      "process", str(exc).splitlines()[0][:200])
    return
  if cfg.coordinator_address is None or cfg.num_processes is None or cfg.process_id is None:
    raise UserError("multi-process runs need --coordinator_address, --num_processes and --process_id")
  if not 0 <= cfg.process_id < cfg.num_processes:
    raise UserError(f"--process_id={cfg.process_id} must be in [0, {cfg.num_processes})")
  _use_gloo_for_cpu()
  _set_topology_timeouts(cfg.distributed_timeout)
  links = rendezvous_lib.rendezvous(cfg.coordinator_address, cfg.num_processes, cfg.process_id,
                                   cfg.distributed_timeout,
                                   identity=workdir_lib.compared_settings(cfg))
  rendezvous_lib.watch(links, cfg.num_processes, grace=min(5.0, cfg.distributed_timeout))
  jax.distributed.initialize(coordinator_address=cfg.coordinator_address,
                             num_processes=cfg.num_processes, process_id=cfg.process_id,
                             initialization_timeout=cfg.distributed_timeout,
                             heartbeat_timeout_seconds=cfg.distributed_timeout)


# Words in the runtime errors of a collective whose partner is gone (gloo's TCP pairs, the
# coordination service); an XLA error without them (out of memory, say) is not about a peer.
_PEER_FAILURE_WORDS = ("gloo", "connection reset", "connection refused", "broken pipe",
                       "heartbeat", "unavailable", "deadline_exceeded", "coordination",
                       "barrier", "socket closed")


def lost_peer(exc: BaseException) -> Optional[str]:
  """A one-line message if `exc` means another process of this run failed, else None."""
  if not isinstance(exc, jax.errors.JaxRuntimeError) or jax.process_count() <= 1:
    return None
  text = " ".join(str(exc).split())
  if not any(word in text.lower() for word in _PEER_FAILURE_WORDS):
    return None
  return (f"another process of this {jax.process_count()}-process run failed or was stopped "
          f"(process {jax.process_index()} saw: {text[:160]}); checkpoints written so far are "
          "kept: restart every process with the same command to resume")


def is_main_process() -> bool:
  return jax.process_index() == 0


def agree(fn: Callable[[], None]) -> None:
  """Run `fn` on process 0 only; a `UserError` it raises is raised on every process.

  For decisions about the shared workdir (its lock, its identity): were process 0 alone to stop,
  the others would wait for it in their first collective.
  """
  if jax.process_count() == 1:
    fn()
    return
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  message = ""
  error: Optional[UserError] = None
  if jax.process_index() == 0:
    try:
      fn()
    except UserError as exc:
      error, message = exc, str(exc)
  encoded = np.zeros(_MESSAGE_BYTES, np.uint8)
  raw = message.encode("utf-8")[:_MESSAGE_BYTES]
  encoded[:len(raw)] = np.frombuffer(raw, np.uint8)
  received = np.asarray(multihost_utils.broadcast_one_to_all(encoded), np.uint8)
  if error is not None:
    raise error
  text = received.tobytes().rstrip(b"\0").decode("utf-8", errors="replace")
  if text:
    raise UserError(text)


_MESSAGE_BYTES = 2048


def same_data(digests: dict[str, str]) -> None:
  """Refuse, on every process, a run whose processes read different data.

  The settings were compared at the handshake; the data is known only once read. Every process
  gathers every process's digest (one small collective that all of them reach), so all stop
  together with the same line.
  """
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  mine = np.frombuffer(hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).digest(),
                       np.uint8)
  everyone = np.asarray(multihost_utils.process_allgather(mine), np.uint8).reshape(-1, mine.size)
  differ = [i for i in range(1, len(everyone)) if not np.array_equal(everyone[i], everyone[0])]
  if differ:
    raise UserError(f"process{'es' * (len(differ) > 1)} {', '.join(map(str, differ))} read other "
                    "data than process 0 (the tokenized train or dev data differ); give every "
                    "process the same data files")


def _set_topology_timeouts(seconds: int) -> None:
  """XLA:CPU exchanges device topologies after joining; bound that wait too (it counts minutes)."""
  minutes = max(1, math.ceil(seconds / 60))
  for name in ("jax_cpu_get_local_topology_timeout_minutes",
               "jax_cpu_get_global_topology_timeout_minutes"):
    try:
      jax.config.update(name, minutes)
    except (AttributeError, KeyError):  # an older or newer JAX without the option
      pass
