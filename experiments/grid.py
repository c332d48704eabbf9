"""Shared machinery for experiment grids: list runs, run the missing ones, collect a CSV.

Every run is one `python main.py ...` command with its own workdir under `--root`; a run whose
`summary.json` exists is finished and skipped, so a grid can be stopped and resumed at any time
and split into parts with `--only=REGEX` (matched against run names). A run that already has a
row in the results CSV is skipped too (`--rerun` runs it again): workdirs are scratch and the
committed CSV is the record, so a fresh checkout resumes the grid where the CSV left it. Teachers
are fine-tuned once per task (and seed 0) and shared by every student run through `--teacher_ckpt`;
a teacher is retrained only when a student that still has to run needs its checkpoint, and its
earlier training keeps its row (`collect`). Each row records the run's wall clock and its CPU.

The runs share a persistent XLA compilation cache (`--xla_cache`; default
$JAX_COMPILATION_CACHE_DIR, else `<root>/xla-cache`): a program compiled once (the evaluation step,
the teacher-logit pass, a train step another seed already compiled at the same lengths) is loaded,
not compiled again. A hit is the same executable,
so results are bit for bit those of a cold run; only the wall clock, compile time included, drops.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import pathlib
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from typing import Any, Callable, Iterable, Optional

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results"


@dataclasses.dataclass(frozen=True)
class Run:
  name: str  # unique, path-safe: also the workdir's name
  flags: tuple[tuple[str, Any], ...]  # main.py flags (without --workdir)
  columns: tuple[tuple[str, Any], ...]  # what identifies the run in the CSV
  needs: Optional[str] = None  # name of a run that must finish first (the teacher)

  def command(self, root: pathlib.Path, python: str = sys.executable) -> list[str]:
    args = [python, str(REPO / "main.py"), f"--workdir={root / self.name}", "--progress=false"]
    return args + [f"--{k}={v}" for k, v in self.flags]


def teacher_run(task: str, common: dict[str, Any], teacher_epochs: float,
                name: Optional[str] = None) -> Run:
  flags = {**common, "task": task, "mode": "train_teacher", "teacher_num_epochs": teacher_epochs,
           "seed": 0}
  return Run(name or f"teacher-{task}", tuple(flags.items()), (("task", task), ("mode", "teacher")))


def student_run(name: str, teacher: Optional[Run], root: pathlib.Path, flags: dict[str, Any],
                columns: dict[str, Any]) -> Run:
  if teacher is not None and flags.get("mode", "distill") == "distill":
    flags = {**flags, "teacher_ckpt": root / teacher.name / "final"}
  return Run(name, tuple(flags.items()), tuple(columns.items()),
             needs=teacher.name if teacher is not None and flags.get("mode") == "distill" else None)


def cpu_name() -> str:
  """This machine's CPU model and core count, as a run's row records it: the wall clock of a run
  means little without the machine it ran on."""
  model = ""
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
      if line.startswith("model name"):
        model = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  return f"{model or platform.processor() or platform.machine() or 'unknown CPU'} ({os.cpu_count()} cores)"


def _regex(text: str) -> str:
  """Checks --only at parse time, so a bad pattern is a usage error and not a traceback mid-grid."""
  try:
    re.compile(text)
  except re.error as e:
    raise argparse.ArgumentTypeError(f"not a regular expression ({e}): {text!r}") from None
  return text


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be a positive integer: {text!r}")
  return value


def results_csv_problem(csv_path: pathlib.Path) -> Optional[str]:
  """Why `csv_path` cannot be this grid's results CSV, or None. The grid rewrites that file, so
  anything that is not a results CSV (a directory, another table) is refused before it is touched."""
  if not csv_path.exists():
    return None
  if not csv_path.is_file():
    return f"--csv={csv_path} exists and is not a file"
  try:
    with open(csv_path, newline="", encoding="utf-8") as f:
      header = next(csv.reader(f), [])
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    return f"--csv={csv_path} cannot be read as a CSV ({e})"
  if header and "run" not in header:
    return f"--csv={csv_path} is not a results CSV (no 'run' column); refusing to overwrite it"
  return None


def parser(description: str, default_root: str) -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=description)
  p.add_argument("--root", default=str(REPO / "runs" / default_root),
                 help="Workdirs go here (teachers are shared by every experiment under one root).")
  p.add_argument("--glue_dir", default=os.environ.get("GLUE_DIR", str(REPO.parent / "shared" / "data" / "glue")))
  p.add_argument("--csv", default=None, help="Results CSV (default experiments/results/<name>.csv).")
  p.add_argument("--only", default=None, type=_regex,
                 help="Run only runs whose name matches this regex.")
  p.add_argument("--dry_run", action="store_true", help="List the runs and exit.")
  p.add_argument("--rerun", action="store_true",
                 help="Also run selected runs that have a CSV row but no workdir here.")
  p.add_argument("--tiny", action="store_true", help="A 2-run grid with a few steps (tests).")
  p.add_argument("--seeds", type=_positive_int, default=3)
  p.add_argument("--xla_cache", default=None,
                 help="Persistent XLA compilation cache shared by the runs (default "
                      "$JAX_COMPILATION_CACHE_DIR, else <root>/xla-cache; empty: none).")
  return p


def recorded_runs(csv_path: pathlib.Path) -> set[str]:
  """Names of the runs the results CSV already has a row for."""
  if not csv_path.exists():
    return set()
  with open(csv_path, newline="", encoding="utf-8") as f:
    return {row["run"] for row in csv.DictReader(f)}


def execute(runs: list[Run], root: pathlib.Path, *, only: Optional[str], dry_run: bool,
            glue_dir: str, recorded: frozenset[str] = frozenset(),
            xla_cache: Optional[str] = None) -> list[Run]:
  """Run what is missing, teachers first. Returns the selected runs.

  `recorded`: runs with a row in the results CSV; they are skipped unless a student that still
  has to run needs them (a teacher's checkpoint is a file, not a row). `xla_cache`: the persistent
  compilation cache directory every run uses (None or empty: none).
  """
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  if xla_cache:
    env["JAX_COMPILATION_CACHE_DIR"] = xla_cache
  root.mkdir(parents=True, exist_ok=True)
  finished = lambda run: (root / run.name / "summary.json").exists()
  selected = [r for r in runs if only is None or re.search(only, r.name)]
  by_name = {r.name: r for r in runs}
  to_run = [r for r in selected if not finished(r) and r.name not in recorded]
  # A student that will run needs its teacher's checkpoint even when --only did not name it.
  needed = {r.needs for r in to_run if r.needs}
  selected = [by_name[n] for n in sorted(needed) if by_name[n] not in selected] + selected
  for i, run in enumerate(selected):
    done = finished(run)
    skip = done or (run.name in recorded and run.name not in needed)
    command = run.command(root) + [f"--glue_dir={glue_dir}"]
    if dry_run:
      state = "done" if done else "recorded" if skip else "todo"
      print(f"[{state}] {shlex.join(command)}")
      continue
    if skip:
      continue
    print(f"[{i + 1}/{len(selected)}] {run.name}", flush=True)
    start = time.time()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    seconds = time.time() - start
    if result.returncode != 0:
      print(f"  FAILED ({result.returncode}) after {seconds:.0f}s: "
            f"{(result.stderr.strip().splitlines() or ['?'])[-1]}", flush=True)
      continue
    (root / run.name / "wallclock_seconds").write_text(f"{seconds:.1f}\n")
    (root / run.name / "cpu").write_text(cpu_name() + "\n")
    if run.needs is not None or not run.name.startswith("teacher-"):
      # Students are summarised by summary.json + metrics.jsonl; their weights (~60 MB each with
      # optimizer state) would fill the disk over a few hundred runs.
      for sub in ("checkpoints", "final"):
        shutil.rmtree(root / run.name / sub, ignore_errors=True)
    print(f"  done in {seconds:.0f}s", flush=True)
  return selected


EARLIER = "-earlier-"  # `<teacher>-earlier-<k>`: the row of a teacher's k-th training, kept


def _workdir_row(run: Run, root: pathlib.Path) -> Optional[dict[str, Any]]:
  """The CSV row of a run finished in `root`, or None."""
  path = root / run.name / "summary.json"
  if not path.exists():
    return None
  summary = json.loads(path.read_text())
  wall, cpu = root / run.name / "wallclock_seconds", root / run.name / "cpu"
  row = {"run": run.name, **dict(run.columns)}
  row.update({f"dev_{k.replace('/', '_')}": v for k, v in summary.get("dev", {}).items()})
  row.update({f"teacher_{k.replace('/', '_')}": v
              for k, v in (summary.get("teacher_dev") or {}).items()})
  row.update(measured_shift=summary.get("measured_shift"), steps=summary.get("steps"),
             train_examples=summary.get("train_examples"),
             examples_per_sec=summary.get("examples_per_sec"),
             wallclock_seconds=float(wall.read_text()) if wall.exists() else None,
             cpu=cpu.read_text().strip() if cpu.exists() else None)
  if summary.get("length_buckets"):  # rows written before length buckets had fixed padding
    row.update(length_buckets=" ".join(map(str, summary["length_buckets"])),
               train_token_utilisation=summary["token_utilisation"]["train"])
  return row


def _trained_again(old: Optional[dict[str, str]], new: dict[str, Any]) -> bool:
  """Whether `new` is a teacher trained again since the CSV recorded `old` (its own wall clock)."""
  if not old or old.get("mode") != "teacher" or not old.get("wallclock_seconds"):
    return False
  return new.get("wallclock_seconds") is None or abs(
      float(old["wallclock_seconds"]) - float(new["wallclock_seconds"])) > 0.05


def collect(runs: Iterable[Run], root: pathlib.Path, csv_path: pathlib.Path) -> list[dict[str, Any]]:
  """One CSV row per finished run: its columns, dev metrics, measured shift, speed, wall clock.

  The CSV is the durable record and workdirs are scratch: a run of the grid whose workdir is
  absent here (a fresh checkout, another machine) keeps the row the existing CSV has for it. A
  teacher trained again (its checkpoint was gone) gets the new row, and its earlier training
  keeps the old one, renamed `<teacher>-earlier-<k>`, with its predictions: the students before
  learnt from it.
  """
  kept, header = {}, []
  if csv_path.exists():
    with open(csv_path, newline="", encoding="utf-8") as f:
      reader = csv.DictReader(f)
      kept = {row["run"]: row for row in reader}
      header = list(reader.fieldnames or [])
  runs = list(runs)
  rows, renamed = [], {}
  for run in runs:
    row = _workdir_row(run, root)
    earlier = sorted((k for k in kept if k.startswith(run.name + EARLIER)),
                     key=lambda k: int(k.rsplit("-", 1)[1]))
    rows += [{k: v for k, v in kept[k].items() if v != ""} for k in earlier]
    if row is not None and _trained_again(kept.get(run.name), row):
      renamed[run.name] = f"{run.name}{EARLIER}{len(earlier) + 1}"
      rows.append({**{k: v for k, v in kept[run.name].items() if v != ""},
                   "run": renamed[run.name]})
    if row is None and run.name in kept:
      row = {k: v for k, v in kept[run.name].items() if v != ""}
    if row is not None:
      rows.append(row)
  csv_path.parent.mkdir(parents=True, exist_ok=True)
  bundle_predictions(runs, root, predictions_path(csv_path), {row["run"] for row in rows}, renamed)
  keys = list(dict.fromkeys([k for k in header if any(k in row for row in rows)]
                            + [k for row in rows for k in row]))
  with open(csv_path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
  print(f"{len(rows)} finished runs -> {csv_path}")
  return rows


def predictions_path(csv_path: pathlib.Path) -> pathlib.Path:
  """Where the per-example dev predictions of a results CSV's runs live: `<csv stem>_predictions.npz`."""
  return csv_path.with_name(csv_path.stem + "_predictions.npz")


def bundle_predictions(runs: Iterable[Run], root: pathlib.Path, path: pathlib.Path,
                       keep: set[str], renamed: Optional[dict[str, str]] = None) -> None:
  """Gather each run's `dev_predictions.npz` into one compressed file, keys `<run>/<split>/...`.

  Like the CSV, the bundle is the durable record: a run in `keep` whose workdir is gone keeps the
  arrays the bundle already has for it; runs not in `keep` are dropped. `renamed` {run: new name}
  moves a run's old arrays to a new name (a teacher's earlier training) before its workdir's
  arrays take the old name.
  """
  arrays, renamed = {}, renamed or {}
  if path.exists():
    with np.load(path) as old:
      for key in old.files:
        run, rest = key.split("/", 1)
        run = renamed.get(run, run)
        if run in keep:
          arrays[f"{run}/{rest}"] = old[key]
  for run in runs:
    source = root / run.name / "dev_predictions.npz"
    if run.name in keep and source.exists():
      with np.load(source) as new:
        arrays.update({f"{run.name}/{k}": new[k] for k in new.files})
  if arrays:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def load_predictions(path: pathlib.Path) -> dict[str, dict[str, np.ndarray]]:
  """{run: {"<split>/predictions" | "<split>/labels": [N]}} from a bundle (empty if absent)."""
  out: dict[str, dict[str, np.ndarray]] = {}
  if path.exists():
    with np.load(path) as data:
      for key in data.files:
        run, rest = key.split("/", 1)
        out.setdefault(run, {})[rest] = data[key]
  return out


# CPU-sized settings shared by every experiment (experiments/README.md "Settings" says why they
# differ from the papers'): MiniLM teacher (6x384), a 2x384 student initialised from it, 64 tokens.
COMMON = {"max_seq_len": 64, "batch_size": 32, "eval_batch_size": 128, "student_layers": 2,
          "learning_rate": 1e-4, "teacher_learning_rate": 5e-5, "log_every": 50,
          "checkpoint_every": 0, "keep_checkpoints": 1, "length_buckets": "auto",
          # Every recorded run drew 32-bit dropout masks, one attention mask per example and head;
          # pinned so they stay reproducible.
          "dropout_bits": 32, "attention_dropout_mask": "per_head"}
TINY = {"max_seq_len": 16, "batch_size": 8, "eval_batch_size": 64, "student_layers": 1,
        "train_size": 32, "eval_size": 64, "num_train_steps": 2, "teacher_num_epochs": 0.25,
        "log_every": 1, "checkpoint_every": 0, "keep_checkpoints": 1}
def main(description: str, make_runs, csv_name: str, default_seeds: int = 3,
         after: Optional[Callable[[list[Run], pathlib.Path, pathlib.Path], None]] = None) -> int:
  """The shared command line of every experiment script. `after(runs, root, csv_path)` keeps
  more of the finished runs than the CSV row (a study's training curves, say)."""
  p = parser(description, "experiments")
  p.set_defaults(seeds=default_seeds)
  args = p.parse_args()
  root = pathlib.Path(args.root)
  csv_path = pathlib.Path(args.csv or RESULTS / f"{csv_name}.csv")
  problem = results_csv_problem(csv_path)
  if problem:
    p.error(problem)
  all_runs = make_runs(args.seeds, args.tiny, root)
  recorded = frozenset() if args.rerun else frozenset(recorded_runs(csv_path))
  xla_cache = args.xla_cache
  if xla_cache is None:
    xla_cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(root / "xla-cache")
  if xla_cache and pathlib.Path(xla_cache).exists() and not pathlib.Path(xla_cache).is_dir():
    p.error(f"--xla_cache={xla_cache} is a file, not a directory")
  try:
    selected = execute(all_runs, root, only=args.only, dry_run=args.dry_run,
                       glue_dir=args.glue_dir, recorded=recorded, xla_cache=xla_cache)
  except BrokenPipeError:
    if not args.dry_run:
      raise
    # `--dry_run | head`: the reader has what it wanted; nothing more goes to the closed pipe.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
  if not args.dry_run:
    collect(all_runs, root, csv_path)
    if after is not None:
      after(all_runs, root, csv_path)
  return 0 if selected else 1
