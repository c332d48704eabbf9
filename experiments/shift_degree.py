"""Experiment 2: which shift degree does KD prefer, versus fine-tuning, at which data size?

Command (full grid: 216 runs, about 24 CPU-hours on 2 cores; resumable, splittable by --only):
  .venv/bin/python experiments/shift_degree.py --only='-n1000-'
  .venv/bin/python experiments/shift_degree.py --only='-n5000-'
  .venv/bin/python experiments/shift_degree.py --only='-n20000-'
  .venv/bin/python experiments/report.py
Grid: augpro_mix, knn, synonym x shift 0.1/0.3/0.5/0.7 x {finetune, distill} x SST-2 subsets of
1k/5k/20k x 3 seeds. Steps grow slower than the data (1k: 3 epochs, 5k: 1 epoch, 20k: half an
epoch) to fit a CPU; experiments/README.md says so.
Runtime, measured on the 2-core CPU VM with the machine to itself: 1k examples 150-180 s per
fine-tuning run and 235-250 s per KD run (72 runs, about 4 hours); 5k about 260 s and 400 s
(about 6.5 hours); 20k twice the steps of 5k (about 13 hours).
"""

import pathlib
import sys

from experiments import grid

METHODS = ("augpro_mix", "knn", "synonym")
DEGREES = (0.1, 0.3, 0.5, 0.7)
MODES = ("finetune", "distill")
SIZES = {1000: 3.0, 5000: 1.0, 20000: 0.5}  # training examples -> epochs


def runs(seeds: int, tiny: bool, root: pathlib.Path) -> list:
  teachers = grid.teachers(("sst2",), tiny)
  out = list(teachers.values())
  grid_ = [("augpro_mix", 0.3, "distill", 32, 0), ("augpro_mix", 0.5, "finetune", 32, 0)] if tiny \
      else [(m, d, mode, n, s) for n in SIZES for m in METHODS for d in DEGREES for mode in MODES
            for s in range(seeds)]
  for method, degree, mode, size, seed in grid_:
    flags = dict(grid.TINY) if tiny else {**grid.COMMON, "train_size": size,
                                          "num_epochs": SIZES[size]}
    flags.update(task="sst2", mode=mode, aug=method, shift_degree=degree, seed=seed)
    out.append(grid.student_run(
        f"shift-{method}-p{degree}-{mode}-n{size}-s{seed}", teachers["sst2"], root, flags,
        {"experiment": "shift_degree", "task": "sst2", "aug": method, "shift_degree": degree,
         "mode": mode, "train_size": size, "seed": seed}))
  return out


if __name__ == "__main__":
  sys.exit(grid.main(__doc__, runs, "shift_degree"))
