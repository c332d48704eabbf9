"""The run configuration: one frozen dataclass, built once from flags in `main.py`.

The library never reads flags; it takes a `Config`. Validation lives here so that every entry point
(CLI, tests, experiment scripts) gets the same one-line errors.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

from augpro_jax.errors import UserError

MODES = ("distill", "train_teacher", "finetune", "eval", "benchmark")
AUGS = ("none", "mixup", "fgsm", "augpro_mix", "augpro_fgsm", "augpro", "knn", "synonym")
# `augpro` is an alias; see docs/design.md ("Which AugPro is `augpro`").
AUGPRO_ALIAS = "augpro_mix"
TOKEN_AUGS = ("augpro_mix", "augpro_fgsm", "knn", "synonym")
REPRESENTATION_AUGS = ("mixup", "fgsm")
METRICS = ("l2", "cosine", "dot")
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a run needs. Defaults are the CLI defaults."""

  # What to run.
  task: str = "sst2"
  mode: str = "distill"
  aug: str = "none"
  shift_degree: float = 0.3
  workdir: str = "runs/default"

  # Data.
  glue_dir: Optional[str] = None
  data_source: str = "glue_dir"  # glue_dir | tfds (custom files are chosen by --train_file)
  tfds_data_dir: Optional[str] = None
  label_type: str = "auto"  # custom files: auto | classification | regression
  dev_from_train: int = 0  # hold out N train examples as a (non-official) dev set
  train_file: Optional[str] = None
  eval_file: Optional[str] = None
  text_fields: tuple[str, ...] = ()
  label_field: Optional[str] = None
  train_size: Optional[int] = None
  eval_size: Optional[int] = None
  max_seq_len: int = 128

  # Optimisation.
  batch_size: int = 32  # global, over all devices and processes
  eval_batch_size: int = 128
  num_epochs: float = 3.0
  num_train_steps: Optional[int] = None  # overrides num_epochs
  learning_rate: float = 5e-5
  warmup_fraction: float = 0.1
  weight_decay: float = 0.01
  dropout: float = 0.1
  seed: int = 0

  # Models.
  teacher: str = "minilm"  # 'minilm' (shipped wheel), a local HF dir, or a hub name
  teacher_ckpt: Optional[str] = None
  teacher_num_epochs: float = 3.0
  teacher_learning_rate: float = 5e-5
  student_layers: int = 2
  student_hidden: int = 384
  student_heads: int = 12
  student_intermediate: Optional[int] = None  # default 4 * student_hidden
  student_init: str = "auto"  # auto | teacher | random
  dtype: str = "float32"

  # Distillation.
  temperature: float = 1.0
  alpha_ce: float = 0.0
  aug_weight: float = 1.0
  aug_copies: int = 1
  # distill: the teacher labels the original training examples once, before training (eval mode,
  # as in the step), and the step runs it on augmented examples only.
  cache_teacher_logits: bool = True

  # Augmentation knobs (see docs/design.md "Augmentations").
  mix_alpha: float = 0.4
  fgsm_eps: float = 0.1
  projection_metric: str = "l2"
  projection_table: str = "student"  # student | teacher
  projection_chunk: int = 2048
  exclude_original: bool = True
  knn_k: int = 10
  shift_rounding: str = "stochastic"  # m = floor(p*n + u): u ~ U[0,1) (stochastic) or 0.5 (nearest)
  wordnet_dir: Optional[str] = None

  # Loop, logging, checkpoints.
  eval_every: int = 0  # 0: only at the end
  log_every: int = 10
  checkpoint_every: int = 200
  keep_checkpoints: int = 3
  skip_nonfinite_steps: int = 0
  progress: bool = True

  # Benchmark.
  benchmark_steps: int = 20
  benchmark_warmup: int = 3
  benchmark_rounds: int = 5  # timed steps are interleaved across methods in this many rounds
  benchmark_augs: tuple[str, ...] = ("none", "mixup", "fgsm", "augpro_mix", "augpro_fgsm", "knn")
  benchmark_peers: tuple[str, ...] = ("hf_flax", "hf_torch")
  benchmark_out: Optional[str] = None
  teacher_layers_override: Optional[int] = None  # benchmark: random teacher of this depth
  teacher_hidden_override: Optional[int] = None

  # Multi-process.
  coordinator_address: Optional[str] = None
  num_processes: Optional[int] = None
  process_id: Optional[int] = None

  @property
  def resolved_aug(self) -> str:
    return AUGPRO_ALIAS if self.aug == "augpro" else self.aug

  @property
  def is_token_aug(self) -> bool:
    return self.resolved_aug in TOKEN_AUGS

  @property
  def student_intermediate_size(self) -> int:
    return self.student_intermediate or 4 * self.student_hidden

  def replace(self, **kwargs) -> "Config":
    return dataclasses.replace(self, **kwargs)

  def validate(self) -> "Config":
    """Raise `UserError` with one clear line for anything out of range."""
    _one_of("mode", self.mode, MODES)
    _one_of("aug", self.aug, AUGS)
    _one_of("dtype", self.dtype, DTYPES)
    _one_of("projection_metric", self.projection_metric, METRICS)
    _one_of("projection_table", self.projection_table, ("student", "teacher"))
    _one_of("shift_rounding", self.shift_rounding, ("stochastic", "nearest"))
    _one_of("student_init", self.student_init, ("auto", "teacher", "random"))
    _one_of("data_source", self.data_source, ("glue_dir", "tfds"))
    _one_of("label_type", self.label_type, ("auto", "classification", "regression"))
    for aug in self.benchmark_augs:
      _one_of("benchmark_augs", aug, AUGS)
    if not (0.0 < self.shift_degree <= 1.0) or math.isnan(self.shift_degree):
      raise UserError(f"--shift_degree must be in (0, 1], got {self.shift_degree}")
    for name in ("batch_size", "eval_batch_size", "max_seq_len", "student_layers", "student_hidden",
                 "student_heads", "log_every", "knn_k", "projection_chunk", "aug_copies",
                 "keep_checkpoints", "benchmark_steps", "benchmark_rounds"):
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
    for name in ("alpha_ce", "aug_weight", "fgsm_eps", "weight_decay"):
      value = getattr(self, name)
      if not value >= 0:
        raise UserError(f"--{name} must be >= 0, got {value}")
    if not 0.0 <= self.dropout < 1.0:
      raise UserError(f"--dropout must be in [0, 1), got {self.dropout}")
    if not 0.0 <= self.warmup_fraction < 1.0:
      raise UserError(f"--warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
    if not self.mix_alpha > 0:
      raise UserError(f"--mix_alpha must be positive, got {self.mix_alpha}")
    if self.max_seq_len < 8 or self.max_seq_len > 512:
      raise UserError(f"--max_seq_len must be in [8, 512], got {self.max_seq_len}")
    if self.student_hidden % self.student_heads:
      raise UserError(f"--student_hidden ({self.student_hidden}) must be divisible by "
                      f"--student_heads ({self.student_heads})")
    if (self.train_file is None) != (self.eval_file is None):
      raise UserError("--train_file and --eval_file go together: give both or neither")
    if self.train_file is not None and not self.text_fields:
      raise UserError("--text_fields is required with --train_file (e.g. --text_fields=sentence)")
    if self.train_file is not None and not self.label_field:
      raise UserError("--label_field is required with --train_file (e.g. --label_field=label)")
    return self


def _one_of(name: str, value: str, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise UserError(f"unknown --{name}={value!r}; choose one of: {', '.join(choices)}")
