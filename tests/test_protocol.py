"""The paired protocol: grids pair every arm by seed, predictions are bundled, claims are judged."""

import csv
import dataclasses
import pathlib
import statistics
import subprocess
import sys

import numpy as np
import pytest

from experiments import grid
from experiments import protocol
from experiments import report
from experiments import stats


def _names(runs):
  return [r.name for r in runs]


def test_grids_have_the_protocols_arms_and_pair_them_by_seed(tmp_path):
  comparison = protocol.comparison_runs(5, False, tmp_path)
  students = [r for r in comparison if not r.name.startswith("teacher-")]
  revised = 1 + len(protocol.REVISED_FGSM)  # and none_t2
  assert len(students) == 2 * 8 * 5 + 5 * revised
  assert sorted(_names(r for r in comparison if r.name.startswith("teacher-"))) == [
      "teacher-strong-qnli", "teacher-strong-qnli-t2", "teacher-strong-sst2"]
  # Within a task and seed, arms differ only in their augmentation flags.
  by_arm = {dict(r.columns)["arm"]: dict(r.flags) for r in students
            if dict(r.columns)["task"] == "qnli" and dict(r.columns)["seed"] == 3}
  varying = {"aug", "mix_lambda", "projection_vocab", "fgsm_eps", "fgsm_loss", "learning_rate"}
  teachers = {arm: flags.pop("teacher_ckpt") for arm, flags in by_arm.items()}
  assert {arm for arm, ckpt in teachers.items() if "-t2/" in str(ckpt)} == {
      arm for arm in by_arm if arm.endswith(protocol.RETRAINED_SUFFIX)} != set()
  base = {k: v for k, v in by_arm["none"].items() if k not in varying}
  for flags in by_arm.values():
    assert {k: v for k, v in flags.items() if k not in varying} == base
  assert by_arm["augpro_mix_folded"]["mix_lambda"] == "folded"
  assert base["max_seq_len"] == 128 and base["train_size"] == 2000

  shift = [r for r in protocol.shift_runs(3, False, tmp_path) if r.needs or "teacher" not in r.name]
  steps = {dict(r.flags)["num_train_steps"] for r in shift}
  assert steps == {protocol.SHIFT_STEPS}  # both sizes train the same number of steps
  assert {dict(r.columns)["shift_degree"] for r in shift} == set(protocol.SHIFT_DEGREES)
  assert {dict(r.flags)["aug"] for r in shift if dict(r.columns)["shift_degree"] == 0.0} == {"none"}
  copies = [r for r in protocol.copies_runs(3, False, tmp_path) if "teacher" not in r.name]
  assert sorted({dict(r.flags)["aug_copies"] for r in copies}) == [1, 2, 4, 8]


def test_a_revised_arm_from_the_retrained_teacher_is_paired_with_none_from_it(tmp_path,
                                                                              monkeypatch):
  monkeypatch.setattr(protocol, "REVISED_FGSM", {"eps0.03": {"fgsm_eps": 0.03}})
  runs = {r.name: r for r in protocol.comparison_runs(5, False, tmp_path)}
  arm = "augpro_fgsm_eps0.03_t2"
  assert dict(runs[f"pc-qnli-{arm}-s4"].flags)["fgsm_eps"] == 0.03
  assert dict(runs["pc-qnli-none_t2-s4"].flags)["aug"] == "none"
  # Both learn from the retrained teacher, a run of its own; the first arms keep the first.
  for name in (f"pc-qnli-{arm}-s4", "pc-qnli-none_t2-s4"):
    assert runs[name].needs == "teacher-strong-qnli-t2"
  assert runs["pc-qnli-none-s4"].needs == "teacher-strong-qnli"
  assert dict(runs["teacher-strong-qnli-t2"].flags) == dict(runs["teacher-strong-qnli"].flags)
  assert not any("_t2" in name for name in runs if "-sst2-" in name)
  claim = next(c for c in protocol.claims() if c.a.get("arm") == arm)
  assert claim.b == {"task": "qnli", "arm": "none_t2"} and claim.study == "paired_comparison"
  # The table's arm − none pairs it with none_t2, not with the first teacher's none.
  rows = [{"run": f"pc-qnli-{a}-s{s}", "task": "qnli", "arm": a, "aug": "x", "seed": str(s),
           "dev_accuracy": str(acc + 0.01 * s)}
          for a, acc in (("none", 0.5), ("none_t2", 0.6), (arm, 0.62)) for s in range(3)]
  table = report.comparison_tables_and_plot(rows, [], tmp_path / "c.png")
  line = next(l for l in table if l.startswith(f"| {arm} |"))
  assert "| +2.00 [+2.00, +2.00] |" in line, table
  assert next(l for l in table if l.startswith("| none_t2 |")).split("|")[4].strip() == "-"


def test_fit_predictions_are_bundled_and_kept_for_recorded_runs(tmp_path):
  runs = [grid.Run(f"r{i}", (), (("seed", i),)) for i in range(3)]
  root = tmp_path / "runs"
  for i in range(2):
    (root / f"r{i}").mkdir(parents=True)
    np.savez(root / f"r{i}" / "dev_predictions.npz", **{"dev/predictions": np.arange(4) + i,
                                                        "dev/labels": np.arange(4)})
  bundle = tmp_path / "x_predictions.npz"
  grid.bundle_predictions(runs, root, bundle, {"r0", "r1"})
  (root / "r0" / "dev_predictions.npz").unlink()  # r0's workdir is gone; r1 is no longer recorded
  grid.bundle_predictions(runs, root, bundle, {"r0", "r2"})
  loaded = grid.load_predictions(bundle)
  assert sorted(loaded) == ["r0"]
  np.testing.assert_array_equal(loaded["r0"]["dev/predictions"], np.arange(4))


def _write_study(results: pathlib.Path, rng: np.random.Generator, effect: float) -> None:
  """A fake paired_comparison CSV and bundle on SST-2: augpro_mix beats none by `effect`."""
  labels = rng.integers(0, 2, 872)
  rows, arrays = [], {}
  for seed in range(5):
    for arm, p_right in (("none", 0.80), ("augpro_mix", 0.80 + effect), ("knn", 0.80)):
      right = rng.random(872) < p_right
      preds = np.where(right, labels, 1 - labels)
      name = f"pc-sst2-{arm}-s{seed}"
      rows.append({"run": name, "task": "sst2", "arm": arm, "aug": arm, "mode": "distill",
                   "seed": seed, "dev_accuracy": float(np.mean(right))})
      arrays[f"{name}/dev/predictions"] = preds
      arrays[f"{name}/dev/labels"] = labels
  with open(results / "paired_comparison.csv", "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  np.savez_compressed(results / "paired_comparison_predictions.npz", **arrays)


def _verdicts(results):
  lines = protocol.claims_table(protocol.judge(
      lambda study: report.read(results / f"{study}.csv"),
      lambda study: grid.load_predictions(grid.predictions_path(results / f"{study}.csv"))))
  return {line.split(" | ")[0][2:]: line.rsplit(" | ", 1)[1].rstrip(" |") for line in lines[2:]}


def test_claims_follow_the_data(tmp_path):
  rng = np.random.default_rng(0)
  _write_study(tmp_path, rng, effect=0.06)
  verdicts = _verdicts(tmp_path)
  assert verdicts["sst2: KD with augpro_mix beats KD without augmentation"] == "supported"
  assert verdicts["sst2: AugPro-Mix beats KNN replacement"] == "supported"
  assert verdicts["sst2: KD with knn beats KD without augmentation"] in ("inconclusive",
                                                                        "not supported")
  _write_study(tmp_path, rng, effect=-0.06)
  verdicts = _verdicts(tmp_path)
  assert verdicts["sst2: KD with augpro_mix beats KD without augmentation"] == "not supported"
  # Claims of studies or arms with no runs are not listed.
  assert not any("qnli" in claim or "n=1000" in claim for claim in verdicts)


def test_report_writes_the_claims_block(tmp_path):
  _write_study(tmp_path, np.random.default_rng(1), effect=0.06)
  readme = tmp_path / "README.md"
  readme.write_text("x\n<!-- report:claims:begin -->\nold\n<!-- report:claims:end -->\ny\n")
  result = subprocess.run([sys.executable, str(pathlib.Path(report.__file__)),
                           f"--results={tmp_path}", f"--readme={readme}"],
                          capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  text = readme.read_text()
  assert "old" not in text and "augpro_mix beats KD without augmentation" in text
  assert text.startswith("x\n") and text.endswith("y\n")


def test_a_study_is_judged_as_a_family_holm_and_bonferroni(tmp_path):
  """Five seeds that clear the uncorrected rule (t interval above 0, McNemar p < 0.05) but not
  the family's: the interval at 1 - 0.05/m is wider and Holm multiplies the smallest p by m."""
  _write_study(tmp_path, np.random.default_rng(0), effect=0.06)
  rows = report.read(tmp_path / "paired_comparison.csv")
  predictions = grid.load_predictions(grid.predictions_path(tmp_path / "paired_comparison.csv"))
  family = [c for c in protocol.claims() if c.study == "paired_comparison"]
  results = {r["claim"]: r for r in protocol.evaluate_family(family, rows, predictions)}
  assert len(results) == 3  # the claims whose arms have runs: augpro_mix, knn vs none, mix vs knn
  raw = {k: r["mcnemar"].p_value for k, r in results.items()}
  assert [results[k]["p_adjusted"] for k in raw] == stats.holm(list(raw.values()))
  for r in results.values():
    assert r["family_diff"].mean == r["diff"].mean
    assert r["family_diff"].low < r["diff"].low and r["family_diff"].high > r["diff"].high
    adjusted = dataclasses.replace(r["mcnemar"], p_value=r["p_adjusted"])
    assert r["verdict"] == stats.verdict(r["family_diff"], adjusted)
    assert r["uncorrected"] == stats.verdict(r["diff"], r["mcnemar"])


def test_slope_claims_fit_kd_minus_finetuning_over_the_degrees_per_seed():
  """KD - FT = 5 * p + seed offset in every seed: slope 5 points per unit of p, zero spread."""
  rows = []
  for seed in range(3):
    for degree in protocol.SHIFT_DEGREES:
      for mode, gain in (("finetune", 0.0), ("distill", 0.05 * degree + 0.01 * seed)):
        rows.append({"run": f"r{seed}{degree}{mode}", "train_size": "1000", "mode": mode,
                     "shift_degree": str(degree), "aug": "knn" if degree else "none",
                     "seed": str(seed), "dev_accuracy": str(0.7 + gain)})
  claim = next(c for c in protocol.claims() if c.degrees and c.method == "knn"
               and c.a["train_size"] == "1000")
  result = protocol.evaluate_claim(claim, rows, {})
  assert result["seeds"] == 3
  assert 100 * result["diff"].mean == pytest.approx(5.0)
  rows = [r for r in rows if not (r["seed"] == "2" and r["shift_degree"] == "0.5")]
  assert protocol.evaluate_claim(claim, rows, {})["seeds"] == 2  # seed 2 lacks a degree


def test_family_verdicts_use_the_holm_adjusted_p_values(tmp_path, monkeypatch):
  _write_study(tmp_path, np.random.default_rng(0), effect=0.06)
  rows = report.read(tmp_path / "paired_comparison.csv")
  predictions = grid.load_predictions(grid.predictions_path(tmp_path / "paired_comparison.csv"))
  family = [c for c in protocol.claims() if c.study == "paired_comparison"]
  claim = "sst2: KD with augpro_mix beats KD without augmentation"
  results = {r["claim"]: r for r in protocol.evaluate_family(family, rows, predictions)}
  assert results[claim]["verdict"] == "supported"
  monkeypatch.setattr(stats, "holm", lambda ps: [0.5] * len(ps))  # as if the family were large
  results = {r["claim"]: r for r in protocol.evaluate_family(family, rows, predictions)}
  assert results[claim]["uncorrected"] == "supported"
  assert results[claim]["verdict"] == "inconclusive"


RESULTS = pathlib.Path(grid.RESULTS)


def _judged():
  return protocol.judge(
      lambda study: report.read(RESULTS / f"{study}.csv"),
      lambda study: grid.load_predictions(grid.predictions_path(RESULTS / f"{study}.csv")))


def test_readme_accuracy_paragraph_is_the_reports_and_says_no_more_than_each_verdict():
  from experiments import headline  # pylint: disable=g-import-not-at-top
  judged = _judged()
  comparison = report.read(RESULTS / "paired_comparison.csv", teachers=True)
  text = headline.accuracy_paragraph(judged, comparison)
  assert (RESULTS / "accuracy_summary.md").read_text(encoding="utf-8").strip() == text, \
      "run experiments/report.py and experiments/docs_tables.py"
  by_claim = {r["claim"]: r for r in judged}
  stated = [c for c in headline.HEADLINE if c in by_claim]
  assert len(stated) >= 5
  flat = " ".join(text.split())
  for claim in stated:
    r, d = by_claim[claim], by_claim[claim]["family_diff"]
    assert (f" {claim}: {100 * d.mean:+.2f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}], "
            f"{r['verdict']};") in flat, claim
  qnli = sorted(float(r["dev_accuracy"]) for r in comparison
                if r["task"] == "qnli" and r["mode"] != "teacher")
  assert f"score {100 * qnli[0]:.1f}% " in flat and f"to {100 * qnli[-1]:.1f}% " in flat


def test_a_hand_edit_of_the_readme_accuracy_paragraph_fails_the_check(tmp_path, monkeypatch):
  from experiments import docs_tables  # pylint: disable=g-import-not-at-top
  readme = (docs_tables.REPO / "README.md").read_text(encoding="utf-8")
  begin = "<!-- generated:experiments/results/accuracy_summary.md:begin -->"
  assert begin in readme and "**Accuracy**" in readme.split(begin, 1)[1].split(":end -->", 1)[0]
  monkeypatch.setattr(docs_tables, "REPO", tmp_path)
  monkeypatch.setattr(docs_tables, "documents", lambda: [tmp_path / "README.md"])
  (tmp_path / "README.md").write_text(readme, encoding="utf-8")
  assert docs_tables.main(["--check"]) == 0
  edited = readme.replace("inconclusive;", "supported;", 1)
  assert edited != readme
  (tmp_path / "README.md").write_text(edited, encoding="utf-8")
  assert docs_tables.main(["--check"]) == 1


def test_runtimes_count_each_run_once():
  from experiments import headline  # pylint: disable=g-import-not-at-top
  teacher = {"run": "teacher-x", "task": "sst2", "mode": "teacher", "wallclock_seconds": "1800"}
  retrained = dict(teacher, wallclock_seconds="1900")  # trained again: another run
  student = {"run": "s0", "task": "sst2", "mode": "distill", "wallclock_seconds": "360"}
  elsewhere = dict(student, run="s1", cpu="Some CPU (4 cores)")
  lines = headline.runtimes_table({"a": [teacher, student, elsewhere], "b": [teacher, retrained],
                                   "c": [teacher]})
  assert lines[-1] == "Total: 4 runs, 1.2 hours of wall clock.", lines
  assert "| b | teacher sst2 | 1 | 1900-1900 | 0.53 |" in lines, lines
  assert "| a | sst2, Some CPU (4 cores) | 1 | 360-360 | 0.10 |" in lines, lines


def test_teachers_table_has_each_training_once_with_its_agreement_with_the_first():
  from experiments import teachers  # pylint: disable=g-import-not-at-top
  teacher = {"run": "teacher-x", "task": "sst2", "mode": "teacher", "wallclock_seconds": "1800",
             "dev_accuracy": "0.9", "train_examples": "100", "steps": "10"}
  earlier = dict(teacher, run="teacher-x-earlier-1")
  again = dict(teacher, wallclock_seconds="1700", dev_accuracy="0.8")
  studies = {"a": [teacher], "b": [earlier, again], "c": [again]}
  first, other = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])
  predictions = {"a": {"teacher-x": {"dev/predictions": first}},
                 "b": {"teacher-x-earlier-1": {"dev/predictions": first},
                       "teacher-x": {"dev/predictions": other}}}
  lines = teachers.table(studies, predictions, {"sst2": "dev_accuracy"})
  assert [l.split(" | ")[:3] for l in lines[2:]] == [
      ["| teacher-x", "1", "a, b"], ["| teacher-x", "2", "b, c"]], lines
  assert "| accuracy 80.0 | 28 min | 75.0% of 4 |" in lines[3], lines
  assert teachers.base_name("teacher-q-t2") == teachers.base_name("teacher-q-earlier-3") == "teacher-q"


def test_plan_fits_the_budget_in_short_parts_and_its_commands_select_its_runs(tmp_path):
  from experiments import plan  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top
  lines = plan.table(RESULTS)
  total = float(re.search(r"Total: ([\d.]+) hours", "\n".join(lines)).group(1))
  assert total + plan.spent_seconds(RESULTS) / 3600 <= plan.BUDGET_HOURS + 0.05  # 0.1 h rounding
  assert 0 < plan.spent_seconds(RESULTS) < 3600 * plan.BUDGET_HOURS
  cut = [l.split("`")[1] for l in lines if l.startswith("- `")]
  assert cut == [regex for regex, _ in plan.CUTS[:len(cut)]]  # in order, least informative first
  parts = [l for l in lines if l.startswith("| `.venv")]
  # Each line is a part of PARTS, in order (a part whose runs are all cut is left out).
  listed = [p for p in plan.PARTS if any(f"{p.script}.py" in l and l.split("'")[1].endswith(p.only)
                                         for l in parts)]
  assert len(listed) == len(parts) >= len(plan.PARTS) - len(cut)
  for line, part in zip(parts, listed):
    assert f"{part.script}.py" in line and line.split("'")[1].endswith(part.only), line
    hours = float(line.rsplit("|", 2)[1])
    assert 0 < hours <= plan.PART_LIMIT_HOURS, line
    only = re.search(r"--only='([^']+)'", line).group(1)
    runs = [r.name for r in plan.GRIDS[part.script](part.seeds, False, tmp_path)]
    recorded = grid.recorded_runs(RESULTS / f"{part.script}.csv")  # a part may be half done
    selected = [n for n in runs if re.search(only, n) and n not in recorded]
    assert selected and not any(re.search(c, n) for n in selected for c in cut), line
    assert int(line.rsplit("|", 3)[1]) == len(selected), line


def test_plan_counts_each_new_run_and_each_teacher_training_for_it_once(tmp_path):
  """The budget's spent hours: the parts' runs already recorded and the SST-2 teacher's trainings
  after the shift study's first, each once however many CSVs hold it; not the seeds before."""
  from experiments import plan  # pylint: disable=g-import-not-at-top
  header = "run,mode,wallclock_seconds\n"
  (tmp_path / "paired_shift.csv").write_text(
      header + "teacher-strong-sst2-earlier-1,teacher,2000\nteacher-strong-sst2,teacher,1900\n"
      "ps-knn-p0.1-distill-n1000-s3,distill,100\nps-knn-p0.1-distill-n1000-s0,distill,70\n")
  (tmp_path / "paired_fullsize.csv").write_text(
      header + "teacher-strong-sst2,teacher,1900\npf-knn-p0.1-distill-s0,distill,300\n")
  assert plan.spent_seconds(tmp_path) == 1900 + 100 + 300
  (tmp_path / "paired_fullsize.csv").write_text(header + "teacher-strong-sst2,teacher,1800\n")
  assert plan.spent_seconds(tmp_path) == 1900 + 100 + 1800  # another training, for this grid
  (tmp_path / "paired_fullsize.csv").unlink()
  (tmp_path / "paired_shift.csv").write_text(header + "teacher-strong-sst2,teacher,2000\n")
  assert plan.spent_seconds(tmp_path) == 0  # the shift study's own first training


def test_plan_estimates_one_copy_at_625_steps_as_the_recorded_shift_cell():
  from experiments import plan  # pylint: disable=g-import-not-at-top
  estimate = plan.Estimator(RESULTS)
  for mode in protocol.MODES:
    recorded = sorted(float(r["wallclock_seconds"]) for r in report.read(RESULTS / "paired_shift.csv")
                      if r["run"].startswith(f"ps-augpro_mix-p0.3-{mode}-n1000-s"))
    assert estimate(grid.Run(f"pl-c1-{mode}-s4", (), ())) == statistics.median(recorded)
    assert estimate(grid.Run(f"pl-c8-{mode}-s4", (), ())) > recorded[-1]


def test_class_share_is_the_share_of_class_1_predictions_per_arm_and_seed():
  from experiments import headline  # pylint: disable=g-import-not-at-top
  labels = np.array([0, 1, 1, 0])
  rows = [{"run": f"{arm}-s{seed}", "task": "qnli", "mode": "distill", "arm": arm, "aug": arm,
           "seed": str(seed)} for arm in ("none", "fgsm") for seed in (0, 1)]
  predictions = {"none-s0": np.array([1, 1, 1, 0]), "none-s1": np.array([0, 0, 0, 0]),
                 "fgsm-s0": np.array([1, 1, 1, 1])}  # fgsm seed 1 has no predictions
  predictions = {k: {"dev/predictions": v, "dev/labels": labels} for k, v in predictions.items()}
  lines = headline.class_share_table(rows, predictions, "qnli")
  assert "(labels: 0.500)" in lines[0]
  assert lines[-2:] == ["| none | 0.75 | 0.00 |", "| fgsm | 1.00 | - |"], lines


@pytest.mark.parametrize("tiny", [False, True], ids=["full", "tiny"])
def test_every_run_of_every_grid_is_a_command_main_accepts(tmp_path, tiny):
  """Each grid's commands, full-size and --tiny, parse as main.py's flags into a valid Config (a
  typo or an out-of-range value would otherwise surface hours into a grid)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from experiments import bucket_accuracy  # pylint: disable=g-import-not-at-top
  from experiments import lr_defaults  # pylint: disable=g-import-not-at-top
  from experiments import small_tasks  # pylint: disable=g-import-not-at-top
  import main  # pylint: disable=g-import-not-at-top
  makers = (protocol.comparison_runs, protocol.shift_runs, protocol.copies_runs,
            protocol.fullsize_runs, protocol.copies_long_runs, bucket_accuracy.runs, lr_defaults.runs,
            small_tasks.runs)
  checked = set()
  for make_runs in makers:
    for run in make_runs(3, tiny, tmp_path):
      argv = run.command(tmp_path)[1:] + ["--glue_dir=/data/glue"]
      values = flags.FlagValues()
      main.define_flags(flag_values=values, main_module="grid")
      values(argv)
      main.config_from_flags(values).validate()
      checked.add(run.name)
  assert len(checked) > (100 if not tiny else 10)
