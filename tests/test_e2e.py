"""Short real runs through the library entry point: every --aug distils and writes summary.json;
fine-tuning with augmentation; a custom TSV; eval mode. Tiny settings on real SST-2. The distilling
runs learn from a teacher fine-tuned from a random 2x32 BERT with MiniLM's vocabulary (the code
paths are the same, and an 8-device MiniLM step costs seconds); fine-tuning starts from the real
MiniLM, and the README and experiment tests distil from a MiniLM teacher."""

import json
import os
import pathlib
import stat

import numpy as np
import pytest

from augpro_jax import config as config_lib
from augpro_jax import context
from augpro_jax import evaluation
from augpro_jax import train

pytestmark = pytest.mark.slow  # subprocesses, end-to-end runs or benchmarks: not in `make test-fast`

TINY = dict(max_seq_len=16, batch_size=8, eval_batch_size=16, student_layers=1, num_train_steps=2,
            train_size=48, eval_size=24, log_every=1, checkpoint_every=0, progress=False)
# The students match the 2x32 teacher's width: the representation-level augmentations move both
# models' embeddings, so they need equal widths.
NARROW = dict(student_hidden=32, student_heads=2, student_intermediate=64)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> pathlib.Path:
  from test_resume import _write_tiny_bert  # pylint: disable=import-outside-toplevel
  return _write_tiny_bert(tmp_path_factory.mktemp("bert") / "bert")


@pytest.fixture(scope="module")
def teacher(glue, tiny_bert, tmp_path_factory) -> pathlib.Path:
  workdir = tmp_path_factory.mktemp("teacher")
  cfg = config_lib.Config(task="sst2", mode="train_teacher", glue_dir=str(glue), workdir=str(workdir),
                          teacher=str(tiny_bert), teacher_num_epochs=0.25, **TINY)  # 2 steps
  summary = train.run(cfg)
  assert (workdir / "final" / "model.json").exists()
  assert (workdir / "final" / "hf" / "model.safetensors").exists()  # also for transformers
  assert summary["mode"] == "train_teacher"
  return workdir / "final"


def _wordnet_or_skip():
  from augpro_jax import errors, synonyms  # pylint: disable=import-outside-toplevel
  try:
    synonyms.load_wordnet(None)
  except errors.UserError as exc:
    pytest.skip(f"WordNet missing ({exc}); run scripts/install_wordnet.sh")


@pytest.mark.parametrize("aug", ["none", "mixup", "fgsm", "augpro_mix", "augpro_fgsm", "augpro",
                                 "knn", "synonym"])
def test_distill_with_every_augmentation(aug, teacher, tiny_bert, glue, tmp_path):
  if aug == "synonym":
    _wordnet_or_skip()
  cfg = config_lib.Config(task="sst2", mode="distill", aug=aug, shift_degree=0.3,
                          glue_dir=str(glue), workdir=str(tmp_path), teacher_ckpt=str(teacher),
                          teacher=str(tiny_bert), **TINY, **NARROW)
  train.run(cfg)
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["aug"] == aug and summary["steps"] == 2
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  final_eval = [l for l in lines if l["kind"] == "eval"][-1]
  assert summary["dev"]["accuracy"] == final_eval["accuracy"]
  correct = summary["dev"]["accuracy"] * TINY["eval_size"]  # a count of the 24 dev examples
  assert abs(correct - round(correct)) < 1e-6
  with np.load(tmp_path / "dev_predictions.npz") as saved:  # per example, in file order
    assert saved["dev/predictions"].shape == (TINY["eval_size"],)
    assert np.mean(saved["dev/predictions"] == saved["dev/labels"]) == summary["dev"]["accuracy"]
    # The log's predicted-class shares (not the summary's metrics) are the predictions' shares.
    shares = [np.mean(saved["dev/predictions"] == c) for c in (0, 1)]
  assert [final_eval["predicted_share/0"], final_eval["predicted_share/1"]] == shares
  assert not any(k.startswith("predicted_share") for k in summary["dev"])
  assert summary["teacher_ckpt"] == str(teacher)
  assert len(summary["student_params_sha256"]) == 64
  # The student's size and prediction speed beside the teacher's, and the last console line's.
  speed = summary["inference"]
  assert speed["student"]["params"] == summary["params"] < speed["teacher"]["params"]
  assert speed["student"]["examples_per_sec"] > 0 and speed["teacher"]["examples_per_sec"] > 0
  import main  # pylint: disable=import-outside-toplevel
  ratio = speed["student"]["examples_per_sec"] / speed["teacher"]["examples_per_sec"]
  assert (f"student {summary['params'] / 1e6:.1f}M parameters (teacher "
          f"{speed['teacher']['params'] / 1e6:.1f}M), {ratio:.1f}x the teacher's") in main.result_line(
              cfg, summary)
  if aug in ("mixup", "fgsm", "none"):
    assert summary["measured_shift"] is None
  else:
    assert 0.1 < summary["measured_shift"] < 0.5, summary["measured_shift"]
  assert [l["step"] for l in lines if l["kind"] == "train"] == [1, 2]
  train_lines = [l for l in lines if l["kind"] == "train"]
  profile = summary["projection_profile"]
  if aug in ("augpro_mix", "augpro_fgsm", "augpro", "knn"):  # the projections' profile
    assert profile["changed_tokens"] == sum(l["changed_tokens"] for l in train_lines) > 0
    for key in ("continuation_share", "non_ascii_share"):
      assert 0.0 <= profile[key] <= 1.0 and all(key in l for l in train_lines)
    mixes = aug in ("augpro_mix", "augpro")
    assert (profile["partner_share"] is not None) == mixes
    assert all(("partner_share" in l) == mixes for l in train_lines)
  else:
    assert profile is None
  assert any(l["kind"] == "eval" for l in lines)
  assert list((tmp_path / "tensorboard").iterdir())


def test_finetune_with_augmentation_keeps_labels(glue, tiny_bert, tmp_path):
  cfg = config_lib.Config(task="sst2", mode="finetune", aug="augpro_mix", glue_dir=str(glue),
                          workdir=str(tmp_path / "run"), teacher=str(tiny_bert), **TINY, **NARROW)
  mask = os.umask(0o022)
  try:
    summary = train.run(cfg)
  finally:
    os.umask(mask)
  assert summary["mode"] == "finetune" and summary["teacher_ckpt"] is None
  assert summary["measured_shift"] is not None
  # Everything the run wrote (checkpoints, final/, metrics) has the umask's normal permissions.
  modes = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in (tmp_path / "run").rglob("*")}
  assert modes and {p: m for p, m in modes.items()
                    if m != ("0o755" if pathlib.Path(p).is_dir() else "0o644")} == {}


def test_custom_tsv_distillation_and_eval(tmp_path, teacher, tiny_bert):
  rows = ["text\tscore"] + [f"{'great fun' if i % 2 else 'boring and bad'} film {i}\t"
                            f"{'pos' if i % 2 else 'neg'}" for i in range(40)]
  (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n")
  (tmp_path / "dev.tsv").write_text("\n".join(rows[:17]) + "\n")
  settings = {**TINY, **NARROW, "train_size": None, "eval_size": None}
  cfg = config_lib.Config(task="custom", mode="distill", aug="knn", train_file=str(tmp_path / "train.tsv"),
                          eval_file=str(tmp_path / "dev.tsv"), text_fields=("text",),
                          label_field="score", workdir=str(tmp_path / "run"),
                          teacher_ckpt=str(teacher), teacher=str(tiny_bert),
                          student_init="fine_tuned", **settings)
  summary = train.run(cfg)
  assert summary["task"] == "custom" and set(summary["dev"]) >= {"accuracy"}
  evaluated = train.run(cfg.replace(mode="eval"))
  assert evaluated["dev"] == summary["dev"]


def test_regression_task_distils(glue, tiny_bert, tmp_path):
  """STS-B end to end in distill mode: a regression teacher is trained in the workdir, then its
  scores are distilled (MSE) into the student with AugPro-FGSM. The teacher is a random 2x32 BERT
  with MiniLM's vocabulary: the regression path does not depend on the backbone's size."""
  cfg = config_lib.Config(task="stsb", mode="distill", aug="augpro_fgsm", glue_dir=str(glue),
                          workdir=str(tmp_path / "run"), teacher=str(tiny_bert),
                          teacher_num_epochs=0.1, **TINY, **NARROW)  # 1 teacher step
  summary = train.run(cfg)
  assert summary["mode"] == "distill"
  assert set(summary["dev"]) == {"pearson", "spearmanr"}
  assert set(summary["teacher_dev"]) == {"pearson", "spearmanr"}
  assert (tmp_path / "run" / "teacher" / "final" / "model.json").exists()
  assert summary["measured_shift"] is not None and summary["flops_per_step"]["teacher_forward"] > 0


def test_token_utilisation_is_what_the_batches_hold(glue, tmp_path):
  """summary.json and metrics.jsonl report real tokens / tokens processed of the very batches the
  run trained and evaluated on, recomputed here from the input pipeline."""
  from augpro_jax import input_pipeline as pipeline  # pylint: disable=import-outside-toplevel
  cfg = config_lib.Config(task="sst2", mode="finetune", aug="none", glue_dir=str(glue),
                          workdir=str(tmp_path), bucket_compile_steps=0.0,
                          **{**TINY, **NARROW, "max_seq_len": 48, "num_train_steps": 3})
  summary = train.run(cfg)
  ctx = context.build_context(cfg)
  assert summary["length_buckets"] == list(ctx.buckets) and len(ctx.buckets) > 1
  real, processed, per_step = 0, 0, []
  for step in range(3):
    batch = pipeline.train_batch(ctx.train, step, cfg.batch_size, cfg.seed, ctx.layout,
                                 buckets=ctx.buckets)
    mask = batch["attention_mask"]
    real, processed = real + mask.sum(), processed + mask.size
    per_step.append(mask.sum() / mask.size)
  assert summary["token_utilisation"]["train"] == pytest.approx(real / processed, rel=1e-6)
  lines = map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
  logged = [line["token_utilisation"] for line in lines if line["kind"] == "train"]
  assert logged == pytest.approx(per_step, rel=1e-6)
  assert summary["token_utilisation"]["eval"] == pytest.approx(
      pipeline.eval_token_utilisation(list(ctx.dev.values()), cfg.eval_batch_size, ctx.buckets))
  assert sum(int(v) for v in summary["steps_per_length"].values()) == 3
