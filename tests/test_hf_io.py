"""Hugging Face checkpoints in and out (hf_io): backbones, heads used as they are or discarded,
the export that transformers loads, and loading errors. The end-to-end tests distil from the
shipped MiniLM saved as a BertForSequenceClassification, on real SST-2."""

import contextlib
import dataclasses
import io
import json
import pathlib
import shutil

import jax
import numpy as np
import pytest

from augpro_jax import checkpoints
from augpro_jax import data as data_lib
from augpro_jax import context
from augpro_jax import evaluation
from augpro_jax import hf_io
from augpro_jax import input_pipeline as pipeline
from augpro_jax import model as model_lib
from augpro_jax import train
from augpro_jax import sharding
from augpro_jax.config import Config
from augpro_jax.errors import UserError
from augpro_jax.model import BertClassifier
from test_model import assert_one_line, tiny, tiny_batch


@pytest.fixture(scope="module")
def minilm_dir():
  return hf_io.resolve_pretrained_dir("minilm")


# ----------------------------------------------------------------------------------------------
# Reading.
# ----------------------------------------------------------------------------------------------


def _save_hf(tmp_path, config, *, classifier, safetensors=True):
  """A random tiny HF BERT (BertModel or BertForSequenceClassification) saved to tmp_path."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  torch.manual_seed(0)
  hf_config = transformers.BertConfig(
      vocab_size=config.vocab_size, hidden_size=config.hidden_size,
      num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
      intermediate_size=config.intermediate_size,
      max_position_embeddings=config.max_position_embeddings, num_labels=config.num_labels)
  cls = transformers.BertForSequenceClassification if classifier else transformers.BertModel
  hf_model = cls(hf_config).eval()
  hf_model.save_pretrained(str(tmp_path), safe_serialization=safetensors)
  return hf_model


@pytest.mark.parametrize("safetensors", [True, False], ids=["safetensors", "pytorch_bin"])
def test_sequence_classifier_checkpoint_gives_hf_logits(tmp_path, safetensors):
  # BertForSequenceClassification: "bert." prefix, and its classifier is used as it is.
  torch = pytest.importorskip("torch")
  config = tiny(labels=3)
  hf_model = _save_hf(tmp_path, config, classifier=True, safetensors=safetensors)
  assert (tmp_path / ("model.safetensors" if safetensors else "pytorch_model.bin")).exists()
  loaded_config, params, _ = hf_io.load_classifier(tmp_path, task_name="three", num_labels=3)
  assert dataclasses.replace(loaded_config, layer_norm_eps=config.layer_norm_eps) == config
  ids, mask, types = tiny_batch(config)
  logits = jax.jit(BertClassifier(loaded_config).apply)({"params": params}, ids, mask, types)
  with torch.no_grad():
    want = hf_model(input_ids=torch.from_numpy(np.asarray(ids, np.int64)),
                    attention_mask=torch.from_numpy(np.asarray(mask, np.int64)),
                    token_type_ids=torch.from_numpy(np.asarray(types, np.int64))).logits.numpy()
  np.testing.assert_allclose(np.asarray(logits), want, atol=1e-5)


def test_legacy_layer_norm_names_and_fresh_classifier(tmp_path):
  from safetensors.numpy import load_file, save_file  # pylint: disable=import-outside-toplevel
  config = tiny()
  _save_hf(tmp_path, config, classifier=False)
  weights = load_file(str(tmp_path / "model.safetensors"))
  legacy = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias",
                                                                      "LayerNorm.beta"): v
            for k, v in weights.items()}
  assert any(k.endswith("gamma") for k in legacy)
  save_file(legacy, str(tmp_path / "model.safetensors"))
  _, params = hf_io.load_pretrained(str(tmp_path), num_labels=1)
  np.testing.assert_array_equal(params["encoder"]["layer_1"]["output_layer_norm"]["scale"],
                                weights["encoder.layer.1.output.LayerNorm.weight"])
  np.testing.assert_array_equal(params["encoder"]["layer_0"]["attention"]["query"]["kernel"],
                                weights["encoder.layer.0.attention.self.query.weight"].T)
  assert params["classifier"]["kernel"].shape == (config.hidden_size, 1)
  # Fresh head: deterministic, small, zero bias.
  _, again = hf_io.load_pretrained(str(tmp_path), num_labels=1)
  np.testing.assert_array_equal(params["classifier"]["kernel"], again["classifier"]["kernel"])
  assert not np.any(params["classifier"]["bias"])




def test_backbone_load_discards_a_head_that_head_size_sees(tmp_path):
  config = tiny(labels=3)
  hf_model = _save_hf(tmp_path, config, classifier=True)
  assert hf_io.head_size(tmp_path) == 3
  _, params = hf_io.load_pretrained(str(tmp_path), num_labels=3)
  trained = hf_model.classifier.weight.detach().numpy().T  # [hidden, 3]
  assert not np.allclose(params["classifier"]["kernel"], trained)
  assert not np.any(params["classifier"]["bias"])  # a fresh head
  _, kept, _ = hf_io.load_classifier(tmp_path, task_name="three", num_labels=3)
  np.testing.assert_array_equal(kept["classifier"]["kernel"], trained)
  backbone = tmp_path / "backbone"
  _save_hf(backbone, config, classifier=False)
  assert hf_io.head_size(backbone) is None


def test_head_outputs_follow_id2label(tmp_path):
  # transformers' run_glue orders MNLI as contradiction, entailment, neutral; ours differs.
  config = tiny(labels=3)
  hf_model = _save_hf(tmp_path, config, classifier=True)
  raw = json.loads((tmp_path / "config.json").read_text())
  raw["id2label"] = {"0": "CONTRADICTION", "1": "entailment", "2": "neutral"}
  (tmp_path / "config.json").write_text(json.dumps(raw))
  ours = ("entailment", "neutral", "contradiction")
  _, params, info = hf_io.load_classifier(tmp_path, task_name="mnli", num_labels=3,
                                          task_labels=ours)
  weight = hf_model.classifier.weight.detach().numpy()  # [3, hidden]
  for j, hf_row in enumerate([1, 2, 0]):
    np.testing.assert_array_equal(params["classifier"]["kernel"][:, j], weight[hf_row])
  assert "reordered" in info["label_note"]
  # Names that are not the task's: the order is kept, and the note says it is assumed.
  raw["id2label"] = {"0": "yes", "1": "maybe", "2": "no"}
  (tmp_path / "config.json").write_text(json.dumps(raw))
  _, params, info = hf_io.load_classifier(tmp_path, task_name="mnli", num_labels=3,
                                          task_labels=ours)
  np.testing.assert_array_equal(params["classifier"]["kernel"], weight.T)
  assert "taken in the task's label order" in info["label_note"]
  # transformers' default names (LABEL_0, ...): the order is kept without a note.
  raw["id2label"] = {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}
  (tmp_path / "config.json").write_text(json.dumps(raw))
  _, params, info = hf_io.load_classifier(tmp_path, task_name="mnli", num_labels=3,
                                          task_labels=ours)
  np.testing.assert_array_equal(params["classifier"]["kernel"], weight.T)
  assert "label_note" not in info


def test_head_with_another_label_count_or_none_is_a_user_error(tmp_path):
  _save_hf(tmp_path / "three", tiny(labels=3), classifier=True)
  with pytest.raises(UserError) as info:
    hf_io.load_classifier(tmp_path / "three", task_name="sst2", num_labels=2)
  assert_one_line(info, "3 labels", "sst2 has 2")
  _save_hf(tmp_path / "backbone", tiny(), classifier=False)
  with pytest.raises(UserError) as info:
    hf_io.load_classifier(tmp_path / "backbone", task_name="sst2", num_labels=2)
  assert_one_line(info, "no classifier head", "--teacher=")


# ----------------------------------------------------------------------------------------------
# Writing.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("labels", [("neg", "pos", "mixed"), ()], ids=["classifier", "regression"])
def test_write_hf_round_trip(tmp_path, minilm_dir, labels):
  transformers = pytest.importorskip("transformers")
  config = tiny(labels=len(labels) or 1, vocab=30522)
  params = model_lib.init_params(config, jax.random.PRNGKey(3))
  out = hf_io.write_hf(tmp_path / "hf", config, params, task_labels=labels, tokenizer_dir=minilm_dir)
  assert sorted(p.name for p in out.iterdir()) == sorted(["config.json", "model.safetensors",
                                                          *hf_io.TOKENIZER_FILES])
  hf_config = transformers.AutoConfig.from_pretrained(str(out))
  assert hf_config.architectures == ["BertForSequenceClassification"]
  if labels:
    assert hf_config.problem_type == "single_label_classification"
    assert [hf_config.id2label[i] for i in range(3)] == list(labels)
  else:
    assert hf_config.problem_type == "regression" and hf_config.num_labels == 1
  back_config, back, _ = hf_io.load_classifier(out, task_name="t", num_labels=config.num_labels,
                                               task_labels=labels)
  assert back_config == dataclasses.replace(config, dropout_rate=0.0)
  jax.tree_util.tree_map(np.testing.assert_array_equal, back, params)


def test_tokenizer_files_made_from_tokenizer_json(tmp_path, minilm_dir):
  transformers = pytest.importorskip("transformers")
  bare = tmp_path / "bare"
  bare.mkdir()
  shutil.copy(minilm_dir / "tokenizer.json", bare / "tokenizer.json")
  out = tmp_path / "out"
  out.mkdir()
  hf_io.write_tokenizer(out, bare, 512)
  assert (out / "vocab.txt").read_text() == (minilm_dir / "vocab.txt").read_text()
  assert json.loads((out / "tokenizer_config.json").read_text())["do_lower_case"] is True
  sentence = "A Charming, Funny movie; unhurried."
  made = transformers.AutoTokenizer.from_pretrained(str(out))
  slow = transformers.BertTokenizer.from_pretrained(str(out))  # reads vocab.txt + the config
  original = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
  assert made(sentence)["input_ids"] == original(sentence)["input_ids"]
  assert slow(sentence)["input_ids"] == original(sentence)["input_ids"]


# ----------------------------------------------------------------------------------------------
# Loading errors.
# ----------------------------------------------------------------------------------------------


def _copy_config(source: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
  target.mkdir()
  (target / "config.json").write_bytes((source / "config.json").read_bytes())
  return target


def test_missing_dir_is_a_user_error(tmp_path):
  with pytest.raises(UserError) as info:
    hf_io.load_pretrained(str(tmp_path / "nope"), num_labels=2)
  assert_one_line(info, "nope", "minilm")
  with pytest.raises(UserError) as info:  # HF_HUB_OFFLINE=1 (conftest): a hub name fails fast
    hf_io.resolve_pretrained_dir("no-such-org/no-such-bert")
  assert_one_line(info, "no-such-org/no-such-bert", "offline")


def test_corrupt_safetensors_is_a_user_error(tmp_path, minilm_dir):
  teacher = _copy_config(minilm_dir, tmp_path / "teacher")
  (teacher / "model.safetensors").write_bytes(b"\x00garbage" * 100)
  with pytest.raises(UserError) as info:
    hf_io.load_pretrained(str(teacher), num_labels=2)
  assert_one_line(info, str(teacher / "model.safetensors"))


def test_missing_weights_or_config_is_a_user_error(tmp_path, minilm_dir):
  teacher = _copy_config(minilm_dir, tmp_path / "teacher")
  with pytest.raises(UserError) as info:
    hf_io.load_pretrained(str(teacher), num_labels=2)
  assert_one_line(info, "no model.safetensors", str(teacher))
  (teacher / "config.json").unlink()
  (teacher / "model.safetensors").write_bytes((minilm_dir / "model.safetensors").read_bytes())
  with pytest.raises(UserError) as info:
    hf_io.load_pretrained(str(teacher), num_labels=2)
  assert_one_line(info, "config.json")
  (teacher / "config.json").write_text("{not json")
  with pytest.raises(UserError) as info:
    hf_io.load_pretrained(str(teacher), num_labels=2)
  assert_one_line(info, "config.json")


def test_non_bert_or_mismatched_config_is_a_user_error(tmp_path, minilm_dir):
  teacher = tmp_path / "teacher"
  teacher.mkdir()
  (teacher / "model.safetensors").write_bytes((minilm_dir / "model.safetensors").read_bytes())
  raw = json.loads((minilm_dir / "config.json").read_text())
  distilbert = {"model_type": "distilbert", "dim": 768, "n_layers": 6, "n_heads": 12,
                "vocab_size": 30522}
  (teacher / "config.json").write_text(json.dumps(distilbert))
  with pytest.raises(UserError) as info:
    hf_io.load_pretrained(str(teacher), num_labels=2)
  assert_one_line(info, "config.json", "not a BERT config")
  # Config and weights disagree on a width: wrong shape, naming the file.
  (teacher / "config.json").write_text(json.dumps({**raw, "intermediate_size": 1024}))
  with pytest.raises(UserError) as info:
    hf_io.load_pretrained(str(teacher), num_labels=2)
  assert_one_line(info, "model.safetensors", "shape")
  # More layers than the checkpoint has.
  (teacher / "config.json").write_text(json.dumps({**raw, "num_hidden_layers": 7}))
  with pytest.raises(UserError) as info:
    hf_io.load_pretrained(str(teacher), num_labels=2)
  assert_one_line(info, "model.safetensors", "encoder.layer.6")
  (teacher / "config.json").write_text(json.dumps({**raw, "hidden_act": "relu"}))
  with pytest.raises(UserError) as info:
    hf_io.load_pretrained(str(teacher), num_labels=2)
  assert_one_line(info, "hidden_act")


def test_resolve_pretrained_dir(minilm_dir, tmp_path):
  assert (minilm_dir / "config.json").is_file() and (minilm_dir / "tokenizer.json").is_file()
  assert hf_io.resolve_pretrained_dir(str(tmp_path)) == tmp_path


# ----------------------------------------------------------------------------------------------
# End to end: a Hugging Face teacher in, a Hugging Face student out.
# ----------------------------------------------------------------------------------------------

# Sentences up to 64 tokens: few SST-2 dev sentences are cut, and both tokenizers cut alike.
RUN = dict(max_seq_len=64, batch_size=8, eval_batch_size=16, student_layers=1, num_train_steps=2,
           train_size=32, eval_size=32, log_every=1, checkpoint_every=0, progress=False)


def _torch_logits(model, ids, mask, types) -> np.ndarray:
  torch = pytest.importorskip("torch")
  as_torch = lambda a: torch.from_numpy(np.asarray(a, np.int64))
  with torch.no_grad():
    return model(input_ids=as_torch(ids), attention_mask=as_torch(mask),
                 token_type_ids=as_torch(types)).logits.numpy()


@pytest.fixture(scope="module")
def hf_teacher(minilm_dir, tmp_path_factory) -> pathlib.Path:
  """The shipped MiniLM as a BertForSequenceClassification with a random 2-label head."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  torch.manual_seed(0)
  model = transformers.BertForSequenceClassification.from_pretrained(str(minilm_dir), num_labels=2)
  path = tmp_path_factory.mktemp("hf_teacher")
  model.save_pretrained(str(path))
  for name in hf_io.TOKENIZER_FILES:
    shutil.copy(minilm_dir / name, path / name)
  return path


def _no_teacher_training(*args, **kwargs):
  raise AssertionError("the teacher was fine-tuned")


@pytest.fixture(scope="module")
def distilled(hf_teacher, glue, tmp_path_factory):
  """A 1-layer student distilled from `hf_teacher` (which must not be trained): cfg, summary, stdout."""
  cfg = Config(task="sst2", mode="distill", glue_dir=str(glue), teacher_ckpt=str(hf_teacher),
               workdir=str(tmp_path_factory.mktemp("distilled")), **RUN)
  stdout = io.StringIO()
  with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout):
    patch.setattr(train, "train_teacher", _no_teacher_training)
    summary = train.run(cfg)
  return cfg, summary, stdout.getvalue()


@pytest.mark.slow  # a run through train.run
def test_hf_teacher_is_used_as_it_is(distilled, hf_teacher):
  transformers = pytest.importorskip("transformers")
  cfg, summary, stdout = distilled
  assert not (pathlib.Path(cfg.workdir) / "teacher").exists()
  assert summary["teacher_ckpt"] == str(hf_teacher)
  shown = [line for line in stdout.splitlines() if "(its own head, not fine-tuned) dev:" in line]
  assert len(shown) == 1 and stdout.index(shown[0]) < stdout.index("distilling"), stdout
  # The teacher's dev logits, as distillation computes them, are transformers' own.
  ctx = context.build_context(cfg, need_train=False)
  config, params, _, _ = train.load_or_train_teacher(ctx)
  dev = ctx.dev["dev"]
  ours = evaluation.predict(ctx, BertClassifier(config), sharding.put_tree(ctx.mesh, params), dev)
  reference = transformers.AutoModelForSequenceClassification.from_pretrained(str(hf_teacher))
  want = _torch_logits(reference.eval(), dev.input_ids, dev.attention_mask, dev.token_type_ids)
  assert len(dev) == 32 and len(set(dev.attention_mask.sum(1))) > 10  # real, varied sentences
  np.testing.assert_allclose(ours, want, atol=1e-4, rtol=0)
  assert summary["teacher_dev"]["accuracy"] == pytest.approx(np.mean(want.argmax(-1) == dev.labels))


@pytest.mark.slow  # a run through train.run
def test_exported_student_runs_in_transformers(distilled):
  transformers = pytest.importorskip("transformers")
  cfg, _, _ = distilled
  final = pathlib.Path(cfg.workdir) / "final"
  hf_dir = final / "hf"
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
  reference = transformers.AutoModelForSequenceClassification.from_pretrained(str(hf_dir)).eval()
  task = data_lib.resolve_task(cfg)
  examples = data_lib.load_split(cfg.replace(eval_size=16), task, "dev")
  assert len(examples) == 16
  theirs = tokenizer([text for (text,) in examples.texts], padding="max_length", truncation=True,
                     max_length=cfg.max_seq_len, return_tensors="np")
  ours = pipeline.tokenize(examples, pipeline.load_tokenizer(hf_dir), cfg.max_seq_len)
  np.testing.assert_array_equal(theirs["input_ids"], ours.input_ids)
  np.testing.assert_array_equal(theirs["attention_mask"], ours.attention_mask)
  want = _torch_logits(reference, theirs["input_ids"], theirs["attention_mask"],
                       theirs["token_type_ids"])
  config, params, _ = checkpoints.load_exported(final)
  model = BertClassifier(dataclasses.replace(config, dropout_rate=0.0))
  logits = np.asarray(jax.jit(model.apply)({"params": params}, ours.input_ids, ours.attention_mask,
                                           ours.token_type_ids))
  np.testing.assert_allclose(logits, want, atol=1e-4, rtol=0)
  assert np.ptp(want[:, 1] - want[:, 0]) > 1e-2  # the sentences get different logits
  # transformers' label names are the task's.
  assert reference.config.problem_type == "single_label_classification"
  assert [reference.config.id2label[i] for i in want.argmax(-1)] == \
      [task.label_names[i] for i in logits.argmax(-1)]
  assert set(reference.config.id2label.values()) == set(task.label_names)


def _tiny_hf_classifier(path: pathlib.Path, minilm_dir: pathlib.Path, labels: int) -> pathlib.Path:
  """A random 2x32 BertForSequenceClassification with MiniLM's tokenizer (vocabulary 30522)."""
  _save_hf(path, tiny(labels=labels, vocab=30522), classifier=True)
  for name in hf_io.TOKENIZER_FILES:
    shutil.copy(minilm_dir / name, path / name)
  return path


@pytest.mark.slow  # a run through train.run
def test_teacher_dir_with_a_head_is_fine_tuned_with_a_note(glue, tmp_path, minilm_dir, capsys):
  teacher = _tiny_hf_classifier(tmp_path / "bert", minilm_dir, labels=3)
  workdir = tmp_path / "teacher"
  cfg = Config(task="sst2", mode="train_teacher", teacher=str(teacher), glue_dir=str(glue),
               workdir=str(workdir), teacher_num_epochs=1.0,
               **{**RUN, "max_seq_len": 16, "train_size": 16, "eval_size": 16})
  train.run(cfg)
  notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
  assert len(notes) == 1, notes
  assert "3-output classifier head" in notes[0] and "discarded" in notes[0]
  assert f"--teacher_ckpt={teacher}" in notes[0]
  # The fine-tuned teacher is exported for transformers too, with the task's labels.
  exported = json.loads((workdir / "final" / "hf" / "config.json").read_text())
  assert exported["id2label"] == {"0": "0", "1": "1"}
  assert hf_io.head_size(workdir / "final" / "hf") == 2


@pytest.mark.slow  # a run through train.run
def test_hf_teacher_with_another_label_count_is_a_user_error(glue, tmp_path, minilm_dir):
  teacher = _tiny_hf_classifier(tmp_path / "bert", minilm_dir, labels=3)
  cfg = Config(task="sst2", mode="distill", teacher_ckpt=str(teacher), glue_dir=str(glue),
               workdir=str(tmp_path / "run"), **{**RUN, "max_seq_len": 16})
  with pytest.raises(UserError) as info:
    train.run(cfg)
  assert_one_line(info, "3 labels", "sst2 has 2")


@pytest.mark.slow  # a run through train.run
def test_hf_teacher_with_another_vocabulary_than_the_student_is_a_user_error(glue, tmp_path,
                                                                             minilm_dir):
  teacher = _tiny_hf_classifier(tmp_path / "bert", minilm_dir, labels=2)
  spec = json.loads((teacher / "tokenizer.json").read_text())
  vocab = spec["model"]["vocab"]
  vocab["mvoie"] = vocab.pop("movie")  # same size, one token differs
  (teacher / "tokenizer.json").write_text(json.dumps(spec))
  cfg = Config(task="sst2", mode="distill", teacher_ckpt=str(teacher), glue_dir=str(glue),
               workdir=str(tmp_path / "run"), **{**RUN, "max_seq_len": 16})
  with pytest.raises(UserError) as info:
    train.run(cfg)
  assert_one_line(info, "different vocabularies", f"--teacher={teacher}")
  assert not (tmp_path / "run").exists()  # refused before anything is written
