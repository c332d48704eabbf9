"""What the two benchmarks share: our step compiled for a list of batches, the peers built and
guarded, the markdown table writer and the report's JSON + markdown output."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Any, Callable, Optional, Sequence

import jax

from augpro_jax import files
from augpro_jax import flops as flops_lib
from augpro_jax import hf_io
from augpro_jax import sharding
from augpro_jax import train_step as step_lib
from augpro_jax.config import Config
from augpro_jax.errors import UserError


def prepare_step(cfg: Config, models: Any, aug: str, objective: str, batches: list, masks,
                 optimizer, num_labels: int) -> tuple[Callable[[int], Any], dict[str, Any], dict]:
  """Our step for one augmentation on the run's mesh, compiled once per length of `batches`.

  The teacher runs on every example, originals included, as in the peers' steps: what is timed is
  the whole KD step, not the cheaper one that training takes with cached teacher logits.
  Returns (call(i) on batch i, compile and memory facts, holder of the live state).
  """
  spec = step_lib.StepSpec.from_config(cfg, objective=objective, num_labels=num_labels,
                                       is_regression=False, aug=aug)
  spec = dataclasses.replace(spec, cached_teacher_logits=False)
  kd = objective == "kd"
  step_fn = step_lib.make_train_step(spec, models.student, models.teacher if kd else None,
                                     optimizer, *masks)
  mesh = sharding.run_mesh(cfg.mesh_data, cfg.mesh_fsdp)
  holder = {"state": sharding.put_tree(mesh, step_lib.init_state(models.student_params, optimizer,
                                                                 cfg.seed))}
  teacher = sharding.put_tree(mesh, models.teacher_params if kd else {})
  steps = step_lib.CompiledSteps(sharding.mesh_step(step_fn, mesh, holder["state"], teacher,
                                                    batches[0]))
  device_batches = [sharding.put_batch(mesh, b) for b in batches]
  for batch in device_batches:
    steps.compile(holder["state"], teacher, batch)

  def call(i):
    holder["state"], metrics = steps(holder["state"], teacher, device_batches[i % len(batches)])
    return metrics

  seconds = steps.compile_seconds
  facts = {"compile_seconds": sum(seconds.values()),
           "compile_seconds_per_length": {str(k): v for k, v in sorted(seconds.items())},
           **flops_lib.memory_summary(steps.executables[max(steps.executables)])}
  return call, facts, holder


def peer_shapes(cfg: Config, teacher: Any, student: Any, num_labels: int) -> Any:
  """The peers' `PeerShapes` for our teacher and student `BertConfig`s: BERT-family models get
  the peers' own BERT configs of the same shapes; other families exactly our configs."""
  from augpro_jax.bench import peers as peers_lib  # pylint: disable=g-import-not-at-top
  encoder = lambda c: peers_lib.EncoderShape(layers=c.num_layers, hidden=c.hidden_size,
                                             heads=c.num_heads, intermediate=c.intermediate_size)
  labels = [str(i) for i in range(num_labels)]
  family_configs = {} if teacher.family == "bert" else {
      "teacher_hf": hf_io.hf_config(teacher, labels), "student_hf": hf_io.hf_config(student, labels)}
  return peers_lib.PeerShapes(
      batch=cfg.batch_size, seq_len=cfg.max_seq_len, num_labels=num_labels,
      vocab_size=teacher.vocab_size, teacher=encoder(teacher), student=encoder(student),
      dtype=cfg.dtype, **family_configs)


def prepare_peers(cfg: Config, models: Any, num_labels: int,
                  calls: dict[str, Callable[[int], Any]],
                  batches: Optional[Callable[[str], Any]] = None, offset: int = 1
                  ) -> tuple[dict[str, tuple[Any, float]], dict[str, BaseException], list[dict]]:
  """Build each `--benchmark_peers` peer (on `batches(name)`, if given), run its first step
  (compilation or lazy allocation: untimed, reported) and add its guarded step to `calls` as
  "peer:<name>"; call(i) runs its step i + `offset`.

  Returns ({name: (run, first-step seconds)}, errors kept during timing, peers that could not
  be built, as reported)."""
  runs, errors, failed = {}, {}, []
  if not cfg.benchmark_peers:
    return runs, errors, failed
  from augpro_jax.bench import peers as peers_lib  # pylint: disable=g-import-not-at-top
  shapes = peer_shapes(cfg, models.teacher.config, models.student.config, num_labels)
  for name in cfg.benchmark_peers:
    if name not in peers_lib.PREPARE:
      raise UserError(f"unknown peer {name!r}; choose from {', '.join(peers_lib.PREPARE)}")
    try:
      extra = {} if batches is None else {"batches": batches(name)}
      run_ = peers_lib.PREPARE[name](shapes, seed=cfg.seed, **extra)
      start = time.perf_counter()
      run_.step(0)
      runs[name] = (run_, time.perf_counter() - start)
      calls["peer:" + name] = guarded(run_.step, errors, name, offset)
    except Exception as exc:  # pylint: disable=broad-except  # a peer that cannot run is reported
      failed.append(peer_error(name, exc))
  return runs, errors, failed


def peer_results(runs: dict[str, tuple[Any, float]], errors: dict[str, BaseException],
                 timing: dict[str, dict[str, Any]],
                 summarize: Callable[[str, Any, float, list[float]], dict[str, Any]]
                 ) -> list[dict[str, Any]]:
  """Each timed peer's report: `summarize(name, run, first seconds, times_ms)`, or its error."""
  out = []
  for name, (run_, first_seconds) in runs.items():
    try:
      if name in errors:
        raise errors[name]
      out.append(summarize(name, run_, first_seconds, timing["peer:" + name]["times_ms"]))
    except Exception as exc:  # pylint: disable=broad-except  # reported, not raised
      out.append(peer_error(name, exc))
  return out


def guarded(step: Callable[[int], None], errors: dict[str, BaseException],
            name: str, offset: int = 1) -> Callable[[int], None]:
  """A peer's step for `time_interleaved`: a failure is kept (the peer is reported unavailable)
  instead of ending the benchmark, and later calls do nothing. call(i) runs step(i + offset)."""

  def call(i: int) -> None:
    if name in errors:
      return
    try:
      step(i + offset)  # by default step 0 ran before timing (compilation / lazy allocation)
    except Exception as exc:  # pylint: disable=broad-except
      errors[name] = exc

  return call


def peer_error(name: str, exc: BaseException) -> dict[str, Any]:
  return {"name": name, "examples_per_sec": None, "ratio_ours_to_peer": None,
          "error": str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}


def machine() -> dict[str, Any]:
  """The report's "machine" entry."""
  return {"device_kind": jax.local_devices()[0].device_kind, "devices": jax.local_device_count(),
          "backend": jax.default_backend(), "peak_flops_per_device": flops_lib.device_peak_flops(),
          "jax": jax.__version__}


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
  """A markdown table's lines; the first `left` columns align left, the others right."""
  line = lambda cells: "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"
  rule = ["---" if i < left else "---:" for i in range(len(headers))]
  return [line(headers), "|" + "|".join(rule) + "|"] + [line(row) for row in rows]


def write_report(report: dict[str, Any], text: str, out: Optional[str]) -> None:
  """Print the markdown; with `out` (--benchmark_out) write the JSON there, the markdown beside."""
  print(text, flush=True)
  if out:
    path = pathlib.Path(out)
    files.atomic_write(path, json.dumps(report, indent=2, default=float), mkdir=True)
    files.atomic_write(path.with_suffix(".md"), text + "\n")
