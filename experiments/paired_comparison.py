"""Which augmentation helps distillation? KD on SST-2 and QNLI, paired seeds (the protocol).

Command (resumable, splittable by --only; a part is one task and seed):
  .venv/bin/python experiments/paired_comparison.py --only='-sst2-.*-s0$'
  .venv/bin/python experiments/paired_comparison.py
  .venv/bin/python experiments/report.py
Grid (experiments/protocol.py): KD at 2,000 training examples, 2 epochs, shift 0.3, with none,
mixup, fgsm, augpro_mix, augpro_fgsm, knn, synonym and the earlier folded AugPro-Mix
(--mix_lambda=folded --projection_vocab=full); 5 seeds; strong teachers (all of SST-2, the shipped
QNLI subset). 82 runs; the runtime of each is in the CSV (wallclock_seconds).
"""

import sys

from experiments import grid
from experiments import protocol

if __name__ == "__main__":
  sys.exit(grid.main(__doc__, protocol.comparison_runs, "paired_comparison",
                     default_seeds=5))
