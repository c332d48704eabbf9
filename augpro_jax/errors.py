"""The one exception type that means "the user gave us bad input".

`main.py` turns a `UserError` into one line on stderr and exit status 2; anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
  """Bad flags, bad data or bad weights: reported as one line, never a traceback."""
