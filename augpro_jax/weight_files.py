"""A model directory's weights file (model.safetensors, or a zip-format pytorch_model.bin),
described before it is read: `WeightIndex.shapes` comes from the safetensors header or the torch
pickle alone, so shapes can be checked against config.json before any tensor is allocated, and
`read` then reads only the tensors asked for.
"""

from __future__ import annotations

import pathlib

import numpy as np

from augpro_jax import torch_pickle
from augpro_jax.errors import UserError
from augpro_jax.errors import one_line
from augpro_jax.model import BertConfig


class WeightIndex:
  """The tensors of a directory's weights file, by name: shapes now, data on `read`."""

  def __init__(self, directory: pathlib.Path):
    self.path = directory / "model.safetensors"
    self._refs = None
    if self.path.is_file():
      from safetensors import safe_open  # pylint: disable=g-import-not-at-top
      try:
        with safe_open(str(self.path), framework="numpy") as f:  # the header only
          self.shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
      except Exception as exc:  # pylint: disable=broad-except  # SafetensorError, OSError
        raise bad_safetensors(self.path, exc) from None
    elif (directory / "pytorch_model.bin").is_file():
      self.path = directory / "pytorch_model.bin"
      self._refs = torch_pickle.read_tensor_refs(self.path)
      self.shapes = {k: ref.shape for k, ref in self._refs.items()}
    else:
      raise UserError(f"no model.safetensors in {directory}")

  def read(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The tensors named in `shapes`, each checked to have its shape there."""
    if self._refs is not None:
      return torch_pickle.read_tensors(self.path, self._refs, shapes)
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
    try:
      with safe_open(str(self.path), framework="numpy") as f:
        return {k: f.get_tensor(k) for k in shapes}
    except Exception as exc:  # pylint: disable=broad-except  # dtype errors, truncation
      raise bad_safetensors(self.path, exc) from None


def bad_safetensors(path: pathlib.Path, exc: Exception) -> UserError:
  return UserError(f"cannot read {path}: not a valid safetensors file ({one_line(exc)})")


def check_sizes(path: pathlib.Path, config: BertConfig) -> None:
  """Refuse absurd sizes before anything is allocated from them."""
  params = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size
            ) * config.hidden_size + config.num_layers * (
                4 * config.hidden_size ** 2 + 2 * config.hidden_size * config.intermediate_size)
  if max(config.vocab_size, config.hidden_size, config.intermediate_size,
         config.max_position_embeddings) > _MAX_SIZE or config.num_layers > 1024 or (
             params > _MAX_PARAMS):
    raise UserError(f"{path} declares a model of {params:.3g} parameters (vocab_size "
                    f"{config.vocab_size}, hidden_size {config.hidden_size}, num_hidden_layers "
                    f"{config.num_layers}, intermediate_size {config.intermediate_size}): more "
                    f"than this program handles ({_MAX_PARAMS:.0e})")


_MAX_SIZE = 1 << 22
_MAX_PARAMS = 20_000_000_000
