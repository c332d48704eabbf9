"""Reading a zip-format `pytorch_model.bin` state dict as numpy arrays, without importing torch.

`torch.save` writes a zip archive: `data.pkl` is a pickle of the state dict whose tensors refer to
raw storages stored as `data/<key>`. The unpickler here rebuilds each tensor as a numpy array and
refuses every class that is not a tensor, a storage or an OrderedDict, so a checkpoint cannot run
code while it is read.
"""

from __future__ import annotations

import collections
import pathlib
import pickle
import zipfile

import numpy as np

from augpro_jax.errors import UserError
from augpro_jax.errors import one_line

# torch storage classes -> numpy dtypes.
_TORCH_STORAGES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:

  def __init__(self, name: str):
    dtype = _TORCH_STORAGES[name]
    if dtype == "bfloat16":
      import ml_dtypes  # pylint: disable=g-import-not-at-top
      dtype = ml_dtypes.bfloat16
    self.dtype = np.dtype(dtype)


def _rebuild_tensor(storage, offset, size, stride, *unused) -> np.ndarray:
  del unused  # requires_grad, backward hooks, metadata
  itemsize = storage.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                         strides=tuple(s * itemsize for s in stride))
  return np.array(view)


def _rebuild_parameter(data, *unused) -> np.ndarray:
  del unused
  return data


class _TorchUnpickler(pickle.Unpickler):
  """Reads the tensors of a zip-format torch checkpoint; refuses every other class (safe)."""

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
    super().__init__(file)
    self._archive, self._prefix = archive, prefix

  def find_class(self, module, name):
    if module == "collections" and name == "OrderedDict":
      return collections.OrderedDict
    if module == "torch._utils" and name == "_rebuild_tensor_v2":
      return _rebuild_tensor
    if module == "torch._utils" and name == "_rebuild_parameter":
      return _rebuild_parameter
    if module == "torch" and name in _TORCH_STORAGES:
      return _StorageType(name)
    raise pickle.UnpicklingError(f"unsupported object {module}.{name}")

  def persistent_load(self, pid):
    # ('storage', storage_type, key, location, numel)
    _, storage_type, key, _, _ = pid
    data = self._archive.read(f"{self._prefix}data/{key}")
    return np.frombuffer(data, dtype=storage_type.dtype)


def read_state_dict(path: pathlib.Path) -> dict[str, np.ndarray]:
  """A zip-format `torch.save` state dict as numpy arrays, with no torch import."""
  try:
    with zipfile.ZipFile(path) as archive:
      pkl = next(n for n in archive.namelist() if n.endswith("data.pkl"))
      prefix = pkl[:-len("data.pkl")]
      with archive.open(pkl) as f:
        state = _TorchUnpickler(f, archive, prefix).load()
  except StopIteration:
    raise UserError(f"cannot read {path}: no data.pkl in the archive") from None
  except zipfile.BadZipFile:
    raise UserError(f"cannot read {path}: not a zip-format torch checkpoint; convert it to "
                    "model.safetensors") from None
  except Exception as exc:  # truncated archives, unexpected pickles
    raise UserError(f"cannot read {path}: {one_line(exc)}") from None
  if not isinstance(state, dict):
    raise UserError(f"cannot read {path}: not a state dict")
  return {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
