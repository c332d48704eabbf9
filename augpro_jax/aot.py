"""--mode=compile: the real train step compiled for a TPU topology on this machine, without a TPU.

With libtpu installed, `jax.experimental.topologies` describes a pod's chips on any host, and
`jit(...).lower(abstract inputs).compile()` returns the TPU executable: its memory analysis says
what one chip holds, its cost analysis the FLOPs and HBM bytes of one step. No data is read and
nothing is allocated: parameters, optimizer state and batch are `jax.ShapeDtypeStruct`s placed by
`sharding` on a [data, fsdp] mesh of the topology's chips.

The step is `train_step.make_train_step`'s per-device step, unchanged, run in global view by
`sharding.mesh_step` (shard_map manual over `data`, GSPMD over `fsdp`). Two steps can be compiled:
- distill: teacher forward (on the augmented examples; the originals' logits come cached with the
  batch unless --nocache_teacher_logits), augmentation, student forward and backward, AdamW;
- train_teacher: the teacher's fine-tuning step (forward, backward, AdamW on every parameter).

The teacher is a preset below, the published config.json of that checkpoint (so RoBERTa-large
is a RoBERTa and DeBERTa-v2-xxlarge a DeBERTa-v2 with its relative attention and convolution), or
--compile_teacher=custom: a BERT of --benchmark_teacher_layers/--benchmark_teacher_hidden (heads
of 64, FFN 4 x hidden).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pathlib
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from augpro_jax import chips as chips_lib
from augpro_jax import config as config_lib
from augpro_jax import flops as flops_lib
from augpro_jax import hf_io
from augpro_jax import model as model_lib
from augpro_jax import students
from augpro_jax import optimizer as optimizer_lib
from augpro_jax import sharding
from augpro_jax import tasks
from augpro_jax import train_step as step_lib
from augpro_jax.config import Config
from augpro_jax.errors import UserError

# The fields of the published checkpoints' config.json that shape the model.
_BERT = {"model_type": "bert", "vocab_size": 30522, "max_position_embeddings": 512,
         "type_vocab_size": 2, "layer_norm_eps": 1e-12}
PRESETS: dict[str, dict[str, Any]] = {
    "bert-base": {**_BERT, "hidden_size": 768, "num_hidden_layers": 12,
                  "num_attention_heads": 12, "intermediate_size": 3072},
    "bert-large": {**_BERT, "hidden_size": 1024, "num_hidden_layers": 24,
                   "num_attention_heads": 16, "intermediate_size": 4096},
    "roberta-large": {"model_type": "roberta", "vocab_size": 50265, "hidden_size": 1024,
                      "num_hidden_layers": 24, "num_attention_heads": 16,
                      "intermediate_size": 4096, "max_position_embeddings": 514,
                      "type_vocab_size": 1, "layer_norm_eps": 1e-5, "pad_token_id": 1},
    "deberta-v2-xxlarge": {"model_type": "deberta-v2", "vocab_size": 128100, "hidden_size": 1536,
                           "num_hidden_layers": 48, "num_attention_heads": 24,
                           "intermediate_size": 6144, "max_position_embeddings": 512,
                           "type_vocab_size": 0, "layer_norm_eps": 1e-7,
                           "relative_attention": True, "position_buckets": 256,
                           "max_relative_positions": -1, "pos_att_type": "p2c|c2p",
                           "share_att_key": True, "norm_rel_ebd": "layer_norm",
                           "position_biased_input": False, "conv_kernel_size": 3,
                           "conv_act": "gelu"},
}
STEPS = config_lib.STEPS
METHOD = ("jax.shard_map manual over 'data' (the per-device step and its pmean, unchanged), "
          "GSPMD over 'fsdp' (parameters, teacher and Adam state split by sharding.param_spec)")


def teacher_config(cfg: Config, num_labels: int) -> model_lib.BertConfig:
  """The teacher of --compile_teacher: a preset's config.json, or custom (a BERT of
  --benchmark_teacher_layers/hidden)."""
  if cfg.compile_teacher == "custom":
    if not (cfg.benchmark_teacher_layers and cfg.benchmark_teacher_hidden):
      raise UserError("--compile_teacher=custom needs --benchmark_teacher_layers and --benchmark_teacher_hidden")
    hidden = cfg.benchmark_teacher_hidden
    if hidden % 64:
      raise UserError(f"--benchmark_teacher_hidden={hidden} must be a multiple of 64 (heads of 64)")
    raw = {**_BERT, "hidden_size": hidden, "num_hidden_layers": cfg.benchmark_teacher_layers,
           "num_attention_heads": hidden // 64, "intermediate_size": 4 * hidden}
  elif cfg.compile_teacher in PRESETS:
    raw = PRESETS[cfg.compile_teacher]
  else:
    raise UserError(f"unknown --compile_teacher={cfg.compile_teacher!r}; choose one of: "
                    f"{', '.join(PRESETS)}, custom")
  config = hf_io.config_from_dict(raw, f"--compile_teacher={cfg.compile_teacher}",
                                  num_labels=num_labels, dropout_rate=cfg.dropout, dtype=cfg.dtype)
  return dataclasses.replace(config, dropout_bits=cfg.dropout_bits, dropout_rng=cfg.dropout_rng,
                             attention_dropout_mask=cfg.attention_dropout_mask)


def topology_devices(topology: str) -> list[Any]:
  """The chips of a TPU topology ('v5e:4x4'), described by libtpu on this (TPU-less) machine."""
  if importlib.util.find_spec("libtpu") is None:
    raise UserError("--mode=compile needs libtpu to compile for TPU: run `make setup-tpu` "
                    "(installs requirements-tpu.txt into .venv)")
  # libtpu takes a machine-wide lock on its first load, meant for processes that drive the TPU;
  # a compile drives none, so two compiles (or a compile beside a TPU run) may share the machine.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  try:
    return list(topologies.get_topology_desc(platform="tpu", topology_name=topology).devices)
  except Exception as exc:  # pylint: disable=broad-except  # libtpu's errors are plain RuntimeErrors
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    raise UserError(f"--topology={topology}: libtpu cannot describe it ({first}); use names like "
                    "v5e:4x4, v5e:16x16, v4:2x2x2, v5p:2x2x2") from None


def abstract_batch(batch: int, seq_len: int, num_labels: int, with_teacher_logits: bool
                   ) -> dict[str, jax.ShapeDtypeStruct]:
  ints = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.int32)
  out = {"input_ids": ints(batch, seq_len), "attention_mask": ints(batch, seq_len),
         "token_type_ids": ints(batch, seq_len), "label": ints(batch),
         "example_id": ints(batch)}
  if with_teacher_logits:
    out["teacher_logits"] = jax.ShapeDtypeStruct((batch, num_labels), jnp.float32)
  return out


def build_step(cfg: Config, step: str, t_config: model_lib.BertConfig,
               s_config: model_lib.BertConfig, num_labels: int, is_regression: bool):
  """(per-device step, abstract state, abstract teacher params, abstract batch, analytic FLOPs)."""
  objective = "kd" if step == "distill" else "labels"
  trained = s_config if step == "distill" else t_config
  spec = step_lib.StepSpec.from_config(cfg, objective=objective, num_labels=num_labels,
                                       is_regression=is_regression,
                                       aug=cfg.aug if step == "distill" else "none")
  optimizer, _ = optimizer_lib.make_optimizer(cfg.learning_rate, 1000, cfg.warmup_fraction,
                                              cfg.weight_decay)
  vocab = trained.vocab_size
  is_special = np.zeros(vocab, bool)
  is_special[:5] = True  # what they are does not change the program, only that they are constants
  teacher = model_lib.BertClassifier(t_config) if objective == "kd" else None
  step_fn = step_lib.make_train_step(spec, model_lib.BertClassifier(trained), teacher, optimizer,
                                     is_special, ~is_special)
  params = model_lib.param_shapes(trained)
  state = jax.eval_shape(lambda p: step_lib.init_state(p, optimizer, cfg.seed), params)
  teacher_params = model_lib.param_shapes(t_config) if objective == "kd" else {}
  batch = abstract_batch(cfg.batch_size, cfg.max_seq_len, num_labels,
                         spec.cached_teacher_logits)
  analytic = flops_lib.step_flops(
      aug=spec.aug, objective=objective, teacher=t_config if objective == "kd" else None,
      student=trained, batch=cfg.batch_size, seq_len=cfg.max_seq_len,
      shift_degree=cfg.shift_degree, aug_copies=cfg.aug_copies,
      cached_teacher_logits=spec.cached_teacher_logits, fgsm_loss=cfg.fgsm_loss)["total"]
  return step_fn, state, teacher_params, batch, analytic


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


# XLA:TPU's out-of-memory compile errors, in the wordings libtpu uses: (needed, available).
_OOM_PATTERNS = (
    re.compile(r"Used ([\d.]+)([KMGT]?) of ([\d.]+)([KMGT]?) hbm"),
    re.compile(r"required for [\w ]+ \(([\d.]+)([KMGT]?)\) exceeds available HBM "
               r"\(([\d.]+)([KMGT]?)\)"),
)


def out_of_memory(message: str) -> dict[str, float] | None:
  """(bytes needed, bytes available) from XLA:TPU's out-of-memory compile error, else None."""
  if "RESOURCE_EXHAUSTED" not in message:
    return None
  for pattern in _OOM_PATTERNS:
    found = pattern.search(message)
    if found:
      return {"needed_bytes": float(found.group(1)) * _UNITS[found.group(2)],
              "compiler_hbm_bytes": float(found.group(3)) * _UNITS[found.group(4)]}
  return None


def compile_on_mesh(step_fn, mesh, state, teacher, batch) -> tuple[Any, dict[str, float] | None]:
  """(the compiled executable, None), or (None, the bytes of an out-of-memory compile error)."""
  lowered = sharding.mesh_step(step_fn, mesh, state, teacher, batch).lower(state, teacher, batch)
  try:
    return lowered.compile(), None
  except Exception as exc:  # pylint: disable=broad-except  # XlaRuntimeError; only OOM is handled
    oom = out_of_memory(str(exc))
    if oom is None:
      raise
    return None, oom


def memory(compiled: Any) -> dict[str, float]:
  """Per-chip bytes from the executable: arguments + outputs - donated aliases + temporaries +
  code, the HBM the step needs while it runs."""
  stats = compiled.memory_analysis()
  out = {name: float(getattr(stats, f"{name}_size_in_bytes")) for name in
         ("argument", "output", "alias", "temp", "generated_code")}
  out["needed_bytes"] = (out["argument"] + out["output"] - out["alias"] + out["temp"]
                         + out["generated_code"])
  return out


def cost(compiled: Any) -> dict[str, float]:
  """FLOPs and HBM bytes accessed of one step on one chip (XLA's HLO cost analysis)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return {"flops": float(analysis.get("flops", 0.0)),
          "bytes_accessed": float(analysis.get("bytes accessed", 0.0))}


def model_shape(config: model_lib.BertConfig) -> dict[str, int]:
  return {"family": config.family, "layers": config.num_layers, "hidden": config.hidden_size,
          "heads": config.num_heads,
          "intermediate": config.intermediate_size, "vocab": config.vocab_size,
          "params": int(sum(np.prod(x.shape) for x in jax.tree.leaves(
              model_lib.param_shapes(config))))}


def check(cfg: Config, num_chips: int) -> None:
  if cfg.compile_step not in STEPS:
    raise UserError(f"unknown --compile_step={cfg.compile_step!r}; choose one of: "
                    f"{', '.join(STEPS)}")
  if cfg.batch_size % num_chips:
    raise UserError(f"--batch_size={cfg.batch_size} is global and must be divisible by the "
                    f"{num_chips} chips of --topology={cfg.topology}")


def run(cfg: Config) -> dict[str, Any]:
  """Compile the step of --compile_step for --topology on a --mesh_* mesh; write --compile_out."""
  chip = chips_lib.for_topology(cfg.topology)
  devices = topology_devices(cfg.topology)
  check(cfg, len(devices))
  mesh = sharding.make_mesh(devices, cfg.mesh_data, cfg.mesh_fsdp)
  task = tasks.get_task(cfg.task) if cfg.task != "custom" else None
  num_labels = task.num_labels if task else max(2, len(cfg.label_names))
  is_regression = bool(task and task.is_regression)
  t_config = teacher_config(cfg, num_labels)
  s_config = students.student_config(cfg, t_config, num_labels)
  step_fn, state, teacher, batch, analytic = build_step(cfg, cfg.compile_step, t_config, s_config,
                                                        num_labels, is_regression)
  report = {
      "topology": cfg.topology, "chips": len(devices), "device_kind": devices[0].device_kind,
      "chip": dataclasses.asdict(chip), "mesh": dict(mesh.shape), "method": METHOD,
      "step": cfg.compile_step, "aug": cfg.aug if cfg.compile_step == "distill" else "none",
      "teacher": {"preset": cfg.compile_teacher, **model_shape(t_config)},
      "student": model_shape(s_config) if cfg.compile_step == "distill" else None,
      "batch": cfg.batch_size, "batch_per_chip": cfg.batch_size // len(devices),
      "seq_len": cfg.max_seq_len, "dtype": cfg.dtype,
      "cached_teacher_logits": "teacher_logits" in batch,
      # What the shardings alone give one chip, before XLA's buffers: the state and the teacher.
      "state_bytes_per_chip": sharding.bytes_per_device(state, sharding.tree_shardings(mesh, state)),
      "teacher_bytes_per_chip": sharding.bytes_per_device(
          teacher, sharding.tree_shardings(mesh, teacher)),
  }
  resident = report["state_bytes_per_chip"] + report["teacher_bytes_per_chip"]
  start = time.perf_counter()
  if resident > chip.hbm_bytes:  # no program fits: the minutes of compiling would only confirm it
    compiled, oom = None, {"needed_bytes": float(resident), "lower_bound": True}
  else:
    compiled, oom = compile_on_mesh(step_fn, mesh, state, teacher, batch)
  report["compile_seconds"] = round(time.perf_counter() - start, 1)
  if compiled is None:
    report["memory"] = oom
  else:
    report["memory"] = memory(compiled)
    report["cost_per_chip"] = cost(compiled)
    report["roofline"] = chips_lib.roofline(chip, report["cost_per_chip"]["flops"],
                                            report["cost_per_chip"]["bytes_accessed"])
    report["model_flops_per_chip"] = analytic / len(devices)
    report["mfu"] = report["model_flops_per_chip"] / (
        report["roofline"]["step_seconds"] * chip.peak_flops)
  needed = report["memory"]["needed_bytes"]
  report["fits"] = compiled is not None and needed <= chip.hbm_bytes
  report["verdict"] = verdict(report, chip)
  path = pathlib.Path(cfg.compile_out)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(report, indent=2) + "\n")
  report["out"] = str(path)
  return report


def verdict(report: dict[str, Any], chip: chips_lib.Chip) -> str:
  """One line: fits (with the roofline) or does not fit (bytes needed vs the chip's HBM)."""
  gib = lambda b: f"{b / 2**30:.2f} GiB"
  mesh = f"mesh data={report['mesh']['data']} fsdp={report['mesh']['fsdp']}"
  needed = report["memory"]["needed_bytes"]
  if not report["fits"]:
    what = (f"at least {gib(needed)} per chip for its parameters, optimizer state and teacher "
            "alone (not compiled)" if report["memory"].get("lower_bound") else
            f"{gib(needed)} per chip")
    return (f"does not fit: the {report['step']} step on {report['topology']} ({mesh}) needs "
            f"{what}; a {chip.name} chip has {gib(chip.hbm_bytes)} of HBM")
  roof = report["roofline"]
  return (f"fits: the {report['step']} step on {report['topology']} ({mesh}) needs {gib(needed)} "
          f"of {gib(chip.hbm_bytes)} per chip; roofline {roof['step_seconds'] * 1e3:.1f} ms/step "
          f"({roof['bound']}-bound), MFU {report['mfu']:.1%}")
