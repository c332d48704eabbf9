"""--mode=compile: chip facts and the roofline, the memory verdict, and the real step compiled for
a TPU topology (needs libtpu; skipped without it) and on 8 CPU devices for the FSDP memory claim."""

import importlib.util

import jax
import pytest

from augpro_jax import aot
from augpro_jax import chips
from augpro_jax import config as config_lib
from augpro_jax import sharding
from augpro_jax import students
from augpro_jax.errors import UserError

needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="libtpu is not installed (make setup-tpu): TPU compiles cannot run here")


def tiny_cfg(**overrides):
  knobs = dict(mode="compile", compile_teacher="custom", benchmark_teacher_layers=2,
               benchmark_teacher_hidden=128,
               student_layers=1, student_hidden=64, student_heads=4, batch_size=16,
               max_seq_len=32, aug="augpro_mix")
  knobs.update(overrides)
  return config_lib.Config(**knobs).validate()


def test_chip_for_topology():
  assert chips.for_topology("v5e:16x16") is chips.CHIPS["v5e"]
  assert chips.for_topology("v4:2x2x2").hbm_bytes == 32 * 2**30
  assert chips.for_topology("v5litepod:4x4").name == "v5e"
  with pytest.raises(UserError, match="unknown TPU version 'v9'"):
    chips.for_topology("v9:2x2")


def test_roofline_takes_the_slower_bound():
  chip = chips.CHIPS["v5e"]
  compute = chips.roofline(chip, flops_per_chip=197e12, bytes_per_chip=819e9 / 2)
  assert compute["step_seconds"] == pytest.approx(1.0) and compute["bound"] == "compute"
  memory = chips.roofline(chip, flops_per_chip=197e12 / 4, bytes_per_chip=819e9 * 2)
  assert memory["step_seconds"] == pytest.approx(2.0) and memory["bound"] == "memory"


def test_out_of_memory_message_is_a_verdict_not_a_crash():
  message = ("RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory "
             "space hbm. Used 24.51G of 15.75G hbm. Exceeded hbm capacity by 8.76G.")
  oom = aot.out_of_memory(message)
  assert oom["needed_bytes"] == pytest.approx(24.51 * 2**30)
  assert oom["compiler_hbm_bytes"] == pytest.approx(15.75 * 2**30)
  # The wording of libtpu 0.0.42.1 (a DeBERTa-v2-xxlarge-sized fine-tuning step on v5e:16x16).
  other = aot.out_of_memory("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory "
                            "required for HLO temporaries (39.36G) exceeds available HBM (15.75G).")
  assert other == {"needed_bytes": 39.36 * 2**30, "compiler_hbm_bytes": 15.75 * 2**30}
  assert aot.out_of_memory("INVALID_ARGUMENT: something else") is None
  report = {"step": "train_teacher", "topology": "v5e:4x4", "mesh": {"data": 16, "fsdp": 1},
            "memory": oom, "fits": False}
  line = aot.verdict(report, chips.CHIPS["v5e"])
  assert line.startswith("does not fit") and "24.51 GiB" in line and "14.90 GiB" in line
  assert "\n" not in line


@pytest.mark.parametrize("preset, family, params", [
    ("bert-large", "bert", 335e6), ("roberta-large", "roberta", 355e6),
    ("deberta-v2-xxlarge", "deberta-v2", 1.5e9)])
def test_presets_are_the_published_models(preset, family, params):
  """Each preset is its checkpoint's family and size (the published parameter counts, head
  aside); DeBERTa-v2-xxlarge with its relative attention and its convolution."""
  config = aot.teacher_config(tiny_cfg(compile_teacher=preset, max_seq_len=128), 2)
  shape = aot.model_shape(config)
  assert shape["family"] == family and abs(shape["params"] / params - 1) < 0.05, shape
  if family == "deberta-v2":
    assert (config.conv_kernel_size, config.position_buckets, config.max_relative_positions,
            config.pos_att_type, config.position_biased_input) == (3, 256, 512, "p2c|c2p", False)


def test_missing_libtpu_and_bad_settings_are_one_line_errors(monkeypatch):
  with pytest.raises(UserError, match="unknown --compile_teacher"):
    aot.teacher_config(tiny_cfg(compile_teacher="gpt-9"), 2)
  with pytest.raises(UserError, match="--compile_step"):
    aot.check(tiny_cfg(compile_step="eval"), 16)
  with pytest.raises(UserError, match="divisible by the 16 chips"):
    aot.check(tiny_cfg(batch_size=20), 16)
  monkeypatch.setattr(aot.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(UserError, match="make setup-tpu"):
    aot.run(tiny_cfg())


@needs_libtpu
@pytest.mark.slow
def test_compile_for_a_tpu_topology(tmp_path):
  """The distillation step compiles for 4 v5e chips; FSDP halves the state each chip holds."""
  reports = {}
  for fsdp in (1, 2):
    out = tmp_path / f"fsdp{fsdp}.json"
    reports[fsdp] = aot.run(tiny_cfg(topology="v5e:2x2", mesh_fsdp=fsdp, compile_out=str(out)))
    assert out.is_file()
  one, two = reports[1], reports[2]
  assert one["mesh"] == {"data": 4, "fsdp": 1} and two["mesh"] == {"data": 2, "fsdp": 2}
  assert one["device_kind"].startswith("TPU v5")
  assert one["fits"] and one["verdict"].startswith("fits")
  assert one["cost_per_chip"]["flops"] > 0 and one["roofline"]["step_seconds"] > 0
  assert 0 < one["mfu"] < 1
  assert one["memory"]["argument"] > 0
  assert two["state_bytes_per_chip"] < 0.55 * one["state_bytes_per_chip"]
  assert two["memory"]["argument"] < one["memory"]["argument"]


def _argument_bytes(cfg, data, fsdp):
  """Per-device argument bytes (state + teacher + batch) of the step compiled on the CPU mesh."""
  num_labels = 2
  t_config = aot.teacher_config(cfg, num_labels)
  s_config = students.student_config(cfg, t_config, num_labels)
  step_fn, state, teacher, batch, _ = aot.build_step(cfg, "distill", t_config, s_config,
                                                     num_labels, False)
  mesh = sharding.make_mesh(jax.devices(), data, fsdp)
  compiled, oom = aot.compile_on_mesh(step_fn, mesh, state, teacher, batch)
  assert oom is None
  return aot.memory(compiled)["argument"]


@pytest.mark.slow
def test_fsdp_divides_parameter_and_optimizer_bytes_on_8_devices():
  """Per device, --mesh_fsdp=8 holds at most 1/8 of what --mesh_data=8 holds, plus 10% (compiled
  memory analysis; BERT-shaped teacher and student, small; experiments/mesh_memory.py does the
  BERT-large shapes)."""
  cfg = tiny_cfg(benchmark_teacher_hidden=256, student_hidden=256, student_heads=4, batch_size=8,
                 max_seq_len=16, projection_chunk=4096)  # augpro_mix: the teacher runs too
  replicated = _argument_bytes(cfg, 8, 1)
  split = _argument_bytes(cfg, 1, 8)
  print(f"per-device argument bytes: replicated {replicated:.0f}, fsdp=8 {split:.0f}")
  assert split <= replicated / 8 * 1.1, (split, replicated)


def test_pod_table_row_says_fits_or_not():
  from experiments import pod_table  # pylint: disable=g-import-not-at-top
  report = {"step": "train_teacher", "teacher": {"preset": "deberta-v2-xxlarge", "params": 1.5e9},
            "student": None, "topology": "v5e:4x4", "mesh": {"data": 16, "fsdp": 1},
            "batch_per_chip": 8, "state_bytes_per_chip": 18e9, "teacher_bytes_per_chip": 0,
            "memory": {"needed_bytes": 30 * 2**30}, "chip": {"hbm_bytes": 16e9}, "fits": False}
  cells = [c.strip() for c in pod_table.row("name", report).split("|")[1:-1]]
  assert cells[1:7] == ["train_teacher", "deberta-v2-xxlarge (1500M)", "-", "v5e:4x4", "16x1", "8"]
  assert cells[7:] == ["16.76", "30.00 / 14.90", "**does not fit**", "-", "-"]
  report["memory"]["lower_bound"] = True
  cells = [c.strip() for c in pod_table.row("name", report).split("|")[1:-1]]
  assert cells[8] == "≥ 30.00 / 14.90"
  report.update(fits=True, roofline={"step_seconds": 0.05, "bound": "memory"}, mfu=0.25)
  cells = [c.strip() for c in pod_table.row("name", report).split("|")[1:-1]]
  assert cells[9:] == ["fits", "50.0 (memory)", "25.0%"]


@needs_libtpu
def test_state_larger_than_the_chip_is_a_verdict_without_compiling(tmp_path, monkeypatch):
  """When the parameters, Adam state and teacher alone exceed the chip, nothing is compiled."""
  small = chips.Chip("v5e", 1e6, 197e12, 819e9, "test")
  monkeypatch.setattr(aot.chips_lib, "for_topology", lambda topology: small)
  monkeypatch.setattr(aot, "compile_on_mesh", lambda *a: pytest.fail("compiled"))
  report = aot.run(tiny_cfg(topology="v5e:2x2", compile_out=str(tmp_path / "c.json")))
  resident = report["state_bytes_per_chip"] + report["teacher_bytes_per_chip"]
  assert resident > 1e6 and report["memory"] == {"needed_bytes": resident, "lower_bound": True}
  assert not report["fits"] and "cost_per_chip" not in report
  assert report["verdict"].startswith("does not fit") and "at least" in report["verdict"]
