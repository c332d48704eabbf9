"""Hostile files and mixed processes (the catalogue in docs/robustness.md): a crafted
`pytorch_model.bin` (views outside their storage, sizes beyond config.json, zip bombs), processes
of one run started with other settings or data, models whose description disagrees with their
weights or task, non-finite outputs, bad labels, workdirs without their identity, and tidiness.
Every hostile file is built here; the torch checkpoints without torch, from the bytes torch.save
writes."""

import dataclasses
import errno
import json
import os
import pathlib
import shutil
import socket
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import types
import zipfile

import jax
import numpy as np
import pytest

from augpro_jax import checkpoints
from augpro_jax import data as data_lib
from augpro_jax import distributed
from augpro_jax import context
from augpro_jax import evaluation
from augpro_jax import hf_io
from augpro_jax import input_pipeline as pipeline
from augpro_jax import model as model_lib
from augpro_jax import predict
from augpro_jax import rendezvous
from augpro_jax import run_log
from augpro_jax import tasks as tasks_lib
from augpro_jax import torch_pickle
from augpro_jax import train
from augpro_jax import weight_files
from augpro_jax import workdir as workdir_lib
from augpro_jax.config import Config
from augpro_jax.errors import UserError
from test_model import assert_one_line, tiny

# ----------------------------------------------------------------------------------------------
# A torch.save zip written by hand: data.pkl (pickle protocol 2) and data/<key> storages.
# ----------------------------------------------------------------------------------------------


def _int(n: int) -> bytes:
  raw = n.to_bytes((n.bit_length() + 8) // 8 or 1, "little", signed=True)
  return b"\x8a" + bytes([len(raw)]) + raw  # LONG1


def _str(text: str) -> bytes:
  raw = text.encode()
  return b"X" + struct.pack("<I", len(raw)) + raw  # BINUNICODE


def _tuple(items) -> bytes:
  return b"(" + b"".join(_int(i) for i in items) + b"t"


def _tensor_pickle(tensors: dict[str, dict]) -> bytes:
  """`tensors`: name -> key, numel (of its float32 storage), offset, shape, stride."""
  out = b"\x80\x02}("
  for name, t in tensors.items():
    storage = (b"(" + _str("storage") + b"ctorch\nFloatStorage\n" + _str(t["key"]) + _str("cpu")
               + _int(t["numel"]) + b"tQ")  # BINPERSID
    out += (_str(name) + b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage + _int(t["offset"])
            + _tuple(t["shape"]) + _tuple(t["stride"]) + b"\x89ccollections\nOrderedDict\n)RtR")
  return out + b"u."


def write_bin(path: pathlib.Path, tensors: dict[str, dict], storages: dict[str, object]) -> None:
  """storages: key -> bytes, or an int n: n zero bytes, streamed (a zip bomb)."""
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
    archive.writestr("archive/data.pkl", _tensor_pickle(tensors))
    archive.writestr("archive/version", "3\n")
    for key, data in storages.items():
      if isinstance(data, int):
        with archive.open(f"archive/data/{key}", "w", force_zip64=True) as f:
          for _ in range(data >> 20):
            f.write(bytes(1 << 20))
      else:
        archive.writestr(f"archive/data/{key}", data)


def state_tensors(state: dict[str, np.ndarray]):
  tensors, storages = {}, {}
  for i, (name, value) in enumerate(state.items()):
    value = np.ascontiguousarray(value, np.float32)
    strides = tuple(s // 4 for s in value.strides)
    tensors[name] = {"key": str(i), "numel": value.size, "offset": 0, "shape": value.shape,
                     "stride": strides}
    storages[str(i)] = value.tobytes()
  return tensors, storages


def backbone_dir(path: pathlib.Path, config=None, **override) -> tuple[pathlib.Path, dict]:
  """A tiny BERT as config.json + a hand-written pytorch_model.bin; `override` replaces tensors."""
  config = config or tiny()
  path.mkdir(parents=True, exist_ok=True)
  (path / "config.json").write_text(json.dumps(hf_io.hf_config(config, ["a", "b"])))
  params = model_lib.init_tree(model_lib.param_shapes(config), jax.random.PRNGKey(0))
  state = hf_io.to_hf_state_dict(params)
  tensors, storages = state_tensors(state)
  for name, (tensor, data) in override.items():
    tensors[name.replace("__", ".")] = tensor
    storages[tensor["key"]] = data
  write_bin(path / "pytorch_model.bin", tensors, storages)
  return path, state


WORDS = "bert.embeddings.word_embeddings.weight"


def test_hand_written_checkpoint_loads_as_written(tmp_path):
  path, state = backbone_dir(tmp_path / "m")
  refs = torch_pickle.read_tensor_refs(path / "pytorch_model.bin")
  assert set(refs) == set(state)
  read = torch_pickle.read_state_dict(path / "pytorch_model.bin")
  np.testing.assert_array_equal(read[WORDS], state[WORDS])
  config, params = hf_io.load_pretrained(str(path), num_labels=2)
  np.testing.assert_array_equal(np.asarray(params["embeddings"]["word_embeddings"]["embedding"]),
                                state[WORDS])


def _words(**kw):
  return {"key": "w", "numel": 3200, "offset": 0, "shape": (100, 32), "stride": (32, 1), **kw}


@pytest.mark.parametrize("tensor, data, needles", [
    (_words(offset=3000), bytes(3200 * 4), ["outside its data"]),
    (_words(stride=(64, 1)), bytes(3200 * 4), ["outside its data"]),
    (_words(numel=6400), bytes(3200 * 4), ["holds 12800 bytes", "declares 25600"]),
    (_words(shape=(1 << 26,), stride=(0,)), bytes(4), ["shape [67108864]", "expected [100, 32]"]),
    (_words(numel=1 << 26), 1 << 28, ["storage of 67108864 elements"]),
], ids=["offset", "stride", "member_size", "size", "zip_bomb"])
def test_crafted_tensor_is_one_line_naming_it(tmp_path, tensor, data, needles):
  path, _ = backbone_dir(tmp_path / "m", **{WORDS.replace(".", "__"): (tensor, data)})
  with pytest.raises(UserError) as info:
    hf_io.load_pretrained(str(path), num_labels=2)
  assert_one_line(info, "pytorch_model.bin", *needles)
  if "size" not in needles[0] and "shape" not in needles[0]:
    assert WORDS in str(info.value)


_PEAK = textwrap.dedent("""
    import resource, sys
    from augpro_jax import hf_io
    from augpro_jax.errors import UserError
    hf_io.load_pretrained(sys.argv[1], num_labels=2)  # warm: JAX's backend, numpy, zipfile
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for bad in sys.argv[2:]:
      try:
        hf_io.load_pretrained(bad, num_labels=2)
        print("accepted", bad)
      except UserError as exc:
        print("refused", exc)
    print("growth_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
""")


@pytest.mark.slow
def test_crafted_files_cannot_grow_memory_past_twice_the_declared_tensors(tmp_path):
  # 413 bytes of pickle and storage that declare a 256 MiB tensor (stride 0 over one float), and
  # a 256 KiB zip member that inflates to 256 MiB; config.json declares 0.1 MiB of tensors.
  good, state = backbone_dir(tmp_path / "good")
  crafted, _ = backbone_dir(tmp_path / "crafted", **{WORDS.replace(".", "__"): (
      _words(shape=(1 << 26,), stride=(0,), numel=1), bytes(4))})
  bomb, _ = backbone_dir(tmp_path / "bomb", **{WORDS.replace(".", "__"): (
      _words(numel=1 << 26), 1 << 28)})
  assert (bomb / "pytorch_model.bin").stat().st_size < 2 << 20
  declared_kb = sum(v.nbytes for v in state.values()) // 1024
  result = subprocess.run([sys.executable, "-c", _PEAK, str(good), str(crafted), str(bomb)],
                          capture_output=True, text=True, timeout=300, check=True)
  lines = result.stdout.splitlines()
  assert [l.split()[0] for l in lines] == ["refused", "refused", "growth_kb"], result.stdout
  growth_kb = int(lines[-1].split()[1])
  assert growth_kb < 2 * declared_kb + 16 * 1024, result.stdout  # 16 MiB: allocator noise


# ----------------------------------------------------------------------------------------------
# Mixed processes: every process's settings are process 0's, or nobody starts.
# ----------------------------------------------------------------------------------------------


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _rendezvous(address, process_id, identity):
  try:
    return rendezvous.rendezvous(address, 2, process_id, 20.0, identity=identity)
  except UserError as exc:
    return exc


def test_handshake_refuses_a_partner_with_other_settings_on_both_processes():
  lead = {"seed": 0, "aug": "augpro_mix", "mode": "distill", "teacher_layers": [1, 2]}
  other = {**lead, "seed": 1, "aug": "knn"}
  address = f"127.0.0.1:{_free_port()}"
  results = {}
  peer = threading.Thread(target=lambda: results.update({1: _rendezvous(address, 1, other)}))
  peer.start()
  results[0] = _rendezvous(address, 0, lead)
  peer.join()
  want = ("process 1 was started with other settings than process 0: --aug: augpro_mix on "
          "process 0, knn on process 1; --seed: 0 on process 0, 1 on process 1; start every "
          "process with the same flags")
  assert [str(results[0]), str(results[1])] == [want, want]
  assert all(isinstance(r, UserError) for r in results.values())
  # Another mode reads other flags: the mode alone is named.
  assert rendezvous.identity_differences(1, lead, {"mode": "finetune", "seed": 3}) == (
      "process 1 was started with other settings than process 0: --mode: distill on process 0, "
      "finetune on process 1; start every process with the same flags")
  # The same settings (a tuple travels as a list) start.
  address = f"127.0.0.1:{_free_port()}"
  same = {**lead, "teacher_layers": (1, 2)}
  peer = threading.Thread(target=lambda: results.update({1: _rendezvous(address, 1, same)}))
  peer.start()
  results[0] = _rendezvous(address, 0, same)
  peer.join()
  assert [type(results[0]), type(results[1])] == [list, list]
  for _, conn in results[0] + results[1]:
    conn.close()


def test_processes_that_read_other_data_all_stop_naming_them(monkeypatch):
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  gathered = []
  monkeypatch.setattr(jax, "process_count", lambda: 3)
  monkeypatch.setattr(multihost_utils, "process_allgather",
                      lambda mine: np.stack([mine, *gathered]))
  digests = {"train": "1a", "validation": "2b"}
  theirs = distributed.hashlib.sha256(b"other").digest()
  gathered[:] = [np.frombuffer(theirs, np.uint8), None]
  gathered[1] = gathered[0]
  with pytest.raises(UserError) as info:
    distributed.same_data(digests)
  assert_one_line(info, "processes 1, 2 read other data than process 0")
  monkeypatch.setattr(multihost_utils, "process_allgather", lambda mine: np.stack([mine] * 3))
  distributed.same_data(digests)  # the same data everywhere: no error


# ----------------------------------------------------------------------------------------------
# A model is checked before it is used.
# ----------------------------------------------------------------------------------------------


def _exported(path: pathlib.Path, config, params, labels=("0", "1")) -> pathlib.Path:
  return checkpoints.export_model(path, config, params,
                                  {"task": "sst2", "num_labels": config.num_labels,
                                   "label_names": list(labels)},
                                  tokenizer_dir=hf_io.resolve_pretrained_dir("minilm"))


def _rewrite_model_json(directory: pathlib.Path, **config_fields) -> None:
  meta = json.loads((directory / "model.json").read_text())
  meta["config"].update(config_fields)
  (directory / "model.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("fields, needles", [
    ({"num_layers": 1}, ["model.json says 1 layers, params.msgpack has 2"]),
    ({"num_labels": 3}, ["model.json says 3 labels, params.msgpack's classifier has 2"]),
    ({"vocab_size": 50}, ["embeddings/word_embeddings/embedding is [100, 32] in params.msgpack, "
                          "[50, 32] from model.json"]),
    ({"intermediate_size": 32}, ["layer_0/intermediate/bias is [64] in params.msgpack, [32] from"]),
], ids=["layers", "labels", "vocabulary", "width"])
def test_model_json_that_disagrees_with_its_params_is_refused(tmp_path, fields, needles):
  config = tiny()
  params = model_lib.init_params(config, jax.random.PRNGKey(0))
  directory = checkpoints.export_model(tmp_path / "final", config, params,
                                       {"task": "sst2", "num_labels": 2})
  checkpoints.load_exported(directory)  # as written: fine
  _rewrite_model_json(directory, **fields)
  with pytest.raises(UserError) as info:
    checkpoints.load_exported(directory)
  assert_one_line(info, f"model {directory}: params.msgpack does not match model.json", *needles)


def test_one_token_type_model_is_refused_for_a_pair_task(glue, tmp_path):
  config = dataclasses.replace(tiny(vocab=30522), max_position_embeddings=64, type_vocab_size=1)
  model = _exported(tmp_path / "final", config, model_lib.init_params(config,
                                                                      jax.random.PRNGKey(0)))
  common = dict(mode="eval", teacher_ckpt=str(model), max_seq_len=64, eval_batch_size=16,
                progress=False, glue_dir=str(glue))
  # RTE marks its second sentence with token type 1, which this model has no embedding for.
  with pytest.raises(UserError) as info:
    train.run(Config(task="rte", **common))
  assert_one_line(info, f"model {model} has type_vocab_size 1", "task rte pairs two texts",
                  "marks them with 2 token types")
  train.run(Config(task="sst2", eval_size=16, **common))  # one text per example: fine


def test_nan_model_in_eval_and_predict_is_one_line_and_writes_nothing(glue, tmp_path):
  config = dataclasses.replace(tiny(vocab=30522), max_position_embeddings=64)
  params = jax.tree.map(lambda x: np.full_like(x, np.nan),
                        model_lib.init_params(config, jax.random.PRNGKey(0)))
  model = _exported(tmp_path / "final", config, params)
  texts = tmp_path / "texts.tsv"
  texts.write_text("sentence\nfine\nawful\nso so\n")
  common = dict(task="sst2", teacher_ckpt=str(model), max_seq_len=64, eval_batch_size=16,
                progress=False, glue_dir=str(glue))
  out = tmp_path / "p.jsonl"
  with pytest.raises(UserError) as info:
    train.run(Config(mode="predict", predict_file=str(texts), predict_out=str(out), **common))
  assert_one_line(info, "non-finite logits (NaN or infinity) for 3 of 3 examples")
  assert not out.exists()
  with pytest.raises(UserError) as info:
    train.run(Config(mode="eval", **common))
  assert_one_line(info, "non-finite logits (NaN or infinity) for 872 of 872 examples while "
                  "evaluating")


# ----------------------------------------------------------------------------------------------
# Labels and workdirs.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, content, line", [
    ("train.tsv", "sentence\tlabel\ngood film\t1\nbad film\t\n", 3),
    ("train.tsv", "sentence\tlabel\ngood film\t  \nbad film\t0\n", 2),
    ("train.jsonl", '{"sentence": "good", "label": 1}\n{"sentence": "bad", "label": " "}\n', 2),
], ids=["tsv_empty", "tsv_spaces", "jsonl_spaces"])
def test_empty_or_blank_label_is_a_line_numbered_error(tmp_path, name, content, line):
  path = tmp_path / name
  path.write_text(content)
  with pytest.raises(UserError) as info:
    data_lib._read_custom(str(path), "--train_file", ("sentence",), "label")  # pylint: disable=protected-access
  assert_one_line(info, f"{path} line {line}: empty label in column 'label'")


def test_labels_with_a_tab_or_line_break_stay_one_tsv_cell():
  task = tasks_lib.TaskSpec("custom", None, None, ("sentence",), "label", ("a\tb", "c\nd"),
                            ("dev",), "accuracy")
  text = predict.format_rows(task, np.array([[2.0, 0.0], [0.0, 2.0]]), ".tsv")
  rows = [line.split("\t") for line in text.splitlines()]
  assert [len(r) for r in rows] == [4, 4, 4], text
  assert rows[0] == ["index", "label", "prob_a\\tb", "prob_c\\nd"]
  assert [r[1] for r in rows[1:]] == ["a\\tb", "c\\nd"]


def _identity(cfg):
  return workdir_lib.identity(cfg, {"train": "aa", "dev": "bb"}, ("0", "1"))


def test_results_without_run_json_need_adopt_checkpoints(tmp_path, capsys):
  (tmp_path / "checkpoints").mkdir()  # run.json deleted, or never written
  current = _identity(Config(seed=1))
  with pytest.raises(UserError) as info:
    workdir_lib.check_identity(tmp_path, current, write=True)
  assert_one_line(info, f"workdir {tmp_path} has results but no run.json",
                  "pass --adopt_checkpoints")
  assert not (tmp_path / "run.json").exists()
  workdir_lib.check_identity(tmp_path, current, write=True, adopt=True)
  assert "--adopt_checkpoints: recording the current settings" in capsys.readouterr().err
  recorded = json.loads((tmp_path / "run.json").read_text())
  assert recorded["settings"]["seed"] == 1 and recorded["adopted"]
  # The adopted identity is enforced from then on; the flag itself is not part of it.
  workdir_lib.check_identity(tmp_path, _identity(Config(seed=1, adopt_checkpoints=True)),
                             write=True)
  with pytest.raises(UserError, match="--seed: 1 in the workdir, 2 now"):
    workdir_lib.check_identity(tmp_path, _identity(Config(seed=2)), write=True)


def test_num_epochs_may_change_when_num_train_steps_sets_the_length():
  old = _identity(Config(num_epochs=3, num_train_steps=50))
  assert workdir_lib.describe_differences(
      old, _identity(Config(num_epochs=5, num_train_steps=50))) == []
  assert workdir_lib.describe_differences(old, _identity(Config(num_epochs=5))) == [
      "--num_epochs: 3 in the workdir, 5 now", "--num_train_steps: 50 in the workdir, None now"]


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 0.0, -1e-5])
def test_learning_rate_must_be_finite_and_positive(value):
  with pytest.raises(UserError) as info:
    Config(learning_rate=value).validate()
  assert_one_line(info, f"--learning_rate must be finite and positive, got {value}")


# ----------------------------------------------------------------------------------------------
# Tidiness.
# ----------------------------------------------------------------------------------------------


def test_eval_batch_is_capped_at_the_split_size():
  ids = np.ones((3, 8), np.int32)
  split = pipeline.Tokenized(ids, ids, np.zeros_like(ids), np.zeros(3, np.int32), 0, [("x",)] * 3)
  layout = pipeline.Layout(local_devices=8)
  batches = list(pipeline.eval_batches(split, 128, layout))
  assert [b["index"].size for b in batches] == [8]  # 3 examples, one row per device, not 128
  assert sorted(np.concatenate([b["index"].ravel() for b in batches]).tolist()) == \
      [-1] * 5 + [0, 1, 2]
  assert pipeline.eval_batch_cap(128, 1000, layout) == 128
  # The summary's eval token utilisation counts the rows actually run.
  assert pipeline.eval_token_utilisation([split], 128, layout=layout) == pytest.approx(
      split.lengths.sum() / (8 * 8))


def test_full_disk_in_the_middle_of_a_metrics_line_leaves_whole_lines(tmp_path):
  writers = run_log.Writers(tmp_path, enabled=True)
  writers.write(0, "train", {"loss": 1.0})
  real = writers.jsonl

  class FillsUpMidLine:
    name = real.name

    def write(self, data):
      real.write(data[:len(data) // 2])
      raise OSError(errno.ENOSPC, "No space left on device")

    def fileno(self):
      return real.fileno()

  writers.jsonl = FillsUpMidLine()
  with pytest.raises(UserError) as info:
    writers.write(1, "train", {"loss": 0.5})
  assert_one_line(info, "cannot write metrics", "No space left on device")
  writers.jsonl = real
  writers.write(1, "train", {"loss": 0.5})  # space again: the run (or its rerun) goes on
  writers.close()
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines] == [0, 1]


def test_export_has_normal_permissions_and_a_killed_export_is_tidied(tmp_path):
  config = tiny()
  params = model_lib.init_params(config, jax.random.PRNGKey(0))
  old_mask = os.umask(0o022)
  try:
    final = checkpoints.export_model(tmp_path / "final", config, params, {"v": 1})
  finally:
    os.umask(old_mask)
  assert stat.S_IMODE(final.stat().st_mode) == 0o755
  assert {stat.S_IMODE(p.stat().st_mode) for p in final.iterdir()} == {0o644}
  # A kill between moving the old export aside and renaming the new one in, and a half-written
  # temporary export: the next start puts the old export back and removes the rest.
  os.replace(final, tmp_path / ".final.old-abc")
  (tmp_path / ".final.tmp-def").mkdir()
  (tmp_path / ".final.tmp-def" / "params.msgpack").write_bytes(b"half")
  checkpoints.tidy_exports(tmp_path)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
  assert checkpoints.load_exported(final)[2]["v"] == 1


def test_workdir_that_is_a_file_and_run_json_of_the_wrong_type_say_what_is_wrong(tmp_path):
  (tmp_path / "file").write_text("x")
  with pytest.raises(UserError) as info:
    context.ensure_workdir(tmp_path / "file")
  assert_one_line(info, f"workdir {tmp_path / 'file'} is a file, not a directory")
  (tmp_path / "run.json").write_text("[1, 2]")
  with pytest.raises(UserError) as info:
    workdir_lib.check_identity(tmp_path, _identity(Config()), write=True)
  assert_one_line(info, "run.json holds a JSON list, not a run identity")


def test_absurd_config_sizes_are_refused_before_anything_is_allocated(tmp_path):
  path, _ = backbone_dir(tmp_path / "m")
  raw = json.loads((path / "config.json").read_text())
  (path / "config.json").write_text(json.dumps({**raw, "vocab_size": 10**9,
                                                "hidden_size": 4096, "num_attention_heads": 64}))
  with pytest.raises(UserError) as info:
    hf_io.load_pretrained(str(path), num_labels=2)
  assert_one_line(info, "config.json declares a model of", "more than this program handles")


def test_tokenizer_with_an_empty_vocabulary_is_one_line(tmp_path):
  import tokenizers  # pylint: disable=import-outside-toplevel
  tokenizers.Tokenizer(tokenizers.models.WordPiece({}, unk_token="[UNK]")).save(
      str(tmp_path / "tokenizer.json"))
  with pytest.raises(UserError) as info:
    pipeline.load_tokenizer(tmp_path)
  assert_one_line(info, "has an empty vocabulary")


def test_a_start_that_fails_leaves_no_empty_workdir(glue, tmp_path):
  # A teacher whose weights do not match its config.json: the start fails after the workdir
  # was made and claimed.
  teacher, _ = backbone_dir(tmp_path / "teacher", **{WORDS.replace(".", "__"): (
      _words(offset=3000), bytes(3200 * 4))})
  shutil.copy(hf_io.resolve_pretrained_dir("minilm") / "tokenizer.json", teacher)
  workdir = tmp_path / "run"
  with pytest.raises(UserError, match="outside its data"):
    train.run(Config(task="sst2", mode="finetune", teacher=str(teacher), workdir=str(workdir),
                     glue_dir=str(glue), train_size=32, eval_size=16, max_seq_len=16,
                     batch_size=8, eval_batch_size=8, progress=False))
  assert not workdir.exists()


def test_the_backbone_is_read_once_per_run_and_again_when_it_changes(tmp_path, monkeypatch):
  path, _ = backbone_dir(tmp_path / "m")
  reads = []
  real_read = weight_files.WeightIndex.read  # pylint: disable=protected-access
  monkeypatch.setattr(weight_files.WeightIndex, "read",  # pylint: disable=protected-access
                      lambda self, shapes: reads.append(self.path) or real_read(self, shapes))
  vocab = types.SimpleNamespace(get_vocab_size=lambda: tiny().vocab_size)
  ctx = types.SimpleNamespace(teacher_dir=path, cfg=Config(dropout=0.1), tokenizer=vocab,
                              task=types.SimpleNamespace(num_labels=2, name="sst2",
                                                         text_fields=("sentence",)))
  train._pretrained(ctx)  # pylint: disable=protected-access  # the teacher's start
  train._pretrained(ctx)  # pylint: disable=protected-access  # the student's start
  assert len(reads) == 1
  backbone_dir(tmp_path / "m")  # written again: another file
  train._pretrained(ctx)  # pylint: disable=protected-access
  assert len(reads) == 2


def test_full_disk_in_the_tensorboard_thread_is_one_line_without_a_thread_traceback(
    tmp_path, capsys, monkeypatch):
  writers = run_log.Writers(tmp_path, enabled=True)
  writers.write(0, "train", {"loss": 1.0})
  events = writers.tb._get_file_writer().event_writer  # pylint: disable=protected-access

  def no_space(*unused):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(run_log, "_EVENT_WRITER_ERRORS", [])
  monkeypatch.setattr(events._ev_writer, "write_event", no_space)  # pylint: disable=protected-access
  try:  # queued, and the writer thread fails on it (or already on step 0's event: refused)
    writers.write(1, "train", {"loss": 0.5})
  except UserError:
    pass
  events._worker.join(timeout=30)  # pylint: disable=protected-access
  assert not events._worker.is_alive()  # pylint: disable=protected-access
  with pytest.raises(UserError) as info:
    writers.write(2, "train", {"loss": 0.25})
  assert_one_line(info, "cannot write metrics", "No space left on device")
  writers.close()  # returns: it does not wait for the dead thread
  assert "Traceback" not in capsys.readouterr().err
