"""How much of a step's work is real tokens: fixed padding against length buckets, on GLUE splits.

For SST-2's whole training split and the shipped QNLI training subset (MiniLM tokens, specials
included): real tokens / tokens processed at fixed 64 and 128, and with the best K buckets
(`buckets.choose_buckets`, top bucket from the data, no compile cost) for K = 1..8; then what
`--length_buckets=auto` picks for the runs the docs name, with the compile cost and the batch of
32 (`context.choose_length_buckets`, as a run does). No training.

Command (about a minute on 2 CPU cores):
  .venv/bin/python experiments/bucket_tables.py
Writes experiments/results/bucket_utilisation.md, which docs/length_buckets.md shows.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import pathlib
import sys
from typing import Any

import numpy as np

from augpro_jax import buckets as buckets_lib
from augpro_jax import config as config_lib
from augpro_jax import data as data_lib
from augpro_jax import context
from augpro_jax import evaluation
from augpro_jax import hf_io
from augpro_jax import input_pipeline as pipeline

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
SPLITS = (("SST-2", "sst2"), ("QNLI, shipped subset", "qnli"))
KS = (1, 2, 3, 4, 6, 8)
# (label, task, --train_size, mode, epochs, --max_seq_len): runs of the docs and experiments.
RUNS = (
    ("SST-2, all examples, 3 epochs, 128", "sst2", None, "distill", 3.0, 128),
    ("SST-2, all examples, 2 epochs, 64 (the strong teacher)", "sst2", None, "train_teacher", 2.0, 64),
    ("SST-2, 5,000 examples, 3 epochs, 64", "sst2", 5000, "distill", 3.0, 64),
    ("SST-2, 2,000 examples, 2 epochs, 64 (the short recipe's student)", "sst2", 2000, "distill", 2.0, 64),
    ("SST-2, 2,000 examples, 1 epoch, 64 (a teacher alone, as in bucket_accuracy.py)", "sst2", 2000,
     "train_teacher", 1.0, 64),
    ("QNLI subset, 3 epochs, 128 (the strong teacher)", "qnli", None, "train_teacher", 3.0, 128),
)


def _split(glue_dir: str, task: str, train_size: Any, max_seq_len: int, tokenizer) -> Any:
  cfg = config_lib.Config(task=task, glue_dir=glue_dir, train_size=train_size,
                          max_seq_len=max_seq_len).validate()
  return pipeline.tokenize(data_lib.load_split(cfg, data_lib.resolve_task(cfg), "train"),
                           tokenizer, max_seq_len)


def utilisation_table(glue_dir: str, tokenizer) -> list[str]:
  lines = ["| training split | fixed 64 | fixed 128 | " + " | ".join(f"K={k}" for k in KS) + " |",
           "|---|---:|---:|" + "---:|" * len(KS)]
  for label, task in SPLITS:
    split = _split(glue_dir, task, None, 128, tokenizer)
    lengths = split.lengths
    fixed = [buckets_lib.utilisation(np.minimum(lengths, n), (n,)) for n in (64, 128)]
    cells = []
    for k in KS:
      chosen = buckets_lib.choose_buckets(lengths, k, 128)
      value = f"{buckets_lib.utilisation(lengths, chosen):.2f}"
      cells.append(f"{value} ({chosen[0]})" if k == 1 else value)
    truncated = split.num_truncated
    name = f"{label} ({len(lengths):,}" + (f"; {truncated} truncated at 128)" if truncated
                                           else ")")
    lines.append(f"| {name} | {fixed[0]:.2f} | {fixed[1]:.2f} | " + " | ".join(cells) + " |")
  return lines


def auto_table(glue_dir: str, tokenizer) -> list[str]:
  lines = ["| run | buckets | utilisation |", "|---|---|---:|"]
  for label, task, size, mode, epochs, max_seq_len in RUNS:
    split = _split(glue_dir, task, size, max_seq_len, tokenizer)
    cfg = config_lib.Config(task=task, mode=mode, train_size=size, num_epochs=epochs,
                            teacher_num_epochs=epochs, max_seq_len=max_seq_len,
                            batch_size=32).validate()
    with contextlib.redirect_stdout(io.StringIO()):  # the run's own line about its choice
      chosen = context.choose_length_buckets(cfg, split, pipeline.Layout(0, 1, 1), 32)
    lines.append(f"| {label} | {','.join(map(str, chosen))} | "
                 f"{buckets_lib.utilisation(split.lengths, chosen):.2f} |")
  return lines


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--glue_dir", default=os.environ.get(
      "GLUE_DIR", str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "glue")))
  p.add_argument("--out", default=str(RESULTS / "bucket_utilisation.md"))
  args = p.parse_args()
  if not (pathlib.Path(args.glue_dir) / "SST-2" / "train.tsv").exists():
    p.error(f"no GLUE data at --glue_dir {args.glue_dir}")
  tokenizer = pipeline.load_tokenizer(hf_io.resolve_pretrained_dir("minilm"))
  text = "\n".join(["Real tokens / tokens processed on the training split, each example padded to "
                    "its bucket (MiniLM tokens, specials included; `--max_length_buckets=K`, no "
                    "compile cost, top bucket from the data, shown for K=1):", "",
                    *utilisation_table(args.glue_dir, tokenizer), "",
                    "What `--length_buckets=auto` picks, with the compile cost "
                    "(`--bucket_compile_steps=4`) and batch 32:", "",
                    *auto_table(args.glue_dir, tokenizer)])
  pathlib.Path(args.out).write_text(text + "\n", encoding="utf-8")
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
