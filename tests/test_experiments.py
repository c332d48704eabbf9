"""The experiment scripts: each lists its --tiny grid; one grid runs end to end (a shared
teacher + 2 student runs, 2 steps) and resumes; the report renders every study from the rows
`grid.collect` writes. Needs the GLUE data (SST-2) for the end-to-end grid."""

import csv
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from experiments import bucket_accuracy
from experiments import grid
from experiments import lr_defaults
from experiments import protocol
from experiments import small_tasks
from xla_env import xla_flags

pytestmark = pytest.mark.slow  # subprocesses, end-to-end runs or benchmarks: not in `make test-fast`

REPO = pathlib.Path(__file__).resolve().parents[1]
# Each script and the grid it runs. Every grid goes through the same experiments/grid.py, so one
# runs for real here; test_protocol checks that every run of every grid is a command main.py takes.
SCRIPTS = {"paired_comparison": protocol.comparison_runs, "paired_shift": protocol.shift_runs,
           "paired_copies": protocol.copies_runs, "paired_fullsize": protocol.fullsize_runs,
           "paired_copies_long": protocol.copies_long_runs, "bucket_accuracy": bucket_accuracy.runs,
           "lr_defaults": lr_defaults.runs, "small_tasks": small_tasks.runs,
           "fgsm_diagnosis": protocol.diagnosis_runs}
END_TO_END = "paired_comparison"


def _run(args, cwd=REPO, timeout=900):
  env = {**os.environ, "XLA_FLAGS": xla_flags(1)}  # one device: the runs are single-process CLIs
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=timeout)


def _script(name, root, csv_path, glue, *extra):
  return [str(REPO / "experiments" / f"{name}.py"), "--tiny", f"--root={root / 'runs'}",
          f"--csv={csv_path}", f"--glue_dir={glue}", *extra]


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory, glue):
  root = tmp_path_factory.mktemp("experiments")
  csv_path = root / "results" / f"{END_TO_END}.csv"
  result = _run(_script(END_TO_END, root, csv_path, glue))
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  return root, csv_path, result.stdout


# Every script's --dry_run, run as its file runs (`__main__`), in one interpreter: one start-up
# instead of one per script.
_DRY_RUNS = """
import runpy, sys
root, glue = sys.argv[1:3]
for name in sys.argv[3:]:
  sys.argv = [name, "--tiny", f"--root={root}/{name}/runs", f"--csv={root}/{name}.csv",
              f"--glue_dir={glue}", "--dry_run"]
  print(f"=== {name}", flush=True)
  try:
    runpy.run_path(f"experiments/{name}.py", run_name="__main__")
  except SystemExit as exc:
    print(f"=== exit {exc.code}", flush=True)
"""


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory, glue):
  root = tmp_path_factory.mktemp("dry")
  result = _run(["-c", _DRY_RUNS, str(root), str(glue), *SCRIPTS])
  assert result.returncode == 0, result.stderr[-2000:]
  outputs, script = {}, None
  for chunk in result.stdout.split("=== ")[1:]:
    head, _, rest = chunk.partition("\n")
    if head.startswith("exit "):  # the script's exit code, after its output
      outputs[script] = (int(head.split()[1]), outputs[script][1])
    else:
      script = head
      outputs[script] = (None, rest)
  return root, outputs


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_script_lists_its_tiny_grid(name, dry_runs):
  root, outputs = dry_runs
  code, stdout = outputs[name]
  assert code == 0, stdout
  listed = [line for line in stdout.splitlines() if line.startswith("[")]
  assert len(listed) == 3, stdout  # the shared teacher and two student runs
  names = [line.split("--workdir=")[1].split()[0].rsplit("/", 1)[-1] for line in listed]
  assert names == [run.name for run in SCRIPTS[name](3, True, root / name / "runs")]
  assert all(line.startswith("[todo]") for line in listed), stdout


def test_a_dry_run_piped_into_a_reader_that_stops_early_ends_quietly(tmp_path):
  """`--dry_run | head`: the listing outgrows the pipe, the reader leaves, and the script exits 0
  with nothing on stderr (no BrokenPipeError traceback)."""
  script = [sys.executable, str(REPO / "experiments" / "paired_shift.py"), "--seeds=8",
            "--dry_run", f"--root={tmp_path / 'runs'}", f"--csv={tmp_path / 'absent.csv'}"]
  process = subprocess.Popen(script, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  assert process.stdout.readline().startswith(b"[todo] ")
  process.stdout.close()  # far less than the listing (over 100 KB, more than a pipe holds)
  stderr = process.stderr.read().decode()
  assert process.wait(timeout=120) == 0 and not stderr, stderr


def test_tiny_grid_writes_one_row_per_run_and_resumes(tiny_grid, glue):
  root, csv_path, out = tiny_grid
  assert "FAILED" not in out, out
  with open(csv_path, encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  students = [r for r in rows if r["mode"] != "teacher"]
  assert len(students) == 2, rows
  for row in students:
    assert 0.0 <= float(row["dev_accuracy"]) <= 1.0
    assert int(row["steps"]) == 2
    assert float(row["wallclock_seconds"]) > 0
    assert row["cpu"] == grid.cpu_name()  # the machine behind the wall clock
    assert row["length_buckets"] and 0 < float(row["train_token_utilisation"]) <= 1
    if row["aug"] != "none":
      assert float(row["measured_shift"]) > 0
  # Resumable: a second call finds every summary.json and runs nothing.
  again = _run(_script(END_TO_END, root, csv_path, glue, "--dry_run"))
  assert again.returncode == 0
  assert all(line.startswith("[done]") for line in again.stdout.splitlines()
             if line.startswith("[")), again.stdout
  # A fresh checkout (no workdirs) skips what the CSV records, unless told to --rerun.
  student = students[0]["run"]
  moved = root / "moved"
  (root / "runs" / student).rename(moved)
  try:
    base = _script(END_TO_END, root, csv_path, glue, "--dry_run", f"--only={student}")
    fresh, rerun = _run(base), _run(base + ["--rerun"])
  finally:
    moved.rename(root / "runs" / student)
  assert fresh.stdout.startswith("[recorded]") and fresh.stdout.count("[") == 1, fresh.stdout
  assert "[todo]" in rerun.stdout and f"/{student} " in rerun.stdout, rerun.stdout


def test_report_reads_the_real_grids_csv(tiny_grid):
  root, csv_path, _ = tiny_grid
  report = _run([str(REPO / "experiments" / "report.py"), f"--results={csv_path.parent}"],
                timeout=300)
  assert report.returncode == 0, report.stderr[-2000:]
  assert "AugPro comparison" in (csv_path.parent / "report.md").read_text()


def _fabricate(runs, root, rng):
  """What a finished run leaves (summary.json, dev_predictions.npz, its wall clock), made up."""
  labels = rng.integers(0, 2, 40)
  for run in runs:
    (root / run.name).mkdir(parents=True)
    summary = {"dev": {"accuracy": float(rng.uniform(0.6, 0.9))}, "steps": 2,
               "train_examples": 32, "examples_per_sec": 10.0, "length_buckets": [16],
               "token_utilisation": {"train": 0.6},
               "measured_shift": None if dict(run.flags).get("aug") == "none" else 0.3}
    (root / run.name / "summary.json").write_text(json.dumps(summary))
    (root / run.name / "wallclock_seconds").write_text("5.0\n")
    flips = rng.uniform(size=40) < 0.2
    np.savez(root / run.name / "dev_predictions.npz", **{
        "dev/predictions": np.where(flips, 1 - labels, labels), "dev/labels": labels})


def test_report_writes_every_studys_tables_and_plot_from_collected_rows(tmp_path):
  results = tmp_path / "results"
  rng = np.random.default_rng(0)
  for name, make_runs in SCRIPTS.items():
    runs = make_runs(3, True, tmp_path / name)
    _fabricate(runs, tmp_path / name, rng)
    grid.collect(runs, tmp_path / name, results / f"{name}.csv")
  report = _run([str(REPO / "experiments" / "report.py"), f"--results={results}"], timeout=300)
  assert report.returncode == 0, report.stderr[-2000:]
  text = (results / "report.md").read_text()
  for heading in ("AugPro comparison", "Shift degree", "Shift degree on all 67,349",
                  "Augmented copies per example (augpro_mix, shift 0.3, 625 steps", "Claims",
                  "Length buckets", "predicted as class 1", "Student learning rate on short runs",
                  "RTE with the README's commands", "QNLI augpro_fgsm diagnosis"):
    assert heading in text, text
  assert "**Accuracy**" in (results / "accuracy_summary.md").read_text()
  # One plot per study. The tiny comparison has one seed per arm, so no interval to plot.
  for plot in ("paired_shift.png", "paired_copies.png", "paired_fullsize.png",
               "paired_copies_long.png"):
    assert (results / plot).stat().st_size > 1000, plot


def test_profile_summary_adds_op_events_by_kind():
  from experiments import profile_step  # pylint: disable=g-import-not-at-top
  events = [
      {"ph": "X", "name": "ThunkExecutor::Execute (wait for completion)", "dur": 2000},
      {"ph": "X", "name": "ThunkExecutor::Execute", "dur": 900},
      {"ph": "X", "name": "$api.py:2479 block_until_ready", "dur": 2100},
      {"ph": "X", "name": "dot.27", "dur": 300}, {"ph": "X", "name": "dot", "dur": 100},
      {"ph": "X", "name": "broadcast_add_fusion.28", "dur": 500},
      {"ph": "X", "name": "wrapped_reduce-window.66", "dur": 200},
      {"ph": "i", "name": "dot.1"},  # an instant event has no duration: ignored
  ]
  wall, kinds = profile_step.summarise(events, steps=2)  # durations in us -> ms per step
  assert wall == 1.0
  assert kinds == {"dot": 0.2, "broadcast_add_fusion": 0.25, "wrapped_reduce-window": 0.1}


def test_collect_keeps_committed_rows_whose_workdirs_are_absent(tmp_path):
  """The CSV outlives the workdirs: a fresh checkout that runs one more cell of the grid must not
  drop the rows committed from runs it no longer has, nor keep rows of runs the grid lost."""
  from experiments import grid  # pylint: disable=g-import-not-at-top
  runs = [grid.Run(f"r{i}", (), (("seed", i),)) for i in range(3)]
  csv_path = tmp_path / "results.csv"
  with open(csv_path, "w", newline="", encoding="utf-8") as f:
    f.write("run,seed,dev_accuracy\nr0,0,0.5\nr1,1,0.6\ngone,9,0.9\n")
  root = tmp_path / "runs"
  (root / "r1").mkdir(parents=True)  # r1 ran again here: its new summary wins
  (root / "r1" / "summary.json").write_text('{"dev": {"accuracy": 0.7}, "steps": 4}')
  (root / "r2").mkdir()
  (root / "r2" / "summary.json").write_text('{"dev": {"accuracy": 0.8}, "steps": 4}')
  rows = grid.collect(runs, root, csv_path)
  with open(csv_path, encoding="utf-8") as f:
    written = {row["run"]: row for row in csv.DictReader(f)}
  assert [r["run"] for r in rows] == ["r0", "r1", "r2"]
  assert {k: v["dev_accuracy"] for k, v in written.items()} == {"r0": "0.5", "r1": "0.7", "r2": "0.8"}
  assert written["r2"]["steps"] == "4" and written["r0"]["steps"] == ""


def test_a_teacher_trained_again_keeps_its_earlier_trainings_row_and_predictions(tmp_path):
  """Students seeded before a teacher's retraining learnt from the earlier one: its row and dev
  predictions stay, renamed, and a later collect of the same workdir changes nothing."""
  from experiments import grid  # pylint: disable=g-import-not-at-top
  teacher = grid.Run("teacher-t", (), (("mode", "teacher"),))
  root, csv_path = tmp_path / "runs", tmp_path / "results.csv"

  def train(seconds, predictions):
    shutil.rmtree(root / teacher.name, ignore_errors=True)
    (root / teacher.name).mkdir(parents=True)
    (root / teacher.name / "summary.json").write_text('{"dev": {"accuracy": 0.9}, "steps": 4}')
    (root / teacher.name / "wallclock_seconds").write_text(f"{seconds}\n")
    np.savez(root / teacher.name / "dev_predictions.npz",
             **{"dev/predictions": np.array(predictions), "dev/labels": np.array([0, 1])})
    grid.collect([teacher], root, csv_path)
    with open(csv_path, encoding="utf-8") as f:
      rows = {r["run"]: r["wallclock_seconds"] for r in csv.DictReader(f)}
    bundle = grid.load_predictions(grid.predictions_path(csv_path))
    return rows, {run: list(a["dev/predictions"]) for run, a in bundle.items()}

  assert train(100.0, [0, 0]) == ({"teacher-t": "100.0"}, {"teacher-t": [0, 0]})
  assert train(100.0, [0, 0]) == ({"teacher-t": "100.0"}, {"teacher-t": [0, 0]})  # same training
  assert train(120.0, [1, 1]) == ({"teacher-t-earlier-1": "100.0", "teacher-t": "120.0"},
                                  {"teacher-t-earlier-1": [0, 0], "teacher-t": [1, 1]})
  shutil.rmtree(root)  # a fresh checkout: the CSV and the bundle keep both trainings
  grid.collect([teacher], root, csv_path)
  assert grid.load_predictions(grid.predictions_path(csv_path)).keys() == {
      "teacher-t-earlier-1", "teacher-t"}
  rows, predictions = train(90.0, [1, 0])
  assert rows == {"teacher-t-earlier-1": "100.0", "teacher-t-earlier-2": "120.0", "teacher-t": "90.0"}
  assert predictions["teacher-t-earlier-2"] == [1, 1] and predictions["teacher-t"] == [1, 0]


def test_runs_recorded_in_the_csv_are_skipped_and_their_teacher_only_retrained_if_needed(
    tmp_path, capsys):
  """A fresh checkout resumes the grid from the committed CSV: a run with a row there is not run
  again (unless --rerun), and a teacher is retrained only for a student that still has to run."""
  from experiments import grid  # pylint: disable=g-import-not-at-top
  teacher = grid.Run("teacher-t", (), (("mode", "teacher"),))
  students = [grid.Run(f"s{i}", (), (("seed", i),), needs=teacher.name) for i in range(2)]
  runs = [teacher, *students]

  def states(**kwargs):
    grid.execute(runs, tmp_path, dry_run=True, glue_dir="unused", **kwargs)
    return {line.split("--workdir=")[1].split()[0].rsplit("/", 1)[-1]: line.split("]")[0][1:]
            for line in capsys.readouterr().out.splitlines()}

  everything = frozenset({"teacher-t", "s0", "s1"})
  assert states(only=None, recorded=everything) == {
      "teacher-t": "recorded", "s0": "recorded", "s1": "recorded"}
  assert states(only="s1", recorded=everything) == {"s1": "recorded"}
  assert states(only="s1", recorded=frozenset({"teacher-t", "s0"})) == {
      "teacher-t": "todo", "s1": "todo"}
  assert states(only=None, recorded=frozenset()) == {"teacher-t": "todo", "s0": "todo", "s1": "todo"}
  (tmp_path / "s1").mkdir()
  (tmp_path / "s1" / "summary.json").write_text("{}")
  assert states(only=None, recorded=frozenset({"teacher-t"})) == {
      "teacher-t": "todo", "s0": "todo", "s1": "done"}
  # The CSV is what marks a run recorded.
  csv_path = tmp_path / "results.csv"
  csv_path.write_text("run,seed\ns0,0\n")
  assert grid.recorded_runs(csv_path) == {"s0"}
  assert grid.recorded_runs(tmp_path / "absent.csv") == set()


def test_every_run_of_a_grid_gets_the_shared_compilation_cache(tmp_path, monkeypatch):
  from experiments import grid  # pylint: disable=g-import-not-at-top
  seen = []

  def fake_run(command, **kwargs):
    seen.append(kwargs["env"].get("JAX_COMPILATION_CACHE_DIR"))
    return subprocess.CompletedProcess(command, 1, "", "failed on purpose")

  monkeypatch.setattr(grid.subprocess, "run", fake_run)
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/from/the/environment")
  runs = [grid.Run(f"s{i}", (), (("seed", i),)) for i in range(2)]
  grid.execute(runs, tmp_path, only=None, dry_run=False, glue_dir="unused",
               xla_cache=str(tmp_path / "cache"))
  assert seen == [str(tmp_path / "cache")] * 2
  grid.execute(runs, tmp_path, only=None, dry_run=False, glue_dir="unused", xla_cache="")
  assert seen[2:] == [None] * 2  # no cache, not even the caller's


@pytest.mark.parametrize("name,bad", [
    ("paired_comparison", "--only=("), ("paired_shift", "--seeds=0"), ("paired_copies", "--csv=DIR"),
    ("paired_shift", "--csv=FOREIGN"), ("paired_copies", "--xla_cache=FOREIGN")])
def test_bad_arguments_are_a_one_line_usage_error_and_touch_nothing(name, bad, tmp_path):
  foreign = tmp_path / "foreign.csv"
  foreign.write_text("a,b\n1,2\n")
  bad = bad.replace("DIR", str(tmp_path)).replace("FOREIGN", str(foreign))
  result = _run([str(REPO / "experiments" / f"{name}.py"), "--dry_run",
                 f"--root={tmp_path / 'runs'}", bad], timeout=120)
  assert result.returncode == 2, result.stdout + result.stderr
  assert "Traceback" not in result.stderr, result.stderr
  assert f"{name}.py: error: " in result.stderr.strip().splitlines()[-1], result.stderr
  assert foreign.read_text() == "a,b\n1,2\n"


def test_kd_minus_finetune_pairs_runs_by_method_degree_and_seed():
  from experiments import report  # pylint: disable=g-import-not-at-top

  def row(aug, seed, mode, accuracy, degree="0.3"):
    return {"train_size": "1000", "aug": aug, "shift_degree": degree, "seed": seed, "mode": mode,
            "dev_accuracy": str(accuracy)}
  rows = [row("knn", "0", "finetune", 0.70), row("knn", "0", "distill", 0.74),
          row("knn", "1", "finetune", 0.80), row("knn", "1", "distill", 0.78),
          row("synonym", "0", "distill", 0.99),  # no fine-tuning partner: left out
          row("knn", "0", "finetune", 0.5, degree="0.5")]  # no KD partner at p=0.5
  lines = report.kd_minus_finetune_table(rows, [1000], [0.3, 0.5])
  assert lines[-1] == "| 1000 | +1.0 (1/2 > 0) | - |", lines


def test_best_degree_averages_methods_not_runs_and_a_tiny_negative_gap_prints_as_zero(tmp_path):
  """With uneven seeds a pooled mean lets the method with more runs decide the best degree;
  the table promises a mean over methods."""
  from experiments import report  # pylint: disable=g-import-not-at-top

  def row(aug, seed, mode, accuracy, degree):
    return {"train_size": "1000", "aug": aug, "shift_degree": degree, "seed": seed, "mode": mode,
            "dev_accuracy": str(accuracy)}
  # Method a (3 seeds) is best at 0.1, method b (1 seed) much better at 0.3. Per-method means:
  # 0.1 -> 70.0, 0.3 -> 75.0; pooled over runs 0.3 would be 67.5 and lose.
  rows = [row("a", s, "finetune", acc, d) for s in "012" for d, acc in (("0.1", 0.7), ("0.3", 0.6))]
  rows += [row("b", "0", "finetune", 0.7, "0.1"), row("b", "0", "finetune", 0.9, "0.3"),
           row("a", "0", "distill", 0.6997, "0.1")]  # paired gap -0.03 points
  lines = report.shift_tables_and_plot(rows, tmp_path / "shift.png")
  # The runner-up margin pairs seeds: per seed, 0.3 minus 0.1 is +5, -10 and -10 points.
  from experiments import stats  # pylint: disable=g-import-not-at-top
  d = stats.paired_difference([0.75, 0.6, 0.6], [0.7, 0.7, 0.7])
  assert (f"| 1000 | finetune | 0.3 (75.0) | over 0.1: -5.00 [{100 * d.low:+.2f}, "
          f"{100 * d.high:+.2f}] |") in lines, lines
  assert "| 1000 | distill | 0.1 (70.0) | - |" in lines, lines
  assert "| 1000 | +0.0 (0/1 > 0) | - |" in lines, lines


def test_report_fills_readme_marker_blocks_and_keeps_the_text_around_them(tmp_path):
  """experiments/README.md's results tables are written by report.py, between marker comments."""
  results = tmp_path / "results"
  results.mkdir()
  with open(results / "paired_copies.csv", "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["run", "mode", "aug_copies", "seed", "dev_accuracy"])
    writer.writerows([["a", "finetune", "1", "0", "0.75"], ["b", "distill", "1", "0", "0.8"]])
  before = "# Experiments\n\nText before, kept.\n\n"
  after = "\n\nText after, kept: | not | a | table |\n"
  readme = tmp_path / "README.md"
  readme.write_text(before + "<!-- report:copies:begin -->\n| stale | 99.9 |\n"
                    "<!-- report:copies:end -->" + after + "<!-- report:shift:begin -->\nold\n"
                    "<!-- report:shift:end -->\n")
  args = [str(REPO / "experiments" / "report.py"), f"--results={results}"]
  untouched = readme.read_text()
  assert _run(args, timeout=120).returncode == 0
  assert readme.read_text() == untouched  # another --results and no --readme: no README written
  first = _run(args + [f"--readme={readme}"], timeout=120)
  assert first.returncode == 0, first.stderr[-2000:]
  text = readme.read_text()
  assert text.startswith(before + "<!-- report:copies:begin -->\n\n### Augmented copies"), text
  assert ("| 1 | 75.0 (n=1) | 80.0 (n=1) |\n\n![augmented copies](results/paired_copies.png)\n\n"
          "<!-- report:copies:end -->" + after) in text, text
  assert "stale" not in text and "99.9" not in text, text
  assert text.endswith("<!-- report:shift:begin -->\n\nNo results yet.\n\n"
                       "<!-- report:shift:end -->\n"), text
  assert _run(args + [f"--readme={readme}"], timeout=120).returncode == 0
  assert readme.read_text() == text  # a second run changes nothing

  readme.write_text(before + "<!-- report:copies:begin -->\nno end marker\n")
  broken = _run(args + [f"--readme={readme}"], timeout=120)
  assert broken.returncode == 2 and "no matching end marker" in broken.stderr, broken.stderr
  assert readme.read_text() == before + "<!-- report:copies:begin -->\nno end marker\n"


def test_report_markers_in_the_experiments_readme_are_the_report_tables():
  """The committed experiments/README.md holds exactly what report.py writes between its markers."""
  from experiments import report  # pylint: disable=g-import-not-at-top
  text = (REPO / "experiments" / "README.md").read_text(encoding="utf-8")
  names = set(re.findall(r"<!-- report:([a-z]+):begin -->", text))
  assert names == set(report.BLOCKS), names
  report_md = (REPO / "experiments" / "results" / "report.md").read_text(encoding="utf-8")
  for match in report.BLOCK.finditer(text):
    block = match.group(0).split("\n", 1)[1].rsplit("\n", 1)[0].strip()
    if block == "No results yet.":  # only where the study has no results to report
      heading = {"comparison": "### AugPro comparison", "shift": "### Shift degree",
                 "fullsize": "### Shift degree on all", "copies": "### Augmented copies",
                 "copieslong": "625 steps; SST-2", "claims": "### Claims",
                 "learningrate": "### Student learning rate",
                 "smalltasks": "### RTE with the README's commands",
                 "classshare": "predicted as class 1"}[match.group(2)]
      assert heading not in report_md, match.group(2)
      continue
    assert block.replace("](results/", "](") in report_md, match.group(2)


def test_docs_tables_are_the_generated_files():
  """Every <!-- generated:PATH --> block in README.md and docs/ is that results file, unedited."""
  from experiments import docs_tables  # pylint: disable=g-import-not-at-top
  blocks = sum(docs_tables.BLOCK.findall(doc.read_text(encoding="utf-8")) != []
               for doc in docs_tables.documents())
  assert blocks >= 2
  for doc in docs_tables.documents():
    text = doc.read_text(encoding="utf-8")
    assert docs_tables.fill(text) == text, f"{doc}: run experiments/docs_tables.py"


def test_docs_tables_fill_and_refuse(tmp_path):
  from experiments import docs_tables  # pylint: disable=g-import-not-at-top
  (tmp_path / "experiments" / "results").mkdir(parents=True)
  (tmp_path / "experiments" / "results" / "t.md").write_text("| a |\n|---|\n| 1 |\n")
  block = "<!-- generated:experiments/results/t.md:begin -->\nhand-typed\n" \
          "<!-- generated:experiments/results/t.md:end -->"
  assert docs_tables.fill(f"x\n{block}\ny\n", tmp_path) == (
      "x\n<!-- generated:experiments/results/t.md:begin -->\n\n| a |\n|---|\n| 1 |\n\n"
      "<!-- generated:experiments/results/t.md:end -->\ny\n")
  for bad, message in [("<!-- generated:experiments/results/t.md:begin -->\nx\n", "end marker"),
                       (block.replace("results/t.md", "results/u.md"), "does not exist"),
                       (block.replace("experiments/results/t.md", "README.md"), "not under")]:
    with pytest.raises(ValueError, match=message):
      docs_tables.fill(bad, tmp_path)


def test_projection_profile_summary_bolds_the_defaults_and_says_when_nothing_changed():
  from experiments import projection_profile  # pylint: disable=g-import-not-at-top
  def row(aug, profile, **knobs):
    return {"aug": aug, "knobs": knobs, "profile": profile}
  shares = {"partner_share": 0.5, "nearest_share": 0.25, "other_share": 0.25,
            "continuation_share": 0.1, "non_ascii_share": 0.0, "distinct_share": 0.3,
            "measured_shift": 0.3, "changed_tokens": 500}
  nothing = {**shares, "measured_shift": 0.0, "changed_tokens": 0}
  mix = dict(mix_lambda_per="example", mix_partner_align="wrap", projection_vocab="task")
  report = {"variants": [
      row("augpro_mix", shares, mix_lambda="beta", exclude_original=True, **mix),
      row("augpro_mix", nothing, mix_lambda="folded", exclude_original=False, **mix),
      row("augpro_fgsm", shares, fgsm_eps=0.3, fgsm_loss="kd", exclude_original=True,
          projection_vocab="task"),
      row("knn", shares, projection_vocab="full")]}
  lines = projection_profile.summary_markdown(report).splitlines()
  assert "| **beta** | **yes** | **task** | 0.300 | **50.0%** | **25.0%** | 25.0% | 10.0% | 0.0% |" in lines
  assert "| folded | no | task | 0.000 | (nothing changed) | | | | |" in lines
  assert "| augpro_fgsm | 0.3 | yes | task | 0.300 | 25.0% | 25.0% | 10.0% | 0.0% | 30.0% |" in lines
  assert "| knn | | | full | 0.300 | 25.0% | 25.0% | 10.0% | 0.0% | 30.0% |" in lines


def test_epoch_defaults_scores_the_first_pairs_and_keeps_rows_of_absent_runs(tmp_path):
  """Each model is scored on the first FIRST pairs of each dev split from its predictions, a
  distill run's own teacher too; a run whose workdir is absent keeps its recorded row."""
  from experiments import epoch_defaults  # pylint: disable=import-outside-toplevel
  first = epoch_defaults.FIRST
  labels = np.r_[np.zeros(first - 10, int), np.ones(10, int), np.ones(first, int)]
  run = tmp_path / "epochs-3"
  for workdir, mode, correct in ((run / "teacher", "train_teacher", first // 2), (run, "distill", 10)):
    workdir.mkdir(parents=True, exist_ok=True)
    predictions = labels.copy()
    predictions[correct:first] = 2  # right on the first `correct` pairs only, wrong after them
    np.savez(workdir / "dev_predictions.npz", **{f"{s}/{k}": v for s in epoch_defaults.SPLITS
                                                 for k, v in (("labels", labels),
                                                              ("predictions", predictions))})
    (workdir / "summary.json").write_text(json.dumps({"mode": mode, "steps": 45}))
  (run / "run.json").write_text(json.dumps({"settings": {"teacher_learning_rate": 5e-5,
                                                         "learning_rate": 4e-4}}))
  rows = epoch_defaults.collect(tmp_path)
  assert [(r["run"], r["model"], r["learning_rate"]) for r in rows] == [
      ("epochs-3", "teacher", 5e-5), ("epochs-3", "student", 4e-4)]
  assert rows[0]["dev_matched_first2000"] == 0.5 and rows[1]["dev_matched_first2000"] == 10 / first
  assert rows[0]["dev_matched_majority"] == (first - 10) / first
  csv_path = tmp_path / "epochs.csv"
  csv_path.write_text("run,model,steps\nstudent-e30,student,450\nepochs-3,student,1\n")
  kept = epoch_defaults.merged(csv_path, rows)
  assert [(r["run"], r["model"], str(r["steps"])) for r in kept] == [
      ("epochs-3", "teacher", "45"), ("epochs-3", "student", "45"),
      ("student-e30", "student", "450")]


def test_diagnosis_keeps_each_runs_curves_and_reports_the_class_share_over_training(tmp_path):
  from experiments import fgsm_diagnosis  # pylint: disable=import-outside-toplevel
  root, results = tmp_path / "runs", tmp_path / "results"
  runs = protocol.diagnosis_runs(3, True, root)
  _fabricate(runs, root, np.random.default_rng(1))
  shares = {}  # run -> the class-1 shares its evaluations logged
  for i, run in enumerate(r for r in runs if dict(r.columns)["mode"] != "teacher"):
    shares[run.name] = [0.5, 0.9 - 0.1 * i, 0.7]
    lines = [{"step": 0, "kind": "compile", "seconds": 1.0}]
    for step, share in zip((1, 2, 3), shares[run.name]):
      lines += [{"step": step, "kind": "train", "loss": 0.5 / step, "grad_norm": 2.0 * step + i,
                 "learning_rate": 1e-4},
                {"step": step, "kind": "eval", "accuracy": 0.6, "f1": 0.5,
                 "predicted_share/0": 1 - share, "predicted_share/1": share}]
    (root / run.name / "metrics.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
  csv_path = results / "fgsm_diagnosis.csv"
  grid.collect(runs, root, csv_path)
  fgsm_diagnosis.collect_traces(runs, root, csv_path)
  traces = fgsm_diagnosis.read_traces(fgsm_diagnosis.trace_path(csv_path))
  assert sorted(traces) == sorted(shares)  # students only, not the teacher
  for name, steps in traces.items():
    assert [r["kind"] for r in steps] == ["train", "eval"] * 3
    assert [float(r["predicted_share/1"]) for r in steps if r["kind"] == "eval"] == shares[name]
    assert "learning_rate" not in steps[0] and "f1" not in steps[1]
  # Workdirs are scratch: a run whose workdir is gone keeps its recorded curve.
  gone = next(iter(shares))
  for path in (root / gone).iterdir():
    path.unlink()
  (root / gone).rmdir()
  fgsm_diagnosis.collect_traces(runs, root, csv_path)
  assert fgsm_diagnosis.read_traces(fgsm_diagnosis.trace_path(csv_path)) == traces
  rows = [r for r in csv.DictReader(open(csv_path, encoding="utf-8")) if r["mode"] != "teacher"]
  lines = fgsm_diagnosis.report_section(rows, traces, grid.load_predictions(
      grid.predictions_path(csv_path)), results / "fgsm_diagnosis.png")
  by_arm = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ")}
  # The share's range over the second half of the run (steps 2 and 3 of 3), the largest norm.
  assert "| 0.70-0.90 | 6.0 |" in by_arm["none"], lines
  assert "| 0.70-0.80 | 7.0 |" in by_arm["default"], lines
  assert (results / "fgsm_diagnosis.png").stat().st_size > 1000


def test_the_diagnosis_rule_needs_every_seed_balanced_then_takes_the_best_accuracy():
  from experiments import fgsm_diagnosis  # pylint: disable=import-outside-toplevel
  labels = np.array([0, 1] * 50)  # a class-1 share of 0.5
  def run(arm, seed, accuracy, share):
    predictions = (np.arange(100) < 100 * share).astype(int)
    return ({"run": f"fd-{arm}-s{seed}", "arm": arm, "seed": str(seed), "mode": "distill",
             "dev_accuracy": str(accuracy)},
            {"dev/predictions": predictions, "dev/labels": labels})
  cells = [("none", 0, 0.9, 0.5), ("none", 1, 0.9, 0.5),  # the reference is never chosen
           ("default", 0, 0.8, 0.5), ("default", 1, 0.8, 0.80),  # one seed leans: out
           ("eps0.03", 0, 0.6, 0.64), ("eps0.03", 1, 0.6, 0.36),
           ("lr5e-5", 0, 0.7, 0.5), ("lr5e-5", 1, 0.7, 0.5)]
  made = [run(*c) for c in cells]
  rows, predictions = [r for r, _ in made], {r["run"]: p for r, p in made}
  assert fgsm_diagnosis.chosen_setting(rows, predictions) == "lr5e-5"
  assert fgsm_diagnosis.chosen_setting(rows[:-1], predictions) == "eps0.03"  # lr5e-5 lacks a seed
  assert fgsm_diagnosis.chosen_setting(rows[:-1], predictions, tolerance=0.1) is None


def test_the_revised_comparison_arm_is_the_one_the_committed_diagnosis_chose():
  from experiments import fgsm_diagnosis  # pylint: disable=import-outside-toplevel
  csv_path = grid.RESULTS / "fgsm_diagnosis.csv"
  if not csv_path.exists():
    pytest.skip("no diagnosis results committed (experiments/results/fgsm_diagnosis.csv)")
  rows = [r for r in csv.DictReader(open(csv_path, encoding="utf-8"))]
  chosen = fgsm_diagnosis.chosen_setting(rows, grid.load_predictions(grid.predictions_path(csv_path)))
  assert sorted(protocol.REVISED_FGSM) == ([chosen] if chosen else [])
  for name, flags in protocol.REVISED_FGSM.items():
    assert flags == protocol.DIAGNOSIS_SETTINGS[name]
