"""--mode=predict (rows in input order, probabilities, devices), GLUE submission files, and
--mode=eval on a labelled file with no other data flag. Models are tiny random exports with
MiniLM's tokenizer: predicting needs no training."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from augpro_jax import checkpoints
from augpro_jax import data as data_lib
from augpro_jax import glue_submission
from augpro_jax import hf_io
from augpro_jax import input_pipeline as pipeline
from augpro_jax import model as model_lib
from augpro_jax import tasks as tasks_lib
from augpro_jax import train
from augpro_jax.config import Config
from augpro_jax.errors import UserError
from conftest import REPO
from xla_env import xla_flags

SEQ = 64
COMMON = dict(max_seq_len=SEQ, eval_batch_size=16, progress=False)  # 100 rows: a padded last batch


def _export(path: pathlib.Path, task: str, label_names: tuple[str, ...], seed: int = 0):
  """A random 1x32 classifier exported as a run would export it; returns (path, model, params).

  It keeps the dropout it was trained with, as a real export does: eval and predict must turn it
  off (the reference logits below are deterministic)."""
  config = model_lib.BertConfig(vocab_size=30522, hidden_size=32, num_layers=1, num_heads=2,
                                intermediate_size=64, max_position_embeddings=SEQ,
                                num_labels=len(label_names) or 1, dropout_rate=0.3)
  params = model_lib.init_params(config, jax.random.PRNGKey(seed))
  # Weights of std 0.5, not 0.02: an untrained narrow BERT gives every sentence about the same
  # logits, and rows that differ are what show each row belongs to its input.
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: x * 25 if p[-1].key in ("kernel", "embedding") else x, params)
  checkpoints.export_model(path, config, params,
                           {"task": task, "num_labels": config.num_labels,
                            "label_names": list(label_names)},
                           tokenizer_dir=hf_io.resolve_pretrained_dir("minilm"))
  return path, model_lib.BertClassifier(config), params


def _reference_logits(model_dir, model, params, texts) -> np.ndarray:
  """Logits [N, C] on one device, one jitted call, straight from the exported tokenizer."""
  tokenizer = pipeline.load_tokenizer(model_dir / "hf")
  data = pipeline.tokenize(data_lib.Examples(texts, np.zeros(len(texts))), tokenizer, SEQ)
  return np.asarray(jax.jit(model.apply)({"params": params}, data.input_ids, data.attention_mask,
                                         data.token_type_ids))


def _softmax(logits: np.ndarray) -> np.ndarray:
  z = np.exp(logits - logits.max(-1, keepdims=True))
  return z / z.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def sst2_model(tmp_path_factory):
  return _export(tmp_path_factory.mktemp("sst2") / "final", "sst2", ("0", "1"))


@pytest.fixture(scope="module")
def dev100(glue, tmp_path_factory) -> tuple[pathlib.Path, list[tuple[str, ...]], np.ndarray]:
  """The first 100 SST-2 dev examples as a file of their own (sentence, label)."""
  lines = (glue / "SST-2" / "dev.tsv").read_text().splitlines()[:101]
  path = tmp_path_factory.mktemp("texts") / "dev100.tsv"
  path.write_text("\n".join(lines) + "\n")
  rows = [line.split("\t") for line in lines[1:]]
  return path, [(r[0],) for r in rows], np.asarray([int(r[1]) for r in rows])


def _read_tsv(path: pathlib.Path) -> tuple[list[str], list[list[str]]]:
  header, *rows = path.read_text().splitlines()
  return header.split("\t"), [row.split("\t") for row in rows]


# ----------------------------------------------------------------------------------------------
# Predictions.
# ----------------------------------------------------------------------------------------------


def test_predict_writes_one_row_per_input_in_order(sst2_model, dev100, tmp_path):
  model_dir, model, params = sst2_model
  path, texts, _ = dev100
  out = tmp_path / "predictions.jsonl"
  summary = train.run(Config(task="sst2", mode="predict", teacher_ckpt=str(model_dir),
                             predict_file=str(path), predict_out=str(out), **COMMON))
  assert summary["predictions"] == 100 and jax.device_count() == 8
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  assert [row["index"] for row in rows] == list(range(100))
  probs = np.asarray([[row["probabilities"]["0"], row["probabilities"]["1"]] for row in rows])
  np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-12)
  assert [row["label"] for row in rows] == [("0", "1")[i] for i in probs.argmax(1)]
  # Row i is input i's: the same probabilities as a one-device forward pass, example by example.
  want = _softmax(_reference_logits(model_dir, model, params, texts).astype(np.float64))
  np.testing.assert_allclose(probs, want, atol=1e-5)
  assert np.ptp(probs[:, 1]) > 0.1 and {row["label"] for row in rows} == {"0", "1"}


@pytest.mark.slow  # a main.py subprocess
def test_predict_on_one_device_equals_eight(sst2_model, dev100, tmp_path):
  model_dir, _, _ = sst2_model
  path, _, _ = dev100
  eight, one = tmp_path / "eight.tsv", tmp_path / "one.tsv"
  train.run(Config(task="sst2", mode="predict", teacher_ckpt=str(model_dir),
                   predict_file=str(path), predict_out=str(eight), **COMMON))
  env = {**os.environ, "XLA_FLAGS": xla_flags(1),
         "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1"}
  result = subprocess.run(
      [sys.executable, str(REPO / "main.py"), "--task=sst2", "--mode=predict",
       f"--teacher_ckpt={model_dir}", f"--predict_file={path}", f"--predict_out={one}",
       f"--max_seq_len={SEQ}", "--eval_batch_size=16", "--progress=false"],
      capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"100 predictions written to {one}" in result.stdout
  header, rows = _read_tsv(one)
  assert header == ["index", "label", "prob_0", "prob_1"]
  header8, rows8 = _read_tsv(eight)
  assert header8 == header and len(rows) == len(rows8) == 100
  assert [r[:2] for r in rows] == [r[:2] for r in rows8]  # index and label
  # Probabilities agree up to float32 rounding: XLA tiles a [16, S] and a [2, S] per-device batch
  # differently (measured: at most 4e-6 here). A row from another input differs by ~0.1 (above).
  np.testing.assert_allclose(np.asarray([r[2:] for r in rows], float),
                             np.asarray([r[2:] for r in rows8], float), atol=1e-5)


def test_custom_model_predicts_and_evaluates_with_its_own_labels(tmp_path, dev100):
  model_dir, model, params = _export(tmp_path / "custom" / "final", "custom", ("neg", "pos"))
  _, texts, labels = dev100
  data = tmp_path / "reviews.jsonl"
  data.write_text("".join(json.dumps({"review": t, "gold": ("neg", "pos")[y]}) + "\n"
                          for (t,), y in zip(texts, labels)))
  out = tmp_path / "out.jsonl"
  train.run(Config(task="custom", mode="predict", teacher_ckpt=str(model_dir),
                   predict_file=str(data), predict_out=str(out), text_fields=("review",),
                   **COMMON))
  logits = _reference_logits(model_dir, model, params, texts)
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  assert [row["label"] for row in rows] == [("neg", "pos")[i] for i in logits.argmax(1)]
  assert set(rows[0]["probabilities"]) == {"neg", "pos"}
  summary = train.run(Config(task="custom", mode="eval", teacher_ckpt=str(model_dir),
                             eval_file=str(data), text_fields=("review",), label_field="gold",
                             **COMMON))
  assert summary["dev"]["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == labels))


def test_eval_file_alone_for_sst2(sst2_model, dev100, monkeypatch):
  monkeypatch.delenv("GLUE_DIR", raising=False)  # no GLUE data at all
  model_dir, model, params = sst2_model
  path, texts, labels = dev100
  summary = train.run(Config(task="sst2", mode="eval", teacher_ckpt=str(model_dir),
                             eval_file=str(path), **COMMON))
  preds = _reference_logits(model_dir, model, params, texts).argmax(1)
  assert 0 < np.mean(preds == labels) < 1
  assert summary["dev"] == {"accuracy": pytest.approx(np.mean(preds == labels))}


# ----------------------------------------------------------------------------------------------
# GLUE submission files.
# ----------------------------------------------------------------------------------------------

_MNLI_COLUMNS = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse",
                 "sentence2_binary_parse", "sentence1_parse", "sentence2_parse", "sentence1",
                 "sentence2")


def _write_test_file(path: pathlib.Path, columns, rows) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  lines = ["\t".join(columns)] + ["\t".join(row.get(c, "x") for c in columns) for row in rows]
  path.write_text("\n".join(lines) + "\n")


def test_glue_submission_files_for_sst2_and_mnli(sst2_model, tmp_path):
  glue = tmp_path / "glue"
  sentences = ["a gorgeous , witty , seductive movie .", "it 's a mess .",
               "the acting is dull and the plot is worse .", "a triumph .", "so - so ."]
  ids = ["17", "3", "100", "4", "5"]  # the files' own indices, not row numbers
  _write_test_file(glue / "SST-2" / "test.tsv", ("index", "sentence"),
                   [{"index": i, "sentence": s} for i, s in zip(ids, sentences)])
  pairs = [{"index": i, "sentence1": s, "sentence2": sentences[(k + 1) % 5]}
           for k, (i, s) in enumerate(zip(ids, sentences))]
  _write_test_file(glue / "MNLI" / "test_matched.tsv", _MNLI_COLUMNS, pairs)
  _write_test_file(glue / "MNLI" / "test_mismatched.tsv", _MNLI_COLUMNS, pairs[:3])
  _write_test_file(glue / "diagnostic" / "diagnostic.tsv", ("index", "sentence1", "sentence2"),
                   pairs[:2])
  mnli_dir, mnli_model, mnli_params = _export(tmp_path / "mnli" / "final", "mnli",
                                              tasks_lib.get_task("mnli").label_names, seed=1)
  sst2_dir, sst2_model_, sst2_params = sst2_model

  for task, model_dir, files in (("sst2", sst2_dir, {"SST-2.tsv": 5}),
                                 ("mnli", mnli_dir, {"MNLI-m.tsv": 5, "MNLI-mm.tsv": 3,
                                                     "AX.tsv": 2})):
    out = tmp_path / f"submission_{task}"
    summary = train.run(Config(task=task, mode="predict", teacher_ckpt=str(model_dir),
                               glue_dir=str(glue), predict_out=str(out), **COMMON))
    assert summary["files"] == files
    assert sorted(p.name for p in out.iterdir()) == sorted(files)
    for name, n in files.items():
      header, rows = _read_tsv(out / name)
      assert header == ["index", "prediction"] and len(rows) == n
      assert [r[0] for r in rows] == ids[:n]

  _, rows = _read_tsv(tmp_path / "submission_sst2" / "SST-2.tsv")
  logits = _reference_logits(sst2_dir, sst2_model_, sst2_params, [(s,) for s in sentences])
  assert [r[1] for r in rows] == [("0", "1")[i] for i in logits.argmax(1)]
  _, rows = _read_tsv(tmp_path / "submission_mnli" / "MNLI-m.tsv")
  logits = _reference_logits(mnli_dir, mnli_model, mnli_params,
                             [(p["sentence1"], p["sentence2"]) for p in pairs])
  assert [r[1] for r in rows] == [("entailment", "neutral", "contradiction")[i]
                                  for i in logits.argmax(1)]


# The leaderboard's file names and the values it takes in the prediction column.
OFFICIAL = {
    "cola": (["CoLA.tsv"], {"0", "1"}),
    "sst2": (["SST-2.tsv"], {"0", "1"}),
    "mrpc": (["MRPC.tsv"], {"0", "1"}),
    "stsb": (["STS-B.tsv"], None),
    "qqp": (["QQP.tsv"], {"0", "1"}),
    "mnli": (["MNLI-m.tsv", "MNLI-mm.tsv", "AX.tsv"], {"entailment", "neutral", "contradiction"}),
    "qnli": (["QNLI.tsv"], {"entailment", "not_entailment"}),
    "rte": (["RTE.tsv"], {"entailment", "not_entailment"}),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_every_task_reads_its_test_set_and_writes_the_official_format(name, tmp_path):
  task = tasks_lib.get_task(name)
  files, values = OFFICIAL[name]
  sets = glue_submission.test_sets(task)
  assert [t.submission for t in sets] == files
  id_column = "id" if name == "qqp" else "index"
  # glue_data's test files: the id column, the task's text columns, and columns we ignore.
  columns = (id_column, "genre", *task.text_fields)
  rows = [{id_column: str(10 + i), **{f: f"text {i} {f}" for f in task.text_fields}}
          for i in range(4)]
  for test_set in sets:
    _write_test_file(tmp_path / test_set.source, columns, rows)
    ids, texts = glue_submission.read_test_set(tmp_path, task, test_set)
    assert ids == ["10", "11", "12", "13"]
    assert texts[2] == tuple(f"text 2 {f}" for f in task.text_fields)
  logits = np.random.default_rng(0).normal(size=(4, task.num_labels)) * 3
  lines = glue_submission.submission_text(task, ids, logits).splitlines()
  assert lines[0] == "index\tprediction" and [l.split("\t")[0] for l in lines[1:]] == ids
  predictions = [l.split("\t")[1] for l in lines[1:]]
  if values is None:
    np.testing.assert_allclose([float(p) for p in predictions], logits[:, 0], atol=5e-4)
  else:
    assert set(predictions) <= values
    assert predictions == [task.label_names[i] for i in logits.argmax(1)]


# ----------------------------------------------------------------------------------------------
# Errors.
# ----------------------------------------------------------------------------------------------


def test_a_model_for_other_labels_is_used_with_a_warning(sst2_model, dev100, tmp_path, capsys):
  model_dir, _, _ = sst2_model
  path, _, _ = dev100
  out = tmp_path / "p.tsv"
  # A model exported for SST-2 used as an RTE model: same label count, other label names.
  train.run(Config(mode="predict", task="rte", teacher_ckpt=str(model_dir), predict_file=str(path),
                   predict_out=str(out), text_fields=("sentence",), **COMMON))
  warnings = [l for l in capsys.readouterr().err.splitlines() if l.startswith("warning:")]
  assert len(warnings) == 1 and "trained on the labels 0, 1" in warnings[0], warnings
  assert _read_tsv(out)[0] == ["index", "label", "prob_entailment", "prob_not_entailment"]


def test_predict_errors_are_one_line(sst2_model, dev100, tmp_path):
  model_dir, _, _ = sst2_model
  path, _, _ = dev100
  cases = [
      (dict(task="sst2", glue_dir=str(tmp_path), predict_out=str(tmp_path / "sub")),
       "no SST-2/test.tsv"),
      (dict(task="sst2", predict_file=str(path), predict_out=str(tmp_path / "p.jsonl"),
            text_fields=("review",)), "missing column 'review'"),
      (dict(task="sst2", predict_file=str(path), predict_out=str(tmp_path / "p.csv")),
       "unsupported file type '.csv'"),
  ]
  for flags, needle in cases:
    with pytest.raises(UserError) as info:
      train.run(Config(mode="predict", teacher_ckpt=str(model_dir), **COMMON, **flags))
    assert needle in str(info.value) and "\n" not in str(info.value)
  assert not (tmp_path / "sub").exists() and not (tmp_path / "p.jsonl").exists()
  with pytest.raises(UserError, match="is not a trained model"):
    train.run(Config(mode="eval", teacher_ckpt=str(tmp_path), **COMMON))
