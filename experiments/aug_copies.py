"""Experiment 3: does KD keep gaining from more augmented data while fine-tuning saturates?

Command (18 runs, about 3 CPU-hours on 2 cores):
  .venv/bin/python experiments/aug_copies.py && .venv/bin/python experiments/report.py
Grid: augpro_mix at shift 0.3 with 1, 2 and 4 augmented copies per example per step
(--aug_copies), fine-tuning and KD, 2,000 SST-2 examples, 2 epochs, 3 seeds.
Runtime, measured on the 2-core CPU VM: 1 copy 206 s (fine-tuning) and 298 s (KD) alone, 2 copies
361 s and 478 s alone; 4 copies 1,312 s and 1,751 s with other jobs on the cores.
"""

import pathlib
import sys

from experiments import grid

COPIES = (1, 2, 4)
MODES = ("finetune", "distill")


def runs(seeds: int, tiny: bool, root: pathlib.Path) -> list:
  teachers = grid.teachers(("sst2",), tiny)
  out = list(teachers.values())
  grid_ = [(1, "distill", 0), (2, "finetune", 0)] if tiny else \
      [(c, m, s) for c in COPIES for m in MODES for s in range(seeds)]
  for copies, mode, seed in grid_:
    flags = dict(grid.TINY) if tiny else {**grid.COMMON, "train_size": 2000, "num_epochs": 2}
    flags.update(task="sst2", mode=mode, aug="augpro_mix", shift_degree=0.3, aug_copies=copies,
                 seed=seed)
    out.append(grid.student_run(
        f"copies-c{copies}-{mode}-s{seed}", teachers["sst2"], root, flags,
        {"experiment": "aug_copies", "task": "sst2", "aug": "augpro_mix", "aug_copies": copies,
         "mode": mode, "seed": seed}))
  return out


if __name__ == "__main__":
  sys.exit(grid.main(__doc__, runs, "aug_copies"))
