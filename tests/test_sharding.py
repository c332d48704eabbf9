"""The [data, fsdp] mesh: partition rules by shape, and the pmap step run on the mesh in global view
(8 fake CPU devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from augpro_jax import optimizer as optimizer_lib
from augpro_jax import sharding
from augpro_jax import students
from augpro_jax import train_step as step_lib
from augpro_jax.config import Config
from augpro_jax.errors import UserError

from test_train_step import make_batch, masks, model_lib, tiny

DATA = sharding.DATA


def test_step_axis_is_the_mesh_data_axis():
  """The step's collectives name the axis that `mesh_step` maps manually."""
  assert step_lib.AXIS == sharding.DATA


@pytest.mark.parametrize("shape,fsdp,spec", [
    ((1024, 4096), 8, P(None, "fsdp")),  # largest axis
    ((4096, 1024), 8, P("fsdp")),
    ((30522, 768), 8, P(None, "fsdp")),  # 30522 is not divisible by 8: the next axis
    ((30522, 768), 2, P("fsdp")),
    ((1024,), 8, P()),  # small vector: replicated
    ((4099, 7), 8, P()),  # no divisible axis: replicated
    ((1024, 4096), 1, P()),  # no fsdp axis
])
def test_param_spec(shape, fsdp, spec):
  assert sharding.param_spec(shape, fsdp) == spec


def test_mesh_shape_and_errors():
  assert sharding.mesh_shape(8, None, 1) == (8, 1)
  assert sharding.mesh_shape(8, None, 4) == (2, 4)
  assert sharding.mesh_shape(8, 1, 8) == (1, 8)
  for data, fsdp in ((None, 3), (2, 2), (0, 8), (8, 0)):
    with pytest.raises(UserError, match="mesh"):
      sharding.mesh_shape(8, data, fsdp)
  mesh = sharding.make_mesh(jax.devices(), None, 4)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4}


def _large_student():
  config = model_lib.BertConfig(vocab_size=1024, hidden_size=256, num_layers=2, num_heads=4,
                                intermediate_size=1024, max_position_embeddings=64)
  return model_lib.param_shapes(config)


def test_adam_moments_land_where_their_parameters_do():
  params = _large_student()
  optimizer, _ = optimizer_lib.make_optimizer(1e-3, 10, 0.0, 0.01)
  state = jax.eval_shape(lambda p: step_lib.init_state(p, optimizer, 0), params)
  mesh = sharding.make_mesh(jax.devices(), 1, 8)
  shardings = sharding.tree_shardings(mesh, state)
  adam = shardings.opt_state[1][0]  # chain(clip, adamw) -> adamw's ScaleByAdamState
  specs = lambda tree: [s.spec for s in jax.tree.leaves(tree)]
  assert specs(adam.mu) == specs(shardings.params) == specs(adam.nu)
  kernel = shardings.params["encoder"]["layer_0"]["intermediate"]["kernel"]
  assert kernel.spec == P(None, "fsdp")  # [256, 1024]
  assert shardings.step.spec == P()
  # Per device: about 1/8 of the replicated bytes (the small vectors stay whole).
  replicated = sharding.bytes_per_device(state, sharding.tree_shardings(
      sharding.make_mesh(jax.devices(), 8, 1), state))
  split = sharding.bytes_per_device(state, shardings)
  assert split <= replicated / 8 * 1.1, (split, replicated)


def _step_and_state(aug):
  optimizer, _ = optimizer_lib.make_optimizer(1e-3, 100, 0.0, 0.01)
  t_config, s_config = tiny(2), tiny(1)
  t_params = model_lib.init_params(t_config, jax.random.PRNGKey(0))
  s_params = students.student_from_teacher(s_config, t_config, t_params, jax.random.PRNGKey(1))
  spec = step_lib.StepSpec.from_config(
      Config(projection_chunk=50, cache_teacher_logits=False), objective="kd", aug=aug,
      num_labels=2, is_regression=False)
  fn = step_lib.make_train_step(spec, model_lib.BertClassifier(s_config),
                                model_lib.BertClassifier(t_config), optimizer, *masks())
  return fn, step_lib.init_state(s_params, optimizer, 0), t_params


def _global_batch(step):
  return {k: v.reshape(-1, *v.shape[2:]) for k, v in make_batch(step, 1).items()}


@pytest.mark.slow
def test_mesh_step_matches_pmap(monkeypatch):
  """--mesh_data=8 gives the losses and parameters of `jax.pmap` over the same step (the data
  parallelism the library had before the mesh) to float32 rounding: XLA fuses the two programs
  differently (measured: losses 2e-9 apart, parameters 1 or 2 float32 ulps); FSDP meshes agree to float32
  reduction order (the tiny kernels are split: the size threshold is lowered; the KD losses are
  near 1e-4, where another order of sums moves them by about 2e-9, 1.7e-5 relative)."""
  monkeypatch.setattr(sharding, "MIN_SHARDED_SIZE", 64)
  devices = jax.devices()
  fn, state, teacher = jax.device_get(_step_and_state("none"))  # host copies: the step donates
  p_step = jax.pmap(fn, axis_name=step_lib.AXIS, devices=devices)
  stack = lambda tree: jax.tree.map(lambda x: np.stack([np.asarray(x)] * len(devices)), tree)
  p_state, p_teacher = stack(state), stack(teacher)
  want = []
  for i in range(2):
    p_state, metrics = p_step(p_state, p_teacher, make_batch(i, 8))
    want.append(float(metrics["loss"][0]))
  want_params = jax.device_get(jax.tree.map(lambda x: x[0], p_state.params))
  for data, fsdp in ((8, 1), (2, 4)):
    mesh = sharding.make_mesh(devices, data, fsdp)
    step = sharding.mesh_step(fn, mesh, state, teacher, _global_batch(0))
    m_state = jax.device_put(state, sharding.tree_shardings(mesh, state))
    m_teacher = jax.device_put(teacher, sharding.tree_shardings(mesh, teacher))
    got = []
    for i in range(2):
      m_state, metrics = step(m_state, m_teacher, _global_batch(i))
      got.append(float(metrics["loss"]))
    kernel = m_state.params["encoder"]["layer_0"]["intermediate"]["kernel"]  # [32, 64]
    assert kernel.sharding.spec == (P(None, "fsdp") if fsdp > 1 else P())
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(
        jax.tree.leaves(jax.device_get(m_state.params)), jax.tree.leaves(want_params)))
    if fsdp == 1:
      np.testing.assert_allclose(got, want, rtol=0, atol=1e-8)
      assert diff < 1e-6, diff  # a float32 ulp at 1 is 1.2e-7
    else:
      # docs/multihost.md's bound for FSDP meshes is 1e-5; the first loss is near 2e-6.
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-8)
      assert diff < 1e-5, diff



def _search_on_mesh(mesh, **search):
  """`augment.nearest_tokens_topk` as the step runs it: manual over `data`, automatic over
  `fsdp`. (vectors [data x P, d], table, exclude [data x P], candidate mask) -> ids."""
  from augpro_jax import augment  # pylint: disable=import-outside-toplevel
  search_fn = lambda v, t, e, c: augment.nearest_tokens_topk(v, t, exclude=e, candidate_mask=c,
                                                             **search)
  return jax.jit(jax.shard_map(search_fn, mesh=mesh, in_specs=(P(DATA), P(), P(DATA), P()),
                               out_specs=P(DATA), axis_names={DATA}, check_vma=False))


def _split_table(mesh, shape):
  """The sharding `sharding.param_spec` gives a [vocab, d] table on `mesh`."""
  return NamedSharding(mesh, sharding.param_spec(shape, mesh.shape[sharding.FSDP]))


@pytest.mark.parametrize("vocab,k,search", [(64, 1, "exact"), (64, 5, "exact"),
                                            (64, 3, "approx"), (60, 2, "exact")])
def test_projection_on_a_split_table_is_one_search(vocab, k, search):
  """With the table's rows split over fsdp, each device searches its rows and the shards' best
  merge to the ids of one search over the whole table, excluded ids and the candidate mask
  included. 60 rows are split by rows over 4 devices and by columns over 8."""
  from augpro_jax import augment  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  table = rng.normal(size=(vocab, 16)).astype(np.float32)
  vectors = rng.normal(size=(2 * 24, 16)).astype(np.float32)
  exclude = rng.integers(0, vocab, size=2 * 24).astype(np.int32)
  candidates = rng.random(vocab) > 0.2
  want = np.asarray(augment.nearest_tokens_topk(vectors, table, k, exclude=exclude,
                                                candidate_mask=candidates, search=search))
  for data, fsdp in ((2, 4), (1, 8)):
    mesh = sharding.make_mesh(jax.devices(), data, fsdp)
    placed = jax.device_put(table, _split_table(mesh, table.shape))
    got = _search_on_mesh(mesh, k=k, search=search, chunk_size=5)(vectors, placed, exclude,
                                                                  candidates)
    np.testing.assert_array_equal(np.asarray(got), want)


def test_projection_on_a_split_table_never_gathers_it(monkeypatch):
  """On 8 devices with --mesh_fsdp=8 the search's temporaries stay far below the table (each
  device scans its 1/8 of the rows); the same search left to XLA over the split table gathers
  all of it on every device (the failure this guards against)."""
  vocab, dim, positions = 8192, 256, 256
  mesh = sharding.make_mesh(jax.devices(), 1, 8)
  by_data = NamedSharding(mesh, P(DATA))
  args = (jax.ShapeDtypeStruct((positions, dim), jnp.float32, sharding=by_data),
          jax.ShapeDtypeStruct((vocab, dim), jnp.float32,
                               sharding=_split_table(mesh, (vocab, dim))),
          jax.ShapeDtypeStruct((positions,), jnp.int32, sharding=by_data),
          jax.ShapeDtypeStruct((vocab,), bool, sharding=NamedSharding(mesh, P())))
  temp_bytes = lambda: _search_on_mesh(mesh, k=1, chunk_size=512).lower(
      *args).compile().memory_analysis().temp_size_in_bytes
  split = temp_bytes()
  monkeypatch.setattr(sharding, "auto_fsdp_size", lambda: 1)
  gathered = temp_bytes()
  table_bytes = vocab * dim * 4
  assert split < table_bytes / 4 < table_bytes < gathered, (split, gathered, table_bytes)


def test_put_tree_leaves_placed_arrays_alone():
  """A tree already on the mesh is not copied again (the teacher is placed once per run)."""
  mesh = sharding.make_mesh(jax.devices(), 2, 4)
  tree = {"w": np.ones((256, 128), np.float32), "b": np.zeros(3, np.float32)}
  placed = sharding.put_tree(mesh, tree)
  again = sharding.put_tree(mesh, placed)
  assert all(a is b for a, b in zip(jax.tree.leaves(placed), jax.tree.leaves(again)))
  other = sharding.put_tree(sharding.make_mesh(jax.devices(), 8, 1), placed)
  assert all(a is not b for a, b in zip(jax.tree.leaves(placed), jax.tree.leaves(other)))
  np.testing.assert_array_equal(np.asarray(other["w"]), tree["w"])
