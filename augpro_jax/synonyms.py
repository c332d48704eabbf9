"""WordNet synonym replacement, the AugPro paper's token-replacement baseline (`--aug=synonym`).

Runs on the host, inside the input pipeline, on raw text (before tokenization), and works offline.

Definition (what docs/design.md "Augmentations" refers to):

- A text is split by `_WORD_RE` into words (runs of letters/digits/underscore, with inner
  apostrophes kept, e.g. "don't", "n't") and the separators between them (whitespace,
  punctuation). Joining the pieces gives back the text exactly; only replaced words change.
- A word is *eligible* if it is ASCII-alphabetic, at least 2 letters, not in `STOP_WORDS`
  (articles, pronouns, auxiliaries, prepositions, conjunctions and contraction fragments such as
  "ca" in "ca n't", which WordNet would otherwise read as calcium), written in lower, Title or
  UPPER case, and has at least one synonym (see `synonyms`).
- Synonyms of a word: the lemma names of all WordNet synsets of the lower-cased word (NLTK's
  `synsets`, so inflected forms find their base form's synsets, as in EDA), in WordNet's sense
  order, de-duplicated. Only single lower-case alphabetic lemmas are kept: multi-word lemmas
  ('_'), hyphenated ones, and proper nouns/acronyms (any capital) are dropped, so one word is
  always replaced by one word and the case pattern can be copied. The word itself, its WordNet
  base forms ("movies" -> "movie" is not a synonym) and stop words are excluded.
- Shift degree p: in each example, exactly m of its n eligible words (over all its text fields
  together) are chosen uniformly without replacement, and each is replaced by a uniformly chosen
  synonym with the original's case pattern. m = floor(p * n + u), u ~ U[0, 1): p * n rounded
  stochastically, so m is floor(p * n) or ceil(p * n) and E[m] = p * n. The measured shift of the
  example is m / n (within 1 / n of p, NaN when n = 0), and its mean over examples is p. Rounding
  to nearest (`rounding="nearest"`, m = floor(p * n + 0.5), as `augment.py` does for subword
  tokens) is biased on short texts: SST-2 phrases have few eligible words (4 on average), and
  on the first 500 train sentences the mean shift would be 0.05 / 0.30 / 0.62 for p = 0.1 / 0.3
  / 0.5 (0.10 / 0.30 / 0.50 with stochastic rounding).

Everything is deterministic given the `np.random.Generator`.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import pathlib
import re
import threading
import warnings
from typing import Any, Callable, Optional, Sequence

import numpy as np

from augpro_jax.errors import UserError
from augpro_jax.errors import one_line

# Debian/Ubuntu `wordnet-base` (WordNet 3.0 database files) installs here.
DEBIAN_WORDNET_DIR = "/usr/share/wordnet"

# Files NLTK's WordNetCorpusReader opens while loading and looking up synsets. `lexnames` is also
# needed but is generated when missing (see `_LEXNAMES`).
_REQUIRED_FILES = tuple(f"{kind}.{pos}" for kind in ("index", "data")
                        for pos in ("noun", "verb", "adj", "adv")) + tuple(
                            f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv"))

_HOW_TO_GET = ("install it with `apt-get install wordnet-base` (or scripts/install_wordnet.sh), "
               "pass --wordnet_dir=DIR (a WordNet 3.0 dict directory), or run "
               "nltk.download('wordnet') when online")

# The WordNet 3.0 lexicographer files, in file-number order (wndb(5WN)/lexnames(5WN)). Debian's
# wordnet-base ships the database without the `lexnames` file, which NLTK's reader reads first
# thing (to name each synset's lexicographer file); its content is fixed for WordNet 3.0, so it
# is served from here instead (see `_WordNetReader.open`).
_LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather",
    "adj.ppl",
)
_LEXNAME_POS = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}

# Never replaced and never used as replacements: function words carry little lexical meaning,
# and WordNet's entries for many of them are noise ("a" -> angstrom, "in" -> inch, "be" ->
# beryllium, "it" -> information technology). The last group are fragments of split
# contractions ("ca n't", "wo n't", "gon na", "we 're") that would otherwise read as
# chemical symbols or nouns (ca -> calcium, na -> sodium, re -> rhenium).
STOP_WORDS = frozenset("""
a an the
i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his
himself she her hers herself it its itself they them their theirs themselves one ones
this that these those who whom whose which what whatever whoever
am is are was were be been being have has had having do does did doing done
will would shall should can could may might must ought
not no nor never
and or but if then else than so as because while though although unless until whether
of in on at by for with without to from into onto upon about above below over under up down
out off through during before after between among against within along across toward towards
here there where when why how all any both each few more most other some such only own same
too very just also again once ever even yet still
s t d m ll re ve nt ca wo sha ai gon na wan ta
""".split())

# A word: letters/digits/underscore, with inner apostrophes ("don't", SST-2's "n't"). A leading
# apostrophe is a separator, so "'re" and "'s" yield the fragments "re" and "s" (stop words).
_WORD_RE = re.compile(r"(\w+(?:'\w+)*)")


def _lexnames_text() -> str:
  return "".join(f"{i:02d}\t{name}\t{_LEXNAME_POS[name.split('.')[0]]}\n"
                 for i, name in enumerate(_LEXNAMES))


def _make_reader_class():
  """NLTK's reader, adapted to load offline from any WordNet 3.0 directory (imports nltk)."""
  from nltk.corpus.reader.wordnet import WordNetCorpusReader  # pylint: disable=g-import-not-at-top

  class _WordNetReader(WordNetCorpusReader):
    """`WordNetCorpusReader` that tolerates a missing `lexnames` and never needs other corpora."""

    def __init__(self, root: Any, synthetic_lexnames: bool):
      # Set before super().__init__, which opens `lexnames` straight away.
      self._synthetic_lexnames = synthetic_lexnames
      super().__init__(root, None)

    def open(self, file):  # pylint: disable=redefined-builtin
      if file == "lexnames" and self._synthetic_lexnames:
        return io.StringIO(_lexnames_text())
      return super().open(file)

    def map_wn(self, version="wordnet"):
      # The reader maps the loaded WordNet's synsets onto NLTK's own downloaded "wordnet" corpus
      # (through both copies' index.sense) for the multilingual (OMW) functions; the version check
      # never matches a 3.0 database, so loading would require that corpus (LookupError offline)
      # and Debian's index.sense, which it lacks. English synsets and lemmas never use the mapping.
      del version
      return None

  return _WordNetReader


@dataclasses.dataclass(frozen=True, eq=False)
class SynonymTable:
  """WordNet synonyms by lower-cased word, looked up lazily and cached (safe across threads)."""

  directory: str
  reader: Any = dataclasses.field(repr=False)
  _cache: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict, repr=False)
  # Surface form -> (synonyms, case function) or None when not eligible: the hot path of
  # `_augment_fields` is then one dict lookup per word.
  _token_cache: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
  # NLTK's reader seeks and reads shared file handles: lookups must not interleave.
  _lock: Any = dataclasses.field(default_factory=threading.Lock, repr=False)

  def synonyms(self, word: str) -> tuple[str, ...]:
    """See the module-level `synonyms`."""
    word = word.lower()
    found = self._cache.get(word)
    if found is None:
      with self._lock:
        found = self._cache.get(word)
        if found is None:
          found = self._lookup(word)
          self._cache[word] = found
    return found

  def eligible(self, word: str) -> Optional[tuple[tuple[str, ...], Callable[[str], str]]]:
    """(synonyms, case function) if `word` (as written) is eligible for replacement, else None."""
    try:
      return self._token_cache[word]
    except KeyError:
      pass
    syns = self.synonyms(word)
    case = _case_like(word) if syns else None
    found = (syns, case) if case is not None else None
    self._token_cache[word] = found  # same value from any thread: no lock needed
    return found

  def _lookup(self, word: str) -> tuple[str, ...]:
    if len(word) < 2 or not (word.isascii() and word.isalpha()) or word in STOP_WORDS:
      return ()
    excluded = {word}
    for pos in ("n", "v", "a", "r"):
      # All base forms, e.g. "better" (adj) -> better, good, well; the public `morphy` only gives
      # the first one.
      excluded.update(self.reader._morphy(word, pos))  # pylint: disable=protected-access
    out = {}
    for synset in self.reader.synsets(word):
      for name in synset.lemma_names():
        if (name.isascii() and name.isalpha() and name.islower() and len(name) >= 2
            and name not in excluded and name not in STOP_WORDS):
          out[name] = None  # a dict keeps first-seen (sense) order
    return tuple(out)


def _is_wordnet_dir(path: pathlib.Path) -> bool:
  return all((path / name).is_file() for name in _REQUIRED_FILES)


def _find_wordnet(wordnet_dir: Optional[str]) -> tuple[Any, str, bool]:
  """(reader root, where, from NLTK data?): explicit dir, $WORDNET_DIR, Debian's, NLTK's data."""
  for source, value in (("--wordnet_dir", wordnet_dir),
                        ("$WORDNET_DIR", os.environ.get("WORDNET_DIR") or None)):
    if value is None:
      continue
    path = pathlib.Path(value).expanduser()
    if not path.is_dir():
      raise UserError(f"{source}={value}: no such directory; {_HOW_TO_GET}")
    if not _is_wordnet_dir(path):
      missing = [name for name in _REQUIRED_FILES if not (path / name).is_file()]
      raise UserError(f"{source}={value} is not a WordNet database directory (missing "
                      f"{', '.join(missing)}); {_HOW_TO_GET}")
    return str(path.resolve()), f"{source}={value}", False
  if _is_wordnet_dir(pathlib.Path(DEBIAN_WORDNET_DIR)):
    return DEBIAN_WORDNET_DIR, DEBIAN_WORDNET_DIR, False
  import nltk  # pylint: disable=g-import-not-at-top
  for resource in ("corpora/wordnet", "corpora/wordnet.zip/wordnet/"):
    try:
      return nltk.data.find(resource), f"NLTK data ({resource})", True
    except LookupError:
      continue
  raise UserError(f"WordNet not found (looked in $WORDNET_DIR, {DEBIAN_WORDNET_DIR} and NLTK's "
                  f"data path); {_HOW_TO_GET}")


def _has_lexnames(root: Any) -> bool:
  if isinstance(root, str):  # a directory (also NLTK's FileSystemPathPointer, a str)
    return os.path.isfile(os.path.join(root, "lexnames"))
  try:  # NLTK's ZipFilePathPointer: join() raises for a missing entry
    root.join("lexnames")
    return True
  except (OSError, KeyError, ValueError):
    return False


_TABLES: dict[str, SynonymTable] = {}
_TABLES_LOCK = threading.Lock()


def load_wordnet(wordnet_dir: Optional[str] = None) -> SynonymTable:
  """Load WordNet once per process (a few seconds); raises `UserError` if there is none.

  Searched in order: `wordnet_dir` (cfg.wordnet_dir), $WORDNET_DIR, /usr/share/wordnet (Debian's
  wordnet-base), NLTK's data path (nltk.download('wordnet')).
  """
  root, where, in_nltk_data = _find_wordnet(wordnet_dir)
  key = str(getattr(root, "path", root))
  with _TABLES_LOCK:
    if key in _TABLES:
      return _TABLES[key]
    import nltk  # pylint: disable=g-import-not-at-top
    if not in_nltk_data and root not in nltk.data.path:
      # NLTK >= 3.10 only reads files under its data path (its path "sandbox"); registering the
      # directory on nltk.data.path is its documented way to authorise a corpus kept elsewhere.
      # Appended, so it never shadows NLTK's own resources. (A temporary directory of symlinks
      # plus a generated lexnames would not do: NLTK resolves links and refuses any that leave
      # the corpus root.)
      nltk.data.path.append(root)
    synthetic_lexnames = not _has_lexnames(root)
    try:
      with warnings.catch_warnings():
        # "The multilingual functions are not available": expected, we pass no OMW reader.
        warnings.simplefilter("ignore", UserWarning)
        reader = _make_reader_class()(root, synthetic_lexnames)
      # The data files are opened on first use: open all four now (good: n/a/r, run: v), so that
      # a bad file fails here as a UserError rather than later in the input pipeline.
      probe = {synset.pos() for word in ("good", "run") for synset in reader.synsets(word)}
      if not {"n", "v", "a", "r"} <= probe | ({"a"} if "s" in probe else set()):
        raise ValueError("no synsets found for 'good' and 'run'; is this WordNet 3.0?")
    except (OSError, ValueError, LookupError, AssertionError) as exc:
      # E.g. PermissionError: NLTK refuses files owned by another account or group-writable.
      raise UserError(f"could not load WordNet from {where}: {type(exc).__name__}: {one_line(exc)}") from exc
    table = SynonymTable(directory=str(root), reader=reader)
    _TABLES[key] = table
    return table


def synonyms(table: SynonymTable, word: str) -> tuple[str, ...]:
  """Single-word lower-case synonyms of `word` (lower-cased first), in WordNet sense order.

  Multi-word ('_') and hyphenated lemmas and proper nouns are dropped; the word itself, its base
  forms and stop words are excluded. Empty for stop words, non-alphabetic and 1-letter words.
  """
  return table.synonyms(word)


def _case_like(word: str) -> Optional[Callable[[str], str]]:
  """A function copying `word`'s case pattern onto a lower-case synonym, or None if mixed."""
  if word.islower():
    return str.lower
  if word.isupper():
    return str.upper
  if word[0].isupper() and word[1:].islower():
    return str.capitalize
  return None  # "McDonald", "iPhone": the pattern cannot be carried over, so not eligible.


def _augment_fields(fields: Sequence[str], shift_degree: float, rng: np.random.Generator,
                    table: SynonymTable, rounding: str) -> tuple[list[str], int, int]:
  """Synonym replacement over all fields of one example jointly: (new fields, changed, eligible)."""
  if not 0.0 <= shift_degree <= 1.0:
    raise ValueError(f"shift_degree must be in [0, 1], got {shift_degree}")
  pieces = [_WORD_RE.split(text) for text in fields]  # words at odd indices
  slots = []  # (field, piece index, synonyms, case function) of each eligible word
  for f, parts in enumerate(pieces):
    for j in range(1, len(parts), 2):
      found = table.eligible(parts[j])
      if found is not None:
        slots.append((f, j) + found)
  n = len(slots)
  if n == 0:
    return list(fields), 0, 0
  # One draw per example (cheaper than separate choice/integers calls, and the generator always
  # advances by 2n + 1 whatever m is): [rounding, n selection keys, n synonym picks].
  draws = rng.random(2 * n + 1)
  if rounding == "stochastic":
    # Unbiased, E[m] = p * n: rounding to nearest would change nothing in a 4-word phrase at
    # p = 0.1 and all of a 1-word phrase at p = 0.5 (see the module docstring).
    m = int(math.floor(shift_degree * n + draws[0]))
  elif rounding == "nearest":
    m = int(math.floor(shift_degree * n + 0.5))
  else:
    raise ValueError(f"rounding must be 'stochastic' or 'nearest', got {rounding!r}")
  m = min(m, n)
  if m == 0:
    return list(fields), 0, n
  # The m smallest of n i.i.d. uniform keys: a uniformly random m-subset.
  chosen = np.argsort(draws[1:n + 1], kind="stable")[:m].tolist()
  picks = draws[n + 1:].tolist()
  for i in chosen:
    f, j, syns, case = slots[i]
    # floor(u * k) with u in [0, 1) is uniform over k synonyms.
    pieces[f][j] = case(syns[int(picks[i] * len(syns))])
  return ["".join(parts) for parts in pieces], m, n


def replace_synonyms(text: str, shift_degree: float, rng: np.random.Generator,
                     table: SynonymTable, *, rounding: str = "stochastic"
                     ) -> tuple[str, int, int]:
  """Replace round(p * n_eligible) random eligible words: (new_text, n_changed, n_eligible)."""
  (new,), changed, eligible = _augment_fields((text,), shift_degree, rng, table, rounding)
  return new, changed, eligible


def augment_texts(texts: list[tuple[str, ...]], shift_degree: float, rng: np.random.Generator,
                  table: SynonymTable, *, rounding: str = "stochastic"
                  ) -> tuple[list[tuple[str, ...]], np.ndarray]:
  """Synonym-replace each example (1 or 2 text fields); returns new texts and measured shifts.

  The words to replace are chosen over all fields of an example together, so its measured shift
  (float32 [len(texts)], NaN without eligible words) is changed / eligible over the example.
  """
  out, shift = [], np.full(len(texts), np.nan, np.float32)
  for i, fields in enumerate(texts):
    new, changed, eligible = _augment_fields(fields, shift_degree, rng, table, rounding)
    out.append(tuple(new))
    if eligible:
      shift[i] = changed / eligible
  return out, shift
