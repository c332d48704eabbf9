"""What every mode shares, set up once per run: the task, data, tokenizer, device layout and mesh,
the augmentations' candidate tokens and the length buckets (`Context`, `build_context`)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import sys
from typing import Any, Optional

import jax
import numpy as np

from augpro_jax import augmentations
from augpro_jax import buckets as buckets_lib
from augpro_jax import checkpoints
from augpro_jax import data as data_lib
from augpro_jax import distributed
from augpro_jax import hf_io
from augpro_jax import input_pipeline as pipeline
from augpro_jax import model as model_lib
from augpro_jax import sharding
from augpro_jax import tasks as tasks_lib
from augpro_jax.config import Config
from augpro_jax.errors import UserError


@dataclasses.dataclass
class Context:
  """What every mode shares: the task, data, tokenizer, device layout."""

  cfg: Config
  task: tasks_lib.TaskSpec
  tokenizer: Any
  teacher_dir: pathlib.Path  # the pretrained backbone (--teacher)
  tokenizer_dir: pathlib.Path  # where `tokenizer` comes from; exported with every model
  train: Optional[pipeline.Tokenized]
  dev: dict[str, pipeline.Tokenized]
  layout: pipeline.Layout
  mesh: jax.sharding.Mesh  # every device of every process, [data, fsdp] (`sharding.run_mesh`)
  is_special: np.ndarray
  is_candidate: np.ndarray  # [V] what a projection may return (--projection_vocab)
  token_flags: Optional[tuple[np.ndarray, np.ndarray]] = None  # (is_continuation, is_non_ascii)
  buckets: buckets_lib.Buckets = ()  # sequence lengths of batches (`choose_length_buckets`)


# Unset --teacher_num_epochs and --num_epochs: 3 epochs (transformers' Trainer default), but never
# fewer steps than these: 3 epochs of a few hundred examples are a few dozen steps, after which
# both models still predict near chance; the student, which learns from new augmented copies on
# every pass, gains from more passes than the teacher (experiments/README.md, "Epochs on small
# training sets").
DEFAULT_EPOCHS = 3.0
MIN_DEFAULT_STEPS = {"teacher_num_epochs": 150, "num_epochs": 450}


def resolve_epochs(cfg: Config, num_train_examples: int) -> Config:
  """`cfg` with each unset epoch count made concrete for a training set of this size: the run
  records, compares on resume and prints the value it trains with."""
  steps_per_epoch = pipeline.steps_per_epoch(num_train_examples, cfg.batch_size)
  return cfg.replace(**{name: max(DEFAULT_EPOCHS, steps / steps_per_epoch)
                        for name, steps in MIN_DEFAULT_STEPS.items() if getattr(cfg, name) is None})


def local_layout() -> pipeline.Layout:
  return pipeline.Layout(jax.process_index(), jax.process_count(), jax.local_device_count())


def ensure_workdir(path: str | pathlib.Path) -> pathlib.Path:
  """Create the workdir and check that we can write there, before any work is done."""
  path = pathlib.Path(path)
  if path.exists() and not path.is_dir():
    raise UserError(f"workdir {path} is a file, not a directory; give a directory (it is "
                    "created if missing)")
  try:
    path.mkdir(parents=True, exist_ok=True)
    # Hosts of a pod share the workdir and, in containers, often the pid: name the process too.
    probe = path / f".write-probe-{jax.process_index()}-{os.getpid()}"
    probe.write_text("ok")
    probe.unlink()
  except OSError as exc:
    raise UserError(f"workdir {path} is not writable: {exc.strerror or exc}") from None
  return path


def build_context(cfg: Config, *, need_train: bool = True, need_dev: bool = True,
                  task: Optional[tasks_lib.TaskSpec] = None,
                  tokenizer_dir: Optional[pathlib.Path] = None) -> Context:
  """Task, tokenized data and device layout. The tokenizer is `tokenizer_dir`'s, else that of a
  --teacher_ckpt that has its own (distill), else --teacher's."""
  task = task or data_lib.resolve_task(cfg)
  teacher_dir = hf_io.resolve_pretrained_dir(cfg.teacher)
  if tokenizer_dir is None and cfg.mode == "distill" and cfg.teacher_ckpt:
    tokenizer_dir = checkpoints.find_model(cfg.teacher_ckpt).tokenizer_dir
  tokenizer_dir = tokenizer_dir or teacher_dir
  tokenizer = pipeline.load_tokenizer(tokenizer_dir)
  if need_train and tokenizer_dir != teacher_dir:
    # The student starts from --teacher's embedding rows: they must mean the teacher's tokens.
    pipeline.check_same_vocabulary(tokenizer, tokenizer_dir, teacher_dir)
  layout = local_layout()
  mesh = sharding.run_mesh(cfg.mesh_data, cfg.mesh_fsdp)
  pipeline.check_batch_divisible(cfg.batch_size, layout)
  pipeline.check_batch_divisible(cfg.eval_batch_size, layout, "eval_batch_size")
  train = None
  if need_train:
    train = pipeline.tokenize(data_lib.load_split(cfg, task, "train"), tokenizer, cfg.max_seq_len)
    cfg = resolve_epochs(cfg, len(train))
  dev = {split: pipeline.tokenize(data_lib.load_split(cfg, task, split), tokenizer, cfg.max_seq_len)
         for split in (task.dev_splits if need_dev else ())}
  vocab_size = tokenizer.get_vocab_size()
  is_special, is_candidate = pipeline.vocab_masks(tokenizer, vocab_size)
  if cfg.projection_vocab == "task" and train is not None:
    is_candidate = pipeline.task_candidates(is_candidate, is_special, train,
                                            augmentations.get(cfg.aug).candidates_needed(cfg))
  if need_train and distributed.is_main_process():
    for text in data_lib.label_warnings(cfg, task):
      print(f"warning: {text}", file=sys.stderr)
  for name, split in ([("train", train)] if train else []) + list(dev.items()):
    if split.num_truncated and distributed.is_main_process():
      # Long text is not an error: it is truncated, counted, and reported (also in summary.json).
      print(f"warning: {split.num_truncated} of {len(split)} {name} examples are longer than "
            f"--max_seq_len={cfg.max_seq_len} tokens and were truncated", file=sys.stderr)
  chosen_on = train or next(iter(dev.values()), None)
  buckets = () if chosen_on is None else choose_length_buckets(
      cfg, chosen_on, layout, cfg.batch_size if train else cfg.eval_batch_size)
  return Context(cfg, task, tokenizer, teacher_dir, tokenizer_dir, train, dev, layout, mesh,
                 is_special, is_candidate, pipeline.token_flags(tokenizer, vocab_size), buckets)


def choose_length_buckets(cfg: Config, split: pipeline.Tokenized, layout: pipeline.Layout,
                          global_batch: int) -> buckets_lib.Buckets:
  """`--length_buckets` resolved on `split`'s lengths (the training split; eval and predict: the
  split they run on); with auto, each bucket holds at least `global_batch` of its examples and
  must save more padded tokens over the run's epochs than `--bucket_compile_steps` steps cost.

  Every process computes them from the same data; multi-process runs check that they agree, since
  a batch's length is part of the compiled step that all processes run together.
  """
  if cfg.mode == "train_teacher":
    epochs = cfg.teacher_num_epochs
  elif cfg.mode in ("eval", "predict"):
    epochs = 1.0
  else:  # the student's passes
    epochs = cfg.num_train_steps * cfg.batch_size / len(split) if cfg.num_train_steps else \
        cfg.num_epochs
    if cfg.mode == "distill" and not cfg.teacher_ckpt:
      # The run trains its own teacher (in <workdir>/teacher) on the same buckets: its passes count
      # too. Decided by the flags alone, so a resumed run chooses what its first start chose.
      epochs += cfg.teacher_num_epochs
  compile_tokens = buckets_lib.compile_cost_tokens(cfg.bucket_compile_steps, global_batch,
                                                   split.lengths, cfg.max_seq_len, epochs)
  buckets = buckets_lib.resolve(cfg.length_buckets, split.lengths, cfg.max_seq_len,
                                cfg.max_length_buckets, global_batch, compile_tokens)
  if layout.process_count > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    digest = hashlib.sha256(repr(buckets).encode()).digest()
    multihost_utils.assert_equal(np.frombuffer(digest, np.int32),
                                 "processes chose different length buckets")
  if distributed.is_main_process():
    fixed = buckets_lib.utilisation(split.lengths, (cfg.max_seq_len,))
    real = buckets_lib.utilisation(split.lengths, buckets)
    print(f"length buckets {','.join(map(str, buckets))}: {real:.0%} of the tokens are real "
          f"({fixed:.0%} at --max_seq_len={cfg.max_seq_len})", flush=True)
  return buckets


# ----------------------------------------------------------------------------------------------
# Evaluation.
# ----------------------------------------------------------------------------------------------


def check_token_types(ctx: Context, config: model_lib.BertConfig, source: Any) -> None:
  """The tokenizer's token types must exist in the model: a sentence-pair task marks its second
  text with type 1 in BERT's tokenizers (RoBERTa's mark none), and an embedding row that is not
  there would be read out of bounds (clamped, silently wrong)."""
  if len(ctx.task.text_fields) < 2:
    return
  needed = max(ctx.tokenizer.encode("a", "b").type_ids) + 1
  if needed > config.type_vocab_size:
    raise UserError(f"model {source} has type_vocab_size {config.type_vocab_size}, but task "
                    f"{ctx.task.name} pairs two texts and its tokenizer marks them with {needed} "
                    "token types")
