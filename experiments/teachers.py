"""The protocol's strong teachers, one row per training, for experiments/README.md ("teachers").

A teacher's checkpoint is scratch (too large to commit), so a fresh checkout that runs a KD cell
trains the teacher again. Each training keeps a row of its own in the CSVs (`grid.EARLIER` renames
the earlier ones; the QNLI teacher's second training is `-t2`), and the table says how often each
one predicts the same dev class as the task's first training: students of different seeds may
have learnt from different trainings, and this is how far apart those teachers are.
"""

from __future__ import annotations

import re
import statistics
from typing import Any

from experiments import grid
from experiments import protocol

Rows = list[dict[str, str]]


def base_name(run: str) -> str:
  """The teacher a training belongs to: `<teacher>-earlier-<k>` and `<teacher>-t2` are
  trainings of `<teacher>`."""
  run = re.sub(re.escape(grid.EARLIER) + r"\d+$", "", run)
  return run[:-len("-t2")] if protocol.is_retrained_teacher(run) else run


def _agreement(first: Any, other: Any) -> str:
  if first is None or other is None or len(first) != len(other):
    return "-"
  return f"{100 * float((first == other).mean()):.1f}% of {len(first):,}"


def _minutes(seconds: str | None) -> str:
  return f"{float(seconds) / 60:.0f} min" if seconds else "-"


def _lead(value: float, row: dict[str, str], students: Rows, metric: str, lead_size: int) -> str:
  """The teacher's lead over the students fine-tuned without augmentation on `lead_size`
  examples of its task (their mean over seeds; the shift study's p = 0 fine-tuning arm)."""
  scores = [float(r[metric]) for r in students if r.get("task") == row.get("task")
            and r.get("mode") == "finetune" and r.get("aug") == "none" and r.get(metric)
            and float(r.get("train_size") or 0) == lead_size]
  if not scores:
    return "-"
  mean = statistics.mean(scores)
  return f"{100 * (value - mean):+.1f} ({100 * mean:.1f}, " + (
      f"{len(scores)} seeds)" if len(scores) > 1 else "one seed)")


def table(studies: dict[str, Rows], predictions: dict[str, dict[str, dict[str, Any]]],
          metrics: dict[str, str], lead_size: int = protocol.SHIFT_SIZES[-1]) -> list[str]:
  """Markdown: each training (a teacher's row with its own wall clock) once, with the studies
  whose CSVs hold it, and its dev agreement with its teacher's first training. `studies`: each
  study's rows, teachers included; `predictions`: each study's prediction bundle; `metrics`: the
  CSV column of each task's main metric."""
  lines = ["| teacher | training | held by | training examples | steps | length buckets | "
           "dev metric | wall clock | same dev class as training 1 | "
           f"lead over a student fine-tuned on {lead_size:,} |",
           "|---|---:|---|---:|---:|---|---|---:|---|---|"]
  trainings: dict[tuple[str, str], dict[str, Any]] = {}
  for study, rows in studies.items():
    for row in rows:
      if row.get("mode") != "teacher":
        continue
      key = (base_name(row["run"]), row.get("wallclock_seconds", ""))
      found = trainings.setdefault(key, {"row": row, "studies": [], "predictions": (
          predictions.get(study, {}).get(row["run"], {}).get("dev/predictions"))})
      found["studies"].append(study)
  by_teacher: dict[str, list[dict[str, Any]]] = {}
  for (base, _), found in trainings.items():
    by_teacher.setdefault(base, []).append(found)
  students = list({r["run"]: r for rows in studies.values() for r in rows
                   if r.get("mode") != "teacher"}.values())
  for base, founds in by_teacher.items():
    for number, found in enumerate(founds, 1):
      row = found["row"]
      metric = metrics.get(row.get("task", ""), "dev_accuracy")
      value = float(row[metric])
      agree = "-" if number == 1 else _agreement(founds[0]["predictions"], found["predictions"])
      lines.append(
          f"| {row['run']} | {number} | {', '.join(found['studies'])} | "
          f"{int(float(row['train_examples'])):,} | {row['steps']} | "
          f"{row.get('length_buckets') or 'none'} | {metric[4:]} {100 * value:.1f} | "
          f"{_minutes(row.get('wallclock_seconds'))} | {agree} | "
          f"{_lead(value, row, students, metric, lead_size)} |")
  return lines if len(lines) > 2 else ["No teacher trained yet."]
