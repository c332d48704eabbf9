"""What a knob is: one declaration per setting, and everything derived from it.

A knob is a field of a config dataclass (augpro_jax/config.py) declared with `knob(...)`: its
default, its help text, its allowed values (`choices`), the help group it is listed under, the modes
that read it, and whether it may differ between the starts of one run. The absl flags and their
help (main.py), the enum checks of `Config.validate` and the run identity of a workdir
(workdir.py: a knob a mode does not read is not compared for that mode) are all derived here, so a
new knob is one field and nothing else.

This module sits below config.py and imports nothing of the project but errors.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Optional, Union

from augpro_jax.errors import UserError

MODES = ("distill", "train_teacher", "finetune", "eval", "predict", "benchmark", "compile")
TRAINING_MODES = ("distill", "train_teacher", "finetune")  # the modes that write a run identity
# Help groups, in the order `--helpfull` lists them.
GROUPS = ("run", "data", "optimisation", "models", "distillation", "augmentation", "loop",
          "mesh", "benchmark", "compile", "multi-process")
_UNSET = object()


class RegistryChoices:
  """Allowed values that a higher module registers (the augmentation registry fills `AUGMENTATIONS`).

  config.py sits below the registry and must not import it; the registry adds its names here as it
  registers them, so a knob can still declare "one of the registered names".
  """

  def __init__(self, what: str, module: str):
    self.what, self.module = what, module
    self._names: dict[str, None] = {}  # ordered set

  def set(self, names: tuple[str, ...]) -> None:
    self._names = dict.fromkeys(names)

  def __iter__(self) -> Iterator[str]:
    if not self._names:  # a programming error, not bad input
      raise RuntimeError(f"no {self.what} are registered yet: import {self.module} first")
    return iter(tuple(self._names))


AUGMENTATIONS = RegistryChoices("augmentations", "augpro_jax.augmentations")
Choices = Union[tuple, RegistryChoices]


def knob(default: Any, help: str, *,  # pylint: disable=redefined-builtin
         choices: Optional[Choices] = None, group: str = "run", modes: tuple[str, ...] = MODES, may_differ: Optional[str] = None,
         before_added: Any = _UNSET, aliases: tuple[str, ...] = ()) -> Any:
  """A config field and everything derived from it (the flag is named after the field).

  choices: the allowed values (of each element, for a tuple-valued knob); group: the help group;
  modes: the modes that read it (a run identity does not compare it in the others); may_differ:
  why it cannot change the trained parameters, if it may differ between the starts of one run;
  before_added: the value that runs from before the knob existed had in effect, where that is not
  the default; aliases: former flag names that still work.
  """
  if group not in GROUPS:
    raise ValueError(f"unknown knob group {group!r}")
  if not set(modes) <= set(MODES):
    raise ValueError(f"unknown modes {sorted(set(modes) - set(MODES))}")
  return dataclasses.field(default=default, metadata={
      "help": help, "choices": choices, "group": group, "modes": tuple(modes),
      "may_differ": may_differ, "before_added": before_added, "aliases": tuple(aliases)})


def group_maker(group: str, modes: tuple[str, ...] = MODES) -> Callable[..., Any]:
  """A `knob` maker for one help group whose knobs the `modes` read unless a knob says otherwise."""
  def make(default: Any, help: str, **kwargs) -> Any:  # pylint: disable=redefined-builtin
    return knob(default, help, **{"group": group, "modes": modes, **kwargs})
  return make


def fields(cls: type) -> tuple[dataclasses.Field, ...]:
  """The knob fields of a config dataclass."""
  return tuple(f for f in dataclasses.fields(cls) if "help" in f.metadata)


def choices(cls: type, name: str) -> tuple[Any, ...]:
  """The allowed values of knob `name` (the maths modules check their arguments against these)."""
  listed = {f.name: f for f in dataclasses.fields(cls)}[name].metadata["choices"]
  if listed is None:
    raise ValueError(f"--{name} takes no fixed set of values")
  return tuple(listed)


def not_read_by(cls: type, mode: str) -> tuple[str, ...]:
  """The knobs that `mode` never reads (a run identity of that mode does not compare them)."""
  return tuple(f.name for f in fields(cls) if mode not in f.metadata["modes"])


def may_differ(cls: type) -> dict[str, str]:
  """Knob -> why it may differ between the starts of one run (it cannot change the parameters)."""
  return {f.name: f.metadata["may_differ"] for f in fields(cls) if f.metadata["may_differ"]}


def value_before_added(field: dataclasses.Field) -> Any:
  """What a run from before `field` existed had in effect (its default unless declared)."""
  before = field.metadata.get("before_added", _UNSET)
  return field.default if before is _UNSET else before


def check_choices(cfg: Any) -> None:
  """Every knob with `choices` holds one of them (each element, for a tuple-valued knob)."""
  for field in fields(type(cfg)):
    if field.metadata["choices"] is None:
      continue
    allowed = tuple(field.metadata["choices"])
    value = getattr(cfg, field.name)
    for item in value if isinstance(value, tuple) else (value,):
      if item not in allowed:
        raise UserError(f"unknown --{field.name}={item!r}; choose one of: "
                        f"{', '.join(map(str, allowed))}")
