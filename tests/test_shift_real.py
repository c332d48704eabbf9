"""Token-level augmentations on real SST-2 sentences, with the real MiniLM vocabulary and embedding
table: measured shift, partner alignment, the task vocabulary."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from augpro_jax import context
from augpro_jax import augment
from augpro_jax import mixing
from augpro_jax import augmentations
from augpro_jax import config as config_lib
from augpro_jax import data as data_lib
from augpro_jax import hf_io
from augpro_jax import input_pipeline as pipeline
from augpro_jax import model as model_lib

pytestmark = pytest.mark.slow  # subprocesses, end-to-end runs or benchmarks: not in `make test-fast`


@pytest.fixture(scope="module")
def sst2(glue):
  # 32 tokens: SST-2 sentences average 13 word pieces, and the projection work scales with the
  # padded length.
  cfg = config_lib.Config(task="sst2", glue_dir=str(glue), train_size=512, max_seq_len=32)
  task = data_lib.resolve_task(cfg)
  examples = data_lib.load_split(cfg, task, "train")
  teacher_dir = hf_io.resolve_pretrained_dir("minilm")
  tokenizer = pipeline.load_tokenizer(teacher_dir)
  data = pipeline.tokenize(examples, tokenizer, cfg.max_seq_len)
  _, params = hf_io.load_pretrained(str(teacher_dir), num_labels=2)
  is_special, is_candidate = pipeline.vocab_masks(tokenizer, tokenizer.get_vocab_size())
  return data, model_lib.word_embedding_table(params), jnp.asarray(is_special), \
      jnp.asarray(is_candidate)


@pytest.mark.parametrize("p", [0.1, 0.5])  # the ends of the range the studies use
@pytest.mark.parametrize("method", ["augpro_mix", "augpro_fgsm", "knn"])
def test_measured_shift_matches_the_requested_degree(sst2, method, p):
  data, table, is_special, is_candidate = sst2
  ids, mask = jnp.asarray(data.input_ids), jnp.asarray(data.attention_mask)
  n = ids.shape[0]
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(11), i))(jnp.arange(n))
  eligible = augment.eligible_positions(ids, mask, is_special)
  common = dict(shift_degree=p, metric="l2", candidate_mask=is_candidate, chunk_size=4096)
  # The table and the FGSM direction are arguments, not constants folded into the program.
  if method == "augpro_mix":
    lam = mixing.example_lambdas(keys, 0.4, folded=True)
    grad = None
    fn = lambda table, _: augment.augpro_mix(keys, ids, eligible, jnp.roll(jnp.arange(n), 1), lam,
                                             table, exclude_original=True, **common)
  elif method == "augpro_fgsm":
    # A sign step as FGSM produces; the direction's source does not change which positions move.
    grad = jax.random.normal(jax.random.PRNGKey(3), ids.shape + (table.shape[1],))
    fn = lambda table, grad: augment.augpro_perturb(
        keys, ids, eligible, augment.fgsm_delta(grad, 0.1), table, exclude_original=True, **common)
  else:
    grad = None
    fn = lambda table, _: augment.knn_replace(keys, ids, eligible, table, k=10, **common)
  new = jax.jit(fn)(table, grad)
  shift, ok = augment.measured_shift(ids, new, eligible)
  measured = float(jnp.sum(jnp.where(ok, shift, 0)) / jnp.sum(ok))
  assert abs(measured - p) <= 0.02, measured
  changed = np.asarray(new != ids)
  assert not (changed & ~np.asarray(eligible)).any()
  assert np.asarray(is_candidate)[np.asarray(new)[changed]].all()


def _copy(aug, knobs, data, table, is_special, candidates, batch=32, delta=None):
  """The registry entry's copy of `data`, made as the step makes it, in device batches of 32
  (one compiled program for every batch, as in the step). Returns (original ids, augmented ids,
  partner token met [N, S] or None, eligible)."""
  entry = augmentations.get(aug)

  @jax.jit  # the tables are arguments, not constants folded into the program
  def one_batch(ids, mask, batch_delta, key, table, is_special, candidates):  # ids: [batch, seq]
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(5), i))(jnp.arange(batch))
    inputs = augmentations.StepInputs(
        ids=ids, mask=mask, types=jnp.zeros_like(ids),
        eligible=augment.eligible_positions(ids, mask, is_special), gold=jnp.zeros((batch, 2)),
        batch={}, table=table, candidate_mask=candidates, knobs=knobs, delta=batch_delta)
    copy = entry.make_copy(inputs, 0, keys, key)
    return ids, copy.ids, copy.met, inputs.eligible

  out = []
  for start in range(0, len(data) - batch + 1, batch):
    rows = slice(start, start + batch)
    out.append(one_batch(jnp.asarray(data.input_ids[rows]), jnp.asarray(data.attention_mask[rows]),
                         None if delta is None else delta[rows], jax.random.PRNGKey(start), table,
                         is_special, candidates))
  return [None if parts[0] is None else np.concatenate([np.asarray(p) for p in parts])
          for parts in zip(*out)]


@pytest.mark.parametrize("align", ["wrap", "stretch"])
def test_mixed_positions_never_meet_a_partners_pad_or_sep(sst2, align):
  data, table, is_special, is_candidate = sst2
  knobs = config_lib.AugmentConfig(mix_partner_align=align)
  ids, new, met, eligible = _copy("augpro_mix", knobs, data, table, is_special, is_candidate)
  chosen = met >= 0
  assert chosen.sum() > 1000 and not (chosen & ~eligible).any()
  assert not np.asarray(is_special)[met[chosen]].any()  # no [PAD], [SEP], [CLS], ...
  # Each met token is a real token of some other example of its device batch.
  for row in np.flatnonzero(chosen.any(-1))[:64]:
    group = slice(row // 32 * 32, row // 32 * 32 + 32)
    others = np.concatenate([ids[r][eligible[r]] for r in range(group.start, group.stop)
                             if r != row])
    assert np.isin(met[row][chosen[row]], others).all()


@pytest.mark.parametrize("aug", ["augpro_mix", "augpro_fgsm", "knn"])
def test_task_vocabulary_on_real_data(sst2, aug):
  """--projection_vocab=task returns only ids of the training split, and its non-ASCII share is
  no higher than the split's own."""
  data, table, is_special, is_candidate = sst2
  task = jnp.asarray(pipeline.task_candidates(np.asarray(is_candidate), np.asarray(is_special),
                                              data))
  knobs = config_lib.AugmentConfig(projection_vocab="task", fgsm_eps=0.3)
  delta = None
  if aug == "augpro_fgsm":
    grad = jax.random.normal(jax.random.PRNGKey(3), data.input_ids.shape + (table.shape[1],))
    delta = augment.fgsm_delta(grad, knobs.fgsm_eps)
  ids, new, _, eligible = _copy(aug, knobs, data, table, is_special, task, delta=delta)
  changed = (ids != new) & eligible
  assert changed.sum() > 1000
  assert np.asarray(task)[new[changed]].all()
  in_split = np.zeros(len(task), bool)
  in_split[data.input_ids[data.attention_mask > 0]] = True
  assert in_split[new[changed]].all()
  _, is_non_ascii = pipeline.token_flags(
      pipeline.load_tokenizer(hf_io.resolve_pretrained_dir("minilm")), len(task))
  own_share = is_non_ascii[ids[eligible]].mean()
  assert is_non_ascii[new[changed]].mean() <= own_share


def test_build_context_uses_the_task_vocabulary(glue):
  from augpro_jax import evaluation  # pylint: disable=import-outside-toplevel
  cfg = config_lib.Config(task="sst2", glue_dir=str(glue), train_size=64, max_seq_len=32,
                          batch_size=8, eval_size=8)
  full = context.build_context(cfg.replace(projection_vocab="full"))
  task = context.build_context(cfg.replace(projection_vocab="task"))
  occurring = np.zeros(len(full.is_candidate), bool)
  occurring[task.train.input_ids[task.train.attention_mask > 0]] = True
  np.testing.assert_array_equal(task.is_candidate, full.is_candidate & occurring & ~full.is_special)
  assert 100 < task.is_candidate.sum() < full.is_candidate.sum()
