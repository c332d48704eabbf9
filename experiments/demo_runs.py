"""How long `make demo` takes and what it reaches, for two seeds (the README quotes the table).

Command (about 12 minutes on 2 cores, nothing else running):
  .venv/bin/python experiments/demo_runs.py
Runs `python main.py --flagfile=experiments/demo.flags` (the flags `make demo` passes) once per seed,
each in a fresh workdir, times the whole command (start-up, both phases, compiles, evaluation and
export), and writes experiments/results/demo_runs.json and demo_runs.md;
experiments/docs_tables.py copies the table into README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import time

from augpro_jax import files
from augpro_jax.bench import common

REPO = pathlib.Path(__file__).resolve().parents[1]
FLAGS = REPO / "experiments" / "demo.flags"
RESULTS = REPO / "experiments" / "results"


def run_demo(seed: int, workdir: pathlib.Path, glue_dir: str) -> dict:
  """One timed `main.py --flagfile=experiments/demo.flags` in a fresh `workdir`."""
  shutil.rmtree(workdir, ignore_errors=True)
  command = [sys.executable, str(REPO / "main.py"), f"--flagfile={FLAGS}", f"--seed={seed}",
             f"--workdir={workdir}", f"--glue_dir={glue_dir}", "--progress=false"]
  start = time.perf_counter()
  result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
  seconds = time.perf_counter() - start
  if result.returncode != 0:
    raise SystemExit(f"error: the demo with --seed={seed} failed: "
                     f"{(result.stderr.strip().splitlines() or ['?'])[-1]}")
  summary = json.loads((workdir / "summary.json").read_text())
  speed = summary["inference"]
  return {"seed": seed, "seconds": round(seconds, 1),
          "teacher_accuracy": summary["teacher_dev"]["accuracy"],
          "student_accuracy": summary["dev"]["accuracy"],
          "student_params": speed["student"]["params"], "teacher_params": speed["teacher"]["params"],
          "predict_speedup": speed["student"]["examples_per_sec"] / speed["teacher"]["examples_per_sec"],
          "last_line": result.stdout.strip().splitlines()[-1]}


def table(runs: list[dict], machine: str) -> str:
  rows = []
  for r in runs:
    minutes, seconds = divmod(round(r["seconds"]), 60)
    rows.append([str(r["seed"]), f"{minutes}m{seconds:02d}s", f"{100 * r['teacher_accuracy']:.1f}%",
                 f"{100 * r['student_accuracy']:.1f}%",
                 f"{r['student_params'] / 1e6:.1f}M / {r['teacher_params'] / 1e6:.1f}M",
                 f"{r['predict_speedup']:.1f}x"])
  headers = ["seed", "wall clock", "teacher dev accuracy", "student dev accuracy",
             "student / teacher parameters", "student's predict speed-up"]
  return "\n".join([f"`make demo` on {machine}, nothing else running (`experiments/demo_runs.py`; "
                    "wall clock of the whole command, set-up excluded):", "",
                    *common.table(headers, rows, left=0)]) + "\n"


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--seeds", default="0,1", help="Comma-separated seeds.")
  p.add_argument("--root", default=str(REPO / "runs" / "demo_runs"))
  p.add_argument("--glue_dir", default=os.environ.get("GLUE_DIR", str(REPO.parent / "shared" / "data" / "glue")))
  p.add_argument("--machine", default=None, help="How the table names the machine (default: the CPU model).")
  args = p.parse_args()
  try:
    seeds = [int(s) for s in args.seeds.split(",")]
  except ValueError:
    p.error(f"--seeds must be comma-separated integers: {args.seeds!r}")
  machine = args.machine or _cpu_model()
  runs = [run_demo(seed, pathlib.Path(args.root) / f"s{seed}", args.glue_dir) for seed in seeds]
  files.atomic_write(RESULTS / "demo_runs.json", json.dumps(
      {"command": f"main.py --flagfile={FLAGS.relative_to(REPO)}", "machine": machine,
       "runs": runs}, indent=2) + "\n", mkdir=True)
  files.atomic_write(RESULTS / "demo_runs.md", table(runs, machine))
  print(table(runs, machine))
  return 0


def _cpu_model() -> str:
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return f"{os.cpu_count()} cores of {line.split(':', 1)[1].strip()}"
  except OSError:
    pass
  return platform.processor() or "this machine"


if __name__ == "__main__":
  sys.exit(main())
