"""In-process checks of the pieces behind test_robust.py: labels, the run identity, the workdir
lock, checkpoint folders, signals, progress lines, the start-up handshake and the MCC."""

import dataclasses
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest

from augpro_jax import checkpoints
from augpro_jax import config as config_lib
from augpro_jax import rendezvous
from augpro_jax import interrupts
from augpro_jax import labels
from augpro_jax import library_noise
from augpro_jax import progress as progress_lib
from augpro_jax import tasks
from augpro_jax import workdir as workdir_lib
from augpro_jax.errors import UserError
from conftest import REPO

# ----------------------------------------------------------------------------------------------
# Labels.
# ----------------------------------------------------------------------------------------------


def test_numbers_are_one_class_whatever_their_spelling():
  names = labels.class_names(["1", "1.0", "0", "10", "2", "1e0", "0.0", "-0"])
  assert names == ("0", "1", "2", "10")  # the first spelling names the class; numeric order
  ids = labels.to_ids(["1.0", "1", "01", "0.0", "-0.0", "2.00", "10", "3", "x"], names)
  assert ids.tolist() == [1, 1, 1, 0, 0, 2, 3, -1, -1]


def test_strings_are_compared_exactly_and_sorted():
  assert labels.class_names(["pos", "neg", "Pos", "pos"]) == ("Pos", "neg", "pos")
  assert labels.to_ids(["pos", "POS"], ("neg", "pos")).tolist() == [1, -1]


def test_label_names_fix_the_set_and_order():
  assert labels.class_names(["a", "b", "c"], fixed=("c", "a", "b")) == ("c", "a", "b")
  assert labels.to_ids(["a", "c", "d"], ("c", "a", "b")).tolist() == [1, 0, -1]
  with pytest.raises(UserError, match="'1.0' and '1' are the same number"):
    labels.class_names([], fixed=("1", "1.0"))
  with pytest.raises(UserError, match="'a' is given twice"):
    labels.class_names([], fixed=("a", "b", "a"))
  with pytest.raises(UserError, match="at least 2 classes"):
    labels.class_names(["1", "1.0", "1e0"])


def test_label_warnings_name_case_twins_and_rare_classes():
  train = ["positive"] * 150 + ["negative"] * 149 + ["Positive"]
  names = labels.class_names(train)
  found = labels.warnings_for(train, names)
  assert len(found) == 2, found
  assert "'Positive' and 'positive' differ only in case" in found[0]
  assert "'Positive' (1 of 300)" in found[1]
  assert labels.warnings_for(["a"] * 99 + ["b"] * 99, ("a", "b")) == []
  # A fixed class with no training example at all is rare too.
  assert "'c' (0 of 4)" in labels.warnings_for(["a", "b", "a", "b"], ("a", "b", "c"))[0]


def test_jsonl_labels_one_one_point_zero_and_string_one_are_one_class(tmp_path):
  from augpro_jax import data  # pylint: disable=import-outside-toplevel

  train = tmp_path / "train.jsonl"
  train.write_text('{"t": "a", "y": 1}\n{"t": "b", "y": 1.0}\n{"t": "c", "y": "1"}\n'
                   '{"t": "d", "y": 0}\n')
  cfg = config_lib.Config(task="custom", train_file=str(train), eval_file=str(train),
                          text_fields=("t",), label_field="y")
  task = data.resolve_task(cfg)
  assert task.label_names == ("0", "1") and not task.is_regression
  assert data.load_split(cfg, task, "train").labels.tolist() == [1, 1, 1, 0]
  fixed = data.resolve_task(cfg.replace(label_names=("1", "0")))
  assert data.load_split(cfg, fixed, "train").labels.tolist() == [0, 0, 0, 1]


def test_label_names_flag_is_validated():
  with pytest.raises(UserError, match="--task=custom"):
    config_lib.Config(label_names=("a", "b")).validate()
  custom = dict(task="custom", train_file="t.tsv", eval_file="d.tsv", text_fields=("s",),
                label_field="y")
  with pytest.raises(UserError, match="at least 2"):
    config_lib.Config(label_names=("a",), **custom).validate()
  with pytest.raises(UserError, match="regression"):
    config_lib.Config(label_names=("a", "b"), label_type="regression", **custom).validate()
  with pytest.raises(UserError, match="distributed_timeout"):
    config_lib.Config(distributed_timeout=0).validate()


def test_mcc_matches_scikit_learn_without_its_warning():
  from sklearn import metrics as skm  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(0)
  for classes in (2, 3, 5):
    for n in (1, 2, 9, 200):
      labels_, preds = rng.integers(0, classes, n), rng.integers(0, classes, n)
      if n > 1 and rng.random() < 0.3:
        preds[:] = preds[0]
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = skm.matthews_corrcoef(labels_, preds)
      assert tasks._mcc(labels_, preds) == pytest.approx(expected, abs=1e-12)  # pylint: disable=protected-access
  task = dataclasses.replace(tasks.get_task("mnli"), name="custom")
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert tasks.compute_metrics(task, np.array([0]), np.array([0])) == {"accuracy": 1.0,
                                                                        "mcc": 0.0}


# ----------------------------------------------------------------------------------------------
# The run identity.
# ----------------------------------------------------------------------------------------------


def test_identity_holds_what_changes_the_result():
  cfg = config_lib.Config(mode="distill")
  settings = workdir_lib.compared_settings(cfg)
  for name in ("task", "mode", "aug", "shift_degree", "seed", "batch_size", "max_seq_len",
               "num_train_steps", "learning_rate", "student_layers", "teacher", "teacher_ckpt",
               "train_size", "eval_size", "eval_batch_size", "label_names", "dtype"):
    assert name in settings, name
  for name in workdir_lib.MAY_DIFFER:
    assert name not in settings, name
  # Every other field is compared: the exceptions are the documented list, nothing more.
  all_fields = {f.name for f in dataclasses.fields(config_lib.Config)}
  benchmark = {f.name for group in (config_lib.BenchmarkConfig, config_lib.CompileConfig)
               for f in dataclasses.fields(group)}
  predict_only = {"predict_file", "predict_out"}
  assert set(settings) == all_fields - set(workdir_lib.MAY_DIFFER) - benchmark - predict_only
  teacher = workdir_lib.compared_settings(cfg.replace(mode="train_teacher"))
  assert "aug" not in teacher and "teacher_num_epochs" in teacher


def _identity(cfg, data=None):
  return workdir_lib.identity(cfg, data or {"train": "aa", "dev": "bb"}, ("0", "1"))


def test_differences_are_one_clause_per_flag():
  old = _identity(config_lib.Config(aug="augpro_mix", seed=0, num_train_steps=3))
  new = _identity(config_lib.Config(aug="knn", seed=1, num_train_steps=6, log_every=1))
  assert workdir_lib.describe_differences(old, new) == [
      "--aug: augpro_mix in the workdir, knn now",
      "--num_train_steps: 3 in the workdir, 6 now",
      "--seed: 0 in the workdir, 1 now"]
  assert workdir_lib.describe_differences(old, _identity(config_lib.Config(
      aug="augpro_mix", num_train_steps=3, eval_every=5, progress=False))) == []
  best = _identity(config_lib.Config(aug="augpro_mix", num_train_steps=3, export="best"))
  assert workdir_lib.describe_differences(best, _identity(config_lib.Config(
      aug="augpro_mix", num_train_steps=3, export="best", eval_every="5"))) == [
          "--eval_every: 0 in the workdir, 5 now"]
  changed = _identity(config_lib.Config(aug="augpro_mix", num_train_steps=3), {"train": "cc",
                                                                              "dev": "bb"})
  assert workdir_lib.describe_differences(old, changed) == [
      "the train data: sha256 aa in the workdir, cc now (the data files changed)"]
  # A setting the workdir's record predates had its default there.
  del old["settings"]["knn_k"]
  assert workdir_lib.describe_differences(old, _identity(config_lib.Config(
      aug="augpro_mix", num_train_steps=3, knn_k=3))) == ["--knn_k: 10 in the workdir, 3 now"]
  # ... unless it is one whose value before it existed is recorded: dropout masks were 32-bit.
  del old["settings"]["dropout_bits"]
  for bits, expected in ((32, []), (16, ["--dropout_bits: 32 in the workdir, 16 now"])):
    assert workdir_lib.describe_differences(old, _identity(config_lib.Config(
        aug="augpro_mix", num_train_steps=3, dropout_bits=bits))) == expected
  del old["settings"]["attention_dropout_mask"]  # one mask per example and head before
  assert workdir_lib.describe_differences(old, _identity(config_lib.Config(
      aug="augpro_mix", num_train_steps=3))) == []
  assert workdir_lib.describe_differences(old, _identity(config_lib.Config(
      aug="augpro_mix", num_train_steps=3, attention_dropout_mask="shared"))) == [
          "--attention_dropout_mask: per_head in the workdir, shared now"]


def test_settings_added_later_keep_their_old_value_when_the_default_changes():
  """A workdir written before a flag existed ran with the flag's value of then, not today's."""
  declared = {f.name: f.metadata for f in dataclasses.fields(config_lib.Config)}

  @dataclasses.dataclass(frozen=True)
  class FlippedDefaults(config_lib.Config):  # the same knobs, with other defaults
    dropout_bits: int = dataclasses.field(default=16, metadata=declared["dropout_bits"])
    attention_dropout_mask: str = dataclasses.field(
        default="shared", metadata=declared["attention_dropout_mask"])

  old = _identity(config_lib.Config(aug="augpro_mix", num_train_steps=3))
  del old["settings"]["dropout_bits"], old["settings"]["attention_dropout_mask"]
  assert workdir_lib.describe_differences(old, _identity(FlippedDefaults(
      aug="augpro_mix", num_train_steps=3)), FlippedDefaults) == [
          "--attention_dropout_mask: per_head in the workdir, shared now",
          "--dropout_bits: 32 in the workdir, 16 now"]


def test_identity_is_recorded_then_enforced(tmp_path):
  first = _identity(config_lib.Config(seed=0))
  workdir_lib.check_identity(tmp_path, first, write=True)
  assert (tmp_path / "run.json").exists()
  other = _identity(config_lib.Config(seed=1))
  workdir_lib.check_identity(tmp_path, other, write=True)  # nothing trained yet: re-recorded
  (tmp_path / "checkpoints").mkdir()
  with pytest.raises(UserError, match="--seed: 1 in the workdir, 0 now"):
    workdir_lib.check_identity(tmp_path, first, write=True)
  (tmp_path / "run.json").write_text("{not json")
  with pytest.raises(UserError, match="cannot read"):
    workdir_lib.check_identity(tmp_path, first, write=True)


def test_data_digest_sees_labels_and_tokens():
  from augpro_jax import input_pipeline as pipeline  # pylint: disable=import-outside-toplevel

  ids = np.arange(12, dtype=np.int32).reshape(3, 4)
  split = pipeline.Tokenized(ids, np.ones_like(ids), np.zeros_like(ids), np.array([0, 1, 0]), 0,
                             [("x",)] * 3)
  base = workdir_lib.data_digest({"train": split})["train"]
  relabelled = dataclasses.replace(split, labels=np.array([0, 1, 1]))
  assert workdir_lib.data_digest({"train": relabelled})["train"] != base
  assert workdir_lib.data_digest({"train": split.take(np.array([1, 0, 2]))})["train"] != base


# ----------------------------------------------------------------------------------------------
# The lock.
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow  # a subprocess
def test_second_lock_names_the_holder_and_a_dead_holder_is_taken_over(tmp_path, capsys):
  with workdir_lib.WorkdirLock(tmp_path):
    with pytest.raises(UserError, match=f"in use by PID {os.getpid()} on host "
                                        f"{socket.gethostname()}"):
      workdir_lib.WorkdirLock(tmp_path).acquire()
  assert not (tmp_path / "run.lock").exists()
  # A holder killed with SIGKILL: the kernel freed its lock, its record is still there.
  code = ("import os, sys, pathlib; sys.path.insert(0, sys.argv[2]); "
          "from augpro_jax import workdir; workdir.WorkdirLock(pathlib.Path(sys.argv[1])).acquire(); "
          "os.kill(os.getpid(), 9)")
  subprocess.run([sys.executable, "-c", code, str(tmp_path), str(REPO)], check=False)
  assert (tmp_path / "run.lock").exists()
  with workdir_lib.WorkdirLock(tmp_path):
    assert "ended without releasing it; taking it over" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# Checkpoint folders.
# ----------------------------------------------------------------------------------------------


def test_only_finished_orbax_steps_are_checkpoints(tmp_path, capsys):
  state = {"w": np.arange(3, dtype=np.float32)}
  checkpoints.save(checkpoints.make_manager(tmp_path, keep=3, best_metric=None), 3, state)
  (tmp_path / "999").mkdir()
  (tmp_path / "999" / "stray.txt").write_text("x")
  (tmp_path / "12").mkdir()  # an empty step-like directory
  (tmp_path / "readme.txt").write_text("x")
  manager = checkpoints.make_manager(tmp_path, keep=3, best_metric=None)
  err = capsys.readouterr().err
  assert err.count("warning:") == 1 and "ignoring 3 entries" in err and "12, 999, readme.txt" in err
  assert manager.all_steps() == [3]
  step, restored = checkpoints.restore_latest(manager, {"w": np.zeros(3, np.float32)})
  assert step == 3 and restored["w"].tolist() == [0, 1, 2]
  assert "corrupt" not in capsys.readouterr().err
  for s in (4, 5, 6, 7):  # rotation never touches what is not ours
    checkpoints.save(manager, s, state)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["12", "5", "6", "7", "999", "readme.txt"]


def test_closed_event_loop_reports_after_a_failed_restore_are_dropped_and_others_kept(monkeypatch):
  """tensorstore reports a read that lands after orbax closed its loop from its own thread, through
  `PyErr_Print` (sys.excepthook) or sys.unraisablehook; both must stay quiet, nothing else may."""
  seen = []
  monkeypatch.setattr(sys, "excepthook", lambda kind, value, tb: seen.append(("except", value)))
  monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(("unraisable", u.exc_value)))
  library_noise.drop_closed_event_loop_reports()
  library_noise.drop_closed_event_loop_reports()  # idempotent
  loop = __import__("asyncio").new_event_loop()
  loop.close()

  def late_read(report):
    try:
      loop.call_soon_threadsafe(print)
    except RuntimeError:
      report(*sys.exc_info())
    try:
      raise RuntimeError("Event loop is closed")  # the same words from elsewhere: a real error
    except RuntimeError:
      report(*sys.exc_info())

  unraisable = lambda kind, value, tb: sys.unraisablehook(
      type("U", (), {"exc_type": kind, "exc_value": value, "exc_traceback": tb, "err_msg": None,
                     "object": None})())
  for report in (lambda *info: sys.excepthook(*info), unraisable):
    thread = threading.Thread(target=late_read, args=(report,))
    thread.start()
    thread.join()
  assert [kind for kind, _ in seen] == ["except", "unraisable"], seen



def test_asyncio_reports_of_a_failed_restores_reads_are_dropped_and_others_kept():
  """asyncio logs an un-awaited task's exception when the task is collected: a tensorstore read
  error left over from a failed restore is dropped; any other never-retrieved error is kept. The
  reports are made as a collected task makes them (the loop's default handler: the message, then
  a "future: <Task ...>" line)."""
  import asyncio  # pylint: disable=import-outside-toplevel
  import logging  # pylint: disable=import-outside-toplevel
  library_noise.drop_closed_event_loop_reports()
  records = []
  handler = logging.Handler()
  handler.emit = records.append
  logger = logging.getLogger("asyncio")
  logger.addHandler(handler)
  loop = asyncio.new_event_loop()
  try:
    for exc in (ValueError('OUT_OF_RANGE: Error reading "x" [tensorstore_spec=\'{}\']'),
                ValueError("something else"), RuntimeError("tensorstore_spec")):
      future = loop.create_future()
      future.set_exception(exc)
      future.exception()  # retrieved here, so that collecting it reports nothing more
      loop.default_exception_handler({"message": "Task exception was never retrieved",
                                      "exception": exc, "future": future})
    logger.error("another asyncio error", exc_info=None)
  finally:
    loop.close()
    logger.removeHandler(handler)
  assert [str(r.exc_info[1]) if r.exc_info else r.msg for r in records] == [
      "something else", "tensorstore_spec", "another asyncio error"]


# ----------------------------------------------------------------------------------------------
# Signals and progress.
# ----------------------------------------------------------------------------------------------


def test_signal_is_recorded_for_the_whole_run_and_nested_guards_share_it():
  with interrupts.handle_signals():
    assert interrupts.requested("unit") is None
    with interrupts.handle_signals():  # fit's guard inside run's
      pass
    os.kill(os.getpid(), signal.SIGTERM)  # after the inner guard ended: still recorded
    assert interrupts.requested("unit") == "SIGTERM"
    with pytest.raises(interrupts.Preempted, match="stopped by SIGTERM here; then"):
      interrupts.stop_if_requested("unit", "here", "then")
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.slow  # a subprocess
def test_a_second_signal_ends_the_process_at_once():
  code = ("import os, signal, sys, time; sys.path.insert(0, sys.argv[1]); "
          "from augpro_jax import interrupts\n"
          "with interrupts.handle_signals():\n"
          "  os.kill(os.getpid(), signal.SIGTERM); assert interrupts.requested('x')\n"
          "  os.kill(os.getpid(), signal.SIGTERM); time.sleep(5); print('not reached')")
  result = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True, text=True,
                          timeout=60)
  assert result.returncode == -signal.SIGTERM and "not reached" not in result.stdout


def test_progress_is_plain_lines_off_a_terminal_and_a_bar_on_one(capsys):
  out = io.StringIO()
  bar = progress_lib.Progress(total=7, initial=2, every=2, enabled=True, terminal=False,
                              stream=out)
  for _ in range(5):
    bar.update(1)
  bar.close()
  lines = [line for line in out.getvalue().splitlines() if not line.startswith("estimate:")]
  assert [line.split(",")[0] for line in lines] == ["step 4/7 (57%)", "step 6/7 (86%)",
                                                    "step 7/7 (100%)"]
  assert "\r" not in out.getvalue()
  quiet = io.StringIO()
  progress_lib.Progress(total=3, initial=0, every=1, enabled=False, terminal=False,
                        stream=quiet).update(3)
  assert quiet.getvalue() == ""
  on_tty = progress_lib.Progress(total=3, initial=0, every=1, enabled=True, terminal=True,
                                 stream=quiet)
  on_tty.update(3)
  on_tty.close()
  err = capsys.readouterr().err
  assert quiet.getvalue() == "" and "0/3" in err and "\r" in err  # tqdm's bar, on stderr


# ----------------------------------------------------------------------------------------------
# The start-up handshake.
# ----------------------------------------------------------------------------------------------


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_handshake_names_the_missing_process_within_the_timeout():
  address = f"127.0.0.1:{_free_port()}"
  start = time.monotonic()
  with pytest.raises(UserError, match=r"process 2 of 3 did not join .* within 1s"):
    errors = []
    peer = threading.Thread(target=lambda: errors.append(_catch(
        rendezvous.rendezvous, address, 3, 1, 1.0)))
    peer.start()
    try:
      rendezvous.rendezvous(address, 3, 0, 1.0)
    finally:
      peer.join()
  assert time.monotonic() - start < 10
  assert "did not join" in str(errors[0])  # process 1 gets process 0's reason
  with pytest.raises(UserError, match=r"process 0 \(the coordinator, .*\) did not answer within"):
    rendezvous.rendezvous(f"127.0.0.1:{_free_port()}", 2, 1, 1.0)


def test_handshake_lets_a_complete_group_start():
  address = f"127.0.0.1:{_free_port()}"
  results = []
  peers = [threading.Thread(target=lambda i=i: results.append(_catch(
      rendezvous.rendezvous, address, 3, i, 20.0))) for i in (1, 2)]
  for peer in peers:
    peer.start()
  links = rendezvous.rendezvous(address, 3, 0, 20.0)
  for peer in peers:
    peer.join()
  assert [link[0] for link in links] == [1, 2]
  assert [type(r) for r in results] == [list, list] and results[0][0][0] == 0
  for _, conn in links + [r[0] for r in results]:
    conn.close()


def _catch(fn, *args):
  try:
    return fn(*args)
  except UserError as exc:
    return exc


@pytest.mark.slow  # subprocesses
@pytest.mark.parametrize("partner_says,status,words", [
    (None, 4, "process 1 of this 2-process run ended without finishing (it was killed or crashed)"),
    ("bye error: bad things", 4, "process 1 of this 2-process run stopped (error: bad things)"),
    ("bye ok", 0, None),
])
def test_partner_watch_ends_the_process_with_one_line(partner_says, status, words):
  """The partner's end of the connection closes (killed), says why it stopped, or says it
  finished: only the first two end this process, with one line and exit status 4."""
  code = f"""
import socket, sys, time
sys.path.insert(0, {str(REPO)!r})
from augpro_jax import rendezvous
mine, partner = socket.socketpair()
rendezvous.watch([(1, mine)], 2, grace=0.1)
if {partner_says!r}:
  partner.sendall({partner_says!r}.encode() + b"\\n")
partner.close()
time.sleep(3)
print("still running")
"""
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
  assert result.returncode == status, result.stderr
  if words is None:
    assert result.stdout.strip() == "still running" and result.stderr == ""
  else:
    assert result.stderr.splitlines() == [f"error: {words}; checkpoints written so far are kept: "
                                          "restart every process with the same command to resume"]


def test_the_command_line_starts_without_scipy_scikit_learn_or_torch():
  """Every run pays for what it imports at start-up (the suite starts about 150 runs): the train
  path, evaluation and the TensorBoard writer must not pull in scipy, scikit-learn or torch."""
  code = ("import sys, main\n"
          "from augpro_jax import evaluation, loop, predict, run_log, train\n"
          "run_log._summary_writer_class()\n"
          "print(sorted(m for m in ('torch', 'scipy', 'sklearn') if m in sys.modules))\n")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == "[]", result.stdout
