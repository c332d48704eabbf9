"""Tests of `augpro_jax.data` (GLUE dir, TFDS, custom files, bad input) and `augpro_jax.tasks`."""

import json
import math
import os
import pathlib
import sys
import types
import warnings

import numpy as np
import pytest

from augpro_jax import data
from augpro_jax import input_pipeline as pipeline
from augpro_jax import tasks
from augpro_jax.config import Config
from augpro_jax.errors import UserError

# ----------------------------------------------------------------------------------------------
# Helpers.
# ----------------------------------------------------------------------------------------------


def write(path, content, mode="w"):
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if mode == "wb":
    path.write_bytes(content)
  else:
    path.write_text(content, encoding="utf-8")
  return path


def assert_one_line(excinfo, *needles):
  """The UserError message is one line and contains every needle (case-insensitive)."""
  message = str(excinfo.value)
  assert message and "\n" not in message and "\r" not in message, repr(message)
  for needle in needles:
    assert str(needle).lower() in message.lower(), (needle, message)
  return message


SST2_TEXT = "sentence\tlabel\n" + "".join(
    f"{'a fine film' if i % 2 else 'a dull mess'} number {i}\t{i % 2}\n" for i in range(40))


def sst2_dir(tmp_path, train=SST2_TEXT, dev=SST2_TEXT, mode="w"):
  """A GLUE dir holding only SST-2, with the given train.tsv content."""
  root = tmp_path / "glue"
  write(root / "SST-2" / "train.tsv", train, mode)
  write(root / "SST-2" / "dev.tsv", dev)
  return root


def load_sst2(tmp_path, train, mode="w", split="train"):
  root = sst2_dir(tmp_path, train, mode=mode)
  cfg = Config(task="sst2", glue_dir=str(root))
  return data.load_split(cfg, data.resolve_task(cfg), split)


def custom_cfg(train, dev, text_fields=("sentence",), label_field="label", **kwargs):
  return Config(task=kwargs.pop("task", "custom"), train_file=str(train), eval_file=str(dev),
                text_fields=tuple(text_fields), label_field=label_field, **kwargs)


# ----------------------------------------------------------------------------------------------
# The real GLUE files (the counts experiments/README.md quotes).
# ----------------------------------------------------------------------------------------------

# folder: (task, train rows, {dev split: rows}, {split: label counts in label_names order})
GLUE_COUNTS = {
    "SST-2": ("sst2", 67349, {"dev": 872}, {"train": [29780, 37569], "dev": [428, 444]}),
    "MRPC": ("mrpc", 3668, {"dev": 408}, {"train": [1194, 2474], "dev": [129, 279]}),
    "RTE": ("rte", 2490, {"dev": 277}, {"train": [1249, 1241], "dev": [146, 131]}),
    "CoLA": ("cola", 8551, {"dev": 1043}, {"train": [2528, 6023], "dev": [322, 721]}),
    "STS-B": ("stsb", 5749, {"dev": 1500}, {}),
    "QNLI": ("qnli", 10475, {"dev": 5463}, {"train": [5227, 5248], "dev": [2702, 2761]}),
    "MNLI": ("mnli", 480, {}, {"train": [160, 160, 160]}),
    "QQP": ("qqp", 23496, {}, {"train": [14749, 8747]}),
}


@pytest.fixture(scope="module")
def glue_loads(glue):
  """Loads each split at most once per module (SST-2 train has 67k lines)."""
  cache = {}

  def load(task_name, split, **kwargs):
    key = (task_name, split, tuple(sorted(kwargs.items())))
    if key not in cache:
      cfg = Config(task=task_name, glue_dir=str(glue), **kwargs)
      cache[key] = data.load_split(cfg, data.resolve_task(cfg), split)
    return cache[key]

  return load


@pytest.mark.parametrize("folder", sorted(GLUE_COUNTS))
def test_glue_counts_and_labels(folder, glue, glue_loads):
  name, train_rows, dev_rows, label_counts = GLUE_COUNTS[folder]
  if not (glue / folder / "train.tsv").exists():
    pytest.skip(f"{folder}/train.tsv is not in the GLUE dir {glue}")
  task = tasks.get_task(name)
  splits = {"train": train_rows, **dev_rows}
  for split, rows in splits.items():
    examples = glue_loads(name, split)
    assert len(examples) == rows, (folder, split)
    assert len(examples.labels) == rows
    assert all(len(t) == len(task.text_fields) for t in examples.texts)
    assert all(isinstance(s, str) and s.strip() for t in examples.texts for s in t)
    if task.is_regression:
      assert examples.labels.dtype == np.float32
      assert examples.labels.min() >= 0.0 and examples.labels.max() <= 5.0
      assert len(np.unique(examples.labels)) > 10
    else:
      assert examples.labels.dtype == np.int32
      assert examples.labels.min() >= 0 and examples.labels.max() < task.num_labels
      if split in label_counts:
        counts = np.bincount(examples.labels, minlength=task.num_labels).tolist()
        assert counts == label_counts[split], (folder, split, counts)


def test_glue_text_details(glue, glue_loads):
  """BOM stripped (MRPC), headerless CoLA, no-final-newline CoLA dev, quotes kept verbatim."""
  for folder in ("MRPC", "CoLA"):
    if not (glue / folder).exists():
      pytest.skip(f"{folder} is not in the GLUE dir {glue}")
  mrpc = glue_loads("mrpc", "train")
  assert mrpc.texts[0][0].startswith("Amrozi accused his brother")
  assert '"the witness"' in mrpc.texts[0][0]  # QUOTE_NONE: quotes are text
  cola_dev = glue_loads("cola", "dev")
  assert cola_dev.texts[0] == ("The sailors rode the breeze clear of the rocks.",)
  last = (glue / "CoLA" / "dev.tsv").read_text(encoding="utf-8").split("\n")[-1].split("\t")
  assert cola_dev.texts[-1] == (last[3],) and cola_dev.labels[-1] == int(last[1])


def _pairs(examples):
  return list(zip(examples.texts, examples.labels.tolist()))


@pytest.mark.parametrize("name,folder", [("mnli", "MNLI"), ("qqp", "QQP")])
def test_missing_dev_and_dev_from_train(name, folder, glue, glue_loads):
  if not (glue / folder / "train.tsv").exists():
    pytest.skip(f"{folder}/train.tsv is not in the GLUE dir {glue}")
  task = tasks.get_task(name)
  if (glue / folder / f"{task.dev_splits[0]}.tsv").exists():
    pytest.skip(f"{folder} has a dev set here; this test is about its absence")
  cfg = Config(task=name, glue_dir=str(glue))
  for split in task.dev_splits:
    with pytest.raises(UserError) as excinfo:
      data.load_split(cfg, task, split)
    assert_one_line(excinfo, "--dev_from_train", f"{folder}/{split}.tsv")

  full = glue_loads(name, "train")
  train = glue_loads(name, "train", dev_from_train=50)
  assert len(train) == len(full) - 50
  devs = [glue_loads(name, split, dev_from_train=50) for split in task.dev_splits]
  assert [len(dev) for dev in devs] == [50] * len(devs)
  for dev in devs[1:]:  # MNLI: matched and mismatched are the same held-out set
    assert dev.texts == devs[0].texts
  # Held-out + kept is exactly the train set (as a multiset of (text, label)).
  assert sorted(_pairs(full)) == sorted(_pairs(train) + _pairs(devs[0]))
  # The hold-out does not depend on --seed.
  other = data.load_split(cfg.replace(dev_from_train=50, seed=7), task, task.dev_splits[0])
  assert other.texts == devs[0].texts


# ----------------------------------------------------------------------------------------------
# Size options.
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def numbered(tmp_path):
  """A custom TSV task with 100 distinct examples, text 'example i'."""
  body = "".join(f"example {i}\t{i % 3}\n" for i in range(100))
  train = write(tmp_path / "train.tsv", "sentence\tlabel\n" + body)
  dev = write(tmp_path / "dev.tsv", "sentence\tlabel\n" + body)
  return custom_cfg(train, dev)


def _ids(examples):
  return [int(t[0].split()[1]) for t in examples.texts]


def test_train_size_is_deterministic_seeded_subset(numbered):
  task = data.resolve_task(numbered)
  a = data.load_split(numbered.replace(train_size=30, seed=1), task, "train")
  b = data.load_split(numbered.replace(train_size=30, seed=1), task, "train")
  c = data.load_split(numbered.replace(train_size=30, seed=2), task, "train")
  assert len(a) == 30 and _ids(a) == _ids(b)
  assert _ids(a) != _ids(c)
  assert _ids(a) == sorted(_ids(a)) and len(set(_ids(a))) == 30  # original order, no repeats
  assert a.labels.tolist() == [i % 3 for i in _ids(a)]  # labels follow their texts
  bigger = data.load_split(numbered.replace(train_size=60, seed=1), task, "train")
  assert set(_ids(a)) <= set(_ids(bigger))  # nested for one seed
  everything = data.load_split(numbered.replace(train_size=1000), task, "train")
  assert _ids(everything) == list(range(100))


def test_eval_size_and_dev_from_train(numbered):
  task = data.resolve_task(numbered)
  dev = data.load_split(numbered.replace(eval_size=7), task, "dev")
  assert _ids(dev) == list(range(7))
  cfg = numbered.replace(dev_from_train=10, train_size=20)
  train = data.load_split(cfg, task, "train")
  held = data.load_split(cfg, task, "dev")
  assert len(train) == 20 and len(held) == 10
  assert not set(_ids(train)) & set(_ids(held))
  assert _ids(held) == sorted(_ids(held))
  with pytest.raises(UserError) as excinfo:
    data.load_split(numbered.replace(dev_from_train=100), task, "train")
  assert_one_line(excinfo, "--dev_from_train")


# ----------------------------------------------------------------------------------------------
# Metrics.
# ----------------------------------------------------------------------------------------------

# y: 4 positives, 4 negatives; p: TP=2 FN=2 TN=3 FP=1.
Y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
P = np.array([1, 1, 0, 0, 0, 0, 0, 1])
ACC = 5 / 8
F1 = 2 * 2 / (2 * 2 + 1 + 2)  # 2TP / (2TP + FP + FN) = 4/7
MCC = (2 * 3 - 1 * 2) / math.sqrt((2 + 1) * (2 + 2) * (3 + 1) * (3 + 2))  # 4/sqrt(240)


def test_metrics_classification_tasks():
  assert tasks.compute_metrics(tasks.get_task("cola"), P, Y) == pytest.approx({"mcc": MCC})
  for name in ("sst2", "qnli", "rte"):
    assert tasks.compute_metrics(tasks.get_task(name), P, Y) == pytest.approx({"accuracy": ACC})
  for name in ("mrpc", "qqp"):
    assert tasks.compute_metrics(tasks.get_task(name), P, Y) == pytest.approx(
        {"accuracy": ACC, "f1": F1})
  mnli = tasks.compute_metrics(tasks.get_task("mnli"), np.array([0, 1, 2, 2, 1]),
                               np.array([0, 1, 2, 0, 0]))
  assert mnli == pytest.approx({"accuracy": 3 / 5})


def test_accuracy_f1_and_mcc_agree_with_scikit_learn():
  from sklearn import metrics as skm  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for n, positive in [(1, 0.5), (2, 0.0), (7, 0.9), (50, 0.3), (400, 0.5)]:
    labels = (rng.random(n) < positive).astype(np.int64)
    predictions = (rng.random(n) < positive).astype(np.int64)
    got = tasks.compute_metrics(tasks.get_task("mrpc"), predictions, labels)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(labels, predictions))
    assert got["f1"] == pytest.approx(skm.f1_score(labels, predictions, zero_division=0.0))
    mcc = tasks.compute_metrics(tasks.get_task("cola"), predictions, labels)["mcc"]
    with warnings.catch_warnings():  # scikit-learn warns about a single class; ours does not
      warnings.simplefilter("ignore")
      assert mcc == pytest.approx(skm.matthews_corrcoef(labels, predictions))


def test_metrics_regression():
  stsb = tasks.get_task("stsb")
  labels = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
  # Centered x = (-1.5, -.5, .5, 1.5), y = (-1.5, .5, -.5, 1.5): r = 4 / 5; ranks equal values.
  assert tasks.compute_metrics(stsb, np.array([1.0, 3.0, 2.0, 4.0]), labels) == pytest.approx(
      {"pearson": 0.8, "spearmanr": 0.8})
  squares = tasks.compute_metrics(stsb, labels ** 2, labels)
  assert squares["spearmanr"] == pytest.approx(1.0)  # monotone
  assert 0.95 < squares["pearson"] < 1.0  # but not linear
  assert tasks.compute_metrics(stsb, -2 * labels[:, None], labels) == pytest.approx(
      {"pearson": -1.0, "spearmanr": -1.0})  # [N, 1] predictions are accepted


def test_metrics_degenerate_inputs():
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # no warnings leak out either
    constant = np.zeros(8, np.int64)
    assert tasks.compute_metrics(tasks.get_task("cola"), constant, Y) == {"mcc": 0.0}
    assert tasks.compute_metrics(tasks.get_task("mrpc"), constant, Y) == {"accuracy": 0.5,
                                                                          "f1": 0.0}
    stsb = tasks.get_task("stsb")
    flat = tasks.compute_metrics(stsb, np.full(4, 2.5), np.array([1.0, 2.0, 3.0, 4.0]))
    assert flat == {"pearson": 0.0, "spearmanr": 0.0}
    one = tasks.compute_metrics(stsb, np.array([1.0]), np.array([2.0]))
    assert one == {"pearson": 0.0, "spearmanr": 0.0}
  with pytest.raises(ValueError):
    tasks.compute_metrics(tasks.get_task("sst2"), P[:3], Y)


def test_metrics_custom_tasks():
  binary = tasks.TaskSpec("custom", None, None, ("t",), "l", ("neg", "pos"), ("dev",), "accuracy")
  assert tasks.compute_metrics(binary, P, Y) == pytest.approx(
      {"accuracy": ACC, "f1": F1, "mcc": MCC})
  three = tasks.TaskSpec("custom", None, None, ("t",), "l", ("a", "b", "c"), ("dev",), "accuracy")
  result = tasks.compute_metrics(three, np.array([0, 1, 2, 2]), np.array([0, 1, 2, 1]))
  assert set(result) == {"accuracy", "mcc"} and result["accuracy"] == 0.75
  regression = tasks.TaskSpec("custom", None, None, ("t",), "l", None, ("dev",), "pearson")
  assert tasks.compute_metrics(regression, np.array([1.0, 3.0, 2.0, 4.0]),
                               np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(
                                   {"pearson": 0.8, "spearmanr": 0.8})


def test_task_specs():
  assert set(tasks.TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"}
  for name, task in tasks.TASKS.items():
    preds = np.array([0.5, 1.0, 2.0]) if task.is_regression else np.array([0, 1, 1])
    result = tasks.compute_metrics(task, preds, np.array([0.0, 1.5, 2.0]) if task.is_regression
                                   else np.array([0, 1, 0]))
    assert task.main_metric in result, name
    assert all(type(v) is float for v in result.values()), name
  assert tasks.get_task("stsb").num_labels == 1 and tasks.get_task("stsb").is_regression
  assert tasks.get_task("mnli").label_names == ("entailment", "neutral", "contradiction")
  assert tasks.get_task("mnli").num_labels == 3
  with pytest.raises(UserError) as excinfo:
    tasks.get_task("nope")
  assert_one_line(excinfo, "unknown task", "'nope'", "sst2", "mnli")


# ----------------------------------------------------------------------------------------------
# TFDS (no download, no TensorFlow).
# ----------------------------------------------------------------------------------------------


def test_tfds_mock_data(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=7, policy=tfds.testing.MockPolicy.USE_CODE):
    for name, split in (("sst2", "train"), ("sst2", "dev"), ("mnli", "dev_matched"),
                        ("mnli", "dev_mismatched"), ("stsb", "dev")):
      cfg = Config(task=name, data_source="tfds", tfds_data_dir=str(tmp_path / "tfds"))
      task = data.resolve_task(cfg)
      examples = data.load_split(cfg, task, split)
      assert len(examples) == 7, (name, split)
      assert all(len(t) == len(task.text_fields) and all(isinstance(s, str) for s in t)
                 for t in examples.texts)
      if task.is_regression:
        assert examples.labels.dtype == np.float32
      else:
        assert examples.labels.dtype == np.int32
        assert examples.labels.min() >= 0 and examples.labels.max() < task.num_labels
    cfg = Config(task="sst2", data_source="tfds", train_size=3, seed=1)
    assert len(data.load_split(cfg, tasks.get_task("sst2"), "train")) == 3
  assert not (tmp_path / "tfds").exists()  # the mock wrote nothing


def test_tfds_prepared_array_record(tmp_path, monkeypatch):
  """Real (not mocked) TFDS files: a tiny glue/rte prepared from local files, read as bytes."""
  tfds = pytest.importorskip("tensorflow_datasets")
  import tensorflow_datasets.text.glue  # pylint: disable=unused-import,g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from tensorflow_datasets.core.download import download_manager
  try:
    import importlib_resources  # pylint: disable=unused-import,g-import-not-at-top
  except ImportError:
    # Only preparing needs it (not installed here); the stdlib module has what tfds uses.
    import importlib.resources  # pylint: disable=g-import-not-at-top
    import importlib.resources.abc  # pylint: disable=g-import-not-at-top
    shim = types.ModuleType("importlib_resources")
    shim.__dict__.update(vars(importlib.resources))
    shim.abc = importlib.resources.abc
    monkeypatch.setitem(sys.modules, "importlib_resources", shim)
    monkeypatch.setitem(sys.modules, "importlib_resources.abc", importlib.resources.abc)
  source = tmp_path / "download"
  header = "index\tsentence1\tsentence2\tlabel\n"
  write(source / "RTE" / "train.tsv", header + "0\tA man sleeps.\tSomeone sleeps.\tentailment\n"
        "1\tA cat.\tA dog.\tnot_entailment\n2\tIt rains.\tIt is dry.\tnot_entailment\n")
  write(source / "RTE" / "dev.tsv", header + "0\tCafé au lait.\tCoffee.\tentailment\n")
  write(source / "RTE" / "test.tsv", "index\tsentence1\tsentence2\n0\tx y.\tz.\n")
  monkeypatch.setattr(download_manager.DownloadManager, "download_and_extract",
                      lambda self, url: str(source))  # never the network
  data_dir = tmp_path / "tfds"
  try:
    tfds.builder("glue/rte", data_dir=str(data_dir)).download_and_prepare(
        file_format="array_record")
  except Exception as exc:  # pylint: disable=broad-except
    pytest.skip(f"cannot prepare TFDS data offline in this environment: {exc!r}"[:300])
  cfg = Config(task="rte", data_source="tfds", tfds_data_dir=str(data_dir))
  dev = data.load_split(cfg, tasks.get_task("rte"), "dev")
  assert dev.texts == [("Café au lait.", "Coffee.")] and dev.labels.tolist() == [0]
  train = data.load_split(cfg, tasks.get_task("rte"), "train")
  assert sorted(zip(train.texts, train.labels.tolist())) == [
      (("A cat.", "A dog."), 1), (("A man sleeps.", "Someone sleeps."), 0),
      (("It rains.", "It is dry."), 1)]


def test_tfds_data_missing(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(UserError) as excinfo:
    # download=False: this test must never reach the network.
    # pylint: disable-next=protected-access
    data._read_tfds(tasks.get_task("sst2"), "dev", str(tmp_path), download=False)
  assert_one_line(excinfo, "glue/sst2", "validation", str(tmp_path))


# ----------------------------------------------------------------------------------------------
# Custom files.
# ----------------------------------------------------------------------------------------------

# (text a, text b, class label, score); the second row has quotes and a comma for CSV quoting.
PAIRS = [
    ("a cat sat", "a cat is sitting", "yes", 4.5),
    ('he said "hi", then left', "he left", "no", 1.25),
    ("rain", "sun", "no", 0.0),
    ("dogs bark", "a dog barks", "yes", 3.75),
]


def _write_pairs(path, fmt, label_col):
  """PAIRS as a TSV/CSV/JSONL file with columns a, b, and the label column (2 or 3)."""
  if fmt == "jsonl":
    lines = [json.dumps({"a": r[0], "b": r[1], "label": r[label_col], "extra": 1}) for r in PAIRS]
    return write(path, "\n".join(lines) + "\n")
  if fmt == "csv":

    def quote(value):
      value = str(value)
      return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"') else value

    rows = ["id,a,b,label"] + [f"{i},{quote(r[0])},{quote(r[1])},{r[label_col]}"
                               for i, r in enumerate(PAIRS)]
    return write(path, "\r\n".join(rows) + "\r\n")
  rows = ["id\ta\tb\tlabel"] + [f"{i}\t{r[0]}\t{r[1]}\t{r[label_col]}" for i, r in enumerate(PAIRS)]
  return write(path, "\n".join(rows))


@pytest.mark.parametrize("fmt", ["tsv", "csv", "jsonl"])
def test_custom_classification_round_trip(fmt, tmp_path):
  train = _write_pairs(tmp_path / f"train.{fmt}", fmt, 2)
  dev = _write_pairs(tmp_path / f"dev.{fmt}", fmt, 2)
  cfg = custom_cfg(train, dev, ("a", "b"), "label")
  task = data.resolve_task(cfg)
  assert task.name == "custom" and task.label_names == ("no", "yes") and not task.is_regression
  assert task.main_metric in tasks.metric_names(task)
  for split in ("train", "dev"):
    examples = data.load_split(cfg, task, split)
    assert examples.texts == [r[:2] for r in PAIRS]
    assert examples.labels.tolist() == [1, 0, 0, 1] and examples.labels.dtype == np.int32


@pytest.mark.parametrize("fmt", ["tsv", "csv", "jsonl"])
def test_custom_regression_round_trip(fmt, tmp_path):
  train = _write_pairs(tmp_path / f"train.{fmt}", fmt, 3)
  dev = _write_pairs(tmp_path / f"dev.{fmt}", fmt, 3)
  cfg = custom_cfg(train, dev, ("a", "b"), "label")
  task = data.resolve_task(cfg)  # auto: all numbers, not all integers
  assert task.is_regression and task.num_labels == 1 and task.main_metric == "pearson"
  examples = data.load_split(cfg, task, "dev")
  assert examples.labels.dtype == np.float32
  assert examples.labels.tolist() == [r[3] for r in PAIRS]
  as_classes = data.resolve_task(cfg.replace(label_type="classification"))
  assert as_classes.label_names == ("0.0", "1.25", "3.75", "4.5")


def test_custom_label_rules(tmp_path):
  body = "".join(f"text {i}\t{label}\n" for i, label in enumerate(["10", "2", "2", "0"]))
  train = write(tmp_path / "train.tsv", "t\ty\n" + body)
  cfg = custom_cfg(train, train, ("t",), "y")
  task = data.resolve_task(cfg)
  assert task.label_names == ("0", "2", "10")  # integers: numeric order, classification
  assert data.load_split(cfg, task, "train").labels.tolist() == [2, 1, 1, 0]
  forced = data.resolve_task(cfg.replace(label_type="regression"))
  assert forced.is_regression
  assert data.load_split(cfg, forced, "train").labels.tolist() == [10.0, 2.0, 2.0, 0.0]


def test_custom_file_with_glue_task(tmp_path):
  """--task=sst2 with custom files: SST-2 labels and metrics, the file's own column names."""
  train = write(tmp_path / "train.csv", "review,stars\nnice film,1\nbad film,0\n")
  cfg = custom_cfg(train, train, ("review",), "stars", task="sst2")
  task = data.resolve_task(cfg)
  assert task.name == "sst2" and task.text_fields == ("review",) and task.label_field == "stars"
  assert task.label_names == ("0", "1")
  assert data.load_split(cfg, task, "dev").labels.tolist() == [1, 0]


def test_custom_long_text_bom_and_reload(tmp_path):
  long_text = "word " * 60_000  # 300k characters: beyond the csv module's default field limit
  for suffix in ("tsv", "csv"):
    sep = "\t" if suffix == "tsv" else ","
    path = write(tmp_path / f"long.{suffix}", f"\ufeffsentence{sep}label\n{long_text}{sep}1\n"
                 f"short{sep}0\n")
    cfg = custom_cfg(path, path)
    examples = data.load_split(cfg, data.resolve_task(cfg), "train")
    assert examples.texts[0] == (long_text,) and len(examples) == 2
  # A file rewritten in place is read again (the parse cache is keyed by size and mtime).
  path = write(tmp_path / "edit.tsv", "sentence\tlabel\na\t0\nb\t1\n")
  cfg = custom_cfg(path, path)
  assert len(data.load_split(cfg, data.resolve_task(cfg), "train")) == 2
  write(path, "sentence\tlabel\na\t0\nb\t1\nc\t1\n")
  assert len(data.load_split(cfg, data.resolve_task(cfg), "train")) == 3


# ----------------------------------------------------------------------------------------------
# Bad input: one UserError line naming the file (and line).
# ----------------------------------------------------------------------------------------------


def test_bad_glue_dir_missing(tmp_path):
  cfg = Config(task="sst2", glue_dir=str(tmp_path / "no_such_dir"))
  with pytest.raises(UserError) as excinfo:
    data.load_split(cfg, tasks.get_task("sst2"), "train")
  assert_one_line(excinfo, "no_such_dir", "--glue_dir")


def test_bad_no_glue_dir_at_all(monkeypatch):
  monkeypatch.delenv("GLUE_DIR", raising=False)
  with pytest.raises(UserError) as excinfo:
    data.glue_dir_from(Config(task="sst2"))
  assert_one_line(excinfo, "no GLUE data", "--glue_dir", "GLUE_DIR")


def test_glue_dir_from_flag_then_env(tmp_path, monkeypatch):
  (tmp_path / "flag").mkdir()
  monkeypatch.setenv("GLUE_DIR", str(tmp_path))
  assert data.glue_dir_from(Config(task="sst2")) == tmp_path
  assert data.glue_dir_from(Config(task="sst2", glue_dir=str(tmp_path / "flag"))) == \
      tmp_path / "flag"
  monkeypatch.setenv("GLUE_DIR", str(tmp_path / "gone"))
  with pytest.raises(UserError) as excinfo:
    data.glue_dir_from(Config(task="sst2"))
  assert_one_line(excinfo, "$GLUE_DIR", "gone")


def test_bad_glue_task_folder_missing(tmp_path):
  root = sst2_dir(tmp_path)
  cfg = Config(task="rte", glue_dir=str(root))
  with pytest.raises(UserError) as excinfo:
    data.load_split(cfg, tasks.get_task("rte"), "train")
  assert_one_line(excinfo, "RTE/", str(root))


def test_bad_glue_file_missing(tmp_path):
  root = sst2_dir(tmp_path)
  (root / "SST-2" / "train.tsv").unlink()
  cfg = Config(task="sst2", glue_dir=str(root))
  with pytest.raises(UserError) as excinfo:
    data.load_split(cfg, tasks.get_task("sst2"), "train")
  assert_one_line(excinfo, str(root / "SST-2" / "train.tsv"), "SST-2/train.tsv")


def test_bad_custom_file_missing(tmp_path):
  dev = write(tmp_path / "dev.tsv", SST2_TEXT)
  with pytest.raises(UserError) as excinfo:
    data.resolve_task(custom_cfg(tmp_path / "absent.tsv", dev))
  assert_one_line(excinfo, "absent.tsv", "--train_file")


def test_bad_empty_file(tmp_path):
  with pytest.raises(UserError) as excinfo:
    load_sst2(tmp_path, "")
  assert_one_line(excinfo, "train.tsv", "empty")


def test_bad_header_only_file(tmp_path):
  with pytest.raises(UserError) as excinfo:
    load_sst2(tmp_path, "sentence\tlabel\n")
  assert_one_line(excinfo, "train.tsv", "empty", "header")


def test_bad_unreadable_file(tmp_path):
  dev = write(tmp_path / "dev.tsv", SST2_TEXT)
  if os.geteuid() == 0:
    # root reads anything; a directory where the file should be is unreadable for everyone.
    (tmp_path / "train.tsv").mkdir()
    train = tmp_path / "train.tsv"
  else:
    train = write(tmp_path / "train.tsv", SST2_TEXT)
    os.chmod(train, 0)
  with pytest.raises(UserError) as excinfo:
    data.resolve_task(custom_cfg(train, dev))
  assert_one_line(excinfo, str(train), "cannot read")


def test_bad_non_utf8(tmp_path):
  with pytest.raises(UserError) as excinfo:
    load_sst2(tmp_path, b"sentence\tlabel\nfine\t1\n\xff\xfe bad\t0\n", mode="wb")
  assert_one_line(excinfo, "train.tsv", "line 3", "utf-8")


def test_bad_missing_column(tmp_path):
  with pytest.raises(UserError) as excinfo:
    load_sst2(tmp_path, "text\tlabel\nfine\t1\n")
  assert_one_line(excinfo, "train.tsv", "missing column 'sentence'", "'text', 'label'")


def test_bad_csv_where_tsv_expected(tmp_path):
  with pytest.raises(UserError) as excinfo:
    load_sst2(tmp_path, "sentence,label\nfine,1\nbad,0\n")
  assert_one_line(excinfo, "train.tsv", "looks comma-separated")


def test_bad_tsv_named_csv(tmp_path):
  train = write(tmp_path / "train.csv", "sentence\tlabel\nfine\t1\n")
  with pytest.raises(UserError) as excinfo:
    data.resolve_task(custom_cfg(train, train))
  assert_one_line(excinfo, "train.csv", "looks tab-separated")


def test_bad_too_many_fields(tmp_path):
  with pytest.raises(UserError) as excinfo:
    load_sst2(tmp_path, "sentence\tlabel\nfine\t1\textra\n")
  assert_one_line(excinfo, "train.tsv", "line 2", "too many")


def test_bad_too_few_fields(tmp_path):
  with pytest.raises(UserError) as excinfo:
    load_sst2(tmp_path, "sentence\tlabel\nfine\t1\nbad\n")
  assert_one_line(excinfo, "train.tsv", "line 3", "too few")


def test_bad_label_outside_task(tmp_path):
  with pytest.raises(UserError) as excinfo:
    load_sst2(tmp_path, "sentence\tlabel\nfine\t1\nbad\t7\n")
  assert_one_line(excinfo, "train.tsv", "line 3", "'7'", "0, 1")


def test_bad_eval_label_not_in_train_labels(tmp_path):
  train = write(tmp_path / "train.tsv", "t\ty\na\tpos\nb\tneg\n")
  dev = write(tmp_path / "dev.tsv", "t\ty\na\tpos\nb\tneutral\n")
  cfg = custom_cfg(train, dev, ("t",), "y")
  with pytest.raises(UserError) as excinfo:
    data.load_split(cfg, data.resolve_task(cfg), "dev")
  assert_one_line(excinfo, "dev.tsv", "line 3", "'neutral'")


def test_bad_regression_label(tmp_path):
  train = write(tmp_path / "train.tsv", "t\tscore\na\t0.5\nb\tabc\n")
  cfg = custom_cfg(train, train, ("t",), "score", label_type="regression")
  with pytest.raises(UserError) as excinfo:
    data.load_split(cfg, data.resolve_task(cfg), "train")
  assert_one_line(excinfo, "train.tsv", "line 3", "'abc'", "not a finite number")
  root = tmp_path / "glue"  # the same through the STS-B GLUE reader
  header = "\t".join(["index", "genre", "filename", "year", "old_index", "source1", "source2",
                      "sentence1", "sentence2", "score"]) + "\n"
  write(root / "STS-B" / "dev.tsv", header + "0\tg\tf\ty\t0\ts\ts\ta\tb\tnan\n")
  with pytest.raises(UserError) as excinfo:
    data.load_split(Config(task="stsb", glue_dir=str(root)), tasks.get_task("stsb"), "dev")
  assert_one_line(excinfo, "STS-B/dev.tsv", "line 2", "'nan'")


def test_bad_blank_text(tmp_path):
  with pytest.raises(UserError) as excinfo:
    load_sst2(tmp_path, "sentence\tlabel\nfine\t1\n  \t0\n")
  assert_one_line(excinfo, "train.tsv", "line 3", "empty text", "'sentence'")
  train = write(tmp_path / "train.jsonl", '{"t": "a", "y": "1"}\n{"t": null, "y": "0"}\n')
  with pytest.raises(UserError) as excinfo:
    data.resolve_task(custom_cfg(train, train, ("t",), "y"))
  assert_one_line(excinfo, "train.jsonl", "line 2", "empty text")


def test_bad_jsonl_not_object(tmp_path):
  train = write(tmp_path / "train.jsonl", '{"t": "a", "y": "1"}\n["b", "0"]\n')
  with pytest.raises(UserError) as excinfo:
    data.resolve_task(custom_cfg(train, train, ("t",), "y"))
  assert_one_line(excinfo, "train.jsonl", "line 2", "JSON object")
  write(train, '{"t": "a", "y": "1"}\n\n{"t": "b", "y": 0\n')
  with pytest.raises(UserError) as excinfo:
    data.resolve_task(custom_cfg(train, train, ("t",), "y"))
  assert_one_line(excinfo, "train.jsonl", "line 3", "not valid JSON")
  write(train, '{"t": "a", "y": "1"}\n{"text": "b", "y": 0}\n')
  with pytest.raises(UserError) as excinfo:
    data.resolve_task(custom_cfg(train, train, ("t",), "y"))
  assert_one_line(excinfo, "train.jsonl", "line 2", "missing field 't'", "'text'")


def test_bad_unsupported_extension(tmp_path):
  train = write(tmp_path / "train.txt", SST2_TEXT)
  with pytest.raises(UserError) as excinfo:
    data.resolve_task(custom_cfg(train, train))
  assert_one_line(excinfo, "train.txt", ".tsv", ".jsonl")


def test_bad_single_class(tmp_path):
  train = write(tmp_path / "train.tsv", "t\ty\na\tpos\nb\tpos\n")
  with pytest.raises(UserError) as excinfo:
    data.resolve_task(custom_cfg(train, train, ("t",), "y"))
  assert_one_line(excinfo, "train.tsv", "2 classes")


def test_bad_custom_task_without_files():
  with pytest.raises(UserError) as excinfo:
    data.resolve_task(Config(task="custom"))
  assert_one_line(excinfo, "--train_file")


def test_rows_drawn_are_the_examples_the_steps_use():
  n, batch, seed = 100, 8, 3  # 12 steps per epoch, 4 examples dropped per epoch
  ids = np.ones((n, 4), np.int32)
  split = pipeline.Tokenized(ids, ids, 0 * ids, np.zeros(n, np.int32), 0, [("x",)] * n)
  half = pipeline.rows_drawn(split, batch, seed, 0, 6)
  assert len(half) == 48 and np.array_equal(half, np.unique(np.concatenate(
      [pipeline.global_batch_indices(s, n, batch, seed) for s in range(6)])))
  resumed = pipeline.rows_drawn(split, batch, seed, 6, 12)
  assert len(resumed) == 48 and not set(half) & set(resumed)  # one epoch: no repeats
  assert len(pipeline.rows_drawn(split, batch, seed, 0, 36)) > 96  # other permutations fill the gaps
  assert len(pipeline.rows_drawn(split, batch, seed, 5, 5)) == 0


@pytest.mark.parametrize("num_examples,batch,seed", [(100, 8, 0), (64, 16, 3), (37, 5, 11)])
def test_batch_order_is_a_fresh_permutation_every_epoch(num_examples, batch, seed):
  """Within an epoch no example repeats and only the remainder (< one batch) is left out; each
  epoch orders the examples differently; batches are a pure function of (seed, step)."""
  per_epoch = pipeline.steps_per_epoch(num_examples, batch)
  epochs = []
  for epoch in range(4):
    drawn = np.concatenate([pipeline.global_batch_indices(epoch * per_epoch + s, num_examples,
                                                          batch, seed) for s in range(per_epoch)])
    assert len(drawn) == len(set(drawn.tolist())) == per_epoch * batch
    assert num_examples - len(drawn) < batch
    epochs.append(drawn)
  for a in range(len(epochs)):
    for b in range(a + 1, len(epochs)):
      assert not np.array_equal(epochs[a], epochs[b]), (a, b)
  np.testing.assert_array_equal(pipeline.global_batch_indices(per_epoch + 1, num_examples, batch,
                                                              seed),
                                epochs[1][batch:2 * batch])
