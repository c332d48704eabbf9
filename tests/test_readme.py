"""Every `main.py` command in README.md runs as written on the shipped GLUE data.

Each command is taken from the README's sh blocks (continuation lines joined, comments dropped,
`$GLUE_DIR` expanded) and its flags parsed and validated exactly as main.py does; the data files
it names, and the GLUE splits it would read (with --dev_from_train, --train_size...), are read.
The slow test runs the first two commands for real, with tiny sizes appended.
"""

import os
import pathlib
import shlex
import subprocess
import sys

import pytest

from augpro_jax import config as config_lib
from augpro_jax import data as data_lib
from conftest import REPO
from xla_env import xla_flags

ENTRIES = (".venv/bin/python main.py", "python main.py", "augpro-jax")
# Appended to a README command to run it in seconds (later flags win in absl).
TINY = ["--train_size=64", "--eval_size=32", "--num_train_steps=2", "--teacher_num_epochs=0.25",
        "--max_seq_len=16", "--batch_size=8", "--eval_batch_size=16", "--student_layers=1",
        "--progress=false", "--checkpoint_every=0"]


def readme_commands(text: str) -> list[list[str]]:
  """The flags of each command of the README's ```sh blocks that starts with an entry point."""
  commands, in_block, pending = [], False, ""
  for line in text.splitlines():
    if line.startswith("```"):
      in_block = line.strip() == "```sh"
      continue
    if not in_block:
      continue
    pending += line.rstrip()
    if pending.endswith("\\"):
      pending = pending[:-1] + " "
      continue
    words = shlex.split(os.path.expandvars(pending), comments=True)
    pending = ""
    for entry in ENTRIES:
      head = entry.split()
      if words[:len(head)] == head:
        commands.append(words[len(head):])
  return commands


def parse(args: list[str]) -> config_lib.Config:
  import main  # pylint: disable=import-outside-toplevel
  main.FLAGS.unparse_flags()
  main.FLAGS(["main.py", *args])
  return main.config_from_flags().validate()


@pytest.fixture(scope="module")
def commands(glue) -> list[list[str]]:
  os.environ["GLUE_DIR"] = str(glue)
  found = readme_commands((REPO / "README.md").read_text())
  assert len(found) >= 8, found
  return found


def test_extraction_joins_lines_drops_comments_and_expands_glue_dir(monkeypatch):
  monkeypatch.setenv("GLUE_DIR", "/data")
  text = ("```sh\n.venv/bin/python main.py --task=a \\\n    --eval_file=$GLUE_DIR/x.tsv  # note\n"
          "make demo\naugpro-jax --mode=eval\n```\n\n```python\npython main.py --no\n```\n")
  assert readme_commands(text) == [["--task=a", "--eval_file=/data/x.tsv"], ["--mode=eval"]]


def test_every_readme_command_parses_validates_and_finds_its_data(commands):
  for args in commands:
    cfg = parse(args)
    for name in ("train_file", "eval_file", "predict_file"):
      path = getattr(cfg, name)
      assert path is None or pathlib.Path(path).is_file(), (args, name, path)
    if cfg.mode in ("benchmark", "predict") or (cfg.mode == "eval" and cfg.eval_file):
      continue
    task = data_lib.resolve_task(cfg)
    splits = task.dev_splits if cfg.mode == "eval" else ("train", *task.dev_splits)
    for split in splits:  # reads the file(s), with --dev_from_train and the size options applied
      assert len(data_lib.load_split(cfg, task, split)) > 0, (args, split)


@pytest.mark.slow
def test_the_first_readme_commands_run_with_tiny_sizes(commands, tmp_path):
  """The headline command and the first SST-2 distillation, end to end; then eval of the latter."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags(1)}  # as on a user's CPU
  sst2 = next(args for args in commands if "--task=sst2" in args and "--aug=augpro_mix" in args
              and not any(a.startswith("--mode") for a in args))
  evaluate = next(args for args in commands if "--mode=eval" in args and "--task=sst2" in args
                  and not any(a.startswith(("--teacher_ckpt", "--eval_file")) for a in args))
  for args in (commands[0], sst2, evaluate):
    result = subprocess.run([sys.executable, str(REPO / "main.py"), *args, *TINY],
                            capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert result.returncode == 0, (args, result.stderr[-3000:])
    assert "Traceback" not in result.stderr
  assert (tmp_path / "runs" / "sst2" / "eval_results.json").is_file()
  assert "dev_matched/accuracy" in result.stdout or (tmp_path / "runs").is_dir()


def test_pyproject_dependencies_hold_the_pins_and_the_command_is_main():
  import tomllib  # pylint: disable=import-outside-toplevel
  from packaging.requirements import Requirement  # pylint: disable=import-outside-toplevel
  project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
  pins = {}
  for line in (REPO / "requirements.txt").read_text().splitlines():
    if "==" in line and not line.startswith("#"):
      name, version = line.split("==")
      pins[name.lower().replace("_", "-")] = version.strip()
  declared = [Requirement(r) for r in project["dependencies"]]
  assert {"jax", "flax", "optax", "orbax-checkpoint", "tokenizers"} <= {r.name for r in declared}
  for req in declared:
    pinned = pins[req.name.lower().replace("_", "-")]
    assert req.specifier.contains(pinned), (str(req), pinned)
  module, function = project["scripts"]["augpro-jax"].split(":")
  import main  # pylint: disable=import-outside-toplevel
  assert module == "main" and callable(getattr(main, function))


def test_make_demo_runs_main_with_the_demo_flag_file_and_it_validates(glue):
  """`make demo` is `main.py --flagfile=experiments/demo.flags`: the file parses as main.py's flags
  into a valid distillation (experiments/demo_runs.py times the same file)."""
  makefile = (REPO / "Makefile").read_text()
  assert "main.py --flagfile=experiments/demo.flags --workdir=runs/demo" in makefile
  cfg = parse([f"--flagfile={REPO / 'experiments' / 'demo.flags'}", f"--glue_dir={glue}"])
  assert cfg.mode == "distill" and cfg.task == "sst2" and cfg.student_init == "fine_tuned"
