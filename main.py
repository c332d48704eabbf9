"""augpro-jax command line: python main.py --task=sst2 --aug=augpro_mix --shift_degree=0.3.

Flags are read here once and turned into a `Config`; the library never reads flags.
Bad input ends with one line on stderr and exit status 2; a preempted run with exit status 3; a
multi-process run whose partner process failed with one line and exit status 4.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing


def _cpu_xla_defaults() -> None:
  """Turn XLA:CPU's YNNPACK library fusions off unless XLA_FLAGS already chooses.

  Measured on a 2-core AMD EPYC VM (docs/benchmarks.md): with them on, attention's batched
  dots are fused with the softmax into library calls that run far below the matmul rate, and the
  MiniLM forward takes ~1.6x longer. The flag only affects the CPU backend; it must be set before
  JAX starts its backend. XLA rejects unknown flags: the pinned jaxlib (0.10.2) knows this one.
  """
  current = os.environ.get("XLA_FLAGS", "")
  if "ynn_fusion_type" not in current:
    os.environ["XLA_FLAGS"] = (current + " --xla_cpu_experimental_ynn_fusion_type=").strip()


_cpu_xla_defaults()

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from absl import logging

from augpro_jax import config as config_lib


def define_flags() -> None:
  """One absl flag per `Config` field, with the field's default and help text."""
  types = config_lib.field_types()
  for field in dataclasses.fields(config_lib.Config):
    kind, default = types[field.name], field.default
    help_text = field.metadata["help"]
    if typing.get_origin(kind) is typing.Union:  # Optional[X] -> X
      kind = next(t for t in typing.get_args(kind) if t is not type(None))
    base = kind
    if typing.get_origin(base) is tuple:
      flags.DEFINE_list(field.name, list(default), help_text)
    elif base is bool:
      flags.DEFINE_bool(field.name, default, help_text)
    elif base is int:
      flags.DEFINE_integer(field.name, default, help_text)
    elif base is float:
      flags.DEFINE_float(field.name, default, help_text)
    else:
      flags.DEFINE_string(field.name, default, help_text)


define_flags()
FLAGS = flags.FLAGS


def config_from_flags() -> config_lib.Config:
  values = {}
  for field in dataclasses.fields(config_lib.Config):
    value = getattr(FLAGS, field.name)
    values[field.name] = tuple(v for v in value if v) if isinstance(value, list) else value
  values["glue_dir"] = values["glue_dir"] or os.environ.get("GLUE_DIR")
  return config_lib.Config(**values)


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from augpro_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  try:
    cfg = config_from_flags().validate()
  except UserError as exc:  # before any process joins a job: there is no partner to tell
    print(f"error: {exc}", file=sys.stderr, flush=True)
    return 2
  # Imported late so that --help and bad flags answer before Flax, Orbax and the training code load.
  from augpro_jax import distributed  # pylint: disable=g-import-not-at-top
  from augpro_jax import rendezvous  # pylint: disable=g-import-not-at-top
  from augpro_jax import train  # pylint: disable=g-import-not-at-top

  try:
    distributed.initialize(cfg)
    summary = train.run(cfg)
  except UserError as exc:
    rendezvous.goodbye(f"error: {exc}")  # partner processes, if any, stop too
    print(f"error: {exc}", file=sys.stderr, flush=True)
    return 2
  except train.Preempted as exc:
    rendezvous.goodbye()
    print(f"preempted: {exc}", file=sys.stderr, flush=True)
    return 3
  except KeyboardInterrupt:
    print("interrupted before the first checkpointable step; nothing was saved", file=sys.stderr)
    return 130
  except Exception as exc:  # pylint: disable=broad-except  # only a lost partner is handled here
    message = distributed.lost_peer(exc)
    if message is None:
      raise
    rendezvous.exit_now(message)
  if summary is not None and distributed.is_main_process():
    print(result_line(cfg, summary), flush=True)
  rendezvous.goodbye()
  return 0


def result_line(cfg: config_lib.Config, summary: dict) -> str:
  """One line a person reads at the end of a run; the details are in summary.json / the JSON."""
  if cfg.mode == "benchmark":
    return f"benchmark written to {cfg.benchmark_out}" if cfg.benchmark_out else "benchmark done"
  if cfg.mode == "compile":
    return f"{summary['verdict']} | report: {summary['out']}"
  if cfg.mode == "predict" and "files" in summary:
    files = ", ".join(f"{name} ({rows} rows)" for name, rows in summary["files"].items())
    return f"GLUE submission files in {summary['out']}: {files}"
  if cfg.mode == "predict":
    return f"{summary['predictions']} predictions written to {summary['out']}"

  def metrics(values):
    return ", ".join(f"{k}={v:.4f}" for k, v in sorted((values or {}).items())) or "n/a"

  parts = []
  if summary.get("teacher_dev"):
    parts.append(f"teacher dev: {metrics(summary['teacher_dev'])}")
  who = {"train_teacher": "teacher", "eval": "model"}.get(cfg.mode, "student")
  parts.append(f"{who} dev: {metrics(summary.get('dev'))}")
  if summary.get("measured_shift") is not None:
    parts.append(f"measured shift: {summary['measured_shift']:.3f}")
  if cfg.mode != "eval":
    parts.append(f"summary: {os.path.join(cfg.workdir, 'summary.json')}")
  return " | ".join(parts)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with a malformed value (`--batch_size=abc`) as our one-line error, exit 2."""
  try:
    return FLAGS(argv)
  except flags.Error as exc:
    print(f"error: {exc}", file=sys.stderr, flush=True)
    sys.exit(2)


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(lambda argv: sys.exit(main(argv)), flags_parser=parse_flags)
