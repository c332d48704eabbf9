"""The synthetic benchmark: the full distillation step per augmentation, its parts, and peers.

`python main.py --mode=benchmark` (with `--benchmark_data=synthetic`, the default) times, in one process and on the same synthetic batches:
- the KD step on the mesh for each `--benchmark_augs` value, after compilation and warm-up, as a
  median over `--benchmark_steps` steps, and its ratio to `--aug=none`;
- the parts: teacher forward, the augmentation alone (projection) with the exact search and with
  `jax.lax.approx_max_k` (`_approx`), and the student forward+backward+update;
- compile time, XLA's memory analysis, peak device memory (where reported), host RSS, parameter
  counts, analytic FLOPs per step and MFU (when the device's peak FLOP/s is known);
- peers (`bench.peers`): the same KD step on Hugging Face's Flax and PyTorch BERT.
Writes `--benchmark_out` (JSON) and a markdown table beside it, and prints the table.
"""

from __future__ import annotations

import dataclasses
import resource
import statistics
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from augpro_jax import augment
from augpro_jax import augmentations
from augpro_jax import flops as flops_lib
from augpro_jax import hf_io
from augpro_jax import input_pipeline as pipeline
from augpro_jax import model as model_lib
from augpro_jax import students
from augpro_jax import optimizer as optimizer_lib
from augpro_jax.bench import common
from augpro_jax.config import Config
from augpro_jax.errors import UserError

NUM_LABELS = 2


def synthetic_batches(count: int, global_batch: int, seq_len: int, devices: int,
                      seed: int = 0) -> list[dict[str, np.ndarray]]:
  """Random token ids with [CLS] .. [SEP] and a random padded tail per row, sharded per device."""
  rng = np.random.default_rng(seed)
  batches = []
  for _ in range(count):
    lengths = rng.integers(seq_len // 2, seq_len + 1, size=global_batch)
    ids = rng.integers(1000, 29000, size=(global_batch, seq_len)).astype(np.int32)
    mask = (np.arange(seq_len)[None, :] < lengths[:, None]).astype(np.int32)
    ids[:, 0] = 101
    ids[np.arange(global_batch), lengths - 1] = 102
    ids = ids * mask
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids),
             "label": rng.integers(0, NUM_LABELS, size=global_batch).astype(np.int32),
             "example_id": np.arange(global_batch, dtype=np.int32)}
    batches.append({k: v.reshape(devices, -1, *v.shape[1:]) for k, v in batch.items()})
  return batches


def _stats(times: list[float]) -> dict[str, float]:
  times = sorted(times)
  return {"step_ms_median": statistics.median(times), "step_ms_p10": times[len(times) // 10],
          "step_ms_p90": times[min(len(times) - 1, (9 * len(times)) // 10)]}


def time_interleaved(calls: dict[str, Callable[[int], Any]], steps: int, warmup: int,
                     rounds: int, pause_seconds: float = 0.05) -> dict[str, dict[str, float]]:
  """Median/p10/p90 wall time (ms) of each `call(i)`, each call synchronised, warm-up excluded.

  Interleaved: `rounds` rounds, each running every call for its share of `steps` timed steps.
  Load that drifts during the benchmark (a shared machine, thermal limits) then hits every method
  alike, so the ratios between them stay fair.
  A short pause between blocks lets the previous framework's spinning worker threads go idle.
  """
  for name, call in calls.items():
    for i in range(warmup):
      jax.block_until_ready(call(i))
  rounds = max(1, min(rounds, steps))
  times = {name: [] for name in calls}
  for r in range(rounds):
    block = steps // rounds + (1 if r < steps % rounds else 0)
    for name, call in calls.items():
      time.sleep(pause_seconds)
      for _ in range(block):
        start = time.perf_counter()
        jax.block_until_ready(call(warmup + len(times[name])))
        times[name].append((time.perf_counter() - start) * 1e3)
  return {name: {**_stats(t), "times_ms": t} for name, t in times.items()}


def _peak_device_mb() -> Optional[float]:
  stats = jax.local_devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else peak / 2**20


def _host_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclasses.dataclass
class Models:
  teacher: model_lib.BertClassifier
  teacher_params: Any
  student: model_lib.BertClassifier
  student_params: Any


def build_models(cfg: Config, num_labels: int = NUM_LABELS) -> tuple[Models, Any]:
  """The teacher (pretrained MiniLM, or a random one of the requested shape) and its student."""
  teacher_dir = hf_io.resolve_pretrained_dir(cfg.teacher)
  tokenizer = pipeline.load_tokenizer(teacher_dir)
  t_config, t_params = hf_io.load_pretrained(str(teacher_dir), num_labels=num_labels,
                                             dropout_rate=0.0, dtype=cfg.dtype)
  if cfg.benchmark_teacher_layers or cfg.benchmark_teacher_hidden:
    hidden = cfg.benchmark_teacher_hidden or t_config.hidden_size
    t_config = dataclasses.replace(
        t_config, num_layers=cfg.benchmark_teacher_layers or t_config.num_layers,
        hidden_size=hidden, intermediate_size=4 * hidden, num_heads=max(1, hidden // 64))
    t_params = model_lib.init_params(t_config, jax.random.PRNGKey(1))
  s_config = students.student_config(cfg, t_config, t_config.num_labels)
  s_params = students.student_from_teacher(s_config, t_config, t_params, jax.random.PRNGKey(2),
                                            init=cfg.student_init)
  models = Models(model_lib.BertClassifier(t_config), t_params, model_lib.BertClassifier(s_config),
                  s_params)
  return models, tokenizer


def _measured_shift(call: Callable[[int], Any]) -> Optional[float]:
  metrics = jax.device_get(call(0))
  return float(metrics["measured_shift"]) if "measured_shift" in metrics else None


def prepare_parts(cfg: Config, models: Models, batches, masks
                  ) -> tuple[dict[str, Callable[[int], Any]], dict[str, Any]]:
  """Teacher forward alone, and each projection-based augmentation alone, on device 0, with the
  exact and the approximate search: compiled calls to time, and the projection's memory facts."""
  batch = {k: jnp.asarray(v.reshape(-1, *v.shape[2:])) for k, v in batches[0].items()}
  batch = {k: v[: v.shape[0] // jax.local_device_count()] for k, v in batch.items()}  # per device
  is_special, is_candidate = (jnp.asarray(m) for m in masks)
  table = model_lib.word_embedding_table(models.student_params)
  ids, mask = batch["input_ids"], batch["attention_mask"]
  eligible = augment.eligible_positions(ids, mask, is_special)
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(0), i))(batch["example_id"])
  n = ids.shape[0]
  inputs = augmentations.StepInputs(
      ids=ids, mask=mask, types=batch["token_type_ids"], eligible=eligible,
      gold=jax.nn.one_hot(batch["label"], NUM_LABELS), batch=batch, table=table,
      candidate_mask=is_candidate, knobs=cfg.augment,
      delta=0.01 * jnp.ones(ids.shape + (table.shape[1],)))
  fns = {"teacher_forward": lambda: models.teacher.apply(
      {"params": models.teacher_params}, ids, mask, batch["token_type_ids"])}
  fns.update(projection_calls(inputs, keys, jax.random.PRNGKey(1)))
  calls, facts = {}, {}
  for name, fn in fns.items():
    compiled = jax.jit(fn).lower().compile()
    calls[name] = lambda i, c=compiled: c()
    if name == "projection_augpro_mix":
      positions = n * augment.position_budget(cfg.shift_degree, ids.shape[1])
      naive = positions * table.shape[0] * 4
      temp = flops_lib.memory_summary(compiled).get("memory_temp_mb")
      facts["projection_temp_mb"] = temp
      facts["projection_naive_scores_mb"] = naive / 2**20
      facts["projection_memory_ratio"] = None if temp is None else temp * 2**20 / naive
  return calls, facts


def projection_calls(inputs: augmentations.StepInputs, keys: jax.Array, partner_key: jax.Array
                     ) -> dict[str, Callable[[], jax.Array]]:
  """Each augmentation that projects (`projects=True`) alone, with the exact and the approximate
  search: name -> a function returning the copy's new ids [B, S]."""
  fns = {}
  for search, suffix in (("exact", ""), ("approx", "_approx")):
    searched = dataclasses.replace(inputs, knobs=dataclasses.replace(inputs.knobs,
                                                                     projection_search=search))
    for name in augmentations.projecting_names():
      make_copy = augmentations.get(name).make_copy
      fns[f"projection_{name}{suffix}"] = (
          lambda make=make_copy, i=searched: make(i, 0, keys, partner_key).ids)
  return fns


@dataclasses.dataclass
class _Setup:
  models: Models
  masks: tuple[np.ndarray, np.ndarray]
  batches: list[dict[str, np.ndarray]]
  optimizer: Any


def _setup(cfg: Config) -> _Setup:
  devices = jax.local_device_count()
  if cfg.batch_size % devices:
    raise UserError(f"--batch_size={cfg.batch_size} is not divisible by the {devices} devices")
  models, tokenizer = build_models(cfg)
  # The synthetic batches draw ids from the whole vocabulary, so the candidates are the full set
  # whatever --projection_vocab says; a mask costs the same search either way.
  masks = pipeline.vocab_masks(tokenizer, models.teacher.config.vocab_size)
  batches = synthetic_batches(3, cfg.batch_size, cfg.max_seq_len, devices, cfg.seed)
  optimizer, _ = optimizer_lib.make_optimizer(cfg.learning_rate, 10_000, 0.0, cfg.weight_decay)
  t, s = models.teacher.config, models.student.config
  print(f"benchmark on {devices} x {jax.local_devices()[0].device_kind}: teacher "
        f"{t.num_layers}x{t.hidden_size}, student {s.num_layers}x{s.hidden_size}, batch "
        f"{cfg.batch_size}, seq {cfg.max_seq_len}, {cfg.dtype}", flush=True)
  return _Setup(models, masks, batches, optimizer)


def _prepare(cfg: Config, setup: _Setup, augs: list[str]
             ) -> tuple[dict[str, Callable[[int], Any]], dict[str, Any], dict[str, Any]]:
  """Every call to time (name -> call(i)): the step per augmentation, `none` on as many examples
  as an augmented step trains on, and the parts; with the steps' facts and the parts' facts."""
  calls, facts = {}, {}
  prepare = lambda aug, objective, batches: common.prepare_step(
      cfg, setup.models, aug, objective, batches, setup.masks, setup.optimizer, NUM_LABELS)[:2]
  for aug in augs:
    calls[aug], facts[aug] = prepare(aug, "kd", setup.batches)
    print(f"  compiled {aug:12s} in {facts[aug]['compile_seconds']:.1f} s", flush=True)
  # An augmented step trains on (1 + copies) x batch examples. The `none` step on that many
  # original examples separates AugPro's own overhead from the cost of simply seeing more data.
  if len(augs) > 1:
    big = synthetic_batches(3, (1 + cfg.aug_copies) * cfg.batch_size, cfg.max_seq_len,
                            jax.local_device_count(), cfg.seed + 1)
    calls["none_same_examples"], facts["none_same_examples"] = prepare("none", "kd", big)
  part_calls, part_facts = prepare_parts(cfg, setup.models, setup.batches, setup.masks)
  calls.update(part_calls)
  calls["student_forward_backward_update"], _ = prepare("none", "labels", setup.batches)
  return calls, facts, part_facts


def time_calls(cfg: Config, calls: dict[str, Callable[[int], Any]], peer_runs: dict[str, Any]
           ) -> dict[str, dict[str, Any]]:
  print(f"  timing {len(calls)} calls, {cfg.benchmark_steps} steps each in "
        f"{cfg.benchmark_rounds} interleaved rounds", flush=True)
  try:
    return time_interleaved(calls, cfg.benchmark_steps, cfg.benchmark_warmup,
                            cfg.benchmark_rounds)
  finally:
    for run_, _ in peer_runs.values():
      run_.close()


def _method(cfg: Config, models: Models, aug: str, facts: dict[str, Any],
            timing: dict[str, Any], call: Callable[[int], Any], peak: Optional[float]
            ) -> dict[str, Any]:
  """One augmentation's row: its timing, throughput, FLOPs and MFU."""
  result = {**facts, **_public(timing), "measured_shift": _measured_shift(call)}
  step_flops = flops_lib.step_flops(
      aug=aug, objective="kd", teacher=models.teacher.config, student=models.student.config,
      batch=cfg.batch_size, seq_len=cfg.max_seq_len, shift_degree=cfg.shift_degree,
      aug_copies=cfg.aug_copies)["total"]
  seconds = result["step_ms_median"] / 1e3
  result.update(aug=aug, examples_per_sec=cfg.batch_size / seconds,
                tokens_per_sec=cfg.batch_size * cfg.max_seq_len / seconds,
                flops_per_step=step_flops, tflops_per_sec=step_flops / seconds / 1e12,
                mfu=step_flops / seconds / (peak * jax.local_device_count()) if peak else None)
  print(f"  {aug:12s} {result['step_ms_median']:8.1f} ms/step  "
        f"{result['examples_per_sec']:8.1f} ex/s", flush=True)
  return result


def _ratios(cfg: Config, methods: list[dict[str, Any]], equal: Optional[dict[str, Any]],
            parts: dict[str, Any]) -> None:
  """Each method's ratios to `none` (also on as many examples) and its projection share."""
  suffix = "_approx" if cfg.projection_search == "approx" else ""
  for result in methods:
    result["ratio_to_none"] = result["step_ms_median"] / methods[0]["step_ms_median"]
    result["ratio_to_none_same_examples"] = (
        result["step_ms_median"] / equal["step_ms_median"]
        if equal is not None and result["aug"] != "none" else None)
    projection = parts.get(f"projection_{result['aug']}{suffix}_ms")
    # Both are per-device times: the projection runs on each device's slice of the batch.
    result["projection_fraction"] = (projection / result["step_ms_median"]
                                     if projection is not None else None)


def run(cfg: Config) -> dict[str, Any]:
  """Build and compile everything first, then time it all interleaved (`time_interleaved`)."""
  setup = _setup(cfg)
  models = setup.models
  augs = list(dict.fromkeys(("none",) + tuple(augmentations.resolve(a)
                                              for a in cfg.benchmark_augs)))
  calls, facts, part_facts = _prepare(cfg, setup, augs)
  peer_runs, peer_errors, peers = common.prepare_peers(cfg, models, NUM_LABELS, calls)
  timing = time_calls(cfg, calls, peer_runs)
  about = common.machine()
  methods = [_method(cfg, models, aug, facts[aug], timing[aug], calls[aug],
                     about["peak_flops_per_device"]) for aug in augs]
  equal = None
  if "none_same_examples" in timing:
    equal = {**facts["none_same_examples"], **_public(timing["none_same_examples"])}
    print(f"  {'none x' + str(1 + cfg.aug_copies):12s} {equal['step_ms_median']:8.1f} ms/step  "
          f"(batch {(1 + cfg.aug_copies) * cfg.batch_size})", flush=True)
  parts = {f"{name}_ms": timing[name]["step_ms_median"] for name in calls
           if name.startswith(("teacher_forward", "projection_", "student_forward"))}
  parts.update(part_facts)
  _ratios(cfg, methods, equal, parts)

  def summarize(name, run_, first_seconds, times_ms):
    peer = run_.summary(first_seconds, times_ms)
    peer["ratio_ours_to_peer"] = methods[0]["examples_per_sec"] / peer["examples_per_sec"]
    print(f"  peer {name:8s} {peer['examples_per_sec']:8.1f} ex/s", flush=True)
    return peer

  peers += common.peer_results(peer_runs, peer_errors, timing, summarize)
  report = {
      "machine": about,
      "shapes": {"batch": cfg.batch_size, "seq_len": cfg.max_seq_len, "dtype": cfg.dtype,
                 "shift_degree": cfg.shift_degree, "projection_chunk": cfg.projection_chunk,
                 "projection_search": cfg.projection_search,
                 "projection_recall": cfg.projection_recall,
                 "teacher": dataclasses.asdict(models.teacher.config),
                 "student": dataclasses.asdict(models.student.config)},
      "params": {"teacher": model_lib.count_params(models.teacher_params),
                 "student": model_lib.count_params(models.student_params)},
      "methods": methods,
      "none_same_examples": None if equal is None else {
          "batch": (1 + cfg.aug_copies) * cfg.batch_size, **equal},
      "timing": {"steps": cfg.benchmark_steps, "warmup": cfg.benchmark_warmup,
                 "rounds": max(1, min(cfg.benchmark_rounds, cfg.benchmark_steps)),
                 "interleaved": True},
      "parts": parts,
      "peers": peers,
      "peak_device_memory_mb": _peak_device_mb(),
      "host_rss_mb": _host_rss_mb(),
  }
  common.write_report(report, markdown_table(report), cfg.benchmark_out)
  return report


def _public(timing: dict[str, Any]) -> dict[str, float]:
  return {k: v for k, v in timing.items() if k != "times_ms"}


def markdown_table(report: dict[str, Any]) -> str:
  m = report["machine"]
  s = report["shapes"]
  rows = []
  for r in report["methods"]:
    share = "-" if r["projection_fraction"] is None else f"{100 * r['projection_fraction']:.1f}%"
    mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
    same = "-" if r.get("ratio_to_none_same_examples") is None else \
        f"{r['ratio_to_none_same_examples']:.2f}"
    rows.append([r["aug"], f"{r['step_ms_median']:.1f}", f"{r['examples_per_sec']:.1f}",
                 f"{r['tokens_per_sec']:.0f}", f"{r['ratio_to_none']:.2f}", same, share, mfu,
                 f"{r['compile_seconds']:.1f}"])
  for p in report["peers"]:
    if p.get("examples_per_sec"):
      rows.append([f"peer: {p['name']}", f"{p['step_ms_median']:.1f}",
                   f"{p['examples_per_sec']:.1f}", "-",
                   f"ours/peer = {p['ratio_ours_to_peer']:.2f}", "-", "-", "-",
                   f"{p.get('compile_seconds', 0):.1f}"])
    else:
      rows.append([f"peer: {p['name']}", f"unavailable: {p.get('error')}"] + [""] * 7)
  parts = report["parts"]
  lines = [
      f"Machine: {m['devices']} x {m['device_kind']} ({m['backend']}), jax {m['jax']}; "
      f"teacher {s['teacher']['num_layers']}x{s['teacher']['hidden_size']}, student "
      f"{s['student']['num_layers']}x{s['student']['hidden_size']}, batch {s['batch']}, seq "
      f"{s['seq_len']}, {s['dtype']}, shift {s['shift_degree']}",
      "",
      *common.table(["method", "step ms (median)", "examples/s", "tokens/s", "x none",
                     "x none (same examples)", "projection share", "MFU", "compile s"], rows),
      "",
      *common.table(["part (per device)", "ms"], [[key[:-3], f"{value:.2f}"]
                                                  for key, value in parts.items()
                                                  if key.endswith("_ms")]),
  ]
  if parts.get("projection_memory_ratio") is not None:
    lines.append(f"\nProjection temporaries: {parts['projection_temp_mb']:.2f} MB vs "
                 f"{parts['projection_naive_scores_mb']:.2f} MB for the naive [positions, vocab] "
                 f"score matrix (ratio {parts['projection_memory_ratio']:.3f}).")
  return "\n".join(lines)
