"""The reference docs' tables of measurements, made from the committed result files.

docs/benchmarks.md, docs/length_buckets.md and docs/design.md show these files in
<!-- generated:... --> blocks (experiments/docs_tables.py), so no measured number there is typed
by hand. Each table is a pure function of files in experiments/results/; nothing is measured here.
The benchmark JSONs do not record their command line or CPU: `RUNS` names both for each file, and
a benchmark JSON missing from it is an error, so a new result cannot be shown without them.

Command (about a second, no JAX):
  .venv/bin/python experiments/doc_tables_reference.py          # write every table
  .venv/bin/python experiments/doc_tables_reference.py --check  # exit 1 naming each stale table
experiments/docs_tables.py runs the same before it fills the docs.
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import sys
from typing import Any, Callable

RESULTS = pathlib.Path(__file__).resolve().parent / "results"

_SYNTH = "--max_seq_len=64 --batch_size=32"
_TASK = ("--benchmark_data=task --task={task} --max_seq_len=128 --batch_size=32 --dtype=float32 "
         "--benchmark_augs={augs} --benchmark_steps=20 --benchmark_warmup=2 --benchmark_rounds=5")
_INTEL = "Intel Xeon, quiet"
_INTEL_END = "Intel Xeon, another test suite in the last rounds"
_INTEL_SHARED = "Intel Xeon, another test suite throughout"
MACHINES = (
    "Intel Xeon: a 2-core VM, \"Intel(R) Xeon(R) Processor\" (AVX-512) in /proc/cpuinfo, 23 GiB, "
    "CPU only; jax 0.10.2, flax 0.12.8, torch 2.13.0 (CPU wheel, 2 threads), transformers 4.57.6.",
    "quiet: nothing else ran; another test suite: another process's tests shared the two cores "
    "(interleaving spreads that load over every contender, but absolute times are slower).")
# The Intel runs of `none` against the peers, one flag changed per pair (benchmarks.md).
_STEP = _SYNTH + " --benchmark_augs=none --benchmark_steps=10"
STEP_VARIANTS = {"benchmark_cpu_none_quiet": "",
                 "benchmark_cpu_dropout_bits32": "--dropout_bits=32",
                 "benchmark_cpu_dropout_bits16": "--dropout_bits=16",
                 "benchmark_cpu_attention_mask_per_head": "--attention_dropout_mask=per_head",
                 "benchmark_cpu_attention_mask_shared": "--attention_dropout_mask=shared",
                 "benchmark_cpu_dropout_rng_rbg": "--dropout_rng=rbg"}
# result file stem -> (flags after `main.py --mode=benchmark`, without --benchmark_out; machine)
RUNS: dict[str, tuple[str, str]] = {
    "benchmark_cpu": (_SYNTH, _INTEL),
    "benchmark_task_sst2_cpu": (_TASK.format(task="sst2", augs="none"), _INTEL_END),
    "benchmark_task_sst2_augpro_mix_cpu": (
        _TASK.format(task="sst2", augs="none,augpro_mix") + " --benchmark_peers=", _INTEL),
    "benchmark_task_qnli_cpu": (_TASK.format(task="qnli", augs="none"), _INTEL),
    "benchmark_cpu_none_augpro_mix": (
        _SYNTH + " --benchmark_augs=none,augpro_mix --benchmark_steps=10", _INTEL_SHARED),
    **{stem: (f"{_STEP} {flag}".rstrip(), _INTEL) for stem, flag in STEP_VARIANTS.items()},
    "benchmark_projection_search_cpu": (
        _SYNTH + " --benchmark_augs=augpro_mix,augpro_fgsm,knn --benchmark_peers= "
        "--benchmark_steps=20", "2-core VM, shared with other jobs (CPU not recorded)"),
}


def _load(results: pathlib.Path, stem: str) -> dict[str, Any]:
  return json.loads((results / f"{stem}.json").read_text(encoding="utf-8"))


def _source(stem: str) -> str:
  return (f"From `experiments/results/{stem}.json`; its command and machine are in the table of "
          "runs.")


def runs_table(results: pathlib.Path) -> str:
  """Every committed benchmark result with the command and the machine that made it."""
  found = sorted(p.stem for p in results.glob("benchmark_*.json"))
  unknown = [stem for stem in found if stem not in RUNS]
  if unknown:
    raise ValueError(f"no command and machine in RUNS for {', '.join(unknown)}")
  lines = ["| result (`experiments/results/`) | flags after `main.py --mode=benchmark` | machine |",
           "|---|---|---|"]
  for stem in found:
    flags, machine = RUNS[stem]
    lines.append(f"| `{stem}.{{json,md}}` | `{flags}` | {machine} |")
  return "\n".join([*lines, "", *(f"- {m}" for m in MACHINES)])


def _one(items: list[dict[str, Any]], key: str, value: str) -> dict[str, Any]:
  for item in items:
    if item.get(key) == value:
      return item
  raise ValueError(f"no {key} {value!r} in the result")


def _method(report: dict[str, Any], aug: str) -> dict[str, Any]:
  return _one(report["methods"], "aug", aug)


def _peer(report: dict[str, Any], name: str) -> dict[str, Any]:
  return _one(report["peers"], "name", name)


def _row(target: str, shown: str, met: bool) -> str:
  return f"| {target} | {shown} | {'yes' if met else 'no'} |"


def synthetic_targets(results: pathlib.Path) -> str:
  """The performance targets of the synthetic CPU step, against `benchmark_cpu.json`."""
  r = _load(results, "benchmark_cpu")
  mix, fgsm, mixup = (_method(r, a) for a in ("augpro_mix", "augpro_fgsm", "mixup"))
  flax, torch = (_peer(r, n)["ratio_ours_to_peer"] for n in ("hf_flax", "hf_torch"))
  ratio = r["parts"]["projection_memory_ratio"]
  over_mixup = mix["step_ms_median"] / mixup["step_ms_median"]
  same = lambda m: f"{m['ratio_to_none_same_examples']:.2f} × `none` on as many examples"
  rows = [
      _row("`augpro_mix` step ≤ 1.25 × `none`",
           f"{mix['ratio_to_none']:.2f} × ({same(mix)}; {over_mixup:.2f} × `mixup`)",
           mix["ratio_to_none"] <= 1.25),
      _row("`augpro_fgsm` ≤ 1.8 × `none`",
           f"{fgsm['ratio_to_none']:.2f} × ({same(fgsm)})", fgsm["ratio_to_none"] <= 1.8),
      _row("projection ≤ 15% of the `augpro_mix` step",
           f"{100 * mix['projection_fraction']:.1f}%", mix["projection_fraction"] <= 0.15),
      _row("projection memory ≤ 1/8 of the naive score matrix", f"{ratio:.3f}",
           ratio <= 0.125),
      _row("our `none` step ≥ 1.2 × HF Flax", f"{flax:.2f} ×", flax >= 1.2),
      _row("our `none` step ≥ 1.0 × PyTorch", f"{torch:.2f} ×", torch >= 1.0)]
  batch64 = r["none_same_examples"]
  return "\n".join([
      _source("benchmark_cpu"), "",
      f"\"x none (same examples)\" divides by the `none` step at batch {batch64['batch']} "
      f"({batch64['step_ms_median']:.0f} ms), as many rows as an augmented step trains on.", "",
      "| target | measured | met? |", "|---|---|---|", *rows])


def task_targets(results: pathlib.Path) -> str:
  """The length-bucket targets and the training split's lengths, against the SST-2 task run."""
  r = _load(results, "benchmark_task_sst2_cpu")
  data, ratios = r["data"], r["ratios"]
  ours = _one(r["methods"], "name", "none")  # bucketed; "none@max_seq_len" is fixed padding
  split = data["split_token_utilisation"]
  lengths = data["lengths"]
  warmup, steps = r["timing"]["warmup"], r["timing"]["steps"]
  timed = data["batch_lengths"][warmup:warmup + steps]
  counts = ", ".join(f"{n} ({timed.count(n)})" if timed.count(n) > 1 else str(n)
                     for n in sorted(set(timed)))
  rows = [
      _row("bucketed `none` ≥ 3.0 × HF Flax (fixed padding)",
           f"{ratios['none_over_hf_flax']:.2f} ×", ratios["none_over_hf_flax"] >= 3.0),
      _row("bucketed `none` ≥ 1.25 × PyTorch (dynamic padding)",
           f"{ratios['none_over_hf_torch']:.2f} ×", ratios["none_over_hf_torch"] >= 1.25),
      _row("bucketed `none` ≥ 3.0 × ours with `--length_buckets=none`",
           f"{ratios['buckets_over_max_seq_len']['none']:.2f} ×",
           ratios["buckets_over_max_seq_len"]["none"] >= 3.0),
      _row("training token utilisation ≥ 0.75",
           f"{ours['token_utilisation']:.2f} in the timed batches; {split['buckets']:.2f} over "
           "the split", min(ours["token_utilisation"], split["buckets"]) >= 0.75)]
  return "\n".join([
      _source("benchmark_task_sst2_cpu"), "",
      f"The {data['train_examples']:,} training examples are {lengths['mean']:.1f} tokens long "
      f"on average (median {lengths['median']:.0f}, 95th percentile {lengths['p95']:.0f}, "
      f"longest {lengths['max']}); the buckets are {', '.join(map(str, data['length_buckets']))}, "
      f"with which {split['buckets']:.0%} of the split's tokens are real ({split['fixed']:.0%} "
      f"at `--max_seq_len`). The {len(timed)} timed batches have lengths {counts} "
      "(batches per length in brackets).", "",
      "| target | measured | met? |", "|---|---|---|", *rows])


def step_variants(results: pathlib.Path) -> str:
  """Our `none` step against the peers in the Intel runs, one flag changed per pair of runs."""
  lines = ["| result | flag | ours ms | HF Flax ms | ours / HF Flax | PyTorch ms | ours / PyTorch "
           "| teacher forward ms | student forward+backward+update ms |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
  steps = set()
  for stem, flag in STEP_VARIANTS.items():
    r = _load(results, stem)
    steps.add(r["timing"]["steps"])
    flag = flag or "(defaults)"
    none, flax, torch = _method(r, "none"), _peer(r, "hf_flax"), _peer(r, "hf_torch")
    lines.append(
        f"| `{stem}` | `{flag}` | {none['step_ms_median']:.0f} | {flax['step_ms_median']:.0f} | "
        f"{flax['ratio_ours_to_peer']:.2f} | {torch['step_ms_median']:.0f} | "
        f"{torch['ratio_ours_to_peer']:.2f} | {r['parts']['teacher_forward_ms']:.0f} | "
        f"{r['parts']['student_forward_backward_update_ms']:.0f} |")
  return "\n".join([f"Step times are medians of {'/'.join(map(str, sorted(steps)))} interleaved "
                    "steps; a ratio above 1 means our step is the faster.", "", *lines])


def _demo_rows(by: dict[tuple[str, str, int], dict[str, str]], seeds: list[int],
               paddings: tuple[str, ...]) -> list[str]:
  lines = ["| seed | padding | teacher buckets | teacher s | teacher examples/s | student buckets "
           "| student s | student examples/s | student train token utilisation | teacher dev acc. "
           "| student dev acc. |", "|---:|---|---|---:|---:|---|---:|---:|---:|---:|---:|"]
  for seed in seeds:
    for padding in paddings:
      t, s = by[("teacher", padding, seed)], by[("student", padding, seed)]
      lines.append(
          f"| {seed} | {'auto' if padding == 'auto' else 'fixed'} | {t['length_buckets']} | "
          f"{float(t['wallclock_seconds']):.0f} | {float(t['examples_per_sec']):.1f} | "
          f"{s['length_buckets']} | {float(s['wallclock_seconds']):.0f} | "
          f"{float(s['examples_per_sec']):.1f} | {float(s['train_token_utilisation']):.2f} | "
          f"{100 * float(t['dev_accuracy']):.1f} | {100 * float(s['dev_accuracy']):.1f} |")
  return lines


def bucket_demo(results: pathlib.Path) -> str:
  """The short recipe's teacher and student, with buckets and with fixed padding, per seed."""
  from experiments import bucket_accuracy  # pylint: disable=g-import-not-at-top
  from experiments import grid  # pylint: disable=g-import-not-at-top
  path = results / "bucket_accuracy.csv"
  with path.open(encoding="utf-8", newline="") as f:
    rows = list(csv.DictReader(f))
  by = {(r["role"], r["padding"], int(r["seed"])): r for r in rows}
  seeds, paddings = sorted({k[2] for k in by}), bucket_accuracy.PADDINGS
  mean = lambda padding, role, key: sum(
      float(by[(role, padding, seed)][key]) for seed in seeds) / len(seeds)
  wall = {p: mean(p, "teacher", "wallclock_seconds") + mean(p, "student", "wallclock_seconds")
          for p in paddings}
  speed = {p: mean(p, "student", "examples_per_sec") for p in paddings}
  predictions = grid.load_predictions(grid.predictions_path(path))
  return "\n".join([
      "From `experiments/results/bucket_accuracy.csv` (wall clock of each run's training, "
      "compiles included). Every student distils from seed 0's fixed-padding teacher.", "",
      *_demo_rows(by, seeds, paddings), "",
      f"Mean over seeds: teacher and student together {wall['auto']:.0f} s with buckets against "
      f"{wall['none']:.0f} s with fixed padding ({wall['none'] / wall['auto']:.2f} ×); the "
      f"student trains {speed['auto'] / speed['none']:.2f} × as many examples/s.", "",
      *bucket_accuracy.table(rows, predictions)])


def augmentation_defaults(results: pathlib.Path) -> str:
  """The rows of show_augmentations.md that run an `--aug` with every other knob at its default."""
  kept = [line for line in
          (results / "show_augmentations.md").read_text(encoding="utf-8").splitlines()
          if line.startswith(("| variant", "|---", "| original |"))
          or (line.startswith("| `--aug=") and line.split("`")[1].count("--") == 1)]
  return "\n".join(["From `experiments/results/show_augmentations.md` (shift degree 0.3, seed 0):",
                    "", *kept])


TABLES: dict[str, Callable[[pathlib.Path], str]] = {
    "benchmark_runs.md": runs_table,
    "benchmark_cpu_targets.md": synthetic_targets,
    "benchmark_task_sst2_targets.md": task_targets,
    "benchmark_cpu_step_variants.md": step_variants,
    "bucket_demo.md": bucket_demo,
    "show_augmentations_defaults.md": augmentation_defaults,
}


def update(results: pathlib.Path = RESULTS, check: bool = False) -> list[str]:
  """Names of the tables whose file differs from what the results make; rewritten unless `check`."""
  stale = []
  for name, make in TABLES.items():
    text = make(results) + "\n"
    path = results / name
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
      stale.append(name)
      if not check:
        path.write_text(text, encoding="utf-8")
  return stale


def main(argv: list[str]) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is stale")
  args = p.parse_args(argv)
  try:
    stale = update(check=args.check)
  except (ValueError, OSError, KeyError) as e:
    p.error(str(e))
  if args.check and stale:
    print(f"stale tables: {', '.join(stale)}: run experiments/doc_tables_reference.py",
          file=sys.stderr)
    return 1
  print("\n".join(f"wrote experiments/results/{n}" for n in stale) if stale
        else "every reference table is current")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
