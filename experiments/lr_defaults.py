"""Which student learning rate should be the default? A short-run study on SST-2 and QNLI.

Command (resumable; a part is one task, e.g. --only='-sst2-'):
  .venv/bin/python experiments/lr_defaults.py   # 2 teachers + 32 students: about 75 min, 2 cores
  .venv/bin/python experiments/report.py
Grid: the 2x384 student (from MiniLM) on 2,000 training examples for one epoch, the shortest run
the README documents, at each learning rate of RATES; distilled with augpro_mix at shift 0.3 from a
teacher fine-tuned on 8,000 examples, and fine-tuned on the labels with augpro_mix; seeds 0 and 1
(a seed fixes the subset, the initialisation, the batch order and the augmentation, so the rates
are paired by seed). The question is whether a short run learns at all, and which rate does best.
"""

from __future__ import annotations

import pathlib
import statistics
import sys

import numpy as np

from augpro_jax.bench import common
from experiments import grid
from experiments import protocol

RATES = (5e-5, 1e-4, 2e-4, 4e-4)
TASKS = ("sst2", "qnli")
MODES = ("distill", "finetune")
STUDENT = {"train_size": 2000, "num_epochs": 1, "aug": "augpro_mix", "shift_degree": 0.3,
           "log_every": 25}
TEACHER_EXAMPLES = 8000


def runs(seeds: int, tiny: bool, root: pathlib.Path) -> list[grid.Run]:
  """A teacher per task, then every (task, mode, rate, seed) student."""
  out = []
  for task in TASKS[:1] if tiny else TASKS:
    size = dict(grid.TINY) if tiny else {**grid.COMMON, "max_seq_len": protocol.MAX_SEQ_LEN[task],
                                         "train_size": TEACHER_EXAMPLES}
    teacher = grid.teacher_run(task, size, 0.25 if tiny else 1.0, name=f"teacher-lr-{task}")
    out.append(teacher)
    cells = [("distill", 5e-5, 0), ("finetune", 4e-4, 0)] if tiny else [
        (m, r, s) for m in MODES for r in RATES for s in range(seeds)]
    for mode, rate, seed in cells:
      base = dict(grid.TINY) if tiny else {**grid.COMMON, **STUDENT,
                                           "max_seq_len": protocol.MAX_SEQ_LEN[task]}
      flags = {**base, "task": task, "mode": mode, "learning_rate": rate, "seed": seed}
      if tiny:
        flags["aug"] = "augpro_mix"
      out.append(grid.student_run(f"lr-{task}-{mode}-lr{rate:g}-s{seed}", teacher, root, flags,
                                  {"task": task, "mode": mode, "learning_rate": rate,
                                   "seed": seed}))
  return out


def table(rows: list[dict[str, str]], predictions: dict[str, dict[str, np.ndarray]]) -> list[str]:
  """Markdown: dev accuracy x100 (mean over seeds, each seed in brackets) per task, mode, rate;
  beside it the accuracy of always predicting the dev set's most frequent class."""
  students = [r for r in rows if r.get("mode") != "teacher" and r.get("dev_accuracy")]
  rates = sorted({float(r["learning_rate"]) for r in students})
  if not students:
    return ["No results yet."]
  body = []
  for task in dict.fromkeys(r["task"] for r in students):
    for mode in MODES:
      cells = []
      for rate in rates:
        acc = [100 * float(r["dev_accuracy"]) for r in students
               if r["task"] == task and r["mode"] == mode and float(r["learning_rate"]) == rate]
        cells.append(f"{statistics.mean(acc):.1f} ({', '.join(f'{a:.1f}' for a in acc)})"
                     if acc else "-")
      if any(c != "-" for c in cells):
        labels = next((predictions[r["run"]]["dev/labels"] for r in students
                       if r["task"] == task and r["run"] in predictions), None)
        share = "-" if labels is None else f"{100 * np.bincount(labels).max() / len(labels):.1f}"
        body.append([task, mode, share, *cells])
  return common.table(["task", "mode", "majority class", *(f"{r:g}" for r in rates)], body, left=2)


def report_section(rows: list[dict[str, str]],
                   predictions: dict[str, dict[str, np.ndarray]]) -> list[str]:
  return ["### Student learning rate on short runs (dev accuracy x100, mean and each seed)", "",
          *table(rows, predictions)]


if __name__ == "__main__":
  sys.exit(grid.main(__doc__, runs, "lr_defaults", default_seeds=2))
