"""Test set-up: fake 8 CPU devices before JAX starts, and locate the shared GLUE data."""

import os

from xla_env import with_compile_flags, xla_flags

# Must happen before jax is imported anywhere: multi-device code is exercised on 8 fake CPU devices
# (unless XLA_FLAGS says otherwise), compiled with the test compile flags (tests/xla_env.py).
os.environ["XLA_FLAGS"] = with_compile_flags(os.environ.get("XLA_FLAGS", xla_flags(8)))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Test programs are tiny and run a few steps, so compile time dominates: XLA's optimisation passes
# mostly off cuts it by about a third. Set here, before jax is imported, so that the main.py
# subprocesses (end-to-end, multi-process, resume) inherit it; `make demo`, the experiments and
# the benchmarks compile fully optimised. JAX_DISABLE_MOST_OPTIMIZATIONS=0 turns it off for a run.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import pathlib

import pytest

# The registry fills the --aug choices that `Config.validate` checks (config.py cannot import it).
import augpro_jax.augmentations  # pylint: disable=unused-import,wrong-import-position

REPO = pathlib.Path(__file__).resolve().parents[1]
_DEFAULT_GLUE = REPO.parent / "shared" / "data" / "glue"


def glue_dir() -> pathlib.Path | None:
  """The GLUE directory from $GLUE_DIR, else ../shared/data/glue, else None."""
  path = pathlib.Path(os.environ.get("GLUE_DIR", _DEFAULT_GLUE))
  return path if (path / "SST-2" / "train.tsv").exists() else None


@pytest.fixture(scope="session")
def glue() -> pathlib.Path:
  path = glue_dir()
  if path is None:
    pytest.skip("GLUE data not found: set GLUE_DIR to a glue_data directory "
                "(CI uses ../shared/data/glue)")
  return path


@pytest.fixture(scope="session", autouse=True)
def xla_compilation_cache(tmp_path_factory) -> str:
  """One persistent XLA compilation cache for the whole run, shared by the xdist workers and every
  subprocess they start: the many runs of the same tiny models compile each program once.

  It lives in pytest's base temp directory (pruned by pytest), so every run starts cold and
  compiles everything at least once. A cache hit is the same executable, so it cannot hide a bug;
  tests that count compiles count cache hits too. $JAX_COMPILATION_CACHE_DIR overrides it.
  """
  import jax  # after the environment above is set
  base = tmp_path_factory.getbasetemp()
  root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(root / "xla-cache"))
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # the small ones add up
  jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
  return os.environ["JAX_COMPILATION_CACHE_DIR"]


# The modules that take longest, longest first (per-module sums of a `--durations=0` run on the
# 2-core VM). `make test` runs modules whole on two workers (`--dist loadscope
# --no-loadscope-reorder`) in collection order, so starting the long ones first keeps one worker
# from finishing a long module alone at the end. Only the order changes; a stale list costs time,
# never coverage.
LONGEST_FIRST = ("test_robust", "test_resume", "test_multiprocess", "test_train_step",
                 "test_families", "test_e2e", "test_benchmark", "test_mesh", "test_cli",
                 "test_experiments", "test_shift_real", "test_readme", "test_objective",
                 "test_step_guards", "test_hf_io")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: file order otherwise
