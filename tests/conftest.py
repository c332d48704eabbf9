"""Test set-up: fake 8 CPU devices before JAX starts, and locate the shared GLUE data."""

import os

# Must happen before jax is imported anywhere: multi-device code is exercised on 8 fake CPU devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pathlib

import pytest

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
