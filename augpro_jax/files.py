"""Writing a file whole: the one way results, identities and logs are replaced on disk."""

from __future__ import annotations

import contextlib
import os
import pathlib
from typing import BinaryIO, Callable, Union

from augpro_jax.errors import UserError

Content = Union[str, bytes, Callable[[BinaryIO], None]]


def atomic_write(path: Union[str, os.PathLike], content: Content, *, mkdir: bool = False) -> None:
  """Replace `path` with `content` (text, bytes, or a function that writes to a binary file).

  The content goes to a temporary file beside `path`, renamed over it when complete, so a reader,
  or a run that dies midway, never sees half a file. A failure (a full disk, a read-only
  directory) is a `UserError` that names `path`; the temporary file is removed and `path` keeps
  its old content.
  """
  path = pathlib.Path(path)
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # the pid: processes sharing a workdir
  try:
    if mkdir:
      path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
      tmp.write_text(content, encoding="utf-8")
    elif isinstance(content, bytes):
      tmp.write_bytes(content)
    else:
      with open(tmp, "wb") as f:
        content(f)
    os.replace(tmp, path)
  except OSError as exc:
    with contextlib.suppress(OSError):
      tmp.unlink(missing_ok=True)
    raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
