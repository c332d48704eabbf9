"""The model card exported beside a trained model (`final/hf/README.md`), as `save_pretrained`
users expect one: what the model is, what it was trained on and how, its dev metrics, and the
command that trains it again."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shlex
from typing import Any

from augpro_jax.config import Config
from augpro_jax.errors import UserError

# Knobs that say where things are, not what is trained: left out of the card's command.
_LOCAL = ("glue_dir", "workdir", "progress", "coordinator_address", "num_processes", "process_id")


def command_line(cfg: Config) -> str:
  """`python main.py` with every knob that differs from its default (paths to data left out)."""
  parts = ["python", "main.py"]
  for field in dataclasses.fields(Config):
    value = getattr(cfg, field.name)
    if field.name in _LOCAL or value == field.default or value is None:
      continue
    if isinstance(value, tuple):
      value = ",".join(map(str, value))
    elif isinstance(value, bool):
      value = str(value).lower()
    parts.append(f"--{field.name}={value}")
  return " ".join(shlex.quote(p) for p in parts)


def card_text(cfg: Config, summary: dict[str, Any], *, role: str, architecture: str) -> str:
  """The card's Markdown. role: 'teacher' or 'student'; summary: the run's summary.json dict."""
  export = summary.get("export") or {}
  metrics = export.get("dev") or summary.get("dev") or {}
  rows = "\n".join(f"| {name} | {value:.4f} |" for name, value in sorted(metrics.items()))
  if cfg.teacher_ckpt and role == "student":
    teacher = f"`{cfg.teacher_ckpt}` (a fine-tuned teacher, used as it is)"
  else:
    teacher = f"`{cfg.teacher}`, fine-tuned on the task's training set"
  how = {"distill": f"distilled from the teacher with augmentation `{cfg.aug}`",
         "finetune": f"fine-tuned on gold labels with augmentation `{cfg.aug}`",
         }.get(cfg.mode, "fine-tuned on gold labels")
  step = export.get("step", summary.get("steps"))
  chosen = "the best evaluated step" if export.get("which") == "best" else "the last step"
  return f"""---
library_name: transformers
pipeline_tag: text-classification
tags: [augpro-jax, knowledge-distillation, glue, {summary.get('task', cfg.task)}]
---

# {summary.get('task', cfg.task)} {role} ({architecture})

A BERT sequence classifier trained with augpro-jax: {how}.

- task: `{summary.get('task', cfg.task)}`, {summary.get('train_examples', 'unknown'):,} training examples
- teacher: {teacher}
- augmentation: `{cfg.aug if role == 'student' else 'none'}`
- training: {summary.get('steps_trained', step)} steps of {cfg.batch_size}; this is step {step}
  ({chosen}); seed {cfg.seed}

## Dev metrics (step {step})

| metric | value |
|---|---|
{rows}

## Command

```
{command_line(cfg)}
```

Load with `transformers.AutoModelForSequenceClassification.from_pretrained` on this directory.
"""


def write_card(directory: pathlib.Path, text: str) -> None:
  """`directory/README.md`, replaced atomically."""
  path = directory / "README.md"
  tmp = path.with_name(f".README.md.tmp-{os.getpid()}")
  try:
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
  except OSError as exc:
    tmp.unlink(missing_ok=True)
    raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
