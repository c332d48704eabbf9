"""The Hugging Face peers of the benchmark: they run, report sane numbers, and really train."""

import math

import numpy as np
import pytest

from augpro_jax.bench import peers

pytestmark = pytest.mark.slow  # subprocesses, end-to-end runs or benchmarks: not in `make test-fast`

# Tiny models: 1 layer, hidden 32; a small vocabulary keeps the embedding (and the test) small.
ONE_LAYER = peers.EncoderShape(layers=1, hidden=32, heads=2, intermediate=64)
TINY = peers.PeerShapes(batch=4, seq_len=16, vocab_size=2000, teacher=ONE_LAYER,
                        student=ONE_LAYER)

KEYS = ("examples_per_sec", "step_ms_median", "step_ms_p10", "step_ms_p90", "compile_seconds")


@pytest.fixture(scope="module", params=sorted(peers.PEERS))
def run(request):
  """(name, result) of one tiny run per peer, shared by the tests: Flax compiles only once.

  A larger learning rate on one fixed batch, so that the KD loss must fall despite dropout noise.
  """
  name = request.param
  return name, peers.PEERS[name](TINY, steps=5, warmup=1, seed=0, learning_rate=1e-3,
                                 fixed_batch=True)


def test_peer_reports_positive_finite_numbers(run):
  name, result = run
  assert result["name"] == name
  for key in KEYS:
    assert math.isfinite(result[key]) and result[key] > 0, (key, result[key])
  assert result["step_ms_p10"] <= result["step_ms_median"] <= result["step_ms_p90"]
  assert result["steps"] == 5
  assert isinstance(result["device"], str) and result["device"]
  assert isinstance(result["note"], str) and result["note"]
  assert math.isclose(result["examples_per_sec"], TINY.batch / result["step_ms_median"] * 1e3)
  if name == "hf_flax":
    # No compilation hides in the timed steps: with 1 warm-up step, a second compile (say, from
    # inputs whose sharding changes after the first call) would land in them.
    assert result["step_ms_p90"] < 0.5 * result["compile_seconds"] * 1e3


def test_peer_step_trains(run):
  _, result = run
  assert result["student_param_delta"] > 0  # the update reached the student
  assert math.isfinite(result["first_loss"]) and result["first_loss"] > 0
  assert result["last_loss"] < result["first_loss"], (result["first_loss"], result["last_loss"])


def test_torch_rotates_batches_and_bfloat16_on_cpu_says_float32():
  shapes = peers.PeerShapes(**{**TINY.__dict__, "dtype": "bfloat16"})
  result = peers.hf_torch_kd(shapes, steps=2, warmup=1, device="cpu")
  assert result["steps"] == 2 and result["examples_per_sec"] > 0
  assert "float32" in result["note"]
  assert 0 < result["student_param_delta"] < 1.0  # the peers' lr 5e-5: a small but real step


def test_make_batches_shapes_and_padding():
  batches = peers.make_batches(TINY, seed=3)
  assert len(batches) >= 2
  for batch in batches:
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == mask.shape == batch["token_type_ids"].shape == (4, 16)
    assert ids.dtype == np.int32
    assert np.all(mask[:, 0] == 1)
    assert np.all(np.diff(mask, axis=1) <= 0)  # ones then a padding tail
    assert np.all((ids[mask == 1] >= 1000) & (ids[mask == 1] < 2000))
    assert np.all(ids[mask == 0] == 0)
    assert not batch["token_type_ids"].any()
  assert not np.array_equal(batches[0]["input_ids"], batches[1]["input_ids"])
  again = peers.make_batches(TINY, seed=3)
  assert all(np.array_equal(a["input_ids"], b["input_ids"]) for a, b in zip(batches, again))


def test_bad_arguments():
  with pytest.raises(ValueError):
    peers.PeerShapes(batch=4, seq_len=16, dtype="float16")
  with pytest.raises(ValueError):
    peers.hf_torch_kd(TINY, steps=0, warmup=1)


@pytest.mark.parametrize("name", sorted(peers.PREPARE))
def test_peers_take_given_batches_of_any_length(name):
  """The task benchmark hands each peer its own padding of real batches."""
  batches = []
  for length in (5, 9):
    mask = np.ones((4, length), np.int32)
    mask[0, 3:] = 0
    batches.append({"input_ids": np.full((4, length), 1500, np.int32) * mask,
                    "attention_mask": mask, "token_type_ids": np.zeros((4, length), np.int32)})
  run = peers.PREPARE[name](TINY, seed=0, batches=batches)
  try:
    for i in range(3):
      run.step(i)
    result = run.summary(1.0, [1.0, 1.0])
  finally:
    run.close()
  assert result["student_param_delta"] > 0 and math.isfinite(result["last_loss"])
