"""The objective and the knobs: the KD loss against NumPy, and every loss or augmentation knob
changes what it should (a knob the step ignored would leave the loss or the ids unchanged)."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from augpro_jax import augment
from augpro_jax import augmentations
from augpro_jax import flops
from augpro_jax import losses
from augpro_jax import sharding
from augpro_jax import token_profile
from augpro_jax import train_step as step_lib
from augpro_jax.config import AugmentConfig

import test_train_step as tts


def _np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0])
def test_kd_loss_is_t_squared_kl_teacher_to_student(temperature):
  rng = np.random.default_rng(0)
  student, teacher = rng.normal(size=(2, 6, 3)).astype(np.float32) * 3
  t_logp = _np_log_softmax(teacher.astype(np.float64) / temperature)
  s_logp = _np_log_softmax(student.astype(np.float64) / temperature)
  expected = temperature ** 2 * np.sum(np.exp(t_logp) * (t_logp - s_logp), -1)  # KL(teacher||student)
  reverse = temperature ** 2 * np.sum(np.exp(s_logp) * (s_logp - t_logp), -1)
  got = np.asarray(losses.kd_loss(jnp.asarray(student), jnp.asarray(teacher),
                                  temperature=temperature, is_regression=False))
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
  assert not np.allclose(got, reverse, rtol=1e-3)  # the direction matters on these logits


def test_kd_loss_regression_is_mse_and_teacher_gets_no_gradient():
  student = jnp.asarray([[0.5], [2.0]])
  teacher = jnp.asarray([[1.5], [-1.0]])
  got = losses.kd_loss(student, teacher, temperature=3.0, is_regression=True)
  np.testing.assert_allclose(np.asarray(got), [1.0, 9.0])  # no T^2 for regression
  grad = jax.grad(lambda t: losses.kd_loss(student, t, temperature=2.0,
                                           is_regression=False).sum())(jnp.ones((2, 1)))
  np.testing.assert_array_equal(np.asarray(grad), 0.0)


# ----------------------------------------------------------------------------------------------
# Knobs, through the real step.
# ----------------------------------------------------------------------------------------------


def _one_step(aug="augpro_mix", objective="kd", teacher_offset=0.0, **knobs):
  """Loss metrics after one step on 8 devices, from the same state and batch."""
  p_step, state, teacher, _ = tts.setup(aug, objective=objective, **knobs)
  if teacher_offset:  # a teacher unlike the student, so KD and CE terms are far from zero
    teacher = jax.tree.map(lambda x: x + teacher_offset * jnp.sign(x), teacher)
  _, metrics = p_step(state, teacher, tts.make_batch(0, 8))
  return jax.device_get(jax.tree.map(float, metrics))


@pytest.mark.slow
@pytest.mark.parametrize("knob,a,b,aug", [
    ("temperature", 1.0, 4.0, "none"),
    ("alpha_ce", 0.0, 1.0, "none"),
    ("aug_weight", 1.0, 0.25, "augpro_mix"),
    ("fgsm_eps", 0.01, 1.0, "fgsm"),
    ("mix_alpha", 0.1, 5.0, "mixup"),
])
def test_loss_knobs_change_the_loss(knob, a, b, aug):
  first = _one_step(aug, teacher_offset=0.05, **{knob: a})
  second = _one_step(aug, teacher_offset=0.05, **{knob: b})
  assert abs(first["loss"] - second["loss"]) > 1e-4 * max(abs(first["loss"]), 1e-3), (first, second)


# ----------------------------------------------------------------------------------------------
# Augmented ids, compared id for id.
# ----------------------------------------------------------------------------------------------


def _augmented_ids(aug_name, devices, step=0, table=None, **knobs):
  """[copies, B, S] ids made by the step's own `make_copies` on `devices` for batch `step`."""
  aug = augmentations.get(aug_name)
  knob_cfg = AugmentConfig(**{"projection_chunk": 50, "shift_degree": 0.3, **knobs})
  is_special, is_candidate = tts.masks()
  rng = np.random.default_rng(123)
  if table is None:
    table = rng.normal(size=(tts.VOCAB, 32)).astype(np.float32)

  def fn(state, batch):
    example_keys, _, partner_key = step_lib.step_keys(state, batch["example_id"])
    inputs = augmentations.StepInputs(
        ids=batch["input_ids"], mask=batch["attention_mask"], types=batch["token_type_ids"],
        eligible=augment.eligible_positions(batch["input_ids"], batch["attention_mask"],
                                            jnp.asarray(is_special)),
        gold=jax.nn.one_hot(batch["label"], 2), batch=batch, table=jnp.asarray(table),
        candidate_mask=jnp.asarray(is_candidate), knobs=knob_cfg,
        delta=jnp.ones(batch["input_ids"].shape + (32,)) * 0.5)
    return jnp.stack([c.ids for c in step_lib.make_copies(aug, inputs, example_keys, partner_key,
                                                          knob_cfg.aug_copies)])

  state = step_lib.TrainState(step=jnp.asarray(step, jnp.int32), params={}, opt_state=(),
                              rng=jax.random.PRNGKey(0), shift_sum=jnp.zeros(()),
                              shift_steps=jnp.zeros((), jnp.int32),
                              profile_counts=jnp.zeros((len(token_profile.COUNTS),)),
                              nonfinite_steps=jnp.zeros((), jnp.int32),
                              real_tokens=jnp.zeros(()), padded_tokens=jnp.zeros(()))
  mesh = sharding.make_mesh(devices)
  on_slices = jax.shard_map(fn, mesh=mesh, in_specs=(P(), P(sharding.DATA)),
                            out_specs=P(None, sharding.DATA), axis_names={sharding.DATA},
                            check_vma=False)
  batch = sharding.put_batch(mesh, tts.make_batch(0, len(devices)))
  return np.asarray(jax.jit(on_slices)(sharding.put_tree(mesh, state), batch))  # [copies, B, S]


@pytest.mark.parametrize("aug", ["knn", "augpro_fgsm"])
def test_augmented_ids_follow_the_example_not_the_device(aug):
  one = _augmented_ids(aug, jax.local_devices()[:1])
  eight = _augmented_ids(aug, jax.local_devices())
  np.testing.assert_array_equal(one, eight)


@pytest.mark.parametrize("aug", ["knn", "augpro_mix", "augpro_fgsm"])
def test_augmented_ids_change_between_steps_and_repeat_for_the_same_step(aug):
  devices = jax.local_devices()
  step0, step0_again, step1 = (_augmented_ids(aug, devices, step=s) for s in (0, 0, 1))
  np.testing.assert_array_equal(step0, step0_again)
  assert (step0 != step1).mean() > 0.05  # other positions and other replacements


@pytest.mark.parametrize("knob,a,b,aug", [
    ("knn_k", 1, 10, "knn"),
    ("mix_alpha", 0.05, 20.0, "augpro_mix"),
    ("shift_degree", 0.1, 0.6, "knn"),
    ("projection_metric", "l2", "dot", "knn"),
    ("exclude_original", True, False, "augpro_mix"),
    ("aug_copies", 1, 2, "knn"),
])
def test_augmentation_knobs_change_the_ids(knob, a, b, aug):
  devices = jax.local_devices()
  first = _augmented_ids(aug, devices, **{knob: a})
  second = _augmented_ids(aug, devices, **{knob: b})
  assert first.shape != second.shape or (first != second).any()


@pytest.mark.slow
def test_projection_table_knob_picks_the_table():
  """--projection_table=teacher projects onto the teacher's embeddings, not the student's."""
  p_student, state_s, teacher_s, _ = tts.setup("knn", projection_table="student", shift_degree=0.5)
  p_teacher, state_t, teacher_t, _ = tts.setup("knn", projection_table="teacher", shift_degree=0.5)
  # A teacher whose word embeddings are reversed: its nearest neighbours differ from the student's.
  flip = lambda tree: jax.tree_util.tree_map_with_path(
      lambda path, x: x[::-1] if "word_embeddings" in jax.tree_util.keystr(path) else x, tree)
  batch = tts.make_batch(0, 8)
  _, m_student = p_student(state_s, flip(teacher_s), batch)
  _, m_teacher = p_teacher(state_t, flip(teacher_t), batch)
  assert float(m_student["loss_aug"]) != float(m_teacher["loss_aug"])


# ----------------------------------------------------------------------------------------------
# A new augmentation is one registry entry.
# ----------------------------------------------------------------------------------------------

MASK_ID = 4  # tts.masks(): 0 pad, 1 unk, 2 cls, 3 sep, 4 mask


def _mask_copy(inputs, copy, keys, partner_key):
  del copy, partner_key
  k = inputs.knobs
  budget = augment.position_budget(k.shift_degree, inputs.ids.shape[-1])
  positions, chosen = augment.choose_positions(keys, inputs.eligible, k.shift_degree, budget,
                                               k.shift_rounding)
  new = augment.scatter_tokens(inputs.ids, positions, chosen,
                               jnp.full(positions.shape, MASK_ID, jnp.int32))
  return augmentations.token_copy(inputs, new)


@pytest.fixture
def mask_augmentation():
  augmentations.register(augmentations.Augmentation("mask_tokens", "token", _mask_copy,
                                                     help="Chosen tokens become [MASK]."))
  yield "mask_tokens"
  augmentations.unregister("mask_tokens")


def test_a_registered_augmentation_runs_in_the_step_and_reports_its_shift(mask_augmentation):
  from augpro_jax.config import Config  # pylint: disable=import-outside-toplevel
  Config(aug=mask_augmentation).validate()  # the config accepts it with no other change
  ids = _augmented_ids(mask_augmentation, jax.local_devices(), shift_degree=0.5)[0]
  batch = tts.make_batch(0, 1)
  orig = batch["input_ids"][0]
  changed = ids != orig
  assert changed.any() and (ids[changed] == MASK_ID).all()
  metrics = _one_step(mask_augmentation, shift_degree=0.5)
  assert abs(metrics["measured_shift"] - 0.5) < 0.1 and "loss_aug" in metrics
  config = tts.tiny(1)
  assert flops.step_flops(aug=mask_augmentation, objective="kd", teacher=config, student=config,
                          batch=8, seq_len=16, shift_degree=0.5)["projection"] == 0
