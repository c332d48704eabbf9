"""Every token-level augmentation variant on the same three real SST-2 sentences, with its profile.

For each variant (a registry entry with flags, run through the entry itself: `projection_lib`), one
markdown row: the three SST-2 dev sentences after augmentation, and the profile line of the same
variant on --profile_examples SST-2 training examples (the examples a run with that --train_size
loads): measured shift; of the changed tokens, the share that are the partner's token, the original
token's nearest neighbour, or neither; the shares of word-piece continuations (##) and of non-ASCII
tokens. MixUp and FGSM themselves produce embeddings, not tokens, and are not shown.

Command (the teacher as in projection_profile.py; each profile line costs about
what one variant of projection_profile.py does, 28 s on 2 CPU cores):
  .venv/bin/python experiments/show_augmentations.py --glue_dir=../shared/data/glue \\
      --teacher_ckpt=runs/experiments/teacher-sst2/final
"""

from __future__ import annotations

import os
import sys
import time

from absl import app
from absl import flags

from augpro_jax import config as config_lib
from augpro_jax import data as data_lib
from augpro_jax import token_profile
from experiments import projection_lib as lib

flags.DEFINE_string("glue_dir", os.environ.get("GLUE_DIR"), "glue_data directory.")
flags.DEFINE_float("shift_degree", 0.3, "Shift degree.")
flags.DEFINE_integer("num_sentences", 3, "Dev sentences to show.")
flags.DEFINE_integer("profile_examples", 2000, "Training examples each profile line is measured on.")
flags.DEFINE_integer("max_seq_len", 64, "Tokens per example.")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_string("teacher_ckpt", None, "Fine-tuned teacher for the FGSM direction.")
flags.DEFINE_string("only", None, "Show only variants whose flags contain this.")
FLAGS = flags.FLAGS

V = lib.variant
# Each variant is the entry's defaults (augpro_jax/config.py) with these flags changed.
VARIANTS = [
    V("augpro_mix"),
    V("augpro_mix", mix_lambda_per="position"),
    V("augpro_mix", mix_lambda="folded"),
    V("augpro_mix", mix_lambda="fixed", mix_lambda_value=0.5),
    V("augpro_mix", exclude_original=False),
    V("augpro_mix", mix_lambda="folded", exclude_original=False),
    V("augpro_mix", mix_partner_align="stretch"),
    V("augpro_mix", projection_vocab="full"),
    V("augpro_mix", mix_lambda="folded", projection_vocab="full"),
    V("augpro_mix", projection_search="approx"),
    V("augpro_fgsm"),
    V("augpro_fgsm", fgsm_eps=0.01),
    V("augpro_fgsm", fgsm_eps=0.03),
    V("augpro_fgsm", fgsm_eps=0.3),
    V("augpro_fgsm", exclude_original=False),
    V("augpro_fgsm", fgsm_eps=0.3, exclude_original=False),
    V("augpro_fgsm", fgsm_loss="ce"),
    V("augpro_fgsm", fgsm_loss="both"),
    V("augpro_fgsm", projection_vocab="full"),
    V("knn"),
    V("knn", projection_vocab="full"),
]


def label(v: lib.Variant) -> str:
  return " ".join([f"--aug={v.aug}"] + [f"--{k}={lib.flag_value(x)}" for k, x in v.knobs])


def main(argv):
  del argv
  start = time.perf_counter()
  setup = lib.load(FLAGS.glue_dir, FLAGS.profile_examples, FLAGS.max_seq_len, FLAGS.teacher_ckpt,
                   FLAGS.seed)
  cfg = config_lib.Config(task="sst2", glue_dir=FLAGS.glue_dir, eval_size=FLAGS.num_sentences)
  dev = data_lib.load_split(cfg, data_lib.resolve_task(cfg), "dev")
  shown = lib.encode(setup, dev.texts, dev.labels)
  train = lib.encode(setup, setup.train.texts, setup.train.labels)
  base = config_lib.AugmentConfig(shift_degree=FLAGS.shift_degree)
  variants = [v for v in VARIANTS if FLAGS.only is None or FLAGS.only in label(v)]
  losses = {v.config(base).fgsm_loss for v in variants if v.aug == "augpro_fgsm"}
  shown_grads = {loss: lib.input_gradients(setup, shown, loss) for loss in losses}
  train_grads = {loss: lib.input_gradients(setup, train, loss) for loss in losses}
  nearest = {vocab: lib.nearest_of(setup, vocab, train["ids"]) for vocab in ("full", "task")}

  n = len(shown["ids"])
  print(f"| variant | {' | '.join(f'sentence {i + 1}' for i in range(n))} | profile on "
        f"{len(train['ids'])} training examples |")
  print("|---" * (n + 2) + "|")
  print("| original | " + " | ".join(lib.decode(setup, shown["ids"][i], shown["mask"][i])
                                    for i in range(n)) + " | |")
  for v in variants:
    new, _ = lib.run_variant(setup, v, shown, base, shown_grads, seed=FLAGS.seed, chunk=n)
    texts = [lib.decode(setup, new[i], shown["mask"][i]) for i in range(n)]
    train_new, met = lib.run_variant(setup, v, train, base, train_grads, seed=FLAGS.seed)
    prof = lib.profile(setup, train, train_new, met, nearest[v.config(base).projection_vocab])
    print(f"| `{label(v)}` | " + " | ".join(texts) + f" | {token_profile.format_line(prof)} |",
          flush=True)
  print(f"\n({time.perf_counter() - start:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
  app.run(main)
