"""The full-size point: which shift degree do KD and fine-tuning prefer on all of SST-2?

Command (resumable, splittable by --only; experiments/README.md "Plan" lists the parts):
  .venv/bin/python experiments/paired_fullsize.py --only='-s0$'
  .venv/bin/python experiments/paired_fullsize.py --only='-s1$'
  .venv/bin/python experiments/report.py
Grid (experiments/protocol.py): SST-2, all 67,349 training examples, fine-tuning and KD, shift 0
(no augmentation), 0.1, 0.3 and 0.5 with knn and augpro_mix, the shift study's 625 steps and its
teacher, 2 seeds. 29 runs (with the shared teacher); each run's runtime goes into the CSV.
The paper's arm for sets over 100,000 examples needs a larger task than SST-2.
"""

import sys

from experiments import grid
from experiments import protocol

if __name__ == "__main__":
  sys.exit(grid.main(__doc__, protocol.fullsize_runs, "paired_fullsize", default_seeds=2))
