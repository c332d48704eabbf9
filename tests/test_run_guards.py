"""Fast guards of a run's set-up, each without training: the workdir lock, the task vocabulary
of projections, and the optimizer state a resumed run continues from."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from augpro_jax import checkpoints
from augpro_jax import context
from augpro_jax import evaluation
from augpro_jax import input_pipeline as pipeline
from augpro_jax import loop
from augpro_jax import sharding
from augpro_jax import train
from augpro_jax import train_step as step_lib
from augpro_jax import workdir as workdir_lib
from augpro_jax.config import Config
from augpro_jax.errors import UserError


def _small(glue, tmp_path, **kwargs) -> Config:
  return Config(task="sst2", glue_dir=str(glue), train_size=64, eval_size=16, max_seq_len=32,
                batch_size=8, eval_batch_size=8, workdir=str(tmp_path / "run"), progress=False,
                **kwargs)


def test_a_training_run_holds_the_workdir_lock(glue, tmp_path, monkeypatch):
  seen = {}

  def fake_train_student(ctx, objective):
    del objective
    with pytest.raises(UserError, match="is in use by"):
      workdir_lib.WorkdirLock(ctx.cfg.workdir).acquire()
    seen["locked"] = True
    return {}

  monkeypatch.setattr(train, "train_student", fake_train_student)
  train.run(_small(glue, tmp_path, mode="finetune"))
  assert seen == {"locked": True}
  workdir_lib.WorkdirLock(tmp_path / "run").acquire().release()  # released at the end


@pytest.mark.parametrize("vocab", ["task", "full"])
def test_projection_candidates_follow_projection_vocab(glue, tmp_path, vocab):
  ctx = context.build_context(_small(glue, tmp_path, aug="augpro_mix", projection_vocab=vocab))
  size = len(ctx.is_candidate)
  is_special, every = pipeline.vocab_masks(ctx.tokenizer, size)
  in_train = pipeline.occurring_tokens(ctx.train, size) & ~is_special
  want = in_train if vocab == "task" else every
  np.testing.assert_array_equal(ctx.is_candidate, want)
  assert 100 < in_train.sum() < every.sum() // 10  # 64 sentences use a small part of the vocabulary


def test_a_resumed_run_continues_the_optimizer_state(tmp_path):
  params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones((3,))}
  optimizer = optax.adamw(1e-2)
  trained = step_lib.init_state(params, optimizer, seed=0)
  grads = jax.tree.map(lambda x: 0.5 * x + 1.0, params)
  updates, opt_state = optimizer.update(grads, trained.opt_state, params)
  trained = trained.replace(step=trained.step + 1, params=optax.apply_updates(params, updates),
                            opt_state=opt_state)
  manager = checkpoints.make_manager(tmp_path / "checkpoints", keep=2, best_metric=None)
  loop.Saver(manager, 0).save(1, sharding.put_tree(sharding.make_mesh(jax.devices()), trained))
  fresh = step_lib.init_state(params, optimizer, seed=0)
  step, resumed = loop.restore_or_init(manager, fresh)
  assert step == 1
  for got, want in zip(jax.tree.leaves(resumed.opt_state), jax.tree.leaves(trained.opt_state)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  assert any(np.abs(np.asarray(leaf)).sum() > 0 for leaf in jax.tree.leaves(resumed.opt_state)
             if np.asarray(leaf).dtype.kind == "f")  # moments that a fresh state would not have
