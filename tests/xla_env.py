"""XLA_FLAGS for the tests and the processes they start.

The test programs are tiny and run a few steps, so XLA compile time dominates the suite. XLA:CPU's
older fusion code generator (`--xla_cpu_use_fusion_emitters=false`) compiles them in about a third
less time than the default one. Every test process, in-process or `main.py` subprocess, compiles
with the same flags, so a run compared with another (bitwise resume, 1 vs 8 devices, 2 processes)
is compared with a program built the same way. Library runs (`make demo`, experiments, benchmarks)
keep XLA's defaults.
"""

COMPILE_FLAGS = "--xla_cpu_use_fusion_emitters=false"


def xla_flags(devices: int) -> str:
  """XLA_FLAGS for a test process with `devices` fake CPU devices."""
  return f"--xla_force_host_platform_device_count={devices} {COMPILE_FLAGS}"


def with_compile_flags(flags: str) -> str:
  """`flags` (an inherited XLA_FLAGS) plus the compile flags, unless it sets them already."""
  return flags if "xla_cpu_use_fusion_emitters" in flags else f"{flags} {COMPILE_FLAGS}".strip()
