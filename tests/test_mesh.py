"""Training on a [data, fsdp] mesh through main.py (docs/multihost.md): other meshes give the same
run as data parallelism over all 8 devices, and a checkpoint moves between meshes.

The runs are main.py's own parse-validate-run path in this process (8 fake CPU devices). The models
are tiny (a 2x32 teacher, a 1x32 student), so the size below which `sharding` keeps a leaf whole is
lowered for the module: every kernel and embedding table is then really split over `fsdp`.
Dropout is off and the augmentation is per example (knn), so no random draw depends on the mesh;
what remains is the order of floating-point sums.
"""

import json
import pathlib
import shutil

import numpy as np
import pytest

from augpro_jax import sharding
from test_resume import _write_data, _write_tiny_bert

pytestmark = pytest.mark.slow  # several end-to-end runs: not in `make test-fast`
STEPS, MOVED_AT = 50, 25
MESHES = {"data8": (), "data2_fsdp4": ("--mesh_data=2", "--mesh_fsdp=4"),
          "fsdp8": ("--mesh_fsdp=8",)}


def run_main(*args: str) -> int:
  import main  # pylint: disable=import-outside-toplevel
  main.FLAGS.unparse_flags()
  try:
    return main.main(main.parse_flags(["main.py", *args]))
  finally:
    main.FLAGS.unparse_flags()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """{mesh name: workdir} of one distillation per mesh, from one teacher."""
  root = tmp_path_factory.mktemp("mesh")
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(sharding, "MIN_SHARDED_SIZE", 256)
    train, dev = _write_data(root)
    bert = _write_tiny_bert(root / "bert")
    common = ["--task=custom", f"--train_file={train}", f"--eval_file={dev}",
              "--text_fields=sentence", "--label_field=label", f"--teacher={bert}",
              "--max_seq_len=16", "--batch_size=8", "--length_buckets=none", "--progress=false",
              "--dropout=0"]
    assert run_main(*common, "--mode=train_teacher", "--teacher_num_epochs=1",
                    f"--workdir={root / 'teacher'}") == 0
    workdirs = {}
    for name, mesh in MESHES.items():
      workdirs[name] = root / name
      assert run_main(*common, *mesh, *distill_args(root, workdirs[name])) == 0
    yield root, common, workdirs


def distill_args(root: pathlib.Path, workdir: pathlib.Path) -> list[str]:
  return ["--mode=distill", "--aug=knn", f"--teacher_ckpt={root / 'teacher'}",
          "--student_layers=1", "--student_hidden=32", "--student_heads=2",
          f"--num_train_steps={STEPS}", f"--checkpoint_every={MOVED_AT}", "--log_every=1",
          f"--workdir={workdir}"]


def train_losses(workdir: pathlib.Path) -> dict[int, float]:
  losses = {}
  for line in (workdir / "metrics.jsonl").read_text().splitlines():
    record = json.loads(line)
    if record.get("kind") == "train":
      losses[record["step"]] = record["loss"]
  return losses


def final_params(workdir: pathlib.Path) -> list[np.ndarray]:
  import jax  # pylint: disable=import-outside-toplevel
  from augpro_jax import checkpoints  # pylint: disable=import-outside-toplevel
  _, params, _ = checkpoints.load_exported(workdir / "final")
  return [np.asarray(x) for x in jax.tree.leaves(params)]


def test_every_mesh_trains_the_same_student(runs):
  """--mesh_data=2 --mesh_fsdp=4 and --mesh_fsdp=8 give the losses of plain data parallelism over
  8 devices within 1e-4 at every one of 50 steps, the same dev metrics and parameters within
  1e-5; the summary records the mesh."""
  _, _, workdirs = runs
  want = train_losses(workdirs["data8"])
  assert sorted(want) == list(range(1, STEPS + 1))
  want_summary = json.loads((workdirs["data8"] / "summary.json").read_text())
  for name in ("data2_fsdp4", "fsdp8"):
    got = train_losses(workdirs[name])
    assert sorted(got) == sorted(want)
    np.testing.assert_allclose([got[s] for s in sorted(got)], [want[s] for s in sorted(want)],
                               rtol=1e-4, atol=1e-6)
    summary = json.loads((workdirs[name] / "summary.json").read_text())
    assert summary["dev"] == pytest.approx(want_summary["dev"], abs=1e-6)
    for a, b in zip(final_params(workdirs[name]), final_params(workdirs["data8"])):
      np.testing.assert_allclose(a, b, atol=1e-5)
  assert json.loads((workdirs["fsdp8"] / "summary.json").read_text())["mesh"] == \
      {"data": 1, "fsdp": 8}
  assert want_summary["mesh"] == {"data": 8, "fsdp": 1}


def test_a_checkpoint_moves_to_another_mesh(runs, tmp_path):
  """A run on --mesh_data=2 --mesh_fsdp=4, stopped after its step-25 checkpoint, resumes on
  --mesh_data=8 and ends where the run that never moved ended (within 1e-5)."""
  root, common, workdirs = runs
  moved = tmp_path / "moved"
  shutil.copytree(workdirs["data2_fsdp4"], moved)
  # What the run had on disk after step 25: later checkpoints, the export and summary go.
  shutil.rmtree(moved / "checkpoints" / str(STEPS))
  shutil.rmtree(moved / "final")
  (moved / "summary.json").unlink()
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(sharding, "MIN_SHARDED_SIZE", 256)
    assert run_main(*common, "--mesh_data=8", *distill_args(root, moved)) == 0
  summary = json.loads((moved / "summary.json").read_text())
  assert summary["resumed_from_step"] == MOVED_AT and summary["mesh"] == {"data": 8, "fsdp": 1}
  got, want = train_losses(moved), train_losses(workdirs["data2_fsdp4"])
  np.testing.assert_allclose([got[s] for s in range(MOVED_AT + 1, STEPS + 1)],
                             [want[s] for s in range(MOVED_AT + 1, STEPS + 1)], rtol=1e-5,
                             atol=1e-7)
  for a, b in zip(final_params(moved), final_params(workdirs["data2_fsdp4"])):
    np.testing.assert_allclose(a, b, atol=1e-5)
