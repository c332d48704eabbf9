"""Reading a zip-format `pytorch_model.bin` state dict as numpy arrays, without importing torch.

`torch.save` writes a zip archive: `data.pkl` is a pickle of the state dict whose tensors refer to
raw storages stored as `data/<key>`. The unpickler here rebuilds each tensor as a `TensorRef` (its
storage, offset, size and stride) and refuses every class that is not a tensor, a storage or an
OrderedDict, so a checkpoint cannot run code while it is read.

The file is hostile until checked: reading the pickle allocates nothing the size of a tensor, and
`read_tensors` reads only the tensors asked for, with the shapes the caller expects, after checking
that each one lies inside its storage and that each storage's zip member holds exactly the bytes
the pickle declares. A storage is inflated only as far as its tensors reach, so neither a crafted
stride nor a zip bomb can make the process use more memory than the expected tensors need.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import pathlib
import pickle
import zipfile
from typing import Mapping

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
# data.pkl holds names and small tuples only (a few hundred KB for the largest BERTs).
MAX_PICKLE_BYTES = 64 << 20


class _StorageType:

  def __init__(self, name: str):
    dtype = _TORCH_STORAGES[name]
    if dtype == "bfloat16":
      import ml_dtypes  # pylint: disable=g-import-not-at-top
      dtype = ml_dtypes.bfloat16
    self.dtype = np.dtype(dtype)


@dataclasses.dataclass(frozen=True)
class _Storage:
  key: str
  dtype: np.dtype
  numel: int


@dataclasses.dataclass(frozen=True)
class TensorRef:
  """A tensor as the pickle declares it; nothing is read until `read_tensors`."""
  storage: _Storage
  offset: int
  shape: tuple[int, ...]
  stride: tuple[int, ...]

  @property
  def extent(self) -> int:
    """Storage elements from `offset` that the view touches (0 for an empty tensor)."""
    if any(n == 0 for n in self.shape):
      return 0
    return 1 + sum((n - 1) * s for n, s in zip(self.shape, self.stride))


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _ints(value, what: str) -> tuple[int, ...]:
  if not isinstance(value, (tuple, list)) or not all(map(_is_int, value)):
    raise pickle.UnpicklingError(f"malformed tensor {what} {value!r:.80}")
  return tuple(value)


def _rebuild_tensor(storage, offset, size, stride, *unused) -> TensorRef:
  del unused  # requires_grad, backward hooks, metadata
  if not isinstance(storage, _Storage) or not _is_int(offset):
    raise pickle.UnpicklingError("malformed tensor (storage or offset)")
  shape, stride = _ints(size, "size"), _ints(stride, "stride")
  if len(shape) != len(stride) or min((*shape, *stride, offset, 0)) < 0:
    raise pickle.UnpicklingError(f"malformed tensor: size {list(shape)}, stride {list(stride)}, "
                                 f"offset {offset}")
  return TensorRef(storage, offset, shape, stride)


def _rebuild_parameter(data, *unused):
  del unused
  return data


class _TorchUnpickler(pickle.Unpickler):
  """Reads the tensor descriptions of a torch checkpoint; refuses every other class (safe)."""

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
    if not isinstance(pid, tuple) or len(pid) != 5 or not isinstance(pid[1], _StorageType):
      raise pickle.UnpicklingError("malformed storage reference")
    _, storage_type, key, _, numel = pid
    if not _is_int(numel) or numel < 0:
      raise pickle.UnpicklingError(f"malformed storage size {numel!r:.80}")
    return _Storage(str(key), storage_type.dtype, numel)


def _pickle_name(path: pathlib.Path, archive: zipfile.ZipFile) -> str:
  pkl = [n for n in archive.namelist() if n.endswith("data.pkl")]
  if not pkl:
    raise UserError(f"cannot read {path}: no data.pkl in the archive")
  if archive.getinfo(pkl[0]).file_size > MAX_PICKLE_BYTES:
    raise UserError(f"cannot read {path}: its data.pkl declares "
                    f"{archive.getinfo(pkl[0]).file_size} bytes, more than a state dict's pickle")
  return pkl[0]


def read_tensor_refs(path: pathlib.Path) -> dict[str, TensorRef]:
  """Every tensor of a zip-format `torch.save` state dict, described, none read."""
  try:
    with zipfile.ZipFile(path) as archive:
      pkl = _pickle_name(path, archive)
      with archive.open(pkl) as f:
        state = _TorchUnpickler(f).load()
  except UserError:
    raise
  except zipfile.BadZipFile:
    raise UserError(f"cannot read {path}: not a zip-format torch checkpoint; convert it to "
                    "model.safetensors") from None
  except Exception as exc:  # truncated archives, unexpected pickles
    raise UserError(f"cannot read {path}: {one_line(exc)}") from None
  if not isinstance(state, dict):
    raise UserError(f"cannot read {path}: not a state dict")
  return {str(k): v for k, v in state.items() if isinstance(v, TensorRef)}


def _check(path: pathlib.Path, name: str, ref: TensorRef, shape: tuple[int, ...],
           archive: zipfile.ZipFile, prefix: str) -> None:
  """Refuse `ref` unless it has `shape` and lies inside its storage, as its zip member holds it."""
  where = f"{path}: tensor {name}"
  if ref.shape != tuple(shape):
    raise UserError(f"{where} has shape {list(ref.shape)}, expected {list(shape)}")
  if ref.offset + ref.extent > ref.storage.numel:
    raise UserError(f"{where} reads elements {ref.offset}..{ref.offset + ref.extent} of a storage "
                    f"of {ref.storage.numel}: outside its data")
  member = f"{prefix}data/{ref.storage.key}"
  try:
    declared = archive.getinfo(member).file_size
  except KeyError:
    raise UserError(f"{where}: its storage {member} is not in the archive") from None
  if declared != ref.storage.numel * ref.storage.dtype.itemsize:
    raise UserError(f"{where}: its storage {member} holds {declared} bytes, but the pickle "
                    f"declares {ref.storage.numel * ref.storage.dtype.itemsize}")


def read_tensors(path: pathlib.Path, refs: Mapping[str, TensorRef],
                 shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
  """The tensors named in `shapes` (each must have its shape there), read once, bounded.

  A storage may hold at most twice the elements of the tensors read from it (plus one), and it
  is inflated only up to the furthest element they touch, so memory stays within twice the
  expected tensors' bytes whatever the file declares.
  """
  try:
    with zipfile.ZipFile(path) as archive:
      prefix = _pickle_name(path, archive)[:-len("data.pkl")]
      reach: dict[_Storage, int] = {}
      need: dict[_Storage, int] = collections.Counter()
      for name, shape in shapes.items():
        ref = refs[name]
        _check(path, name, ref, shape, archive, prefix)
        end = ref.offset + ref.extent if ref.extent else 0
        reach[ref.storage] = max(reach.get(ref.storage, 0), end)
        need[ref.storage] += math.prod(ref.shape)
      for storage in reach:  # a storage is the tensors read from it, not a bomb around them
        if storage.numel > 2 * need[storage] + 1:
          name = next(n for n in shapes if refs[n].storage == storage)
          raise UserError(f"{path}: tensor {name} lies in a storage of {storage.numel} elements, "
                          f"for {need[storage]} to read: not a saved state dict")
      data = {storage: _inflate(archive, f"{prefix}data/{storage.key}", storage, elements)
              for storage, elements in reach.items()}
  except UserError:
    raise
  except zipfile.BadZipFile as exc:
    raise UserError(f"cannot read {path}: {one_line(exc)}") from None
  except (OSError, EOFError, ValueError) as exc:  # truncated or corrupt members
    raise UserError(f"cannot read {path}: {one_line(exc)}") from None
  out = {}
  for name in shapes:
    ref = refs[name]
    buffer = data[ref.storage]
    itemsize = ref.storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(buffer[ref.offset:], shape=ref.shape,
                                           strides=tuple(s * itemsize for s in ref.stride))
    out[name] = np.array(view)
  return out


def _inflate(archive: zipfile.ZipFile, member: str, storage: _Storage, elements: int
             ) -> np.ndarray:
  nbytes = elements * storage.dtype.itemsize
  with archive.open(member) as f:
    raw = f.read(nbytes)
  if len(raw) != nbytes:
    raise UserError(f"cannot read {archive.filename}: {member} is truncated ({len(raw)} of "
                    f"{nbytes} bytes)")
  return np.frombuffer(raw, dtype=storage.dtype)


def read_state_dict(path: pathlib.Path) -> dict[str, np.ndarray]:
  """Every tensor of a zip-format `torch.save` state dict, at the shapes it declares (checked)."""
  refs = read_tensor_refs(path)
  return read_tensors(path, refs, {name: ref.shape for name, ref in refs.items()})
