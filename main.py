"""augpro-jax command line: python main.py --task=sst2 --aug=augpro_mix --shift_degree=0.3.

Flags are read here once and turned into a `Config`; the library never reads flags.
Bad input ends with one line on stderr and exit status 2; a preempted run with exit status 3; a
multi-process run whose partner process failed with one line and exit status 4.
"""

from __future__ import annotations

import os
import sys
import typing
from typing import Optional


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

from augpro_jax import augmentations  # pylint: disable=unused-import  # fills the --aug choices
from augpro_jax import config as config_lib
from augpro_jax import knobs as knobs_lib


def define_flags(cls: type = config_lib.Config, flag_values: flags.FlagValues = flags.FLAGS,
                 main_module: str = sys.argv[0]) -> None:
  """One absl flag per knob of `cls`, everything about it from the knob's declaration.

  A knob with choices gets an enum flag (a list knob: its help names every choice, and
  `Config.validate` checks each element); each flag is listed under its knob's group by
  `--helpfull`, and all of them by `--help`.
  """
  types = config_lib.field_types(cls)
  for field in knobs_lib.fields(cls):
    kind, meta = types[field.name], field.metadata
    if typing.get_origin(kind) is typing.Union:  # Optional[X] -> X
      kind = next(t for t in typing.get_args(kind) if t is not type(None))
    listed = None if meta["choices"] is None else tuple(meta["choices"])
    args = dict(name=field.name, default=field.default, help=_help(meta["help"], listed, kind),
                flag_values=flag_values, module_name=_group_title(meta["group"]))
    if typing.get_origin(kind) is tuple:
      flags.DEFINE_list(**{**args, "default": list(field.default)})
    elif kind is bool:
      flags.DEFINE_bool(**args)
    elif listed is not None and kind is str:
      flags.DEFINE_enum(enum_values=list(listed), **args)
    elif kind is int:
      flags.DEFINE_integer(**args)
    elif kind is float:
      flags.DEFINE_float(**args)
    else:
      flags.DEFINE_string(**args)
    flag_values.register_key_flag_for_module(main_module, flag_values[field.name])
    for alias in meta["aliases"]:
      flags.DEFINE_alias(alias, field.name, flag_values=flag_values, module_name=args["module_name"])


def _help(text: str, listed: Optional[tuple], kind: type) -> str:
  """A knob's help, naming every allowed value (an enum flag's help starts with them already)."""
  if listed is None or kind is str:
    return text
  each = "Each one of" if typing.get_origin(kind) is tuple else "One of"
  return f"{text} {each}: {', '.join(map(str, listed))}."


def _group_title(group: str) -> str:
  # absl lists --helpfull by module name, sorted: the number keeps README's order of the groups
  # (and, a digit sorting before a letter, puts them before absl's own flags).
  return f"{knobs_lib.GROUPS.index(group) + 1}. {group} flags"


define_flags()
FLAGS = flags.FLAGS


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> config_lib.Config:
  values = {}
  for field in knobs_lib.fields(config_lib.Config):
    value = getattr(flag_values, field.name)
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
  # Imported late so that --help and bad flags answer before Orbax and the training code load.
  from augpro_jax import distributed  # pylint: disable=g-import-not-at-top
  from augpro_jax import interrupts  # pylint: disable=g-import-not-at-top
  from augpro_jax import rendezvous  # pylint: disable=g-import-not-at-top
  from augpro_jax import train  # pylint: disable=g-import-not-at-top

  try:
    distributed.initialize(cfg)
    summary = train.run(cfg)
  except UserError as exc:
    rendezvous.goodbye(f"error: {exc}")  # partner processes, if any, stop too
    print(f"error: {exc}", file=sys.stderr, flush=True)
    return 2
  except interrupts.Preempted as exc:
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
    rendezvous.exit_now(rendezvous.named_loss() or message)  # name the lost process if known
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

  if cfg.mode == "eval":
    sources = "; ".join(f"{split['source']} ({split['examples']} examples)"
                        for split in summary.get("splits", {}).values())
    return (f"evaluated {summary.get('model')} on {sources}: {metrics(summary.get('dev'))} | "
            f"results: {summary.get('out')}")
  parts = []
  if summary.get("teacher_dev"):
    parts.append(f"teacher dev: {metrics(summary['teacher_dev'])}")
  who = "teacher" if cfg.mode == "train_teacher" else "student"
  export = summary.get("export") or {}
  if export.get("which") == "best" and export.get("step") != summary.get("steps_trained"):
    parts.append(f"{who} dev (best, step {export['step']}): {metrics(export.get('dev'))}")
  else:
    parts.append(f"{who} dev: {metrics(summary.get('dev'))}")
  if summary.get("measured_shift") is not None:
    parts.append(f"measured shift: {summary['measured_shift']:.3f}")
  if summary.get("inference"):
    student, teacher = summary["inference"]["student"], summary["inference"]["teacher"]
    parts.append(f"student {student['params'] / 1e6:.1f}M parameters (teacher "
                 f"{teacher['params'] / 1e6:.1f}M), "
                 f"{student['examples_per_sec'] / teacher['examples_per_sec']:.1f}x the teacher's "
                 f"examples/s in predict")
  parts.append(f"model: {os.path.join(cfg.workdir, 'final', 'hf', '')}")
  parts.append(f"summary: {os.path.join(cfg.workdir, 'summary.json')}")
  return " | ".join(parts)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with a malformed value (`--batch_size=abc`) as our one-line error, exit 2."""
  try:
    return FLAGS(argv)
  except flags.Error as exc:
    print(f"error: {exc}", file=sys.stderr, flush=True)
    sys.exit(2)


def console() -> None:
  """The `augpro-jax` command (pyproject.toml's console script), the same as `python main.py`."""
  logging.set_verbosity(logging.WARNING)
  app.run(lambda argv: sys.exit(main(argv)), flags_parser=parse_flags)


if __name__ == "__main__":
  console()
