"""The paired protocol: strong teachers, paired seeds, and the three studies' grids and claims.

A seed fixes, for every arm of a study, the training subset (`--train_size` takes a prefix of a
permutation drawn from `--seed`), the student's initialisation, the batch order and the
augmentation keys (`fold_in(seed, step, example_id)`), so two runs with the same seed differ only
in the factor a study varies. Every run writes its per-example dev predictions
(`dev_predictions.npz`), which `grid.collect` bundles next to the results CSV; `claims` pairs runs
by seed and tests each claim with `experiments/stats.py`.

The scripts `paired_comparison.py`, `paired_shift.py` and `paired_copies.py` run the grids;
`report.py` writes the claims table. experiments/README.md ("Protocol") states the rule of
every verdict before any run.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Any, Callable, Optional

import numpy as np

from augpro_jax import augmentations
from experiments import grid
from experiments import stats

# Students as in every experiment (2x384 from the MiniLM teacher).
STUDENT = dict(grid.COMMON)
MAX_SEQ_LEN = {"sst2": 64, "qnli": 128}
# Strong teachers: all of SST-2 (67,349 examples), the shipped QNLI training subset (10,475).
STRONG_TEACHERS = {"sst2": (None, 2.0), "qnli": (None, 3.0)}  # task -> (examples, epochs)

COMPARISON_TASKS = ("sst2", "qnli")
COMPARISON_AUGS = augmentations.names()  # every registered augmentation
# The AugPro-Mix of the earlier defaults, as one more row: folded λ, the whole vocabulary.
FOLDED_MIX = {"aug": "augpro_mix", "mix_lambda": "folded", "projection_vocab": "full"}
SHIFT_DEGREES = (0.0, 0.1, 0.3, 0.5, 0.7)  # 0.0: no augmentation (--aug=none)
SHIFT_METHODS = ("augpro_mix", "knn")
SHIFT_SIZES = (1000, 10000)
SHIFT_STEPS = 625  # both sizes train this many steps: two epochs of 10,000 at batch 32
COPIES = (1, 2, 4, 8)
MODES = ("finetune", "distill")


def teacher(task: str, tiny: bool) -> grid.Run:
  if tiny:
    return grid.teacher_run(task, dict(grid.TINY), 0.25, name=f"teacher-strong-{task}")
  size, epochs = STRONG_TEACHERS[task]
  # Checkpoints every 500 steps: a teacher run is long enough to be worth resuming.
  flags = {**STUDENT, "max_seq_len": MAX_SEQ_LEN[task], "checkpoint_every": 500}
  if size is not None:
    flags["train_size"] = size
  return grid.teacher_run(task, flags, epochs, name=f"teacher-strong-{task}")


def _student(name: str, teacher_run: grid.Run, root: pathlib.Path, tiny: bool,
             flags: dict[str, Any], columns: dict[str, Any]) -> grid.Run:
  base = dict(grid.TINY) if tiny else {**STUDENT, "max_seq_len": MAX_SEQ_LEN[flags["task"]]}
  if tiny:
    flags = {k: v for k, v in flags.items() if k not in ("train_size", "num_train_steps",
                                                         "num_epochs")}
  return grid.student_run(name, teacher_run, root, {**base, **flags}, columns)


def comparison_runs(seeds: int, tiny: bool, root: pathlib.Path) -> list[grid.Run]:
  """KD at 2,000 examples, shift 0.3, every method plus the folded AugPro-Mix; 5 seeds."""
  tasks = ("sst2",) if tiny else COMPARISON_TASKS
  arms = [("none", {"aug": "none"}), ("augpro_mix", {"aug": "augpro_mix"})] if tiny else \
      [(aug, {"aug": aug}) for aug in COMPARISON_AUGS] + [("augpro_mix_folded", FOLDED_MIX)]
  out = []
  for task in tasks:
    t = teacher(task, tiny)
    out.append(t)
    for arm, aug_flags in arms:
      for seed in range(1 if tiny else seeds):
        flags = {"task": task, "mode": "distill", "shift_degree": 0.3, "seed": seed,
                 "train_size": 2000, "num_epochs": 2, **aug_flags}
        out.append(_student(f"pc-{task}-{arm}-s{seed}", t, root, tiny, flags,
                            {"experiment": "paired_comparison", "task": task, "arm": arm,
                             "aug": aug_flags["aug"], "mode": "distill", "seed": seed}))
  return out


def shift_runs(seeds: int, tiny: bool, root: pathlib.Path) -> list[grid.Run]:
  """SST-2, fine-tuning and KD, p in SHIFT_DEGREES, two methods, two sizes, equal steps; 3 seeds."""
  t = teacher("sst2", tiny)
  out = [t]
  cells = [("augpro_mix", 0.3, "distill", 1000, 0), ("none", 0.0, "finetune", 1000, 0)] if tiny \
      else [(m, p, mode, n, s) for n in SHIFT_SIZES for mode in MODES for s in range(seeds)
            for p in SHIFT_DEGREES for m in (("none",) if p == 0.0 else SHIFT_METHODS)]
  for method, degree, mode, size, seed in cells:
    flags = {"task": "sst2", "mode": mode, "aug": method, "shift_degree": degree or 0.3,
             "seed": seed, "train_size": size, "num_train_steps": SHIFT_STEPS}
    out.append(_student(f"ps-{method}-p{degree}-{mode}-n{size}-s{seed}", t, root, tiny, flags,
                        {"experiment": "paired_shift", "task": "sst2", "aug": method,
                         "shift_degree": degree, "mode": mode, "train_size": size,
                         "seed": seed}))
  return out


def copies_runs(seeds: int, tiny: bool, root: pathlib.Path) -> list[grid.Run]:
  """SST-2, 1,000 examples, augpro_mix at 0.3 with 1/2/4/8 copies, fine-tuning and KD; 3 seeds."""
  t = teacher("sst2", tiny)
  out = [t]
  cells = [(1, "distill", 0), (2, "finetune", 0)] if tiny else \
      [(c, mode, s) for c in COPIES for mode in MODES for s in range(seeds)]
  for copies, mode, seed in cells:
    flags = {"task": "sst2", "mode": mode, "aug": "augpro_mix", "shift_degree": 0.3,
             "aug_copies": copies, "seed": seed, "train_size": 1000, "num_epochs": 3}
    out.append(_student(f"pa-c{copies}-{mode}-s{seed}", t, root, tiny, flags,
                        {"experiment": "paired_copies", "task": "sst2", "aug": "augpro_mix",
                         "aug_copies": copies, "mode": mode, "seed": seed}))
  return out


# ----------------------------------------------------------------------------------------------
# Claims: each is a paired difference A - B over seeds, with its expected sign.
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Claim:
  study: str  # the results CSV's name
  text: str
  a: dict[str, str]  # column values that select arm A (besides the seed)
  b: dict[str, str]
  expected_sign: int = 1
  # A difference of differences (e.g. KD's gain minus fine-tuning's): arms C and D, (A-B)-(C-D).
  c: Optional[dict[str, str]] = None
  d: Optional[dict[str, str]] = None


def claims() -> list[Claim]:
  out = []
  for task in COMPARISON_TASKS:
    for arm in COMPARISON_AUGS[1:] + ("augpro_mix_folded",):
      out.append(Claim("paired_comparison", f"{task}: KD with {arm} beats KD without augmentation",
                       {"task": task, "arm": arm}, {"task": task, "arm": "none"}))
    # AugPro against its representation-level base, and against token replacement.
    for augpro, name, base, base_name in (("augpro_mix", "AugPro-Mix", "mixup", "MixUp"),
                                          ("augpro_fgsm", "AugPro-FGSM", "fgsm", "FGSM")):
      out.append(Claim("paired_comparison", f"{task}: {name} beats {base_name} on embeddings",
                       {"task": task, "arm": augpro}, {"task": task, "arm": base}))
      for replacement, replacement_name in (("knn", "KNN"), ("synonym", "synonym")):
        out.append(Claim("paired_comparison",
                         f"{task}: {name} beats {replacement_name} replacement",
                         {"task": task, "arm": augpro}, {"task": task, "arm": replacement}))
  for size in SHIFT_SIZES:
    for method in SHIFT_METHODS:
      def arm(mode, p, m=method):
        return {"train_size": str(size), "mode": mode, "shift_degree": str(p),
                "aug": m if p else "none"}
      out.append(Claim("paired_shift", f"n={size}, {method}: KD gains more from p=0.3 than "
                       "fine-tuning does (over p=0.1)", arm("distill", 0.3), arm("distill", 0.1),
                       c=arm("finetune", 0.3), d=arm("finetune", 0.1)))
      out.append(Claim("paired_shift", f"n={size}, {method}: KD at p=0.3 beats KD at p=0",
                       arm("distill", 0.3), arm("distill", 0.0)))
      out.append(Claim("paired_shift", f"n={size}, {method}: fine-tuning at p=0.1 beats p=0.3",
                       arm("finetune", 0.1), arm("finetune", 0.3)))
    out.append(Claim("paired_shift", f"n={size}: KD beats fine-tuning without augmentation",
                     {"train_size": str(size), "mode": "distill", "aug": "none"},
                     {"train_size": str(size), "mode": "finetune", "aug": "none"}))
  for method in SHIFT_METHODS:
    def small_minus_large(p, m=method):
      return ({"train_size": "1000", "mode": "distill", "shift_degree": str(p), "aug": m},
              {"train_size": "10000", "mode": "distill", "shift_degree": str(p), "aug": m})
    a, c = small_minus_large(0.5)
    b, d = small_minus_large(0.3)
    out.append(Claim("paired_shift", f"{method}: p=0.5 over p=0.3 gains more at 1,000 examples "
                     "than at 10,000 (KD)", a, b, c=c, d=d))
  out.append(Claim("paired_copies", "KD gains from 8 copies over 1",
                   {"mode": "distill", "aug_copies": "8"}, {"mode": "distill", "aug_copies": "1"}))
  out.append(Claim("paired_copies", "KD gains more from 8 copies over 1 than fine-tuning does",
                   {"mode": "distill", "aug_copies": "8"}, {"mode": "distill", "aug_copies": "1"},
                   c={"mode": "finetune", "aug_copies": "8"},
                   d={"mode": "finetune", "aug_copies": "1"}))
  return out


def _metric(row: dict[str, str]) -> float:
  key = "dev_accuracy" if row.get("dev_accuracy") not in (None, "") else "dev_matthews"
  try:
    return float(row[key])
  except (KeyError, TypeError, ValueError):
    return math.nan


def _by_seed(rows: list[dict[str, str]], select: dict[str, str]) -> dict[str, dict[str, str]]:
  def matches(row):
    return all(_same(row.get(k), v) for k, v in select.items())
  return {row["seed"]: row for row in rows if matches(row)}


def _same(cell: Optional[str], want: str) -> bool:
  if cell == want:
    return True
  try:
    return float(cell) == float(want)
  except (TypeError, ValueError):
    return False


def _correct(predictions: dict[str, dict[str, np.ndarray]], run: str) -> Optional[np.ndarray]:
  arrays = predictions.get(run)
  if not arrays:
    return None
  split = sorted(k for k in arrays if k.endswith("/predictions"))[0].rsplit("/", 1)[0]
  return arrays[f"{split}/predictions"] == arrays[f"{split}/labels"]


def evaluate_claim(claim: Claim, rows: list[dict[str, str]],
                   predictions: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
  """The claim's paired difference over seeds, McNemar on pooled examples, and the verdict."""
  arms = [_by_seed(rows, s) for s in (claim.a, claim.b, claim.c, claim.d) if s is not None]
  seeds = sorted(set.intersection(*(set(a) for a in arms)), key=lambda s: int(float(s)))
  values = [[_metric(arm[s]) for s in seeds] for arm in arms]
  if len(arms) == 2:
    diff = stats.paired_difference(values[0], values[1])
    pairs = [(_correct(predictions, arms[0][s]["run"]), _correct(predictions, arms[1][s]["run"]))
             for s in seeds]
    test = None
    if pairs and all(a is not None and b is not None and a.shape == b.shape for a, b in pairs):
      test = stats.mcnemar_exact(np.concatenate([a for a, _ in pairs]),
                                 np.concatenate([b for _, b in pairs]))
  else:  # (A - B) - (C - D): no per-example test of an interaction
    a, b, c, d = (np.asarray(v) for v in values)
    diff = stats.paired_difference(a - b, c - d)
    test = None
  return {"claim": claim.text, "study": claim.study, "seeds": len(seeds), "diff": diff,
          "mcnemar": test,
          "verdict": stats.verdict(diff, test, expected_sign=claim.expected_sign)}


def claims_table(read_rows: Callable[[str], list[dict[str, str]]],
                 read_predictions: Callable[[str], dict]) -> list[str]:
  """Markdown: one line per claim whose study has results."""
  lines = ["| claim | seeds | A − B (x100, 95% CI) | McNemar (A only / B only, p) | verdict |",
           "|---|---:|---|---|---|"]
  cache: dict[str, tuple] = {}
  shown = 0
  for claim in claims():
    if claim.study not in cache:
      cache[claim.study] = (read_rows(claim.study), read_predictions(claim.study))
    rows, predictions = cache[claim.study]
    if not rows:
      continue
    result = evaluate_claim(claim, rows, predictions)
    if result["seeds"] == 0:
      continue
    d, m = result["diff"], result["mcnemar"]
    ci = (f"{100 * d.mean:+.2f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}]" if d.n > 1
          else f"{100 * d.mean:+.2f} (one seed)")
    test = f"{m.a_only} / {m.b_only}, p={m.p_value:.3g}" if m is not None else "-"
    lines.append(f"| {claim.text} | {result['seeds']} | {ci} | {test} | {result['verdict']} |")
    shown += 1
  return lines if shown else ["No paired results yet."]
