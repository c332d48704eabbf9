"""Why does QNLI augpro_fgsm lean to one class in some seeds? One cause at a time, never on dev.

Command (resumable; a part is one seed, e.g. --only='-s0$'; about 20 min per seed on 2 cores):
  .venv/bin/python experiments/fgsm_diagnosis.py --only='-s0$'
  .venv/bin/python experiments/report.py
Grid (experiments/protocol.py, DIAGNOSIS_SETTINGS): the comparison's QNLI KD run (2,000 training
pairs, 2 epochs, shift 0.3, the strong teacher) with augpro_fgsm at its defaults, with one change
each (fgsm_eps 0.03 and 0.3 against 0.1; the gold-label loss for the attack, --fgsm_loss=ce; the
learning rate 5e-5 against 1e-4), and without augmentation; seeds 0-2. The dev set is 1,000
training pairs held out with --dev_from_train (so the students never train on them; the teacher
did), evaluated every 10 steps: besides the CSV row, each run's loss, gradient norm and the share
of held-out pairs predicted as each class over training go to fgsm_diagnosis_trace.csv (one row
per logged step), which the report plots.
"""

from __future__ import annotations

import csv
import json
import math
import pathlib
import statistics
import sys
from collections import defaultdict
from typing import Any, Optional

import numpy as np

from experiments import grid
from experiments import headline
from experiments import protocol

TRAIN_KEYS = ("loss", "loss_orig", "loss_aug", "grad_norm", "measured_shift")
SHARE = "predicted_share/"  # the eval log's key prefix (augpro_jax.evaluation.predicted_shares)
SHARE_TOLERANCE = 0.15  # the rule's bound on |final class-1 share - the labels' share|


def trace_path(csv_path: pathlib.Path) -> pathlib.Path:
  return csv_path.with_name(csv_path.stem + "_trace.csv")


def _trace_rows(run: grid.Run, metrics_jsonl: pathlib.Path) -> list[dict[str, Any]]:
  columns = dict(run.columns)
  rows = []
  for line in metrics_jsonl.read_text(encoding="utf-8").splitlines():
    record = json.loads(line)
    if record.get("kind") not in ("train", "eval"):
      continue
    keys = TRAIN_KEYS if record["kind"] == "train" else \
        ["accuracy"] + [k for k in record if k.startswith(SHARE)]
    rows.append({"run": run.name, "arm": columns.get("arm"), "seed": columns.get("seed"),
                 "kind": record["kind"], "step": record["step"],
                 **{k: record[k] for k in keys if k in record}})
  return rows


def collect_traces(runs: list[grid.Run], root: pathlib.Path, csv_path: pathlib.Path) -> None:
  """Every student run's logged steps into `<csv stem>_trace.csv`; a run whose workdir is gone
  keeps the rows the file has (workdirs are scratch, the file is the record)."""
  path = trace_path(csv_path)
  kept: dict[str, list[dict[str, str]]] = defaultdict(list)
  if path.exists():
    with open(path, newline="", encoding="utf-8") as f:
      for row in csv.DictReader(f):
        kept[row["run"]].append({k: v for k, v in row.items() if v != ""})
  rows = []
  for run in runs:
    if dict(run.columns).get("mode") == "teacher":
      continue
    metrics = root / run.name / "metrics.jsonl"
    if (root / run.name / "summary.json").exists() and metrics.exists():
      rows += _trace_rows(run, metrics)
    else:
      rows += kept.get(run.name, [])
  if not rows:
    return
  keys = list(dict.fromkeys(k for row in rows for k in row))
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
  print(f"{len(rows)} logged steps -> {path}")


def read_traces(path: pathlib.Path) -> dict[str, list[dict[str, str]]]:
  """{run: its logged steps in order} (empty if the file is absent)."""
  out: dict[str, list[dict[str, str]]] = defaultdict(list)
  if path.exists():
    with open(path, newline="", encoding="utf-8") as f:
      for row in csv.DictReader(f):
        out[row["run"]].append(row)
  return out


def _share_key(traces: dict[str, list[dict[str, str]]]) -> Optional[str]:
  """The share column of class 1 (QNLI's not_entailment; SST-2's '1' in the tiny grid)."""
  keys = {k for steps in traces.values() for row in steps for k in row if k.startswith(SHARE)}
  return sorted(keys)[-1] if keys else None


def _values(steps: list[dict[str, str]], kind: str, key: str) -> list[float]:
  return [float(r[key]) for r in steps if r["kind"] == kind and r.get(key)]


def _second_half(steps: list[dict[str, str]], key: str) -> list[float]:
  """`key` at the evaluations in the second half of a run (every student first swings between
  the classes, augmented or not)."""
  evals = [(float(r["step"]), float(r[key])) for r in steps if r["kind"] == "eval" and r.get(key)]
  last = max((step for step, _ in evals), default=0.0)
  return [value for step, value in evals if step > last / 2]


def table(rows: list[dict[str, str]], traces: dict[str, list[dict[str, str]]],
          predictions: dict[str, dict[str, np.ndarray]]) -> list[str]:
  """Per setting: held-out accuracy (mean and each seed), the final share predicted as class 1,
  its range over the second half's evaluations, the largest gradient norm and the last logged
  loss (mean over seeds)."""
  students = [r for r in rows if r.get("mode") != "teacher" and r.get("dev_accuracy")]
  if not students:
    return ["No results yet."]
  labels = next((p["dev/labels"] for r in students for p in [predictions.get(r["run"])] if p),
                None)
  share_key = _share_key(traces)
  lines = ["### QNLI augpro_fgsm diagnosis (1,000 held-out training pairs; accuracy x100)", "",
           "Labels' share of class 1 in the held-out pairs: " +
           (f"{headline.class1_share(labels):.3f}." if labels is not None else "-."), "",
           "| setting | accuracy (mean; each seed) | class-1 share at the end (each seed) | "
           "class-1 share, second half (min-max) | largest grad norm | last loss |",
           "|---|---|---|---|---:|---:|"]
  by_arm = defaultdict(list)
  for row in sorted(students, key=lambda r: int(float(r["seed"]))):
    by_arm[row["arm"]].append(row)
  for arm, arm_rows in by_arm.items():
    accs = [100 * float(r["dev_accuracy"]) for r in arm_rows]
    each = ", ".join(f"{a:.1f}" for a in accs)
    ends = ", ".join(f"{headline.class1_share(predictions[r['run']]['dev/predictions']):.2f}"
                     if r["run"] in predictions else "-" for r in arm_rows)
    steps = [traces.get(r["run"], []) for r in arm_rows]
    shares = [v for s in steps for v in (_second_half(s, share_key) if share_key else [])]
    norms = [v for s in steps for v in _values(s, "train", "grad_norm")]
    losses = [_values(s, "train", "loss")[-1] for s in steps if _values(s, "train", "loss")]
    lines.append(
        f"| {arm} | {statistics.mean(accs):.1f} ({each}) | {ends} | "
        + (f"{min(shares):.2f}-{max(shares):.2f}" if shares else "-") + " | "
        + (f"{max(norms):.1f}" if norms else "-") + " | "
        + (f"{statistics.mean(losses):.3f}" if losses else "-") + " |")
  return lines


def chosen_setting(rows: list[dict[str, str]], predictions: dict[str, dict[str, np.ndarray]],
                   tolerance: float = SHARE_TOLERANCE) -> Optional[str]:
  """The rule of experiments/README.md ("The unstable arm"), stated before the runs: of the
  augpro_fgsm settings with every seed's final class-1 share within `tolerance` of the labels',
  the one with the highest mean held-out accuracy; None if none qualifies. Only settings with all
  of the grid's seeds count."""
  students = [r for r in rows if r.get("mode") != "teacher" and r["arm"] != "none"]
  seeds = {r["seed"] for r in students}
  best, best_accuracy = None, -math.inf
  for arm in dict.fromkeys(r["arm"] for r in students):
    arm_rows = [r for r in students if r["arm"] == arm and r["run"] in predictions]
    if {r["seed"] for r in arm_rows} != seeds:
      continue
    balanced = all(abs(headline.class1_share(predictions[r["run"]]["dev/predictions"])
                       - headline.class1_share(predictions[r["run"]]["dev/labels"])) <= tolerance
                   for r in arm_rows)
    accuracy = statistics.mean(float(r["dev_accuracy"]) for r in arm_rows)
    if balanced and accuracy > best_accuracy:
      best, best_accuracy = arm, accuracy
  return best


def plot(traces: dict[str, list[dict[str, str]]], rows: list[dict[str, str]],
         out_png: pathlib.Path) -> bool:
  """Loss, gradient norm and the held-out class-1 share over training: a column per setting, a
  line per seed. False (and no file) without traces."""
  share_key = _share_key(traces)
  arms = list(dict.fromkeys(r["arm"] for r in rows if r["run"] in traces))
  if not arms or share_key is None:
    return False
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  panels = (("train", "loss", "loss"), ("train", "grad_norm", "gradient norm"),
            ("eval", share_key, "held-out share predicted as class 1"))
  fig, axes = plt.subplots(len(panels), len(arms), figsize=(2.6 * len(arms), 6.5),
                           sharex=True, sharey="row", squeeze=False)
  for col, arm in enumerate(arms):
    for row in (r for r in rows if r["arm"] == arm and r["run"] in traces):
      steps = traces[row["run"]]
      for i, (kind, key, _) in enumerate(panels):
        xs = [int(float(r["step"])) for r in steps if r["kind"] == kind and r.get(key)]
        axes[i][col].plot(xs, _values(steps, kind, key), label=f"seed {row['seed']}",
                          linewidth=1)
    axes[0][col].set_title(arm, fontsize=9)
    axes[-1][col].set_xlabel("step")
  for i, (_, _, name) in enumerate(panels):
    axes[i][0].set_ylabel(name, fontsize=8)
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(out_png, dpi=110)
  plt.close(fig)
  return True


def report_section(rows: list[dict[str, str]], traces: dict[str, list[dict[str, str]]],
                   predictions: dict[str, dict[str, np.ndarray]], out_png: pathlib.Path
                   ) -> list[str]:
  lines = table(rows, traces, predictions)
  if len(lines) > 1:
    chosen = chosen_setting(rows, predictions)
    lines += ["", "The rule (every seed's final class-1 share within "
              f"{SHARE_TOLERANCE} of the labels', then the best mean accuracy) chooses: "
              + (f"`{chosen}`." if chosen else "no setting.")]
  if plot(traces, [r for r in rows if r.get("mode") != "teacher"], out_png):
    lines += ["", f"![loss, gradient norm and class-1 share over training]({out_png.name})"]
  return lines


if __name__ == "__main__":
  sys.exit(grid.main(__doc__, protocol.diagnosis_runs, "fgsm_diagnosis", default_seeds=3,
                     after=collect_traces))
