"""GLUE test-set predictions as the files the GLUE leaderboard takes.

One file per test set, named as the leaderboard expects (`SST-2.tsv`, `MNLI-m.tsv`, ...), with the
header `index<TAB>prediction` and one row per test example in file order: the example's own index
(QQP's `id` column) and the predicted label written as GLUE writes it: `0`/`1` for CoLA, SST-2,
MRPC and QQP, `entailment`/`not_entailment` for QNLI and RTE, `entailment`/`neutral`/
`contradiction` for MNLI, and a similarity score for STS-B. The MNLI model also labels the
diagnostic set (`AX.tsv`) when the GLUE dir has `diagnostic/diagnostic.tsv`.

Test sets are read from the standard `glue_data` layout (`SST-2/test.tsv`, `MNLI/test_matched.tsv`,
...); each has a header row naming the same text columns as the task's train and dev files.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Optional

import numpy as np

from augpro_jax import data as data_lib
from augpro_jax.errors import UserError
from augpro_jax.tasks import TaskSpec

HEADER = "index\tprediction"


@dataclasses.dataclass(frozen=True)
class TestSet:
  source: str  # path under the GLUE dir
  submission: str  # file name the leaderboard expects
  required: bool = True


TEST_SETS: dict[str, tuple[TestSet, ...]] = {
    "cola": (TestSet("CoLA/test.tsv", "CoLA.tsv"),),
    "sst2": (TestSet("SST-2/test.tsv", "SST-2.tsv"),),
    "mrpc": (TestSet("MRPC/test.tsv", "MRPC.tsv"),),
    "stsb": (TestSet("STS-B/test.tsv", "STS-B.tsv"),),
    "qqp": (TestSet("QQP/test.tsv", "QQP.tsv"),),
    "mnli": (TestSet("MNLI/test_matched.tsv", "MNLI-m.tsv"),
             TestSet("MNLI/test_mismatched.tsv", "MNLI-mm.tsv"),
             # The diagnostic set is scored with the MNLI model; not every glue_data copy has it.
             TestSet("diagnostic/diagnostic.tsv", "AX.tsv", required=False)),
    "qnli": (TestSet("QNLI/test.tsv", "QNLI.tsv"),),
    "rte": (TestSet("RTE/test.tsv", "RTE.tsv"),),
}
_ID_COLUMN = {"qqp": "id"}  # every other test file calls it "index"


def test_sets(task: TaskSpec) -> tuple[TestSet, ...]:
  if task.name not in TEST_SETS:
    raise UserError(f"task {task.name} has no GLUE test set; give --predict_file and a .jsonl or "
                    ".tsv --predict_out")
  return TEST_SETS[task.name]


def read_test_set(glue_dir: pathlib.Path, task: TaskSpec, test_set: TestSet
                  ) -> Optional[tuple[list[str], list[tuple[str, ...]]]]:
  """(indices, texts) of one test set in file order; None for a missing optional one."""
  path = glue_dir / test_set.source
  if not path.is_file():
    if not test_set.required:
      return None
    raise UserError(f"no {test_set.source} in the GLUE dir {glue_dir}: GLUE submission files are "
                    "made from the task's test sets")
  texts, ids = data_lib.read_texts(str(path), "GLUE test file", task.text_fields,
                                   id_field=_ID_COLUMN.get(task.name, "index"))
  return ids, texts


def predictions(task: TaskSpec, logits: np.ndarray) -> list[str]:
  """The prediction column: label names, or scores for regression. logits [N, C]."""
  if task.is_regression:
    return [f"{score:.3f}" for score in logits[:, 0]]
  return [task.label_names[i] for i in logits.argmax(-1)]


def submission_text(task: TaskSpec, ids: list[str], logits: np.ndarray) -> str:
  """The whole submission file of one test set."""
  if len(ids) != len(logits):
    raise ValueError(f"{len(ids)} test examples but {len(logits)} predictions")
  rows = [f"{i}\t{p}" for i, p in zip(ids, predictions(task, logits))]
  return "\n".join([HEADER, *rows]) + "\n"
