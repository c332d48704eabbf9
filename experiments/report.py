"""Turn the experiment CSVs into markdown tables (mean ± std over seeds) and PNG plots.

Command (seconds): .venv/bin/python experiments/report.py
Reads the paired protocol's CSVs (report.PAIRED), bucket_accuracy.csv, lr_defaults.csv,
small_tasks.csv and fgsm_diagnosis.csv (with its trace) with their
*_predictions.npz (whichever exist) in experiments/results/ and writes report.md, one plot per
study (<study>.png) and README.md's accuracy paragraph (accuracy_summary.md, which
experiments/docs_tables.py copies into README.md) beside them. It also writes each table into
experiments/README.md, between `<!-- report:NAME:begin -->` and `<!-- report:NAME:end -->` (NAME
is one of report.BLOCKS), and leaves the text outside those markers alone: the results tables
there are never edited by hand. With another `--results`, no README is touched
unless `--readme` names one.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import pathlib
import re
import statistics
from collections import defaultdict
from typing import Optional

from augpro_jax import tasks as tasks_lib
from experiments import bucket_accuracy
from experiments import epoch_defaults
from experiments import fgsm_diagnosis
from experiments import grid
from experiments import headline
from experiments import lr_defaults
from experiments import markers
from experiments import plan
from experiments import protocol
from experiments import small_tasks
from experiments import stats
from experiments import teachers

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
README = RESULTS.parent / "README.md"
NAME = "[a-z]+"  # so that `<!-- report:NAME:begin -->` in prose is not a block
BLOCK = markers.block_pattern("report", NAME)
# The CSV column of each task's main metric (the task specs say which metric that is).
# The protocol's CSVs.
PAIRED = ("paired_comparison", "paired_shift", "paired_copies", "paired_fullsize",
          "paired_copies_long")
BLOCKS = ("comparison", "classshare", "shift", "fullsize", "copies", "copieslong", "claims", "buckets",
          "learningrate", "smalltasks", "epochdefaults", "teachers", "runtimes", "plan",
          "fgsmdiagnosis")
SHIFT_TITLE = "Shift degree (SST-2 dev accuracy x100, mean ± std over seeds)"
FULLSIZE_TITLE = ("Shift degree on all 67,349 SST-2 examples (dev accuracy x100, mean ± std over "
                  "seeds)")
MODES = ("finetune", "distill")
MAIN_METRIC = {name: "dev_" + task.main_metric for name, task in tasks_lib.TASKS.items()}


def read(path: pathlib.Path, teachers: bool = False) -> list[dict[str, str]]:
  """The student runs of one CSV (teacher rows are referenced through `teacher_*` columns), or
  every run with `teachers`."""
  if not path.exists():
    return []
  with open(path, encoding="utf-8") as f:
    return [row for row in csv.DictReader(f) if teachers or row.get("mode") != "teacher"]


def num(value) -> float:
  try:
    return float(value)
  except (TypeError, ValueError):
    return math.nan


def mean_std(values: list[float]) -> tuple[float, float, int]:
  values = [v for v in values if not math.isnan(v)]
  if not values:
    return math.nan, math.nan, 0
  return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


def fmt(values: list[float], scale: float = 100.0) -> str:
  mean, std, n = mean_std(values)
  if n == 0:
    return "-"
  if n == 1:  # one seed has no spread to show
    return f"{scale * mean:.1f} (n=1)"
  return f"{scale * mean:.1f} ± {scale * std:.1f}" + ("" if n >= 3 else f" (n={n})")


def comparison_tables_and_plot(rows, teacher_rows, out_png: pathlib.Path) -> list[str]:
  """The paired comparison: per task, each arm's dev metric over seeds and its paired difference
  from `none` (same seeds, same teacher: protocol.reference_arm) with a 95% t interval; one plot of
  those differences."""
  tasks = [t for t in MAIN_METRIC if any(r["task"] == t for r in rows)]
  # The first teacher of each task (a `-t2` teacher, trained again, is in the teachers table).
  teachers = {r["task"]: num(r.get(MAIN_METRIC.get(r["task"], "dev_accuracy")))
              for r in teacher_rows
              if r.get("mode") == "teacher" and not protocol.is_retrained_teacher(r["run"])}
  lines = ["### AugPro comparison (KD at 2,000 examples, shift 0.3; dev metric x100)", ""]
  differences = {}  # task -> [(arm, PairedDifference)]
  for task in tasks:
    metric = MAIN_METRIC[task]
    task_rows = [r for r in rows if r["task"] == task]
    by_arm = defaultdict(dict)  # arm -> seed -> metric
    for r in task_rows:
      by_arm[r.get("arm") or r["aug"]][r["seed"]] = num(r.get(metric))
    teacher = teachers.get(task, math.nan)
    lines += [f"**{task}** (teacher {100 * teacher:.1f})" if not math.isnan(teacher) else
              f"**{task}**", "",
              f"| arm | seeds | {metric[4:]} (mean ± std) | arm − none (95% CI) | measured shift "
              "| wall s/run |", "|---|---:|---:|---|---:|---:|"]
    for arm, values in by_arm.items():
      none = by_arm.get(protocol.reference_arm(arm), {})
      if arm == protocol.reference_arm(arm):
        diff_cell = "-"
      else:
        seeds = sorted(set(values) & set(none))
        d = stats.paired_difference([values[s] for s in seeds], [none[s] for s in seeds])
        diff_cell = (f"{100 * d.mean:+.2f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}]" if d.n > 1
                     else f"{100 * d.mean:+.2f} (one seed)" if d.n else "-")
        if d.n > 1:
          differences.setdefault(task, []).append((arm, d))
      arm_rows = [r for r in task_rows if (r.get("arm") or r["aug"]) == arm]
      shift = mean_std([num(r.get("measured_shift")) for r in arm_rows])[0]
      wall = mean_std([num(r.get("wallclock_seconds")) for r in arm_rows])[0]
      lines.append(f"| {arm} | {len(values)} | {fmt(list(values.values()))} | {diff_cell} | "
                   + ("-" if math.isnan(shift) else f"{shift:.3f}")
                   + " | " + ("-" if math.isnan(wall) else f"{wall:.0f}") + " |")
    lines.append("")
  if differences:
    _plot_differences(differences, out_png)
    lines.append(f"![paired comparison]({out_png.name})")
  return lines


def _pyplot():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def _plot_differences(differences, out_png):
  plt = _pyplot()
  fig, axes = plt.subplots(1, len(differences), figsize=(5 * len(differences), 3.5),
                           squeeze=False)
  for ax, (task, arms) in zip(axes[0], differences.items()):
    ys = range(len(arms))
    means = [100 * d.mean for _, d in arms]
    errors = [[100 * (d.mean - d.low) for _, d in arms], [100 * (d.high - d.mean) for _, d in arms]]
    ax.errorbar(means, list(ys), xerr=errors, fmt="o", capsize=3)
    ax.axvline(0, color="grey", linewidth=1)
    ax.set_yticks(list(ys), [arm for arm, _ in arms])
    ax.invert_yaxis()
    ax.set_title(f"{task}: arm − none (95% CI over seeds)")
    ax.set_xlabel("dev accuracy difference (points)")
    ax.grid(alpha=0.3, axis="x")
  fig.tight_layout()
  fig.savefig(out_png, dpi=110)
  plt.close(fig)


def shift_tables_and_plot(rows, out_png: pathlib.Path, title: str = SHIFT_TITLE) -> list[str]:
  sizes = sorted({int(r["train_size"]) for r in rows})
  degrees = sorted({num(r["shift_degree"]) for r in rows})
  series = defaultdict(list)  # (size, method, mode, degree) -> accuracies
  for r in rows:
    series[(int(r["train_size"]), r["aug"], r["mode"], num(r["shift_degree"]))].append(
        num(r["dev_accuracy"]))
  lines = [f"### {title}", ""]
  best_lines = ["", "| train size | mode | best degree (mean over methods) | best − runner-up "
                "(x100, 95% CI over seeds) |", "|---|---|---:|---|"]
  for size in sizes:
    lines += [f"**{size} training examples**", "",
              "| method | mode | " + " | ".join(f"p={d}" for d in degrees) + " |",
              "|---|---|" + "---:|" * len(degrees)]
    for method in sorted({k[1] for k in series if k[0] == size}):
      for mode in ("finetune", "distill"):
        cells = [fmt(series.get((size, method, mode, d), [])) for d in degrees]
        lines.append(f"| {method} | {mode} | " + " | ".join(cells) + " |")
    lines.append("")
    for mode in ("finetune", "distill"):
      # Mean of per-method means: a method run with more seeds does not weigh more.
      per_degree = {d: mean_std([mean_std(vs)[0] for k, vs in series.items()
                                 if k[0] == size and k[2] == mode and k[3] == d])[0]
                    for d in degrees}
      per_degree = {d: v for d, v in per_degree.items() if not math.isnan(v)}
      if per_degree:
        best = max(per_degree, key=per_degree.get)
        best_lines.append(f"| {size} | {mode} | {best} ({100 * per_degree[best]:.1f}) | "
                          f"{_best_margin(rows, size, mode, best, per_degree)} |")
  _plot_shift(series, sizes, degrees, out_png)
  return (lines + best_lines + [""] + kd_minus_finetune_table(rows, sizes, degrees)
          + ["", f"![shift degree]({out_png.name})"])


def _best_margin(rows, size: int, mode: str, best: float, per_degree: dict[float, float]) -> str:
  """The best degree minus the runner-up, paired by seed; each seed's value at a degree is the
  mean over the methods it has there (both degrees need the seed)."""
  if len(per_degree) < 2:
    return "-"
  second = sorted(per_degree, key=per_degree.get)[-2]

  def by_seed(degree):
    values = defaultdict(list)
    for r in rows:
      if (int(r["train_size"]) == size and r["mode"] == mode
          and num(r["shift_degree"]) == degree):
        values[r["seed"]].append(num(r["dev_accuracy"]))
    return {seed: statistics.mean(v) for seed, v in values.items()}
  a, b = by_seed(best), by_seed(second)
  seeds = sorted(set(a) & set(b))
  d = stats.paired_difference([a[s] for s in seeds], [b[s] for s in seeds])
  interval = (f"[{100 * d.low:+.2f}, {100 * d.high:+.2f}]" if d.n > 1 else "(one seed)")
  return f"over {second}: {100 * d.mean:+.2f} {interval}" if d.n else "-"


def kd_minus_finetune_table(rows, sizes, degrees) -> list[str]:
  """KD minus fine-tuning accuracy over runs that share method, size, degree and seed.

  Pairing by seed removes the subset and initialisation noise the two modes share, which the
  per-mode means above keep; the count says in how many pairs KD came out ahead.
  """
  accuracy = {(int(r["train_size"]), r["aug"], num(r["shift_degree"]), r["seed"], r["mode"]):
              num(r["dev_accuracy"]) for r in rows}
  lines = ["| train size | " + " | ".join(f"p={d}" for d in degrees) + " |",
           "|---|" + "---:|" * len(degrees)]
  for size in sizes:
    cells = []
    for d in degrees:
      gaps = [accuracy[key] - accuracy[key[:4] + ("finetune",)] for key in accuracy
              if key[0] == size and key[2] == d and key[4] == "distill"
              and key[:4] + ("finetune",) in accuracy]
      gaps = [g for g in gaps if not math.isnan(g)]
      if not gaps:
        cells.append("-")
        continue
      # round(...) + 0.0 turns -0.0 into 0.0: a gap of -0.03 prints as +0.0, not -0.0.
      mean_gap = round(100 * statistics.mean(gaps), 1) + 0.0
      cells.append(f"{mean_gap:+.1f} ({sum(g > 0 for g in gaps)}/{len(gaps)} > 0)")
    lines.append(f"| {size} | " + " | ".join(cells) + " |")
  return ["KD minus fine-tuning, paired by method and seed (mean x100; pairs where KD is ahead):",
          ""] + lines


def _plot_shift(series, sizes, degrees, out_png):
  plt = _pyplot()
  fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), squeeze=False, sharey=True)
  # One colour per method across panels (mode is the line style), and a legend on every panel:
  # the panels need not hold the same methods.
  methods = sorted({k[1] for k in series})
  colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
  for ax, size in zip(axes[0], sizes):
    for method in sorted({k[1] for k in series if k[0] == size}):
      for mode, style in (("finetune", "--"), ("distill", "-")):
        xs, ys, es = [], [], []
        for d in degrees:
          mean, std, n = mean_std(series.get((size, method, mode, d), []))
          if n:
            xs.append(d), ys.append(100 * mean), es.append(100 * std)
        if xs:
          ax.errorbar(xs, ys, yerr=es, linestyle=style, marker="o", capsize=3,
                      color=colours[method], label=f"{method} ({mode})")
    ax.set_title(f"SST-2, {size} training examples")
    ax.set_xlabel("shift degree")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  axes[0][0].set_ylabel("dev accuracy (%)")
  fig.tight_layout()
  fig.savefig(out_png, dpi=110)
  plt.close(fig)


def copies_table_and_plot(rows, out_png: Optional[pathlib.Path] = None,
                          steps: str = "3 epochs") -> list[str]:
  copies = sorted({int(r["aug_copies"]) for r in rows})
  lines = [f"### Augmented copies per example (augpro_mix, shift 0.3, {steps}; SST-2 dev accuracy "
           "x100)", "",
           "| copies | finetune | distill |", "|---:|---:|---:|"]
  series = {mode: [[num(r["dev_accuracy"]) for r in rows if int(r["aug_copies"]) == c and
                    r["mode"] == mode] for c in copies] for mode in MODES}
  for i, c in enumerate(copies):
    lines.append(f"| {c} | " + " | ".join(fmt(series[mode][i]) for mode in MODES) + " |")
  if out_png is not None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for mode, style in zip(MODES, ("--", "-")):
      points = [(c, mean_std(v)) for c, v in zip(copies, series[mode]) if mean_std(v)[2]]
      if points:
        ax.errorbar([c for c, _ in points], [100 * m for _, (m, _, _) in points],
                    yerr=[100 * s for _, (_, s, _) in points], linestyle=style, marker="o",
                    capsize=3, label=mode)
    ax.set_xscale("log", base=2)
    ax.set_xticks(copies, [str(c) for c in copies])
    ax.set_xlabel("augmented copies per example")
    ax.set_ylabel("dev accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    lines += ["", f"![augmented copies]({out_png.name})"]
  return lines


def fill_blocks(text: str, blocks: dict[str, str]) -> str:
  """`text` with every report marker block replaced by `blocks[NAME]`; the text outside is kept.

  Raises ValueError for a block NAME that has no table, and for a begin marker without its end.
  """
  unknown = sorted(set(markers.names(text, "report", NAME)) - set(blocks))
  if unknown:
    raise ValueError(f"no table for marker block(s) {', '.join(unknown)}; "
                     f"known: {', '.join(sorted(blocks))}")
  return markers.fill(text, "report", blocks.__getitem__, NAME)


def _relink(lines: list[str], prefix: str) -> list[str]:
  """Point the images of `lines` (named relative to the results folder) at `prefix`/name."""
  return [re.sub(r"(!\[[^\]]*\]\()([^/)]+\))", rf"\g<1>{prefix}/\g<2>", line) for line in lines]


def _sections(results: pathlib.Path) -> dict[str, list[str]]:
  """Each README block's lines, for the studies that have results; writes the plots and
  accuracy_summary.md (README.md's accuracy paragraph) into `results`."""
  sections = {}
  comparison = read(results / "paired_comparison.csv", teachers=True)
  if any(row.get("mode") != "teacher" for row in comparison):
    sections["comparison"] = comparison_tables_and_plot(
        [row for row in comparison if row.get("mode") != "teacher"], comparison,
        results / "paired_comparison.png")
    predictions = grid.load_predictions(grid.predictions_path(results / "paired_comparison.csv"))
    sections["classshare"] = [line for task in dict.fromkeys(r["task"] for r in comparison)
                              for line in headline.class_share_table(comparison, predictions, task)
                              + [""]]
  for name, study, title in (("shift", "paired_shift", SHIFT_TITLE),
                             ("fullsize", "paired_fullsize", FULLSIZE_TITLE)):
    rows = read(results / f"{study}.csv")
    if rows:
      sections[name] = shift_tables_and_plot(rows, results / f"{study}.png", title)
  for name, study, steps in (("copies", "paired_copies", "3 epochs"),
                             ("copieslong", "paired_copies_long", "625 steps")):
    rows = read(results / f"{study}.csv")
    if rows:
      sections[name] = copies_table_and_plot(rows, results / f"{study}.png", steps)
  if any((results / f"{study}.csv").exists() for study in PAIRED):
    judged = protocol.judge(
        lambda study: read(results / f"{study}.csv"),
        lambda study: grid.load_predictions(grid.predictions_path(results / f"{study}.csv")))
    sections["claims"] = ["### Claims (paired by seed; verdicts by the rule in experiments/README.md)",
                          ""] + protocol.claims_table(judged)
    (results / "accuracy_summary.md").write_text(
        headline.accuracy_paragraph(judged, comparison) + "\n", encoding="utf-8")
  studies = {study: read(results / f"{study}.csv", teachers=True)
             for study in PAIRED + ("fgsm_diagnosis",)}
  teacher_rows = [row for rows in studies.values() for row in rows]
  if teacher_rows:
    sections["teachers"] = teachers.table(
        {k: v for k, v in studies.items() if v},
        {k: grid.load_predictions(grid.predictions_path(results / f"{k}.csv")) for k in studies},
        MAIN_METRIC)
    sections["runtimes"] = headline.runtimes_table({k: v for k, v in studies.items() if v})
  sections["plan"] = plan.table(results)
  buckets = results / "bucket_accuracy.csv"
  if buckets.exists():
    sections["buckets"] = bucket_accuracy.report_section(
        lambda: read(buckets, teachers=True), lambda: grid.load_predictions(grid.predictions_path(buckets)))
  rates = results / "lr_defaults.csv"
  if rates.exists():
    sections["learningrate"] = lr_defaults.report_section(
        read(rates), grid.load_predictions(grid.predictions_path(rates)))
  small = results / "small_tasks.csv"
  if small.exists():
    sections["smalltasks"] = small_tasks.report_section(
        read(small, teachers=True), grid.load_predictions(grid.predictions_path(small)))
  diagnosis = results / "fgsm_diagnosis.csv"
  if diagnosis.exists():
    sections["fgsmdiagnosis"] = fgsm_diagnosis.report_section(
        read(diagnosis), fgsm_diagnosis.read_traces(fgsm_diagnosis.trace_path(diagnosis)),
        grid.load_predictions(grid.predictions_path(diagnosis)), results / "fgsm_diagnosis.png")
  epochs = results / "epoch_defaults.csv"
  if epochs.exists():
    sections["epochdefaults"] = epoch_defaults.report_section(read(epochs, teachers=True))
  return sections


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--results", default=str(RESULTS))
  p.add_argument("--readme", default=None,
                 help="markdown file whose report marker blocks to fill (default: "
                      "experiments/README.md with the default --results, else none)")
  args = p.parse_args()
  results = pathlib.Path(args.results)
  readme = (pathlib.Path(args.readme) if args.readme
            else README if results.resolve() == RESULTS else None)
  readme_text = None
  if readme is not None:
    try:
      readme_text = readme.read_text(encoding="utf-8")
    except OSError as e:
      p.error(f"cannot read --readme {readme}: {e.strerror or e}")
  sections = _sections(results)
  text = "\n\n".join("\n".join(s) for s in sections.values()) or "No results yet."
  if readme_text is not None:
    prefix = pathlib.Path(os.path.relpath(results.resolve(), readme.resolve().parent)).as_posix()
    blocks = {name: "\n".join(_relink(lines, prefix)) for name, lines in sections.items()}
    blocks.update({name: "No results yet." for name in BLOCKS if name not in blocks})
    try:
      filled = fill_blocks(readme_text, blocks)
    except ValueError as e:
      p.error(f"{readme}: {e}")
  (results / "report.md").parent.mkdir(parents=True, exist_ok=True)
  (results / "report.md").write_text(text + "\n")
  if readme_text is not None and filled != readme_text:
    readme.write_text(filled, encoding="utf-8")
  print(text)


if __name__ == "__main__":
  main()
