"""Multi-process start-up: one call before anything touches a device.

Single-process runs do nothing here. Multi-process runs (a TPU pod slice, a GPU cluster, or several
CPU processes on one machine for testing) call `jax.distributed.initialize`, after which
`jax.process_index()/process_count()` drive the input pipeline's sharding.
"""

from __future__ import annotations

import os

import jax

from augpro_jax.config import Config
from augpro_jax.errors import UserError


def _platform_says_multi_host() -> bool:
  """Cloud TPU pod slices and SLURM jobs announce several hosts; JAX then needs no arguments."""
  tpu_hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return "," in tpu_hosts or int(os.environ.get("SLURM_NTASKS", "1")) > 1


def initialize(cfg: Config) -> None:
  explicit = cfg.coordinator_address is not None or (cfg.num_processes or 1) > 1
  if not explicit:
    if _platform_says_multi_host():
      jax.distributed.initialize()
    return
  if cfg.coordinator_address is None or cfg.num_processes is None or cfg.process_id is None:
    raise UserError("multi-process runs need --coordinator_address, --num_processes and --process_id")
  if not 0 <= cfg.process_id < cfg.num_processes:
    raise UserError(f"--process_id={cfg.process_id} must be in [0, {cfg.num_processes})")
  if jax.config.jax_platforms in (None, "", "cpu") and not _has_accelerator_env():
    # CPU processes exchange gradients through gloo (loopback for tests on one machine).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=cfg.coordinator_address,
                             num_processes=cfg.num_processes, process_id=cfg.process_id)


def _has_accelerator_env() -> bool:
  return bool(os.environ.get("CUDA_VISIBLE_DEVICES") or os.environ.get("TPU_WORKER_ID"))


def is_main_process() -> bool:
  return jax.process_index() == 0
