"""Students: a student's shape from the run's flags and its start from the teacher's layers."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Optional

import jax

from augpro_jax import model as model_lib
from augpro_jax.errors import UserError
from augpro_jax.model import BertConfig, Params

def student_config(cfg: Any, teacher_config: BertConfig, num_labels: int) -> BertConfig:
  """The student's shape from a run's `Config` (--student_*), on the teacher's vocabulary."""
  return dataclasses.replace(
      teacher_config, num_layers=cfg.student_layers, hidden_size=cfg.student_hidden,
      num_heads=cfg.student_heads, intermediate_size=cfg.student_intermediate_size,
      num_labels=num_labels, dropout_rate=cfg.dropout, dtype=cfg.dtype,
      dropout_bits=cfg.dropout_bits, dropout_rng=cfg.dropout_rng,
      attention_dropout_mask=cfg.attention_dropout_mask)


def select_layers(num_teacher_layers: int, num_student_layers: int) -> list[int]:
  """Teacher layers a student copies: evenly spread, ending with the last (6 -> 2: [2, 5])."""
  if not 0 < num_student_layers <= num_teacher_layers:
    raise ValueError(f"cannot pick {num_student_layers} of {num_teacher_layers} teacher layers")
  return [(i + 1) * num_teacher_layers // num_student_layers - 1
          for i in range(num_student_layers)]


def _copyable(student: BertConfig, teacher: BertConfig) -> Optional[str]:
  """None when the student can take teacher weights, else the reason it cannot."""
  for name in ("hidden_size", "num_heads", "intermediate_size", "max_position_embeddings",
               "type_vocab_size", "embedding_size"):
    s, t = getattr(student, name), getattr(teacher, name)
    if s != t:
      return f"student {name} {s} != teacher {name} {t}"
  if student.num_layers > teacher.num_layers:
    return f"student has {student.num_layers} layers but the teacher only {teacher.num_layers}"
  return None


def _copy_array(x: Any) -> jax.Array:
  return jax.device_put(x, may_alias=False)


def student_from_teacher(student_config: BertConfig, teacher_config: BertConfig,
                         teacher_params: Params, rng: jax.Array, init: str = "auto") -> Params:
  """Student params: the teacher's embeddings, pooler and `select_layers` layers, or random.

  init="teacher" copies (UserError when shapes differ); "random" initialises from `rng`; "auto"
  copies when the widths match and otherwise initialises randomly; "fine_tuned" copies as
  "teacher" does and keeps the classifier head too (`teacher_params` is then a fine-tuned
  classifier). Otherwise the head is fresh (from `rng`).
  """
  if init not in ("auto", "teacher", "random", "fine_tuned"):
    raise UserError(f"unknown student init {init!r}; choose one of: auto, teacher, random, "
                    "fine_tuned")
  if student_config.vocab_size != teacher_config.vocab_size:
    raise UserError(f"teacher and student vocabularies differ: teacher "
                    f"{teacher_config.vocab_size}, student {student_config.vocab_size}")
  reason = _copyable(student_config, teacher_config)
  if init in ("teacher", "fine_tuned") and reason:
    raise UserError(f"cannot initialise the student from the teacher: {reason}")
  if init == "random" or reason:
    if init == "auto":
      logging.info("student initialised randomly: %s", reason)
    return model_lib.init_params(student_config, rng)
  teacher = model_lib.plain_dict(teacher_params)
  layers = select_layers(teacher_config.num_layers, student_config.num_layers)
  # Copies, not references: a donated student buffer must never free a teacher array.
  copy = lambda tree: jax.tree_util.tree_map(_copy_array, tree)
  return {
      "embeddings": copy(teacher["embeddings"]),
      "encoder": {**{name: copy(part) for name, part in teacher["encoder"].items()
                     if not name.startswith("layer_")},  # DeBERTa's relative embeddings
                  **{f"layer_{j}": copy(teacher["encoder"][f"layer_{i}"])
                     for j, i in enumerate(layers)}},
      "pooler": copy(teacher["pooler"]),
      # A fine-tuned teacher's head already maps its pooled features to this task's labels.
      "classifier": (copy(teacher["classifier"]) if init == "fine_tuned"
                     else model_lib.init_classifier(student_config, rng)),
  }
