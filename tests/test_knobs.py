"""One declaration per knob: flags, help, choices checks and the run identity derive from it."""

import dataclasses
import typing

from absl import flags
import pytest

from augpro_jax import config as config_lib
from augpro_jax import knobs
from augpro_jax import workdir as workdir_lib
from augpro_jax.errors import UserError
import main


@dataclasses.dataclass(frozen=True)
class _ScratchGroup:
  scratch_style: str = knobs.knob("plain", "How scratch things look.", choices=("plain", "fancy"),
                                  group="augmentation", modes=("distill",))
  scratch_sizes: tuple[str, ...] = knobs.knob((), "Scratch sizes.", choices=("s", "m"),
                                              group="loop")
  scratch_display: int = knobs.knob(1, "A scratch display setting.", group="loop",
                                    may_differ="only what is shown")


@dataclasses.dataclass(frozen=True)
class _ScratchConfig(config_lib.Config, _ScratchGroup):
  pass


def _identity(cfg):
  return workdir_lib.identity(cfg, {"train": "aa"}, None)


def test_a_new_knob_gets_its_flag_help_choices_check_and_identity_rule():
  flag_values = flags.FlagValues()
  main.define_flags(_ScratchConfig, flag_values, main_module="scratch_main")
  assert flag_values["scratch_style"].default == "plain"
  with pytest.raises(flags.IllegalFlagValueError):
    flag_values(["prog", "--scratch_style=odd"])
  help_text = flag_values.get_help()
  assert "<plain|fancy>: How scratch things look." in help_text
  assert "Scratch sizes. Each one of: s, m." in help_text
  groups = flag_values.flags_by_module_dict()
  assert "scratch_style" in {f.name for f in groups["6. augmentation flags"]}
  assert {"scratch_sizes", "scratch_display"} <= {f.name for f in groups["7. loop flags"]}
  assert "scratch_style" in {f.name for f in flag_values.get_key_flags_for_module("scratch_main")}

  with pytest.raises(UserError, match=r"unknown --scratch_style='odd'; choose one of: plain, fancy"):
    _ScratchConfig(scratch_style="odd").validate()
  with pytest.raises(UserError, match=r"unknown --scratch_sizes='xl'"):
    _ScratchConfig(scratch_sizes=("s", "xl")).validate()
  _ScratchConfig(scratch_style="fancy", scratch_sizes=("m", "s")).validate()

  for mode, named in (("distill", True), ("finetune", False), ("train_teacher", False)):
    old = _identity(_ScratchConfig(mode=mode))
    new = _identity(_ScratchConfig(mode=mode, scratch_style="fancy", scratch_display=2))
    expected = ["--scratch_style: plain in the workdir, fancy now"] if named else []
    assert workdir_lib.describe_differences(old, new, _ScratchConfig) == expected, mode
    assert ("scratch_style" in new["settings"]) == named
    assert "scratch_display" not in new["settings"]


def _other_value(field: dataclasses.Field, value, kind):
  """A different value of the knob's own type (valid where the knob has choices)."""
  listed = field.metadata["choices"]
  if typing.get_origin(kind) is typing.Union:
    kind = next(t for t in typing.get_args(kind) if t is not type(None))
  if typing.get_origin(kind) is tuple:
    return tuple(value) + (tuple(listed)[-1] if listed is not None else "x",)
  if listed is not None:
    return next(c for c in listed if c != value)
  if kind is bool:
    return not value
  if kind in (int, float):
    return kind(7) if value is None else value + kind(1)
  return "other" if value is None else value + "_other"


_TYPES = config_lib.field_types()
_FIELDS = [(f, mode) for f in knobs.fields(config_lib.Config) for mode in knobs.TRAINING_MODES]


@pytest.mark.parametrize("field,mode", _FIELDS, ids=[f"{f.name}-{m}" for f, m in _FIELDS])
def test_every_compared_knob_is_named_when_it_changes(field, mode):
  base = config_lib.Config(mode=mode, aug="augpro_mix")
  if field.name in ("aug", "mode"):
    base = base.replace(**{field.name: {"aug": "none", "mode": mode}[field.name]})
  if field.name == "eval_every":  # compared only where evaluations pick the export
    base = base.replace(export="best")
  changed = base.replace(**{field.name: _other_value(field, getattr(base, field.name),
                                                     _TYPES[field.name])})
  named = [c for c in workdir_lib.describe_differences(_identity(base), _identity(changed))
           if c.startswith(f"--{field.name}:")]
  compared = field.name in workdir_lib.compared_settings(base)
  assert compared == (field.name not in workdir_lib.not_compared(mode))
  assert bool(named) == compared, (field.name, mode, named)


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(config_lib.AugmentConfig)])
def test_a_train_teacher_workdir_resumes_whatever_augment_knob_changed(tmp_path, name):
  field = {f.name: f for f in dataclasses.fields(config_lib.Config)}[name]
  cfg = config_lib.Config(mode="train_teacher")
  changed = cfg.replace(**{name: _other_value(field, getattr(cfg, name), _TYPES[name])})
  workdir_lib.check_identity(tmp_path, _identity(cfg), write=True)
  (tmp_path / "checkpoints").mkdir()  # something trained: a later start resumes it
  workdir_lib.check_identity(tmp_path, _identity(changed), write=False)  # no UserError
  # The same change does block a distill workdir, which reads the knob.
  assert workdir_lib.describe_differences(_identity(cfg.replace(mode="distill")),
                                          _identity(changed.replace(mode="distill")))


def test_enum_sets_have_one_source():
  from augpro_jax import augment, mixing  # pylint: disable=g-import-not-at-top
  del augment
  assert mixing.LAMBDA_RULES == config_lib.choices("mix_lambda")
  assert mixing.ALIGNMENTS == config_lib.choices("mix_partner_align")
  with pytest.raises(ValueError, match="unknown mix lambda rule"):
    mixing.mix_lambdas(None, 1, rule="odd", alpha=1.0, value=0.5, scope="example")


def test_registry_names_feed_the_aug_knobs():
  from augpro_jax import augmentations  # pylint: disable=g-import-not-at-top
  assert tuple(config_lib.AUGMENTATIONS) == augmentations.choices()
  entry = augmentations.Augmentation("scratch_aug", "none", help="A scratch entry.")
  augmentations.register(entry)
  try:
    config_lib.Config(aug="scratch_aug", benchmark_augs=("scratch_aug", "none")).validate()
    assert "scratch_aug" in augmentations.device_names()
  finally:
    augmentations.unregister("scratch_aug")
  with pytest.raises(UserError, match="unknown --aug='scratch_aug'"):
    config_lib.Config(aug="scratch_aug").validate()
  with pytest.raises(UserError, match="unknown --benchmark_augs='nope'"):
    config_lib.Config(benchmark_augs=("nope",)).validate()


def test_every_projecting_augmentation_gets_a_projection_share():
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from augpro_jax import augmentations  # pylint: disable=g-import-not-at-top
  from augpro_jax.bench import synthetic  # pylint: disable=g-import-not-at-top
  knn = augmentations.get("knn")
  augmentations.register(dataclasses.replace(knn, name="scratch_knn"))
  try:
    ids = jnp.array([[101, 5, 6, 7, 102, 0], [101, 8, 9, 102, 0, 0]], jnp.int32)
    mask = (ids > 0).astype(jnp.int32)
    table = jax.random.normal(jax.random.PRNGKey(0), (40, 4))
    inputs = augmentations.StepInputs(
        ids=ids, mask=mask, types=jnp.zeros_like(ids), eligible=(ids > 0) & (ids < 100),
        gold=jnp.eye(2), batch={}, table=table, candidate_mask=jnp.arange(40) < 30,
        knobs=config_lib.Config(knn_k=3).augment, delta=0.01 * jnp.ones((2, 6, 4)))
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    calls = synthetic.projection_calls(inputs, keys, jax.random.PRNGKey(2))
    assert set(calls) == {f"projection_{name}{suffix}" for suffix in ("", "_approx")
                          for name in augmentations.projecting_names()}
    assert "projection_scratch_knn" in calls and "projection_augpro_mix" in calls
    new = calls["projection_scratch_knn"]()
    assert new.shape == ids.shape and bool(jnp.any(new != ids))
  finally:
    augmentations.unregister("scratch_knn")


def test_renamed_benchmark_knobs_keep_their_old_flag_names():
  flag_values = flags.FlagValues()
  main.define_flags(flag_values=flag_values, main_module="scratch_main")
  flag_values(["prog", "--teacher_layers=12", "--benchmark_teacher_hidden=768"])
  assert flag_values.benchmark_teacher_layers == 12
  assert flag_values.benchmark_teacher_hidden == 768


def test_unset_epochs_are_three_or_enough_for_the_minimum_of_steps():
  """3 epochs of 480 MNLI rows would be 45 steps, after which the teacher is at chance: unset
  epoch counts become 3, or as many as make 150 teacher steps and 450 student steps. A value given
  on the command line stays."""
  from augpro_jax import context  # pylint: disable=import-outside-toplevel
  from augpro_jax import loop  # pylint: disable=import-outside-toplevel
  cfg = config_lib.Config(batch_size=32)
  small = context.resolve_epochs(cfg, 480)  # 15 steps per epoch
  assert (small.teacher_num_epochs, small.num_epochs) == (10.0, 30.0)
  assert loop.total_train_steps(small, 480, small.teacher_num_epochs) == 150
  assert loop.total_train_steps(small, 480, small.num_epochs) == 450
  odd = context.resolve_epochs(cfg, 1000)  # 32 steps per epoch (the last one partial)
  assert loop.total_train_steps(odd, 1000, odd.teacher_num_epochs) >= 150
  assert loop.total_train_steps(odd, 1000, odd.num_epochs) >= 450
  large = context.resolve_epochs(cfg, 10_000)
  assert (large.num_epochs, large.teacher_num_epochs) == (3.0, 3.0)
  given = context.resolve_epochs(cfg.replace(num_epochs=1.0, teacher_num_epochs=0.5), 480)
  assert (given.num_epochs, given.teacher_num_epochs) == (1.0, 0.5)
