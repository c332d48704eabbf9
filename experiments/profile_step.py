"""Where the KD train step's time goes: a `jax.profiler` trace of the compiled step, summed by op kind.

Command (about 2 minutes on 2 CPU cores; the numbers in docs/benchmarks.md came from it):
  .venv/bin/python experiments/profile_step.py --aug=none --out=experiments/results/profile_none_cpu.md

It compiles the same pmapped step as `--mode=benchmark` (MiniLM teacher, 2x384 student, synthetic
batch), runs warm-up steps, traces `--steps` steps with a Perfetto trace, and adds up the duration
of every XLA op event per step, grouped by op kind (the fusion's name without its number). The
table also shows how much of the step's wall time no op event covers: on XLA:CPU part of the dots'
work runs in the intra-op thread pool outside their own events, so read the `dot` row as a lower
bound. The trace itself stays under `--trace_dir` for TensorBoard / Perfetto.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re


from absl import app
from absl import flags

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Defined when run as a script only, so tests can import the pure helpers below."""
  flags.DEFINE_string("aug", "none", "Augmentation whose step is profiled.")
  flags.DEFINE_integer("batch_size", 32, "Global batch.")
  flags.DEFINE_integer("max_seq_len", 64, "Sequence length.")
  flags.DEFINE_integer("steps", 3, "Traced steps (after 3 warm-up steps).")
  flags.DEFINE_integer("top", 20, "Op kinds listed.")
  flags.DEFINE_string("trace_dir", "runs/profile", "Where the trace is written.")
  flags.DEFINE_string("out", None, "Markdown table path (printed either way).")


def op_kind(name: str) -> str:
  """'broadcast_add_fusion.28' -> 'broadcast_add_fusion'; every dot is 'dot'."""
  kind = re.sub(r"[._]?\d+$", "", name)
  return "dot" if kind.startswith("dot") else kind


def summarise(events: list[dict], steps: int) -> tuple[float, dict[str, float]]:
  """(wall ms per step, {op kind: ms per step}) from Perfetto 'complete' events."""
  wall, kinds = 0.0, collections.Counter()
  for event in events:
    if event.get("ph") != "X":
      continue
    name, ms = event["name"], event.get("dur", 0) / 1e3 / steps
    if name == "ThunkExecutor::Execute (wait for completion)":
      wall += ms
    elif not (name.startswith("$") or "Thunk" in name or "PjRt" in name or "Execute" in name):
      kinds[op_kind(name)] += ms
  return wall, dict(kinds)


def main(argv):
  del argv
  # The XLA:CPU default main.py sets (YNNPACK fusions off), so the profile is of the step users run.
  if "ynn_fusion_type" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_experimental_ynn_fusion_type=").strip()
  import jax  # pylint: disable=g-import-not-at-top
  from augpro_jax.bench import common  # pylint: disable=g-import-not-at-top
  from augpro_jax.bench import synthetic  # pylint: disable=g-import-not-at-top
  from augpro_jax import input_pipeline as pipeline  # pylint: disable=g-import-not-at-top
  from augpro_jax import optimizer as optimizer_lib  # pylint: disable=g-import-not-at-top
  from augpro_jax import train_step as step_lib  # pylint: disable=g-import-not-at-top
  from augpro_jax.config import Config  # pylint: disable=g-import-not-at-top

  cfg = Config(batch_size=FLAGS.batch_size, max_seq_len=FLAGS.max_seq_len)
  models, tokenizer = synthetic.build_models(cfg)
  masks = pipeline.vocab_masks(tokenizer, models.teacher.config.vocab_size)
  batches = synthetic.synthetic_batches(3, cfg.batch_size, cfg.max_seq_len, jax.local_device_count())
  optimizer, _ = optimizer_lib.make_optimizer(cfg.learning_rate, 10_000, 0.0, cfg.weight_decay)
  call, _, _ = common.prepare_step(cfg, models, FLAGS.aug, "kd", batches, masks, optimizer,
                                   synthetic.NUM_LABELS)
  for i in range(3):
    jax.block_until_ready(call(i))
  trace_dir = os.path.join(FLAGS.trace_dir, FLAGS.aug)
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    for i in range(FLAGS.steps):
      jax.block_until_ready(call(3 + i))
  path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.json.gz"), recursive=True))[-1]
  with gzip.open(path) as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  wall, kinds = summarise(events, FLAGS.steps)
  covered = sum(kinds.values())
  lines = [f"Step `--aug={FLAGS.aug}`, batch {cfg.batch_size}, seq {cfg.max_seq_len}, "
           f"{jax.local_device_count()} x {jax.devices()[0].device_kind}, jax {jax.__version__}: "
           f"wall {wall:.0f} ms/step, op events {covered:.0f} ms/step "
           f"({wall - covered:.0f} ms/step not covered by any op event).", "",
           "| op kind | ms/step | share of wall |", "|---|---:|---:|"]
  for kind, ms in sorted(kinds.items(), key=lambda kv: -kv[1])[:FLAGS.top]:
    lines.append(f"| {kind} | {ms:.1f} | {100 * ms / wall:.1f}% |")
  table = "\n".join(lines)
  print(table)
  if FLAGS.out:
    with open(FLAGS.out, "w", encoding="utf-8") as f:
      f.write(table + "\n")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
