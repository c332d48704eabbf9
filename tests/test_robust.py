"""Runs that cannot be silently mixed: a workdir owns its run, one writer at a time, a signal is
honoured in every phase of `distill`, junk in the checkpoint folder is ignored, and stderr stays
clean. Each test is a row of docs/robustness.md ("Runs that cannot be silently mixed").

Every run is a real CLI subprocess on the tiny BERT of test_resume.py (2 x 32, MiniLM's
tokenizer), sharing a persistent XLA compilation cache. Signals are sent two ways: from outside
(a real `kill`), and by the process itself at an exact safe point of a chosen phase
(AUGPRO_JAX_SIGNAL_AT, interrupts.py), which lands a signal inside a millisecond-long eval or
teacher-logit pass whatever the load on the machine.
"""

import dataclasses
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO
from test_resume import _write_data, _write_tiny_bert, train_steps  # pylint: disable=g-importing-member
from xla_env import xla_flags

pytestmark = pytest.mark.slow  # subprocesses, end-to-end runs or benchmarks: not in `make test-fast`

PYTHON = sys.executable
TIMEOUT = 300
STEPS = 6  # student steps; the teacher trains 8 (64 examples, batch 8, one epoch)


@dataclasses.dataclass
class Lab:
  root: pathlib.Path
  env: dict
  train: pathlib.Path
  dev: pathlib.Path
  bert: pathlib.Path


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Lab:
  root = tmp_path_factory.mktemp("robust")
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1",
         "XLA_FLAGS": xla_flags(2),
         "JAX_COMPILATION_CACHE_DIR": str(root / "xla_cache")}
  env.pop("AUGPRO_JAX_SIGNAL_AT", None)
  train, dev = _write_data(root)
  return Lab(root, env, train, dev, _write_tiny_bert(root / "bert"))


def common(lab: Lab, *extra: str) -> list[str]:
  return ["--task=custom", f"--train_file={lab.train}", f"--eval_file={lab.dev}",
          "--text_fields=sentence", "--label_field=label", f"--teacher={lab.bert}",
          "--max_seq_len=16", "--batch_size=8", "--progress=false", "--student_layers=1",
          "--student_hidden=32", "--student_heads=2", *extra]


def distill(lab: Lab, workdir: pathlib.Path, *extra: str) -> list[str]:
  """distill with its own teacher (trained in <workdir>/teacher), evaluating every 3 steps."""
  return common(lab, "--mode=distill", "--aug=augpro_mix", "--teacher_num_epochs=1",
                f"--num_train_steps={STEPS}", "--eval_every=3", "--checkpoint_every=2",
                "--log_every=1", f"--workdir={workdir}", *extra)


def run(lab: Lab, args: list[str], signal_at: str = "", **env) -> subprocess.CompletedProcess:
  full_env = {**lab.env, **env}
  if signal_at:
    full_env["AUGPRO_JAX_SIGNAL_AT"] = signal_at
  return subprocess.run([PYTHON, str(REPO / "main.py"), *args], capture_output=True, text=True,
                        timeout=TIMEOUT, env=full_env, cwd=REPO)


def summary(workdir: pathlib.Path) -> dict:
  return json.loads((workdir / "summary.json").read_text())


def steps_on_disk(folder: pathlib.Path) -> list[int]:
  if not folder.is_dir():
    return []
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def one_line(stderr: str, prefix: str) -> str:
  assert "Traceback" not in stderr, stderr[-3000:]
  lines = [line for line in stderr.splitlines() if line.startswith(prefix)]
  assert len(lines) == 1, stderr[-3000:]
  return lines[0]


def only_warnings(stderr: str) -> list[str]:
  """stderr must hold nothing but our own `warning:` lines (no traceback, no library noise)."""
  lines = [line for line in stderr.splitlines() if line.strip()]
  assert all(line.startswith("warning: ") for line in lines), stderr[-3000:]
  return lines


@pytest.fixture(scope="module")
def reference(lab) -> dict:
  """An uninterrupted distill (teacher fine-tuned inside): what every stopped run must reproduce."""
  workdir = lab.root / "reference"
  result = run(lab, distill(lab, workdir))
  assert result.returncode == 0, result.stderr[-3000:]
  assert only_warnings(result.stderr) == []
  return {"workdir": workdir, **summary(workdir)}


def copy_run(source: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
  shutil.copytree(source, dest)
  (dest / "run.lock").unlink(missing_ok=True)
  return dest


# ----------------------------------------------------------------------------------------------
# Signals in every phase.
# ----------------------------------------------------------------------------------------------

# One workdir, stopped in each phase in turn; every start resumes the previous one and the last
# finishes. `at` counts safe points from the start of that process: the teacher trains 8 steps,
# evaluates at 3, 6 and 8 and saves at 2, 4, 6, 8; the student evaluates at 3 and 6 (the end) and
# saves at 2, 4 and 6. Columns: phase, AUGPRO_JAX_SIGNAL_AT, words of the message, the teacher's
# and the student's newest checkpoint after the stop.
PHASES = [
    ("teacher fine-tuning", "step:5", "stopped at step 5 by SIGTERM", 5, None),
    ("teacher evaluation", "eval:1", "during evaluation at step 6", 6, None),
    ("between teacher and student", "between_phases:2", "after fine-tuning the teacher", 8, None),
    ("teacher-logit pass", "teacher_logits:1", "during the teacher-logit pass", 8, None),
    ("student checkpointing", "save:1", "stopped at step 2 by SIGTERM", 8, 2),
    ("student evaluation", "eval:1", "during evaluation at step 3", 8, 3),
    ("student training", "step:1", "stopped at step 4 by SIGTERM", 8, 4),
    ("final evaluation", "eval:1", f"during evaluation at step {STEPS}", 8, STEPS),
    ("export and summary", "between_phases:2", "after the run finished", 8, STEPS),
]


def test_sigterm_in_every_phase_of_distill_then_rerun_is_bitwise_exact(lab, reference, tmp_path):
  workdir = tmp_path / "run"
  for phase, at, words, teacher_step, student_step in PHASES:
    result = run(lab, distill(lab, workdir), signal_at=at)
    assert result.returncode == 3, (phase, result.returncode, result.stderr[-3000:])
    line = one_line(result.stderr, "preempted:")
    assert words in line, (phase, line)
    assert steps_on_disk(workdir / "teacher" / "checkpoints")[-1] == teacher_step, phase
    student = steps_on_disk(workdir / "checkpoints")
    assert (student[-1] if student else None) == student_step, (phase, student)
    finished = phase == "export and summary"
    assert (workdir / "summary.json").exists() == finished, phase
  result = run(lab, distill(lab, workdir))
  assert result.returncode == 0, result.stderr[-3000:]
  assert only_warnings(result.stderr) == []
  got = summary(workdir)
  assert got["resumed_from_step"] == STEPS
  assert got["student_params_sha256"] == reference["student_params_sha256"]
  assert got["dev"] == reference["dev"] and got["teacher_dev"] == reference["teacher_dev"]
  assert train_steps(workdir) == list(range(1, STEPS + 1))  # each student step logged once


def _wait_for(predicate, proc, what: str) -> None:
  deadline = time.monotonic() + TIMEOUT
  while not predicate():
    if proc.poll() is not None:
      pytest.fail(f"run ended (status {proc.returncode}) before {what}")
    if time.monotonic() > deadline:
      proc.kill()
      pytest.fail(f"no {what} after {TIMEOUT}s")
    time.sleep(0.02)


def test_sigterm_at_the_end_of_teacher_fine_tuning_is_not_lost(lab, reference, tmp_path):
  """A real SIGTERM after the teacher's last step: the student phase must not run."""
  workdir = tmp_path / "run"
  with open(tmp_path / "err", "w+", encoding="utf-8") as err:
    proc = subprocess.Popen([PYTHON, str(REPO / "main.py"), *distill(lab, workdir)],
                            stdout=subprocess.DEVNULL, stderr=err, env=lab.env, cwd=REPO)
    _wait_for(lambda: 8 in train_steps(workdir / "teacher"), proc, "teacher step 8")
    proc.send_signal(signal.SIGTERM)
    status = proc.wait(timeout=TIMEOUT)
    err.seek(0)
    stderr = err.read()
  assert status == 3, (status, stderr[-3000:])
  one_line(stderr, "preempted:")
  assert not (workdir / "checkpoints").exists() and not (workdir / "summary.json").exists()
  result = run(lab, distill(lab, workdir))
  assert result.returncode == 0, result.stderr[-3000:]
  assert summary(workdir)["student_params_sha256"] == reference["student_params_sha256"]


def test_sigterm_stops_within_a_step_not_at_the_next_sync(lab, reference, tmp_path):
  """No log or checkpoint step for 100 steps (checkpoints every 100, metrics every 1000): the
  stop comes at the step after the signal, not at the next log or checkpoint step. (The CPU
  backend does not let the host run ahead of the device, so here this checks that every step
  boundary asks; `fit` also keeps at most one step queued for backends that do run ahead.)"""
  workdir = tmp_path / "run"
  args = common(lab, "--mode=distill", f"--teacher_ckpt={reference['workdir'] / 'teacher'}",
                "--num_train_steps=1000", "--checkpoint_every=100", "--log_every=1000",
                f"--workdir={workdir}")
  with open(tmp_path / "err", "w+", encoding="utf-8") as err:
    proc = subprocess.Popen([PYTHON, str(REPO / "main.py"), *args], stdout=subprocess.DEVNULL,
                            stderr=err, env=lab.env, cwd=REPO)
    _wait_for(lambda: 100 in steps_on_disk(workdir / "checkpoints"), proc, "checkpoint 100")
    proc.send_signal(signal.SIGTERM)
    status = proc.wait(timeout=TIMEOUT)
    err.seek(0)
    stderr = err.read()
  assert status == 3, (status, stderr[-3000:])
  stopped = int(re.search(r"stopped at step (\d+)", one_line(stderr, "preempted:")).group(1))
  assert 100 < stopped < 200, stopped
  assert steps_on_disk(workdir / "checkpoints")[-1] == stopped


# ----------------------------------------------------------------------------------------------
# The workdir owns its run.
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_finetune(lab) -> pathlib.Path:
  """A finished 3-step augpro_mix fine-tuning run, seed 0."""
  workdir = lab.root / "finetune"
  result = run(lab, common(lab, "--mode=finetune", "--aug=augpro_mix", "--num_train_steps=3",
                           "--checkpoint_every=1", f"--workdir={workdir}"))
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def _snapshot(workdir: pathlib.Path) -> dict[str, float]:
  return {str(p.relative_to(workdir)): p.stat().st_mtime_ns for p in workdir.rglob("*")
          if p.is_file() and p.name != "run.lock"}


@pytest.mark.parametrize("flags,needles", [
    (["--aug=knn", "--seed=1", "--num_train_steps=6"],
     ["--aug: augpro_mix in the workdir, knn now", "--seed: 0 in the workdir, 1 now",
      "--num_train_steps: 3 in the workdir, 6 now"]),
    (["--max_seq_len=32"], ["--max_seq_len: 16 in the workdir, 32 now"]),
    (["--mode=distill"], ["--mode: finetune in the workdir, distill now"]),
])
def test_resume_with_other_settings_is_refused(lab, finished_finetune, flags, needles):
  before = _snapshot(finished_finetune)
  args = common(lab, "--mode=finetune", "--aug=augpro_mix", "--num_train_steps=3",
                "--checkpoint_every=1", f"--workdir={finished_finetune}")
  result = run(lab, [*args, *flags])
  assert result.returncode == 2, result.stderr[-3000:]
  line = one_line(result.stderr, "error:")
  assert "holds another run" in line, line
  for needle in needles:
    assert needle in line, line
  assert _snapshot(finished_finetune) == before  # nothing in the workdir was touched


def test_finetune_on_a_distill_workdir_is_refused(lab, reference, tmp_path):
  workdir = copy_run(reference["workdir"], tmp_path / "run")
  before = _snapshot(workdir)
  args = [a if a != "--mode=distill" else "--mode=finetune" for a in distill(lab, workdir)]
  result = run(lab, args)
  assert result.returncode == 2, result.stderr[-3000:]
  assert "--mode: distill in the workdir, finetune now" in one_line(result.stderr, "error:")
  assert _snapshot(workdir) == before


def test_changed_data_file_is_refused(lab, tmp_path):
  train = tmp_path / "train.tsv"
  shutil.copy(lab.train, train)
  workdir = tmp_path / "run"
  args = common(lab, "--mode=finetune", "--num_train_steps=2", f"--workdir={workdir}")
  args = [a if not a.startswith("--train_file=") else f"--train_file={train}" for a in args]
  assert run(lab, args).returncode == 0
  lines = train.read_text().splitlines()
  train.write_text("\n".join(lines[:1] + lines[2:] + lines[1:2]) + "\n")  # same rows, new order
  result = run(lab, args)
  assert result.returncode == 2, result.stderr[-3000:]
  assert "the train data: sha256" in one_line(result.stderr, "error:")


def test_task_change_on_a_glue_workdir_is_refused(lab, glue, tmp_path):
  workdir = tmp_path / "run"
  args = ["--task=sst2", f"--glue_dir={glue}", f"--teacher={lab.bert}", "--mode=finetune",
          "--max_seq_len=16", "--batch_size=8", "--train_size=48", "--eval_size=16",
          "--num_train_steps=2", "--student_layers=1", "--student_hidden=32",
          "--student_heads=2", "--progress=false", f"--workdir={workdir}"]
  assert run(lab, args).returncode == 0
  result = run(lab, [*args, "--task=rte"])
  assert result.returncode == 2, result.stderr[-3000:]
  assert "--task: sst2 in the workdir, rte now" in one_line(result.stderr, "error:")


def test_settings_that_cannot_change_the_result_may_differ(lab, reference, tmp_path):
  workdir = copy_run(reference["workdir"], tmp_path / "run")
  for path in workdir.joinpath("checkpoints").iterdir():
    if path.name == str(STEPS):
      shutil.rmtree(path)  # resume from step 4, so the loop really runs under the new flags
  result = run(lab, distill(lab, workdir, "--log_every=2", "--eval_every=1",
                            "--checkpoint_every=1", "--keep_checkpoints=5", "--progress=true"))
  assert result.returncode == 0, result.stderr[-3000:]
  got = summary(workdir)
  assert got["resumed_from_step"] == 4
  assert got["student_params_sha256"] == reference["student_params_sha256"]


def test_second_writer_is_refused_naming_the_holder(lab, tmp_path):
  from augpro_jax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel

  workdir = tmp_path / "run"
  workdir.mkdir()
  with workdir_lib.WorkdirLock(workdir):  # this test process is the first writer
    result = run(lab, common(lab, "--mode=finetune", "--num_train_steps=2",
                             f"--workdir={workdir}"))
  assert result.returncode == 2, result.stderr[-3000:]
  line = one_line(result.stderr, "error:")
  assert f"in use by PID {os.getpid()} on host {socket.gethostname()}" in line, line
  assert not (workdir / "run.json").exists()  # the second wrote nothing


def test_lock_left_by_a_dead_run_is_taken_over(lab, tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "run.lock").write_text('{"pid": 4194304, "host": "gone", "started": "earlier"}')
  result = run(lab, common(lab, "--mode=finetune", "--num_train_steps=2", f"--workdir={workdir}"))
  assert result.returncode == 0, result.stderr[-3000:]
  warnings = only_warnings(result.stderr)
  assert len(warnings) == 1 and "PID 4194304 on host gone" in warnings[0], warnings
  assert not (workdir / "run.lock").exists()  # released on exit


# ----------------------------------------------------------------------------------------------
# Checkpoint folders and clean output.
# ----------------------------------------------------------------------------------------------


def test_junk_in_the_checkpoint_folder_is_ignored(lab, reference, tmp_path):
  workdir = copy_run(reference["workdir"], tmp_path / "run")
  (workdir / "checkpoints" / "999").mkdir()
  (workdir / "checkpoints" / "999" / "stray.txt").write_text("not a checkpoint")
  (workdir / "checkpoints" / "notes.txt").write_text("mine")
  result = run(lab, distill(lab, workdir))
  assert result.returncode == 0, result.stderr[-3000:]
  warnings = only_warnings(result.stderr)
  assert len(warnings) == 1 and "ignoring 2 entries" in warnings[0], warnings
  assert "999, notes.txt" in warnings[0]
  assert summary(workdir)["resumed_from_step"] == STEPS  # the valid step, judged as before
  assert summary(workdir)["student_params_sha256"] == reference["student_params_sha256"]
  assert (workdir / "checkpoints" / "999" / "stray.txt").exists()  # left alone


def test_fallback_from_a_truncated_checkpoint_has_no_traceback(lab, reference, tmp_path):
  workdir = copy_run(reference["workdir"], tmp_path / "run")
  for path in (workdir / "checkpoints" / str(STEPS)).rglob("*"):
    if path.is_file() and path.parent.name == "d":
      path.write_bytes(path.read_bytes()[:7])
  result = run(lab, distill(lab, workdir))
  assert result.returncode == 0, result.stderr[-3000:]
  warnings = only_warnings(result.stderr)  # no 'Event loop is closed' tracebacks
  assert [w for w in warnings if "corrupt or partial" in w and "falling back to step 4" in w]
  assert summary(workdir)["student_params_sha256"] == reference["student_params_sha256"]


def test_numeric_labels_one_example_eval_and_no_library_warnings(lab, tmp_path):
  """JSONL labels 1, 1.0 and "1" are one class; a 1-example eval set gives no sklearn warning;
  off a terminal the progress display is plain lines, without carriage returns."""
  train, dev = tmp_path / "train.jsonl", tmp_path / "dev.jsonl"
  labels = [1, 1.0, "1", 0, "0.0"]
  train.write_text("".join(json.dumps({"text": f"a {'good' if i % 2 else 'dull'} film {i}",
                                       "label": labels[i % 5]}) + "\n" for i in range(40)))
  dev.write_text(json.dumps({"text": "a good film", "label": 1}) + "\n")
  workdir = tmp_path / "run"
  args = ["--task=custom", f"--train_file={train}", f"--eval_file={dev}", "--text_fields=text",
          "--label_field=label", f"--teacher={lab.bert}", "--max_seq_len=16", "--batch_size=8",
          "--mode=train_teacher", "--teacher_num_epochs=1", "--log_every=2", "--progress=true",
          f"--workdir={workdir}"]
  result = run(lab, args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert only_warnings(result.stderr) == []
  assert json.loads((workdir / "final" / "model.json").read_text())["label_names"] == ["0", "1"]
  assert "\r" not in result.stdout + result.stderr
  progress = [line for line in result.stdout.splitlines() if line.startswith("step ")]
  assert [line.split()[1] for line in progress] == ["2/5", "4/5", "5/5"], result.stdout


def test_labels_differing_in_case_or_rare_are_named(lab, tmp_path):
  rows = ["text,label"] + [f"film {i},{'positive' if i % 2 else 'negative'}" for i in range(199)]
  csv = tmp_path / "train.csv"
  csv.write_text("\n".join(rows + ["film x,Positive"]) + "\n")
  workdir = tmp_path / "run"
  args = ["--task=custom", f"--train_file={csv}", f"--eval_file={csv}", "--text_fields=text",
          "--label_field=label", f"--teacher={lab.bert}", "--max_seq_len=16", "--batch_size=8",
          "--mode=train_teacher", "--teacher_num_epochs=0.05", "--progress=false",
          f"--workdir={workdir}"]
  result = run(lab, args)
  assert result.returncode == 0, result.stderr[-3000:]
  warnings = only_warnings(result.stderr)
  assert any("'Positive' and 'positive' differ only in case" in w for w in warnings), warnings
  assert any("'Positive' (1 of 200)" in w for w in warnings), warnings
  # Fixing the set makes the stray label an error, on its line.
  result = run(lab, [*args, "--label_names=negative,positive", f"--workdir={tmp_path / 'fixed'}"])
  assert result.returncode == 2
  assert "line 201: label 'Positive'" in one_line(result.stderr, "error:")


def test_eval_label_outside_the_training_labels_is_an_error(lab, tmp_path):
  dev = tmp_path / "dev.tsv"
  dev.write_text("sentence\tlabel\na fine film\t1\na strange film\t2\n")
  args = common(lab, "--mode=finetune", "--num_train_steps=2", f"--workdir={tmp_path / 'run'}")
  args = [a if not a.startswith("--eval_file=") else f"--eval_file={dev}" for a in args]
  result = run(lab, args)
  assert result.returncode == 2, result.stderr[-3000:]
  line = one_line(result.stderr, "error:")
  assert "line 3: label '2'" in line and "not one of the classes" in line, line
