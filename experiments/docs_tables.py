"""Copy generated results tables into the docs, so that no table of results there is typed by hand.

A block in README.md or a markdown file under docs/

    <!-- generated:experiments/results/NAME.md:begin -->
    ...
    <!-- generated:experiments/results/NAME.md:end -->

holds that file's content exactly as the script that measured it wrote it (benchmarks, profiles,
experiments). Command (seconds):
  .venv/bin/python experiments/docs_tables.py          # fill every block
  .venv/bin/python experiments/docs_tables.py --check  # exit 1 naming each stale block
tests/test_experiments.py runs the check on the committed docs. Both commands first make (or check)
the tables that experiments/doc_tables_reference.py derives from other results files.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from experiments import doc_tables_reference
from experiments import markers

REPO = pathlib.Path(__file__).resolve().parents[1]
BLOCK = markers.block_pattern("generated")


def documents(repo: pathlib.Path = REPO) -> list[pathlib.Path]:
  return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def fill(text: str, repo: pathlib.Path = REPO) -> str:
  """`text` with every generated block holding its file; the text outside is kept as is.

  Raises ValueError for a begin marker without its end, a path outside the results folder, or a
  missing file.
  """
  results = (repo / "experiments" / "results").resolve()

  def content(name: str) -> str:
    path = (repo / name).resolve()
    if results not in path.parents:
      raise ValueError(f"{name} is not under experiments/results/")
    if not path.is_file():
      raise ValueError(f"{name} does not exist")
    return path.read_text(encoding="utf-8")

  return markers.fill(text, "generated", content)


def main(argv: list[str]) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is stale")
  args = p.parse_args(argv)
  try:
    stale = [f"experiments/results/{name}"
             for name in doc_tables_reference.update(check=args.check)]
  except (ValueError, OSError, KeyError) as e:
    p.error(f"experiments/doc_tables_reference.py: {e}")
  for doc in documents():
    text = doc.read_text(encoding="utf-8")
    try:
      filled = fill(text)
    except ValueError as e:
      p.error(f"{doc.relative_to(REPO)}: {e}")
    if filled != text:
      stale.append(str(doc.relative_to(REPO)))
      if not args.check:
        doc.write_text(filled, encoding="utf-8")
  if args.check and stale:
    print(f"stale generated tables in {', '.join(stale)}: run experiments/docs_tables.py",
          file=sys.stderr)
    return 1
  print("\n".join(f"filled {name}" for name in stale) if stale else "every generated table is current")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
