"""Which step a run keeps (--export=best, --early_stopping_patience, --eval_every=epoch), the model
card, eval_results.json, and the console lines (loss, learning rate, estimate).

The runs are in-process fine-tunings of a tiny random 2x32 BERT (test_resume's) into a 1x32
student on 64 short sentences; their dev metric is scripted by step (`scripted_accuracy`), so the
best step is known in advance, while the parameters, checkpoints and exports are the real ones.
"""

import io
import json
import pathlib
import shutil

import pytest

from augpro_jax import checkpoints
from augpro_jax import config as config_lib
from augpro_jax import evaluation
from augpro_jax import loop
from augpro_jax import progress as progress_lib
from augpro_jax import selection
from augpro_jax import train
from augpro_jax.errors import UserError


class FakeManager:
  """The two methods of an orbax CheckpointManager that `Tracker.restore` reads."""

  def __init__(self, metrics: dict[int, dict]):
    self._metrics = metrics

  def all_steps(self):
    return list(self._metrics)

  def metrics(self, step):
    return self._metrics[step]


def test_tracker_keeps_the_earliest_best_and_counts_evaluations_since():
  tracker = selection.Tracker("accuracy", interval=2, patience=2)
  assert tracker.update(2, {"accuracy": 0.6}) and tracker.update(4, {"accuracy": 0.8})
  assert not tracker.update(6, {"accuracy": 0.8})  # a tie is not an improvement
  assert tracker.summary() == {"metric": "accuracy", "value": 0.8, "step": 4}
  assert tracker.evals_since_best(6) == 1 and not tracker.should_stop(6)
  assert tracker.should_stop(8) and not tracker.should_stop(7)  # 7 is not an evaluation step
  assert "step 8" in tracker.stop_message(8) and "best 0.8000 at step 4" in tracker.stop_message(8)
  never = selection.Tracker("accuracy", interval=2, patience=0)
  never.update(2, {"accuracy": 0.9})
  assert not never.should_stop(100)


def test_tracker_restores_the_best_from_checkpoint_metrics_up_to_the_resumed_step():
  saved = {2: {"accuracy": 0.5}, 4: {"accuracy": 0.9}, 6: None, 8: {"accuracy": 0.95}}
  tracker = selection.Tracker("accuracy", interval=2, patience=1).restore(FakeManager(saved), 6)
  assert (tracker.best_step, tracker.best_value) == (4, 0.9)  # step 8 is after the resumed step
  assert tracker.should_stop(6)


def test_eval_every_epoch_and_its_validation():
  assert selection.eval_interval("epoch", 7) == 7 and selection.eval_interval("3", 7) == 3
  assert selection.eval_interval(5, 7) == 5
  config_lib.Config(eval_every="epoch", early_stopping_patience=2, export="best").validate()
  for bad, needle in [(dict(eval_every="often"), "--eval_every must be a number of steps or"),
                      (dict(eval_every="-1"), "--eval_every must be >= 0"),
                      (dict(early_stopping_patience=2), "--early_stopping_patience counts"),
                      (dict(export="first"), "unknown --export='first'")]:
    with pytest.raises(UserError, match=needle):
      config_lib.Config(**bad).validate()


def test_progress_lines_show_loss_learning_rate_and_one_estimate():
  out = io.StringIO()
  bar = progress_lib.Progress(total=30, initial=0, every=2, enabled=True, terminal=False,
                              stream=out)
  for step in range(1, 31):
    bar.update(1, {"loss": 1.0 / step, "learning_rate": 1e-4 * step})
  lines = out.getvalue().splitlines()
  step_lines = [line for line in lines if line.startswith("step ")]
  assert step_lines[0].startswith("step 2/30 (7%), loss 0.5000, lr 2.0e-04, ")
  assert len(step_lines) == 15
  estimates = [line for line in lines if line.startswith("estimate:")]
  assert len(estimates) == 1 and "the remaining 20 steps" in estimates[0], lines


# ----------------------------------------------------------------------------------------------
# Real runs, scripted metric.
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
  from test_resume import _write_data, _write_tiny_bert  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp("selection")
  train_file, dev_file = _write_data(root)
  return dict(root=root, train=train_file, dev=dev_file, bert=_write_tiny_bert(root / "bert"))


def tiny(lab, workdir: pathlib.Path, **overrides) -> config_lib.Config:
  settings = dict(task="custom", mode="finetune", train_file=str(lab["train"]),
                  eval_file=str(lab["dev"]), text_fields=("sentence",), label_field="label",
                  teacher=str(lab["bert"]), max_seq_len=16, batch_size=8, eval_batch_size=8,
                  student_layers=1, student_hidden=32, student_heads=2, num_train_steps=8,
                  eval_every="2", checkpoint_every=0, log_every=1, progress=False,
                  workdir=str(workdir))
  return config_lib.Config(**{**settings, **overrides})


@pytest.fixture
def scripted_accuracy(monkeypatch):
  """Set the dev accuracy each evaluation reports, by step: {step: accuracy}."""
  values, current = {}, {}
  real_evaluate, real_log = evaluation.evaluate, loop.evaluate_and_log

  def log(ctx, model, predict_step, r_state, step, **kwargs):
    current["step"] = step
    return real_log(ctx, model, predict_step, r_state, step, **kwargs)

  def evaluate(*args, **kwargs):
    metrics = real_evaluate(*args, **kwargs)
    return {**metrics, "accuracy": values[current["step"]]}

  monkeypatch.setattr(loop, "evaluate_and_log", log)
  monkeypatch.setattr(evaluation, "evaluate", evaluate)
  return values


def exported_sha(workdir: pathlib.Path) -> str:
  return checkpoints.params_sha256(checkpoints.load_exported(workdir)[1])


def step_sha(workdir: pathlib.Path, step: int, cfg: config_lib.Config) -> str:
  manager = checkpoints.make_manager(workdir / "checkpoints", keep=10, best_metric=None)
  return checkpoints.params_sha256(manager.restore(step)["params"])


@pytest.mark.slow
def test_export_best_exports_the_best_evaluated_step_not_a_worse_last_one(
    lab, scripted_accuracy, tmp_path, capsys):
  scripted_accuracy.update({2: 0.6, 4: 0.9, 6: 0.7, 8: 0.65})  # the last step is worse
  cfg = tiny(lab, tmp_path / "run", export="best", keep_checkpoints=2)
  summary = train.run(cfg)
  assert summary["best_dev"] == {"metric": "accuracy", "value": 0.9, "step": 4}
  assert summary["export"]["step"] == 4 and summary["export"]["dev"]["accuracy"] == 0.9
  assert summary["dev"]["accuracy"] == 0.65  # the last step's, as before
  workdir = tmp_path / "run"
  assert exported_sha(workdir) == step_sha(workdir, 4, cfg) != summary["student_params_sha256"]
  card = (workdir / "final" / "hf" / "README.md").read_text()
  assert "this is step 4" in card and "| accuracy | 0.9000 |" in card
  assert "--export=best" in card and "--task=custom" in card and "--mode=finetune" in card
  out = capsys.readouterr().out
  assert "exporting step 4" in out
  # The first lines: what will run, and where the results go.
  assert "finetune on custom: 64 training examples, dev: dev 24" in out
  assert "fine-tune a 1x32 student (aug=none): 8 steps of 8" in out
  assert "evaluate every 2 steps and at the end; export best step" in out
  assert f"results: {workdir}/ (summary.json" in out
  import main  # pylint: disable=import-outside-toplevel
  last = main.result_line(cfg, summary)
  assert "student dev (best, step 4): accuracy=0.9000" in last
  assert f"model: {workdir}/final/hf/" in last and f"summary: {workdir}/summary.json" in last

  # Resumed after step 6 (step 8 lost): the best (step 4) comes back from the checkpoints'
  # metrics, and the run ends as the uninterrupted one did.
  resumed = tmp_path / "resumed"
  shutil.copytree(workdir, resumed)
  for path in [resumed / "checkpoints" / "8", resumed / "final", resumed / "summary.json"]:
    shutil.rmtree(path) if path.is_dir() else path.unlink()
  again = train.run(cfg.replace(workdir=str(resumed)))
  assert again["resumed_from_step"] == 6
  assert again["student_params_sha256"] == summary["student_params_sha256"]
  assert again["best_dev"] == summary["best_dev"] and again["export"] == summary["export"]
  assert exported_sha(resumed) == exported_sha(workdir)


@pytest.mark.slow
def test_early_stopping_stops_says_so_and_stays_stopped(lab, scripted_accuracy, tmp_path, capsys):
  scripted_accuracy.update({1: 0.8, 2: 0.7, 3: 0.75, 4: 0.9, 5: 0.1, 6: 0.1, 7: 0.1, 8: 0.1})
  cfg = tiny(lab, tmp_path, eval_every="1", early_stopping_patience=2)
  summary = train.run(cfg)
  out = capsys.readouterr().out
  assert "early stopping at step 3: accuracy has not improved for 2 evaluations" in out
  assert summary["steps_trained"] == summary["early_stopped_at"] == 3 and summary["steps"] == 8
  evals = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [e["step"] for e in evals if e["kind"] == "train"] == [1, 2, 3]
  # The same command again: the run has stopped; it does not train the remaining steps.
  again = train.run(cfg)
  assert "early stopping at step 3" in capsys.readouterr().out
  assert again["steps_trained"] == 3 and again["resumed_from_step"] == 3
  assert again["student_params_sha256"] == summary["student_params_sha256"]


@pytest.mark.slow
def test_eval_every_epoch_and_eval_results_json(lab, tmp_path, capsys):
  cfg = tiny(lab, tmp_path, eval_every="epoch", num_train_steps=None, num_epochs=2)
  summary = train.run(cfg)  # 64 examples / 8 = 8 steps an epoch
  evals = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [e["step"] for e in evals if e["kind"] == "eval"] == [8, 16]
  assert summary["steps"] == 16
  result = train.run(cfg.replace(mode="eval"))
  saved = json.loads((tmp_path / "eval_results.json").read_text())
  assert saved["dev"] == result["dev"] == summary["dev"]
  assert saved["splits"] == {"dev": {"source": str(lab["dev"]), "examples": 24}}
  assert saved["model"].endswith("final")
  import main  # pylint: disable=import-outside-toplevel
  assert f"on {lab['dev']} (24 examples); results to {tmp_path / 'eval_results.json'}" in \
      capsys.readouterr().out
  assert main.result_line(cfg.replace(mode="eval"), result).endswith(
      f"results: {tmp_path / 'eval_results.json'}")


def test_a_long_evaluation_says_once_how_long_it_has_left(monkeypatch, capsys):
  clock = iter([100.0, 105.0, 130.0, 160.0])
  monkeypatch.setattr(evaluation.time, "perf_counter", lambda: next(clock))
  estimate = evaluation._EvalEstimate(1000, "eval", enabled=True)  # pylint: disable=protected-access
  estimate.after(100)  # 5 s in: too early to say
  estimate.after(300)  # 30 s for 300 examples: 700 more take 70 s
  estimate.after(600)
  assert capsys.readouterr().out == "evaluation: 300 of 1,000 examples in 30s, about 1m10s left\n"
