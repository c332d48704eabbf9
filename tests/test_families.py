"""Model families beside BERT (families, model, hf_io): for each, a tiny random classifier built
with transformers (PyTorch) and a tokenizer trained here with `tokenizers`, saved as a Hugging
Face directory; our logits must be transformers' on real SST-2 and RTE (pair) sentences."""

import csv
import json
import pathlib

import jax
import numpy as np
import pytest

from augpro_jax import hf_io
from augpro_jax import input_pipeline as pipeline
from augpro_jax.errors import UserError
from augpro_jax.model import BertClassifier
from test_model import assert_one_line

SEQ = 32
# family -> (tokenizer model, transformers config class, model class, tokenizer class)
FAMILIES = {
    "bert": ("wordpiece", "BertConfig", "BertForSequenceClassification", "BertTokenizerFast"),
    "roberta": ("bpe", "RobertaConfig", "RobertaForSequenceClassification",
                "RobertaTokenizerFast"),
    "xlm-roberta": ("unigram", "XLMRobertaConfig", "XLMRobertaForSequenceClassification",
                    "XLMRobertaTokenizerFast"),
    "distilbert": ("wordpiece", "DistilBertConfig", "DistilBertForSequenceClassification",
                   "DistilBertTokenizerFast"),
    "electra": ("wordpiece", "ElectraConfig", "ElectraForSequenceClassification",
                "ElectraTokenizerFast"),
    "deberta-v2": ("spm", "DebertaV2Config", "DebertaV2ForSequenceClassification",
                   "DebertaV2TokenizerFast"),
}
_BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4: pad is 1


def _rows(glue: pathlib.Path, task: str, count: int) -> list[tuple[str, ...]]:
  with open(glue / task / "dev.tsv", encoding="utf-8") as f:
    rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
  rows = rows[:count] if task == "SST-2" else rows
  if task == "SST-2":
    return [(row["sentence"],) for row in rows]
  pairs = [(row["sentence1"], row["sentence2"]) for row in rows]
  # RTE premises are long: its shortest pairs, so that some rows are padded, the rest truncated.
  return sorted(pairs, key=lambda pair: len(" ".join(pair)))[:count // 2] + pairs[:count // 2]


def _corpus(glue: pathlib.Path) -> list[str]:
  return [text for row in _rows(glue, "SST-2", 300) + _rows(glue, "RTE", 40) for text in row]


_BERT_TEMPLATE = dict(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                      special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
_XLMR_TEMPLATE = dict(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                      special_tokens=[("<s>", 0), ("</s>", 2)])


def _train_tokenizer(kind: str, corpus: list[str]):
  """A small tokenizer of `kind` trained on `corpus`, with its family's specials and template:
  wordpiece (BERT), bpe (byte-level, RoBERTa), unigram (XLM-R), spm (Unigram, DeBERTa-v3)."""
  from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
  from tokenizers import trainers  # pylint: disable=import-outside-toplevel
  specials = _ROBERTA_SPECIALS if kind in ("bpe", "unigram") else _BERT_SPECIALS
  if kind == "wordpiece":
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=2000, special_tokens=specials)
  elif kind == "bpe":
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  else:  # Unigram with the SentencePiece word marker
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=2000, special_tokens=specials,
                                      unk_token=specials[3 if kind == "unigram" else 1])
  tok.train_from_iterator(corpus, trainer)
  if kind == "bpe":
    tok.post_processor = processors.RobertaProcessing(sep=("</s>", 2), cls=("<s>", 0))
  else:
    tok.post_processor = processors.TemplateProcessing(
        **(_XLMR_TEMPLATE if kind == "unigram" else _BERT_TEMPLATE))
  return tok


def _hf_config(family: str, vocab_size: int, **overrides):
  transformers = pytest.importorskip("transformers")
  kind, config_class = FAMILIES[family][:2]
  common = dict(vocab_size=vocab_size, num_labels=2, initializer_range=0.3,
                max_position_embeddings=SEQ + 2)
  if family == "distilbert":
    return transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                         pad_token_id=0, **common)
  extra = {"embedding_size": 16} if family == "electra" else {}
  if family == "deberta-v2":  # as DeBERTa-v3: relative buckets, shared keys, no absolute positions
    extra = dict(relative_attention=True, position_buckets=8, max_relative_positions=-1,
                 pos_att_type="p2c|c2p", share_att_key=True, norm_rel_ebd="layer_norm",
                 position_biased_input=False, type_vocab_size=0, embedding_size=16)
    extra.update(overrides)
  pad = 1 if kind in ("bpe", "unigram") else 0
  return getattr(transformers, config_class)(
      hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
      pad_token_id=pad, bos_token_id=0, eos_token_id=2, **extra, **common)


def build_family_dir(family: str, path: pathlib.Path, glue: pathlib.Path,
                     **overrides) -> pathlib.Path:
  """A random tiny `family` classifier and its trained tokenizer, saved as transformers does."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  kind, _, model_class, tokenizer_class = FAMILIES[family]
  tok = _train_tokenizer(kind, _corpus(glue))
  specials = (dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", sep_token="</s>",
                   pad_token="<pad>", cls_token="<s>", mask_token="<mask>")
              if kind in ("bpe", "unigram") else
              dict(unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
                   mask_token="[MASK]"))
  wrapped = getattr(transformers, tokenizer_class)(tokenizer_object=tok, **specials)
  wrapped.model_max_length = SEQ
  wrapped.save_pretrained(str(path))
  torch.manual_seed(0)
  config = _hf_config(family, tok.get_vocab_size(), **overrides)
  model = getattr(transformers, model_class)(config).eval()
  model.save_pretrained(str(path))
  return path


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_dir(request, glue, tmp_path_factory):
  family = request.param
  return family, build_family_dir(family, tmp_path_factory.mktemp(family), glue)


def _torch_logits(model_dir: pathlib.Path, texts: list[tuple[str, ...]]):
  """transformers' own tokenizer and model on `texts`: (encoding, logits [N, 2])."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
  model = transformers.AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
  columns = list(zip(*texts))
  encoding = tokenizer(*columns, padding="max_length", truncation=True, max_length=SEQ,
                       return_tensors="pt")
  with torch.no_grad():
    return encoding, model(**encoding).logits.numpy()


def _our_logits(model_dir: pathlib.Path, texts: list[tuple[str, ...]]):
  """Our tokenizer pipeline and model on `texts`: (ids, mask, logits [N, 2])."""
  config, params, _ = hf_io.load_classifier(model_dir, task_name="sst2", num_labels=2)
  ids, mask, types, _ = pipeline.encode_texts(pipeline.load_tokenizer(model_dir), texts, SEQ)
  logits = jax.jit(BertClassifier(config).apply)({"params": params}, ids, mask, types)
  return ids, mask, np.asarray(logits)


@pytest.mark.parametrize("task", ["SST-2", "RTE"])
def test_logits_equal_transformers(family_dir, glue, task):
  family, model_dir = family_dir
  texts = _rows(glue, task, 12)
  encoding, want = _torch_logits(model_dir, texts)
  ids, mask, logits = _our_logits(model_dir, texts)
  # The same tokens (the family's specials and pair template) and padding.
  np.testing.assert_array_equal(ids, encoding["input_ids"].numpy())
  np.testing.assert_array_equal(mask, encoding["attention_mask"].numpy())
  assert 0 < mask.sum(1).min() < SEQ  # some rows padded
  np.testing.assert_allclose(logits, want, atol=1e-4, rtol=0)
  assert np.ptp(want[:, 1] - want[:, 0]) > 0.1  # different sentences, different logits
  assert json.loads((model_dir / "config.json").read_text())["model_type"] == family


@pytest.mark.parametrize("variant", [
    dict(share_att_key=False, position_biased_input=True, type_vocab_size=2, embedding_size=32,
         position_buckets=-1, max_relative_positions=16, norm_rel_ebd="none"),
    dict(pos_att_type="c2p", position_buckets=16, max_relative_positions=64),
    dict(relative_attention=False, position_biased_input=True),
    dict(conv_kernel_size=5, conv_groups=2, conv_act="gelu"),
], ids=["own_position_projections", "c2p_only", "no_relative_attention", "conv"])
def test_deberta_variants_give_transformers_logits(glue, tmp_path, variant):
  """DeBERTa-v2's other switches: separate pos_key/pos_query projections, absolute positions and
  token types, unbucketed distances, c2p alone, no relative attention, the convolution of the
  xlarge/xxlarge models (here wider and in 2 groups; exported too: its config and weights
  round-trip through transformers)."""
  model_dir = build_family_dir("deberta-v2", tmp_path / "deberta", glue, **variant)
  texts = _rows(glue, "RTE", 8)
  encoding, want = _torch_logits(model_dir, texts)
  ids, _, logits = _our_logits(model_dir, texts)
  np.testing.assert_array_equal(ids, encoding["input_ids"].numpy())
  np.testing.assert_allclose(logits, want, atol=1e-4, rtol=0)
  assert np.ptp(want[:, 1] - want[:, 0]) > 0.1
  if "conv_kernel_size" in variant:
    config, params, _ = hf_io.load_classifier(model_dir, task_name="rte", num_labels=2)
    assert params["encoder"]["conv"]["kernel"].shape == (
        variant["conv_kernel_size"], 32 // variant.get("conv_groups", 1), 32)
    out = hf_io.write_hf(tmp_path / "hf", config, params, task_labels=["0", "1"],
                         tokenizer_dir=model_dir)
    np.testing.assert_allclose(_torch_logits(out, texts)[1], want, atol=1e-5, rtol=0)


def test_bfloat16_stays_close_to_float32(family_dir, glue):
  family, model_dir = family_dir
  texts = _rows(glue, "RTE", 6)
  ids, mask, types, _ = pipeline.encode_texts(pipeline.load_tokenizer(model_dir), texts, SEQ)
  logits = {}
  for dtype in ("float32", "bfloat16"):
    config, params, _ = hf_io.load_classifier(model_dir, task_name="rte", num_labels=2,
                                              dtype=dtype)
    logits[dtype] = np.asarray(jax.jit(BertClassifier(config).apply)(
        {"params": params}, ids, mask, types))
  assert logits["bfloat16"].dtype == np.float32
  # Within 10% of the logits' scale: bfloat16 keeps 8 bits of mantissa, so a few percent through
  # the layers (the trained tokenizer, hence the model, varies a little between runs); a wrong
  # cast or a dropped term is of the order of the logits themselves.
  error = np.abs(logits["bfloat16"] - logits["float32"]).max()
  assert 0 < error < 0.1 * np.abs(logits["float32"]).max(), (family, error)


def test_export_round_trip(family_dir, glue, tmp_path):
  """write_hf of a loaded classifier is that family's, with the same logits in transformers."""
  family, model_dir = family_dir
  config, params, _ = hf_io.load_classifier(model_dir, task_name="sst2", num_labels=2)
  out = hf_io.write_hf(tmp_path / "hf", config, params, task_labels=["0", "1"],
                       tokenizer_dir=model_dir)
  texts = _rows(glue, "RTE", 6)
  _, want = _torch_logits(model_dir, texts)
  encoding, got = _torch_logits(out, texts)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
  raw = json.loads((out / "config.json").read_text())
  assert raw["model_type"] == family and raw["architectures"] == [FAMILIES[family][2]]


# ----------------------------------------------------------------------------------------------
# Augmentations on each family's vocabulary and table.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["augpro_mix", "augpro_fgsm", "knn"])
def test_augmentations_measure_their_shift_and_keep_specials(family_dir, glue, method):
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from augpro_jax import augment, mixing  # pylint: disable=import-outside-toplevel
  _, model_dir = family_dir
  tokenizer = pipeline.load_tokenizer(model_dir)
  ids, mask, _, _ = pipeline.encode_texts(tokenizer, _rows(glue, "SST-2", 512), SEQ)
  _, params, _ = hf_io.load_classifier(model_dir, task_name="sst2", num_labels=2)
  table = params["embeddings"]["word_embeddings"]["embedding"]  # [V, emb] (ELECTRA: 16 wide)
  is_special, is_candidate = pipeline.vocab_masks(tokenizer, tokenizer.get_vocab_size())
  specials = [tokenizer.token_to_id(t) for t in ("<s>", "</s>", "<pad>", "[CLS]", "[SEP]", "[PAD]")
              if tokenizer.token_to_id(t) is not None]
  assert len(specials) == 3 and is_special[specials].all() and not is_candidate[specials].any()
  ids, mask = jnp.asarray(ids), jnp.asarray(mask)
  n = ids.shape[0]
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(11), i))(jnp.arange(n))
  eligible = augment.eligible_positions(ids, mask, jnp.asarray(is_special))
  common = dict(shift_degree=0.3, metric="l2", candidate_mask=jnp.asarray(is_candidate),
                chunk_size=4096)
  if method == "augpro_mix":
    lam = mixing.example_lambdas(keys, 0.4, folded=True)
    new = augment.augpro_mix(keys, ids, eligible, jnp.roll(jnp.arange(n), 1), lam, table,
                             exclude_original=True, **common)
  elif method == "augpro_fgsm":
    grad = jax.random.normal(jax.random.PRNGKey(3), ids.shape + (table.shape[1],))
    new = augment.augpro_perturb(keys, ids, eligible, augment.fgsm_delta(grad, 0.1), table,
                                 exclude_original=True, **common)
  else:
    new = augment.knn_replace(keys, ids, eligible, table, k=10, **common)
  shift, ok = augment.measured_shift(ids, new, eligible)
  assert abs(float(jnp.sum(jnp.where(ok, shift, 0)) / jnp.sum(ok)) - 0.3) <= 0.01
  new, ids = np.asarray(new), np.asarray(ids)
  assert not is_special[new[new != ids]].any()  # no special token produced
  np.testing.assert_array_equal(new[~np.asarray(eligible)], ids[~np.asarray(eligible)])


def test_word_markers_of_each_tokenizer(family_dir):
  """The profile's "continuation" reads the tokenizer's own marker: ##, or no Ġ / ▁ word start."""
  family, model_dir = family_dir
  tokenizer = pipeline.load_tokenizer(model_dir)
  is_continuation, is_non_ascii = pipeline.token_flags(tokenizer, tokenizer.get_vocab_size())
  vocab = tokenizer.get_vocab()
  kind = FAMILIES[family][0]
  starts = {"bpe": "\u0120", "unigram": "\u2581", "spm": "\u2581"}.get(kind)
  for token, index in vocab.items():
    if kind == "wordpiece":
      assert is_continuation[index] == token.startswith("##"), token
    elif token not in _ROBERTA_SPECIALS + _BERT_SPECIALS:
      assert is_continuation[index] == (not token.startswith(starts)), token
  if kind == "bpe":  # byte-level: Ġ is the space byte, ASCII
    assert not is_non_ascii[vocab["\u0120the"]] and is_continuation.sum() > 100


# ----------------------------------------------------------------------------------------------
# Runs: predict with the directory, distillation from it, its export.
# ----------------------------------------------------------------------------------------------

RUN = dict(task="sst2", max_seq_len=SEQ, batch_size=8, eval_batch_size=16, num_train_steps=2,
           train_size=32, eval_size=16, log_every=1, checkpoint_every=0, progress=False)


@pytest.fixture(scope="module")
def distilled_family(family_dir, glue, tmp_path_factory):
  """A 1-layer student of the family distilled (augpro_mix) from its directory: (workdir, summary)."""
  from augpro_jax import train  # pylint: disable=import-outside-toplevel
  from augpro_jax.config import Config  # pylint: disable=import-outside-toplevel
  _, model_dir = family_dir
  workdir = tmp_path_factory.mktemp("distilled")
  cfg = Config(mode="distill", glue_dir=str(glue), teacher=str(model_dir),
               teacher_ckpt=str(model_dir), aug="augpro_mix", student_layers=1, student_hidden=32,
               student_heads=4, student_intermediate=64, workdir=str(workdir), **RUN)
  return workdir, train.run(cfg)


@pytest.mark.slow  # two distillation runs through train.run
@pytest.mark.parametrize("family_dir", ["deberta-v2"], indirect=True)
def test_a_preempted_run_resumes_to_the_same_student(family_dir, distilled_family, glue, tmp_path,
                                                     monkeypatch):
  """Stopped by SIGTERM after step 1 and started again, the run ends bit for bit where the
  uninterrupted one did. DeBERTa stands for the families: it has the most state outside the
  layers (the relative table, the convolution's place) and a tokenizer other than BERT's."""
  from augpro_jax import interrupts, train  # pylint: disable=import-outside-toplevel
  from augpro_jax.config import Config  # pylint: disable=import-outside-toplevel
  _, model_dir = family_dir
  cfg = Config(mode="distill", glue_dir=str(glue), teacher=str(model_dir),
               teacher_ckpt=str(model_dir), aug="augpro_mix", student_layers=1, student_hidden=32,
               student_heads=4, student_intermediate=64, workdir=str(tmp_path),
               **{**RUN, "checkpoint_every": 1})
  interrupts._asked.clear()  # pylint: disable=protected-access
  monkeypatch.setenv("AUGPRO_JAX_SIGNAL_AT", "step:1")
  with pytest.raises(interrupts.Preempted):
    train.run(cfg)
  monkeypatch.delenv("AUGPRO_JAX_SIGNAL_AT")
  summary = train.run(cfg)
  assert summary["resumed_from_step"] == 1
  assert summary["student_params_sha256"] == distilled_family[1]["student_params_sha256"]


@pytest.mark.slow  # a distillation run through train.run
def test_distilled_student_exports_the_family(family_dir, distilled_family, glue):
  from augpro_jax import checkpoints  # pylint: disable=import-outside-toplevel
  family, _ = family_dir
  workdir, summary = distilled_family
  hf_dir = workdir / "final" / "hf"
  raw = json.loads((hf_dir / "config.json").read_text())
  assert raw["model_type"] == family and raw["architectures"] == [FAMILIES[family][2]]
  texts = _rows(glue, "SST-2", 16)
  encoding, want = _torch_logits(hf_dir, texts)
  config, params, _ = checkpoints.load_exported(workdir / "final")
  ids, mask, types, _ = pipeline.encode_texts(pipeline.load_tokenizer(hf_dir), texts, SEQ)
  np.testing.assert_array_equal(ids, encoding["input_ids"].numpy())
  logits = jax.jit(BertClassifier(config).apply)({"params": params}, ids, mask, types)
  np.testing.assert_allclose(np.asarray(logits), want, atol=1e-4, rtol=0)
  # The run augmented at the requested degree and profiled its projections.
  assert summary["measured_shift"] == pytest.approx(0.3, abs=0.05)
  assert summary["projection_profile"]["changed_tokens"] > 0


@pytest.mark.slow  # a predict run through train.run
def test_predict_with_the_directory_gives_transformers_probabilities(family_dir, glue, tmp_path):
  from augpro_jax import train  # pylint: disable=import-outside-toplevel
  from augpro_jax.config import Config  # pylint: disable=import-outside-toplevel
  _, model_dir = family_dir
  texts = _rows(glue, "SST-2", 8)
  (tmp_path / "in.tsv").write_text("sentence\n" + "".join(t + "\n" for (t,) in texts))
  out = tmp_path / "out.jsonl"
  train.run(Config(mode="predict", teacher_ckpt=str(model_dir), predict_file=str(tmp_path / "in.tsv"),
                   predict_out=str(out), glue_dir=str(glue),
                   **{k: v for k, v in RUN.items() if k not in ("train_size", "eval_size")}))
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  _, want = _torch_logits(model_dir, texts)
  want = np.exp(want) / np.exp(want).sum(1, keepdims=True)
  got = np.asarray([[row["probabilities"]["0"], row["probabilities"]["1"]] for row in rows])
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------
# Bad input: one line each.
# ----------------------------------------------------------------------------------------------


def _copy_dir(source: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
  import shutil  # pylint: disable=import-outside-toplevel
  shutil.copytree(source, target)
  return target


@pytest.mark.parametrize("raw, needles", [
    ({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, ["is a decoder (causal language) model", "roberta"]),
    ({"model_type": "bert", "is_decoder": True}, ["is a decoder (causal language) model", "distilbert"]),
    ({"model_type": "t5", "is_encoder_decoder": True}, ["is an encoder-decoder (seq2seq) model", "electra"]),
    ({"model_type": "longformer"}, ["'longformer' is not supported", "bert, roberta"]),
])
def test_decoder_seq2seq_or_unknown_model_type_is_one_line(family_dir, tmp_path, raw, needles):
  _, model_dir = family_dir
  bad = _copy_dir(model_dir, tmp_path / "bad")
  config = json.loads((bad / "config.json").read_text())
  (bad / "config.json").write_text(json.dumps({**config, **raw}))
  for load in (lambda: hf_io.load_classifier(bad, task_name="sst2", num_labels=2),
               lambda: hf_io.load_pretrained(str(bad), num_labels=2)):
    with pytest.raises(UserError) as info:
      load()
    assert_one_line(info, "config.json", *needles)


@pytest.mark.parametrize("raw, needle", [
    ({"conv_kernel_size": 4}, "conv_kernel_size=4: DeBERTa's convolution needs an odd kernel"),
    ({"conv_kernel_size": 3, "conv_groups": 5}, "conv_groups=5 does not divide hidden_size=32"),
    ({"conv_kernel_size": 3, "conv_act": "swish"}, "conv_act='swish' is not supported"),
    ({"pooler_hidden_size": 48}, "pooler_hidden_size=48: DeBERTa with a pooler of another width"),
])
@pytest.mark.parametrize("family_dir", ["deberta-v2"], indirect=True)
def test_unsupported_deberta_config_is_one_line(family_dir, tmp_path, raw, needle):
  model_dir = _copy_dir(family_dir[1], tmp_path / "deberta")
  config = json.loads((model_dir / "config.json").read_text())
  (model_dir / "config.json").write_text(json.dumps({**config, **raw}))
  with pytest.raises(UserError) as info:
    hf_io.load_classifier(model_dir, task_name="rte", num_labels=2)
  assert_one_line(info, needle)


def test_missing_or_wrong_head_is_one_line(family_dir, tmp_path):
  from safetensors.numpy import load_file, save_file  # pylint: disable=import-outside-toplevel
  family, model_dir = family_dir
  weights = load_file(str(model_dir / "model.safetensors"))
  dense, output = {"distilbert": ("pre_classifier", "classifier"),
                   "bert": ("bert.pooler.dense", "classifier"),
                   "deberta-v2": ("pooler.dense", "classifier")}.get(
                       family, ("classifier.dense", "classifier.out_proj"))
  cases = {
      "no_head": ({k: v for k, v in weights.items() if not k.startswith(output)},
                  [f"no classifier head ({output}.weight)", "--teacher="]),
      "no_dense": ({k: v for k, v in weights.items() if not k.startswith(dense + ".")},
                   [f"no weight {dense}.", f"not a {family} checkpoint"]),
      "three_labels": ({**weights, f"{output}.weight": np.zeros((3, 32), np.float32),
                        f"{output}.bias": np.zeros(3, np.float32)}, ["3 labels", "sst2 has 2"]),
      "wide_dense": ({**weights, f"{dense}.weight": np.zeros((32, 48), np.float32)},
                     [f"{dense}.weight has shape [32, 48]"]),
  }
  if family == "bert":  # BERT's pooler is the backbone's: a missing one is initialised, as always
    del cases["no_dense"]
  for name, (state, needles) in cases.items():
    bad = _copy_dir(model_dir, tmp_path / name)
    save_file(state, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(UserError) as info:
      hf_io.load_classifier(bad, task_name="sst2", num_labels=2)
    assert_one_line(info, *needles)


def test_tokenizer_of_another_size_than_the_table_is_one_line(family_dir, glue, tmp_path):
  from augpro_jax import train  # pylint: disable=import-outside-toplevel
  from augpro_jax.config import Config  # pylint: disable=import-outside-toplevel
  _, model_dir = family_dir
  bad = _copy_dir(model_dir, tmp_path / "bad")
  config = json.loads((bad / "config.json").read_text())
  # One row fewer than the tokenizer has tokens: the last token's id would read past the table.
  (bad / "config.json").write_text(json.dumps({**config, "vocab_size": 1999}))
  from safetensors.numpy import load_file, save_file  # pylint: disable=import-outside-toplevel
  weights = load_file(str(bad / "model.safetensors"))
  name = next(k for k in weights if k.endswith("word_embeddings.weight"))
  save_file({**weights, name: weights[name][:1999]}, str(bad / "model.safetensors"),
            metadata={"format": "pt"})
  (tmp_path / "in.tsv").write_text("sentence\na charming film\n")
  with pytest.raises(UserError) as info:
    train.run(Config(mode="predict", teacher_ckpt=str(bad), predict_file=str(tmp_path / "in.tsv"),
                     predict_out=str(tmp_path / "out.jsonl"), glue_dir=str(glue), max_seq_len=SEQ,
                     eval_batch_size=16))
  assert_one_line(info, "2000 tokens", "1999 rows")


def test_a_table_with_more_rows_than_the_tokenizer_has_tokens_is_accepted(family_dir):
  # DeBERTa-v3's table has 128,100 rows for a 128,000-token tokenizer: the spare rows are no
  # token, so no projection may return them; one row too few is refused (see above).
  _, model_dir = family_dir
  tokenizer = pipeline.load_tokenizer(model_dir)
  size = tokenizer.get_vocab_size()
  pipeline.check_vocab_size(tokenizer, size + 100, model_dir)
  with pytest.raises(UserError):
    pipeline.check_vocab_size(tokenizer, size - 1, model_dir)
  _, is_candidate = pipeline.vocab_masks(tokenizer, size + 100)
  assert is_candidate[:size].any() and not is_candidate[size:].any()


@pytest.mark.slow  # a main.py subprocess
def test_unsupported_model_type_from_the_command_line(family_dir, glue, tmp_path):
  from test_cli import assert_one_line_error, run_main  # pylint: disable=import-outside-toplevel
  family, model_dir = family_dir
  if family != "roberta":
    pytest.skip("one family is enough for the command line")
  bad = _copy_dir(model_dir, tmp_path / "bad")
  config = json.loads((bad / "config.json").read_text())
  (bad / "config.json").write_text(json.dumps({**config, "model_type": "longformer"}))
  (tmp_path / "in.tsv").write_text("sentence\na charming film\n")
  result = run_main("--task=sst2", "--mode=predict", f"--teacher_ckpt={bad}",
                    f"--predict_file={tmp_path / 'in.tsv'}",
                    f"--predict_out={tmp_path / 'out.jsonl'}", f"--glue_dir={glue}",
                    env={"HF_HUB_OFFLINE": "1"})
  assert_one_line_error(result, "'longformer' is not supported", "deberta-v2")


# ----------------------------------------------------------------------------------------------
# The benchmark's peers are the family's Hugging Face classifiers.
# ----------------------------------------------------------------------------------------------


def _check_peers(family: str, peers: dict[str, dict]) -> None:
  """Both peers are transformers' classifiers of `family` and trained; DeBERTa-v2 has no Flax
  classifier in transformers: that peer is unavailable, with the reason."""
  torch_class = FAMILIES[family][2]
  assert peers["hf_torch"]["examples_per_sec"] > 0
  assert f"transformers {torch_class}," in peers["hf_torch"]["note"]
  assert peers["hf_torch"]["student_param_delta"] > 0
  if family == "deberta-v2":
    assert peers["hf_flax"]["examples_per_sec"] is None
    assert "no Flax classifier for deberta-v2" in json.dumps(peers["hf_flax"])
  else:
    assert peers["hf_flax"]["examples_per_sec"] > 0
    assert f"transformers Flax{torch_class}," in peers["hf_flax"]["note"]
    assert peers["hf_flax"]["student_param_delta"] > 0


@pytest.mark.slow  # each peer compiles or allocates its models
@pytest.mark.parametrize("family_dir", ["electra", "deberta-v2"], indirect=True)
def test_benchmark_peers_are_the_family(family_dir):
  """`--mode=benchmark --teacher=<dir>` gives the peers our teacher's and student's configs
  (`bench.common.peer_shapes`), so they are transformers' classifiers of the same family and
  shapes (ELECTRA: narrower embeddings)."""
  from augpro_jax import students  # pylint: disable=import-outside-toplevel
  from augpro_jax.bench import common, peers  # pylint: disable=import-outside-toplevel
  from augpro_jax.config import Config  # pylint: disable=import-outside-toplevel
  family, model_dir = family_dir
  teacher, _, _ = hf_io.load_classifier(model_dir, task_name="sst2", num_labels=2)
  cfg = Config(mode="benchmark", batch_size=4, max_seq_len=16, student_layers=1).validate()
  student = students.student_config(cfg, teacher, 2)
  shapes = common.peer_shapes(cfg, teacher, student, 2)
  assert shapes.student_hf["model_type"] == shapes.teacher_hf["model_type"] == family
  assert shapes.student_hf[{"distilbert": "n_layers"}.get(family, "num_hidden_layers")] == 1
  results = {}
  for name, run in peers.PEERS.items():
    try:
      results[name] = run(shapes, steps=1, warmup=1, learning_rate=1e-3)
    except RuntimeError as exc:  # what the benchmark reports as an unavailable peer
      results[name] = {"examples_per_sec": None, "error": str(exc)}
  _check_peers(family, results)
