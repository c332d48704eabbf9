"""`files.atomic_write`: a file is replaced whole or not at all."""

import errno
import pathlib

import numpy as np
import pytest

from augpro_jax import files
from augpro_jax.errors import UserError


def test_text_bytes_and_writers_replace_the_file(tmp_path):
  path = tmp_path / "deep" / "out.txt"
  files.atomic_write(path, "first", mkdir=True)
  files.atomic_write(path, "second")
  assert path.read_text() == "second"
  files.atomic_write(path, b"\x00\x01")
  assert path.read_bytes() == b"\x00\x01"
  npz = tmp_path / "arrays.npz"
  files.atomic_write(npz, lambda f: np.savez_compressed(f, a=np.arange(3)))
  np.testing.assert_array_equal(np.load(npz)["a"], np.arange(3))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["arrays.npz", "deep"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
  path = tmp_path / "summary.json"
  path.write_text("old")

  def full_disk(self, *args, **kwargs):
    self.parent.joinpath(self.name).write_bytes(b"half")  # a partial temporary file
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(pathlib.Path, "write_text", full_disk)
  with pytest.raises(UserError, match=r"cannot write .*summary.json: No space left on device"):
    files.atomic_write(path, "new")
  monkeypatch.undo()
  assert path.read_text() == "old"
  assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
