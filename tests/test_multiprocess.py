"""Pod scale on one machine: main.py as 2 processes x 4 CPU devices equals 1 process x 8 devices,
with every device on the mesh's data axis (the default) and on a [2 data, 4 fsdp] mesh.

The processes talk to each other as the hosts of a pod slice would: through jax.distributed
(coordinator on 127.0.0.1) and gloo collectives for the step's all-reduce. Both layouts
use the same data and seed; the per-example augmentation keys depend on the position in the global
batch only, so the runs must agree up to the order of floating-point reductions.

Every launched process has a timeout and is killed (its own process group) when it, or a partner,
fails or overruns, so a hung collective cannot hang pytest.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Optional

import numpy as np
import pytest

from conftest import REPO
from test_resume import _write_tiny_bert  # pylint: disable=g-importing-member
from xla_env import xla_flags

pytestmark = pytest.mark.slow  # subprocesses, end-to-end runs or benchmarks: not in `make test-fast`

PYTHON = sys.executable
TIMEOUT_S = 300  # per group of processes; a healthy group needs well under a minute
# 2x4 and 1x8 differ by the order of floating-point reductions only: a few float32 ulps (measured
# 3.6e-7 on weights of size ~2). A wrong batch, a missing all-reduce or a dropped example moves
# parameters by ~1e-4 or more (learning rate 1e-3 over 4 steps).
RTOL, ATOL = 1e-5, 1e-6
LEARNING_RATE, STEPS = 1e-3, 4
# The attention key bias gets no gradient in exact arithmetic (softmax ignores a per-query constant):
# its "gradient" is rounding noise, which Adam scales up to steps of ~learning rate. It differs
# between layouts by up to that much, and nothing else depends on it.
GRADIENT_FREE = "attention/key/bias"

WORDS = ("good great fine bad awful dull film movie plot actor scene story music long short funny "
         "sad warm cold bright dark slow fast clever silly").split()


# ----------------------------------------------------------------------------------------------
# Fixtures: data, a tiny pretrained BERT, and a teacher fine-tuned once.
# ----------------------------------------------------------------------------------------------


def _write_tsv(path: pathlib.Path, n: int, seed: int) -> str:
  rng = np.random.default_rng(seed)
  rows = ["sentence\tlabel"]
  for _ in range(n):
    words = rng.choice(WORDS, size=rng.integers(4, 14))
    label = int(sum(w in ("good", "great", "fine", "funny", "clever") for w in words) >
                sum(w in ("bad", "awful", "dull", "silly", "slow") for w in words))
    rows.append(f"{' '.join(words)}\t{label}")
  path.write_text("\n".join(rows) + "\n")
  return str(path)


@pytest.fixture(scope="session")
def setup(tmp_path_factory) -> dict:
  """Data, the tiny BERT, the flags every run shares, and a teacher fine-tuned by one process."""
  try:
    address = socket.gethostbyname(socket.gethostname())
  except OSError:
    address = ""
  if not address.startswith("127."):
    # gloo binds to the address of the host name; these tests may only use loopback.
    pytest.skip(f"the host name resolves to {address or 'nothing'}, not a loopback address")
  root = tmp_path_factory.mktemp("multiprocess")
  # Weights with std 1, not BERT's 0.02: an untrained BERT this narrow maps every sentence to
  # about the same logits, and dev predictions that differ between examples are what show that
  # each process's logits are gathered back to the right example.
  bert = _write_tiny_bert(root / "tiny_bert", weight_std=1.0, ffn=128)
  flags = [
      "--task=custom", f"--train_file={_write_tsv(root / 'train.tsv', 64, seed=1)}",
      # 37 dev examples: not a multiple of the global eval batch (16), and the last global batch
      # leaves process 1 nothing but padding.
      f"--eval_file={_write_tsv(root / 'dev.tsv', 37, seed=2)}",
      "--text_fields=sentence", "--label_field=label", f"--teacher={bert}",
      "--max_seq_len=16", "--batch_size=16", "--eval_batch_size=16", "--student_layers=1",
      "--student_hidden=32", "--student_heads=2", f"--learning_rate={LEARNING_RATE}",
      f"--num_train_steps={STEPS}",
      # The teacher: 1 epoch of 64 examples = 4 steps, like the student.
      "--checkpoint_every=2", "--teacher_num_epochs=1", f"--teacher_learning_rate={LEARNING_RATE}",
      # Compiles are free here: 4 steps alone would not pay for a second bucket's compile, and the
      # runs are meant to use two buckets (8 and 16 tokens).
      "--bucket_compile_steps=0",
      # Seed 1: at seed 0 the length-bucketed batches leave the 4-step students predicting one
      # class (MCC 0), and constant predictions could not show a misplaced row.
      "--progress=false", "--seed=1"]
  teacher = root / "teacher"
  _run_group([_job(flags + ["--mode=train_teacher", f"--workdir={teacher}"], teacher)])
  return {"root": root, "bert": bert, "flags": flags, "teacher": teacher}


# ----------------------------------------------------------------------------------------------
# Launching main.py.
# ----------------------------------------------------------------------------------------------


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict[str, str]:
  # No cluster variables may leak in: they would make distributed.py auto-join a real job.
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("SLURM_", "TPU_", "MEGASCALE_")) and k != "CUDA_VISIBLE_DEVICES"}
  env.update(JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
             # Level 0 halves CPU compile time; both layouts compile with the same flags.
             XLA_FLAGS=f"{xla_flags(devices)} --xla_backend_optimization_level=0")
  return env


def _job(args: list[str], workdir: pathlib.Path, devices: int = 8, tag: str = "") -> dict:
  log = workdir.parent / f"{workdir.name}{tag}.log"
  return {"argv": [PYTHON, str(REPO / "main.py"), *args], "env": _env(devices), "log": log}


def _jobs_2x4(args: list[str], workdir: pathlib.Path) -> list[dict]:
  address = f"127.0.0.1:{_free_port()}"
  return [_job(args + [f"--workdir={workdir}", f"--coordinator_address={address}",
                       "--num_processes=2", f"--process_id={i}"], workdir, devices=4, tag=f".{i}")
          for i in range(2)]


def _run_group(jobs: list[dict], timeout: float = TIMEOUT_S) -> None:
  """Run processes concurrently; fail (after killing the rest) if any fails or overruns."""
  procs = []
  for job in jobs:
    with open(job["log"], "wb") as log:
      procs.append(subprocess.Popen(job["argv"], env=job["env"], cwd=REPO, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True))  # own group: killable as a unit
  deadline = time.monotonic() + timeout
  failed_at: Optional[float] = None
  try:
    while any(p.poll() is None for p in procs):
      now = time.monotonic()
      if failed_at is None and any(p.returncode not in (None, 0) for p in procs):
        failed_at = now  # partners of a failed process would wait in a collective: short grace
      if now > deadline or (failed_at is not None and now > failed_at + 20):
        break
      time.sleep(0.2)
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
  for job, p in zip(jobs, procs):
    if p.returncode != 0:
      tail = job["log"].read_text(errors="replace")[-3000:]
      pytest.fail(f"{' '.join(job['argv'][2:])}\nexited {p.returncode} (timeout {timeout}s)\n{tail}")


# ----------------------------------------------------------------------------------------------
# Reading results.
# ----------------------------------------------------------------------------------------------


def _params(workdir: pathlib.Path) -> dict:
  from flax import serialization  # pylint: disable=import-outside-toplevel
  return serialization.msgpack_restore((workdir / "final" / "params.msgpack").read_bytes())


def _leaves(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_leaves(value, f"{prefix}{key}/"))
    else:
      out[prefix + key] = np.asarray(value)
  return out


def _assert_params_close(a: pathlib.Path, b: pathlib.Path) -> float:
  pa, pb = _leaves(_params(a)), _leaves(_params(b))
  assert pa.keys() == pb.keys()
  worst = 0.0
  for key in pa:
    if key.endswith(GRADIENT_FREE):
      assert np.max(np.abs(pa[key] - pb[key])) <= STEPS * LEARNING_RATE, key
      continue
    np.testing.assert_allclose(pa[key], pb[key], rtol=RTOL, atol=ATOL, err_msg=key)
    worst = max(worst, float(np.max(np.abs(pa[key] - pb[key]))))
  return worst


def _summary(workdir: pathlib.Path) -> dict:
  return json.loads((workdir / "summary.json").read_text())


def _assert_single_writer(workdir: pathlib.Path, sessions: int = 1) -> None:
  """Process 0 alone wrote the run's files; nobody left a half-written export behind."""
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  keys = [(r["step"], r["kind"]) for r in records]
  assert len(keys) == len(set(keys)), keys  # a second writer would duplicate every line
  assert ("compile" in {k for _, k in keys}) and (4, "eval") in keys
  # One TensorBoard file per invocation of the run (a resumed run opens a second one).
  assert len(list((workdir / "tensorboard").glob("events.out.tfevents.*"))) == sessions
  assert sorted(p.name for p in (workdir / "final").iterdir()) == ["hf", "model.json",
                                                                   "params.msgpack"]
  assert (workdir / "final" / "hf" / "model.safetensors").is_file()
  assert not [p.name for p in workdir.iterdir() if ".tmp" in p.name or ".old-" in p.name]
  assert not list(workdir.glob(".write-probe-*"))
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [2, 4], steps


def _assert_same_run(one: pathlib.Path, two: pathlib.Path, bert: pathlib.Path,
                     discriminating: bool = True, buckets: tuple = (8, 16)) -> float:
  s1, s2 = _summary(one), _summary(two)
  assert (s1["processes"], s1["devices"]) == (1, 8)
  assert (s2["processes"], s2["devices"]) == (2, 8)
  # Length buckets: both layouts trained and evaluated on batches of 8 and of 16 tokens.
  assert s1["length_buckets"] == s2["length_buckets"] == list(buckets)
  assert s1["steps_per_length"] == s2["steps_per_length"]
  assert len(s1["steps_per_length"]) == len(buckets)
  assert s2["token_utilisation"] == pytest.approx(s1["token_utilisation"])
  # Every dev example counted exactly once, and its logits gathered to the right example, in both
  # layouts (predict() asserts the first in each run). A non-zero MCC means the predictions differ
  # between examples, so a misplaced row would change the metrics.
  assert s1["dev"]["mcc"] != 0 or not discriminating
  assert s2["dev"] == pytest.approx(s1["dev"], abs=1e-9)
  assert s2["best_dev"] == pytest.approx(s1["best_dev"])
  if s1["measured_shift"] is not None:
    assert s2["measured_shift"] == pytest.approx(s1["measured_shift"], rel=1e-5)
  worst = _assert_params_close(one, two)
  # The tolerance is meaningful: training moved the embeddings far more than it.
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  init = next(value for name, value in load_file(str(bert / "model.safetensors")).items()
              if name.endswith("embeddings.word_embeddings.weight"))
  trained = _leaves(_params(one))["embeddings/word_embeddings/embedding"]
  assert np.max(np.abs(trained - init)) > 10 * (ATOL + RTOL * np.max(np.abs(init)))
  return worst


# ----------------------------------------------------------------------------------------------
# Tests.
# ----------------------------------------------------------------------------------------------


def test_process_slices_cover_the_global_batch():
  """Two processes' slices of train and eval batches are exactly the one-process batches."""
  from augpro_jax import input_pipeline as pipeline  # pylint: disable=import-outside-toplevel

  n, seq = 37, 5
  ids = np.arange(n * seq, dtype=np.int32).reshape(n, seq)
  data = pipeline.Tokenized(ids, np.ones_like(ids), np.zeros_like(ids), np.arange(n) % 2, 0,
                            [("x",)] * n)
  one = pipeline.Layout(0, 1, 8)
  two = [pipeline.Layout(i, 2, 4) for i in range(2)]
  flat = lambda b: {k: v.reshape(-1, *v.shape[2:]) for k, v in b.items()}
  for step in range(3):
    whole = flat(pipeline.train_batch(data, step, 16, 0, one))
    parts = [flat(pipeline.train_batch(data, step, 16, 0, layout)) for layout in two]
    for key in whole:
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])
  seen = np.zeros(n, int)
  batches = zip(pipeline.eval_batches(data, 16, one),
                *[pipeline.eval_batches(data, 16, layout) for layout in two])
  for whole, *parts in batches:
    whole, parts = flat(whole), [flat(p) for p in parts]
    for key in whole:
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])
    real = whole["index"] >= 0
    np.testing.assert_array_equal(whole["weight"], real.astype(np.float32))
    np.testing.assert_array_equal(whole["input_ids"][real], ids[whole["index"][real]])
    np.add.at(seen, whole["index"][real], 1)
  np.testing.assert_array_equal(seen, 1)


def test_cluster_detection(monkeypatch):
  """Which environments make distributed.initialize join a job without flags."""
  from augpro_jax import distributed  # pylint: disable=import-outside-toplevel
  from augpro_jax.config import Config  # pylint: disable=import-outside-toplevel
  from augpro_jax.errors import UserError  # pylint: disable=import-outside-toplevel

  for key in list(os.environ):
    if key.startswith(("SLURM_", "TPU_")):
      monkeypatch.delenv(key)
  monkeypatch.setattr(distributed, "_on_cloud_tpu_vm", lambda: False)
  assert distributed._platform_cluster() is None  # pylint: disable=protected-access
  monkeypatch.setenv("SLURM_NTASKS", "4")  # an sbatch script, not an srun step: one process
  assert distributed._platform_cluster() is None  # pylint: disable=protected-access
  monkeypatch.setenv("SLURM_STEP_NODELIST", "node[1-2]")
  assert distributed._platform_cluster() == "slurm"  # pylint: disable=protected-access
  monkeypatch.delenv("SLURM_NTASKS")
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "w0,w1")
  assert distributed._platform_cluster() == "gke_tpu"  # pylint: disable=protected-access
  monkeypatch.delenv("TPU_WORKER_HOSTNAMES")
  monkeypatch.setattr(distributed, "_on_cloud_tpu_vm", lambda: True)
  assert distributed._platform_cluster() == "cloud_tpu"  # pylint: disable=protected-access
  with pytest.raises(UserError, match="--process_id"):
    distributed.initialize(Config(coordinator_address="127.0.0.1:1", num_processes=2))
  with pytest.raises(UserError, match=r"must be in \[0, 2\)"):
    distributed.initialize(Config(coordinator_address="127.0.0.1:1", num_processes=2, process_id=2))


def test_2x4_trains_its_teacher_distills_augpro_mix_like_1x8_and_resumes_exactly(setup):
  """The 2-process run fine-tunes its own teacher (load_or_train_teacher in multi-process mode),
  then distils with augpro_mix (per-example keys, a partner permutation, vocabulary projection);
  the 1-process run distils from the same teacher fine-tuned by one process (the fixture). Then a
  2-process resume from an orbax checkpoint that both processes wrote together."""
  root, flags = setup["root"], setup["flags"]
  one, two = root / "mix_1x8", root / "mix_2x4"
  args = flags + ["--mode=distill", "--aug=augpro_mix"]
  _run_group([_job(args + [f"--teacher_ckpt={setup['teacher']}", f"--workdir={one}"], one),
              *_jobs_2x4(args, two)])
  # The teacher trained by two processes is the one trained by one.
  _assert_params_close(setup["teacher"], two / "teacher")
  assert _summary(two / "teacher")["processes"] == 2
  assert _summary(two / "teacher")["dev"] == pytest.approx(_summary(setup["teacher"])["dev"])
  worst = _assert_same_run(one, two, setup["bert"])
  _assert_single_writer(two)
  print(f"aug=augpro_mix: max |1x8 - 2x4| = {worst:.2e}")

  # Resume across processes: drop the last checkpoint and the outputs, run the same command again.
  # Both processes must restore step 2 from the checkpoint orbax wrote, and finish bit for bit.
  again = root / "mix_2x4_resumed"
  shutil.copytree(two, again)
  for path in (again / "checkpoints" / "4", again / "final"):
    shutil.rmtree(path)
  (again / "summary.json").unlink()
  _run_group(_jobs_2x4(args, again))
  assert _summary(again)["resumed_from_step"] == 2
  assert _summary(again)["student_params_sha256"] == _summary(two)["student_params_sha256"]
  pa, pb = _leaves(_params(two)), _leaves(_params(again))
  for key in pa:
    np.testing.assert_array_equal(pa[key], pb[key], err_msg=key)
  _assert_single_writer(again, sessions=2)


def test_2x4_fsdp_distills_like_1x8(setup):
  """On a [2 data, 4 fsdp] mesh (the data axis is the processes, so the gradient all-reduce
  crosses them; the largest leaves are split over each process's devices), 2 processes distil
  a student as 1 process does on the same mesh. The student starts from a backbone with BERT's
  weight scale: the fixture's (std 1.0) turns FSDP's other order of sums into differences of the
  size the check must catch."""
  root, flags = setup["root"], setup["flags"]
  bert = _write_tiny_bert(root / "tiny_bert_002")
  # One length bucket: the two-bucket paths are the data-parallel test's.
  args = flags + ["--mode=distill", "--aug=knn", f"--teacher={bert}",
                  f"--teacher_ckpt={setup['teacher']}", "--mesh_fsdp=4", "--length_buckets=none"]
  one, two = root / "fsdp_1x8", root / "fsdp_2x4"
  _run_group([_job(args + [f"--workdir={one}"], one), *_jobs_2x4(args, two)])
  s1, s2 = _summary(one), _summary(two)
  assert s1["mesh"] == s2["mesh"] == {"data": 2, "fsdp": 4}
  # Four steps leave this student predicting one class: the row order of the gathered logits is
  # checked on this mesh by the predict test below.
  worst = _assert_same_run(one, two, bert, discriminating=False, buckets=[16])
  print(f"--mesh_fsdp=4: max |1x8 - 2x4| = {worst:.2e}")


def test_2x4_predict_matches_1x8(setup):
  """Predictions of 37 inputs (the last global batch leaves process 1 only padding): every
  process's rows are gathered back in input order, and process 0 alone writes the file. On a
  [2 data, 4 fsdp] mesh: the teacher's embedding table is split over each process's devices."""
  root, flags = setup["root"], setup["flags"]
  args = flags + ["--mode=predict", f"--teacher_ckpt={setup['teacher']}",
                  f"--predict_file={root / 'dev.tsv'}", "--mesh_fsdp=4"]
  one, two = root / "predict_1x8", root / "predict_2x4"
  _run_group([_job(args + [f"--predict_out={one / 'rows.jsonl'}", f"--workdir={one}"], one),
              *_jobs_2x4(args + [f"--predict_out={two / 'rows.jsonl'}"], two)])
  rows = {}
  for run in (one, two):
    assert [p.name for p in run.iterdir()] == ["rows.jsonl"]  # no second writer's temporary file
    rows[run] = [json.loads(line) for line in (run / "rows.jsonl").read_text().splitlines()]
  assert [r["index"] for r in rows[two]] == list(range(37))
  assert [r["label"] for r in rows[two]] == [r["label"] for r in rows[one]]
  for a, b in zip(rows[one], rows[two]):
    assert b["probabilities"] == pytest.approx(a["probabilities"], abs=1e-6)
  assert len({round(r["probabilities"]["1"], 4) for r in rows[one]}) > 10  # rows differ


# ----------------------------------------------------------------------------------------------
# Peers that fail fast.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("started", [0, 1])
def test_a_missing_process_is_one_line_within_the_timeout(started, tmp_path):
  """Only one of two processes starts: it names the other after --distributed_timeout seconds
  (here 5), instead of JAX's five-minute wait and C++ abort."""
  address = f"127.0.0.1:{_free_port()}"
  begin = time.monotonic()
  result = subprocess.run(
      [PYTHON, str(REPO / "main.py"), f"--workdir={tmp_path / 'run'}", "--task=sst2",
       f"--coordinator_address={address}", "--num_processes=2", f"--process_id={started}",
       "--distributed_timeout=5"], capture_output=True, text=True, env=_env(4), cwd=REPO,
      timeout=120)
  elapsed = time.monotonic() - begin
  assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
  missing = 1 - started
  assert f"process {missing}" in lines[0] and "within 5s (--distributed_timeout)" in lines[0]
  assert elapsed < 60, elapsed  # 5 s of waiting plus interpreter and JAX start-up
  assert not (tmp_path / "run").exists()


def test_a_process_lost_mid_run_ends_its_partner_with_one_line(setup, tmp_path):
  """Process 1 is killed while both train: process 0 stops with one line and exit status 4, not a
  traceback followed by a C++ abort at exit."""
  workdir = tmp_path / "run"
  args = setup["flags"] + ["--mode=distill", f"--teacher_ckpt={setup['teacher']}",
                           "--num_train_steps=400", "--log_every=1", "--checkpoint_every=0",
                           "--distributed_timeout=30", "--mesh_fsdp=4"]
  jobs = _jobs_2x4(args, workdir)
  procs = []
  for job in jobs:
    with open(job["log"], "wb") as log:
      procs.append(subprocess.Popen(job["argv"], env=job["env"], cwd=REPO, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True))
  try:
    deadline = time.monotonic() + TIMEOUT_S
    metrics = workdir / "metrics.jsonl"
    while not (metrics.exists() and '"step": 2,' in metrics.read_text()):
      assert all(p.poll() is None for p in procs), jobs[0]["log"].read_text()[-3000:]
      assert time.monotonic() < deadline, "no step 2"
      time.sleep(0.1)
    os.killpg(procs[1].pid, signal.SIGKILL)
    status = procs[0].wait(timeout=120)
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
  log = jobs[0]["log"].read_text(errors="replace")
  assert status == 4, (status, log[-3000:])
  assert "Traceback" not in log and "Check failure" not in log, log[-3000:]
  errors = [line for line in log.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "process 1 of this 2-process run" in errors[0], log


@pytest.mark.parametrize("flag", ["--seed=1", "--aug=knn"])
def test_processes_with_one_differing_flag_both_stop_with_one_line(flag, tmp_path):
  """Process 1 differs from process 0 in one setting that changes the result: both refuse at the
  handshake, before JAX connects, with one line naming the flag, and nothing is trained."""
  address = f"127.0.0.1:{_free_port()}"
  common = [PYTHON, str(REPO / "main.py"), f"--workdir={tmp_path / 'run'}", "--task=sst2",
            f"--coordinator_address={address}", "--num_processes=2", "--distributed_timeout=20"]
  begin = time.monotonic()
  procs = [subprocess.Popen(common + [f"--process_id={i}"] + ([flag] if i else []),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(4),
                            cwd=REPO, start_new_session=True) for i in range(2)]
  try:
    outputs = [p.communicate(timeout=120) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
  elapsed = time.monotonic() - begin
  name = flag.split("=")[0]
  for p, (_, stderr) in zip(procs, outputs):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert p.returncode == 2 and len(lines) == 1, (p.returncode, stderr[-3000:])
    assert lines[0].startswith("error: process 1 was started with other settings than process 0")
    assert f"{name}: " in lines[0] and "on process 1" in lines[0], lines[0]
  assert elapsed < 30, elapsed
  assert not (tmp_path / "run").exists()


def test_processes_that_read_other_data_both_stop_with_one_line(tmp_path):
  """The same flags, but process 1's --train_file holds other examples (the path may differ
  between hosts, so the flags cannot tell): both stop once the data is read, before training."""
  bert = _write_tiny_bert(tmp_path / "tiny_bert")
  dev = _write_tsv(tmp_path / "dev.tsv", 16, seed=2)
  trains = [_write_tsv(tmp_path / f"train{i}.tsv", 32, seed=10 + i) for i in range(2)]
  address = f"127.0.0.1:{_free_port()}"
  procs = [subprocess.Popen(
      [PYTHON, str(REPO / "main.py"), "--mode=finetune", "--task=custom", f"--train_file={train}",
       f"--eval_file={dev}", "--text_fields=sentence", "--label_field=label", f"--teacher={bert}",
       "--max_seq_len=16", "--batch_size=16", "--eval_batch_size=16", "--student_layers=1",
       "--student_hidden=32", "--student_heads=2", "--num_train_steps=2", "--progress=false",
       f"--workdir={tmp_path / 'run'}", f"--coordinator_address={address}", "--num_processes=2",
       f"--process_id={i}", "--distributed_timeout=60"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(4), cwd=REPO,
      start_new_session=True) for i, train in enumerate(trains)]
  try:
    outputs = [p.communicate(timeout=TIMEOUT_S) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
  for p, (_, stderr) in zip(procs, outputs):
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert p.returncode == 2 and "Traceback" not in stderr, (p.returncode, stderr[-3000:])
    assert len(errors) == 1 and "process 1 read other data than process 0" in errors[0], stderr
  assert not (tmp_path / "run").exists()  # nothing trained, and no empty workdir left

