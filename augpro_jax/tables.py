"""Raw tables: the texts and label strings of a TSV, CSV or JSONL file, with line numbers.

Reading is strict and every problem is one line naming the file and line: a malformed row, a
missing column, bytes that are not UTF-8, a delimiter that looks wrong. Parsed files are cached
by file identity, so a run that reads train.tsv several times parses it once.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import pathlib
from typing import Any, Optional

from augpro_jax.errors import UserError
from augpro_jax.errors import one_line

_DELIMITER_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}


@dataclasses.dataclass(frozen=True)
class Table:
  path: str
  texts: tuple[tuple[str, ...], ...]
  labels: tuple[str, ...]
  lines: tuple[int, ...]  # 1-based line number of each row


def load_table(path: pathlib.Path, missing: str, delimiter: Optional[str],
                columns: Optional[tuple[str, ...]], text_fields: tuple[str, ...],
                label_field: Optional[str]) -> Table:
  """Read (and cache) one file; `columns` names the columns of a headerless file."""
  try:
    st = path.stat()
  except FileNotFoundError:
    raise UserError(missing) from None
  except OSError:
    st = None  # reading will fail with a precise message
  if st is None or not path.is_file():
    return _parse_file(path, delimiter, columns, text_fields, label_field)
  # Cached by file identity: a run reads train.tsv for `resolve_task`, for 'train' and (with
  # --dev_from_train) once per dev split.
  return _cached_parse(str(path), st.st_ino, st.st_size, st.st_mtime_ns, delimiter, columns,
                       text_fields, label_field)


@functools.lru_cache(maxsize=4)
def _cached_parse(path: str, inode: int, size: int, mtime_ns: int, delimiter: Optional[str],
                  columns: Optional[tuple[str, ...]], text_fields: tuple[str, ...],
                  label_field: Optional[str]) -> Table:
  del inode, size, mtime_ns  # only part of the cache key
  return _parse_file(pathlib.Path(path), delimiter, columns, text_fields, label_field)


def _parse_file(path: pathlib.Path, delimiter: Optional[str], columns: Optional[tuple[str, ...]],
                text_fields: tuple[str, ...], label_field: Optional[str]) -> Table:
  text = _read_text(path)
  if delimiter is None:
    return _parse_jsonl(path, text, text_fields, label_field)
  if delimiter == "\t":
    # GLUE text contains quote characters that are not CSV quoting: split on tabs only.
    rows = ((i + 1, line.rstrip("\r").split("\t")) for i, line in enumerate(text.split("\n"))
            if line.rstrip("\r"))
  else:
    rows = _csv_rows(path, text, delimiter)
  return _parse_rows(path, rows, delimiter, columns, text_fields, label_field)


def _read_text(path: pathlib.Path) -> str:
  """The file's text: UTF-8, without a leading BOM (MRPC files start with one)."""
  try:
    data = path.read_bytes()
  except FileNotFoundError:
    raise UserError(f"{path} does not exist") from None
  except IsADirectoryError:
    raise UserError(f"cannot read {path}: it is a directory, not a file") from None
  except PermissionError:
    raise UserError(f"cannot read {path}: permission denied") from None
  except OSError as exc:
    raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as exc:
    line = data.count(b"\n", 0, exc.start) + 1
    raise UserError(f"{path} line {line}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); "
                    "save the file as UTF-8") from None
  return text[1:] if text.startswith("\ufeff") else text


def _csv_rows(path: pathlib.Path, text: str, delimiter: str):
  # Text fields may be long (whole documents); the csv module's default limit is 128 KiB per
  # field, and long text must not be an error. Raising the limit is process-wide but harmless.
  if csv.field_size_limit() < 2**31 - 1:
    csv.field_size_limit(2**31 - 1)
  reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
  try:
    for fields in reader:
      if fields:  # a blank line
        yield reader.line_num, fields
  except csv.Error as exc:
    raise UserError(f"{path} line {reader.line_num}: malformed CSV ({one_line(exc)})") from None


def _parse_rows(path: pathlib.Path, rows, delimiter: str, columns: Optional[tuple[str, ...]],
                text_fields: tuple[str, ...], label_field: Optional[str]) -> Table:
  """Check the header and every row of a delimited file; keep the needed columns.

  Without a `label_field` (texts to predict), every label is "".
  """
  rows = iter(rows)
  wanted = (*text_fields, label_field) if label_field else tuple(text_fields)
  if columns is None:
    first = next(rows, None)
    if first is None:
      raise UserError(f"{path} is empty: expected a header row and examples")
    header = [name.strip() for name in first[1]]
    _check_delimiter(path, header, delimiter, wanted)
    missing = [name for name in wanted if name not in header]
    if missing:
      raise UserError(f"{path}: missing column{'s' * (len(missing) > 1)} "
                      f"{', '.join(repr(m) for m in missing)}; the header has: "
                      f"{', '.join(repr(h) for h in header)}")
  else:
    header = list(columns)
  index = [header.index(name) for name in wanted]
  width = len(header)
  texts, labels, lines = [], [], []
  for line, fields in rows:
    if len(fields) != width:
      if columns is not None and not lines:
        _check_delimiter(path, fields, delimiter, wanted)
      kind = "too many" if len(fields) > width else "too few"
      raise UserError(f"{path} line {line}: {len(fields)} fields, expected {width} ({kind}; "
                      f"separator is {_DELIMITER_NAMES[delimiter]})")
    values = [fields[i] for i in index]
    for name, value in zip(text_fields, values):
      if not value.strip():
        raise UserError(f"{path} line {line}: empty text in column {name!r}")
    texts.append(tuple(values[:len(text_fields)]))
    labels.append(_label(path, line, label_field, values[-1]) if label_field else "")
    lines.append(line)
  if not lines:
    raise UserError(f"{path} is empty: "
                    + ("a header row but no examples" if columns is None else "no examples"))
  return Table(str(path), tuple(texts), tuple(labels), tuple(lines))


def _label(path: pathlib.Path, line: int, label_field: str, value: str) -> str:
  """A label cell, stripped; an empty one would become a class named ''."""
  if not value.strip():
    raise UserError(f"{path} line {line}: empty label in column {label_field!r}")
  return value.strip()


def _check_delimiter(path: pathlib.Path, fields: list[str], delimiter: str,
                     wanted: tuple[str, ...]) -> None:
  """A single-column first row holding another separator: the wrong file format."""
  if len(fields) != 1 or len(wanted) < 2:
    return
  for other, name in _DELIMITER_NAMES.items():
    if other != delimiter and other in fields[0]:
      raise UserError(f"{path}: the first row {short(fields[0])} looks {name}-separated, but "
                      f"this file is read as {_DELIMITER_NAMES[delimiter]}-separated")


def _parse_jsonl(path: pathlib.Path, text: str, text_fields: tuple[str, ...],
                 label_field: Optional[str]) -> Table:
  texts, labels, lines = [], [], []
  for number, line in enumerate(text.split("\n"), start=1):
    if not line.strip():
      continue
    try:
      obj = json.loads(line)
    except json.JSONDecodeError as exc:
      raise UserError(f"{path} line {number}: not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
      raise UserError(f"{path} line {number}: expected a JSON object, got "
                      f"{type(obj).__name__}")
    wanted = (*text_fields, label_field) if label_field else tuple(text_fields)
    missing = [name for name in wanted if name not in obj]
    if missing:
      raise UserError(f"{path} line {number}: missing field{'s' * (len(missing) > 1)} "
                      f"{', '.join(repr(m) for m in missing)}; the object has: "
                      f"{', '.join(repr(k) for k in obj)}")
    row = []
    for name in text_fields:
      value = obj[name]
      if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
      if value is not None and not isinstance(value, str):
        raise UserError(f"{path} line {number}: field {name!r} is a {type(value).__name__}, "
                        "not a string")
      if value is None or not value.strip():
        raise UserError(f"{path} line {number}: empty text in field {name!r}")
      row.append(value)
    label = obj[label_field] if label_field else ""
    if isinstance(label, str):
      label = label.strip()
    elif isinstance(label, (bool, int, float)):
      label = json.dumps(label)  # 1 -> '1', 0.5 -> '0.5', true -> 'true'
    else:
      raise UserError(f"{path} line {number}: label field {label_field!r} is "
                      f"{json.dumps(label)[:40]}, not a string or number")
    texts.append(tuple(row))
    labels.append(_label(path, number, label_field, label) if label_field else "")
    lines.append(number)
  if not lines:
    raise UserError(f"{path} is empty: no JSON lines")
  return Table(str(path), tuple(texts), tuple(labels), tuple(lines))


def short(value: Any, limit: int = 40) -> str:
  """A value quoted for a one-line message, cut to `limit` characters."""
  text = str(value)
  return repr(text if len(text) <= limit else text[:limit] + "...")
