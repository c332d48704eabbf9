"""The library's size limits: no function over 80 lines, no module over 450 (docs/design.md)."""

import ast

from conftest import REPO

MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 450
LIBRARY = REPO / "augpro_jax"


def oversized(source: str, name: str) -> list[str]:
  """`name:line function (n lines)` for each function of `source` over the limit, and the module
  itself when it is over its limit."""
  found = []
  lines = source.count("\n") + (not source.endswith("\n"))
  if lines > MAX_MODULE_LINES:
    found.append(f"{name} ({lines} lines)")
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      length = node.end_lineno - node.lineno + 1
      if length > MAX_FUNCTION_LINES:
        found.append(f"{name}:{node.lineno} {node.name} ({length} lines)")
  return found


def test_no_library_function_or_module_over_the_limits():
  modules = sorted(LIBRARY.rglob("*.py"))
  assert len(modules) > 20
  found = [hit for path in modules
           for hit in oversized(path.read_text(), str(path.relative_to(REPO)))]
  assert found == []


def test_the_check_sees_a_long_function_and_a_long_module():
  body = "".join(f"  x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
  assert oversized(f"def f():\n{body}", "m.py") == ["m.py:1 f (81 lines)"]
  just_fits = body.rsplit("  x", 1)[0]  # 79 lines of body: 80 with the `def`
  assert oversized(f"def f():\n{just_fits}", "m.py") == []
  long_module = "x = 1\n" * (MAX_MODULE_LINES + 1)
  assert oversized(long_module, "m.py") == ["m.py (451 lines)"]
