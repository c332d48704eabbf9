"""`--mode=benchmark` on tiny shapes over the 8 fake devices: every method, the parts, the JSON
fields docs/benchmarks.md promises, and the markdown table."""

import json
import math

import pytest

from augpro_jax import benchmark
from augpro_jax.config import Config
from augpro_jax.errors import UserError

pytestmark = pytest.mark.slow  # subprocesses, end-to-end runs or benchmarks: not in `make test-fast`

AUGS = ("none", "mixup", "fgsm", "augpro_mix", "augpro_fgsm", "knn")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench") / "bench.json"
  cfg = Config(mode="benchmark", batch_size=16, max_seq_len=16, teacher_layers=2,
               teacher_hidden=64, student_layers=1, student_hidden=64, student_heads=2,
               benchmark_steps=2, benchmark_warmup=1, benchmark_augs=AUGS, benchmark_peers=(),
               benchmark_out=str(out)).validate()
  result = benchmark.run(cfg)
  return result, out


def test_every_method_has_the_promised_fields(report):
  result, out = report
  written = json.loads(out.read_text())
  assert [m["aug"] for m in written["methods"]] == list(AUGS)
  for m in written["methods"]:
    for key in ("aug", "examples_per_sec", "step_ms_median", "ratio_to_none", "projection_fraction",
                "compile_seconds", "flops_per_step"):
      assert key in m, key
    assert m["examples_per_sec"] > 0 and math.isfinite(m["step_ms_median"])
    assert math.isclose(m["examples_per_sec"], 16 / m["step_ms_median"] * 1e3, rel_tol=1e-6)
    has_projection = m["aug"] in ("augpro_mix", "augpro_fgsm", "knn")
    assert (m["projection_fraction"] is not None) == has_projection, m["aug"]
    if m["aug"] == "none":
      assert m["ratio_to_none"] == 1.0 and m["ratio_to_none_same_examples"] is None
    else:
      assert m["ratio_to_none_same_examples"] > 0
    if has_projection:
      assert 0 < m["projection_fraction"] and 0 < m["measured_shift"] <= 1
  assert written["none_same_examples"]["batch"] == 32
  assert written["peers"] == []


def test_parts_memory_and_table(report):
  result, out = report
  parts = result["parts"]
  for key in ("teacher_forward_ms", "projection_augpro_mix_ms", "student_forward_backward_update_ms"):
    assert parts[key] > 0, key
  # The chunked projection never holds the [positions, vocab] score matrix.
  assert parts["projection_memory_ratio"] < 1.0
  table = out.with_suffix(".md").read_text()
  for aug in AUGS:
    assert f"| {aug} |" in table
  assert result["params"]["teacher"] > result["params"]["student"] > 0


def test_synonym_and_indivisible_batch_are_user_errors():
  with pytest.raises(UserError, match="synonym"):
    benchmark.run(Config(mode="benchmark", benchmark_augs=("synonym",), batch_size=16))
  with pytest.raises(UserError, match="divisible"):
    benchmark.run(Config(mode="benchmark", batch_size=12))


def test_time_interleaved_runs_every_call_in_rounds():
  order = []
  calls = {name: (lambda i, name=name: order.append((name, i))) for name in ("a", "b")}
  timing = benchmark.time_interleaved(calls, steps=5, warmup=1, rounds=2, pause_seconds=0.0)
  # Warm-up of each call first, then rounds of 3 and 2 timed steps, a's block before b's.
  names = [name for name, _ in order]
  assert names == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + ["a"] * 2 + ["b"] * 2
  assert [i for name, i in order if name == "a"] == [0, 1, 2, 3, 4, 5]
  for name in calls:
    assert len(timing[name]["times_ms"]) == 5
    assert timing[name]["step_ms_p10"] <= timing[name]["step_ms_median"] <= timing[name]["step_ms_p90"]


def test_report_says_how_it_was_timed(report):
  _, out = report
  timing = json.loads(out.read_text())["timing"]
  assert timing == {"steps": 2, "warmup": 1, "rounds": 2, "interleaved": True}


def test_a_failing_peer_step_is_kept_not_raised():
  errors = {}
  calls = []

  def step(i):
    calls.append(i)
    raise RuntimeError("peer broke")

  call = benchmark._guarded(step, errors, "hf_torch")  # pylint: disable=protected-access
  call(0)
  call(1)
  assert calls == [1] and str(errors["hf_torch"]) == "peer broke"
