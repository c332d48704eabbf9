"""`--mode=benchmark --benchmark_data=task`: throughput on the task's real training batches.

The synthetic benchmark (`bench/synthetic.py`) times full-length batches, so it cannot see padding. This
one times the run's own batches: the first `--benchmark_warmup + --benchmark_steps` global batches
that training with `--length_buckets` would draw from `--task`'s training examples. Every
contender trains on these same examples, each as often, batched and padded its own way:

- ours with length buckets: the batches as drawn, each from one bucket and cut to its length, for
  every `--benchmark_augs`;
- the others draw random batches, as training without buckets does: the same examples shuffled
  into batches of the same size, in the same order for all of them (`unbucketed`; the warm-up
  batches' examples and the timed batches' are shuffled apart, so every contender's timed steps
  hold the same examples), then
  - ours with `--length_buckets=none`: padded to `--max_seq_len`;
  - HF Flax (`peers.prepare_hf_flax`): padded to `--max_seq_len`, as `run_flax_glue.py` pads;
  - HF PyTorch (`peers.prepare_hf_torch`): padded to the batch's longest example, as the
    Trainer's default collator pads.

Every step runs the teacher on all its examples (no cached logits), as the peers do. Steps are
timed interleaved (`synthetic.time_interleaved`); as batch lengths differ, throughput is total
examples (or real tokens) over total time, not a median.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import numpy as np

from augpro_jax import augmentations
from augpro_jax import buckets as buckets_lib
from augpro_jax import context
from augpro_jax import data as data_lib
from augpro_jax import flops as flops_lib
from augpro_jax import input_pipeline as pipeline
from augpro_jax import optimizer as optimizer_lib
from augpro_jax import tasks as tasks_lib
from augpro_jax import sharding
from augpro_jax.bench import common
from augpro_jax.bench import synthetic
from augpro_jax.config import Config
from augpro_jax.errors import UserError

Batch = dict[str, np.ndarray]


def classification_task(cfg: Config) -> tasks_lib.TaskSpec:
  task = data_lib.resolve_task(cfg)
  if task.is_regression:
    raise UserError(f"--benchmark_data=task times the classification KD step of the peers; "
                    f"{task.name} is a regression task")
  return task


def task_batches(cfg: Config, task: tasks_lib.TaskSpec, tokenizer, devices: int
                 ) -> tuple[list[Batch], buckets_lib.Buckets, dict[str, Any]]:
  """The first warm-up + timed global batches of training on `task`, with length buckets,
  laid out [devices, per_device, ...]; the buckets; and facts about the data."""
  split = pipeline.tokenize(data_lib.load_split(cfg, task, "train"), tokenizer, cfg.max_seq_len)
  # The buckets a training run of --num_epochs would choose.
  epochs = context.resolve_epochs(cfg, len(split)).num_epochs
  compile_tokens = buckets_lib.compile_cost_tokens(cfg.bucket_compile_steps, cfg.batch_size,
                                                   split.lengths, cfg.max_seq_len, epochs)
  buckets = buckets_lib.resolve(cfg.length_buckets, split.lengths, cfg.max_seq_len,
                                cfg.max_length_buckets, cfg.batch_size, compile_tokens)
  count = cfg.benchmark_warmup + cfg.benchmark_steps
  layout = pipeline.Layout(0, 1, devices)
  batches = [pipeline.train_batch(split, step, cfg.batch_size, cfg.seed, layout, buckets=buckets)
             for step in range(count)]
  lengths = split.lengths
  facts = {"task": task.name, "num_labels": task.num_labels, "train_examples": len(split),
           "truncated_examples": split.num_truncated, "length_buckets": list(buckets),
           "lengths": {"mean": float(lengths.mean()), "median": float(np.median(lengths)),
                       "p95": float(np.percentile(lengths, 95)), "max": int(lengths.max())},
           "split_token_utilisation": {
               "buckets": buckets_lib.utilisation(lengths, buckets),
               "fixed": buckets_lib.utilisation(lengths, (cfg.max_seq_len,))}}
  return batches, buckets, facts


def _flat(batch: Batch) -> Batch:
  return {k: v.reshape(-1, *v.shape[2:]) for k, v in batch.items()}


def _sharded(batch: Batch, devices: int) -> Batch:
  return {k: v.reshape(devices, -1, *v.shape[1:]) for k, v in batch.items()}


def unbucketed(batches: list[Batch], max_seq_len: int, seed: int, warmup: int = 0) -> list[Batch]:
  """The examples of `batches`, each as often, re-batched in random order at `max_seq_len`: the
  batches that training without buckets (ours at --max_seq_len, the peers) draws. Same layout.

  The first `warmup` batches and the rest are shuffled separately, so the timed steps of every
  contender process the same examples."""
  devices = batches[0]["input_ids"].shape[0]
  flat = [_flat(pipeline.with_length(b, max_seq_len)) for b in batches]
  size = len(flat[0]["input_ids"])
  out = []
  for part, group in enumerate((flat[:warmup], flat[warmup:])):
    if not group:
      continue
    rows = {k: np.concatenate([f[k] for f in group]) for k in group[0]}
    order = np.random.default_rng([seed, 1, part]).permutation(len(rows["input_ids"]))
    for start in range(0, len(order), size):
      batch = {k: v[order[start:start + size]] for k, v in rows.items()}
      batch["example_id"] = np.arange(size, dtype=np.int32)  # the position in the global batch
      out.append(_sharded(batch, devices))
  return out


def padded_views(batches: list[Batch], max_seq_len: int, seed: int = 0,
                 warmup: int = 0) -> dict[str, list[Batch]]:
  """The same examples as each contender batches and pads them: 'buckets' (as drawn, each batch
  from one bucket), and in random batches (`unbucketed`): 'fixed' (ours at max_seq_len),
  'peer_fixed' and 'peer_dynamic' (flat [B, S] with the peers' three inputs; dynamic: cut to the
  batch's longest example, as a per-batch padding collator does)."""
  keys = ("input_ids", "attention_mask", "token_type_ids")
  views = {"buckets": batches, "fixed": unbucketed(batches, max_seq_len, seed, warmup),
           "peer_fixed": [],
           "peer_dynamic": []}
  for fixed in views["fixed"]:
    flat = _flat(fixed)
    views["peer_fixed"].append({k: flat[k] for k in keys})
    longest = int(buckets_lib.sequence_lengths(flat["attention_mask"]).max())
    views["peer_dynamic"].append({k: flat[k][:, :longest] for k in keys})
  return views


def _tokens(batches: list[Batch]) -> tuple[np.ndarray, np.ndarray]:
  """(real tokens [n], tokens processed [n]) of each batch."""
  real, processed = [], []
  for batch in batches:
    mask = batch["attention_mask"]
    real.append(int((mask > 0).sum()))
    processed.append(mask.size)
  return np.asarray(real), np.asarray(processed)


def _throughput(times_ms: list[float], batch: int, real: np.ndarray, processed: np.ndarray,
                warmup: int) -> dict[str, Any]:
  """Totals over the timed steps (batch warmup + k for the k-th timed step)."""
  seconds = sum(times_ms) / 1e3
  steps = len(times_ms)
  timed = slice(warmup, warmup + steps)
  return {"steps": steps, "seconds": seconds, "step_ms_mean": 1e3 * seconds / steps,
          "examples_per_sec": batch * steps / seconds,
          "real_tokens_per_sec": float(real[timed].sum()) / seconds,
          "tokens_per_sec": float(processed[timed].sum()) / seconds,
          "token_utilisation": float(real[timed].sum() / processed[timed].sum())}


# How each contender pads the same examples (the views of `padded_views`).
_PEER_PADDING = {"hf_flax": "peer_fixed", "hf_torch": "peer_dynamic"}


def _prepare(cfg: Config, models: synthetic.Models, views: dict[str, list[Batch]], masks,
             num_labels: int) -> tuple[dict[str, Callable[[int], Any]], dict[str, Any],
                                       dict[str, dict], dict[str, str]]:
  """Our step per augmentation, with buckets and at --max_seq_len: (calls, compile facts,
  holders of the live states, name -> padding view)."""
  optimizer, _ = optimizer_lib.make_optimizer(cfg.learning_rate, 10_000, 0.0, cfg.weight_decay)
  calls, facts, holders, padding = {}, {}, {}, {}
  for aug in dict.fromkeys(augmentations.resolve(a) for a in cfg.benchmark_augs):
    for name, view in ((aug, "buckets"), (f"{aug}@max_seq_len", "fixed")):
      calls[name], facts[name], holders[name] = common.prepare_step(
          cfg, models, aug, "kd", views[view], masks, optimizer, num_labels)
      padding[name] = view
      print(f"  compiled {name:24s} in {facts[name]['compile_seconds']:.1f} s", flush=True)
  return calls, facts, holders, padding


def _method(cfg: Config, models: synthetic.Models, name: str, view: str, views, tokens,
            facts: dict[str, Any], times_ms: list[float], holder: dict,
            peak: Optional[float]) -> dict[str, Any]:
  """One of our steps' row: throughput over the timed batches, measured shift, FLOPs, MFU."""
  aug = name.split("@")[0]
  result = {"name": name, "aug": aug, "padding": view, **facts,
            **_throughput(times_ms, cfg.batch_size, *tokens[view], cfg.benchmark_warmup)}
  state = sharding.gather(holder["state"])
  result["measured_shift"] = (float(state.shift_sum) / int(state.shift_steps)
                              if int(state.shift_steps) else None)
  flops = sum(flops_lib.step_flops(
      aug=aug, objective="kd", teacher=models.teacher.config, student=models.student.config,
      batch=cfg.batch_size, seq_len=int(b["input_ids"].shape[-1]), shift_degree=cfg.shift_degree,
      aug_copies=cfg.aug_copies)["total"]
      for b in views[view][cfg.benchmark_warmup:cfg.benchmark_warmup + result["steps"]])
  result["tflops_per_sec"] = flops / result["seconds"] / 1e12
  result["mfu"] = flops / result["seconds"] / (peak * jax.local_device_count()) if peak else None
  return result


def run(cfg: Config) -> dict[str, Any]:
  devices = jax.local_device_count()
  if cfg.batch_size % devices:
    raise UserError(f"--batch_size={cfg.batch_size} is not divisible by the {devices} devices")
  task = classification_task(cfg)
  models, tokenizer = synthetic.build_models(cfg, task.num_labels)
  batches, buckets, data_facts = task_batches(cfg, task, tokenizer, devices)
  masks = pipeline.vocab_masks(tokenizer, models.teacher.config.vocab_size)
  views = padded_views(batches, cfg.max_seq_len, cfg.seed, cfg.benchmark_warmup)
  tokens = {name: _tokens(view) for name, view in views.items()}
  about = common.machine()
  t, s = models.teacher.config, models.student.config
  print(f"task benchmark on {devices} x {about['device_kind']}: {data_facts['task']}, "
        f"{len(batches)} batches of {cfg.batch_size}, buckets {','.join(map(str, buckets))}, "
        f"teacher {t.num_layers}x{t.hidden_size}, student {s.num_layers}x{s.hidden_size}, "
        f"{cfg.dtype}", flush=True)
  calls, facts, holders, padding = _prepare(cfg, models, views, masks, task.num_labels)
  ours = list(calls)
  # call(i) is batch i for the peers too: the same examples in the same order.
  peer_runs, peer_errors, peers = common.prepare_peers(
      cfg, models, task.num_labels, calls, lambda name: views[_PEER_PADDING[name]], offset=0)
  timing = synthetic.time_calls(cfg, calls, peer_runs)
  methods = [_method(cfg, models, name, padding[name], views, tokens, facts[name],
                     timing[name]["times_ms"], holders[name], about["peak_flops_per_device"])
             for name in ours]

  def summarize(name, run_, first_seconds, times_ms):
    view = _PEER_PADDING[name]
    return {**run_.summary(first_seconds, times_ms), "padding": view,
            **_throughput(times_ms, cfg.batch_size, *tokens[view], cfg.benchmark_warmup)}

  peers += common.peer_results(peer_runs, peer_errors, timing, summarize)
  report = {
      "machine": about,
      "shapes": {"batch": cfg.batch_size, "max_seq_len": cfg.max_seq_len, "dtype": cfg.dtype,
                 "shift_degree": cfg.shift_degree, "teacher": f"{t.num_layers}x{t.hidden_size}",
                 "student": f"{s.num_layers}x{s.hidden_size}"},
      "data": {**data_facts, "batches": len(batches),
               "batch_lengths": [int(b["input_ids"].shape[-1]) for b in batches]},
      "methods": methods,
      "peers": peers,
      "ratios": ratios(methods, peers),
      "timing": {"steps": cfg.benchmark_steps, "warmup": cfg.benchmark_warmup,
                 "rounds": max(1, min(cfg.benchmark_rounds, cfg.benchmark_steps)),
                 "interleaved": True, "throughput": "total examples / total time"},
  }
  common.write_report(report, markdown_table(report), cfg.benchmark_out)
  return report


def ratios(methods: list[dict[str, Any]], peers: list[dict[str, Any]]) -> dict[str, Any]:
  """examples/s ratios: our `none` with buckets over each peer; each aug, buckets over fixed."""
  ours = {m["name"]: m["examples_per_sec"] for m in methods}
  out: dict[str, Any] = {"buckets_over_max_seq_len": {
      m["aug"]: ours[m["aug"]] / ours[m["name"]] for m in methods if m["padding"] == "fixed"}}
  for peer in peers:
    if peer.get("examples_per_sec") and "none" in ours:
      out[f"none_over_{peer['name']}"] = ours["none"] / peer["examples_per_sec"]
  return out


def markdown_table(report: dict[str, Any]) -> str:
  m, s, d = report["machine"], report["shapes"], report["data"]
  names = {"buckets": "length buckets", "fixed": "--max_seq_len", "peer_fixed": "--max_seq_len",
           "peer_dynamic": "batch's longest"}
  rows = []
  for r in report["methods"]:
    shift = "-" if r["measured_shift"] is None else f"{r['measured_shift']:.3f}"
    rows.append([f"ours {r['aug']}", names[r["padding"]], f"{r['examples_per_sec']:.1f}",
                 f"{r['real_tokens_per_sec']:.0f}", f"{r['token_utilisation']:.2f}",
                 f"{r['step_ms_mean']:.1f}", shift, f"{r['compile_seconds']:.1f}"])
  for p in report["peers"]:
    if p.get("examples_per_sec"):
      rows.append([f"peer {p['name']}", names[p["padding"]], f"{p['examples_per_sec']:.1f}",
                   f"{p['real_tokens_per_sec']:.0f}", f"{p['token_utilisation']:.2f}",
                   f"{p['step_ms_mean']:.1f}", "-", f"{p['compile_seconds']:.1f}"])
    else:
      rows.append([f"peer {p['name']}", f"unavailable: {p.get('error')}"] + [""] * 6)
  r = report["ratios"]
  ratio_rows = [[f"{aug}: buckets / --max_seq_len", f"{value:.2f}"]
                for aug, value in r["buckets_over_max_seq_len"].items()]
  ratio_rows += [[f"none with buckets / {key[len('none_over_'):]}", f"{value:.2f}"]
                 for key, value in r.items() if key.startswith("none_over_")]
  return "\n".join([
      f"Machine: {m['devices']} x {m['device_kind']} ({m['backend']}), jax {m['jax']}; "
      f"{d['task']} training batches ({d['batches']} drawn, {report['timing']['steps']} timed), "
      f"teacher {s['teacher']}, student {s['student']}, batch {s['batch']}, --max_seq_len "
      f"{s['max_seq_len']}, buckets {','.join(map(str, d['length_buckets']))}, {s['dtype']}",
      "",
      *common.table(["step", "padding", "examples/s", "real tokens/s", "token utilisation",
                     "ms/step (mean)", "measured shift", "compile s"], rows, left=2),
      "",
      *common.table(["ratio (examples/s)", ""], ratio_rows),
  ])
