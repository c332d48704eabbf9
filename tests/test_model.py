"""The Flax BERT against Hugging Face's torch BERT; the module; students; FLOPs. (Loading and
exporting Hugging Face checkpoints: test_hf_io.py.)"""

import dataclasses
import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from augpro_jax import config as config_lib
from augpro_jax import flops
from augpro_jax import hf_io
from augpro_jax import model as model_lib
from augpro_jax import students
from augpro_jax.errors import UserError
from augpro_jax.model import BertClassifier, BertConfig

SENTENCES = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog, again and again.",
    "a",
    "JAX and Flax make a small BERT encoder, and this sentence is the longest one of all four.",
]


def tiny(layers=2, hidden=32, heads=4, labels=2, vocab=100, dtype="float32", dropout=0.0):
  return BertConfig(vocab_size=vocab, hidden_size=hidden, num_layers=layers, num_heads=heads,
                    intermediate_size=2 * hidden, max_position_embeddings=16, num_labels=labels,
                    dropout_rate=dropout, dtype=dtype)


def tiny_batch(config, batch=3, seq=10, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, config.vocab_size, size=(batch, seq)).astype(np.int32)
  lengths = np.linspace(3, seq, batch).astype(int)
  mask = (np.arange(seq)[None] < lengths[:, None]).astype(np.int32)
  types = ((np.arange(seq)[None] >= lengths[:, None] // 2) * mask).astype(np.int32)
  return jnp.asarray(ids * mask), jnp.asarray(mask), jnp.asarray(types)


def assert_one_line(exc_info, *needles):
  message = str(exc_info.value)
  assert "\n" not in message and message
  for needle in needles:
    assert needle in message, message


@pytest.fixture(scope="module")
def minilm_dir():
  return hf_io.resolve_pretrained_dir("minilm")


@pytest.fixture(scope="module")
def minilm(minilm_dir):
  return hf_io.load_pretrained(str(minilm_dir), num_labels=2, dropout_rate=0.0)


# ----------------------------------------------------------------------------------------------
# Against Hugging Face.
# ----------------------------------------------------------------------------------------------


def test_minilm_matches_hf_torch(minilm_dir, minilm):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  tokenizers = pytest.importorskip("tokenizers")
  tokenizer = tokenizers.Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
  tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
  encodings = tokenizer.encode_batch(SENTENCES[:3] + [(SENTENCES[3], SENTENCES[0])])
  ids = np.asarray([e.ids for e in encodings], np.int64)  # [4, seq]
  mask = np.asarray([e.attention_mask for e in encodings], np.int64)
  types = np.asarray([e.type_ids for e in encodings], np.int64)
  assert len(set(mask.sum(1))) == 4 and types.max() == 1  # different lengths, a sentence pair

  reference = transformers.BertModel.from_pretrained(str(minilm_dir), torch_dtype=torch.float32)
  reference.eval()
  with torch.no_grad():
    out = reference(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                    token_type_ids=torch.from_numpy(types))
  want_hidden = out.last_hidden_state.numpy()
  want_pooled = out.pooler_output.numpy()

  config, params = minilm
  model = BertClassifier(config)

  @jax.jit
  def forward(variables, ids, mask, types):
    embeds = model.apply(variables, ids, method=BertClassifier.embed)
    hidden = model.apply(variables, embeds, mask, types, method=BertClassifier.encode)
    return hidden, model.apply(variables, hidden, method=BertClassifier.pool)

  hidden, pooled = forward({"params": params}, jnp.asarray(ids, jnp.int32), jnp.asarray(mask),
                           jnp.asarray(types, jnp.int32))
  assert hidden.dtype == jnp.float32 and hidden.shape == want_hidden.shape
  keep = mask.astype(bool)
  assert np.abs(np.asarray(hidden)[keep] - want_hidden[keep]).max() < 1e-4
  assert np.abs(np.asarray(pooled) - want_pooled).max() < 1e-4


# ----------------------------------------------------------------------------------------------
# The module.
# ----------------------------------------------------------------------------------------------


def test_call_is_embed_then_apply_embeddings_and_differentiable():
  config = tiny(dropout=0.1)
  model = BertClassifier(config)
  params = model_lib.init_params(config, jax.random.PRNGKey(0))
  ids, mask, types = tiny_batch(config)

  @jax.jit  # one compile for everything: op-by-op Flax on CPU is slow
  def run(variables):
    logits = model.apply(variables, ids, mask, types)
    embeds = model.apply(variables, ids, method=BertClassifier.embed)
    apply_embeddings = lambda e: model.apply(variables, e, mask, types,
                                             method=BertClassifier.apply_embeddings)
    grad = jax.grad(lambda e: apply_embeddings(e)[:, 0].sum())(embeds)
    # An RBG key: threefry dropout masks cost seconds of XLA compile on CPU.
    noisy = model.apply(variables, ids, mask, types, deterministic=False,
                        rngs={"dropout": jax.random.key(1, impl="rbg")})
    return logits, embeds, apply_embeddings(embeds), grad, noisy

  logits, embeds, via_embeds, grad, noisy = run({"params": params})
  assert embeds.shape == (*ids.shape, config.hidden_size) and embeds.dtype == jnp.float32
  np.testing.assert_array_equal(embeds, model_lib.word_embedding_table(params)[ids])
  assert logits.shape == (3, 2) and logits.dtype == jnp.float32
  np.testing.assert_allclose(logits, via_embeds, rtol=1e-6, atol=1e-6)

  assert grad.shape == embeds.shape
  assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
  # Padding positions are masked out of attention, and [CLS] pooling never reads them.
  assert np.abs(np.asarray(grad)[~np.asarray(mask, bool)]).max() == 0

  # Dropout needs (and uses) the 'dropout' rng only when not deterministic.
  assert not np.allclose(noisy, logits)
  with pytest.raises(flax.errors.InvalidRngError):
    jax.eval_shape(functools.partial(model.apply, deterministic=False), {"params": params}, ids,
                   mask, types)


@pytest.mark.parametrize("family", ["bert", "distilbert", "deberta-v2"])
def test_last_layer_on_the_first_token_only_changes_nothing_but_the_work(family, monkeypatch):
  """The logits and every gradient are those of the full last layer; the encoder returns one
  position when it prunes (every family but DeBERTa, whose relative scores need every query;
  RoBERTa and ELECTRA take BERT's layers, DistilBERT has no token types)."""
  config = dataclasses.replace(tiny(layers=2), family=family)
  if family == "deberta-v2":
    config = dataclasses.replace(config, max_relative_positions=8, position_buckets=4,
                                 pos_att_type="c2p|p2c")
  model = BertClassifier(config)
  params = model_lib.init_params(config, jax.random.PRNGKey(0))
  ids, mask, types = tiny_batch(config)
  embeds = model.apply({"params": params}, ids, method=BertClassifier.embed)

  def logits_and_grads(p, e):
    loss = lambda p, e: jnp.sum(jnp.sin(model.apply({"params": p}, e, mask, types,
                                                    method=BertClassifier.apply_embeddings)))
    return model.apply({"params": p}, e, mask, types, method=BertClassifier.apply_embeddings), \
        jax.grad(loss, argnums=(0, 1))(p, e)

  hidden = jax.eval_shape(lambda: model.apply({"params": params}, embeds, mask, types,
                                              first_token_only=True, method=BertClassifier.encode))
  assert hidden.shape[1] == (ids.shape[1] if family == "deberta-v2" else 1)
  # A new function per jit: the same one would reuse the first trace.
  pruned = jax.jit(lambda p, e: logits_and_grads(p, e))(params, embeds)
  monkeypatch.setattr(model_lib, "prunes_last_layer", lambda _: False)
  full = jax.jit(lambda p, e: logits_and_grads(p, e))(params, embeds)
  for a, b in zip(jax.tree.leaves(pruned), jax.tree.leaves(full)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_parameter_tree_and_init():
  config = tiny(layers=3, labels=5)
  params = model_lib.init_params(config, jax.random.PRNGKey(0))
  assert set(params) == {"embeddings", "encoder", "pooler", "classifier"}
  assert set(params["encoder"]) == {"layer_0", "layer_1", "layer_2"}
  assert model_lib.word_embedding_table(params).shape == (config.vocab_size, config.hidden_size)
  assert params["classifier"]["kernel"].shape == (config.hidden_size, 5)
  # Same tree and shapes as Flax's own init through __call__.
  flax_init = jax.eval_shape(BertClassifier(config).init, jax.random.PRNGKey(0),
                             *tiny_batch(config))["params"]
  same = jax.tree_util.tree_map(lambda a, b: a.shape == b.shape and a.dtype == b.dtype,
                                params, dict(flax_init))
  assert all(jax.tree_util.tree_leaves(same))
  layer = params["encoder"]["layer_1"]
  assert abs(float(np.std(model_lib.word_embedding_table(params))) - 0.02) < 0.002
  assert not np.any(layer["intermediate"]["bias"])
  assert np.all(layer["output_layer_norm"]["scale"] == 1)
  kernel = lambda p: p["encoder"]["layer_1"]["output"]["kernel"]
  again = model_lib.init_params(config, jax.random.PRNGKey(0))
  other = model_lib.init_params(config, jax.random.PRNGKey(1))
  np.testing.assert_array_equal(kernel(params), kernel(again))
  assert not np.array_equal(kernel(params), kernel(other))
  expected = (config.vocab_size + 16 + 2 + 2) * 32 + 3 * (4 * (32 * 32 + 32) + 2 * 32 * 64 + 64 + 32
                                                          + 4 * 32) + 32 * 32 + 32 + 32 * 5 + 5
  assert model_lib.count_params(params) == expected


def test_bfloat16_close_to_float32_and_params_stay_float32():
  config = tiny(hidden=64)
  bf16_config = dataclasses.replace(config, dtype="bfloat16")
  params = model_lib.init_params(bf16_config, jax.random.PRNGKey(0))
  assert {x.dtype for x in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.float32)}
  # A larger classifier init so the logits are not all ~0.
  params["classifier"]["kernel"] = params["classifier"]["kernel"] * 50
  ids, mask, types = tiny_batch(config)
  f32 = jax.jit(BertClassifier(config).apply)({"params": params}, ids, mask, types)
  bf16_model = BertClassifier(bf16_config)
  bf16 = jax.jit(bf16_model.apply)({"params": params}, ids, mask, types)
  assert bf16.dtype == jnp.float32
  assert not np.array_equal(bf16, f32)  # it really computed in bf16
  np.testing.assert_allclose(bf16, f32, atol=0.05 * float(np.abs(f32).max()) + 1e-3)
  jaxpr = str(jax.make_jaxpr(lambda p: bf16_model.apply({"params": p}, ids, mask, types))(params))
  assert "bf16" in jaxpr
  embeds = jax.eval_shape(functools.partial(bf16_model.apply, method=BertClassifier.embed),
                          {"params": params}, ids)
  hidden = jax.eval_shape(functools.partial(bf16_model.apply, method=BertClassifier.encode),
                          {"params": params}, embeds, mask, types)
  assert embeds.dtype == jnp.float32 and hidden.dtype == jnp.float32


def test_sequence_longer_than_positions_is_a_user_error():
  config = tiny()
  ids = jnp.ones((1, config.max_position_embeddings + 1), jnp.int32)
  with pytest.raises(UserError) as info:
    jax.eval_shape(BertClassifier(config).init, jax.random.PRNGKey(0), ids, ids,
                   jnp.zeros_like(ids))
  assert_one_line(info, "max_position_embeddings")


# ----------------------------------------------------------------------------------------------
# Students.
# ----------------------------------------------------------------------------------------------


def test_select_layers():
  assert students.select_layers(6, 2) == [2, 5]
  assert students.select_layers(6, 3) == [1, 3, 5]
  assert students.select_layers(6, 6) == [0, 1, 2, 3, 4, 5]
  assert students.select_layers(6, 1) == [5]
  assert students.select_layers(12, 4) == [2, 5, 8, 11]
  with pytest.raises(ValueError):
    students.select_layers(2, 3)


def test_student_copies_selected_teacher_layers():
  t_config = tiny(layers=6)
  s_config = dataclasses.replace(t_config, num_layers=2, num_labels=3)
  t_params = model_lib.init_params(t_config, jax.random.PRNGKey(0))
  for init in ("auto", "teacher"):
    s_params = students.student_from_teacher(s_config, t_config, t_params, jax.random.PRNGKey(1),
                                              init=init)
    for student_layer, teacher_layer in ((0, 2), (1, 5)):
      jax.tree_util.tree_map(np.testing.assert_array_equal,
                             s_params["encoder"][f"layer_{student_layer}"],
                             t_params["encoder"][f"layer_{teacher_layer}"])
    assert set(s_params["encoder"]) == {"layer_0", "layer_1"}
    jax.tree_util.tree_map(np.testing.assert_array_equal, s_params["embeddings"],
                           t_params["embeddings"])
    jax.tree_util.tree_map(np.testing.assert_array_equal, s_params["pooler"], t_params["pooler"])
    assert s_params["classifier"]["kernel"].shape == (32, 3)
    # Copies, not aliases: donating the student must not free the teacher.
    assert (model_lib.word_embedding_table(s_params).unsafe_buffer_pointer()
            != model_lib.word_embedding_table(t_params).unsafe_buffer_pointer())
  logits = jax.eval_shape(BertClassifier(s_config).apply, {"params": s_params},
                          *tiny_batch(s_config))
  assert logits.shape == (3, 3)  # the student's tree fits its model

  random = students.student_from_teacher(s_config, t_config, t_params, jax.random.PRNGKey(1),
                                          init="random")
  assert not np.array_equal(random["encoder"]["layer_0"]["output"]["kernel"],
                            t_params["encoder"]["layer_2"]["output"]["kernel"])


def test_student_from_a_fine_tuned_teacher_keeps_its_head():
  t_config = dataclasses.replace(tiny(layers=4), num_labels=3)
  s_config = dataclasses.replace(t_config, num_layers=2)
  t_params = model_lib.init_params(t_config, jax.random.PRNGKey(0))
  fresh = students.student_from_teacher(s_config, t_config, t_params, jax.random.PRNGKey(1),
                                         init="teacher")
  kept = students.student_from_teacher(s_config, t_config, t_params, jax.random.PRNGKey(1),
                                        init="fine_tuned")
  jax.tree_util.tree_map(np.testing.assert_array_equal, kept["classifier"], t_params["classifier"])
  assert not np.array_equal(fresh["classifier"]["kernel"], t_params["classifier"]["kernel"])
  jax.tree_util.tree_map(np.testing.assert_array_equal, kept["encoder"], fresh["encoder"])
  with pytest.raises(UserError) as info:
    students.student_from_teacher(dataclasses.replace(s_config, hidden_size=16, num_heads=2,
                                                      intermediate_size=32),
                                  t_config, t_params, jax.random.PRNGKey(1), init="fine_tuned")
  assert_one_line(info, "hidden_size")
  with pytest.raises(UserError, match="for --mode=distill"):
    config_lib.Config(mode="finetune", student_init="fine_tuned").validate()


def test_student_with_other_widths_is_random_and_vocab_must_match():
  t_config = tiny(layers=4)
  t_params = model_lib.init_params(t_config, jax.random.PRNGKey(0))
  narrow = dataclasses.replace(t_config, num_layers=2, hidden_size=16, intermediate_size=32,
                               num_heads=2)
  s_params = students.student_from_teacher(narrow, t_config, t_params, jax.random.PRNGKey(1))
  assert model_lib.word_embedding_table(s_params).shape == (t_config.vocab_size, 16)
  assert s_params["encoder"]["layer_0"]["intermediate"]["kernel"].shape == (16, 32)
  with pytest.raises(UserError) as info:
    students.student_from_teacher(narrow, t_config, t_params, jax.random.PRNGKey(1),
                                   init="teacher")
  assert_one_line(info, "hidden_size")
  with pytest.raises(UserError) as info:
    students.student_from_teacher(dataclasses.replace(narrow, vocab_size=99), t_config, t_params,
                                   jax.random.PRNGKey(1))
  assert_one_line(info, "teacher and student vocabularies differ")


# ----------------------------------------------------------------------------------------------
# FLOPs.
# ----------------------------------------------------------------------------------------------


def test_forward_flops_hand_count():
  config = BertConfig(vocab_size=50, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16,
                      num_labels=3)
  batch, seq = 2, 4
  qkvo = 4 * (2 * batch * seq * 8 * 8)  # 4 projections, [8, 8] each, over B*S rows
  attention = 2 * (2 * batch * 2 * seq * seq * 4)  # scores and weighted sum, 2 heads of width 4
  ffn = 2 * batch * seq * 8 * 16 + 2 * batch * seq * 16 * 8
  pooler, classifier = 2 * batch * 8 * 8, 2 * batch * 8 * 3
  # The last layer runs its query, output, attention and FFN for the first token only: K and V
  # over every position, the rest over 1 of the 4.
  last = (2 * (2 * batch * seq * 8 * 8) + 2 * (2 * batch * 1 * 8 * 8)
          + 2 * (2 * batch * 2 * 1 * seq * 4) + (ffn // seq))
  assert flops.forward_flops(config, batch, seq) == last + pooler + classifier
  two = dataclasses.replace(config, num_layers=2)
  assert (flops.forward_flops(two, batch, seq)
          == (qkvo + attention + ffn) + last + pooler + classifier)
  # DeBERTa runs every layer in full. Each relative term projects the 2 * 4-row position table and
  # scores against it; the convolution (kernel 3, 2 groups) runs once, after layer 0.
  deberta = dataclasses.replace(config, family="deberta-v2", max_relative_positions=8,
                                position_buckets=4, pos_att_type="c2p|p2c", conv_kernel_size=3,
                                conv_groups=2)
  relative = 2 * (2 * 8 * 8 * 8 + 2 * batch * seq * 8 * 8)
  conv = 2 * batch * seq * 8 * 4 * 3
  assert flops.forward_flops(deberta, batch, seq) == (
      qkvo + attention + ffn + pooler + classifier + relative + conv)
  # MiniLM at 128 tokens: about 2 * params * tokens for the 5 full layers, plus attention.
  minilm = BertConfig()
  per_token = flops.forward_flops(minilm, 1, 128) / 128
  dense = 2 * 5 * (4 * 384**2 + 2 * 384 * 1536)
  assert dense < per_token < 1.2 * dense


class _TwoDropouts(flax.linen.Module):
  """One dropout module called twice, as `Layer` does: the second call must draw a new mask."""

  make: object

  @flax.linen.compact
  def __call__(self, x):
    dropout = self.make()
    return dropout(x, deterministic=False), dropout(x, deterministic=False)


def _dropped(make, x, seed=0):
  return _TwoDropouts(make).apply({}, x, rngs={"dropout": jax.random.PRNGKey(seed)})


def test_dropout_32_bits_is_flax_dropout_bit_for_bit():
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 3, 16, 16))
  ours = _dropped(lambda: model_lib.Dropout(0.1, bits=32), x)
  theirs = _dropped(lambda: flax.linen.Dropout(0.1), x)
  for a, b in zip(ours, theirs):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.array_equal(np.asarray(ours[0]), np.asarray(ours[1]))


@pytest.mark.parametrize("rate,bits,rng", [(0.1, 16, "threefry"), (0.3, 16, "threefry"),
                                           (0.1, 32, "rbg"), (0.3, 16, "rbg")])
def test_dropout_keeps_the_right_share_and_scales(rate, bits, rng):
  x = jnp.ones((8, 12, 64, 65))  # odd total size: the last 16-bit half is unused
  make = lambda: model_lib.Dropout(rate, bits=bits, rng=rng)
  first, second = _dropped(make, x)
  for out in (first, second):
    out = np.asarray(out)
    kept = out != 0
    # Only 0 and 1 / keep_prob; the kept share within 5 standard errors of 1 - rate.
    np.testing.assert_allclose(out[kept], 1.0 / (1.0 - rate), rtol=1e-6)
    std_err = np.sqrt(rate * (1 - rate) / out.size)
    assert abs(kept.mean() - (1.0 - rate)) < 5 * std_err
  # Independent masks for the two calls and for another seed; the same seed gives the same masks.
  assert 0.5 < np.mean((np.asarray(first) != 0) == (np.asarray(second) != 0)) < 0.95
  again = _dropped(make, x)
  np.testing.assert_array_equal(np.asarray(first), np.asarray(again[0]))
  other = _dropped(make, x, seed=1)
  assert not np.array_equal(np.asarray(first), np.asarray(other[0]))


def test_dropout_rng_rbg_draws_other_bits_and_reaches_the_model():
  """rbg is another generator (other masks from the same key), chosen by --dropout_rng for every
  Dropout of the model being trained."""
  x = jnp.ones((4, 256))
  threefry = np.asarray(_dropped(lambda: model_lib.Dropout(0.5), x)[0]) != 0
  rbg = np.asarray(_dropped(lambda: model_lib.Dropout(0.5, rng="rbg"), x)[0]) != 0
  assert 0.4 < np.mean(threefry == rbg) < 0.6
  with pytest.raises(UserError, match="dropout rng must be threefry or rbg"):
    _dropped(lambda: model_lib.Dropout(0.1, rng="philox"), x)
  from augpro_jax import students  # pylint: disable=import-outside-toplevel
  from augpro_jax.config import Config  # pylint: disable=import-outside-toplevel
  config = students.student_config(Config(dropout_rng="rbg", dropout=0.3, student_hidden=32,
                                          student_heads=4), tiny(), 2)
  assert config.dropout_rng == "rbg"
  params = model_lib.init_params(config, jax.random.PRNGKey(0))
  ids = jnp.ones((2, 8), jnp.int32)
  apply = lambda c: model_lib.BertClassifier(c).apply(
      {"params": params}, ids, jnp.ones_like(ids), jnp.zeros_like(ids), deterministic=False,
      rngs={"dropout": jax.random.PRNGKey(3)})
  threefry_config = dataclasses.replace(config, dropout_rng="threefry")
  assert not np.allclose(np.asarray(apply(config)), np.asarray(apply(threefry_config)))


def test_dropout_16_bits_halves_of_a_word_are_independent():
  # Row 0 takes the low 16 bits of the 1,000 words and row 1 the high 16 bits.
  x = jnp.ones((2, 1000))
  kept = np.asarray(_dropped(lambda: model_lib.Dropout(0.5, bits=16), x)[0]) != 0  # [2, 1000]
  assert 0.4 < kept[0].mean() < 0.6 and 0.4 < kept[1].mean() < 0.6
  assert 0.4 < np.mean(kept[0] == kept[1]) < 0.6


def test_dropout_bits_other_than_16_or_32_are_rejected():
  with pytest.raises(UserError, match="dropout bits must be 16 or 32"):
    _dropped(lambda: model_lib.Dropout(0.1, bits=8), jnp.ones((2, 4)))


def test_dropout_broadcast_dims_are_flax_dropout_bit_for_bit():
  x = jax.random.normal(jax.random.PRNGKey(2), (4, 3, 8, 8))  # [batch, heads, q, k]
  ours = _dropped(lambda: model_lib.Dropout(0.2, bits=32, broadcast_dims=(0, 1)), x)
  theirs = _dropped(lambda: flax.linen.Dropout(0.2, broadcast_dims=(0, 1)), x)
  for a, b in zip(ours, theirs):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for bits in (32, 16):
    kept = np.asarray(_dropped(lambda: model_lib.Dropout(0.2, bits, (0, 1)), x)[0]) != 0
    assert (kept == kept[:1, :1]).all() and 0 < kept.mean() < 1  # one [q, k] mask for all


@pytest.mark.parametrize("mask,rows_equal", [("shared", True), ("per_head", False)])
def test_attention_dropout_mask_shared_across_the_batch_only_when_asked(mask, rows_equal):
  config = dataclasses.replace(tiny(dropout=0.3), attention_dropout_mask=mask)
  row = jax.random.normal(jax.random.PRNGKey(3), (1, 10, config.hidden_size))
  x = jnp.tile(row, (3, 1, 1))  # three identical examples [3, seq, hidden]
  attention = model_lib.SelfAttention(config)
  variables = attention.init(jax.random.PRNGKey(0), x, jnp.zeros((3, 1, 1, 10)), True)
  out = np.asarray(attention.apply(variables, x, jnp.zeros((3, 1, 1, 10)), False,
                                   rngs={"dropout": jax.random.PRNGKey(4)}))
  assert np.array_equal(out[0], out[1]) and np.array_equal(out[1], out[2]) or not rows_equal
  assert rows_equal or not np.allclose(out[0], out[1])
  quiet = np.asarray(attention.apply(variables, x, jnp.zeros((3, 1, 1, 10)), True))
  assert not np.allclose(out, quiet)  # dropout did act


def test_attention_dropout_mask_other_values_are_rejected():
  config = dataclasses.replace(tiny(dropout=0.1), attention_dropout_mask="per_batch")
  x = jnp.ones((2, 4, config.hidden_size))
  with pytest.raises(UserError, match="attention dropout mask must be per_head or shared"):
    model_lib.SelfAttention(config).init(jax.random.PRNGKey(0), x, jnp.zeros((2, 1, 1, 4)), True)
