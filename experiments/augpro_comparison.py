"""Experiment 1: which augmentation helps distillation? KD with every --aug on five GLUE tasks.

Command (resumable, splittable; one task and seed is a part of about an hour):
  .venv/bin/python experiments/augpro_comparison.py --only='cmp-rte-.*-s0'   # a part
  .venv/bin/python experiments/augpro_comparison.py                         # the rest
  .venv/bin/python experiments/report.py
Settings: 2,000 training examples per task (RTE: all 2,490), 2 epochs, 64 tokens, shift 0.3,
3 seeds; teacher fine-tuned once per task; dev sets are the official ones.
Runtime, measured on the 2-core CPU VM with the machine to itself (SST-2, seed 0, without cached
teacher logits): 316-661 s per student run (none 330, synonym 316, knn 357, augpro_fgsm 359,
augpro_mix 449, fgsm 569, mixup 661), about 9 min per teacher. The full grid (105 student runs,
5 teachers) is therefore about 13 CPU-hours; cached teacher logits make a `none` step 1.8x and an
`augpro_mix` step 1.1x faster. With cached logits: RTE, MRPC and STS-B student runs 190-450 s
(none 160-190 s), the MRPC teacher 26 min (with other jobs on the cores), STS-B 7 min, SST-2 6 min;
the CoLA teacher (all 8,551 examples, 3 epochs, 802 steps) 46 min, sharing the cores with two
10-minute runs for its first half; CoLA students 184 s (none) to 812 s (augpro_mix, with other
jobs on the cores). experiments/README.md has the settings, the runs and the results.
"""

import pathlib
import sys

from augpro_jax import augmentations
from experiments import grid

TASKS = ("sst2", "rte", "mrpc", "cola", "stsb")
AUGS = augmentations.names()  # every registered augmentation


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
