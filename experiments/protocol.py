"""The paired protocol: strong teachers, paired seeds, and the studies' grids and claims.

A seed fixes, for every arm of a study, the training subset (`--train_size` takes a prefix of a
permutation drawn from `--seed`), the student's initialisation, the batch order and the
augmentation keys (`fold_in(seed, step, example_id)`), so two runs with the same seed differ only
in the factor a study varies. Every run writes its per-example dev predictions
(`dev_predictions.npz`), which `grid.collect` bundles next to the results CSV; `claims` pairs runs
by seed and tests each claim with `experiments/stats.py`; `evaluate_family` judges a study's
claims together (Holm, Bonferroni).

The scripts `paired_comparison.py`, `paired_shift.py`, `paired_copies.py`, `paired_fullsize.py`
and `paired_copies_long.py` run the grids; `report.py` writes the claims table.
experiments/README.md ("Verdicts") states the rule of every verdict before the runs.
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
# The full-size point: all 67,349 SST-2 examples under the shift study's step protocol.
FULLSIZE_EXAMPLES = 67349
FULLSIZE_DEGREES = (0.0, 0.1, 0.3, 0.5)
COPIES_STEPS = SHIFT_STEPS  # the second copies study trains as long as the shift study
# Arms run with the QNLI teacher trained a second time (its first checkpoint was scratch): each is
# paired with `none` rerun under that teacher, never with the first teacher's rows.
RETRAINED_SUFFIX = "_t2"


def is_retrained_teacher(run: str) -> bool:
  """Whether `run` names a teacher trained a second time (`teacher(..., retrained=True)`)."""
  return run.startswith("teacher-") and run.endswith("-t2")
# The revised QNLI augpro_fgsm arm: the setting fgsm_diagnosis's rule chose (experiments/README.md,
# "The unstable arm") -> its flags.
REVISED_FGSM: dict[str, dict[str, Any]] = {"eps0.03": {"fgsm_eps": 0.03}}


def reference_arm(arm: str) -> str:
  """The `none` arm that `arm` is paired with: the one trained from the same teacher."""
  return "none" + RETRAINED_SUFFIX if arm.endswith(RETRAINED_SUFFIX) else "none"


def _revised_arms(task: str, tiny: bool) -> list[tuple[str, dict[str, Any]]]:
  """none_t2 and the revised augpro_fgsm arms (QNLI only)."""
  if tiny or task != "qnli":
    return []
  return [("none" + RETRAINED_SUFFIX, {"aug": "none"})] + [
      (f"augpro_fgsm_{name}{RETRAINED_SUFFIX}", {"aug": "augpro_fgsm", **flags})
      for name, flags in REVISED_FGSM.items()]


def teacher(task: str, tiny: bool, retrained: bool = False) -> grid.Run:
  """The strong teacher of `task`; `retrained`: the same command trained a second time, a run of
  its own (RETRAINED_SUFFIX arms learn from it)."""
  name = f"teacher-strong-{task}" + ("-t2" if retrained else "")
  if tiny:
    return grid.teacher_run(task, dict(grid.TINY), 0.25, name=name)
  size, epochs = STRONG_TEACHERS[task]
  # Checkpoints every 500 steps: a teacher run is long enough to be worth resuming.
  flags = {**STUDENT, "max_seq_len": MAX_SEQ_LEN[task], "checkpoint_every": 500}
  if size is not None:
    flags["train_size"] = size
  return grid.teacher_run(task, flags, epochs, name=name)


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
    first, second, revised = teacher(task, tiny), teacher(task, tiny, True), \
        _revised_arms(task, tiny)
    out += [first] + ([second] if revised else [])
    for arm, aug_flags in arms + revised:
      t = second if arm.endswith(RETRAINED_SUFFIX) else first
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


def fullsize_runs(seeds: int, tiny: bool, root: pathlib.Path) -> list[grid.Run]:
  """SST-2, all training examples, fine-tuning and KD, p in FULLSIZE_DEGREES, knn and augpro_mix,
  SHIFT_STEPS steps (as the shift study), the shift study's teacher; 2 seeds."""
  t = teacher("sst2", tiny)
  cells = [("knn", 0.3, "distill", 0), ("none", 0.0, "finetune", 0)] if tiny \
      else [(m, p, mode, s) for mode in MODES for s in range(seeds) for p in FULLSIZE_DEGREES
            for m in (("none",) if p == 0.0 else SHIFT_METHODS)]
  out = [t]
  for method, degree, mode, seed in cells:
    # No --train_size: the whole training set (a prefix of the seed's permutation of all of it).
    flags = {"task": "sst2", "mode": mode, "aug": method, "shift_degree": degree or 0.3,
             "seed": seed, "num_train_steps": SHIFT_STEPS}
    out.append(_student(f"pf-{method}-p{degree}-{mode}-s{seed}", t, root, tiny, flags,
                        {"experiment": "paired_fullsize", "task": "sst2", "aug": method,
                         "shift_degree": degree, "mode": mode,
                         "train_size": FULLSIZE_EXAMPLES, "seed": seed}))
  return out


def copies_long_runs(seeds: int, tiny: bool, root: pathlib.Path) -> list[grid.Run]:
  """The copies study at COPIES_STEPS steps instead of 3 epochs (93 steps); 6 seeds."""
  t = teacher("sst2", tiny)
  cells = [(8, "distill", 0), (1, "finetune", 0)] if tiny else \
      [(c, mode, s) for s in range(seeds) for mode in MODES for c in COPIES]
  out = [t]
  for copies, mode, seed in cells:
    flags = {"task": "sst2", "mode": mode, "aug": "augpro_mix", "shift_degree": 0.3,
             "aug_copies": copies, "seed": seed, "train_size": 1000,
             "num_train_steps": COPIES_STEPS}
    out.append(_student(f"pl-c{copies}-{mode}-s{seed}", t, root, tiny, flags,
                        {"experiment": "paired_copies_long", "task": "sst2", "aug": "augpro_mix",
                         "aug_copies": copies, "mode": mode, "seed": seed}))
  return out


# The QNLI augpro_fgsm diagnosis: one cause at a time against the comparison's setting, on 1,000
# training pairs held out as the dev set (never the official dev), evaluated every 10 steps.
DIAGNOSIS_SETTINGS = {
    "none": {"aug": "none"},  # the reference: the same split without augmentation
    "default": {},  # the comparison's setting: fgsm_eps=0.1, fgsm_loss=kd, learning_rate=1e-4
    "eps0.03": {"fgsm_eps": 0.03},
    "eps0.3": {"fgsm_eps": 0.3},
    "loss_ce": {"fgsm_loss": "ce"},
    "lr5e-5": {"learning_rate": 5e-5},
}
DIAGNOSIS_HELD_OUT = 1000
DIAGNOSIS_EVAL_EVERY = 10


def diagnosis_runs(seeds: int, tiny: bool, root: pathlib.Path) -> list[grid.Run]:
  """QNLI KD at the comparison's setting (2,000 pairs, 2 epochs, shift 0.3) with augpro_fgsm and
  each of DIAGNOSIS_SETTINGS, on a split held out from training; 3 seeds."""
  task = "sst2" if tiny else "qnli"
  t = teacher(task, tiny, retrained=not tiny)
  out = [t]
  names = ("none", "default") if tiny else tuple(DIAGNOSIS_SETTINGS)
  for seed in range(1 if tiny else seeds):
    for setting in names:
      change = DIAGNOSIS_SETTINGS[setting]
      flags = {"task": task, "mode": "distill", "aug": "augpro_fgsm", "shift_degree": 0.3,
               "seed": seed, "train_size": 2000, "num_epochs": 2,
               "dev_from_train": 8 if tiny else DIAGNOSIS_HELD_OUT,
               "eval_every": 1 if tiny else DIAGNOSIS_EVAL_EVERY,
               "log_every": 1 if tiny else DIAGNOSIS_EVAL_EVERY, **change}
      columns = {"experiment": "fgsm_diagnosis", "task": task, "arm": setting,
                 "aug": flags["aug"], "mode": "distill", "seed": seed,
                 "fgsm_eps": flags.get("fgsm_eps", 0.1), "fgsm_loss": flags.get("fgsm_loss", "kd"),
                 "learning_rate": flags.get("learning_rate", STUDENT["learning_rate"])}
      out.append(_student(f"fd-{setting}-s{seed}", t, root, tiny, flags, columns))
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
  # A trend claim: A and B are selected at each degree (A and B then give the rest of the
  # selection, `method` the augmentation at p > 0), and the claim is about the per-seed slope of
  # A - B over these degrees, in points per unit of p.
  degrees: tuple[float, ...] = ()
  method: str = ""


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
  for arm, _ in _revised_arms("qnli", False)[1:]:
    out.append(Claim("paired_comparison", f"qnli: KD with {arm} beats KD without augmentation "
                     "(both from the retrained teacher)", {"task": "qnli", "arm": arm},
                     {"task": "qnli", "arm": reference_arm(arm)}))
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
  for size in SHIFT_SIZES:
    for method in SHIFT_METHODS:
      out.append(Claim("paired_shift", f"n={size}, {method}: KD − fine-tuning rises with the "
                       "degree (slope over p=0-0.7, points per unit of p)",
                       {"train_size": str(size), "mode": "distill"},
                       {"train_size": str(size), "mode": "finetune"},
                       degrees=SHIFT_DEGREES, method=method))
  for method in SHIFT_METHODS:  # the full-size point
    def full(mode, p, m=method):
      return {"mode": mode, "shift_degree": str(p), "aug": m if p else "none"}
    out.append(Claim("paired_fullsize", f"all of SST-2, {method}: KD at p=0.3 beats KD at p=0",
                     full("distill", 0.3), full("distill", 0.0)))
    out.append(Claim("paired_fullsize", f"all of SST-2, {method}: KD − fine-tuning rises with "
                     "the degree (slope over p=0-0.5, points per unit of p)", {"mode": "distill"},
                     {"mode": "finetune"}, degrees=FULLSIZE_DEGREES, method=method))
  out.append(Claim("paired_fullsize", "all of SST-2: KD beats fine-tuning without augmentation",
                   {"mode": "distill", "aug": "none"}, {"mode": "finetune", "aug": "none"}))
  for study, steps in (("paired_copies", "3 epochs"), ("paired_copies_long", f"{COPIES_STEPS} steps")):
    def copies(mode, n):
      return {"mode": mode, "aug_copies": str(n)}
    out.append(Claim(study, f"{steps}: KD gains from 8 copies over 1", copies("distill", 8),
                     copies("distill", 1)))
    out.append(Claim(study, f"{steps}: KD gains more from 8 copies over 1 than fine-tuning does",
                     copies("distill", 8), copies("distill", 1), c=copies("finetune", 8),
                     d=copies("finetune", 1)))
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


def _at_degree(select: dict[str, str], degree: float, method: str) -> dict[str, str]:
  return {**select, "shift_degree": str(degree), "aug": method if degree else "none"}


def _values(claim: Claim, rows: list[dict[str, str]]):
  """Per-arm {seed: row} and the seeds every arm has (a trend claim: every arm at every degree)."""
  if claim.degrees:
    arms = [_by_seed(rows, _at_degree(s, p, claim.method))
            for p in claim.degrees for s in (claim.a, claim.b)]
  else:
    arms = [_by_seed(rows, s) for s in (claim.a, claim.b, claim.c, claim.d) if s is not None]
  seeds = sorted(set.intersection(*(set(a) for a in arms)), key=lambda s: int(float(s)))
  return arms, seeds


def evaluate_claim(claim: Claim, rows: list[dict[str, str]],
                   predictions: dict[str, dict[str, np.ndarray]],
                   confidence: float = 0.95) -> dict[str, Any]:
  """The claim's paired difference over seeds (interval at `confidence`), McNemar on pooled
  examples, and the verdict before any correction for the claim's family."""
  arms, seeds = _values(claim, rows)
  values = [[_metric(arm[s]) for s in seeds] for arm in arms]
  test = None  # no per-example test of an interaction or a trend
  if claim.degrees:
    gaps = np.asarray(values[0::2]) - np.asarray(values[1::2])  # [degrees, seeds]
    diff = stats.slope(gaps.T, claim.degrees, confidence)
  elif len(arms) == 2:
    diff = stats.paired_difference(values[0], values[1], confidence)
    pairs = [(_correct(predictions, arms[0][s]["run"]), _correct(predictions, arms[1][s]["run"]))
             for s in seeds]
    if pairs and all(a is not None and b is not None and a.shape == b.shape for a, b in pairs):
      test = stats.mcnemar_exact(np.concatenate([a for a, _ in pairs]),
                                 np.concatenate([b for _, b in pairs]))
  else:
    a, b, c, d = (np.asarray(v) for v in values)
    diff = stats.paired_difference(a - b, c - d, confidence)
  return {"claim": claim.text, "study": claim.study, "seeds": len(seeds), "diff": diff,
          "mcnemar": test,
          "verdict": stats.verdict(diff, test, expected_sign=claim.expected_sign)}


def evaluate_family(family: list[Claim], rows: list[dict[str, str]],
                    predictions: dict[str, dict[str, np.ndarray]]) -> list[dict[str, Any]]:
  """The claims of one study that have runs, judged as a family (experiments/README.md,
  "Verdicts"): with m such claims, intervals at 1 - 0.05/m (Bonferroni) and McNemar p-values
  Holm-adjusted over the claims that have one. Each result keeps its raw interval, raw p and
  uncorrected verdict, and adds `family_diff`, `p_adjusted` and the family-wise `verdict`."""
  results = [r for r in (evaluate_claim(c, rows, predictions) for c in family) if r["seeds"]]
  claim_of = {c.text: c for c in family}
  tested = [r for r in results if r["mcnemar"] is not None]
  for r, p in zip(tested, stats.holm([r["mcnemar"].p_value for r in tested])):
    r["p_adjusted"] = p
  confidence = stats.family_confidence(len(results))
  for r in results:
    claim = claim_of[r["claim"]]
    r["uncorrected"] = r["verdict"]
    r["family_diff"] = evaluate_claim(claim, rows, predictions, confidence)["diff"]
    test = (dataclasses.replace(r["mcnemar"], p_value=r["p_adjusted"])
            if r["mcnemar"] is not None else None)
    r["verdict"] = stats.verdict(r["family_diff"], test, expected_sign=claim.expected_sign)
  return results


def _interval(d: stats.PairedDifference) -> str:
  return (f"{100 * d.mean:+.2f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}]" if d.n > 1
          else f"{100 * d.mean:+.2f} (one seed)")


def judge(read_rows: Callable[[str], list[dict[str, str]]],
          read_predictions: Callable[[str], dict]) -> list[dict[str, Any]]:
  """Every claim whose study has results, each study judged as a family (`evaluate_family`)."""
  out = []
  for study in dict.fromkeys(c.study for c in claims()):
    rows = read_rows(study)
    if rows:
      family = [c for c in claims() if c.study == study]
      out += evaluate_family(family, rows, read_predictions(study))
  return out


def claims_table(results: list[dict[str, Any]]) -> list[str]:
  """Markdown: one line per judged claim, raw and family-wise values."""
  lines = ["| claim | seeds | A − B (x100, 95% CI) | family-wise CI | McNemar (A only / B only, "
           "p) | Holm p | uncorrected | verdict |", "|---|---:|---|---|---|---:|---|---|"]
  for r in results:
    m = r["mcnemar"]
    test = f"{m.a_only} / {m.b_only}, p={m.p_value:.3g}" if m is not None else "-"
    adjusted = f"{r['p_adjusted']:.3g}" if m is not None else "-"
    lines.append(f"| {r['claim']} | {r['seeds']} | {_interval(r['diff'])} | "
                 f"{_interval(r['family_diff'])} | {test} | {adjusted} | {r['uncorrected']} | "
                 f"{r['verdict']} |")
  return lines if len(lines) > 2 else ["No paired results yet."]
