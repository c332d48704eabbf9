"""Class labels of custom files: which strings name one class, in which order, and what to flag.

Labels are read as strings (a JSONL number 1 becomes '1', 1.0 becomes '1.0'). Strings that are
numbers are compared as numbers, so `1`, `1.0`, `"1"` and `1e0` are one class; it is named by the
spelling that comes first in the training file. Other strings are compared exactly: `Positive` and
`positive` stay two classes, but the pair gets a warning, as does a class with fewer than
`RARE_FRACTION` of the training examples. `--label_names` fixes the set and its order.
"""

from __future__ import annotations

import collections
import math
from typing import Optional, Sequence

import numpy as np

from augpro_jax.errors import UserError

# A class with a smaller share of the training examples than this gets a warning: it is usually a
# typo or a stray value, and a model will hardly learn it.
RARE_FRACTION = 0.01


def as_number(label: str) -> Optional[float]:
  """The label's value if it is a finite number ('1', '1.0', ' 2e1'), else None."""
  try:
    value = float(label)
  except ValueError:
    return None
  return value if math.isfinite(value) else None


def _key(label: str) -> str:
  """What makes two labels one class: the numeric value of numbers (+0.0 folds -0.0 into 0.0),
  the exact text otherwise."""
  value = as_number(label)
  return label if value is None else f"#{(value + 0.0)!r}"


def class_names(labels: Sequence[str], fixed: Sequence[str] = (), where: str = "") -> tuple[str, ...]:
  """The classes of a training file's `labels`: `fixed` (--label_names) when given, else each
  distinct class once, named by its first spelling, in numeric order if every label is a number
  and in string order otherwise."""
  if fixed:
    seen: dict[str, str] = {}
    for name in fixed:
      key = _key(name)
      if key in seen:
        same = "is given twice" if seen[key] == name else f"and {seen[key]!r} are the same number"
        raise UserError(f"--label_names: {name!r} {same}")
      seen[key] = name
    return tuple(fixed)
  first: dict[str, str] = {}
  for label in labels:
    first.setdefault(_key(label), label)
  names = list(first.values())
  if all(as_number(name) is not None for name in names):
    names.sort(key=lambda s: (as_number(s), s))  # '2' before '10'
  else:
    names.sort()
  if len(names) < 2:
    raise UserError(f"{where}every label is {_quote(names[0])}; classification needs at least 2 "
                    "classes")
  return tuple(names)


def to_ids(labels: Sequence[str], names: Sequence[str]) -> np.ndarray:
  """Class ids [N] of `labels` (positions in `names`), -1 where a label is none of them."""
  ids = {_key(name): i for i, name in enumerate(names)}
  return np.fromiter((ids.get(_key(label), -1) for label in labels), np.int32, count=len(labels))


def warnings_for(labels: Sequence[str], names: Sequence[str]) -> list[str]:
  """Warnings about a training file's labels: classes that differ only in case, rare classes."""
  out = []
  by_case: dict[str, list[str]] = collections.defaultdict(list)
  for name in names:
    by_case[name.casefold()].append(name)
  for group in by_case.values():
    if len(group) > 1:
      out.append(f"labels {' and '.join(map(_quote, group))} differ only in case and are "
                 f"{len(group)} separate classes; fix the file, or pass --label_names to fix the "
                 "set of classes")
  ids = to_ids(labels, names)
  counts = np.bincount(ids[ids >= 0], minlength=len(names))
  total = len(labels)
  rare = [(names[i], int(c)) for i, c in enumerate(counts) if c < RARE_FRACTION * total]
  if rare:
    listed = ", ".join(f"{_quote(name)} ({count} of {total})" for name, count in rare)
    out.append(f"class{'es' * (len(rare) > 1)} with fewer than {RARE_FRACTION:.0%} of the "
               f"training examples: {listed}")
  return out


def _quote(value: str, limit: int = 40) -> str:
  return repr(value if len(value) <= limit else value[:limit] + "...")
