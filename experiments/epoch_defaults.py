"""How many steps do the teacher and the student need on a small training set (MNLI's 480 rows)?

Commands (each run resumable; about 4 minutes per teacher and 1 to 10 minutes per student of
training on 2 cores, plus the evaluation; the two headline runs evaluate all 19,647 dev pairs):
  .venv/bin/python experiments/epoch_defaults.py --run   # the runs without a summary.json
  .venv/bin/python experiments/epoch_defaults.py         # collect: results/epoch_defaults.csv
  .venv/bin/python experiments/report.py                 # the table in experiments/README.md
Single runs, seed 0, every other flag at its default. `headline` is the README's command as it
is; `epochs-3` is the same with 3 epochs for both models. The other runs evaluate on
the first 2,000 pairs of each dev set (`--eval_size=2000`). Every row is scored on those first
2,000 pairs, from the run's `dev_predictions.npz`, beside the majority class of the same pairs.
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import subprocess
import sys

import numpy as np

from augpro_jax.bench import common

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results" / "epoch_defaults.csv"
FIRST = 2000  # dev pairs scored per split
SPLITS = ("dev_matched", "dev_mismatched")
QUICK = ["--task=mnli", f"--eval_size={FIRST}", "--progress=false"]
# name -> main.py flags (without --workdir); students read their teacher from the root.
RUNS = {
    "epochs-3": ["--task=mnli", "--aug=augpro", "--teacher_num_epochs=3", "--num_epochs=3",
                        "--progress=false"],
    "headline": ["--task=mnli", "--aug=augpro", "--progress=false"],  # today's defaults
    "teacher-t10": [*QUICK, "--mode=train_teacher", "--teacher_num_epochs=10",
                    "--teacher_learning_rate=5e-5"],
    "teacher-t10-lr1e-4": [*QUICK, "--mode=train_teacher", "--teacher_num_epochs=10",
                           "--teacher_learning_rate=1e-4"],
    **{f"student-e{epochs}": [*QUICK, "--aug=augpro", f"--num_epochs={epochs}",
                              "--teacher_ckpt={root}/teacher-t10-lr1e-4"] for epochs in (3, 10, 30)},
}
COLUMNS = ("run", "model", "steps", "learning_rate", *(f"{s}_first{FIRST}" for s in SPLITS),
           *(f"{s}_majority" for s in SPLITS))


def score(workdir: pathlib.Path) -> dict[str, float]:
  """Accuracy and majority-class accuracy on the first FIRST pairs of each dev split."""
  predictions = np.load(workdir / "dev_predictions.npz")
  row = {}
  for split in SPLITS:
    labels = predictions[f"{split}/labels"][:FIRST]
    row[f"{split}_first{FIRST}"] = float((predictions[f"{split}/predictions"][:FIRST] == labels).mean())
    row[f"{split}_majority"] = float(np.bincount(labels).max() / len(labels))
  return row


def collect(root: pathlib.Path) -> list[dict]:
  """One row per finished model: each run's own, and the teacher a distill run trained."""
  rows = []
  for name in RUNS:
    for model, workdir in (("teacher", root / name / "teacher"), (None, root / name)):
      if not (workdir / "summary.json").exists():
        continue
      summary = json.loads((workdir / "summary.json").read_text())
      settings = json.loads((root / name / "run.json").read_text())["settings"]
      role = model or ("teacher" if summary["mode"] == "train_teacher" else "student")
      rate = settings.get("teacher_learning_rate" if role == "teacher" else "learning_rate", "")
      rows.append({"run": name, "model": role, "steps": summary["steps"], "learning_rate": rate,
                   **score(workdir)})
  return rows


def merged(csv_path: pathlib.Path, rows: list[dict]) -> list[dict]:
  """The CSV's rows updated by `rows`, in RUNS order: a model whose workdir is absent here (a
  fresh checkout) keeps its recorded row, as the grid's CSVs do."""
  kept = {}
  if csv_path.exists():
    with open(csv_path, encoding="utf-8") as f:
      kept = {(r["run"], r["model"]): r for r in csv.DictReader(f)}
  kept.update({(r["run"], r["model"]): r for r in rows})
  order = {name: i for i, name in enumerate(RUNS)}
  return sorted(kept.values(), key=lambda r: (order.get(r["run"], len(order)), r["model"] != "teacher"))


def report_section(rows: list[dict[str, str]]) -> list[str]:
  """Markdown: each model's dev accuracy x100 on the first pairs, beside the majority class."""
  if not rows:
    return ["No results yet."]
  body = [[r["run"], r["model"], r["steps"], r["learning_rate"],
           *(f"{100 * float(r[f'{s}_first{FIRST}']):.1f}" for s in SPLITS)] for r in rows]
  majority = ", ".join(f"{100 * float(rows[0][f'{s}_majority']):.1f}" for s in SPLITS)
  return [f"### MNLI, 480 training rows (dev accuracy x100 on the first {FIRST:,} pairs of each "
          "dev set)", "", *common.table(["run", "model", "steps", "learning rate", "matched",
                                         "mismatched"], body, left=4),
          "", f"Always answering the majority class: {majority} (matched, mismatched)."]


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--root", default=str(REPO / "runs" / "epoch_defaults"))
  p.add_argument("--csv", default=str(RESULTS))
  p.add_argument("--run", action="store_true", help="train the runs that have no summary.json")
  args = p.parse_args()
  root = pathlib.Path(args.root)
  if args.run:
    for name, flags in RUNS.items():
      if not (root / name / "summary.json").exists():
        command = [sys.executable, str(REPO / "main.py"), *(f.format(root=root) for f in flags),
                   f"--workdir={root / name}"]
        print(" ".join(command), flush=True)
        if subprocess.run(command, check=False, cwd=REPO).returncode:
          print(f"error: run {name} failed (its output is above); fix it and run again",
                file=sys.stderr)
          return 1
  rows = merged(pathlib.Path(args.csv), collect(root))
  with open(args.csv, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  print("\n".join(report_section([{k: str(v) for k, v in r.items()} for r in rows])))
  return 0


if __name__ == "__main__":
  sys.exit(main())
