"""The device mesh and where each array of a step lives on it (data parallelism + FSDP).

The mesh has two axes:
- `data`: plain data parallelism, each slice holds whole copies of what is not split over `fsdp`;
- `fsdp`: the parameters, the teacher and the optimizer state are split over it (each device keeps
  1/fsdp of every large kernel and gathers the rest for a layer's matmul, as MaxText and big_vision
  do), and the batch is split over it too.

The rules are by shape only, so Adam's moments (the parameters' shapes) land exactly where their
parameters do, and a teacher, a student or any other pytree of arrays gets the same treatment:
a leaf with at least `MIN_SHARDED_SIZE` elements is split over `fsdp` along its largest axis that
`fsdp` divides; smaller leaves (biases, LayerNorm, counters) and leaves with no divisible axis are
replicated. The batch's leading (example) axis is split over both axes.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from augpro_jax.errors import UserError

DATA = "data"
FSDP = "fsdp"
AXES = (DATA, FSDP)
# Leaves smaller than this (elements) stay replicated: splitting a 1024-vector saves 4 KB per
# device and costs a collective per use.
MIN_SHARDED_SIZE = 2**14


def mesh_shape(num_devices: int, data: Optional[int], fsdp: int) -> tuple[int, int]:
  """(data, fsdp) for `num_devices`; data=None takes what fsdp leaves. One-line errors."""
  if fsdp <= 0 or (data is not None and data <= 0):
    raise UserError(f"--mesh_data and --mesh_fsdp must be positive, got {data} and {fsdp}")
  if data is None:
    if num_devices % fsdp:
      raise UserError(f"--mesh_fsdp={fsdp} does not divide the {num_devices} devices")
    data = num_devices // fsdp
  if data * fsdp != num_devices:
    raise UserError(f"--mesh_data={data} x --mesh_fsdp={fsdp} = {data * fsdp} devices, but there "
                    f"are {num_devices}")
  return data, fsdp


def make_mesh(devices: Sequence[Any], data: Optional[int] = None, fsdp: int = 1) -> Mesh:
  """A [data, fsdp] mesh over `devices` (real ones, or a TPU topology's for compiling).

  `fsdp` is the fast (inner) axis: its collectives run every layer, so its devices are neighbours
  in the device order (on TPU, `jax.devices()` lists chips so that neighbours are adjacent).
  """
  data, fsdp = mesh_shape(len(devices), data, fsdp)
  return Mesh(np.asarray(devices, dtype=object).reshape(data, fsdp), AXES)


def param_spec(shape: Sequence[int], fsdp: int) -> P:
  """The spec of one parameter-like leaf: split over `fsdp` along its largest divisible axis."""
  if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < MIN_SHARDED_SIZE:
    return P()
  # Largest axis first; ties go to the earlier axis (the vocabulary rows of an embedding table).
  for axis in sorted(range(len(shape)), key=lambda a: (-shape[a], a)):
    if shape[axis] % fsdp == 0:
      return P(*([None] * axis + [FSDP]))
  return P()


def auto_fsdp_size() -> int:
  """Devices on the current mesh's `fsdp` axis while it is automatic (GSPMD): inside the train
  step on a mesh with --mesh_fsdp > 1. 1 elsewhere (no mesh, or fsdp manual or absent)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or FSDP not in mesh.axis_names:
    return 1
  if dict(zip(mesh.axis_names, mesh.axis_types))[FSDP] != jax.sharding.AxisType.Auto:
    return 1
  return int(mesh.shape[FSDP])


def split_examples(x: jax.Array) -> jax.Array:
  """`x` [examples, ...] with its examples split over an automatic `fsdp` axis of more than one
  device; unchanged elsewhere. The dropout bits and small-table lookups carry no batch sharding,
  so without these pins GSPMD gives every `fsdp` device whole-data-slice tensors (the dropout
  masks above all); the model pins its activations with this."""
  shards = auto_fsdp_size()
  if shards == 1 or x.shape[0] % shards:
    return x
  return jax.lax.with_sharding_constraint(
      x, NamedSharding(jax.sharding.get_abstract_mesh(), P(FSDP)))


def tree_shardings(mesh: Mesh, tree: Any) -> Any:
  """NamedSharding per leaf of a pytree of arrays (or ShapeDtypeStructs): `param_spec` rules.

  Used for the student's `TrainState` (parameters, Adam moments, counters) and the teacher."""
  fsdp = mesh.shape[FSDP]
  return jax.tree.map(lambda x: NamedSharding(mesh, param_spec(np.shape(x), fsdp)), tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Examples (the leading axis of every batch array) split over both mesh axes."""
  return NamedSharding(mesh, P(AXES))


def batch_shardings(mesh: Mesh, batch: Any) -> Any:
  return jax.tree.map(lambda _: batch_sharding(mesh), batch)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def bytes_per_device(tree: Any, shardings: Any) -> int:
  """Bytes one device holds of `tree` under `shardings` (the largest shard, summed over leaves)."""
  leaves = jax.tree.leaves(tree)
  specs = jax.tree.leaves(shardings, is_leaf=lambda s: isinstance(s, jax.sharding.Sharding))
  total = 0
  for leaf, sharding in zip(leaves, specs):
    shard = sharding.shard_shape(tuple(np.shape(leaf)))
    total += int(np.prod(shard, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
  return total


def mesh_step(step_fn: Any, mesh: Mesh, state: Any, teacher: Any, batch: Any,
              donate: bool = True) -> Any:
  """`step_fn(state, teacher, batch) -> (state, metrics)`, the step of one data slice, as one
  jitted program over `mesh` in global view.

  `jax.shard_map` is manual over `data` only: each data slice runs `step_fn` on its examples, and
  its collectives over `train_step.AXIS` (== DATA) are the data-parallel all-reduce. It is automatic
  (GSPMD) over `fsdp`: the parameters, the teacher and the optimizer state come in split by
  `tree_shardings`, and XLA inserts the all-gathers and reduce-scatters. `state`, `teacher` and
  `batch` may be arrays or ShapeDtypeStructs (only their shapes are read); `batch` is global
  ([examples, ...], examples split over both axes).
  """
  state_sh, teacher_sh = tree_shardings(mesh, state), tree_shardings(mesh, teacher)
  mapped = jax.shard_map(step_fn, mesh=mesh, in_specs=(P(), P(), P(DATA)),
                         out_specs=(P(), P()), axis_names={DATA}, check_vma=False)
  return jax.jit(mapped, in_shardings=(state_sh, teacher_sh, batch_shardings(mesh, batch)),
                 out_shardings=(state_sh, replicated(mesh)),
                 donate_argnums=(0,) if donate else ())


# ----------------------------------------------------------------------------------------------
# Host arrays <-> global arrays on the mesh (one process or many).
# ----------------------------------------------------------------------------------------------


def run_mesh(data: Optional[int], fsdp: int) -> Mesh:
  """The mesh of a run: every device of every process, [data, fsdp] (--mesh_data, --mesh_fsdp)."""
  return make_mesh(jax.devices(), data, fsdp)


def put_tree(mesh: Mesh, tree: Any) -> Any:
  """Place a pytree of host values (the same on every process: parameters, optimizer state) on
  `mesh` by `tree_shardings`; each device receives only its shard. Leaves already placed so are
  returned as they are (no copy)."""
  def put(x, sharding):
    if isinstance(x, jax.Array) and x.sharding == sharding:
      return x
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree.map(put, tree, tree_shardings(mesh, tree))


def put_batch(mesh: Mesh, batch: Any) -> Any:
  """This process's part of a batch, laid out [local_devices, per_device, ...] by the input
  pipeline, as one global array [examples, ...] split over both mesh axes. Processes hold
  consecutive rows of the global batch, in process order, as the mesh's devices are."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(
      sharding, np.reshape(x, (-1,) + np.shape(x)[2:])), batch)


def gather(tree: Any) -> Any:
  """Host numpy copies of global arrays (whole, on every process: checkpoints and exports)."""
  if all(x.is_fully_addressable or x.is_fully_replicated for x in jax.tree.leaves(tree)):
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return multihost_utils.process_allgather(tree, tiled=True)
