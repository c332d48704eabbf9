"""Analytic FLOP counts for one train step, and peak FLOP/s per device kind (for MFU)."""

from __future__ import annotations

from typing import Any, Optional

import jax

from augpro_jax import augment
from augpro_jax import augmentations
from augpro_jax import deberta
from augpro_jax import model as model_lib
from augpro_jax.model import BertConfig

# Dense bf16 peak FLOP/s per device (vendor datasheets, no sparsity). float32 runs report MFU
# against the same bf16 peak, as MaxText does, so numbers are comparable across dtypes.
PEAK_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,  # v5e
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "NVIDIA A100": 312e12,
    "NVIDIA H100": 989e12,  # SXM
    "NVIDIA H200": 989e12,
}


def device_peak_flops(device: Optional[jax.Device] = None) -> Optional[float]:
  """Peak FLOP/s of `device` (default: the first local one), or None when unknown (e.g. CPU)."""
  kind = (device or jax.local_devices()[0]).device_kind
  for name, peak in sorted(PEAK_FLOPS.items(), key=lambda kv: -len(kv[0])):
    if kind.startswith(name) or name in kind:
      return peak
  return None


def forward_flops(config: BertConfig, batch: int, seq_len: int) -> float:
  """Analytic matmul FLOPs (2*m*n*k per matmul) of one forward pass.

  With B=batch, S=seq_len, d=hidden, I=intermediate, L=layers, C=num_labels:

    per layer: Q, K, V and output projections  4 * 2*B*S*d*d
               scores Q K^T (all heads)            2*B*S*S*d
               probs @ V (all heads)               2*B*S*S*d
               FFN up and down                 2 * 2*B*S*d*I
    pooler 2*B*d*d, classifier 2*B*d*C

    total = L * (8*B*S*d^2 + 4*B*S^2*d + 4*B*S*d*I) + 2*B*d^2 + 2*B*d*C

  ELECTRA's embeddings_project adds 2*B*S*E*d when its tables are E != d wide. DeBERTa adds per
  layer and relative term (c2p, p2c) 2*R*d*d to project its R-row position table and 2*B*S*R*d to
  score against it, and its convolution (kernel K, G groups) 2*B*S*d*(d/G)*K. The word-embedding
  lookup is a gather (0 FLOPs); elementwise ops, softmax and LayerNorm are not
  counted. Callers count backward as 2x forward.

  Where the model runs its last layer on the first token only (`model.prunes_last_layer`), that
  layer's query and output projections, attention and FFN count 1 position instead of S:
  minus 4*B*(S-1)*d^2 + 4*B*(S-1)*S*d + 4*B*(S-1)*d*I.
  """
  b, s, d = float(batch), float(seq_len), float(config.hidden_size)
  per_layer = 8 * b * s * d * d + 4 * b * s * s * d + 4 * b * s * d * config.intermediate_size
  project = 2 * b * s * config.embedding_width * d if config.embedding_width != d else 0.0
  rows = 2.0 * deberta.span(config)
  per_layer += len(deberta.terms(config)) * (2 * rows * d * d + 2 * b * s * rows * d)
  conv = 2 * b * s * d * (d / config.conv_groups) * config.conv_kernel_size
  skipped = 0.0
  if model_lib.prunes_last_layer(config) and config.num_layers:
    skipped = 4 * b * (s - 1) * (d * d + s * d + d * config.intermediate_size)
  return (config.num_layers * per_layer - skipped + 2 * b * d * d + 2 * b * d * config.num_labels
          + project + conv)


def projection_flops(positions: int, vocab: int, width: int) -> float:
  """Scoring `positions` vectors against the whole table: one [P, d] x [d, V] matmul."""
  return 2.0 * positions * vocab * width


def step_flops(*, aug: str, objective: str, teacher: Optional[BertConfig], student: BertConfig,
               batch: int, seq_len: int, shift_degree: float, aug_copies: int = 1,
               cached_teacher_logits: bool = False, fgsm_loss: str = "kd") -> dict[str, float]:
  """FLOPs of one global train step, by part. Backward counts as 2x forward.

  cached_teacher_logits: the teacher's logits on the originals come with the batch (computed once
  before training, not counted here), so it runs on the augmented examples only.
  fgsm_loss: "ce" or "both" in distillation add a backward pass for the input gradient alone
  (activations only, about one forward's FLOPs).
  """
  entry = augmentations.get(aug)
  copies = aug_copies if entry.level != "none" else 0
  examples = batch * (1 + copies)
  teacher_examples = batch * copies if cached_teacher_logits else examples
  parts = {
      "teacher_forward": forward_flops(teacher, teacher_examples, seq_len)
                         if objective == "kd" and teacher is not None else 0.0,
      "student_forward_backward": 3.0 * forward_flops(student, examples, seq_len),
      "projection": 0.0,
  }
  # An input gradient (FGSM family) comes out of the original batch's backward: no extra FLOPs,
  # unless it follows another loss than the step's own.
  if entry.needs_input_grad and objective == "kd" and fgsm_loss != "kd":
    parts["student_input_grad"] = forward_flops(student, batch, seq_len)
  if entry.projects:
    positions = batch * copies * augment.position_budget(shift_degree, seq_len)
    parts["projection"] = projection_flops(positions, student.vocab_size, student.embedding_width)
  parts["total"] = sum(parts.values())
  return parts


def memory_summary(compiled: Any) -> dict[str, float]:
  """XLA's memory analysis of a compiled step, in MB (empty where the backend reports none)."""
  try:
    analysis = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  # not every backend implements it
    return {}
  if analysis is None:
    return {}
  fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
            "generated_code_size_in_bytes")
  return {f"memory_{f.replace('_size_in_bytes', '')}_mb": getattr(analysis, f, 0) / 2**20
          for f in fields if hasattr(analysis, f)}


def mean_step_flops(steps_per_length: dict[int, int], **kwargs) -> dict[str, float]:
  """FLOPs of a run's mean step, by part, when its steps have different sequence lengths
  (length buckets): `step_flops(seq_len=length, **kwargs)` weighted by steps per length."""
  total = sum(steps_per_length.values())
  mean: dict[str, float] = {}
  for length, count in steps_per_length.items():
    for part, value in step_flops(seq_len=length, **kwargs).items():
      mean[part] = mean.get(part, 0.0) + value * count / total
  return mean
