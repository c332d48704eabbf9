"""Print real SST-2 sentences before and after each augmentation, as a markdown table.

Command (about 30 s on 2 CPU cores):
  .venv/bin/python experiments/show_augmentations.py --glue_dir=../shared/data/glue --shift_degree=0.3

The projection table is the student's, which starts as the teacher's (MiniLM) word embeddings.
The FGSM direction is the gradient of KL(teacher || student) with the pretrained MiniLM as teacher
(with a randomly initialised head unless --teacher_ckpt gives a fine-tuned one) and its 2-layer
student. MixUp and FGSM themselves produce embeddings, not tokens; their rows say so.
"""

from __future__ import annotations

import dataclasses
import os
import sys


from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from augpro_jax import augment
from augpro_jax import checkpoints
from augpro_jax import config as config_lib
from augpro_jax import data as data_lib
from augpro_jax import hf_io
from augpro_jax import input_pipeline as pipeline
from augpro_jax import losses
from augpro_jax import model as model_lib
from augpro_jax.errors import UserError

flags.DEFINE_string("glue_dir", os.environ.get("GLUE_DIR"), "glue_data directory.")
flags.DEFINE_float("shift_degree", 0.3, "Shift degree.")
flags.DEFINE_integer("num_examples", 3, "Dev sentences to show.")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_float("fgsm_eps", 0.1, "FGSM step.")
flags.DEFINE_string("teacher_ckpt", None, "Optional fine-tuned teacher (exported model).")
flags.DEFINE_string("wordnet_dir", None, "WordNet directory for the synonym row.")
FLAGS = flags.FLAGS


def decode(tokenizer, ids, mask):
  return tokenizer.decode([int(i) for i, m in zip(ids, mask) if m], skip_special_tokens=True)


def main(argv):
  del argv
  cfg = config_lib.Config(task="sst2", glue_dir=FLAGS.glue_dir, max_seq_len=48,
                          shift_degree=FLAGS.shift_degree, eval_size=FLAGS.num_examples).validate()
  task = data_lib.resolve_task(cfg)
  examples = data_lib.load_split(cfg, task, "dev")
  teacher_dir = hf_io.resolve_pretrained_dir(cfg.teacher)
  tokenizer = pipeline.load_tokenizer(teacher_dir)
  data = pipeline.tokenize(examples, tokenizer, cfg.max_seq_len)
  t_config, t_params = hf_io.load_pretrained(str(teacher_dir), num_labels=2, dropout_rate=0.0)
  if FLAGS.teacher_ckpt:
    t_config, t_params, _ = checkpoints.load_exported(FLAGS.teacher_ckpt)
  s_config = dataclasses.replace(t_config, num_layers=2)
  s_params = model_lib.student_from_teacher(s_config, t_config, t_params, jax.random.PRNGKey(1))
  teacher, student = model_lib.BertClassifier(t_config), model_lib.BertClassifier(s_config)
  is_special, is_candidate = (jnp.asarray(m) for m in pipeline.vocab_masks(
      tokenizer, t_config.vocab_size))

  ids, mask, types = (jnp.asarray(a) for a in (data.input_ids, data.attention_mask,
                                               data.token_type_ids))
  n = ids.shape[0]
  table = model_lib.word_embedding_table(s_params)
  eligible = augment.eligible_positions(ids, mask, is_special)
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(FLAGS.seed), i))(jnp.arange(n))
  common = dict(shift_degree=cfg.shift_degree, metric="l2", candidate_mask=is_candidate,
                chunk_size=2048)
  partner = jnp.roll(jnp.arange(n), 1)
  lam = augment.mix_coefficients(keys, 0.4, keep_major=True)

  def kd(delta):
    embeds = student.apply({"params": s_params}, ids, method=model_lib.BertClassifier.embed)
    s_logits = student.apply({"params": s_params}, embeds + delta, mask, types,
                             method=model_lib.BertClassifier.apply_embeddings)
    t_logits = teacher.apply({"params": t_params}, ids, mask, types)
    return jnp.sum(losses.kd_loss(s_logits, t_logits, temperature=1.0, is_regression=False))

  grad = jax.grad(kd)(jnp.zeros(ids.shape + (s_config.hidden_size,)))
  rows = {
      "augpro_mix": augment.augpro_mix(keys, ids, eligible, partner, lam, table,
                                       exclude_original=True, **common),
      "augpro_fgsm": augment.augpro_perturb(keys, ids, eligible,
                                            augment.fgsm_delta(grad, FLAGS.fgsm_eps), table,
                                            exclude_original=True, **common),
      "knn": augment.knn_replace(keys, ids, eligible, table, k=10, **common),
  }
  synonym_texts = None
  try:
    from augpro_jax import synonyms  # pylint: disable=import-outside-toplevel
    wordnet = synonyms.load_wordnet(FLAGS.wordnet_dir)
    synonym_texts, _ = synonyms.augment_texts(examples.texts, cfg.shift_degree,
                                              np.random.default_rng(FLAGS.seed), wordnet)
  except UserError as exc:
    print(f"(synonym row skipped: {exc})", file=sys.stderr)

  print(f"| method | text (shift degree {cfg.shift_degree}) | measured shift |")
  print("|---|---|---:|")
  for i in range(n):
    print(f"| original | {decode(tokenizer, data.input_ids[i], data.attention_mask[i])} | |")
    print(f"| mixup | (embedding mix with \"{decode(tokenizer, data.input_ids[int(partner[i])], data.attention_mask[int(partner[i])])}\"; no tokens) | - |")
    print("| fgsm | (embeddings moved by eps * sign(grad); no tokens) | - |")
    for name, new in rows.items():
      shift, _ = augment.measured_shift(ids[i:i + 1], new[i:i + 1], eligible[i:i + 1])
      print(f"| {name} | {decode(tokenizer, np.asarray(new[i]), data.attention_mask[i])} | "
            f"{float(shift[0]):.2f} |")
    if synonym_texts is not None:
      print(f"| synonym | {' / '.join(synonym_texts[i])} | (word level) |")


if __name__ == "__main__":
  app.run(main)
