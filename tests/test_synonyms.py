"""Synonym replacement (`--aug=synonym`): real synonyms, text kept otherwise, the SST-2 shift."""

import csv
import math

import numpy as np
import pytest

from augpro_jax import synonyms
from augpro_jax.errors import UserError

_SKIP = "WordNet unavailable; run `bash scripts/install_wordnet.sh` first: {}"


@pytest.fixture(scope="module")
def table():
  try:
    return synonyms.load_wordnet()
  except UserError as exc:
    pytest.skip(_SKIP.format(exc))


@pytest.fixture(scope="module")
def sst2(glue):
  """The first 500 SST-2 train sentences, as 1-field examples."""
  with open(glue / "SST-2" / "train.tsv", encoding="utf-8", newline="") as f:
    rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
  return [(row["sentence"],) for row in rows[:500]]


def _words_and_separators(text):
  parts = synonyms._WORD_RE.split(text)  # pylint: disable=protected-access
  return parts[1::2], parts[0::2]


def _case_pattern(word):
  return "lower" if word.islower() else "upper" if word.isupper() else "title"


def _check_replacement(table, original, new):
  """Only whole words changed, each to a synonym with the same case; returns the change count."""
  old_words, old_seps = _words_and_separators(original)
  new_words, new_seps = _words_and_separators(new)
  assert new_seps == old_seps, (original, new)  # whitespace and punctuation kept byte for byte
  assert len(new_words) == len(old_words)
  changed = 0
  for old, word in zip(old_words, new_words):
    if word == old:
      continue
    changed += 1
    assert word.lower() in synonyms.synonyms(table, old), (old, word)
    assert word.lower() != old.lower()
    assert _case_pattern(word) == _case_pattern(old), (old, word)
  return changed


def test_synonyms_of_a_word(table):
  film = synonyms.synonyms(table, "movie")
  assert "film" in film and "movie" not in film
  assert synonyms.synonyms(table, "Movie") == film  # looked up lower-cased
  assert synonyms.synonyms(table, "movie") is film  # cached
  for word in ("movie", "funny", "dull", "running", "movies"):
    found = synonyms.synonyms(table, word)
    assert found, word
    assert len(set(found)) == len(found)
    assert all(s.isalpha() and s.islower() and s not in synonyms.STOP_WORDS for s in found)
    assert word not in found
  assert "movie" not in synonyms.synonyms(table, "movies")  # a base form is not a synonym
  # Function words, contraction fragments, 1-letter and non-alphabetic words have none.
  for word in ("the", "a", "it", "be", "in", "ca", "re", "s", "n't", "x", "3d", "clichés"):
    assert synonyms.synonyms(table, word) == (), word


def test_lexnames_are_right(table):
  # Debian's wordnet-base lacks `lexnames`; the reader then uses ours, which must match WordNet's.
  assert table.reader.synset("dog.n.01").lexname() == "noun.animal"
  assert table.reader.synset("run.v.01").lexname() == "verb.motion"
  assert table.reader.synset("good.a.01").lexname() == "adj.all"


def test_replaced_words_are_synonyms_and_the_rest_is_kept(table):
  text = "The movie was GOOD, but the Acting felt dull...  really!\n(3 of 10; it's so)"
  for seed in range(20):
    new, changed, eligible = synonyms.replace_synonyms(text, 1.0, np.random.default_rng(seed),
                                                       table)
    assert eligible >= 5
    assert changed == eligible == _check_replacement(table, text, new)
    assert new.endswith("!\n(3 of 10; it's so)")  # no eligible word there
  same, changed, eligible = synonyms.replace_synonyms(text, 0.0, np.random.default_rng(0), table)
  assert same == text and changed == 0 and eligible > 0


def test_replacements_on_sst2(table, sst2):
  new, shift = synonyms.augment_texts(sst2, 0.5, np.random.default_rng(0), table)
  assert len(new) == len(sst2) and shift.dtype == np.float32 and shift.shape == (len(sst2),)
  for (original,), (augmented,), s in zip(sst2, new, shift):
    changed = _check_replacement(table, original, augmented)
    _, _, eligible = synonyms.replace_synonyms(original, 0.0, np.random.default_rng(0), table)
    if eligible == 0:
      assert math.isnan(s) and augmented == original
    else:
      assert changed == round(float(s) * eligible)


@pytest.mark.parametrize("degree", [0.1, 0.3, 0.5])
def test_measured_shift_on_sst2(table, sst2, degree):
  shifts = []
  for seed in range(4):  # 4 augmented copies of each sentence, like --aug_copies=4
    _, shift = synonyms.augment_texts(sst2, degree, np.random.default_rng(seed), table)
    shifts.append(shift)
  shifts = np.stack(shifts)
  has_eligible = ~np.isnan(shifts[0])
  assert np.array_equal(has_eligible, ~np.isnan(shifts).any(0))
  assert has_eligible.mean() > 0.9
  mean = float(shifts[:, has_eligible].mean())
  print(f"shift degree {degree}: mean measured shift {mean:.4f}")
  assert abs(mean - degree) <= 0.02, mean
  # Each example changes floor(p * n) or ceil(p * n) of its n eligible words.
  for (text,), s in zip(sst2, shifts[0]):
    _, _, n = synonyms.replace_synonyms(text, degree, np.random.default_rng(0), table)
    if n:
      assert math.floor(degree * n) <= round(float(s) * n) <= math.ceil(degree * n)


def test_nearest_rounding_changes_exactly_round_p_n(table, sst2):
  for (text,) in sst2[:100]:
    _, changed, n = synonyms.replace_synonyms(text, 0.3, np.random.default_rng(0), table,
                                              rounding="nearest")
    assert changed == math.floor(0.3 * n + 0.5)


def test_deterministic_given_the_seed(table, sst2):
  texts = sst2[:100]
  first = synonyms.augment_texts(texts, 0.3, np.random.default_rng(7), table)
  again = synonyms.augment_texts(texts, 0.3, np.random.default_rng(7), table)
  other = synonyms.augment_texts(texts, 0.3, np.random.default_rng(8), table)
  assert first[0] == again[0]
  np.testing.assert_array_equal(first[1], again[1])
  assert first[0] != other[0]


def test_sentence_pairs_share_one_budget(table):
  pairs = [("A charming and funny movie.", "The film was dull."), ("Of the.", "It is.")]
  new, shift = synonyms.augment_texts(pairs, 1.0, np.random.default_rng(0), table)
  assert all(len(fields) == 2 for fields in new)
  changed = sum(_check_replacement(table, o, n) for o, n in zip(pairs[0], new[0]))
  eligible = sum(synonyms.replace_synonyms(t, 1.0, np.random.default_rng(0), table)[2]
                 for t in pairs[0])
  assert changed == eligible and shift[0] == 1.0
  assert new[1] == pairs[1] and math.isnan(shift[1])  # nothing eligible: unchanged, NaN
  _, half = synonyms.augment_texts(pairs[:1], 0.5, np.random.default_rng(0), table)
  assert abs(half[0] - 0.5) <= 1.0 / eligible


def _assert_one_line_user_error(exc_info, *needles):
  message = str(exc_info.value)
  assert "\n" not in message and message.strip() == message
  for needle in needles:
    assert needle in message, message


def test_missing_wordnet_dir_is_a_user_error(tmp_path):
  with pytest.raises(UserError) as exc_info:
    synonyms.load_wordnet(str(tmp_path / "nope"))
  _assert_one_line_user_error(exc_info, "nope", "apt-get install wordnet-base")
  (tmp_path / "index.noun").write_text("")
  with pytest.raises(UserError) as exc_info:
    synonyms.load_wordnet(str(tmp_path))
  _assert_one_line_user_error(exc_info, "not a WordNet database", "data.noun")


def test_bad_wordnet_dir_env_is_a_user_error(tmp_path, monkeypatch):
  monkeypatch.setenv("WORDNET_DIR", str(tmp_path))
  with pytest.raises(UserError) as exc_info:
    synonyms.load_wordnet()
  _assert_one_line_user_error(exc_info, "$WORDNET_DIR", "index.noun")


def test_no_wordnet_anywhere_is_a_user_error(tmp_path, monkeypatch):
  import nltk  # pylint: disable=g-import-not-at-top

  def not_found(resource, *args, **kwargs):
    raise LookupError(f"Resource {resource} not found.\n  (a multi-line NLTK message)")

  monkeypatch.delenv("WORDNET_DIR", raising=False)
  monkeypatch.setattr(synonyms, "DEBIAN_WORDNET_DIR", str(tmp_path))
  monkeypatch.setattr(nltk.data, "find", not_found)
  with pytest.raises(UserError) as exc_info:
    synonyms.load_wordnet()
  _assert_one_line_user_error(exc_info, "WordNet not found", "apt-get install wordnet-base",
                              "--wordnet_dir", "nltk.download('wordnet')")


def test_files_nltk_refuses_are_a_user_error(table, tmp_path):
  # NLTK >= 3.10 will not read a group-writable corpus file; that must be one clear line too.
  import shutil  # pylint: disable=g-import-not-at-top
  for name in synonyms._REQUIRED_FILES:  # pylint: disable=protected-access
    shutil.copy(f"{table.directory}/{name}", tmp_path / name)
  (tmp_path / "data.noun").chmod(0o664)
  with pytest.raises(UserError) as exc_info:
    synonyms.load_wordnet(str(tmp_path))
  _assert_one_line_user_error(exc_info, "could not load WordNet", "data.noun")
