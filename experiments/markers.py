"""The one filler of generated blocks in markdown: `<!-- KIND:NAME:begin -->` ... `<!-- KIND:NAME:end -->`.

report.py fills `report:NAME` blocks in experiments/README.md with its tables; docs_tables.py fills
`generated:PATH` blocks in README.md and docs/ with a results file. Both keep the text outside the
markers as it is, put one blank line around the content (so a marker never reads as part of a
table), and refuse a begin marker without its end.
"""

from __future__ import annotations

import re
from typing import Callable

ANY_NAME = r"[^ ]+?"  # a NAME: no spaces


def block_pattern(kind: str, name: str = ANY_NAME) -> re.Pattern:
  """A whole block of `kind`; group 1 the begin line, group 2 NAME, group 3 the end marker."""
  return re.compile(rf"(<!-- {kind}:({name}):begin -->\n).*?(<!-- {kind}:\2:end -->)", re.DOTALL)



def names(text: str, kind: str, name: str = ANY_NAME) -> list[str]:
  """The NAMEs (matching the regex `name`) of the begin markers of `kind` in `text`, in order."""
  return re.findall(rf"<!-- {kind}:({name}):begin -->", text)


def fill(text: str, kind: str, content: Callable[[str], str], name: str = ANY_NAME) -> str:
  """`text` with each `kind` block holding `content(NAME)` (stripped); the rest kept as is.

  Raises ValueError for a begin marker without its matching end marker; `content` may raise
  ValueError for a NAME it has nothing for.
  """
  pattern = block_pattern(kind, name)
  if len(pattern.findall(text)) != len(names(text, kind, name)):
    raise ValueError(f"a <!-- {kind}:NAME:begin --> marker has no matching end marker")
  return pattern.sub(lambda m: f"{m.group(1)}\n{content(m.group(2)).strip()}\n\n{m.group(3)}", text)
