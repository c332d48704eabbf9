"""Multi-process start-up: one call before anything touches a device.

Single-process runs do nothing here. Multi-process runs (a TPU pod slice, a GPU cluster, or several
CPU processes on one machine for testing) call `jax.distributed.initialize`, after which
`jax.process_index()/process_count()` drive the input pipeline's sharding.

Where the platform announces its hosts (Cloud TPU VMs, GKE TPU jobs, SLURM `srun` steps) JAX finds
the coordinator, process count and process index itself; elsewhere main.py's
--coordinator_address/--num_processes/--process_id say them.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from typing import Optional

import jax
from absl import logging

from augpro_jax.config import Config
from augpro_jax.errors import UserError


def _on_cloud_tpu_vm() -> bool:
  """libtpu is installed and TPU chips are attached (JAX then asks the metadata server for hosts)."""
  if importlib.util.find_spec("libtpu") is None:
    return False
  return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def _platform_cluster() -> Optional[str]:
  """The cluster whose environment lets `jax.distributed.initialize()` run without arguments."""
  tpu_hosts = os.environ.get("TPU_PROCESS_ADDRESSES") or os.environ.get("TPU_WORKER_HOSTNAMES", "")
  if "," in tpu_hosts:
    return "gke_tpu"
  # SLURM_STEP_NODELIST is set inside an `srun` step only; a bare sbatch script is one process.
  if "SLURM_STEP_NODELIST" in os.environ and int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1:
    return "slurm"
  # GCE pod slices set no environment variable: JAX reads the slice's workers from the metadata
  # server, so every Cloud TPU VM initializes (a single-host VM simply becomes process 0 of 1).
  if _on_cloud_tpu_vm():
    return "cloud_tpu"
  return None


def _has_accelerator_env() -> bool:
  return bool(os.environ.get("CUDA_VISIBLE_DEVICES") or os.environ.get("TPU_WORKER_ID"))


def _use_gloo_for_cpu() -> None:
  """CPU processes exchange gradients through gloo (over loopback when testing on one machine).

  Without it, a pmap collective across CPU processes fails; GPU and TPU backends have their own.
  """
  if jax.config.jax_platforms in (None, "", "cpu") and not _has_accelerator_env():
    jax.config.update("jax_cpu_collectives_implementation", "gloo")


def initialize(cfg: Config) -> None:
  """Join the other processes of this run, if there are any."""
  explicit = cfg.coordinator_address is not None or (cfg.num_processes or 1) > 1
  if not explicit:
    cluster = _platform_cluster()
    if cluster is None:
      return
    _use_gloo_for_cpu()
    try:
      jax.distributed.initialize()
    except (ValueError, RuntimeError) as exc:
      if cluster != "cloud_tpu":
        raise UserError(f"cannot join the {cluster} job ({str(exc).splitlines()[0][:200]}); pass "
                        "--coordinator_address, --num_processes and --process_id") from None
      # A TPU VM without a reachable metadata server (e.g. in a container) runs on its own.
      logging.warning("jax.distributed.initialize() found no TPU slice (%s); running as a single "
                      "process", str(exc).splitlines()[0][:200])
    return
  if cfg.coordinator_address is None or cfg.num_processes is None or cfg.process_id is None:
    raise UserError("multi-process runs need --coordinator_address, --num_processes and --process_id")
  if not 0 <= cfg.process_id < cfg.num_processes:
    raise UserError(f"--process_id={cfg.process_id} must be in [0, {cfg.num_processes})")
  _use_gloo_for_cpu()
  jax.distributed.initialize(coordinator_address=cfg.coordinator_address,
                             num_processes=cfg.num_processes, process_id=cfg.process_id)


def is_main_process() -> bool:
  return jax.process_index() == 0
