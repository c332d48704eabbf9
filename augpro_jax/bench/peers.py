"""Peers for the throughput benchmark: our KD step re-written on Hugging Face BERT models.

Both peers run the step that `bench.synthetic` times for `--aug=none`, at the same shapes:
- teacher forward in eval mode, no gradient -> logits [B, C];
- student forward (dropout on) and backward of T^2 * KL(softmax(t / T) || softmax(s / T)),
  averaged over the batch (T = 1; the CE term has weight 0 in KD, so it is not computed);
- clip by global norm 1.0, then AdamW (constant lr, weight decay 0.01 on every parameter, as
  `optax.adamw` and `torch.optim.AdamW` both do by default).

`hf_flax_kd` is how HF's Flax examples train on one device: `jax.jit` of a train step over
`FlaxBertForSequenceClassification.__call__`. `hf_torch_kd` is plain eager PyTorch on
`BertForSequenceClassification` (no `torch.compile`: eager is what people run). Given the models'
config.json (`PeerShapes.teacher_hf`, `student_hf`), the peers are that family's classifiers
instead (`FlaxRobertaForSequenceClassification`, `ElectraForSequenceClassification`, ...); a
family transformers has no Flax classifier for (DeBERTa-v2) makes the Flax peer unavailable.

Timing is honest: inputs are made once and rotated, warm-up steps are excluded, every timed step
is synchronised before the clock stops, and the median over `steps` steps is reported. Models
are built from configs with random weights; nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
from typing import Any, Callable, Optional

import numpy as np

# Batches prepared once and rotated, so that no step sees the very same buffers as the previous.
_NUM_BATCHES = 3
_TEMPERATURE = 1.0
_CLIP_NORM = 1.0
_WEIGHT_DECAY = 0.01
_DROPOUT = 0.1


@dataclasses.dataclass(frozen=True)
class EncoderShape:
  """Depth and widths of one BERT encoder."""

  layers: int
  hidden: int
  heads: int
  intermediate: int


@dataclasses.dataclass(frozen=True)
class PeerShapes:
  """Model and batch shapes of the step; `batch` is global (the peers use one device)."""

  batch: int
  seq_len: int
  teacher: EncoderShape = EncoderShape(layers=6, hidden=384, heads=12, intermediate=1536)
  student: EncoderShape = EncoderShape(layers=2, hidden=384, heads=12, intermediate=1536)
  num_labels: int = 2
  vocab_size: int = 30522
  dtype: str = "float32"  # float32 | bfloat16 (compute dtype; parameters stay float32)
  # config.json of the teacher and the student (`hf_io.hf_config`): the peers are then that
  # family's classifiers with exactly these configs; None: BERTs of the shapes above.
  teacher_hf: Optional[dict[str, Any]] = None
  student_hf: Optional[dict[str, Any]] = None

  def __post_init__(self):
    if self.dtype not in ("float32", "bfloat16"):
      raise ValueError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")
    if self.batch < 1 or self.seq_len < 2:
      raise ValueError(f"need batch >= 1 and seq_len >= 2, got {self.batch} and {self.seq_len}")


def _bert_config(shapes: PeerShapes, *, teacher: bool):
  """A `transformers.BertConfig` for the teacher or the student; dropout as in our models."""
  from transformers import BertConfig  # pylint: disable=g-import-not-at-top

  encoder = shapes.teacher if teacher else shapes.student
  return BertConfig(
      vocab_size=shapes.vocab_size,
      hidden_size=encoder.hidden,
      num_hidden_layers=encoder.layers,
      num_attention_heads=encoder.heads,
      intermediate_size=encoder.intermediate,
      # The teacher runs deterministically anyway; the student trains with dropout 0.1.
      hidden_dropout_prob=_DROPOUT,
      attention_probs_dropout_prob=_DROPOUT,
      max_position_embeddings=max(512, shapes.seq_len),
      num_labels=shapes.num_labels,
  )


def _hf_config(shapes: PeerShapes, *, teacher: bool):
  """The `transformers` config of the teacher or the student: of its family when given."""
  raw = shapes.teacher_hf if teacher else shapes.student_hf
  if raw is None:
    return _bert_config(shapes, teacher=teacher)
  from transformers import AutoConfig  # pylint: disable=g-import-not-at-top
  fields = {k: v for k, v in raw.items() if k not in ("model_type", "architectures")}
  return AutoConfig.for_model(raw["model_type"], **fields)


def _model_inputs(config: Any, batch: dict[str, Any]) -> dict[str, Any]:
  """The batch as the family's classifier takes it (DistilBERT has no token types)."""
  if config.model_type == "distilbert":
    return {k: v for k, v in batch.items() if k != "token_type_ids"}
  return batch


def _flax_class(config: Any) -> Any:
  """The Flax `...ForSequenceClassification` of the config's family."""
  import transformers  # pylint: disable=g-import-not-at-top
  from transformers.models.auto import modeling_flax_auto  # pylint: disable=g-import-not-at-top
  names = modeling_flax_auto.FLAX_MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
  if config.model_type not in names:
    raise ValueError(f"transformers has no Flax classifier for {config.model_type}")
  return getattr(transformers, names[config.model_type])


def make_batches(shapes: PeerShapes, seed: int,
                 num: int = _NUM_BATCHES) -> list[dict[str, np.ndarray]]:
  """`num` host batches of int32 input_ids / attention_mask / token_type_ids, each [B, S].

  Ids are uniform in [1000, 29000) (clipped to the vocabulary), each row keeps a random-length
  prefix (at least half the sequence) and the tail is padding (id 0, mask 0).
  """
  rng = np.random.RandomState(seed)
  high = min(29000, shapes.vocab_size)
  low = min(1000, high // 2)
  batches = []
  for _ in range(num):
    ids = rng.randint(low, high, size=(shapes.batch, shapes.seq_len)).astype(np.int32)
    lengths = rng.randint(shapes.seq_len // 2, shapes.seq_len + 1, size=(shapes.batch, 1))
    mask = (np.arange(shapes.seq_len)[None, :] < lengths).astype(np.int32)
    batches.append({"input_ids": ids * mask, "attention_mask": mask,
                    "token_type_ids": np.zeros_like(ids)})
  return batches


def _summary(name: str, shapes: PeerShapes, times_ms: list[float], *, compile_seconds: float,
             steps: int, device: str, note: str, losses: list[float],
             param_delta: float) -> dict[str, Any]:
  """The result dict; percentiles picked the same way as `benchmark.time_interleaved`."""
  times = sorted(times_ms)
  median = statistics.median(times)
  return {
      "name": name,
      "examples_per_sec": shapes.batch / (median / 1e3),
      "step_ms_median": median,
      "step_ms_p10": times[len(times) // 10],
      "step_ms_p90": times[min(len(times) - 1, (9 * len(times)) // 10)],
      "compile_seconds": compile_seconds,
      "steps": steps,
      "device": device,
      "note": note,
      # Training evidence: loss before the first update, loss at the last timed step, and how
      # far the student moved (global L2 norm of the parameter change).
      "first_loss": losses[0],
      "last_loss": losses[-1],
      "student_param_delta": param_delta,
  }


def _unavailable(what: str, exc: BaseException) -> RuntimeError:
  """A one-line RuntimeError: the benchmark reports the peer as unavailable with its first line."""
  detail = str(exc).splitlines()[0] if str(exc) else ""
  return RuntimeError(f"{what}: {type(exc).__name__}: {detail}")


def _check_counts(steps: int, warmup: int) -> None:
  if steps < 1 or warmup < 0:
    raise ValueError(f"need steps >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")


def _timed_loop(step: Callable[[int], None], steps: int, warmup: int) -> tuple[float, list[float]]:
  """Runs max(warmup, 1) untimed steps then `steps` timed ones; `step(i)` must synchronise.

  Returns (seconds of the very first step, timed step ms). The first step is always untimed,
  even with warmup=0, because it includes compilation (Flax) or lazy allocation (torch).
  """
  start = time.perf_counter()
  step(0)
  first_seconds = time.perf_counter() - start
  for i in range(1, warmup):
    step(i)
  offset = max(warmup, 1)
  times = []
  for i in range(steps):
    start = time.perf_counter()
    step(offset + i)
    times.append((time.perf_counter() - start) * 1e3)
  return first_seconds, times


@dataclasses.dataclass
class PeerRun:
  """A peer's KD step, built and ready to time, so a caller can interleave it with other steps.

  `step(i)` runs one synchronised step on batch i; `summary(first_seconds, times_ms)` returns the
  result dict; `close()` gives back what the peer changed in the process (torch's thread count).
  """

  step: Callable[[int], None]
  summary: Callable[[float, list[float]], dict[str, Any]]
  close: Callable[[], None] = lambda: None


def _run(run: PeerRun, what: str, steps: int, warmup: int) -> dict[str, Any]:
  try:
    try:
      first_seconds, times = _timed_loop(run.step, steps, warmup)
    except Exception as exc:  # pylint: disable=broad-except
      raise _unavailable(f"{what} step failed", exc) from exc
    return run.summary(first_seconds, times)
  finally:
    run.close()


def hf_flax_kd(shapes: PeerShapes, *, steps: int, warmup: int, seed: int = 0,
               learning_rate: float = 5e-5, fixed_batch: bool = False) -> dict[str, Any]:
  """The KD step on `FlaxBertForSequenceClassification`, timed alone (see `prepare_hf_flax`)."""
  _check_counts(steps, warmup)
  return _run(prepare_hf_flax(shapes, seed=seed, learning_rate=learning_rate,
                              fixed_batch=fixed_batch), "transformers Flax classifier", steps,
              warmup)


def _flax_kd_update(teacher: Any, student: Any, tx: Any) -> Any:
  """The HF Flax peer's KD update: (params, opt_state, teacher params, batch, dropout rng) ->
  (params, opt_state, loss, next dropout rng)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  def train_step(params, state, t_params, batch, dropout_rng):
    """One KD update; returns (params, opt_state, loss, next dropout rng)."""
    dropout_rng, next_rng = jax.random.split(dropout_rng)
    batch = _model_inputs(student.config, batch)
    teacher_logits = teacher(**batch, params=t_params, train=False).logits
    teacher_logits = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))

    def loss_fn(p):
      logits = student(**batch, params=p, dropout_rng=dropout_rng, train=True).logits
      t_log_probs = jax.nn.log_softmax(teacher_logits / _TEMPERATURE, axis=-1)
      s_log_probs = jax.nn.log_softmax(logits.astype(jnp.float32) / _TEMPERATURE, axis=-1)
      kl = jnp.sum(jnp.exp(t_log_probs) * (t_log_probs - s_log_probs), axis=-1)
      return _TEMPERATURE ** 2 * jnp.mean(kl)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss, next_rng

  return train_step


def prepare_hf_flax(shapes: PeerShapes, *, seed: int = 0, learning_rate: float = 5e-5,
                    fixed_batch: bool = False,
                    batches: Optional[list[dict[str, np.ndarray]]] = None) -> PeerRun:
  """The KD step on `FlaxBertForSequenceClassification`, `jax.jit` on one device.

  `learning_rate` and `fixed_batch` (always the first batch) exist for the tests' does-it-train
  check; the benchmark leaves them alone. `batches`: host batches to rotate through (default
  `make_batches`); each new sequence length compiles the step again, as `jax.jit` does.
  Raises RuntimeError if HF's Flax BERT cannot be used.
  """
  try:
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    import optax  # pylint: disable=g-import-not-at-top
    configs = _hf_config(shapes, teacher=True), _hf_config(shapes, teacher=False)
    flax_class = _flax_class(configs[1])  # lazy: fails here if it cannot load
  except Exception as exc:  # pylint: disable=broad-except  # any import failure: peer unavailable
    raise _unavailable("transformers Flax classifier unavailable", exc) from exc

  dtype = jnp.bfloat16 if shapes.dtype == "bfloat16" else jnp.float32
  try:
    teacher = flax_class(configs[0], seed=seed, dtype=dtype, _do_init=True)  # the same family
    student = flax_class(configs[1], seed=seed + 1, dtype=dtype, _do_init=True)
  except Exception as exc:  # pylint: disable=broad-except
    raise _unavailable(f"transformers {flax_class.__name__} failed to build", exc) from exc

  device = jax.devices()[0]
  teacher_params = jax.device_put(teacher.params, device)
  # A private copy: the step donates it, which would otherwise invalidate `student.params`.
  student_params = jax.device_put(jax.tree.map(np.array, student.params), device)
  initial = jax.tree.map(np.array, student.params)  # host copy, for the parameter-change check
  tx = optax.chain(optax.clip_by_global_norm(_CLIP_NORM),
                   optax.adamw(learning_rate, weight_decay=_WEIGHT_DECAY))
  # Commit everything to the device: an uncommitted input (optax's step count, the rng) would make
  # the second call see new shardings and compile the step a second time, inside the timing.
  opt_state = jax.device_put(tx.init(student_params), device)
  batches = [jax.device_put({k: jnp.asarray(v) for k, v in b.items()}, device)
             for b in (batches or make_batches(shapes, seed))]

  train_step = _flax_kd_update(teacher, student, tx)
  # Donate the student parameters and optimizer state: updated in place, as HF's examples allow.
  step_fn = jax.jit(train_step, donate_argnums=(0, 1))
  rng = jax.device_put(jax.random.PRNGKey(seed), device)
  carry = {"params": student_params, "opt": opt_state, "rng": rng}
  losses = []

  def step(i: int) -> None:
    batch = batches[0 if fixed_batch else i % len(batches)]
    params, state, loss, next_rng = step_fn(carry["params"], carry["opt"], teacher_params, batch,
                                            carry["rng"])
    jax.block_until_ready((params, loss))
    carry.update(params=params, opt=state, rng=next_rng)
    losses.append(loss)

  def summary(compile_seconds: float, times: list[float]) -> dict[str, Any]:
    delta = math.sqrt(sum(
        float(np.sum(np.square(np.asarray(a, np.float64) - b)))
        for a, b in zip(jax.tree.leaves(carry["params"]), jax.tree.leaves(initial))))
    note = (f"transformers {flax_class.__name__}, jax.jit on 1 device "
            f"(of {jax.device_count()}), compute dtype {shapes.dtype}, params float32")
    return _summary("hf_flax", shapes, times, compile_seconds=compile_seconds, steps=len(times),
                    device=f"{device.platform}:{device.device_kind}", note=note,
                    losses=[float(x) for x in losses], param_delta=delta)

  return PeerRun(step, summary)


def hf_torch_kd(shapes: PeerShapes, *, steps: int, warmup: int, seed: int = 0,
                device: Optional[str] = None, learning_rate: float = 5e-5,
                fixed_batch: bool = False) -> dict[str, Any]:
  """The KD step on PyTorch `BertForSequenceClassification`, timed alone (`prepare_hf_torch`)."""
  _check_counts(steps, warmup)
  return _run(prepare_hf_torch(shapes, seed=seed, device=device, learning_rate=learning_rate,
                               fixed_batch=fixed_batch), "transformers PyTorch classifier", steps,
              warmup)


def prepare_hf_torch(shapes: PeerShapes, *, seed: int = 0, device: Optional[str] = None,
                     learning_rate: float = 5e-5, fixed_batch: bool = False,
                     batches: Optional[list[dict[str, np.ndarray]]] = None) -> PeerRun:
  """The KD step on PyTorch `BertForSequenceClassification`, eager, on `device`.

  `batches`: host batches to rotate through (default `make_batches`), of any sequence lengths.
  `device` defaults to cuda when available, else cpu. bfloat16 uses torch.autocast on cuda only;
  elsewhere the step runs in float32 and the note says so.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
    from transformers import AutoModelForSequenceClassification  # pylint: disable=g-import-not-at-top
    configs = _hf_config(shapes, teacher=True), _hf_config(shapes, teacher=False)
  except Exception as exc:  # pylint: disable=broad-except
    raise _unavailable("transformers PyTorch classifier unavailable", exc) from exc

  device = device or ("cuda" if torch.cuda.is_available() else "cpu")
  dev = torch.device(device)
  on_cuda = dev.type == "cuda"
  autocast = shapes.dtype == "bfloat16" and on_cuda
  notes = []
  if shapes.dtype == "bfloat16" and not on_cuda:
    notes.append("bfloat16 requested but autocast is used on cuda only: ran float32")
  elif autocast:
    notes.append("torch.autocast bfloat16, params float32")

  previous_threads = torch.get_num_threads()
  if not on_cuda:
    # Use every core, as our JAX step does on CPU; restored afterwards for the rest of the process.
    torch.set_num_threads(os.cpu_count() or 1)
    notes.append(f"{torch.get_num_threads()} threads")
  try:
    torch.manual_seed(seed)
    teacher = AutoModelForSequenceClassification.from_config(configs[0]).to(dev).eval()
    student = AutoModelForSequenceClassification.from_config(configs[1]).to(dev).train()
    notes.insert(0, f"transformers {type(student).__name__}, eager (no torch.compile)")
    attention = student.config._attn_implementation  # pylint: disable=protected-access
    notes.append(f"attention {attention}")
    for p in teacher.parameters():
      p.requires_grad_(False)
    initial = [p.detach().clone() for p in student.parameters()]
    optimizer = torch.optim.AdamW(student.parameters(), lr=learning_rate,
                                  weight_decay=_WEIGHT_DECAY)
    batches = [{k: torch.from_numpy(np.asarray(v)).long().to(dev)
                for k, v in _model_inputs(configs[1], b).items()}
               for b in (batches or make_batches(shapes, seed))]
    losses = []

    def step(i: int) -> None:
      batch = batches[0 if fixed_batch else i % len(batches)]
      with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=autocast):
        with torch.no_grad():
          teacher_logits = teacher(**batch).logits.float()
        logits = student(**batch).logits.float()
        t_log_probs = F.log_softmax(teacher_logits / _TEMPERATURE, dim=-1)
        s_log_probs = F.log_softmax(logits / _TEMPERATURE, dim=-1)
        # "batchmean": sum over classes, mean over the batch, i.e. the true per-example KL mean.
        loss = _TEMPERATURE ** 2 * F.kl_div(s_log_probs, t_log_probs, reduction="batchmean",
                                            log_target=True)
      optimizer.zero_grad(set_to_none=True)
      loss.backward()
      torch.nn.utils.clip_grad_norm_(student.parameters(), _CLIP_NORM)
      optimizer.step()
      if on_cuda:
        torch.cuda.synchronize(dev)
      losses.append(loss.detach())  # read after the loop: .item() here would add a host sync

    def summary(first_seconds: float, times: list[float]) -> dict[str, Any]:
      with torch.no_grad():
        delta = math.sqrt(sum(float(torch.sum((p.detach().double() - q.double()) ** 2))
                              for p, q in zip(student.parameters(), initial)))
      name = torch.cuda.get_device_name(dev) if on_cuda else "cpu"
      return _summary("hf_torch", shapes, times, compile_seconds=first_seconds, steps=len(times),
                      device=f"{dev.type}:{name}", note="; ".join(notes),
                      losses=[float(x) for x in losses], param_delta=delta)
  except BaseException:
    torch.set_num_threads(previous_threads)
    raise
  return PeerRun(step, summary, close=lambda: torch.set_num_threads(previous_threads))


PEERS: dict[str, Callable[..., dict[str, Any]]] = {"hf_flax": hf_flax_kd, "hf_torch": hf_torch_kd}
# The same peers, built but not run: the benchmark interleaves their steps with ours.
PREPARE: dict[str, Callable[..., PeerRun]] = {"hf_flax": prepare_hf_flax, "hf_torch": prepare_hf_torch}
