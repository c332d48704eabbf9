"""Multi-process start-up: one call before anything touches a device.

Single-process runs do nothing here. Multi-process runs (a TPU pod slice, a GPU cluster, or several
CPU processes on one machine for testing) call `jax.distributed.initialize`, after which
`jax.process_index()/process_count()` drive the input pipeline's sharding.

Where the platform announces its hosts (Cloud TPU VMs, GKE TPU jobs, SLURM `srun` steps) JAX finds
the coordinator, process count and process index itself; elsewhere main.py's
--coordinator_address/--num_processes/--process_id say them.

A missing process must not hang the others: before JAX connects (whose own time-outs end in a C++
abort with a stack trace), explicit multi-process runs meet at the coordinator address through a
small handshake of their own (`rendezvous`), which gives up after --distributed_timeout seconds
with one line naming the processes that did not come. The same interval bounds JAX's own
initialization and its heartbeat, which ends the run when a process dies later.
"""

from __future__ import annotations

import glob
import importlib.util
import math
import os
import socket
import time
from typing import Callable, Optional

import jax
import numpy as np
from absl import logging

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

  Without it, a pmap collective across CPU processes fails; GPU and TPU backends have their own.
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
  rendezvous(cfg.coordinator_address, cfg.num_processes, cfg.process_id, cfg.distributed_timeout)
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
  if jax.process_count() <= 1 or not isinstance(exc, jax.errors.JaxRuntimeError):
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
_HELLO = "augpro-jax hello"


def _set_topology_timeouts(seconds: int) -> None:
  """XLA:CPU exchanges device topologies after joining; bound that wait too (it counts minutes)."""
  minutes = max(1, math.ceil(seconds / 60))
  for name in ("jax_cpu_get_local_topology_timeout_minutes",
               "jax_cpu_get_global_topology_timeout_minutes"):
    try:
      jax.config.update(name, minutes)
    except (AttributeError, KeyError):  # an older or newer JAX without the option
      pass


def _split_address(address: str) -> tuple[str, int]:
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit():
    raise UserError(f"--coordinator_address={address} must be host:port")
  return host.strip("[]"), int(port)


def rendezvous(address: str, num_processes: int, process_id: int, timeout: float) -> None:
  """Wait until all `num_processes` processes are up, or fail with one line after `timeout` s.

  Process 0 listens on the coordinator port (before JAX's coordination service takes it) and
  waits for a hello from every other process; then it answers each with 'go' (or with the reason
  the run cannot start). The others retry connecting until `timeout`.
  """
  host, port = _split_address(address)
  deadline = time.monotonic() + timeout
  if process_id == 0:
    _lead_rendezvous(port, num_processes, deadline, timeout, address)
  else:
    _join_rendezvous(host, port, num_processes, process_id, deadline, timeout, address)


def _lead_rendezvous(port: int, num_processes: int, deadline: float, timeout: float,
                     address: str) -> None:
  try:
    if socket.has_dualstack_ipv6():
      server = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
    else:
      server = socket.create_server(("", port))
  except OSError as exc:
    raise UserError(f"process 0 cannot listen on --coordinator_address={address}: "
                    f"{exc.strerror or exc}") from None
  peers: dict[int, socket.socket] = {}
  extra: list[socket.socket] = []  # duplicates, answered with the reason too
  problem = ""
  try:
    while len(peers) < num_processes - 1 and not problem:
      remaining = deadline - time.monotonic()
      if remaining <= 0:
        break
      server.settimeout(remaining)
      try:
        conn, _ = server.accept()
      except socket.timeout:
        break
      conn.settimeout(max(0.1, min(5.0, deadline - time.monotonic())))
      words = _read_line(conn).split()
      if (len(words) != 4 or " ".join(words[:2]) != _HELLO or not words[2].isdigit()
          or not words[3].isdigit()):
        conn.close()  # not one of ours (a port scanner, a stale client): keep waiting
        continue
      their_id, their_count = int(words[2]), int(words[3])
      if their_count != num_processes:
        problem = (f"process {their_id} was started with --num_processes={their_count}, process 0 "
                   f"with {num_processes}")
      elif their_id in peers or not 0 < their_id < num_processes:
        problem = f"two processes were started with --process_id={their_id}"
      if their_id in peers:
        extra.append(conn)
      else:
        peers[their_id] = conn
    missing = [i for i in range(1, num_processes) if i not in peers]
    if not problem and missing:
      names = ", ".join(map(str, missing))
      problem = (f"process{'es' * (len(missing) > 1)} {names} of {num_processes} did not join "
                 f"{address} within {timeout:g}s (--distributed_timeout); start every process with "
                 f"the same --coordinator_address and --num_processes")
    everyone = [*peers.values(), *extra]
    for conn in everyone:
      try:
        conn.sendall((f"abort {problem}" if problem else "go").encode("utf-8") + b"\n")
      except OSError:
        pass
    # Peers close first, so that the port has no TIME_WAIT socket on this side when JAX binds it.
    for conn in everyone:
      try:
        conn.settimeout(2.0)
        conn.recv(1)
      except OSError:
        pass
  finally:
    for conn in [*peers.values(), *extra]:
      conn.close()
    server.close()
  if problem:
    raise UserError(problem)


def _join_rendezvous(host: str, port: int, num_processes: int, process_id: int, deadline: float,
                     timeout: float, address: str) -> None:
  gone = (f"process 0 (the coordinator, {address}) did not answer within {timeout:g}s "
          f"(--distributed_timeout); start it with --process_id=0 and the same "
          f"--coordinator_address")
  while True:
    try:
      conn = socket.create_connection((host, port), timeout=max(0.1, deadline - time.monotonic()))
      break
    except OSError:
      if time.monotonic() > deadline:
        raise UserError(gone) from None
      time.sleep(0.2)
  try:
    conn.sendall(f"{_HELLO} {process_id} {num_processes}\n".encode("utf-8"))
    # Process 0 answers when all have come, or when it gives up: allow it its own full wait.
    conn.settimeout(max(1.0, deadline - time.monotonic()) + 10.0)
    answer = _read_line(conn)
  except OSError:
    answer = ""
  finally:
    conn.close()
  if answer == "go":
    return
  if answer.startswith("abort "):
    raise UserError(answer[len("abort "):])
  raise UserError(gone)


def _read_line(conn: socket.socket, limit: int = 4096) -> str:
  data = b""
  try:
    while not data.endswith(b"\n") and len(data) < limit:
      chunk = conn.recv(512)
      if not chunk:
        break
      data += chunk
  except OSError:
    pass
  return data.decode("utf-8", errors="replace").strip()
