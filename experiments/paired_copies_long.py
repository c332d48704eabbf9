"""Does KD keep gaining from more augmented copies when it trains long enough to use them?

Command (resumable, splittable by --only; experiments/README.md "Plan" lists the parts):
  .venv/bin/python experiments/paired_copies_long.py --only='-s0$'   # and s1 ... s5
  .venv/bin/python experiments/report.py
Grid (experiments/protocol.py): the copies study (SST-2, 1,000 training examples, augpro_mix at
shift 0.3, 1, 2, 4 and 8 copies per example, fine-tuning and KD) at the shift study's 625 steps
instead of 3 epochs (93 steps), 6 seeds. 49 runs (with the shared teacher); each run's runtime
goes into the CSV.
"""

import sys

from experiments import grid
from experiments import protocol

if __name__ == "__main__":
  sys.exit(grid.main(__doc__, protocol.copies_long_runs, "paired_copies_long", default_seeds=6))
