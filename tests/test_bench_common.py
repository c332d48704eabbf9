"""The benchmarks' shared markdown table writer (fast: no benchmark runs)."""

from augpro_jax.bench import common


def test_table_aligns_and_leaves_empty_cells_empty():
  lines = common.table(["step", "padding", "examples/s"],
                       [["ours none", "length buckets", "12.5"], ["peer x", "unavailable", ""]],
                       left=2)
  assert lines == ["| step | padding | examples/s |",
                   "|---|---|---:|",
                   "| ours none | length buckets | 12.5 |",
                   "| peer x | unavailable | |"]
  assert common.table(["part", "ms"], [])[1] == "|---|---:|"
