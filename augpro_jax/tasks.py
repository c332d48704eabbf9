"""GLUE task specifications and their dev metrics.

A `TaskSpec` describes one task as it appears in the standard `glue_data` layout: which folder,
which columns, which label strings. Label ids are positions in `label_names`; the same ids are
used for every data source (GLUE files, TFDS, custom files), so a model trained from one source
can be evaluated on another.

MNLI label order is ('entailment', 'neutral', 'contradiction'): the order TFDS `glue/mnli` uses for
its integer labels, so TFDS labels need no remapping. (The HF legacy `run_glue` processor uses
'contradiction', 'entailment', 'neutral' instead: heads trained there are permuted w.r.t. ours.)
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Optional

import numpy as np

from augpro_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """One classification or regression task.

  `text_fields` / `label_field` name columns of the GLUE file (or of a custom file). `label_names`
  are the label strings exactly as written in the files; None means regression.
  """

  name: str
  glue_name: Optional[str]
  tfds_name: Optional[str]
  text_fields: tuple[str, ...]
  label_field: str
  label_names: Optional[tuple[str, ...]]
  dev_splits: tuple[str, ...]
  main_metric: str

  @property
  def num_labels(self) -> int:
    return 1 if self.label_names is None else len(self.label_names)

  @property
  def is_regression(self) -> bool:
    return self.label_names is None


_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")

TASKS: dict[str, TaskSpec] = {
    t.name: t for t in (
        TaskSpec("cola", "CoLA", "glue/cola", ("sentence",), "label", _BINARY, ("dev",), "mcc"),
        TaskSpec("sst2", "SST-2", "glue/sst2", ("sentence",), "label", _BINARY, ("dev",),
                 "accuracy"),
        TaskSpec("mrpc", "MRPC", "glue/mrpc", ("#1 String", "#2 String"), "Quality", _BINARY,
                 ("dev",), "f1"),
        TaskSpec("stsb", "STS-B", "glue/stsb", ("sentence1", "sentence2"), "score", None, ("dev",),
                 "pearson"),
        TaskSpec("qqp", "QQP", "glue/qqp", ("question1", "question2"), "is_duplicate", _BINARY,
                 ("dev",), "accuracy"),
        TaskSpec("mnli", "MNLI", "glue/mnli", ("sentence1", "sentence2"), "gold_label",
                 ("entailment", "neutral", "contradiction"), ("dev_matched", "dev_mismatched"),
                 "accuracy"),
        TaskSpec("qnli", "QNLI", "glue/qnli", ("question", "sentence"), "label", _NLI2, ("dev",),
                 "accuracy"),
        TaskSpec("rte", "RTE", "glue/rte", ("sentence1", "sentence2"), "label", _NLI2, ("dev",),
                 "accuracy"),
    )
}

# The metrics GLUE reports for each task; custom tasks get `_custom_metric_names`.
_METRICS: dict[str, tuple[str, ...]] = {
    "cola": ("mcc",),
    "sst2": ("accuracy",),
    "mrpc": ("accuracy", "f1"),
    "stsb": ("pearson", "spearmanr"),
    "qqp": ("accuracy", "f1"),
    "mnli": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
}


def get_task(name: str) -> TaskSpec:
  """The spec of a GLUE task by its short name ('sst2', 'mnli', ...)."""
  try:
    return TASKS[name]
  except KeyError:
    raise UserError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)} "
                    "(or --task=custom with --train_file/--eval_file)") from None


def metric_names(task: TaskSpec) -> tuple[str, ...]:
  """The keys `compute_metrics` returns for `task`."""
  if task.name in _METRICS:
    return _METRICS[task.name]
  if task.is_regression:
    return ("pearson", "spearmanr")
  if task.num_labels == 2:
    return ("accuracy", "f1", "mcc")
  return ("accuracy", "mcc")


def compute_metrics(task: TaskSpec, predictions: np.ndarray,
                    labels: np.ndarray) -> dict[str, float]:
  """Dev metrics of `predictions` (class ids, or scores for regression) against gold `labels`.

  Binary F1 treats label id 1 as the positive class (MRPC 'equivalent', QQP 'duplicate'; for a
  custom task, the second of the sorted label names).
  """
  predictions = np.asarray(predictions)
  labels = np.asarray(labels)
  if task.is_regression:
    predictions = predictions.reshape(-1).astype(np.float64)
    labels = labels.reshape(-1).astype(np.float64)
  elif predictions.ndim != 1:
    raise ValueError(f"expected class ids of shape [N], got predictions of shape "
                     f"{predictions.shape}")
  if predictions.shape != labels.shape:
    raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} differ in shape")
  if predictions.size == 0:
    raise ValueError("cannot compute metrics of zero examples")
  results = {}
  for name in metric_names(task):
    results[name] = float(_METRIC_FNS[name](labels, predictions))
  return results


# Accuracy and F1 in NumPy, and scipy imported only for the correlations: importing scipy.stats
# and scikit-learn was about half of the command line's start-up time.


def _accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
  return float(np.mean(np.asarray(labels) == np.asarray(predictions))) if len(labels) else 0.0


def _f1(labels: np.ndarray, predictions: np.ndarray) -> float:
  # Binary F1 of class 1. No positive prediction and no positive label makes it 0/0: report 0.
  labels, predictions = np.asarray(labels) == 1, np.asarray(predictions) == 1
  true_pos = int(np.sum(labels & predictions))
  wrong = int(np.sum(labels != predictions))
  return 0.0 if true_pos == 0 else 2 * true_pos / (2 * true_pos + wrong)


def _mcc(labels: np.ndarray, predictions: np.ndarray) -> float:
  """Matthews correlation over all classes (Gorodkin's multi-class form, as scikit-learn's).

  Computed here from the confusion counts because scikit-learn warns when an evaluation set holds
  a single class (a 1-example dev set, say). A constant predictor makes the denominator 0; the
  value is then 0, which is right: such a predictor is uncorrelated with the labels.
  """
  classes, codes = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
  n = labels.shape[0]
  confusion = np.zeros((len(classes), len(classes)), np.float64)  # [true, predicted]
  np.add.at(confusion, (codes[:n], codes[n:]), 1.0)
  true_counts, pred_counts = confusion.sum(1), confusion.sum(0)
  correct, total = np.trace(confusion), confusion.sum()
  numerator = correct * total - true_counts @ pred_counts
  denominator = math.sqrt((total ** 2 - pred_counts @ pred_counts) *
                          (total ** 2 - true_counts @ true_counts))
  return 0.0 if denominator == 0 else float(numerator / denominator)


def _correlation(name: str, labels: np.ndarray, predictions: np.ndarray) -> float:
  # A constant prediction vector (or label vector, or fewer than 2 examples) has no defined
  # correlation and scipy returns nan with a warning. We report 0.0 instead: it carries no
  # information about the labels, and nan would poison best-checkpoint comparisons
  # (nan > x is always False) and strict-JSON summaries.
  if labels.size < 2 or np.ptp(labels) == 0 or np.ptp(predictions) == 0:
    return 0.0
  from scipy import stats  # pylint: disable=g-import-not-at-top
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", stats.ConstantInputWarning)
    value = float(getattr(stats, name)(labels, predictions)[0])
  return 0.0 if math.isnan(value) else value


def _pearson(labels: np.ndarray, predictions: np.ndarray) -> float:
  if not (np.all(np.isfinite(labels)) and np.all(np.isfinite(predictions))):
    return math.nan  # a diverged model: keep it visible rather than hide it as 0
  return _correlation("pearsonr", labels, predictions)


def _spearmanr(labels: np.ndarray, predictions: np.ndarray) -> float:
  if not (np.all(np.isfinite(labels)) and np.all(np.isfinite(predictions))):
    return math.nan
  return _correlation("spearmanr", labels, predictions)


_METRIC_FNS = {
    "accuracy": _accuracy,
    "f1": _f1,
    "mcc": _mcc,
    "pearson": _pearson,
    "spearmanr": _spearmanr,
}
