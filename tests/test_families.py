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
    "roberta": ("bpe", "RobertaConfig", "RobertaForSequenceClassification",
                "RobertaTokenizerFast"),
    "xlm-roberta": ("unigram", "XLMRobertaConfig", "XLMRobertaForSequenceClassification",
                    "XLMRobertaTokenizerFast"),
    "distilbert": ("wordpiece", "DistilBertConfig", "DistilBertForSequenceClassification",
                   "DistilBertTokenizerFast"),
    "electra": ("wordpiece", "ElectraConfig", "ElectraForSequenceClassification",
                "ElectraTokenizerFast"),
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


def _train_tokenizer(kind: str, corpus: list[str]):
  """A small tokenizer of `kind` trained on `corpus`, with its family's specials and template."""
  from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
  from tokenizers import trainers  # pylint: disable=import-outside-toplevel
  if kind == "wordpiece":
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=2000,
                                                              special_tokens=_BERT_SPECIALS))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
  elif kind == "bpe":  # byte-level, as RoBERTa
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=2000, special_tokens=_ROBERTA_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.RobertaProcessing(sep=("</s>", 2), cls=("<s>", 0))
  else:  # Unigram with the SentencePiece word marker, as XLM-RoBERTa
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(corpus, trainers.UnigramTrainer(
        vocab_size=2000, special_tokens=_ROBERTA_SPECIALS, unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)])
  return tok


def _hf_config(family: str, vocab_size: int):
  transformers = pytest.importorskip("transformers")
  kind, config_class = FAMILIES[family][:2]
  common = dict(vocab_size=vocab_size, num_labels=2, initializer_range=0.3,
                max_position_embeddings=SEQ + 2)
  if family == "distilbert":
    return transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                         pad_token_id=0, **common)
  extra = {"embedding_size": 16} if family == "electra" else {}
  pad = 1 if kind != "wordpiece" else 0
  return getattr(transformers, config_class)(
      hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
      pad_token_id=pad, bos_token_id=0, eos_token_id=2, **extra, **common)


def build_family_dir(family: str, path: pathlib.Path, glue: pathlib.Path) -> pathlib.Path:
  """A random tiny `family` classifier and its trained tokenizer, saved as transformers does."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  kind, _, model_class, tokenizer_class = FAMILIES[family]
  tok = _train_tokenizer(kind, _corpus(glue))
  specials = (dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", sep_token="</s>",
                   pad_token="<pad>", cls_token="<s>", mask_token="<mask>")
              if kind != "wordpiece" else
              dict(unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
                   mask_token="[MASK]"))
  wrapped = getattr(transformers, tokenizer_class)(tokenizer_object=tok, **specials)
  wrapped.model_max_length = SEQ
  wrapped.save_pretrained(str(path))
  torch.manual_seed(0)
  model = getattr(transformers, model_class)(_hf_config(family, tok.get_vocab_size())).eval()
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
