"""The pod table of docs/multihost.md: `main.py --mode=compile` for teachers x topologies x meshes.

Each row is one TPU compile on this machine (libtpu, no TPU): the real step at 128 tokens,
bfloat16, AugPro-Mix, a 6x768 student, 32 examples per chip unless the row says otherwise. Each
run writes experiments/results/pod/NAME.json (the compile.json of that command); the table,
experiments/results/pod_table.md, is made from those files, and experiments/docs_tables.py copies
it into docs/multihost.md.

Commands (a big compile takes minutes of CPU; they run one at a time):
  .venv/bin/python experiments/pod_table.py              # every missing run, then the table
  .venv/bin/python experiments/pod_table.py --only NAME  # (re)run one row, then the table
  .venv/bin/python experiments/pod_table.py --table      # the table from the JSONs only
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
OUT = REPO / "experiments" / "results" / "pod"
TABLE = REPO / "experiments" / "results" / "pod_table.md"
COMMON = ("--dtype=bfloat16", "--max_seq_len=128", "--aug=augpro_mix", "--student_layers=6",
          "--student_hidden=768", "--student_heads=12")
CHIPS = {"v5e:4x4": 16, "v5e:16x16": 256, "v4:2x2x2": 8}

# name -> (step, teacher preset, topology, mesh_fsdp, examples per chip). The DeBERTa-v2-xxlarge
# fine-tuning rows take 8 examples per chip: without rematerialisation its activations alone at
# 32 per chip exceed a v5e chip (the last row shows it).
RUNS: dict[str, tuple[str, str, str, int, int]] = {
    "distill_bert_large_v5e16": ("distill", "bert-large", "v5e:4x4", 1, 32),
    "teacher_deberta_xxl_v5e16": ("train_teacher", "deberta-v2-xxlarge", "v5e:4x4", 1, 8),
    "teacher_deberta_xxl_v5e256_fsdp256": ("train_teacher", "deberta-v2-xxlarge", "v5e:16x16",
                                           256, 8),
    "distill_bert_large_v5e16_fsdp16": ("distill", "bert-large", "v5e:4x4", 16, 32),
    "distill_bert_base_v5e16": ("distill", "bert-base", "v5e:4x4", 1, 32),
    "distill_deberta_xxl_v5e16": ("distill", "deberta-v2-xxlarge", "v5e:4x4", 1, 32),
    "distill_roberta_large_v5e16": ("distill", "roberta-large", "v5e:4x4", 1, 32),
    "teacher_deberta_xxl_v5e256_fsdp256_b32": ("train_teacher", "deberta-v2-xxlarge", "v5e:16x16",
                                               256, 32),
}


def command(name: str) -> list[str]:
  step, teacher, topology, fsdp, per_chip = RUNS[name]
  return [".venv/bin/python", "main.py", "--mode=compile", f"--compile_step={step}",
          f"--compile_teacher={teacher}", f"--topology={topology}", f"--mesh_fsdp={fsdp}",
          f"--batch_size={per_chip * CHIPS[topology]}", *COMMON,
          f"--compile_out=experiments/results/pod/{name}.json"]


def run(name: str) -> None:
  cmd = command(name)
  print(" ".join(cmd), flush=True)
  subprocess.run([sys.executable, *cmd[1:]], cwd=REPO, check=True)


def _gib(value: float) -> str:
  return f"{value / 2**30:.2f}"


def row(name: str, report: dict) -> str:
  student = report["student"]
  mesh = report["mesh"]
  fits = "fits" if report["fits"] else "**does not fit**"
  roof = report.get("roofline")
  time_ms = f"{roof['step_seconds'] * 1e3:.1f} ({roof['bound']})" if roof else "-"
  mfu = f"{report['mfu']:.1%}" if "mfu" in report else "-"
  params = f"{report['teacher']['params'] / 1e6:.0f}M"
  return (f"| {name} | {report['step']} | {report['teacher']['preset']} ({params}) | "
          f"{'%dx%d' % (student['layers'], student['hidden']) if student else '-'} | "
          f"{report['topology']} | {mesh['data']}x{mesh['fsdp']} | {report['batch_per_chip']} | "
          f"{_gib(report['state_bytes_per_chip'] + report['teacher_bytes_per_chip'])} | "
          f"{'≥ ' if report['memory'].get('lower_bound') else ''}"
          f"{_gib(report['memory']['needed_bytes'])} / {_gib(report['chip']['hbm_bytes'])} | "
          f"{fits} | {time_ms} | {mfu} |")


def table() -> str:
  lines = [
      "| run | step | teacher (params) | student | topology | mesh data x fsdp | examples "
      "per chip | state + teacher GiB per chip | needed / HBM GiB per chip | verdict | "
      "roofline ms per step (bound) | roofline MFU |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for name in RUNS:
    path = OUT / f"{name}.json"
    if path.is_file():
      lines.append(row(name, json.loads(path.read_text())))
  lines += ["", "Every run: `" + " ".join(COMMON) + "`, plus, per row:", ""]
  lines += [f"- {name}: `{' '.join(command(name)[2:-len(COMMON) - 1])}`" for name in RUNS
            if (OUT / f"{name}.json").is_file()]
  lines += ["", "≥: not compiled, the state and teacher on a chip already exceed its HBM.",
            "", "Made by `experiments/pod_table.py` from experiments/results/pod/*.json (one "
            "`main.py --mode=compile` each, libtpu 0.0.42.1, jax 0.10.2)."]
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--only", choices=sorted(RUNS), help="run this row only")
  p.add_argument("--table", action="store_true", help="make the table from the JSONs only")
  args = p.parse_args(argv)
  OUT.mkdir(parents=True, exist_ok=True)
  if not args.table:
    names = [args.only] if args.only else [n for n in RUNS if not (OUT / f"{n}.json").is_file()]
    for name in names:
      run(name)
  TABLE.write_text(table())
  print(f"wrote {TABLE.relative_to(REPO)}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
