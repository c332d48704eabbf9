"""Length buckets: the choice of lengths, bucketed training batches as a pure function of
(seed, step) that every process agrees on, evaluation in buckets with results in original order,
and token-utilisation accounting. Pure numpy; no model."""

import itertools

import numpy as np
import pytest

from augpro_jax import buckets
from augpro_jax import input_pipeline as pipeline
from augpro_jax.config import Config
from augpro_jax.errors import UserError

SEQ = 40


def split_of(lengths, seq=SEQ, seed=0) -> pipeline.Tokenized:
  """A tokenized split whose rows have the given lengths: [CLS] ids.. [SEP], then padding."""
  rng = np.random.default_rng(seed)
  lengths = np.asarray(lengths)
  n = len(lengths)
  mask = (np.arange(seq)[None] < lengths[:, None]).astype(np.int32)
  ids = rng.integers(5, 1000, size=(n, seq)).astype(np.int32)
  ids[:, 0] = 2
  ids[np.arange(n), lengths - 1] = 3
  ids *= mask
  types = (np.arange(seq)[None] >= lengths[:, None] // 2).astype(np.int32) * mask
  return pipeline.Tokenized(ids, mask, types, (np.arange(n) % 2).astype(np.int32), 0,
                            [(f"text {i}",) for i in range(n)])


def skewed_lengths(n, seed=0, top=SEQ):
  """Mostly short, a long tail (like SST-2)."""
  rng = np.random.default_rng(seed)
  return np.clip(np.round(rng.lognormal(2.3, 0.5, size=n)), 3, top).astype(int)


def flat(batch):
  return {k: v.reshape(-1, *v.shape[2:]) for k, v in batch.items()}


# ----------------------------------------------------------------------------------------------
# Choosing the lengths.
# ----------------------------------------------------------------------------------------------


def brute_force(lengths, k, max_seq_len, min_examples):
  """Fewest padded tokens over every set of at most k multiples of 8 ending at the top, each
  bucket holding at least min_examples examples."""
  top = min(max_seq_len, -(-max(lengths) // 8) * 8)
  candidates = list(range(8, top, 8))
  best = (np.inf, (top,))
  for size in range(0, k):
    for subset in itertools.combinations(candidates, size):
      chosen = subset + (top,)
      which = np.searchsorted(chosen, lengths)
      if np.bincount(which, minlength=len(chosen)).min() < min_examples:
        continue
      cost = np.asarray(chosen)[which].sum()
      if cost < best[0]:
        best = (cost, chosen)
  return best


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k,min_examples", [(1, 1), (2, 1), (3, 1), (5, 1), (3, 16), (5, 40)])
def test_choice_is_the_least_padding(seed, k, min_examples):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(2, rng.integers(10, 49), size=rng.integers(5, 200))
  chosen = buckets.choose_buckets(lengths, k, 48, min_examples)
  cost, best = brute_force(lengths, k, 48, min_examples)
  padded = np.asarray(chosen)[buckets.assign(lengths, chosen)].sum()
  assert padded == cost or (cost == np.inf and chosen == best), (chosen, best)
  assert len(chosen) <= k and list(chosen) == sorted(set(chosen))
  assert all(c % 8 == 0 for c in chosen[:-1])
  assert chosen[-1] == min(48, -(-lengths.max() // 8) * 8)
  # No bucket is empty: a useless bucket would cost a compile and save nothing.
  held = np.bincount(buckets.assign(lengths, chosen), minlength=len(chosen))
  assert held.min() >= min(min_examples, len(lengths)) or len(chosen) == 1
  assert held.min() > 0


def test_compiles_cost_buckets_on_short_runs():
  lengths = skewed_lengths(2000)
  free = buckets.choose_buckets(lengths, 8, SEQ, 32)
  costs = [buckets.compile_cost_tokens(4.0, 32, lengths, SEQ, epochs) for epochs in (100, 2, 0.5)]
  assert costs[0] < costs[1] < costs[2]
  counts = [len(buckets.choose_buckets(lengths, 8, SEQ, 32, cost)) for cost in costs]
  assert len(free) == counts[0] >= counts[1] > counts[2] >= 1, (free, counts)
  # The choice minimises padded tokens + compile_tokens per bucket over every bucket count.
  for cost in costs:
    chosen = buckets.choose_buckets(lengths, 8, SEQ, 32, cost)
    total = lambda b: np.asarray(b)[buckets.assign(lengths, b)].sum() + cost * len(b)
    for k in range(1, 9):
      assert total(chosen) <= total(buckets.choose_buckets(lengths, k, SEQ, 32)) + 1e-6


def test_choice_details():
  assert buckets.choose_buckets(np.array([3, 5, 7]), 8, 128) == (8,)
  assert buckets.choose_buckets(np.array([3, 9, 59]), 8, 60) == (8, 16, 60)  # capped top
  assert buckets.choose_buckets(np.array([12]), 8, 12) == (12,)  # max_seq_len not a multiple of 8
  assert buckets.choose_buckets(np.zeros(0, int), 8, 128) == (8,)


def test_spec_parsing_and_resolution():
  lengths = np.array([4, 9, 30])
  assert buckets.resolve("none", lengths, 64, 8) == (64,)
  assert buckets.resolve("auto", lengths, 64, 8) == (8, 16, 32)
  assert buckets.resolve("AUTO", lengths, 64, 1) == (32,)
  assert buckets.resolve("auto", np.array([4, 5, 9, 30]), 64, 8, min_examples=2) == (8, 32)
  assert buckets.resolve("16,24", lengths, 64, 8) == (16, 24, 64)  # longer examples exist
  assert buckets.resolve("16,32", lengths, 64, 8) == (16, 32)
  for bad in ("", "0,8", "16,8", "8,8", "a,b", "auto,8", "-8"):
    with pytest.raises(UserError) as excinfo:
      buckets.parse(bad)
    assert "\n" not in str(excinfo.value) and "--length_buckets" in str(excinfo.value)
  with pytest.raises(UserError, match="longer than --max_seq_len=64"):
    Config(length_buckets="16,128", max_seq_len=64).validate()
  with pytest.raises(UserError, match="--max_length_buckets"):
    Config(max_length_buckets=0).validate()
  Config(length_buckets="16,64", max_seq_len=64).validate()


def test_sequence_lengths_and_utilisation():
  mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 1], [0, 0, 0, 0]])
  np.testing.assert_array_equal(buckets.sequence_lengths(mask), [3, 1, 4, 0])
  lengths = np.array([2, 6, 10, 16])
  assert buckets.utilisation(lengths, (16,)) == pytest.approx(34 / 64)
  assert buckets.utilisation(lengths, (8, 16)) == pytest.approx(34 / 48)
  with pytest.raises(ValueError):
    buckets.assign(np.array([17]), (8, 16))


# ----------------------------------------------------------------------------------------------
# Training batches.
# ----------------------------------------------------------------------------------------------


def test_one_bucket_is_fixed_padding_batch_for_batch():
  data = split_of(skewed_lengths(203))
  for step in range(0, 40, 3):
    rows, length = pipeline.batch_rows(data, step, 16, 7, (SEQ,))
    np.testing.assert_array_equal(rows, pipeline.global_batch_indices(step, 203, 16, 7))
    assert length == SEQ
    np.testing.assert_array_equal(pipeline.batch_rows(data, step, 16, 7)[0], rows)


@pytest.mark.parametrize("n,batch", [(1000, 32), (203, 16), (64, 8)])
def test_an_epoch_sees_every_example_once_but_the_remainder(n, batch):
  lengths = skewed_lengths(n, seed=n)
  data = split_of(lengths)
  chosen = buckets.choose_buckets(lengths, 4, SEQ)
  assert len(chosen) > 1
  per_epoch = n // batch  # as many steps as fixed padding
  for epoch in range(2):
    seen = np.zeros(n, int)
    used = []
    for step in range(epoch * per_epoch, (epoch + 1) * per_epoch):
      rows, length = pipeline.batch_rows(data, step, batch, 1, chosen)
      assert length in chosen and lengths[rows].max() <= length  # one bucket holds the batch
      np.add.at(seen, rows, 1)
      used.append(length)
    assert seen.max() == 1 and (seen == 0).sum() == n % batch  # the remainder, < one batch
    if epoch == 0:
      first_order = used
  # Random bucket order, not a curriculum: neither sorted nor the same in the next epoch.
  assert used != sorted(used) and used != sorted(used, reverse=True)
  assert used != first_order


def test_steps_per_length_and_rows_drawn_follow_the_batches():
  lengths = skewed_lengths(300)
  data = split_of(lengths)
  chosen = buckets.choose_buckets(lengths, 4, SEQ)
  batches = [pipeline.batch_rows(data, s, 16, 2, chosen) for s in range(5, 47)]  # 2+ epochs
  counts = {}
  for _, length in batches:
    counts[length] = counts.get(length, 0) + 1
  assert pipeline.bucket_steps(data, 16, 2, 5, 47, chosen) == dict(sorted(counts.items()))
  np.testing.assert_array_equal(pipeline.rows_drawn(data, 16, 2, 5, 47, chosen),
                                np.unique(np.concatenate([r for r, _ in batches])))
  assert pipeline.bucket_steps(data, 16, 2, 9, 9, chosen) == {}


def test_train_batch_is_a_pure_function_cut_to_its_bucket():
  lengths = skewed_lengths(300)
  data = split_of(lengths)
  chosen = buckets.choose_buckets(lengths, 4, SEQ)
  logits = np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32)
  layout = pipeline.Layout(0, 1, 4)
  seen_lengths = set()
  for step in (0, 3, 17, 18, 40):
    batch = flat(pipeline.train_batch(data, step, 16, 5, layout, per_example={"t": logits},
                                      buckets=chosen))
    again = flat(pipeline.train_batch(data, step, 16, 5, layout, per_example={"t": logits},
                                      buckets=chosen))
    for key in batch:  # nothing but (seed, step): no iterator state
      np.testing.assert_array_equal(batch[key], again[key])
    rows, length = pipeline.batch_rows(data, step, 16, 5, chosen)
    seen_lengths.add(length)
    assert batch["input_ids"].shape == (16, length)
    np.testing.assert_array_equal(batch["input_ids"], data.input_ids[rows, :length])
    np.testing.assert_array_equal(batch["token_type_ids"], data.token_type_ids[rows, :length])
    assert batch["attention_mask"].sum() == lengths[rows].sum()  # no real token cut off
    np.testing.assert_array_equal(batch["t"], logits[rows])
    np.testing.assert_array_equal(batch["example_id"], np.arange(16))  # keys the augmentation
  assert len(seen_lengths) > 1


def test_processes_take_slices_of_one_global_batch_and_agree_on_its_length():
  lengths = skewed_lengths(203)
  data = split_of(lengths)
  chosen = buckets.choose_buckets(lengths, 4, SEQ)
  one = pipeline.Layout(0, 1, 8)
  two = [pipeline.Layout(i, 2, 4) for i in range(2)]
  for step in range(12):
    whole = flat(pipeline.train_batch(data, step, 16, 0, one, buckets=chosen))
    parts = [flat(pipeline.train_batch(data, step, 16, 0, layout, buckets=chosen))
             for layout in two]
    for key in whole:
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])


def _longer_copies(texts, step, example_ids):
  """A host augmentation whose copies of example 3 are much longer than their originals."""
  del step
  copies = [tuple(t[0] + (" word" * 20 if i == 3 else "") for t in [text]) for i, text in
            zip(example_ids, texts)]
  return [copies], np.full((len(texts), 1), 0.5, np.float32)


class _WordTokenizer:
  """Enough of `tokenizers.Tokenizer` for `encode_texts`: one id per word, [CLS] .. [SEP]."""

  def enable_truncation(self, length, strategy):
    del strategy
    self.length = length

  def enable_padding(self, length):
    del length

  def no_padding(self):
    pass

  def no_truncation(self):
    pass

  def encode_batch(self, inputs):
    out = []
    for text in inputs:
      ids = ([2] + [10 + len(w) for w in text.split()] + [3])[:self.length]
      pad = self.length - len(ids)
      out.append(type("E", (), {"ids": ids + [0] * pad, "attention_mask": [1] * len(ids) + [0] * pad,
                                "type_ids": [0] * self.length, "overflowing": []}))
    return out


def test_a_longer_host_copy_moves_the_whole_global_batch_to_a_longer_bucket():
  data = split_of(np.full(64, 6))  # every original fits the first bucket
  chosen = (8, 16, 32)
  layouts = [pipeline.Layout(i, 2, 2) for i in range(2)]
  parts = [flat(pipeline.train_batch(data, 0, 8, 0, layout, _longer_copies, _WordTokenizer(), SEQ,
                                     buckets=chosen)) for layout in layouts]
  for part in parts:  # both processes, although only process 0 holds example 3
    assert part["input_ids"].shape[-1] == 32 and part["aug_input_ids"].shape[-1] == 32
    assert part["aug_input_ids"].shape[:2] == (4, 1)
  assert parts[0]["aug_attention_mask"][3, 0].sum() == 24  # [CLS], 2 + 20 words, [SEP]: not cut
  np.testing.assert_array_equal(parts[1]["aug_shift"], np.full((4, 1), 0.5))


def test_with_length_cuts_or_pads_token_arrays_only():
  batch = {"input_ids": np.ones((2, 3, 8), np.int32), "label": np.zeros((2, 3), np.int32),
           "aug_input_ids": np.ones((2, 3, 1, 8), np.int32)}
  longer = pipeline.with_length(batch, 16)
  assert longer["input_ids"].shape == (2, 3, 16) and longer["input_ids"][..., 8:].sum() == 0
  assert longer["aug_input_ids"].shape == (2, 3, 1, 16) and longer["label"].shape == (2, 3)
  assert pipeline.with_length(batch, 4)["input_ids"].shape == (2, 3, 4)


# ----------------------------------------------------------------------------------------------
# Evaluation.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chosen", [None, (8, 16), (8, 16, 24, 32)])
def test_eval_sees_every_example_once_and_results_go_back_in_order(chosen):
  lengths = skewed_lengths(77, seed=3)
  lengths[5] = SEQ  # longer than every listed bucket: eval adds one
  data = split_of(lengths)
  one = pipeline.Layout(0, 1, 8)
  two = [pipeline.Layout(i, 2, 4) for i in range(2)]
  out = np.zeros(77)
  seen = np.zeros(77, int)
  shapes = set()
  for whole, *parts in zip(pipeline.eval_batches(data, 16, one, chosen),
                           *[pipeline.eval_batches(data, 16, layout, chosen) for layout in two]):
    whole, parts = flat(whole), [flat(p) for p in parts]
    for key in whole:
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])
    length = whole["input_ids"].shape[1]
    shapes.add(length)
    real = whole["index"] >= 0
    np.testing.assert_array_equal(whole["weight"], real.astype(np.float32))
    np.testing.assert_array_equal(whole["input_ids"][real], data.input_ids[whole["index"][real], :length])
    assert whole["attention_mask"][real].sum() == lengths[whole["index"][real]].sum()
    # A stand-in for the model: any function of the row, put back by index as predict() does.
    out[whole["index"][real]] = (whole["input_ids"][real] * np.arange(1, length + 1)).sum(1)
    np.add.at(seen, whole["index"][real], 1)
  np.testing.assert_array_equal(seen, 1)
  np.testing.assert_array_equal(out, (data.input_ids * np.arange(1, SEQ + 1)).sum(1))
  assert shapes == ({SEQ} if chosen is None else set(chosen) | {SEQ})
  utilisation = pipeline.eval_token_utilisation([data], 16, chosen)
  batches = list(pipeline.eval_batches(data, 16, one, chosen))
  processed = sum(b["input_ids"].size for b in batches)
  assert utilisation == pytest.approx(lengths.sum() / processed)


def test_a_distillation_that_trains_its_teacher_counts_the_teachers_passes(capsys):
  """The teacher trained inside a distill run uses the run's buckets, so a short student phase
  after a long teacher phase gets the buckets the whole run pays for; a given --teacher_ckpt
  (nothing trained here) and resumes (flags alone decide) do not change that."""
  from augpro_jax import context  # pylint: disable=import-outside-toplevel
  data, layout = split_of(skewed_lengths(2000)), pipeline.Layout(0, 1, 1)
  base = Config(mode="distill", max_seq_len=SEQ, batch_size=32, num_epochs=0.25)
  short = context.choose_length_buckets(base.replace(teacher_ckpt="t"), data, layout, 32)
  both = context.choose_length_buckets(base.replace(teacher_num_epochs=3.0), data, layout, 32)
  long = context.choose_length_buckets(base.replace(teacher_ckpt="t", num_epochs=3.25), data,
                                       layout, 32)
  assert both == long and len(both) > len(short), (short, both)
