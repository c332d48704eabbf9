"""measured_shift on real SST-2 sentences, with the real MiniLM vocabulary and embedding table."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from augpro_jax import augment
from augpro_jax import config as config_lib
from augpro_jax import data as data_lib
from augpro_jax import hf_io
from augpro_jax import input_pipeline as pipeline
from augpro_jax import model as model_lib

pytestmark = pytest.mark.slow  # subprocesses, end-to-end runs or benchmarks: not in `make test-fast`


@pytest.fixture(scope="module")
def sst2(glue):
  cfg = config_lib.Config(task="sst2", glue_dir=str(glue), train_size=512, max_seq_len=64)
  task = data_lib.resolve_task(cfg)
  examples = data_lib.load_split(cfg, task, "train")
  teacher_dir = hf_io.resolve_pretrained_dir("minilm")
  tokenizer = pipeline.load_tokenizer(teacher_dir)
  data = pipeline.tokenize(examples, tokenizer, cfg.max_seq_len)
  _, params = hf_io.load_pretrained(str(teacher_dir), num_labels=2)
  is_special, is_candidate = pipeline.vocab_masks(tokenizer, tokenizer.get_vocab_size())
  return data, model_lib.word_embedding_table(params), jnp.asarray(is_special), \
      jnp.asarray(is_candidate)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
@pytest.mark.parametrize("method", ["augpro_mix", "augpro_fgsm", "knn"])
def test_measured_shift_matches_the_requested_degree(sst2, method, p):
  data, table, is_special, is_candidate = sst2
  ids, mask = jnp.asarray(data.input_ids), jnp.asarray(data.attention_mask)
  n = ids.shape[0]
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(11), i))(jnp.arange(n))
  eligible = augment.eligible_positions(ids, mask, is_special)
  common = dict(shift_degree=p, metric="l2", candidate_mask=is_candidate, chunk_size=4096)
  if method == "augpro_mix":
    lam = augment.mix_coefficients(keys, 0.4, keep_major=True)
    fn = lambda: augment.augpro_mix(keys, ids, eligible, jnp.roll(jnp.arange(n), 1), lam, table,
                                    exclude_original=True, **common)
  elif method == "augpro_fgsm":
    # A sign step as FGSM produces; the direction's source does not change which positions move.
    grad = jax.random.normal(jax.random.PRNGKey(3), ids.shape + (table.shape[1],))
    fn = lambda: augment.augpro_perturb(keys, ids, eligible, augment.fgsm_delta(grad, 0.1), table,
                                        exclude_original=True, **common)
  else:
    fn = lambda: augment.knn_replace(keys, ids, eligible, table, k=10, **common)
  new = jax.jit(fn)()
  shift, ok = augment.measured_shift(ids, new, eligible)
  measured = float(jnp.sum(jnp.where(ok, shift, 0)) / jnp.sum(ok))
  assert abs(measured - p) <= 0.02, measured
  changed = np.asarray(new != ids)
  assert not (changed & ~np.asarray(eligible)).any()
  assert np.asarray(is_candidate)[np.asarray(new)[changed]].all()
