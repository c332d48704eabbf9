"""Does KD keep gaining from more augmented copies while fine-tuning saturates?

Command (resumable, splittable by --only):
  .venv/bin/python experiments/paired_copies.py && .venv/bin/python experiments/report.py
Grid (experiments/protocol.py): SST-2, 1,000 training examples, 3 epochs, augpro_mix at shift 0.3
with 1, 2, 4 and 8 copies per example (--aug_copies), fine-tuning and KD, 3 seeds. 25 runs (with
the shared teacher); each run's runtime is in the CSV. Measured on the quiet 2-core VM: one seed (8 runs,
`--only='-s1$'`) takes 17 minutes, 55 s (1 copy) to 223 s (8 copies, KD) per run.
"""

import sys

from experiments import grid
from experiments import protocol

if __name__ == "__main__":
  sys.exit(grid.main(__doc__, protocol.copies_runs, "paired_copies"))
