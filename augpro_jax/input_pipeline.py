"""Input pipeline: tokenize once, then build every batch as a pure function of the step.

Because batch `step` is computed from (seed, step) alone, resuming from a checkpoint needs no
iterator state: the pipeline position *is* the step. Each process takes its slice of the global
batch (multi-host), and each local device its slice of that.

Batches are dicts of numpy arrays with a leading [local_devices, per_device, ...] layout, ready for
`jax.pmap`. `example_id` is the position in the global batch; the train step folds it into the
augmentation PRNG key so an example's augmentation does not depend on the device layout.
"""

from __future__ import annotations

import dataclasses
import pathlib
import queue
import threading
from typing import Any, Callable, Iterator, Optional

import numpy as np

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


def encode_texts(tokenizer, texts: list[tuple[str, ...]], max_seq_len: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
  """Batched tokenization, padded/truncated to max_seq_len. Returns ids, mask, types, #truncated."""
  tokenizer.enable_truncation(max_seq_len, strategy="longest_first")
  tokenizer.enable_padding(length=max_seq_len)
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


def vocab_masks(tokenizer, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(is_special [V], is_candidate [V]) bool.

  Special tokens ([PAD], [CLS], [SEP], [MASK], [UNK]...) are never augmented. Candidates are the
  tokens a projection may produce: not special, not `[unusedN]`, and inside the tokenizer's vocab.
  """
  is_special = np.zeros(vocab_size, bool)
  is_candidate = np.zeros(vocab_size, bool)
  for token, index in tokenizer.get_vocab().items():
    if index >= vocab_size:
      raise UserError(f"tokenizer has token id {index} but the model's vocabulary has {vocab_size}"
                      " rows: teacher and tokenizer vocabularies differ")
    special = token.startswith("[") and token.endswith("]")
    is_special[index] = special and not token.startswith("[unused")
    is_candidate[index] = not special
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
  """(is_continuation [V], is_non_ascii [V]) bool: word-piece continuations (`##...`) and tokens
  with a character outside ASCII, for the augmentations' profile (`token_profile`)."""
  is_continuation = np.zeros(vocab_size, bool)
  is_non_ascii = np.zeros(vocab_size, bool)
  for token, index in tokenizer.get_vocab().items():
    if index < vocab_size:
      is_continuation[index] = token.startswith("##")
      is_non_ascii[index] = not token.isascii()
  return is_continuation, is_non_ascii


# ----------------------------------------------------------------------------------------------
# Training batches.
# ----------------------------------------------------------------------------------------------


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
  if num_examples < global_batch:
    raise UserError(f"only {num_examples} training examples for a global --batch_size of "
                    f"{global_batch}: lower --batch_size or use more data")
  return num_examples // global_batch  # the last partial batch of an epoch is dropped


def global_batch_indices(step: int, num_examples: int, global_batch: int, seed: int) -> np.ndarray:
  """Example indices of global batch `step` [global_batch]: a fresh permutation every epoch."""
  per_epoch = steps_per_epoch(num_examples, global_batch)
  epoch, offset = divmod(step, per_epoch)
  order = np.random.default_rng([seed, epoch]).permutation(num_examples)
  return order[offset * global_batch:(offset + 1) * global_batch]


def rows_drawn(num_examples: int, global_batch: int, seed: int, start_step: int,
               stop_step: int) -> np.ndarray:
  """Sorted indices of the examples that global batches [start_step, stop_step) draw."""
  drawn = [global_batch_indices(s, num_examples, global_batch, seed)
           for s in range(start_step, stop_step)]
  return np.unique(np.concatenate(drawn)) if drawn else np.zeros((0,), np.int64)


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
                max_seq_len: int = 0, per_example: Optional[dict[str, np.ndarray]] = None) -> Batch:
  """This process's part of global batch `step`, shaped [local_devices, per_device, ...].

  per_example: arrays [N, ...] over the whole split (e.g. cached teacher logits), gathered by row.

  host_augment(texts, step, example_ids) -> (copies of augmented texts, shift [n, copies]) runs
  on the host (synonym replacement); its texts are tokenized here as `aug_*` arrays [.., copies, S].
  """
  index = global_batch_indices(step, len(data), global_batch, seed)
  local = layout.local_slice(global_batch)
  rows = index[local]
  example_ids = np.arange(global_batch, dtype=np.int32)[local]
  batch = {
      "input_ids": data.input_ids[rows],
      "attention_mask": data.attention_mask[rows],
      "token_type_ids": data.token_type_ids[rows],
      "label": data.labels[rows],
      "example_id": example_ids,
  }
  for key, values in (per_example or {}).items():
    batch[key] = values[rows]
  if host_augment is not None:
    texts = [data.texts[i] for i in rows]
    copies, shift = host_augment(texts, step, example_ids)
    encoded = [encode_texts(tokenizer, copy, max_seq_len)[:3] for copy in copies]
    for key, position in (("aug_input_ids", 0), ("aug_attention_mask", 1), ("aug_token_type_ids", 2)):
      batch[key] = np.stack([e[position] for e in encoded], axis=1)  # [n, copies, S]
    batch["aug_shift"] = shift.astype(np.float32)  # [n, copies]
  return {key: _shard(value, layout.local_devices) for key, value in batch.items()}


def eval_batches(data: Tokenized, global_batch: int, layout: Layout) -> Iterator[Batch]:
  """Every example exactly once: the last batch is padded, `weight` marks real examples.

  Each process gets its slice of every global batch; `index` says which example a row is
  (-1 for padding), so the caller can gather predictions from all processes in order.
  """
  n = len(data)
  for start in range(0, n, global_batch):
    index = np.arange(start, start + global_batch)
    weight = (index < n).astype(np.float32)
    index = np.where(index < n, index, -1)
    local = index[layout.local_slice(global_batch)]
    safe = np.maximum(local, 0)
    batch = {
        "input_ids": data.input_ids[safe],
        "attention_mask": data.attention_mask[safe],
        "token_type_ids": data.token_type_ids[safe],
        "weight": weight[layout.local_slice(global_batch)],
        "index": local.astype(np.int32),
    }
    yield {key: _shard(value, layout.local_devices) for key, value in batch.items()}


def prefetch(make_item: Callable[[int], Any], start: int, stop: int, size: int = 2) -> Iterator[Any]:
  """Yield make_item(i) for i in [start, stop), computed `size` ahead on a background thread.

  Host-side work (slicing, synonym replacement, tokenization) overlaps the device step; errors
  raised by make_item are re-raised in the consumer.
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
