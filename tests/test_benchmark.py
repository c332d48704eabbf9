"""`--mode=benchmark` on tiny shapes over the 8 fake devices: every method, the parts, the JSON
fields docs/benchmarks.md promises, and the markdown table; with --benchmark_data=task, the same
real examples for every contender, each padded its own way."""

import json
import math

import numpy as np
import pytest

from augpro_jax import augmentations
from augpro_jax import bench
from augpro_jax.bench import common
from augpro_jax.bench import synthetic
from augpro_jax.config import Config
from augpro_jax.errors import UserError

pytestmark = pytest.mark.slow  # subprocesses, end-to-end runs or benchmarks: not in `make test-fast`

# One augmentation of each kind the benchmark treats differently: none (no projection, the ratios'
# base) and two that project (onto a partner's mix, onto neighbours). `make bench` times every
# registered one; test_train_step runs each one's step.
AUGS = ("none", "augpro_mix", "knn")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench") / "bench.json"
  cfg = Config(mode="benchmark", batch_size=16, max_seq_len=16, benchmark_teacher_layers=2,
               benchmark_teacher_hidden=64, student_layers=1, student_hidden=64, student_heads=2,
               benchmark_steps=2, benchmark_warmup=1, benchmark_augs=AUGS, benchmark_peers=(),
               benchmark_out=str(out)).validate()
  result = bench.run(cfg)
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
    has_projection = augmentations.get(m["aug"]).projects
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
    bench.run(Config(mode="benchmark", benchmark_augs=("synonym",), batch_size=16))
  with pytest.raises(UserError, match="divisible"):
    bench.run(Config(mode="benchmark", batch_size=12))


def test_time_interleaved_runs_every_call_in_rounds():
  order = []
  calls = {name: (lambda i, name=name: order.append((name, i))) for name in ("a", "b")}
  timing = synthetic.time_interleaved(calls, steps=5, warmup=1, rounds=2, pause_seconds=0.0)
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

  call = common.guarded(step, errors, "hf_torch")
  call(0)
  call(1)
  assert calls == [1] and str(errors["hf_torch"]) == "peer broke"


# ----------------------------------------------------------------------------------------------
# --benchmark_data=task: the run's own batches of real text.
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def task_report(glue, tmp_path_factory):
  out = tmp_path_factory.mktemp("task_bench") / "bench.json"
  cfg = Config(mode="benchmark", benchmark_data="task", task="sst2", glue_dir=str(glue),
               train_size=200, batch_size=16, max_seq_len=32, benchmark_teacher_layers=2,
               benchmark_teacher_hidden=64, student_layers=1, student_hidden=64, student_heads=2, benchmark_steps=4,
               benchmark_warmup=1, benchmark_rounds=2, benchmark_augs=("none", "augpro_mix"),
               benchmark_peers=("hf_flax", "hf_torch"), benchmark_out=str(out)).validate()
  return bench.run(cfg), out


def test_task_benchmark_times_the_same_examples_for_everyone(task_report):
  report, out = task_report
  assert json.loads(out.read_text())["ratios"] == report["ratios"]
  methods = {m["name"]: m for m in report["methods"]}
  assert list(methods) == ["none", "none@max_seq_len", "augpro_mix", "augpro_mix@max_seq_len"]
  peers = {p["name"]: p for p in report["peers"]}
  assert {p.get("padding") for p in peers.values()} == {"peer_fixed", "peer_dynamic"}, peers
  everyone = list(methods.values()) + list(peers.values())
  # The same examples: every contender processed the same number of real tokens.
  real = {round(r["real_tokens_per_sec"] * r["seconds"]) for r in everyone}
  assert len(real) == 1, real
  for r in everyone:
    assert r["steps"] == 4
    assert math.isclose(r["examples_per_sec"], 16 * 4 / r["seconds"], rel_tol=1e-9)
    assert math.isclose(r["tokens_per_sec"] * r["token_utilisation"], r["real_tokens_per_sec"],
                        rel_tol=1e-9)
  # Padding: buckets and each random batch's longest example both beat --max_seq_len.
  fixed = methods["none@max_seq_len"]["token_utilisation"]
  assert peers["hf_flax"]["token_utilisation"] == fixed
  assert fixed < methods["none"]["token_utilisation"]
  assert fixed < peers["hf_torch"]["token_utilisation"] < 1
  assert set(report["data"]["batch_lengths"]) <= set(report["data"]["length_buckets"])
  assert 0.2 < methods["augpro_mix"]["measured_shift"] < 0.4
  assert methods["none"]["measured_shift"] is None
  ratios = report["ratios"]
  assert ratios["buckets_over_max_seq_len"]["none"] == pytest.approx(
      methods["none"]["examples_per_sec"] / methods["none@max_seq_len"]["examples_per_sec"])
  assert ratios["none_over_hf_torch"] == pytest.approx(
      methods["none"]["examples_per_sec"] / peers["hf_torch"]["examples_per_sec"])
  table = out.with_suffix(".md").read_text()
  assert "| ours augpro_mix | length buckets |" in table and "| peer hf_torch |" in table


def test_padded_views_hold_the_same_examples():
  from augpro_jax.bench import task as benchmark_task  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  lengths = rng.integers(3, 12, size=(3, 4))
  batches = []
  for i in range(3):
    mask = (np.arange(16)[None] < lengths[i][:, None]).astype(np.int32)
    ids = rng.integers(5, 100, size=(4, 16)).astype(np.int32) * mask
    batches.append({"input_ids": ids.reshape(2, 2, 16), "attention_mask": mask.reshape(2, 2, 16),
                    "token_type_ids": np.zeros((2, 2, 16), np.int32),
                    "label": ids[:, 0].reshape(2, 2), "example_id": np.arange(4).reshape(2, 2)})
  views = benchmark_task.padded_views(batches, 24, seed=0)
  rows = lambda view: sorted(tuple(r[r > 0]) for b in view for r in b["input_ids"].reshape(-1, b["input_ids"].shape[-1]))
  assert rows(views["fixed"]) == rows(batches) == rows(views["peer_fixed"]) == rows(views["peer_dynamic"])
  assert not all(np.array_equal(a["input_ids"][..., :16], b["input_ids"])  # re-batched
                 for a, b in zip(views["fixed"], batches))
  for fixed, peer_fixed, dynamic in zip(views["fixed"], views["peer_fixed"], views["peer_dynamic"]):
    assert fixed["input_ids"].shape == (2, 2, 24) and peer_fixed["input_ids"].shape == (4, 24)
    np.testing.assert_array_equal(fixed["example_id"].reshape(-1), np.arange(4))
    np.testing.assert_array_equal(fixed["label"].reshape(-1), fixed["input_ids"].reshape(4, 24)[:, 0])
    longest = fixed["attention_mask"].reshape(4, 24).sum(1).max()
    np.testing.assert_array_equal(dynamic["input_ids"], peer_fixed["input_ids"][:, :longest])
