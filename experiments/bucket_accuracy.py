"""Do length buckets cost accuracy? A short recipe's teacher and student, bucketed and padded, by seed.

Command (resumable; a part is one seed):
  .venv/bin/python experiments/bucket_accuracy.py --only='-s0$'
  .venv/bin/python experiments/bucket_accuracy.py          # 4 seeds, 16 runs: 18 min on 2 cores
  .venv/bin/python experiments/report.py
Grid, for each seed: the MiniLM teacher fine-tuned on 2,000 SST-2 examples for one epoch with
--length_buckets=auto and with =none; then the 2x384 student distilled with augpro_mix for two
epochs (learning rate 1e-4) with auto and with none, both from one teacher (seed 0's fixed-padding
teacher), so that the student's difference is the buckets' alone. Per run, the seed fixes the
training subset, the initialisation, the batch order within each padding and the augmentation.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any, Callable

from experiments import grid
from experiments import protocol

PADDINGS = ("auto", "none")
# The short recipe: 2,000 SST-2 examples, 64 tokens; no checkpoint before the end of these runs.
DEMO = {"task": "sst2", "train_size": 2000, "max_seq_len": 64, "batch_size": 32, "log_every": 25,
        "checkpoint_every": 1000}
TEACHER = {**DEMO, "mode": "train_teacher", "teacher_num_epochs": 1}
STUDENT = {**DEMO, "mode": "distill", "aug": "augpro_mix", "shift_degree": 0.3, "num_epochs": 2,
           "learning_rate": 1e-4, "student_layers": 2}
SHARED_TEACHER = "teacher-bucket-none-s0"  # every student distils from it


def _teacher_name(padding: str, seed: int) -> str:
  return f"teacher-bucket-{padding}-s{seed}"


def runs(seeds: int, tiny: bool, root: pathlib.Path) -> list[grid.Run]:
  """Teachers for every (padding, seed), then students for every (padding, seed)."""
  size = dict(grid.TINY) if tiny else {}
  cells = [(p, s) for s in range(1 if tiny else seeds) for p in PADDINGS]
  teachers = {}
  for padding, seed in cells:
    flags = {**TEACHER, **size, "length_buckets": padding, "seed": seed}
    name = _teacher_name(padding, seed)
    teachers[name] = grid.Run(name, tuple(flags.items()),
                              (("role", "teacher"), ("mode", "teacher"), ("aug", "none"),
                               ("padding", padding), ("seed", seed)))
  if tiny:  # the shared teacher and two students
    teachers = {SHARED_TEACHER: teachers[SHARED_TEACHER]}
  students = [grid.student_run(
      f"student-bucket-{padding}-s{seed}", teachers[SHARED_TEACHER], root,
      {**STUDENT, **size, "length_buckets": padding, "seed": seed},
      {"role": "student", "mode": "distill", "aug": STUDENT["aug"], "padding": padding,
       "seed": seed}) for padding, seed in cells]
  return list(teachers.values()) + students


def table(rows: list[dict[str, str]], predictions: dict[str, Any]) -> list[str]:
  """Markdown: mean accuracy with each padding, and fixed padding minus buckets, paired by seed."""
  lines = ["| model | seeds | buckets | fixed padding | train token utilisation (buckets / fixed) "
           "| fixed − buckets (x100, family-wise CI) | McNemar (fixed only / buckets only, p, "
           "Holm p) | fixed padding is more accurate |",
           "|---|---:|---:|---:|---|---|---|---|"]
  # The two claims (teacher, student) are one family (experiments/README.md, "Verdicts").
  family = [protocol.Claim("bucket_accuracy", role, {"role": role, "padding": "none"},
                           {"role": role, "padding": "auto"}) for role in ("teacher", "student")]
  for result in protocol.evaluate_family(family, rows, predictions):
    role = result["claim"]
    mine = lambda padding, key: [float(r[key]) for r in rows
                                 if r.get("role") == role and r.get("padding") == padding
                                 and r.get(key) not in (None, "")]
    mean = lambda values: sum(values) / len(values) if values else float("nan")
    acc = {p: 100 * mean(mine(p, "dev_accuracy")) for p in PADDINGS}
    util = {p: mean(mine(p, "train_token_utilisation")) for p in PADDINGS}
    d, m = result["family_diff"], result["mcnemar"]
    ci = (f"{100 * d.mean:+.2f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}]" if d.n > 1
          else f"{100 * d.mean:+.2f} (one seed)")
    test = (f"{m.a_only} / {m.b_only}, p={m.p_value:.3g}, {result['p_adjusted']:.3g}"
            if m is not None else "-")
    lines.append(f"| {role} | {result['seeds']} | {acc['auto']:.1f} | {acc['none']:.1f} | "
                 f"{util['auto']:.2f} / {util['none']:.2f} | {ci} | {test} | "
                 f"{result['verdict']} |")
  return lines if len(lines) > 2 else ["No results yet."]


def report_section(read_rows: Callable[[], list[dict[str, str]]],
                   read_predictions: Callable[[], dict]) -> list[str]:
  return ["### Length buckets and accuracy (a short recipe's runs, paired by seed)", "",
          *table(read_rows(), read_predictions())]


if __name__ == "__main__":
  sys.exit(grid.main(__doc__, runs, "bucket_accuracy", default_seeds=4))
