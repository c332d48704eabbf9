"""The one exception type that means "the user gave us bad input".

`main.py` turns a `UserError` into one line on stderr and exit status 2; anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
  """Bad flags, bad data or bad weights: reported as one line, never a traceback."""


def one_line(value: object, limit: int = 200) -> str:
  """An exception's (or any value's) text on one line, cut to `limit` characters: messages that
  quote a library's error must stay one line."""
  text = " ".join(str(value).split())
  if not text and isinstance(value, BaseException):
    text = type(value).__name__
  return text if len(text) <= limit else text[:limit] + "..."
