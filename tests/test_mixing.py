"""AugPro-Mix's variants, the task vocabulary and the projection profile on small hand-made tables
whose right answers are known."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from augpro_jax import augment
from augpro_jax import input_pipeline as pipeline
from augpro_jax import mixing
from augpro_jax import token_profile
from augpro_jax.errors import UserError

VOCAB, DIM = 40, 40
PAD, CLS, SEP = 0, 2, 3


def separated_table():
  """Orthogonal rows of equal norm: the nearest row of a λ-mix of rows a and b is a when λ > 0.5,
  b when λ < 0.5 (and a third row is never nearer than either)."""
  return jnp.asarray(10.0 * np.eye(VOCAB, DIM, dtype=np.float32))


def batch_of(lengths, seq=12, seed=0):
  """[CLS] w1 .. wn [SEP] [PAD]..., with n = lengths[b] distinct word ids per example."""
  rng = np.random.default_rng(seed)
  ids = np.full((len(lengths), seq), PAD, np.int32)
  for b, n in enumerate(lengths):
    ids[b, 0], ids[b, n + 1] = CLS, SEP
    ids[b, 1:n + 1] = rng.choice(np.arange(5, VOCAB), size=n, replace=False)
  mask = (ids != PAD).astype(np.int32)
  is_special = np.zeros(VOCAB, bool)
  is_special[:5] = True
  return jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(is_special)


def keys_for(batch, seed=0):
  return jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed), i))(jnp.arange(batch))


def mix(ids, mask, is_special, partner, lam, *, p=1.0, exclude=False, align="wrap", vocab=None,
        search="exact"):
  eligible = augment.eligible_positions(ids, mask, is_special)
  candidates = ~is_special if vocab is None else vocab
  return augment.mix_and_project(keys_for(ids.shape[0]), ids, eligible, partner, lam,
                                 separated_table(), shift_degree=p, metric="l2",
                                 candidate_mask=candidates, exclude_original=exclude, chunk_size=7,
                                 align=align, search=search)


@pytest.mark.parametrize("search", ["exact", "approx"])
def test_lambda_below_half_lands_on_the_partner_token_and_above_half_stays(search):
  ids, mask, is_special = batch_of([6, 4, 9, 5])
  partner = jnp.asarray([1, 2, 3, 0])
  for value, lands_on in ((0.3, "partner"), (0.7, "own")):
    lam = mixing.mix_lambdas(keys_for(4), 1, rule="fixed", alpha=0.4, value=value, scope="example")
    new, met = mix(ids, mask, is_special, partner, lam, search=search)
    chosen = np.asarray(met) >= 0
    assert chosen.sum() == 6 + 4 + 9 + 5  # p = 1: every eligible position
    want = np.asarray(met) if lands_on == "partner" else np.asarray(ids)
    np.testing.assert_array_equal(np.asarray(new)[chosen], want[chosen])


def test_per_position_lambda_decides_each_position_on_its_own():
  ids, mask, is_special = batch_of([9, 8, 10, 7], seq=12)
  keys = keys_for(4)
  budget = augment.position_budget(1.0, 12)
  lam = mixing.mix_lambdas(keys, budget, rule="beta", alpha=0.4, value=0.5, scope="position")
  assert lam.shape == (4, budget)
  eligible = augment.eligible_positions(ids, mask, is_special)
  positions, chosen = augment.choose_positions(keys, eligible, 1.0, budget)
  new, met = mix(ids, mask, is_special, jnp.asarray([3, 0, 1, 2]), lam)
  new, met, ids = np.asarray(new), np.asarray(met), np.asarray(ids)
  seen = set()
  for b in range(4):
    for j in np.flatnonzero(np.asarray(chosen[b])):
      pos, weight = int(positions[b, j]), float(lam[b, j])
      want = ids[b, pos] if weight > 0.5 else met[b, pos]
      assert new[b, pos] == want, (b, pos, weight)
      seen.add(weight > 0.5)
  assert seen == {True, False}  # both outcomes occur within the batch


def test_lambda_rules():
  keys = keys_for(2000)
  folded = np.asarray(mixing.mix_lambdas(keys, 5, rule="folded", alpha=0.4, value=0.5,
                                         scope="example"))
  raw = np.asarray(mixing.mix_lambdas(keys, 5, rule="beta", alpha=0.4, value=0.5, scope="example"))
  per_position = np.asarray(mixing.mix_lambdas(keys, 5, rule="beta", alpha=0.4, value=0.5,
                                               scope="position"))
  fixed = np.asarray(mixing.mix_lambdas(keys, 5, rule="fixed", alpha=0.4, value=0.25,
                                        scope="position"))
  assert folded.shape == raw.shape == (2000, 1) and per_position.shape == fixed.shape == (2000, 5)
  assert folded.min() >= 0.5
  np.testing.assert_allclose(folded, np.maximum(raw, 1 - raw), rtol=1e-6)
  assert 0.4 < (raw < 0.5).mean() < 0.6  # Beta(α, α) is symmetric
  assert (per_position.std(axis=1) > 0).all()  # one λ per position, not per row
  assert (fixed == 0.25).all()
  with pytest.raises(ValueError):
    mixing.mix_lambdas(keys, 5, rule="nope", alpha=0.4, value=0.5, scope="example")


def test_partner_cycle_is_a_permutation_without_fixed_points():
  for batch in (2, 3, 4, 32):
    for seed in range(20):
      partner = np.asarray(mixing.partner_cycle(jax.random.PRNGKey(seed), batch))
      assert sorted(partner) == list(range(batch))
      assert (partner != np.arange(batch)).all()
  np.testing.assert_array_equal(mixing.partner_cycle(jax.random.PRNGKey(0), 1), [0])


@pytest.mark.parametrize("align", ["wrap", "stretch"])
def test_mixed_positions_never_meet_the_partners_padding_or_specials(align):
  # Long examples paired with short ones: aligned by absolute position, most would meet [PAD].
  ids, mask, is_special = batch_of([10, 1, 9, 2, 8, 3], seq=12, seed=3)
  partner = jnp.asarray([1, 2, 3, 4, 5, 0])
  lam = jnp.full((6, 1), 0.5)
  new, met = mix(ids, mask, is_special, partner, lam, exclude=True, align=align)
  ids, met = np.asarray(ids), np.asarray(met)
  eligible = np.asarray(augment.eligible_positions(jnp.asarray(ids), mask, is_special))
  assert (met >= 0).sum() == eligible.sum()
  for b in range(6):
    p = int(partner[b])
    own_eligible = np.flatnonzero(eligible[b])
    partner_words = ids[p][eligible[p]]
    n, n_partner = len(own_eligible), len(partner_words)
    for r, pos in enumerate(own_eligible):
      assert not np.asarray(is_special)[met[b, pos]]
      index = r % n_partner if align == "wrap" else (r * n_partner) // n
      assert met[b, pos] == partner_words[index], (b, r)


def test_a_partner_without_eligible_tokens_mixes_with_the_own_token():
  ids, mask, is_special = batch_of([4, 3])
  ids = ids.at[1, 1:4].set(4)  # example 1: only [MASK]-like specials left
  partner = jnp.asarray([1, 0])
  _, met = mix(ids, mask, is_special, partner, jnp.full((2, 1), 0.5))
  met = np.asarray(met)
  np.testing.assert_array_equal(met[0][met[0] >= 0], np.asarray(ids)[0][met[0] >= 0])


def fake_tokenized(rows):
  ids = np.asarray(rows, np.int32)
  return pipeline.Tokenized(ids, (ids != PAD).astype(np.int32), np.zeros_like(ids),
                            np.zeros(len(rows), np.int32), 0, [("x",)] * len(rows))


def test_task_candidates_are_the_training_splits_non_special_ids():
  train = fake_tokenized([[CLS, 7, 9, 7, SEP, PAD], [CLS, 11, 4, SEP, PAD, PAD]])
  is_special = np.zeros(VOCAB, bool)
  is_special[:5] = True
  is_candidate = ~is_special
  is_candidate[9] = False  # e.g. an [unusedN] row
  task = pipeline.task_candidates(is_candidate, is_special, train)
  np.testing.assert_array_equal(np.flatnonzero(task), [7, 11])
  with pytest.raises(UserError, match="projection_vocab"):
    pipeline.task_candidates(is_candidate, is_special, fake_tokenized([[CLS, SEP, PAD]]))
  with pytest.raises(UserError, match="fewer than the 3"):  # e.g. knn with k = 2
    pipeline.task_candidates(is_candidate, is_special, train, minimum=3)


@pytest.mark.parametrize("method", ["augpro_mix", "augpro_perturb", "knn"])
def test_the_task_vocabulary_never_returns_an_id_outside_it(method):
  ids, mask, is_special = batch_of([10, 6, 8, 9, 7, 10], seq=12, seed=5)
  vocab = np.zeros(VOCAB, bool)
  vocab[np.unique(np.asarray(ids)[:3])] = True  # the first three examples' ids
  vocab &= ~np.asarray(is_special)
  vocab = jnp.asarray(vocab)
  keys = keys_for(6)
  eligible = augment.eligible_positions(ids, mask, is_special)
  table = jnp.asarray(np.random.default_rng(0).normal(size=(VOCAB, 8)).astype(np.float32))
  common = dict(shift_degree=0.5, metric="l2", candidate_mask=vocab, chunk_size=9)
  if method == "augpro_mix":
    lam = mixing.mix_lambdas(keys, 6, rule="beta", alpha=0.4, value=0.5, scope="position")
    new = augment.augpro_mix(keys, ids, eligible, mixing.partner_cycle(keys[0], 6), lam, table,
                             exclude_original=True, **common)
  elif method == "augpro_perturb":
    delta = 0.3 * jnp.sign(jnp.asarray(np.random.default_rng(1).normal(size=(6, 12, 8))))
    new = augment.augpro_perturb(keys, ids, eligible, delta, table, exclude_original=True,
                                 **common)
  else:
    new = augment.knn_replace(keys, ids, eligible, table, k=3, **common)
  changed = np.asarray(new != ids)
  assert changed.sum() > 5
  assert np.asarray(vocab)[np.asarray(new)[changed]].all()


def test_token_flags_and_profile_counts():
  class Tok:
    def get_vocab(self):
      return {"[PAD]": 0, "the": 1, "##ing": 2, "café": 3, "##ß": 4, "run": 5}

  is_continuation, is_non_ascii = pipeline.token_flags(Tok(), 6)
  np.testing.assert_array_equal(is_continuation, [0, 0, 1, 0, 1, 0])
  np.testing.assert_array_equal(is_non_ascii, [0, 0, 0, 1, 1, 0])
  original = jnp.asarray([[1, 5, 1, 5, 0]])
  augmented = jnp.asarray([[2, 3, 4, 5, 0]])  # three changed: ##ing, café, ##ß
  eligible = jnp.asarray([[True, True, True, True, False]])
  met = jnp.asarray([[2, 1, -1, 5, -1]])  # position 0 landed on its partner's token
  counts = token_profile.profile_counts(original, augmented, eligible, met,
                                        jnp.asarray(is_continuation), jnp.asarray(is_non_ascii))
  got = dict(zip(token_profile.COUNTS, np.asarray(counts)))
  assert got == {"changed": 3, "mixed": 2, "partner": 1, "continuation": 2, "non_ascii": 2}
  shares = token_profile.shares(np.asarray(counts))
  assert shares["partner_share"] == 0.5 and shares["non_ascii_share"] == pytest.approx(2 / 3)
  no_partner = token_profile.profile_counts(original, augmented, eligible, None,
                                            jnp.asarray(is_continuation), jnp.asarray(is_non_ascii))
  assert token_profile.shares(np.asarray(no_partner))["partner_share"] is None


def test_approx_search_recall_meets_its_target():
  rng = np.random.default_rng(0)
  table = jnp.asarray(rng.normal(size=(3000, 16)).astype(np.float32))
  vectors = jnp.asarray(rng.normal(size=(64, 16)).astype(np.float32))
  exact = np.asarray(augment.nearest_tokens_topk(vectors, table, 10, chunk_size=512))
  approx = np.asarray(augment.nearest_tokens_topk(vectors, table, 10, chunk_size=512,
                                                  search="approx", recall_target=0.95))
  recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
  assert recall >= 0.95, recall
  with pytest.raises(ValueError):
    augment.nearest_tokens(vectors, table, search="fast")


def test_each_entry_declares_the_candidates_its_projection_needs():
  from augpro_jax import augmentations  # pylint: disable=import-outside-toplevel
  from augpro_jax.config import AugmentConfig  # pylint: disable=import-outside-toplevel
  knobs = AugmentConfig(knn_k=7)
  assert augmentations.get("knn").candidates_needed(knobs) == 8
  assert augmentations.get("augpro_mix").candidates_needed(knobs) == 2
