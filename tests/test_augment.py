"""Projection against a NumPy brute force, and the token-level augmentations' invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from augpro_jax import augment
from augpro_jax import mixing


def brute_force(vectors, table, metric, exclude=None, candidate=None, k=1):
  v = vectors.reshape(-1, vectors.shape[-1]).astype(np.float64)
  t = table.astype(np.float64)
  if metric == "l2":
    scores = -((v[:, None, :] - t[None, :, :]) ** 2).sum(-1)
  elif metric == "dot":
    scores = v @ t.T
  else:
    scores = (v / np.linalg.norm(v, axis=-1, keepdims=True)) @ \
        (t / np.linalg.norm(t, axis=-1, keepdims=True)).T
  if candidate is not None:
    scores[:, ~candidate] = -np.inf
  if exclude is not None:
    scores[np.arange(len(v)), exclude.reshape(-1)] = -np.inf
  order = np.argsort(-scores, axis=-1, kind="stable")[:, :k]
  return order.reshape(*vectors.shape[:-1], k)


@pytest.mark.parametrize("metric", ["l2", "cosine", "dot"])
@pytest.mark.parametrize("chunk", [1, 7, 64, 97, 1000])
@pytest.mark.parametrize("with_exclude", [False, True])
@pytest.mark.parametrize("search", ["exact", "approx"])
def test_nearest_tokens_matches_brute_force(metric, chunk, with_exclude, search):
  rng = np.random.default_rng(hash((metric, chunk, with_exclude)) % 2**32)
  vocab, dim = 97, 16
  table = rng.normal(size=(vocab, dim)).astype(np.float32)
  vectors = rng.normal(size=(3, 5, dim)).astype(np.float32)
  candidate = rng.random(vocab) > 0.2
  exclude = None
  if with_exclude:
    # Exclude what would otherwise be the answer, so exclusion visibly matters.
    exclude = brute_force(vectors, table, metric, candidate=candidate)[..., 0].astype(np.int32)
  got = augment.nearest_tokens(jnp.asarray(vectors), jnp.asarray(table), metric=metric,
                               exclude=None if exclude is None else jnp.asarray(exclude),
                               candidate_mask=jnp.asarray(candidate), chunk_size=chunk,
                               search=search)
  want = brute_force(vectors, table, metric, exclude, candidate)[..., 0]
  assert got.dtype == jnp.int32 and got.shape == (3, 5)
  np.testing.assert_array_equal(np.asarray(got), want)
  assert candidate[np.asarray(got)].all()
  if with_exclude:
    assert (np.asarray(got) != exclude).all()


@pytest.mark.parametrize("chunk", [5, 33, 200])
@pytest.mark.parametrize("search", ["exact", "approx"])
def test_topk_matches_brute_force(chunk, search):
  # On CPU and GPU, XLA computes approx_max_k exactly; TPU would need a recall bound instead.
  rng = np.random.default_rng(chunk)
  table = rng.normal(size=(150, 8)).astype(np.float32)
  vectors = rng.normal(size=(11, 8)).astype(np.float32)
  exclude = rng.integers(0, 150, size=(11,)).astype(np.int32)
  got = augment.nearest_tokens_topk(jnp.asarray(vectors), jnp.asarray(table), 6, metric="l2",
                                    exclude=jnp.asarray(exclude), chunk_size=chunk, search=search)
  np.testing.assert_array_equal(np.asarray(got), brute_force(vectors, table, "l2", exclude, k=6))


def test_projection_of_table_rows_is_identity_and_bf16_inputs_score_in_f32():
  rng = np.random.default_rng(0)
  table = rng.normal(size=(300, 32)).astype(np.float32)
  ids = rng.integers(0, 300, size=(4, 9))
  got = augment.nearest_tokens(jnp.asarray(table[ids]).astype(jnp.bfloat16), jnp.asarray(table),
                               chunk_size=64)
  np.testing.assert_array_equal(np.asarray(got), ids)


@pytest.mark.parametrize("search", ["exact", "approx"])
def test_projection_memory_is_bounded_by_the_chunk(search):
  """The compiled projection's temporaries scale with the chunk, not the vocabulary."""
  positions, dim = 256, 64

  def temp_bytes(vocab, chunk):
    f = jax.jit(lambda v, t: augment.nearest_tokens(v, t, chunk_size=chunk, search=search))
    compiled = f.lower(jax.ShapeDtypeStruct((positions, dim), jnp.float32),
                       jax.ShapeDtypeStruct((vocab, dim), jnp.float32)).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  naive = positions * 32768 * 4
  small = temp_bytes(32768, 512)
  assert small < naive / 8, (small, naive)
  # Quadrupling the vocabulary at a fixed chunk does not grow the temporaries with it.
  assert temp_bytes(4 * 32768, 512) < 2 * small + 1


def _example_batch(seed=0, batch=16, seq=24):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(6, seq, size=batch)
  ids = np.zeros((batch, seq), np.int32)
  mask = np.zeros((batch, seq), np.int32)
  for b, n in enumerate(lengths):
    ids[b, :n] = rng.integers(10, 200, size=n)
    ids[b, 0], ids[b, n - 1] = 2, 3  # [CLS] ... [SEP]
    mask[b, :n] = 1
  is_special = np.zeros(200, bool)
  is_special[:5] = True
  return jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(is_special)


def _keys(seed, batch):
  return jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed), i))(jnp.arange(batch))


# AugPro-Mix variants: (lambda rule, lambda per, partner alignment, search).
MIX_VARIANTS = [("folded", "example", "wrap", "exact"), ("beta", "example", "wrap", "exact"),
                ("beta", "position", "stretch", "exact"), ("fixed", "example", "wrap", "approx")]


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("method", ["augpro_mix", "augpro_perturb", "knn"] +
                         [("augpro_mix",) + v for v in MIX_VARIANTS])
def test_token_augs_change_exactly_the_chosen_positions(p, method):
  ids, mask, is_special = _example_batch()
  batch, seq = ids.shape
  rng = np.random.default_rng(1)
  table = jnp.asarray(rng.normal(size=(200, 16)).astype(np.float32))
  candidate = ~is_special
  eligible = augment.eligible_positions(ids, mask, is_special)
  keys = _keys(3, batch)
  common = dict(shift_degree=p, metric="l2", candidate_mask=candidate, chunk_size=37)
  if isinstance(method, tuple):  # a variant: its knobs, and the partners AugPro-Mix draws
    _, rule, per, align, search = method
    lam = mixing.mix_lambdas(keys, augment.position_budget(p, seq), rule=rule, alpha=0.4,
                             value=0.5, scope=per)
    new = augment.augpro_mix(keys, ids, eligible, mixing.partner_cycle(keys[0], batch), lam, table,
                             exclude_original=True, align=align, search=search, **common)
  elif method == "augpro_mix":
    lam = mixing.example_lambdas(keys, 0.4, folded=True)
    new = augment.augpro_mix(keys, ids, eligible, jnp.roll(jnp.arange(batch), 1), lam, table,
                             exclude_original=True, **common)
  elif method == "augpro_perturb":
    delta = 0.01 * jnp.asarray(rng.normal(size=(batch, seq, 16)).astype(np.float32))
    new = augment.augpro_perturb(keys, ids, eligible, delta, table, exclude_original=True, **common)
  else:
    new = augment.knn_replace(keys, ids, eligible, table, k=4, **common)
  ids, new, eligible = np.asarray(ids), np.asarray(new), np.asarray(eligible)
  changed = ids != new
  # Specials and padding never change; exactly m = floor(p * n + u) eligible tokens change.
  assert not (changed & ~eligible).any()
  want = np.asarray(augment.change_count(keys, jnp.asarray(eligible), p))
  n = eligible.sum(-1)
  assert np.all((want == np.floor(p * n)) | (want == np.ceil(p * n)))
  np.testing.assert_array_equal(changed.sum(-1), want)
  # The positions chosen are the ones that changed: rerun selection with the same keys.
  positions, chosen = augment.choose_positions(keys, jnp.asarray(eligible), p,
                                               augment.position_budget(p, seq))
  chosen_mask = np.zeros_like(changed)
  for b in range(batch):
    chosen_mask[b, np.asarray(positions[b])[np.asarray(chosen[b])]] = True
  np.testing.assert_array_equal(chosen_mask, changed)
  assert not np.isin(new[changed], np.flatnonzero(np.asarray(is_special))).any()
  shift, ok = augment.measured_shift(jnp.asarray(ids), jnp.asarray(new), jnp.asarray(eligible))
  np.testing.assert_allclose(np.asarray(shift)[np.asarray(ok)],
                             (want / eligible.sum(-1))[np.asarray(ok)], rtol=1e-6)


def test_choose_positions_is_uniform_and_deterministic():
  eligible = jnp.ones((4000, 10), bool).at[:, 0].set(False)
  keys = _keys(0, 4000)
  positions, chosen = augment.choose_positions(keys, eligible, 0.3, 3)
  counts = np.bincount(np.asarray(positions)[np.asarray(chosen)], minlength=10)
  assert counts[0] == 0
  expected = np.asarray(chosen).sum() / 9  # each of the 9 eligible positions equally often
  assert np.all(np.abs(counts[1:] - expected) < 5 * np.sqrt(expected))
  again, _ = augment.choose_positions(keys, eligible, 0.3, 3)
  np.testing.assert_array_equal(np.asarray(positions), np.asarray(again))
  other, _ = augment.choose_positions(_keys(1, 4000), eligible, 0.3, 3)
  assert (np.asarray(other) != np.asarray(positions)).any()


def test_position_budget_covers_rounding():
  for seq in (8, 13, 64, 128):
    for p in (0.05, 0.1, 0.3, 0.5, 0.7, 1.0):
      budget = augment.position_budget(p, seq)
      assert all(np.ceil(p * n) <= budget for n in range(seq + 1))


def test_stochastic_rounding_is_unbiased_and_nearest_rounds_half_up():
  eligible = jnp.ones((20000, 12), bool).at[:, 7:].set(False)  # n = 7 eligible tokens
  keys = _keys(5, 20000)
  m = np.asarray(augment.change_count(keys, eligible, 0.1))
  assert set(np.unique(m)) == {0, 1} and abs(m.mean() - 0.7) < 0.02
  np.testing.assert_array_equal(augment.change_count(keys, eligible, 0.1, "nearest"), 1)
