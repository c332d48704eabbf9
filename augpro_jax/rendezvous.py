"""The start-up handshake of an explicit multi-process run, and the watch on partner processes.

`rendezvous` runs before `jax.distributed.initialize`: process 0 listens on the coordinator port
(before JAX's coordination service takes it) and waits for a hello from every other process, then
answers each with 'go', or with the reason the run cannot start (a process missing after the
timeout, two processes with one --process_id, different --num_processes, or any setting that
changes the result differing from process 0's: each hello carries the process's run identity, and
a mixed run is refused before JAX connects, so before any collective). The others retry
connecting until the timeout. A missing process is thus one line naming it, not JAX's wait and C++
abort.

The connections stay open for the whole run (`watch`): process 0 holds one to every other
process, each other process one to process 0. A process that ends in order says so first
(`goodbye`: 'bye ok', or 'bye' and its one-line error); a connection that closes without that
means its process was killed or crashed, and a partner that would otherwise wait in a collective
until JAX's heartbeat aborts it stops with one line and exit status 4 instead (after a short grace,
in case it is ending by itself anyway). Partners of process 0 learn of another process's death
when process 0 stops.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time

from typing import Any, Optional

from augpro_jax.errors import UserError

_HELLO = "augpro-jax hello"
_HELLO_LIMIT = 1 << 20  # a hello carries the run's settings as JSON (a few KB)
PARTNER_FAILED_STATUS = 4
_links: list[tuple[int, socket.socket]] = []
_exit_lock = threading.Lock()
_named_losses: list[str] = []  # what the watch knows of a partner that ended without a goodbye
_partner_lost = threading.Event()


def _split_address(address: str) -> tuple[str, int]:
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit():
    raise UserError(f"--coordinator_address={address} must be host:port")
  return host.strip("[]"), int(port)


def rendezvous(address: str, num_processes: int, process_id: int, timeout: float,
               identity: Optional[dict[str, Any]] = None) -> list[tuple[int, socket.socket]]:
  """Wait until all `num_processes` processes are up, or fail with one line after `timeout` s.

  `identity` (flag name -> JSON value) must be the same on every process; process 0 names each
  flag where another process differs. Returns the open connections to the partners, as (their
  process id, socket), for `watch`.
  """
  host, port = _split_address(address)
  deadline = time.monotonic() + timeout
  identity = json.loads(json.dumps(identity or {}, sort_keys=True))  # as the partners see it
  if process_id == 0:
    return _lead_rendezvous(port, num_processes, deadline, timeout, address, identity)
  return [(0, _join_rendezvous(host, port, num_processes, process_id, deadline, timeout,
                               address, identity))]


def identity_differences(process_id: int, lead: dict[str, Any], other: dict[str, Any]) -> str:
  """'' when `other` is `lead`; else one clause per differing flag, naming both processes."""
  if lead.get("mode") != other.get("mode"):  # the modes compare different sets of flags
    lead, other = {"mode": lead.get("mode")}, {"mode": other.get("mode")}
  clauses = [f"--{name}: {_show(lead.get(name))} on process 0, {_show(other.get(name))} on "
             f"process {process_id}" for name in sorted(set(lead) | set(other))
             if lead.get(name) != other.get(name)]
  if not clauses:
    return ""
  return (f"process {process_id} was started with other settings than process 0: "
          f"{'; '.join(clauses)}; start every process with the same flags")


def _show(value: Any) -> str:
  if value is None:
    return "(unset)"
  return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _parse_hello(line: str) -> Optional[tuple[int, int, dict[str, Any]]]:
  """(process id, process count, identity) from a hello line; None if it is not one of ours."""
  words = line.split(" ", 4)
  if (len(words) < 4 or " ".join(words[:2]) != _HELLO or not words[2].isdigit()
      or not words[3].isdigit()):
    return None
  try:
    identity = json.loads(words[4]) if len(words) == 5 else {}
  except ValueError:
    return None
  return int(words[2]), int(words[3]), identity if isinstance(identity, dict) else {}


def _lead_rendezvous(port: int, num_processes: int, deadline: float, timeout: float,
                     address: str, identity: dict[str, Any]) -> list[tuple[int, socket.socket]]:
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
      hello = _parse_hello(_read_line(conn, _HELLO_LIMIT))
      if hello is None:
        conn.close()  # not one of ours (a port scanner, a stale client): keep waiting
        continue
      their_id, their_count, theirs = hello
      if their_count != num_processes:
        problem = (f"process {their_id} was started with --num_processes={their_count}, process 0 "
                   f"with {num_processes}")
      elif their_id in peers or not 0 < their_id < num_processes:
        problem = f"two processes were started with --process_id={their_id}"
      else:
        problem = identity_differences(their_id, identity, theirs)
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
  finally:
    server.close()  # JAX binds the port next; the accepted connections stay open for `watch`
    for conn in extra:
      conn.close()
    if problem:
      for conn in peers.values():
        conn.close()
  if problem:
    raise UserError(problem)
  return sorted(peers.items())


def _join_rendezvous(host: str, port: int, num_processes: int, process_id: int, deadline: float,
                     timeout: float, address: str, identity: dict[str, Any]) -> socket.socket:
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
    hello = f"{_HELLO} {process_id} {num_processes} {json.dumps(identity, sort_keys=True)}"
    conn.sendall(hello.encode("utf-8") + b"\n")
    # Process 0 answers when all have come, or when it gives up: allow it its own full wait.
    conn.settimeout(max(1.0, deadline - time.monotonic()) + 10.0)
    answer = _read_line(conn, _HELLO_LIMIT)
  except OSError:
    answer = ""
  if answer == "go":
    return conn
  conn.close()
  if answer.startswith("abort "):
    raise UserError(answer[len("abort "):])
  raise UserError(gone)


def _read_line(conn: socket.socket, limit: int = 4096) -> str:
  data = b""
  try:
    while not data.endswith(b"\n") and len(data) < limit:
      chunk = conn.recv(65536)
      if not chunk:
        break
      data += chunk
  except OSError:
    pass
  return data.decode("utf-8", errors="replace").strip()


# ----------------------------------------------------------------------------------------------
# The watch.
# ----------------------------------------------------------------------------------------------


def watch(links: list[tuple[int, socket.socket]], num_processes: int, grace: float = 5.0) -> None:
  """Watch each partner connection on a daemon thread until the partner says goodbye."""
  _links.extend(links)
  for process_id, conn in links:
    threading.Thread(target=_watch_one, args=(process_id, conn, num_processes, grace),
                     daemon=True, name=f"partner-{process_id}-watch").start()


def _watch_one(process_id: int, conn: socket.socket, num_processes: int, grace: float) -> None:
  conn.settimeout(None)
  data = b""
  while b"\n" not in data:
    try:
      chunk = conn.recv(4096)
    except OSError:
      chunk = b""
    if not chunk:
      break
    data += chunk
  line = data.split(b"\n")[0].decode("utf-8", errors="replace").strip()
  if line == "bye ok":
    return
  if line.startswith("bye "):
    what = f"stopped ({line[len('bye '):]})"
  else:
    what = "ended without finishing (it was killed or crashed)"
  message = (f"process {process_id} of this {num_processes}-process run {what}; checkpoints "
             "written so far are kept: restart every process with the same command to resume")
  _named_losses.append(message)
  _partner_lost.set()
  time.sleep(grace)  # this process may be ending by itself (the same bad input, say)
  exit_now(message)


def named_loss(wait: float = 5.0) -> str | None:
  """The watch's message naming a partner that ended without a goodbye, waiting up to `wait`
  seconds for it: a failed collective is often seen before the partner's connection closes."""
  if not _links or not _partner_lost.wait(wait):
    return None
  return _named_losses[0]


def exit_now(message: str, status: int = PARTNER_FAILED_STATUS) -> None:
  """Print `error: message` and end the process at once, once (the watch threads and the main
  thread may both get here). Not a normal exit: JAX's exit handler would wait for the lost
  process at a shutdown barrier and then abort with a C++ stack trace; every checkpoint was
  written synchronously, so nothing is lost."""
  with _exit_lock:
    try:
      sys.stdout.flush()
      print(f"error: {message}", file=sys.stderr, flush=True)
    finally:
      os._exit(status)  # pylint: disable=protected-access


def goodbye(error: str = "") -> None:
  """Tell the partners this process is ending in order (with its one-line `error`, if any)."""
  text = f"bye {' '.join(error.split())[:500]}" if error else "bye ok"
  for _, conn in _links:
    try:
      conn.sendall(text.encode("utf-8") + b"\n")
    except OSError:
      pass
