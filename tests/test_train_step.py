"""The train step on a device mesh, with tiny random models: device-count and mesh invariance,
every augmentation, parameters change, nothing recompiles."""


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from augpro_jax import input_pipeline as pipeline
from augpro_jax import losses
from augpro_jax import model as model_lib
from augpro_jax import sharding
from augpro_jax import students
from augpro_jax import objective as objective_lib
from augpro_jax import optimizer as optimizer_lib
from augpro_jax import train_step as step_lib
from augpro_jax.config import Config

VOCAB, SEQ, BATCH = 120, 16, 16


# What each family's tiny model sets beside BERT's fields: RoBERTa's positions start after the
# padding id (one more row), ELECTRA's embeddings are narrower than its encoder, DeBERTa-v2 has
# bucketed relative attention (c2p and p2c), no absolute positions and the convolution of its
# xlarge models, DistilBERT no token types.
FAMILY_FIELDS = {
    "bert": {},
    "roberta": dict(family="roberta", type_vocab_size=1, max_position_embeddings=SEQ + 1),
    "electra": dict(family="electra", embedding_size=16),
    "deberta-v2": dict(family="deberta-v2", type_vocab_size=0, max_relative_positions=SEQ,
                       position_buckets=8, pos_att_type="c2p|p2c", norm_rel_ebd=True,
                       position_biased_input=False, conv_kernel_size=3, conv_act="gelu"),
    "distilbert": dict(family="distilbert", type_vocab_size=0),
}


def tiny(layers, hidden=32, labels=2, dropout=0.0, family="bert"):
  fields = dict(vocab_size=VOCAB, hidden_size=hidden, num_layers=layers, num_heads=4,
                intermediate_size=2 * hidden, max_position_embeddings=SEQ, num_labels=labels,
                dropout_rate=dropout)
  return model_lib.BertConfig(**{**fields, **FAMILY_FIELDS[family]})


def masks():
  is_special = np.zeros(VOCAB, bool)
  is_special[:5] = True  # 0 pad, 1 unk, 2 cls, 3 sep, 4 mask
  return is_special, ~is_special


def make_batch(step, devices, batch=BATCH, regression=False):
  rng = np.random.default_rng(step)
  lengths = rng.integers(5, SEQ + 1, size=batch)
  mask = (np.arange(SEQ)[None] < lengths[:, None]).astype(np.int32)
  ids = rng.integers(5, VOCAB, size=(batch, SEQ)).astype(np.int32)
  ids[:, 0] = 2
  ids[np.arange(batch), lengths - 1] = 3
  ids *= mask
  label = rng.normal(size=batch).astype(np.float32) if regression else \
      rng.integers(0, 2, size=batch).astype(np.int32)
  full = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids),
          "label": label, "example_id": np.arange(batch, dtype=np.int32)}
  return {k: v.reshape(devices, -1, *v.shape[1:]) for k, v in full.items()}


def on_mesh(step_fn, mesh):
  """step(state, teacher, host batch [devices, per_device, ...]) as `loop.fit` runs it: one
  `sharding.mesh_step` per batch structure, the batch placed with `sharding.put_batch`."""
  jitted = {}

  def step(state, teacher, batch):
    structure = jax.tree.structure(batch)
    if structure not in jitted:
      jitted[structure] = sharding.mesh_step(step_fn, mesh, state, teacher, batch)
    return jitted[structure](state, teacher, sharding.put_batch(mesh, batch))

  return step


def setup(aug="none", objective="kd", **kwargs):
  """(step on host batches, state and teacher on a [devices / fsdp, fsdp] mesh, host params)."""
  step_fn, mesh, state, teacher, s_params = setup_parts(aug, objective, **kwargs)
  return on_mesh(step_fn, mesh), state, teacher, s_params


def setup_parts(aug="none", objective="kd", devices=None, regression=False, token_flags=None,
                optimizer=None, cached_teacher_logits=False, family="bert", fsdp=1, dropout=0.0,
                **spec_kwargs):
  """(the step of one data slice, the mesh, state and teacher on it, host student params)."""
  devices = devices or jax.local_devices()
  labels = 1 if regression else 2
  t_config = tiny(2, labels=labels, family=family, dropout=dropout)
  s_config = tiny(1, labels=labels, family=family, dropout=dropout)
  teacher = model_lib.BertClassifier(t_config)
  student = model_lib.BertClassifier(s_config)
  t_params = model_lib.init_params(t_config, jax.random.PRNGKey(0))
  s_params = students.student_from_teacher(s_config, t_config, t_params, jax.random.PRNGKey(1))
  if optimizer is None:
    optimizer, _ = optimizer_lib.make_optimizer(1e-3, 100, 0.0, 0.01)
  knobs = Config(projection_chunk=50, cache_teacher_logits=cached_teacher_logits, **spec_kwargs)
  spec = step_lib.StepSpec.from_config(knobs, objective=objective, aug=aug, num_labels=labels,
                                       is_regression=regression)
  fn = step_lib.make_train_step(spec, student, teacher if objective == "kd" else None, optimizer,
                                *masks(), token_flags=token_flags)
  mesh = sharding.make_mesh(devices, None, fsdp)
  state = sharding.put_tree(mesh, step_lib.init_state(s_params, optimizer, 0))
  teacher = sharding.put_tree(mesh, t_params if objective == "kd" else {})
  return fn, mesh, state, teacher, s_params


def run_steps(aug, devices, steps=2, **kwargs):
  p_step, state, teacher, _ = setup(aug, devices=devices, **kwargs)
  history = []
  for step in range(steps):
    state, metrics = p_step(state, teacher, make_batch(step, len(devices)))
    history.append(jax.device_get(metrics))
  return sharding.gather(state.params), history


@pytest.mark.slow
@pytest.mark.parametrize("aug,family", [("none", "distilbert"), ("knn", "roberta"),
                                        ("augpro_fgsm", "deberta-v2")])
def test_one_and_eight_devices_agree(aug, family):
  """Per-example randomness makes token augs layout-independent. MixUp's partners are drawn
  within each device's batch, so augpro_mix and mixup differ between layouts by design; each
  case runs one family, so every family's step (BERT's and ELECTRA's in the cached-logits test)
  is seen."""
  assert jax.local_device_count() == 8, "tests expect XLA_FLAGS=--xla_force_host_platform_device_count=8"
  params_1, hist_1 = run_steps(aug, jax.local_devices()[:1], family=family)
  params_8, hist_8 = run_steps(aug, jax.local_devices(), family=family)
  for a, b in zip(jax.tree.leaves(params_1), jax.tree.leaves(params_8)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
  for m1, m8 in zip(hist_1, hist_8):
    np.testing.assert_allclose(m1["loss"], m8["loss"], rtol=1e-4, atol=1e-7)
    if "measured_shift" in m1:
      np.testing.assert_allclose(m1["measured_shift"], m8["measured_shift"], rtol=1e-6)


@pytest.mark.slow
def test_fsdp_splits_the_step_not_its_result(monkeypatch):
  """augpro_mix on a [2, 4] mesh (every kernel and the projection table split over fsdp; the
  table by rows, so each device searches its rows) trains as on [2, 1]: the same data slices,
  so the same MixUp partners; only the order of sums differs."""
  monkeypatch.setattr(sharding, "MIN_SHARDED_SIZE", 64)
  assert sharding.param_spec((VOCAB, 32), 4) == jax.sharding.PartitionSpec(sharding.FSDP)
  params_1, hist_1 = run_steps("augpro_mix", jax.local_devices()[:2], shift_degree=0.5)
  params_4, hist_4 = run_steps("augpro_mix", jax.local_devices(), fsdp=4, shift_degree=0.5)
  for m1, m4 in zip(hist_1, hist_4):
    # The KD loss is ~4e-6 here (teacher and student alike): rounding is ~1e-9 absolute.
    np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5, atol=1e-7)
    assert m1["changed_tokens"] == m4["changed_tokens"]
    np.testing.assert_allclose(m1["partner_share"], m4["partner_share"], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(params_1), jax.tree.leaves(params_4)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


@pytest.mark.slow
def test_fsdp_splits_the_examples_not_only_the_parameters(monkeypatch, aug="augpro_mix"):
  """A device of [1, 8] needs about the scratch memory of one of [8, 1]: both hold 1/8 of the
  batch (1.13x measured). Without the model's pins (`sharding.split_examples` a no-op, dropout
  on the original threefry scheme), every fsdp device holds whole-slice tensors (it draws the
  dropout bits of all its data slice's examples, then keeps its rows): 3.2x here, on a pod
  gigabytes per layer."""
  monkeypatch.setattr(sharding, "MIN_SHARDED_SIZE", 64)
  temp = {}
  for fsdp in (1, 8):
    step_fn, mesh, state, teacher, _ = setup_parts(aug, fsdp=fsdp, dropout=0.1, shift_degree=0.3)
    batch = sharding.put_batch(mesh, make_batch(0, 8, batch=1024))
    compiled = sharding.mesh_step(step_fn, mesh, state, teacher, batch).lower(
        state, teacher, batch).compile()
    temp[fsdp] = compiled.memory_analysis().temp_size_in_bytes
  assert temp[8] < 1.3 * temp[1], temp


@pytest.mark.slow
@pytest.mark.parametrize("aug,objective", [
    (aug, "kd") for aug in ("none", "mixup", "fgsm", "augpro_mix", "augpro_fgsm", "knn")] + [
    ("mixup", "labels"), ("augpro_fgsm", "labels")])  # labels: soft MixUp targets; FGSM on CE
def test_every_augmentation_trains(aug, objective):
  p_step, state, teacher, initial = setup(aug, objective=objective, shift_degree=0.3)
  state, metrics = p_step(state, teacher, make_batch(0, 8))
  metrics = jax.device_get(metrics)
  params = sharding.gather(state.params)
  flat_initial = jax.tree_util.tree_flatten_with_path(initial)[0]
  for (path, a), b in zip(flat_initial, jax.tree.leaves(params)):
    name = jax.tree_util.keystr(path)
    if "['key']['bias']" in name:
      continue  # softmax is invariant to a per-query shift: the key bias has zero gradient
    assert not np.allclose(a, b), f"{name} did not move after one step"
  assert np.isfinite(metrics["loss"]) and metrics["nonfinite"] == 0
  if aug in ("augpro_mix", "augpro_fgsm", "knn"):
    assert abs(metrics["measured_shift"] - 0.3) < 0.06  # tiny batch: rounding of 0.3 * n
  else:
    assert "measured_shift" not in metrics
  if aug != "none":
    assert "loss_aug" in metrics


def with_teacher_logits(batch, scale=1.0, family="bert"):
  """The batch plus the (tiny) teacher's eval-mode logits on its originals, as train.fit caches."""
  teacher = model_lib.BertClassifier(tiny(2, family=family))
  t_params = model_lib.init_params(tiny(2, family=family), jax.random.PRNGKey(0))  # `setup`'s
  flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in batch.items()}
  logits = teacher.apply({"params": t_params}, flat["input_ids"], flat["attention_mask"],
                         flat["token_type_ids"], deterministic=True)
  return {**batch, "teacher_logits": scale * np.asarray(logits).reshape(*batch["label"].shape, -1)}


@pytest.mark.slow
@pytest.mark.parametrize("aug,family", [("none", "bert"), ("augpro_mix", "electra"),
                                        ("augpro_fgsm", "deberta-v2"), ("synonym", "roberta")])
def test_cached_teacher_logits_give_the_same_step(aug, family):
  """Cached logits on the originals (the teacher then runs on augmented examples only) train the
  same as the teacher running on everything; wrong cached logits do not (the cache is used)."""
  results = {}
  for name, cached, scale in (("live", False, 1.0), ("cached", True, 1.0), ("wrong", True, -3.0)):
    p_step, state, teacher, _ = setup(aug, cached_teacher_logits=cached, shift_degree=0.3,
                                      family=family)
    for step in range(2):
      batch = make_batch(step, 8)
      if aug == "synonym":  # host-side copies: any token-level change will do here
        batch.update(aug_input_ids=batch["input_ids"][:, :, None, ::-1].copy(),
                     aug_attention_mask=batch["attention_mask"][:, :, None, ::-1].copy(),
                     aug_token_type_ids=batch["token_type_ids"][:, :, None],
                     aug_shift=np.full(batch["label"].shape + (1,), 0.5, np.float32))
      if cached:
        batch = with_teacher_logits(batch, scale, family)
      state, metrics = p_step(state, teacher, batch)
    results[name] = (sharding.gather(state.params),
                     jax.device_get(metrics))
  (live, live_m), (cached, cached_m), (wrong, _) = results["live"], results["cached"], results["wrong"]
  # The KD loss here is ~1e-4 (teacher and student are alike), so float32 rounding from the two
  # teacher-forward batch shapes is ~1e-8 absolute, above a pure rtol of 1e-5 on some CPUs.
  np.testing.assert_allclose(cached_m["loss"], live_m["loss"], rtol=1e-5, atol=1e-7)
  for a, b in zip(jax.tree.leaves(live), jax.tree.leaves(cached)):
    np.testing.assert_allclose(a, b, atol=1e-5)
  assert max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(live),
                                                         jax.tree.leaves(wrong))) > 1e-4


def test_regression_kd_step_is_mse_to_the_teacher_score():
  p_step, state, teacher, s_params = setup("none", regression=True)
  t_params = sharding.gather(teacher)
  batch = make_batch(0, 8, regression=True)
  flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in batch.items()}
  inputs = (flat["input_ids"], flat["attention_mask"], flat["token_type_ids"])
  s_scores = model_lib.BertClassifier(tiny(1, labels=1)).apply({"params": s_params}, *inputs)
  t_scores = model_lib.BertClassifier(tiny(2, labels=1)).apply({"params": t_params}, *inputs)
  expected = float(np.mean((np.asarray(s_scores) - np.asarray(t_scores)) ** 2))
  _, metrics = p_step(state, teacher, batch)
  np.testing.assert_allclose(float(float(metrics["loss_orig"])), expected, rtol=1e-4)


@pytest.mark.slow  # several step compiles: the full suite only
def test_aug_copies_grow_the_augmented_batch():
  _, hist_1 = run_steps("augpro_mix", jax.local_devices(), steps=1, aug_copies=1)
  _, hist_3 = run_steps("augpro_mix", jax.local_devices(), steps=1, aug_copies=3)
  assert hist_1[0]["loss_aug"] != hist_3[0]["loss_aug"]


def test_augmentation_is_deterministic():
  # That it changes across steps is checked on the ids (test_objective.py).
  _, first = run_steps("augpro_mix", jax.local_devices(), steps=2)
  _, again = run_steps("augpro_mix", jax.local_devices(), steps=2)
  assert [m["loss"] for m in first] == [m["loss"] for m in again]


def bucketed_split(n=96, seed=0):
  """A tokenized split of the tiny vocabulary with lengths from 3 to SEQ, mostly short."""
  rng = np.random.default_rng(seed)
  lengths = np.minimum(3 + rng.geometric(0.2, size=n), SEQ)
  mask = (np.arange(SEQ)[None] < lengths[:, None]).astype(np.int32)
  ids = rng.integers(5, VOCAB, size=(n, SEQ)).astype(np.int32)
  ids[:, 0] = 2
  ids[np.arange(n), lengths - 1] = 3
  return pipeline.Tokenized(ids * mask, mask, np.zeros_like(ids), rng.integers(0, 2, n), 0,
                            [("x",)] * n)


@pytest.mark.slow  # several step compiles: the full suite only
@pytest.mark.parametrize("buckets", [(SEQ,), (8, 12, SEQ)])
def test_one_compile_per_bucket_and_never_again(buckets):
  """Two epochs of real pipeline batches: the step compiles once per bucket length the first epoch
  uses and never again (the executables `fit` calls)."""
  compiles = []
  listener = lambda event, duration, **kw: compiles.append(event) if "backend_compile" in event else None
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    step_fn, mesh, state, teacher, _ = setup_parts("augpro_mix")
    data, layout = bucketed_split(), pipeline.Layout(0, 1, 8)
    run_step = step_lib.CompiledSteps(sharding.mesh_step(
        step_fn, mesh, state, teacher, pipeline.train_batch(data, 0, BATCH, 0, layout)))
    per_epoch = len(data) // BATCH
    seen = []
    for epoch in range(2):
      before = len(compiles)
      for step in range(epoch * per_epoch, (epoch + 1) * per_epoch):
        batch = pipeline.train_batch(data, step, BATCH, 0, layout, buckets=buckets)
        seen.append(batch["input_ids"].shape[-1])
        state, metrics = run_step(state, teacher, sharding.put_batch(mesh, batch))
        assert np.isfinite(np.asarray(metrics["loss"])).all()
      jax.block_until_ready(metrics)
      if epoch == 0:
        assert len(compiles) - before == len(set(seen)), (len(compiles) - before, seen)
        assert sorted(run_step.compile_seconds) == sorted(set(seen))
      else:
        assert len(compiles) == before, "the step recompiled in the second epoch"
    assert len(set(seen)) == len(buckets)  # the epoch used every bucket
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def test_nonfinite_step_leaves_parameters_untouched():
  p_step, state, teacher, initial = setup("none")
  poisoned = jax.tree.map(lambda x: x * jnp.nan, teacher)
  state, metrics = p_step(state, poisoned, make_batch(0, 8))
  assert float(metrics["nonfinite"]) == 1
  params = sharding.gather(state.params)
  for a, b in zip(jax.tree.leaves(initial), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)


def test_a_plain_optax_optimizer_trains():
  # The step hands its gradient norm to the optimizer; one whose update takes no extra arguments
  # (the base optax interface, here SGD) must still train.
  sgd = optax.sgd(0.5)
  plain = optax.GradientTransformation(sgd.init, lambda g, s, p=None: sgd.update(g, s, p))
  devices = jax.local_devices()[:1]
  p_step, state, teacher, initial = setup("none", devices=devices, optimizer=plain)
  state, metrics = p_step(state, teacher, make_batch(0, 1))
  assert float(metrics["nonfinite"]) == 0
  params = sharding.gather(state.params)
  moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(initial), jax.tree.leaves(params))]
  assert any(moved)


@pytest.mark.parametrize("scale", [0.1, 10.0])  # below and above the clipping norm
def test_clip_takes_the_step_norm_and_matches_optax(scale):
  rng = np.random.default_rng(0)
  grads = {"a": jnp.asarray(rng.normal(size=(5, 3)) * scale, jnp.float32),
           "b": {"c": jnp.asarray(rng.normal(size=(7,)) * scale, jnp.float32)}}
  ours, theirs = optimizer_lib.clip_by_global_norm(1.0), optax.clip_by_global_norm(1.0)
  assert ours.init(grads) == theirs.init(grads)  # the same (empty) state: checkpoints keep layout
  want, _ = theirs.update(grads, theirs.init(grads))
  norm = optax.tree.norm(grads)
  for kwargs in ({}, {"grad_norm": norm}):
    got, _ = ours.update(grads, ours.init(grads), **kwargs)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(g, w, rtol=1e-6)
  # The norm given is the one used (the step passes the norm it has already computed).
  got, _ = ours.update(grads, ours.init(grads), grad_norm=2 * max(float(norm), 1.0))
  for g, x in zip(jax.tree.leaves(got), jax.tree.leaves(grads)):
    np.testing.assert_allclose(g, x / (2 * max(float(norm), 1.0)), rtol=1e-6)


def test_value_grad_and_input_grad_matches_two_separate_gradients():
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(size=(4, 3)).astype(np.float32))}
  x = jnp.asarray(rng.normal(size=(2, 4)).astype(np.float32))
  delta = jnp.zeros((2, 4))
  forward = lambda p, d: jnp.tanh((x + d) @ p["w"])  # [2, 3]
  loss = lambda out: (jnp.sum(out ** 2), out)
  input_loss = lambda out: jnp.sum(jnp.sin(3 * out))
  (value, aux), (grads, input_grad) = objective_lib.value_grad_and_input_grad(
      forward, loss, input_loss, params, delta)
  np.testing.assert_allclose(value, loss(forward(params, delta))[0], rtol=1e-6)
  np.testing.assert_allclose(aux, forward(params, delta), rtol=1e-6)
  want = jax.grad(lambda p: loss(forward(p, delta))[0])(params)
  np.testing.assert_allclose(grads["w"], want["w"], rtol=1e-5)
  want_input = jax.grad(lambda d: input_loss(forward(params, d)))(delta)
  np.testing.assert_allclose(input_grad, want_input, rtol=1e-5)
  # The trained loss's own input gradient is another direction: the test tells them apart.
  own_input = jax.grad(lambda d: loss(forward(params, d))[0])(delta)
  assert not np.allclose(own_input, input_grad, rtol=0.1)


def test_attack_losses():
  rng = np.random.default_rng(0)
  logits, teacher = (jnp.asarray(rng.normal(size=(5, 3)).astype(np.float32)) for _ in range(2))
  gold = jax.nn.one_hot(jnp.asarray([0, 2, 1, 1, 0]), 3)
  common = dict(temperature=2.0, is_regression=False)
  ce = losses.target_loss(logits, gold, is_regression=False)
  kd = losses.kd_loss(logits, teacher, **common)
  np.testing.assert_allclose(losses.attack_loss(logits, gold, teacher, which="ce", **common), ce)
  np.testing.assert_allclose(losses.attack_loss(logits, gold, teacher, which="both", **common),
                             ce + kd, rtol=1e-6)


@pytest.mark.slow  # several step compiles: the full suite only
def test_fgsm_loss_chooses_the_direction_in_distillation_only():
  """ce moves the embeddings another way than kd in distillation; fine-tuning has one loss."""
  def one_step(objective, fgsm_loss):
    p_step, state, teacher, _ = setup("fgsm", objective=objective, fgsm_loss=fgsm_loss,
                                      fgsm_eps=0.5)
    state, _ = p_step(state, teacher, make_batch(0, 8))
    return sharding.gather(state.params)

  def differ(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

  assert differ(one_step("kd", "kd"), one_step("kd", "ce")) > 1e-5
  assert differ(one_step("labels", "kd"), one_step("labels", "ce")) == 0.0


@pytest.mark.parametrize("value,partner_expected", [(0.0, True), (1.0, False)])
def test_the_step_profiles_augpro_mix(value, partner_expected):
  """λ = 0 mixes in the partner's token alone: with the own token excluded, the projection returns
  it (partner share ~1); λ = 1 keeps the own token and excludes it: the partner's token is rare."""
  ids = np.arange(VOCAB)
  flags = (ids % 3 == 0, ids % 5 == 0)
  p_step, state, teacher, _ = setup("augpro_mix", token_flags=flags, mix_lambda="fixed",
                                    mix_lambda_value=value, shift_degree=0.5)
  totals = []
  for step in range(2):
    state, metrics = p_step(state, teacher, make_batch(step, 8))
    m = jax.device_get(metrics)
    totals.append(m["changed_tokens"])
    for key in ("partner_share", "continuation_share", "non_ascii_share"):
      assert 0.0 <= m[key] <= 1.0, key
    assert (m["partner_share"] > 0.9) == partner_expected, m["partner_share"]
  profile = step_lib.run_profile(sharding.gather(state))
  assert profile["changed_tokens"] == sum(totals) > 0
  # Every third id is a "continuation", every fifth "non-ASCII": shares near 1/3 and 1/5.
  assert 0.1 < profile["continuation_share"] < 0.6 and 0.0 < profile["non_ascii_share"] < 0.45


@pytest.mark.slow  # several step compiles: the full suite only
def test_gradient_free_and_fgsm_entries_profile_without_a_partner():
  for aug in ("knn", "augpro_fgsm"):
    p_step, state, teacher, _ = setup(aug, shift_degree=0.3)
    state, metrics = p_step(state, teacher, make_batch(0, 8))
    assert "partner_share" not in metrics and "changed_tokens" in metrics
    assert "non_ascii_share" not in metrics  # no token flags given
    profile = step_lib.run_profile(sharding.gather(state))
    assert profile["partner_share"] is None and profile["changed_tokens"] > 0


def test_flops_count_the_second_backward_pass_of_fgsm_loss():
  from augpro_jax import flops  # pylint: disable=import-outside-toplevel
  common = dict(aug="augpro_fgsm", teacher=tiny(2), student=tiny(1), batch=8, seq_len=SEQ,
                shift_degree=0.3)
  kd = flops.step_flops(objective="kd", fgsm_loss="kd", **common)
  ce = flops.step_flops(objective="kd", fgsm_loss="ce", **common)
  assert "student_input_grad" not in kd
  assert ce["total"] == kd["total"] + ce["student_input_grad"] > kd["total"]
  assert flops.step_flops(objective="labels", fgsm_loss="ce", **common) == \
      flops.step_flops(objective="labels", fgsm_loss="kd", **common)


def test_models_that_differ_only_in_dropout_share_one_eval_step():
  """Eval ignores dropout, so a trained teacher (dropout 0.1) and the same teacher loaded for its
  logits (0.0) share one eval step, and with it every program it compiled; other shapes do not."""
  mesh = sharding.make_mesh(jax.local_devices())
  trained = step_lib.make_predict_step(model_lib.BertClassifier(tiny(2, dropout=0.1)), mesh)
  loaded = step_lib.make_predict_step(model_lib.BertClassifier(tiny(2, dropout=0.0)), mesh)
  assert trained is loaded
  assert step_lib.make_predict_step(model_lib.BertClassifier(tiny(1)), mesh) is not loaded
  other_mesh = sharding.make_mesh(jax.local_devices()[:1])
  assert step_lib.make_predict_step(model_lib.BertClassifier(tiny(2)), other_mesh) is not loaded
