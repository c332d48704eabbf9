"""Hostile and careless files: a crafted `pytorch_model.bin` (views outside their storage, sizes
beyond config.json, zip bombs), models whose description disagrees with their weights, and
non-finite outputs. Every file is built here, without torch, from the bytes torch.save writes."""

import json
import pathlib
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import zipfile

import jax
import numpy as np
import pytest

from augpro_jax import distributed
from augpro_jax import hf_io
from augpro_jax import model as model_lib
from augpro_jax import rendezvous
from augpro_jax import torch_pickle
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
