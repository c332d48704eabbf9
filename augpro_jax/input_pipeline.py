"""Input pipeline: tokenize once, then build every batch as a pure function of the step.

Because batch `step` is computed from (seed, step) alone, resuming from a checkpoint needs no
iterator state: the pipeline position *is* the step. Each process takes its slice of the global
batch (multi-host), and each local device its slice of that.

With length buckets (`augpro_jax.buckets`) a global batch holds examples of one bucket and is cut
to that bucket's length; every process computes the same plan, so all agree on the length. One
bucket of `max_seq_len` is fixed padding, batch for batch.

Batches are dicts of numpy arrays with a leading [local_devices, per_device, ...] layout: this
process's rows, which `sharding.put_batch` makes one global array on the mesh. `example_id` is the position in the global batch; the train step folds it into the
augmentation PRNG key so an example's augmentation does not depend on the device layout.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import queue
import threading
from typing import Any, Callable, Iterator, Optional

import numpy as np

from augpro_jax import buckets as buckets_lib
from augpro_jax import token_profile
from augpro_jax.errors import UserError

Batch = dict[str, np.ndarray]


@dataclasses.dataclass
class Tokenized:
  """A tokenized split. Arrays are [N, max_seq_len] int32; labels [N] int32 or float32."""

  input_ids: np.ndarray
  attention_mask: np.ndarray
  token_type_ids: np.ndarray
  labels: np.ndarray
  num_truncated: int
  texts: list[tuple[str, ...]]

  def __len__(self) -> int:
    return len(self.labels)

  @functools.cached_property
  def lengths(self) -> np.ndarray:
    """[N] tokens up to and including each example's last real one."""
    return buckets_lib.sequence_lengths(self.attention_mask)

  @property
  def max_seq_len(self) -> int:
    return self.input_ids.shape[1]

  def take(self, rows: np.ndarray) -> "Tokenized":
    """The examples at `rows`, in that order."""
    return dataclasses.replace(
        self, input_ids=self.input_ids[rows], attention_mask=self.attention_mask[rows],
        token_type_ids=self.token_type_ids[rows], labels=self.labels[rows],
        texts=[self.texts[i] for i in rows])


def load_tokenizer(model_dir: str | pathlib.Path):
  """The teacher's fast Hugging Face tokenizer (`tokenizer.json`), padding/truncation off."""
  import tokenizers  # pylint: disable=g-import-not-at-top

  path = pathlib.Path(model_dir) / "tokenizer.json"
  if not path.is_file():
    raise UserError(f"no tokenizer.json in {model_dir}: the teacher directory needs its tokenizer")
  try:
    tokenizer = tokenizers.Tokenizer.from_file(str(path))
  except Exception as exc:  # tokenizers raises plain Exception subclasses on bad JSON
    raise UserError(f"cannot read tokenizer {path}: {str(exc).splitlines()[0]}") from None
  if tokenizer.get_vocab_size() == 0:
    raise UserError(f"tokenizer {path} has an empty vocabulary: not a trained tokenizer")
  tokenizer.no_padding()
  tokenizer.no_truncation()
  return tokenizer


def check_same_vocabulary(tokenizer, tokenizer_dir: str | pathlib.Path,
                          teacher_dir: str | pathlib.Path) -> None:
  """A student starting from --teacher's weights learns from a teacher with another tokenizer:
  the two must share one vocabulary, or its embedding rows would mean other tokens."""
  if tokenizer.get_vocab() != load_tokenizer(teacher_dir).get_vocab():
    raise UserError(f"the teacher's tokenizer ({tokenizer_dir}) and --teacher's ({teacher_dir}) "
                    "have different vocabularies; the student starts from --teacher, so pass "
                    f"--teacher={tokenizer_dir}")


def check_vocab_size(tokenizer, vocab_size: int, model: object) -> None:
  """Every token id must have a row in the model's embedding table: a larger id would read past
  it. A table may have more rows than the tokenizer has tokens (DeBERTa-v3: 128,100 rows for
  128,000 tokens); no text reaches those rows, and no projection returns them (`vocab_masks`)."""
  if tokenizer.get_vocab_size() > vocab_size:
    raise UserError(f"the tokenizer has {tokenizer.get_vocab_size()} tokens but the model "
                    f"{model} has an embedding table of {vocab_size} rows: they must be one "
                    "vocabulary (use the model's own tokenizer.json)")


def pad_token(tokenizer) -> dict[str, Any]:
  """The padding token of a family's vocabulary: BERT's [PAD], RoBERTa's <pad> (id 1)."""
  vocab = getattr(tokenizer, "get_vocab", dict)()
  for token in ("[PAD]", "<pad>"):
    if token in vocab:
      return {"pad_id": vocab[token], "pad_token": token}
  return {"pad_id": 0, "pad_token": "[PAD]"}


def encode_texts(tokenizer, texts: list[tuple[str, ...]], max_seq_len: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
  """Batched tokenization, padded/truncated to max_seq_len. Returns ids, mask, types, #truncated."""
  tokenizer.enable_truncation(max_seq_len, strategy="longest_first")
  pad = pad_token(tokenizer)  # tokenizers pads with id 0, "[PAD]" unless told otherwise
  tokenizer.enable_padding(length=max_seq_len, **({} if pad["pad_id"] == 0 else pad))
  inputs = [t[0] if len(t) == 1 else (t[0], t[1]) for t in texts]
  encodings = tokenizer.encode_batch(inputs)
  tokenizer.no_padding()
  tokenizer.no_truncation()
  ids = np.asarray([e.ids for e in encodings], np.int32).reshape(len(texts), max_seq_len)
  mask = np.asarray([e.attention_mask for e in encodings], np.int32).reshape(ids.shape)
  types = np.asarray([e.type_ids for e in encodings], np.int32).reshape(ids.shape)
  truncated = sum(1 for e in encodings if e.overflowing)
  return ids, mask, types, truncated


def tokenize(examples, tokenizer, max_seq_len: int) -> Tokenized:
  """Tokenize `data.Examples` (texts + labels)."""
  ids, mask, types, truncated = encode_texts(tokenizer, examples.texts, max_seq_len)
  return Tokenized(ids, mask, types, np.asarray(examples.labels), truncated, list(examples.texts))


def _special_ids(tokenizer) -> set[int]:
  """Ids of the tokens the tokenizer itself marks special (RoBERTa's <s>, </s>, <pad>, ...)."""
  added = getattr(tokenizer, "get_added_tokens_decoder", dict)()
  return {index for index, token in added.items() if token.special}


def vocab_masks(tokenizer, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(is_special [V], is_candidate [V]) bool.

  Special tokens ([PAD], [CLS], [SEP], [MASK], [UNK]..., RoBERTa's <s>, </s>, <pad>..., any token
  the tokenizer marks special) are never augmented. Candidates are the tokens a projection may
  produce: not special, not `[unusedN]`, and inside the tokenizer's vocab.
  """
  is_special = np.zeros(vocab_size, bool)
  is_candidate = np.zeros(vocab_size, bool)
  marked = _special_ids(tokenizer)
  for token, index in tokenizer.get_vocab().items():
    if index >= vocab_size:
      raise UserError(f"tokenizer has token id {index} but the model's vocabulary has {vocab_size}"
                      " rows: teacher and tokenizer vocabularies differ")
    bracketed = token.startswith("[") and token.endswith("]")
    is_special[index] = (bracketed and not token.startswith("[unused")) or index in marked
    is_candidate[index] = not (bracketed or index in marked)
  return is_special, is_candidate


def occurring_tokens(data: Tokenized, vocab_size: int) -> np.ndarray:
  """[V] bool: the ids that occur in `data`'s real tokens (padding not counted)."""
  present = np.zeros(vocab_size, bool)
  present[np.unique(data.input_ids[data.attention_mask > 0])] = True
  return present


def task_candidates(is_candidate: np.ndarray, is_special: np.ndarray, train: Tokenized,
                    minimum: int = 2) -> np.ndarray:
  """--projection_vocab=task: the candidates [V] that occur in the training split, specials out.

  A projection that excludes the original token needs a second candidate, and knn needs k + 1:
  fewer than `minimum` is a `UserError` (the search would otherwise return a masked id).
  """
  mask = is_candidate & ~is_special & occurring_tokens(train, len(is_candidate))
  if mask.sum() < minimum:
    raise UserError(f"--projection_vocab=task: the training examples hold {mask.sum()} distinct "
                    f"non-special tokens, fewer than the {minimum} the augmentation needs; use "
                    "--projection_vocab=full or more training data")
  return mask


def token_flags(tokenizer, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(is_continuation [V], is_non_ascii [V]) bool of `tokenizer`'s vocabulary, for the
  augmentations' profile: see `token_profile.vocabulary_flags`."""
  return token_profile.vocabulary_flags(tokenizer, vocab_size, _special_ids(tokenizer))


# ----------------------------------------------------------------------------------------------
# Training batches.
# ----------------------------------------------------------------------------------------------


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
  if num_examples < global_batch:
    raise UserError(f"only {num_examples} training examples for a global --batch_size of "
                    f"{global_batch}: lower --batch_size or use more data")
  return num_examples // global_batch  # the last partial batch of an epoch is dropped


def global_batch_indices(step: int, num_examples: int, global_batch: int, seed: int) -> np.ndarray:
  """Example indices of global batch `step` [global_batch] under fixed padding: a fresh
  permutation every epoch."""
  per_epoch = steps_per_epoch(num_examples, global_batch)
  epoch, offset = divmod(step, per_epoch)
  order = np.random.default_rng([seed, epoch]).permutation(num_examples)
  return order[offset * global_batch:(offset + 1) * global_batch]


def _buckets_of(data: Tokenized, buckets: Optional[buckets_lib.Buckets]) -> buckets_lib.Buckets:
  return tuple(buckets) if buckets else (data.max_seq_len,)


def _epoch(data: Tokenized, global_batch: int, seed: int, buckets: buckets_lib.Buckets,
           epoch: int) -> tuple[np.ndarray, np.ndarray]:
  return buckets_lib.epoch_batches(buckets_lib.assign(data.lengths, buckets), len(buckets),
                                   global_batch, seed, epoch)


def batch_rows(data: Tokenized, step: int, global_batch: int, seed: int,
               buckets: Optional[buckets_lib.Buckets] = None) -> tuple[np.ndarray, int]:
  """(example indices [global_batch], sequence length) of global batch `step`.

  buckets None: fixed padding (one bucket of the split's max_seq_len).
  """
  buckets = _buckets_of(data, buckets)
  epoch, offset = divmod(step, steps_per_epoch(len(data), global_batch))
  rows, which = _epoch(data, global_batch, seed, buckets, epoch)
  return rows[offset], buckets[which[offset]]


def rows_drawn(data: Tokenized, global_batch: int, seed: int, start_step: int, stop_step: int,
               buckets: Optional[buckets_lib.Buckets] = None) -> np.ndarray:
  """Sorted indices of the examples that global batches [start_step, stop_step) draw."""
  if stop_step <= start_step:
    return np.zeros((0,), np.int64)
  per_epoch = steps_per_epoch(len(data), global_batch)
  buckets = _buckets_of(data, buckets)
  drawn = []
  for epoch in range(start_step // per_epoch, (stop_step - 1) // per_epoch + 1):
    rows, _ = _epoch(data, global_batch, seed, buckets, epoch)
    first, stop = max(start_step - epoch * per_epoch, 0), min(stop_step - epoch * per_epoch, per_epoch)
    drawn.append(rows[first:stop].reshape(-1))
  return np.unique(np.concatenate(drawn))


def bucket_steps(data: Tokenized, global_batch: int, seed: int, start_step: int, stop_step: int,
                 buckets: Optional[buckets_lib.Buckets] = None) -> dict[int, int]:
  """{sequence length: how many of global batches [start_step, stop_step) have it}."""
  per_epoch = steps_per_epoch(len(data), global_batch)
  buckets = _buckets_of(data, buckets)
  counts: dict[int, int] = {}
  for epoch in range(start_step // per_epoch, max(stop_step - 1, start_step) // per_epoch + 1):
    _, which = _epoch(data, global_batch, seed, buckets, epoch)
    first, stop = max(start_step - epoch * per_epoch, 0), min(stop_step - epoch * per_epoch, per_epoch)
    for b, count in zip(*np.unique(which[first:stop], return_counts=True)):
      counts[buckets[b]] = counts.get(buckets[b], 0) + int(count)
  return dict(sorted(counts.items()))


@dataclasses.dataclass(frozen=True)
class Layout:
  """Who this process is and how many devices it feeds."""

  process_index: int = 0
  process_count: int = 1
  local_devices: int = 1

  def local_slice(self, global_batch: int) -> slice:
    per_process = global_batch // self.process_count
    return slice(self.process_index * per_process, (self.process_index + 1) * per_process)


def check_batch_divisible(global_batch: int, layout: Layout, name: str = "batch_size") -> None:
  devices = layout.local_devices * layout.process_count
  if global_batch % devices:
    raise UserError(f"--{name}={global_batch} is not divisible by the {devices} devices")


def _shard(array: np.ndarray, local_devices: int) -> np.ndarray:
  return array.reshape(local_devices, array.shape[0] // local_devices, *array.shape[1:])


HostAugment = Callable[[list[tuple[str, ...]], int, np.ndarray], tuple[list[list[tuple[str, ...]]], np.ndarray]]


def train_batch(data: Tokenized, step: int, global_batch: int, seed: int, layout: Layout,
                host_augment: Optional[HostAugment] = None, tokenizer=None,
                max_seq_len: int = 0, per_example: Optional[dict[str, np.ndarray]] = None,
                buckets: Optional[buckets_lib.Buckets] = None) -> Batch:
  """This process's part of global batch `step`, shaped [local_devices, per_device, ...].

  Token arrays are [.., length]: the batch's bucket length (`batch_rows`), or `max_seq_len` of the
  split without buckets.

  per_example: arrays [N, ...] over the whole split (e.g. cached teacher logits), gathered by row.

  host_augment(texts, step, example_ids) -> (copies of augmented texts, shift [n, copies]) runs
  on the host (synonym replacement); its texts are tokenized here as `aug_*` arrays [.., copies, S].
  A copy may be longer than its original: the batch then takes the next bucket that holds every
  copy of the global batch, which is why every process augments the whole global batch (the
  copies are seeded by example, so each process's own rows are the same either way).
  """
  index, length = batch_rows(data, step, global_batch, seed, buckets)
  local = layout.local_slice(global_batch)
  rows = index[local]
  example_ids = np.arange(global_batch, dtype=np.int32)
  batch = {
      "input_ids": data.input_ids[rows],
      "attention_mask": data.attention_mask[rows],
      "token_type_ids": data.token_type_ids[rows],
      "label": data.labels[rows],
      "example_id": example_ids[local],
  }
  for key, values in (per_example or {}).items():
    batch[key] = values[rows]
  if host_augment is not None:
    texts = [data.texts[i] for i in index]
    copies, shift = host_augment(texts, step, example_ids)
    encoded = [encode_texts(tokenizer, copy, max_seq_len or data.max_seq_len)[:3] for copy in copies]
    longest = max(int(buckets_lib.sequence_lengths(e[1]).max()) for e in encoded)
    length = _length_for(max(length, longest), buckets, data.max_seq_len)
    for key, position in (("aug_input_ids", 0), ("aug_attention_mask", 1), ("aug_token_type_ids", 2)):
      batch[key] = np.stack([e[position][local] for e in encoded], axis=1)[..., :length]  # [n, copies, L]
    batch["aug_shift"] = shift[local].astype(np.float32)  # [n, copies]
  for key in ("input_ids", "attention_mask", "token_type_ids"):
    batch[key] = batch[key][:, :length]
  return {key: _shard(value, layout.local_devices) for key, value in batch.items()}


def _length_for(tokens: int, buckets: Optional[buckets_lib.Buckets], max_seq_len: int) -> int:
  """The shortest bucket that holds `tokens` (past the last bucket: rounded up to a multiple of 8,
  at most max_seq_len)."""
  for length in buckets or (max_seq_len,):
    if length >= tokens:
      return length
  return min(max_seq_len, -(-tokens // buckets_lib.MULTIPLE) * buckets_lib.MULTIPLE)


def eval_batches(data: Tokenized, global_batch: int, layout: Layout,
                 buckets: Optional[buckets_lib.Buckets] = None) -> Iterator[Batch]:
  """Every example exactly once: each bucket's last batch is padded, `weight` marks real examples.

  Each process gets its slice of every global batch; `index` says which example a row is
  (-1 for padding), so the caller can gather predictions from all processes in order. Batches come
  bucket by bucket (token arrays cut to the bucket's length); examples longer than the last bucket
  get one more (`buckets.extend_for`). Padding rows repeat the batch's first example.
  """
  buckets = buckets_lib.extend_for(_buckets_of(data, buckets), data.lengths, data.max_seq_len)
  global_batch = eval_batch_cap(global_batch, len(data), layout)
  for b, index in buckets_lib.eval_plan(buckets_lib.assign(data.lengths, buckets), len(buckets),
                                        global_batch):
    weight = (index >= 0).astype(np.float32)
    local = index[layout.local_slice(global_batch)]
    safe = np.where(local >= 0, local, index[0])
    length = buckets[b]
    batch = {
        "input_ids": data.input_ids[safe, :length],
        "attention_mask": data.attention_mask[safe, :length],
        "token_type_ids": data.token_type_ids[safe, :length],
        "weight": weight[layout.local_slice(global_batch)],
        "index": local.astype(np.int32),
    }
    yield {key: _shard(value, layout.local_devices) for key, value in batch.items()}


def eval_batch_cap(global_batch: int, examples: int, layout: Layout) -> int:
  """`global_batch`, or less for a split smaller than it: the fewest rows (a multiple of the
  device count) that hold every example, so 3 examples are not padded to 128 rows."""
  devices = layout.local_devices * layout.process_count
  return min(global_batch, max(1, -(-examples // devices)) * devices)


def eval_token_utilisation(splits: list[Tokenized], global_batch: int,
                           buckets: Optional[buckets_lib.Buckets] = None,
                           layout: Layout = Layout()) -> Optional[float]:
  """Real tokens / tokens processed by `eval_batches` over `splits` (padding rows count as
  processed); None without examples."""
  real = processed = 0
  for data in splits:
    lengths = buckets_lib.extend_for(_buckets_of(data, buckets), data.lengths, data.max_seq_len)
    batch = eval_batch_cap(global_batch, len(data), layout)
    plan = buckets_lib.eval_plan(buckets_lib.assign(data.lengths, lengths), len(lengths), batch)
    real += int(data.lengths.sum())
    processed += sum(lengths[b] * batch for b, _ in plan)
  return real / processed if processed else None


TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids", "aug_input_ids",
              "aug_attention_mask", "aug_token_type_ids")  # arrays whose last axis is the sequence


def with_length(batch: Batch, length: int) -> Batch:
  """`batch` with its token arrays cut or zero-padded to `length` (the shape of another bucket's
  batch, e.g. to compile the step for it before the loop)."""
  out = dict(batch)
  for key in TOKEN_KEYS:
    if key in out:
      values = out[key][..., :length]
      pad = [(0, 0)] * (values.ndim - 1) + [(0, length - values.shape[-1])]
      out[key] = np.pad(values, pad)
  return out


JOIN_SECONDS = 120.0  # how long a closed `prefetch` waits for its thread's item in hand


def prefetch(make_item: Callable[[int], Any], start: int, stop: int, size: int = 2) -> Iterator[Any]:
  """Yield make_item(i) for i in [start, stop), computed `size` ahead on a background thread.

  Host-side work (slicing, synonym replacement, tokenization) overlaps the device step; errors
  raised by make_item are re-raised in the consumer. Close the generator (`contextlib.closing`)
  when leaving early: it stops and joins the thread.
  """
  items: queue.Queue = queue.Queue(maxsize=size)
  stop_flag = threading.Event()
  sentinel = object()

  def produce():
    try:
      for i in range(start, stop):
        if stop_flag.is_set():
          return
        items.put((i, make_item(i)))
      items.put((None, sentinel))
    except BaseException as exc:  # pylint: disable=broad-except
      items.put((None, exc))

  thread = threading.Thread(target=produce, daemon=True)
  thread.start()
  try:
    while True:
      _, item = items.get()
      if item is sentinel:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop_flag.set()
    while not items.empty():  # unblock the producer so the thread can exit
      items.get_nowait()
    # It finishes the item in hand, then sees the flag. A thread left inside JAX (placing a batch)
    # when the interpreter exits after an error aborts the process.
    thread.join(timeout=JOIN_SECONDS)
