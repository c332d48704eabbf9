"""Benchmarks of the train step (`--mode=benchmark`): first-class code, kept apart from training.

- `synthetic`: the step per augmentation on full-length synthetic batches, its parts (teacher
  forward, projection, student update), compile time, memory, FLOPs and MFU, and the peers;
- `task` (`--benchmark_data=task`): the run's own length-bucketed batches of a task's real
  training examples, against our step at `--max_seq_len` and the peers on the same examples;
- `peers`: the same KD step on Hugging Face's Flax and PyTorch BERT. They need the development
  dependencies (transformers, torch; `requirements-dev.txt`), imported only when a peer runs.
"""

from __future__ import annotations

from typing import Any

from augpro_jax import augmentations
from augpro_jax.config import Config
from augpro_jax.errors import UserError


def run(cfg: Config) -> dict[str, Any]:
  """Run the benchmark `--benchmark_data` names; returns what it writes to `--benchmark_out`."""
  if not cfg.benchmark_augs:
    cfg = cfg.replace(benchmark_augs=augmentations.device_names())
  for aug in cfg.benchmark_augs:
    if augmentations.get(aug).make_host_augment:
      raise UserError(f"--benchmark_augs: {aug} runs on the host in the input pipeline; it is not "
                      "a device step to benchmark")
  if cfg.benchmark_data == "task":
    from augpro_jax.bench import task  # pylint: disable=g-import-not-at-top
    return task.run(cfg)
  from augpro_jax.bench import synthetic  # pylint: disable=g-import-not-at-top
  return synthetic.run(cfg)
