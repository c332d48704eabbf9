"""TPU chip facts for the roofline of `--mode=compile`: HBM, peak bf16 FLOP/s, HBM bandwidth.

Each number is the vendor's published per-chip specification, from the Cloud TPU system
architecture pages (cloud.google.com/tpu/docs/<version>: "TPU v4", "TPU v5e", "TPU v5p",
"TPU v6e"), in the unit that page gives: GiB where it says GiB (v4), GB where it says GB (v5e, v5p,
v6e; decimal, so a fit is judged against the smaller number). Nothing is fetched at run time.
"""

from __future__ import annotations

import dataclasses

from augpro_jax.errors import UserError

GIB, GB = 2**30, 10**9


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  hbm_bytes: float  # HBM capacity per chip
  peak_flops: float  # dense bf16 FLOP/s per chip
  hbm_bandwidth: float  # bytes/s per chip
  source: str  # the page the numbers come from


CHIPS: dict[str, Chip] = {
    # "Peak compute per chip 275 teraflops (bf16 or int8)"; "HBM2 capacity and bandwidth 32 GiB,
    # 1200 GBps". A v4 chip's two TensorCores are one JAX device (megacore).
    "v4": Chip("v4", 32 * GIB, 275e12, 1200 * GB, "Cloud TPU docs, 'TPU v4' system architecture"),
    # "Peak compute per chip (bf16) 197 TFLOPs"; "HBM2 capacity and bandwidth 16 GB, 819 GBps".
    "v5e": Chip("v5e", 16 * GB, 197e12, 819 * GB, "Cloud TPU docs, 'TPU v5e' system architecture"),
    # "Peak compute per chip (bf16) 459 TFLOPs"; "HBM2e capacity and bandwidth 95GB, 2765 GBps".
    "v5p": Chip("v5p", 95 * GB, 459e12, 2765 * GB, "Cloud TPU docs, 'TPU v5p' system architecture"),
    # "Peak compute per chip (bf16) 918 TFLOPs"; "HBM capacity per chip 32 GB"; "HBM bandwidth per
    # chip 1638 GBps".
    "v6e": Chip("v6e", 32 * GB, 918e12, 1638 * GB, "Cloud TPU docs, 'TPU v6e' system architecture"),
}
# Other spellings of a version that topology names use.
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6": "v6e"}


def for_topology(topology: str) -> Chip:
  """The chip of a topology name like 'v5e:4x4' or 'v4:2x2x2'."""
  version = topology.split(":", 1)[0].strip().lower()
  version = _ALIASES.get(version, version)
  if version not in CHIPS:
    raise UserError(f"--topology={topology}: unknown TPU version {version!r}; choose one of: "
                    f"{', '.join(CHIPS)} (e.g. v5e:4x4, v4:2x2x2, v5p:2x2x2)")
  return CHIPS[version]


def roofline(chip: Chip, flops_per_chip: float, bytes_per_chip: float) -> dict[str, float]:
  """Step time bound by compute or HBM traffic, whichever is slower: max(F/peak, B/bandwidth)."""
  compute, memory = flops_per_chip / chip.peak_flops, bytes_per_chip / chip.hbm_bandwidth
  return {"compute_seconds": compute, "memory_seconds": memory,
          "step_seconds": max(compute, memory),
          "bound": "compute" if compute >= memory else "memory"}
