"""What README.md says about accuracy, and what the runs cost, written from the judged claims and CSVs.

`report.py` writes `accuracy_paragraph` to experiments/results/accuracy_summary.md, which
`docs_tables.py` copies into README.md (a `generated:` block, so an edit by hand fails
`docs_tables.py --check`), and `runtimes_table` into experiments/README.md. Every effect in the
paragraph is a claim of experiments/protocol.py, stated with its family-wise interval and
verdict and nothing more.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any

from experiments import protocol

# The claims the paragraph states, in order (the claims table has all of them).
HEADLINE = (
    "sst2: KD with augpro_fgsm beats KD without augmentation",
    "sst2: AugPro-FGSM beats FGSM on embeddings",
    "sst2: AugPro-Mix beats MixUp on embeddings",
    "qnli: KD with augpro_mix beats KD without augmentation",
    "qnli: AugPro-Mix beats MixUp on embeddings",
    "3 epochs: KD gains from 8 copies over 1",
    "n=1000, augpro_mix: KD − fine-tuning rises with the degree (slope over p=0-0.7, points per "
    "unit of p)",
    "n=1000, knn: KD − fine-tuning rises with the degree (slope over p=0-0.7, points per unit of p)",
    "knn: p=0.5 over p=0.3 gains more at 1,000 examples than at 10,000 (KD)",
)


def _effect(result: dict[str, Any]) -> str:
  d = result["family_diff"]
  return (f"{result['claim']}: {100 * d.mean:+.2f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}], "
          f"{result['verdict']}")


def _is(count: int) -> str:
  return "is" if count == 1 else "are"


def _runs(rows: list[dict[str, str]], task: str) -> list[tuple[float, str]]:
  return sorted((float(r["dev_accuracy"]), r["run"]) for r in rows
                if r.get("task") == task and r.get("mode") != "teacher")


def accuracy_paragraph(results: list[dict[str, Any]], comparison: list[dict[str, str]]) -> str:
  """The README's accuracy bullet, from the judged claims and the comparison CSV's rows."""
  by_claim = {r["claim"]: r for r in results}
  teachers, retrained = {}, {}
  for r in comparison:
    if r.get("mode") == "teacher":
      (retrained if protocol.is_retrained_teacher(r["run"]) else teachers)[r["task"]] = \
          float(r["dev_accuracy"])
  counts = {v: sum(r["verdict"] == v for r in results)
            for v in ("supported", "not supported", "inconclusive")}
  text = ["- **Accuracy** (CPU-scale runs: MiniLM teachers, 2-layer students, paired seeds; "
          "written by `experiments/report.py`). Teachers: SST-2 "
          f"{100 * teachers.get('sst2', math.nan):.1f}% dev accuracy (all 67,349 examples), QNLI "
          f"{100 * teachers.get('qnli', math.nan):.1f}%"
          + (f" (trained again for the `_t2` arms: {100 * retrained['qnli']:.1f}%)"
             if "qnli" in retrained else "") + ". Each study's claims form a family: "
          "intervals are Bonferroni-adjusted and McNemar p-values Holm-adjusted, so that a false "
          "\"supported\" anywhere in a study has a chance of at most 5%. Of "
          f"{len(results)} claims, {counts['supported']} {_is(counts['supported'])} supported, "
          f"{counts['not supported']} not supported and {counts['inconclusive']} inconclusive. "
          "Effects in points (A − B x100, family-wise interval, verdict):"]
  # And the claim of each revised arm (protocol.REVISED_FGSM), whichever setting was chosen.
  revised = tuple(c.text for c in protocol.claims()
                  if c.a.get("arm", "").endswith(protocol.RETRAINED_SUFFIX))
  text += [f"  {_effect(by_claim[c])};" for c in HEADLINE + revised if c in by_claim]
  qnli = _runs(comparison, "qnli")
  if qnli:
    low, high = qnli[0], qnli[-1]
    text.append(f"  QNLI students (2,000 pairs, {len(qnli)} runs) score {100 * low[0]:.1f}% "
                f"(`{low[1]}`) to {100 * high[0]:.1f}% (`{high[1]}`), against about 50% for a "
                "constant answer.")
  text.append("  Every claim, the rule and the commands: [experiments/README.md]"
              "(experiments/README.md).")
  # One markdown list item: each piece wrapped at 100 columns, continuation lines indented.
  return "\n".join(textwrap.fill(piece.strip(), 100, initial_indent="" if i == 0 else "  ",
                                 subsequent_indent="  ", break_on_hyphens=False,
                                 break_long_words=False) for i, piece in enumerate(text))


def runtimes_table(studies: dict[str, list[dict[str, str]]]) -> list[str]:
  """Per study and task or size: runs, seconds per run and hours; a total that counts each run
  once (a run listed in several CSVs with the same wall clock is one run; a run trained again,
  with its own wall clock, is another)."""
  lines = ["| study | part | runs | seconds per run (min-max) | hours |", "|---|---|---:|---|---:|"]
  seen: dict[tuple[str, str], float] = {}
  for study, rows in studies.items():
    groups: dict[str, list[float]] = {}
    for r in rows:
      key = (r["run"], r.get("wallclock_seconds", ""))
      if key in seen or not r.get("wallclock_seconds"):
        continue
      seen[key] = float(r["wallclock_seconds"])
      part = ("teacher " + r["task"] if r.get("mode") == "teacher"
              else r.get("task", "") + (f", {int(float(r['train_size'])):,} examples"
                                        if r.get("train_size") else ""))
      if r.get("arm", "").endswith(protocol.RETRAINED_SUFFIX):
        part += ", retrained teacher"
      if r.get("cpu"):  # rows without it ran before the column, on the VM the README names
        part += f", {r['cpu']}"
      groups.setdefault(part, []).append(seen[key])
    for part, seconds in groups.items():
      lines.append(f"| {study} | {part} | {len(seconds)} | {min(seconds):.0f}-{max(seconds):.0f} | "
                   f"{sum(seconds) / 3600:.2f} |")
  lines += ["", f"Total: {len(seen)} runs, {sum(seen.values()) / 3600:.1f} hours of wall clock."]
  return lines


def class1_share(values: Any) -> float:
  """The share of class 1 in an array of class ids (predictions or labels)."""
  return float((values == 1).mean())


def class_share_table(rows: list[dict[str, str]], predictions: dict[str, dict[str, Any]],
                      task: str) -> list[str]:
  """Per arm and seed, the share of `task`'s dev examples the final student predicts as class 1,
  beside the labels' share: a student far from it has collapsed towards one answer."""
  runs = {(r.get("arm") or r["aug"], int(float(r["seed"]))): r["run"] for r in rows
          if r.get("task") == task and r.get("mode") != "teacher" and r["run"] in predictions}
  if not runs:
    return ["No predictions yet."]
  seeds = sorted({s for _, s in runs})
  labels = predictions[next(iter(runs.values()))]["dev/labels"]
  lines = [f"Share of {task} dev examples predicted as class 1 by the final student (labels: "
           f"{class1_share(labels):.3f}):", "",
           "| arm | " + " | ".join(f"seed {s}" for s in seeds) + " |",
           "|---|" + "---:|" * len(seeds)]
  for arm in dict.fromkeys(a for a, _ in runs):
    cells = [f"{class1_share(predictions[runs[(arm, s)]]['dev/predictions']):.2f}"
             if (arm, s) in runs else "-" for s in seeds]
    lines.append(f"| {arm} | " + " | ".join(cells) + " |")
  return lines
