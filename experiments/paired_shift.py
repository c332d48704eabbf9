"""Which shift degree does KD prefer, against fine-tuning, at 1,000 and 10,000 examples?

Command (resumable, splittable by --only):
  .venv/bin/python experiments/paired_shift.py --only='-n1000-'
  .venv/bin/python experiments/paired_shift.py --only='-n10000-'
  .venv/bin/python experiments/paired_shift.py --seeds=8 --only='-n1000-s3$'   # seeds 3-7: the plan
  .venv/bin/python experiments/report.py
Grid (experiments/protocol.py): SST-2, fine-tuning and KD, shift 0 (no augmentation), 0.1, 0.3,
0.5 and 0.7 with augpro_mix and knn, 1,000 and 10,000 training examples trained for the same 625
steps, 3 seeds. 109 runs (with the shared teacher); each run's runtime is in the CSV. Measured on
the 2-core VM: one part (a size and a seed, 18 runs, e.g. --only='-n1000-s0$') takes 57 to 86
minutes on a quiet machine, 2 to 6 minutes per run; the 108 student runs, 7.4 hours in all (the
teacher's 33 minutes apart).
"""

import sys

from experiments import grid
from experiments import protocol

if __name__ == "__main__":
  sys.exit(grid.main(__doc__, protocol.shift_runs, "paired_shift"))
