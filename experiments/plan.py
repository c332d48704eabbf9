"""The protocol's next runs, in parts, with each part's cost estimated from the recorded runtimes.

`report.py` writes `table()` into experiments/README.md ("Plan"). A part is one command of one
grid script; what it runs is the grid's runs that its `--only` selects and no CSV has a row for.
Estimates, per run, from the committed CSVs' `wallclock_seconds` (median over the recorded seeds,
so a run that shared the cores weighs little):

- shift study, seeds 3-7: the median of the same cell (size, method, degree, mode) in seeds 0-2;
- full-size point: the same cell at 10,000 examples (the same 625 steps), plus, for KD, the
  teacher-logit pass over the 57,349 examples more, at three times the teacher's recorded training
  throughput (a forward pass without the backward one);
- copies at 625 steps: one copy is the shift study's recorded cell (1,000 examples, augpro_mix at
  0.3, 625 steps); each further copy adds what it cost over one copy in the 93-step copies
  study, times 625 / 93;
- the SST-2 teacher once, when any KD run is planned (its checkpoint is scratch, not committed):
  the median of its recorded trainings.

The budget is BUDGET_HOURS for all the new runs: the hours the new runs already recorded (the
augpro_fgsm diagnosis, the `_t2` comparison arms and their teacher, the parts' runs and the SST-2
teacher's trainings for them) come off it first. If the plan
is over what is left, the CUTS are applied in order until it fits; the table names each cut cell
and why it is the least informative.
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib
import re
import statistics
from typing import Callable, Optional

from experiments import grid
from experiments import protocol

BUDGET_HOURS = 20.0
PART_LIMIT_HOURS = 2.0
TEACHER = "teacher-strong-sst2"
RECORDED_COPIES_STEPS = 93  # the first copies study: 3 epochs of 1,000 examples at batch 32


@dataclasses.dataclass(frozen=True)
class Part:
  script: str  # experiments/<script>.py
  only: str  # the part's --only, before cuts
  seeds: int  # --seeds: how many seeds the grid lists


PARTS = ([Part("paired_shift", f"-n{n}-s{s}$", 8) for s in range(3, 8) for n in protocol.SHIFT_SIZES]
         + [Part("paired_fullsize", f"-s{s}$", 2) for s in range(2)]
         + [Part("paired_copies_long", f"-s{s}$", 6) for s in range(6)])
# (cells' regex over run names, why they inform least), applied in order while over budget.
CUTS = (
    (r"^pl-c2-", "2 copies in the 625-step copies study: the claims compare 1 and 8 copies, and 4 "
                 "keeps a point between them"),
    (r"^pf-augpro_mix-", "augpro_mix at full size: knn carries the full-size point; augpro_mix "
                         "was asked for only if the budget allows"),
    (r"^pl-c4-", "4 copies in the 625-step copies study: both of its claims need only 1 and 8"),
    (r"^ps-.*-n10000-s7$", "the shift study's eighth seed at 10,000 examples: with the same seeds "
                           "its claims' intervals are narrower than at 1,000 (claims table)"),
    (r"^pl-.*-s5$", "the sixth seed of the 625-step copies study: its two claims are paired by "
                    "seed, and five seeds are more than the 93-step study's three"),
)
GRIDS: dict[str, Callable] = {"paired_shift": protocol.shift_runs,
                              "paired_fullsize": protocol.fullsize_runs,
                              "paired_copies_long": protocol.copies_long_runs}


def _rows(results: pathlib.Path, study: str) -> list[dict[str, str]]:
  path = results / f"{study}.csv"
  if not path.exists():
    return []
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


def _median(values: list[float]) -> Optional[float]:
  return statistics.median(values) if values else None


def _cell(name: str) -> str:
  """A run's name without its seed: the runs of one cell differ only in the seed."""
  return re.sub(r"-s\d+$", "", name)


class Estimator:
  """Seconds per planned run, from the recorded rows (see the module docstring)."""

  def __init__(self, results: pathlib.Path):
    self.rows = _rows(results, "paired_shift") + _rows(results, "paired_copies")
    # Each training of the teacher once (one can be a row in both CSVs), the median over them.
    teacher = list({r["wallclock_seconds"]: r for r in self.rows
                    if _is_teacher(r["run"]) and r.get("wallclock_seconds")}.values())
    self.teacher_seconds = _median([float(r["wallclock_seconds"]) for r in teacher])
    forward = _median([float(r["examples_per_sec"]) for r in teacher if r.get("examples_per_sec")])
    self.teacher_forward = 3 * forward if forward else None

  def _recorded(self, cell: str) -> list[dict[str, str]]:
    return [r for r in self.rows if _cell(r["run"]) == cell and not _is_teacher(r["run"])]

  def _seconds(self, cell: str) -> Optional[float]:
    return _median([float(r["wallclock_seconds"]) for r in self._recorded(cell)])

  def _copies(self, cell: str) -> Optional[float]:
    """One copy at 625 steps is a recorded shift-study cell; each extra copy adds its measured
    cost over one copy at 93 steps, scaled to 625 steps."""
    mode = cell.rsplit("-", 1)[1]
    one = self._seconds(f"ps-augpro_mix-p0.3-{mode}-n1000")
    at_93 = self._seconds(cell)
    one_at_93 = self._seconds(f"pa-c1-{mode}")
    if None in (one, at_93, one_at_93):
      return None
    return one + (at_93 - one_at_93) * protocol.COPIES_STEPS / RECORDED_COPIES_STEPS

  def __call__(self, run: grid.Run) -> Optional[float]:
    cell = _cell(run.name)
    if run.name == TEACHER:
      return self.teacher_seconds
    if run.name.startswith("ps-"):
      return self._seconds(cell)
    if run.name.startswith("pf-"):
      at_10k = self(grid.Run(f"ps-{cell[3:]}-n{protocol.SHIFT_SIZES[-1]}-s0", (), ()))
      if at_10k is None or "-distill" not in cell:
        return at_10k
      return at_10k + (protocol.FULLSIZE_EXAMPLES - protocol.SHIFT_SIZES[-1]) / self.teacher_forward
    if run.name.startswith("pl-"):
      return self._copies("pa-" + cell[3:])
    return None


def _only(part: Part, cuts: list[str]) -> str:
  """The part's --only with the cut cells left out (a negative lookahead at the name's start)."""
  return "".join(f"^(?!{c.lstrip('^')})" for c in cuts) + (part.only if not cuts else
                                                           f".*{part.only}")


def _part_runs(part: Part, cuts: list[str], recorded: dict[str, set[str]],
               root: pathlib.Path) -> tuple[str, list[grid.Run]]:
  """The part's --only (with the cuts that touch its grid) and the runs it has left to do."""
  runs = [r for r in GRIDS[part.script](part.seeds, False, root) if r.name != TEACHER]
  only = _only(part, [c for c in cuts if any(re.search(c, r.name) for r in runs)])
  return only, [r for r in runs if re.search(only, r.name) and r.name not in recorded[part.script]]


def spent_seconds(results: pathlib.Path) -> float:
  """The wall clock the new runs already recorded, each run once: the augpro_fgsm diagnosis, the
  `_t2` comparison arms and their teacher, the PARTS' runs, and every training of the SST-2
  teacher after the shift study's first (each training is a row of its own, `grid.EARLIER`, and
  one training may be a row in several CSVs, with the same wall clock)."""
  seconds = {r["run"]: float(r["wallclock_seconds"]) for r in _rows(results, "fgsm_diagnosis")
             if r.get("wallclock_seconds")}
  seconds.update({r["run"]: float(r["wallclock_seconds"])
                  for r in _rows(results, "paired_comparison") if r.get("wallclock_seconds")
                  and (protocol.is_retrained_teacher(r["run"])
                       or r.get("arm", "").endswith(protocol.RETRAINED_SUFFIX))})
  for part in PARTS:
    seconds.update({f"{part.script}/{r['run']}": float(r["wallclock_seconds"])
                    for r in _rows(results, part.script) if r.get("wallclock_seconds")
                    and r.get("mode") != "teacher" and re.search(part.only, r["run"])})
  trainings = {r["wallclock_seconds"] for study in GRIDS for r in _rows(results, study)
               if _is_teacher(r["run"]) and r.get("wallclock_seconds")}
  shift_teacher = sorted((r for r in _rows(results, "paired_shift") if _is_teacher(r["run"])),
                         key=lambda r: (r["run"] == TEACHER, r["run"]))
  trainings -= {shift_teacher[0]["wallclock_seconds"]} if shift_teacher else set()
  return sum(seconds.values()) + sum(float(w) for w in trainings)


def _is_teacher(run: str) -> bool:
  """The SST-2 teacher's row, this training's or an earlier one's."""
  return run == TEACHER or run.startswith(TEACHER + grid.EARLIER)


def table(results: pathlib.Path) -> list[str]:
  """Markdown: the parts (command, runs, estimated hours), the cuts and the total."""
  estimate = Estimator(results)
  recorded = {s: {r["run"] for r in _rows(results, s)} for s in GRIDS}
  root = pathlib.Path("runs")
  cuts: list[tuple[str, str]] = []

  def plan():
    parts = [(p, *_part_runs(p, [c for c, _ in cuts], recorded, root)) for p in PARTS]
    return [(p, only, runs, sum(estimate(r) or 0.0 for r in runs)) for p, only, runs in parts
            if runs]

  parts = plan()
  teacher = estimate.teacher_seconds or 0.0
  total = lambda ps: teacher + sum(p[-1] for p in ps)
  uncut = total(parts)
  spent = spent_seconds(results)
  for cut in CUTS:
    if total(parts) + spent <= 3600 * BUDGET_HOURS:
      break
    cuts.append(cut)
    parts = plan()
  lines = ["| part | runs | estimated hours |", "|---|---:|---:|",
           f"| `{TEACHER}`, retrained by the first part that runs KD (its checkpoint is scratch) "
           f"| 1 | {teacher / 3600:.2f} |"]
  for part, only, runs, seconds in parts:
    lines.append(f"| `.venv/bin/python experiments/{part.script}.py --seeds={part.seeds} "
                 f"--only='{only}'` | {len(runs)} | {seconds / 3600:.2f} |")
  longest = max([p[-1] for p in parts] + [teacher]) / 3600
  lines += ["", f"Total: {total(parts) / 3600:.1f} hours in {len(parts) + 1} parts (budget "
            f"{BUDGET_HOURS:.0f} h, of which the new runs recorded so far took {spent / 3600:.1f} h; "
            f"the longest part {longest:.2f} h, limit {PART_LIMIT_HOURS:.0f} h)."]
  if cuts:
    lines += ["", f"Every cell would take {uncut / 3600:.1f} hours; cut to fit the budget, least "
              "informative first:", ""]
    lines += [f"- `{regex}`: {why}" for regex, why in cuts]
  return lines
