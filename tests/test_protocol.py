"""The paired protocol: grids pair every arm by seed, predictions are bundled, claims are judged."""

import csv
import dataclasses
import pathlib
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
  assert len(students) == 2 * 8 * 5
  assert sorted(_names(r for r in comparison if r.name.startswith("teacher-"))) == [
      "teacher-strong-qnli", "teacher-strong-sst2"]
  # Within a task and seed, arms differ only in their augmentation flags.
  by_arm = {dict(r.columns)["arm"]: dict(r.flags) for r in students
            if dict(r.columns)["task"] == "qnli" and dict(r.columns)["seed"] == 3}
  varying = {"aug", "mix_lambda", "projection_vocab"}
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
  lines = protocol.claims_table(
      lambda study: report.read(results / f"{study}.csv"),
      lambda study: grid.load_predictions(grid.predictions_path(results / f"{study}.csv")))
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
