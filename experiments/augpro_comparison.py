"""Experiment 1: which augmentation helps distillation? KD with every --aug on five GLUE tasks.

Command (full grid, about 1.5 CPU-hours on 2 cores after the teachers; resumable, splittable):
  .venv/bin/python experiments/augpro_comparison.py --only='sst2|rte'   # a part
  .venv/bin/python experiments/augpro_comparison.py                    # the rest
  .venv/bin/python experiments/report.py
Settings: 2,000 training examples per task (RTE: all 2,490), 2 epochs, 64 tokens, shift 0.3,
3 seeds; teacher fine-tuned once per task; dev sets are the official ones.
"""

import os
import pathlib
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grid  # pylint: disable=wrong-import-position

TASKS = ("sst2", "rte", "mrpc", "cola", "stsb")
AUGS = ("none", "mixup", "fgsm", "augpro_mix", "augpro_fgsm", "knn", "synonym")


def runs(seeds: int, tiny: bool, root: pathlib.Path) -> list:
  tasks = ("sst2",) if tiny else TASKS
  augs = ("none", "augpro_mix") if tiny else AUGS
  teachers = grid.teachers(tasks, tiny)
  out = list(teachers.values())
  for task in tasks:
    for aug in augs:
      for seed in range(1 if tiny else seeds):
        flags = dict(grid.TINY) if tiny else {**grid.COMMON, "train_size": 2000, "num_epochs": 2}
        flags.update(task=task, mode="distill", aug=aug, shift_degree=0.3, seed=seed)
        out.append(grid.student_run(f"cmp-{task}-{aug}-s{seed}", teachers[task], root, flags,
                                    {"experiment": "augpro_comparison", "task": task, "aug": aug,
                                     "mode": "distill", "seed": seed}))
  return out


if __name__ == "__main__":
  sys.exit(grid.main(__doc__, runs, "augpro_comparison"))
