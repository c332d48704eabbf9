"""Which evaluated step a run keeps: the best so far by the task's main dev metric, early stopping,
and the evaluation schedule (`--eval_every`, `--early_stopping_patience`, `--export`).

The state here is recomputed, never stored on its own: on resume it is rebuilt from the metrics
orbax keeps beside each checkpoint. A run that selects (export=best, or early stopping) saves a
checkpoint at every evaluation, and the checkpoint manager always keeps the best one, so the
best step's metrics and parameters survive any restart, and evaluations since the best are a
count of scheduled evaluation steps: a resumed run decides exactly as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from augpro_jax.config import Config


@dataclasses.dataclass
class Tracker:
  """The best evaluation so far and the early-stopping rule over the evaluation schedule."""

  metric: str  # the main metric's key in the dev metrics (e.g. 'accuracy', 'dev_matched/accuracy')
  interval: int  # steps between evaluations; 0: at the end only
  patience: int  # evaluations without improvement before stopping; 0: never
  export_best: bool = False  # final/ holds the best step, not the last
  best_value: Optional[float] = None
  best_step: Optional[int] = None
  best_metrics: dict[str, float] = dataclasses.field(default_factory=dict)

  @property
  def selects(self) -> bool:
    """Whether every evaluation is checkpointed (the best must be on disk, and resumable)."""
    return self.patience > 0 or self.export_best

  def is_eval_step(self, step: int) -> bool:
    return bool(self.interval) and step % self.interval == 0

  def update(self, step: int, metrics: dict[str, float]) -> bool:
    """Record the evaluation at `step`; True if it is a new best (ties keep the earlier step)."""
    value = metrics.get(self.metric)
    if value is None or (self.best_value is not None and not value > self.best_value):
      return False
    self.best_value, self.best_step, self.best_metrics = float(value), step, dict(metrics)
    return True

  def evals_since_best(self, step: int) -> int:
    """Scheduled evaluations in (best step, step]."""
    if self.best_step is None or not self.interval:
      return 0
    return step // self.interval - self.best_step // self.interval

  def should_stop(self, step: int) -> bool:
    return bool(self.patience) and self.is_eval_step(step) and \
        self.evals_since_best(step) >= self.patience

  def stop_message(self, step: int) -> str:
    return (f"early stopping at step {step}: {self.metric} has not improved for "
            f"{self.evals_since_best(step)} evaluations (best {self.best_value:.4f} at step "
            f"{self.best_step}; --early_stopping_patience={self.patience})")

  def summary(self) -> dict[str, Any]:
    """summary.json's `best_dev`."""
    if self.best_step is None:
      return {}
    return {"metric": self.metric, "value": self.best_value, "step": self.best_step}

  def restore(self, manager: Any, upto: int) -> "Tracker":
    """Rebuild the best from the metrics saved with the checkpoints at steps <= `upto`."""
    for step in sorted(manager.all_steps()):
      metrics = manager.metrics(step) if step <= upto else None
      if metrics:
        self.update(step, {k: float(v) for k, v in metrics.items()})
    return self


def eval_interval(eval_every: int | str, steps_per_epoch: int) -> int:
  """Steps between evaluations (0: at the end only) of --eval_every, a count or 'epoch'."""
  return steps_per_epoch if str(eval_every) == "epoch" else int(eval_every)


def make_tracker(cfg: Config, metric: str, steps_per_epoch: int) -> Tracker:
  return Tracker(metric, eval_interval(cfg.eval_every, steps_per_epoch),
                 cfg.early_stopping_patience, export_best=cfg.export == "best")
