"""Fast guards of what the train step promises, each on one device and a tiny model, checked
against a direct computation (not against another run of the step)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from augpro_jax import augment
from augpro_jax import augmentations
from augpro_jax import losses
from augpro_jax import model as model_lib
from augpro_jax import sharding
from augpro_jax.config import AugmentConfig
import test_objective as tob
import test_train_step as tts

ONE = jax.local_devices()[:1]


def _one_step(aug, teacher_fn=None, **knobs):
  """(metrics of step 0 on one device, student params, teacher params) for `aug` and `knobs`."""
  p_step, state, teacher, s_params = tts.setup(aug, devices=ONE, **knobs)
  if teacher_fn is not None:
    teacher = teacher_fn(teacher)
  _, metrics = p_step(state, teacher, tts.make_batch(0, 1))
  return (jax.device_get(jax.tree.map(float, metrics)), s_params,
          sharding.gather(teacher))


def _unlike(teacher):  # a teacher unlike the student, so KD and CE terms are far from zero
  return jax.tree.map(lambda x: x + 0.05 * jnp.sign(x), teacher)


def test_alpha_ce_weighs_the_originals_only():
  """Augmented copies have no gold label in KD: alpha_ce must not reach their loss."""
  without, _, _ = _one_step("mixup", _unlike, alpha_ce=0.0)
  with_ce, _, _ = _one_step("mixup", _unlike, alpha_ce=1.0)
  assert with_ce["loss_orig"] > without["loss_orig"] + 1e-3  # the originals do get it
  np.testing.assert_allclose(with_ce["loss_aug"], without["loss_aug"], rtol=1e-6)


def test_aug_weight_scales_the_copies_share_of_the_loss():
  metrics, _, _ = _one_step("mixup", _unlike, aug_weight=0.25)
  # One device: loss = mean over originals + aug_weight * mean over copies.
  np.testing.assert_allclose(metrics["loss"], metrics["loss_orig"] + 0.25 * metrics["loss_aug"],
                             rtol=1e-5)
  assert metrics["loss_aug"] > 1e-3


def test_teacher_targets_of_a_copy_are_the_teachers_logits_on_that_copy():
  """The KD loss of the copies equals KD between student and teacher, each called directly on the
  copies' own ids (the ids the step makes, recomputed with its keys)."""
  metrics, s_params, t_params = _one_step("knn", _unlike, shift_degree=0.5)
  copy_ids = tob._augmented_ids("knn", ONE, table=model_lib.word_embedding_table(s_params),
                                shift_degree=0.5)[0]  # pylint: disable=protected-access
  batch = {k: v[0] for k, v in tts.make_batch(0, 1).items()}
  assert (copy_ids != batch["input_ids"]).any()
  student = model_lib.BertClassifier(tts.tiny(1))
  teacher = model_lib.BertClassifier(tts.tiny(2))
  args = (copy_ids, batch["attention_mask"], batch["token_type_ids"])
  want = losses.kd_loss(student.apply({"params": s_params}, *args),
                        teacher.apply({"params": t_params}, *args), temperature=1.0,
                        is_regression=False)
  np.testing.assert_allclose(metrics["loss_aug"], float(jnp.mean(want)), rtol=1e-5)


def _reversed_embeddings(tree):
  return jax.tree_util.tree_map_with_path(
      lambda path, x: x[..., ::-1] if "word_embeddings" in jax.tree_util.keystr(path) else x, tree)


@pytest.fixture
def own_nearest():
  """A token augmentation: each eligible token becomes its nearest `inputs.table` row to the
  reversed-teacher embedding of itself (`augment.nearest_tokens`)."""
  _, _, _, s_params = tts.setup("none", devices=ONE)
  wanted = model_lib.word_embedding_table(s_params)[:, ::-1]  # [V, d], the teacher's below

  def make_copy(inputs, copy, keys, partner_key):
    del copy, keys, partner_key
    nearest = augment.nearest_tokens(wanted[inputs.ids], inputs.table,
                                     candidate_mask=inputs.candidate_mask)
    return augmentations.token_copy(inputs, jnp.where(inputs.eligible, nearest, inputs.ids))

  augmentations.register(augmentations.Augmentation("own_nearest", "token", make_copy,
                                                    projects=True))
  yield "own_nearest"
  augmentations.unregister("own_nearest")


def test_projection_table_teacher_projects_onto_the_teachers_table(own_nearest):
  """The teacher's word embeddings are reversed (the student's are not): projected onto the
  teacher's table, every token finds itself; onto the student's, most do not."""
  onto_teacher, _, _ = _one_step(own_nearest, _reversed_embeddings, projection_table="teacher")
  onto_student, _, _ = _one_step(own_nearest, _reversed_embeddings, projection_table="student")
  assert onto_teacher["measured_shift"] == 0.0
  assert onto_student["measured_shift"] > 0.5


def _mixup_lambdas(alpha: float, batch: int = 64) -> np.ndarray:
  """λ of each example from MixUp's targets: with one class per example, target[i, i] = λ_i."""
  ids = jnp.full((batch, 8), 7, jnp.int32)
  inputs = augmentations.StepInputs(
      ids=ids, mask=jnp.ones_like(ids), types=jnp.zeros_like(ids), eligible=ids > 0,
      gold=jnp.eye(batch), batch={}, table=None, candidate_mask=jnp.ones((16,), bool),
      knobs=AugmentConfig(mix_alpha=alpha))
  keys = jax.random.split(jax.random.PRNGKey(0), batch)
  copy = augmentations.get("mixup").make_copy(inputs, 0, keys, jax.random.PRNGKey(1))
  return np.diag(np.asarray(copy.targets))


def test_mixup_draws_lambda_from_beta_of_mix_alpha():
  near_ends = _mixup_lambdas(0.05)  # Beta(0.05, 0.05): almost all mass near 0 and 1
  near_half = _mixup_lambdas(50.0)  # Beta(50, 50): concentrated at 0.5
  assert np.mean(np.minimum(near_ends, 1 - near_ends)) < 0.1
  assert np.mean(np.abs(near_half - 0.5)) < 0.1  # Beta(0.4, 0.4), the default: about 0.3
