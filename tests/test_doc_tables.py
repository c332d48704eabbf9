"""experiments/doc_tables_reference.py: the docs' derived tables of measurements (no JAX)."""

import json
import pathlib
import shutil

import pytest

from experiments import doc_tables_reference as ref

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "results"


def test_the_committed_reference_tables_are_what_the_committed_results_make():
  assert ref.update(RESULTS, check=True) == [], "run experiments/doc_tables_reference.py"


def _synthetic(mix=2.0, fgsm=1.5, share=0.1, memory=0.12, flax=1.3, torch=0.9):
  method = lambda aug, ratio, **kw: {"aug": aug, "ratio_to_none": ratio,
                                     "step_ms_median": 100 * ratio, **kw}
  return {"methods": [method("none", 1.0), method("mixup", 1.9),
                      method("augpro_mix", mix, ratio_to_none_same_examples=1.05,
                             projection_fraction=share),
                      method("augpro_fgsm", fgsm, ratio_to_none_same_examples=1.1)],
          "peers": [{"name": "hf_flax", "ratio_ours_to_peer": flax},
                    {"name": "hf_torch", "ratio_ours_to_peer": torch}],
          "parts": {"projection_memory_ratio": memory},
          "none_same_examples": {"batch": 64, "step_ms_median": 190.0}}


def _targets(tmp_path, **values) -> dict[str, str]:
  (tmp_path / "benchmark_cpu.json").write_text(json.dumps(_synthetic(**values)))
  rows = [line.split(" | ") for line in ref.synthetic_targets(tmp_path).splitlines()
          if line.startswith("| ") and not line.startswith("| target")]
  return {cells[0][2:]: cells[-1].rstrip(" |") for cells in rows}


def test_a_target_is_met_exactly_when_the_measurement_is_within_it(tmp_path):
  met = _targets(tmp_path, mix=1.25, fgsm=1.8, share=0.15, memory=0.125, flax=1.2, torch=1.0)
  assert set(met.values()) == {"yes"} and len(met) == 6
  missed = _targets(tmp_path, mix=1.26, fgsm=1.81, share=0.151, memory=0.126, flax=1.19,
                    torch=0.99)
  assert set(missed.values()) == {"no"} and len(missed) == 6


def test_the_task_targets_describe_the_timed_batches_not_the_warm_up(tmp_path):
  report = {"data": {"train_examples": 10, "lengths": {"mean": 9.0, "median": 8, "p95": 16,
                                                       "max": 20},
                     "length_buckets": [8, 16, 24], "batch_lengths": [24, 24, 8, 16, 8],
                     "split_token_utilisation": {"buckets": 0.8, "fixed": 0.1}},
            "ratios": {"none_over_hf_flax": 3.0, "none_over_hf_torch": 1.2,
                       "buckets_over_max_seq_len": {"none": 2.9}},
            "methods": [{"name": "none", "token_utilisation": 0.74}],
            "timing": {"warmup": 2, "steps": 3}}
  (tmp_path / "benchmark_task_sst2_cpu.json").write_text(json.dumps(report))
  text = ref.task_targets(tmp_path)
  assert "The 3 timed batches have lengths 8 (2), 16 " in text
  assert [line.rstrip(" |").rsplit("| ", 1)[-1] for line in text.splitlines()
          if line.startswith("| ") and "target" not in line] == ["yes", "no", "no", "no"]


def test_a_benchmark_result_without_its_command_and_machine_is_refused(tmp_path):
  shutil.copy(RESULTS / "benchmark_cpu.json", tmp_path / "benchmark_cpu.json")
  assert "`benchmark_cpu.{json,md}` | `--max_seq_len=64" in ref.runs_table(tmp_path)
  (tmp_path / "benchmark_cpu_new.json").write_text("{}")
  with pytest.raises(ValueError, match="no command and machine in RUNS for benchmark_cpu_new"):
    ref.runs_table(tmp_path)


def test_only_the_rows_of_one_aug_at_its_defaults_are_kept(tmp_path):
  (tmp_path / "show_augmentations.md").write_text("\n".join([
      "| variant | sentence 1 |", "|---|---|", "| original | a b |", "| `--aug=augpro_mix` | a c |",
      "| `--aug=augpro_mix --mix_lambda=folded` | a d |", "| `--aug=knn` | a e |"]))
  rows = ref.augmentation_defaults(tmp_path).splitlines()[2:]
  assert rows == ["| variant | sentence 1 |", "|---|---|", "| original | a b |",
                  "| `--aug=augpro_mix` | a c |", "| `--aug=knn` | a e |"]
