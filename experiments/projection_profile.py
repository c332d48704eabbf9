"""Sweep: what every AugPro-Mix, AugPro-FGSM and knn variant's projection produces on SST-2.

For each variant, on 2,000 SST-2 training examples (the examples a run with --train_size=2000
loads; 64 tokens; shift 0.3): of the changed tokens, the share that are the partner's token at that
position, the original token's nearest neighbour, or neither; the shares of word-piece
continuations (##) and of non-ASCII tokens; and the measured shift. Also: the candidate sets'
sizes, the data's own non-ASCII share, and the recall of --projection_search=approx against exact.
No training. docs/augmentations.md discusses the results.

Command (the teacher is the experiments' SST-2 teacher, fine-tuned on 4,000 examples for one epoch;
about 6 min on 2 CPU cores):
  .venv/bin/python main.py --mode=train_teacher --task=sst2 --train_size=4000 \\
      --teacher_num_epochs=1 --max_seq_len=64 --batch_size=32 --checkpoint_every=0 \\
      --keep_checkpoints=1 --workdir=runs/experiments/teacher-sst2
  .venv/bin/python experiments/projection_profile.py \\
      --teacher_ckpt=runs/experiments/teacher-sst2/final
Writes experiments/results/projection_profile.{json,md} and projection_profile_summary.md (the
tables docs/augmentations.md shows; `--tables_only` rewrites both from the JSON). Runtime: 1,413 s on a 2-core CPU VM (50 variants).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time


import jax
import jax.numpy as jnp
import numpy as np

from augpro_jax import augment
from augpro_jax import config as config_lib
from augpro_jax import data as data_lib
from augpro_jax import input_pipeline as pipeline
from augpro_jax import mixing
from experiments import projection_lib as lib

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
VOCABS = ("full", "task")
EPSILONS = (0.01, 0.03, 0.1, 0.3)
LAMBDAS = (("folded", "example"), ("folded", "position"), ("beta", "example"),
           ("beta", "position"), ("fixed", "example"))


def sweep_variants() -> list[lib.Variant]:
  v = lib.variant
  out = []
  for vocab in VOCABS:
    for exclude in (True, False):
      for rule, per in LAMBDAS:
        out.append(v("augpro_mix", mix_lambda=rule, mix_lambda_per=per, exclude_original=exclude,
                      mix_partner_align="wrap", projection_vocab=vocab))
    for per in ("example", "position"):
      out.append(v("augpro_mix", mix_lambda="beta", mix_lambda_per=per, exclude_original=True,
                   mix_partner_align="stretch", projection_vocab=vocab))
  for vocab in VOCABS:
    for exclude in (True, False):
      for eps in EPSILONS:
        out.append(v("augpro_fgsm", fgsm_eps=eps, fgsm_loss="kd", exclude_original=exclude,
                     projection_vocab=vocab))
    for loss in ("ce", "both"):
      for eps in (0.1, 0.3):
        out.append(v("augpro_fgsm", fgsm_eps=eps, fgsm_loss=loss, exclude_original=True,
                     projection_vocab=vocab))
  out += [v("knn", projection_vocab=vocab) for vocab in VOCABS]
  return out


def absolute_alignment_share(setup: lib.Setup, batch: dict[str, np.ndarray], shift_degree: float,
                             seed: int, chunk: int = 250) -> float:
  """The share of chosen positions whose partner token *at the same absolute position* is padding
  or a special token: what aligning partners by position would mix in. Same keys, positions and
  partners as `lib.run_variant`."""
  is_special = jnp.asarray(setup.is_special)
  hits, total = 0, 0
  for start in range(0, len(batch["ids"]), chunk):
    ids = jnp.asarray(batch["ids"][start:start + chunk])
    eligible = augment.eligible_positions(ids, jnp.asarray(batch["mask"][start:start + chunk]),
                                          is_special)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed), i))(
        jnp.arange(start, start + ids.shape[0]))
    partner = mixing.partner_cycle(jax.random.fold_in(jax.random.PRNGKey(seed + 1), start),
                                   ids.shape[0])
    positions, chosen = augment.choose_positions(
        keys, eligible, shift_degree, augment.position_budget(shift_degree, ids.shape[1]))
    same_place = jnp.take_along_axis(ids[partner], positions, -1)
    hits += int(jnp.sum(chosen & is_special[same_place]))
    total += int(jnp.sum(chosen))
  return hits / total


def vocabulary_facts(setup: lib.Setup, batch: dict[str, np.ndarray]) -> dict[str, float]:
  """Sizes of the data's tokens: non-ASCII and ## occurrences, the table's median row norm."""
  ids, mask = batch["ids"], batch["mask"]
  real = ids[(mask > 0) & ~setup.is_special[ids]]
  is_continuation, is_non_ascii = setup.token_flags
  return {"eligible_tokens": int(real.size), "non_ascii_tokens": int(is_non_ascii[real].sum()),
          "continuation_share": float(is_continuation[real].mean())}


def approx_recall(setup: lib.Setup, batch: dict[str, np.ndarray], k: int, vocab: str,
                  recall_target: float) -> dict[str, float]:
  """Recall@k of the approximate search against the exact one, for the nearest other tokens of
  every eligible token of `batch` (knn's search), and @1 for the same vectors."""
  ids, mask = batch["ids"], batch["mask"]
  own = ids[(mask > 0) & ~setup.is_special[ids]]  # [P] every real position
  common = dict(exclude=jnp.asarray(own), candidate_mask=jnp.asarray(setup.candidates[vocab]))
  vectors = setup.table[jnp.asarray(own)]
  out = {"positions": int(len(own)), "k": k, "recall_target": recall_target}
  for at in (1, k):
    exact = np.asarray(augment.nearest_tokens_topk(vectors, setup.table, at, **common))
    approx = np.asarray(augment.nearest_tokens_topk(vectors, setup.table, at, search="approx",
                                                    recall_target=recall_target, **common))
    hits = [len(set(a) & set(e)) for a, e in zip(approx, exact)]
    out[f"recall_at_{at}"] = float(np.sum(hits) / (at * len(own)))
  out["backend"] = jax.default_backend()
  return out


def markdown(report: dict) -> str:
  f = report["facts"]
  lines = [
      f"{f['examples']} SST-2 training examples ({f['max_seq_len']} tokens), shift "
      f"{f['shift_degree']}, seed {f['seed']}; backend {f['backend']}; {f['seconds']:.0f} s.",
      "",
      f"Candidate sets: full {f['vocab_full']} ids; task {f['vocab_task']} ids (those in these "
      f"{f['examples']} examples; {f['vocab_task_full_split']} in the whole training split).",
      f"Non-ASCII ids: {f['non_ascii_ids']['full']} (full), {f['non_ascii_ids']['task']} (task), "
      f"{f['non_ascii_ids']['task_full_split']} (task, whole split). Non-ASCII eligible tokens of "
      f"the data: {f['data']['non_ascii_tokens']} of {f['data']['eligible_tokens']} (these "
      f"examples), {f['data_full_split']['non_ascii_tokens']} of "
      f"{f['data_full_split']['eligible_tokens']} (whole split); ## continuations "
      f"{100 * f['data']['continuation_share']:.1f}% / "
      f"{100 * f['data_full_split']['continuation_share']:.1f}%.",
      f"Median L2 norm of the candidate embeddings: {f['table_median_row_norm']:.3f}. Aligning "
      f"partners by absolute position would pair {100 * f['absolute_alignment_special_share']:.1f}% "
      f"of the chosen positions with the partner's padding or a special token.",
      "",
      "| variant | shift | partner | nearest | other | ## | non-ASCII | distinct | changed |",
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
  ]

  def pct(x):
    return "-" if x is None else f"{100 * x:.1f}%"
  for row in report["variants"]:
    p = row["profile"]
    lines.append(f"| {row['label']} | {p['measured_shift']:.3f} | {pct(p['partner_share'])} | "
                 f"{pct(p['nearest_share'])} | {pct(p['other_share'])} | "
                 f"{pct(p['continuation_share'])} | {pct(p['non_ascii_share'])} | "
                 f"{pct(p['distinct_share'])} | {p['changed_tokens']} |")
  r = report["approx_recall"]
  k = r["k"]
  lines += ["", f"Approximate search (`jax.lax.approx_max_k`, recall target {r['recall_target']}) "
            f"against exact on {r['positions']} real positions, backend {r['backend']}: recall@1 "
            f"{r['recall_at_1']:.4f}, recall@{k} {r['recall_at_' + str(k)]:.4f}."]
  return "\n".join(lines)


def _cells(p: dict, keys: tuple[str, ...], bold: tuple[str, ...] = ()) -> str:
  """The shift and the shares in `keys`; a variant that changed (almost) nothing says so."""
  if p["changed_tokens"] < 10:
    n = p["changed_tokens"]
    said = "(nothing changed)" if n == 0 else f"({n} token{'s' * (n > 1)} changed)"
    return f"{p['measured_shift']:.3f} | {said} |" + " |" * (len(keys) - 1)
  cells = [f"{100 * p[k]:.1f}%" if p[k] is not None else "-" for k in keys]
  cells = [f"**{c}**" if k in bold else c for k, c in zip(keys, cells)]
  return f"{p['measured_shift']:.3f} | " + " | ".join(cells) + " |"


def summary_markdown(report: dict) -> str:
  """The two tables docs/augmentations.md discusses, from the sweep: AugPro-Mix by λ rule (wrap,
  one λ per example), then AugPro-FGSM (kd loss) by ε, and knn; the defaults in bold."""
  find = {(r["aug"], tuple(sorted(r["knobs"].items()))): r["profile"] for r in report["variants"]}
  b = lambda text, on: f"**{text}**" if on else text
  yes_no = lambda x: "yes" if x else "no"
  mix_keys = ("partner_share", "nearest_share", "other_share", "continuation_share",
              "non_ascii_share")
  lines = ["AugPro-Mix (`wrap`, λ per example):", "",
           "| λ | excl. | candidates | shift | partner | nearest | other | ## | non-ASCII |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|"]
  for vocab in VOCABS:
    for exclude in (True, False):
      for rule in ("folded", "beta", "fixed"):
        knobs = {"mix_lambda": rule, "mix_lambda_per": "example", "exclude_original": exclude,
                 "mix_partner_align": "wrap", "projection_vocab": vocab}
        profile = find.get(("augpro_mix", tuple(sorted(knobs.items()))))
        if profile is None:
          continue
        default = rule == "beta" and exclude and vocab == "task"
        name = "fixed 0.5" if rule == "fixed" else rule
        lines.append(f"| {b(name, default)} | {b(yes_no(exclude), default)} | {b(vocab, default)} | "
                     + _cells(profile, mix_keys,
                              ("partner_share", "nearest_share") if default else ()))
  fgsm_keys = ("nearest_share", "other_share", "continuation_share", "non_ascii_share",
               "distinct_share")
  lines += ["", "AugPro-FGSM (`--fgsm_loss=kd`) and `knn`:", "",
            "| method | ε | excl. | candidates | shift | nearest | other | ## | non-ASCII | distinct |",
            "|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
  for vocab in reversed(VOCABS):
    for exclude in (True, False):
      for eps in EPSILONS:
        knobs = {"fgsm_eps": eps, "fgsm_loss": "kd", "exclude_original": exclude,
                 "projection_vocab": vocab}
        profile = find.get(("augpro_fgsm", tuple(sorted(knobs.items()))))
        if profile is None:
          continue
        default = eps == 0.1 and exclude and vocab == "task"
        lines.append(f"| {b('augpro_fgsm', default)} | {b(eps, default)} | "
                     f"{b(yes_no(exclude), default)} | {b(vocab, default)} | "
                     + _cells(profile, fgsm_keys))
  for vocab in reversed(VOCABS):
    profile = find.get(("knn", (("projection_vocab", vocab),)))
    if profile is not None:
      lines.append(f"| knn | | | {vocab} | " + _cells(profile, fgsm_keys))
  return "\n".join(lines)


def write_tables(report: dict, out: pathlib.Path) -> str:
  """<out>.md (every variant) and <out>_summary.md (the docs' two tables); returns the first."""
  table = markdown(report)
  out.with_suffix(".md").write_text(table + "\n")
  out.with_name(out.stem + "_summary.md").write_text(summary_markdown(report) + "\n")
  return table


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--glue_dir", default=os.environ.get("GLUE_DIR"))
  p.add_argument("--teacher_ckpt", default=None, help="Fine-tuned teacher for the FGSM direction.")
  p.add_argument("--examples", type=int, default=2000)
  p.add_argument("--max_seq_len", type=int, default=64)
  p.add_argument("--shift_degree", type=float, default=0.3)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default=str(RESULTS / "projection_profile.json"))
  p.add_argument("--only", default=None, help="Run only variants whose label contains this.")
  p.add_argument("--tables_only", action="store_true",
                 help="Rewrite the markdown tables from the JSON at --out; run nothing.")
  args = p.parse_args()
  if args.tables_only:
    try:
      report = json.loads(pathlib.Path(args.out).read_text())
    except (OSError, ValueError) as e:
      p.error(f"cannot read --out {args.out}: {e}")
    write_tables(report, pathlib.Path(args.out))
    return 0
  if not args.glue_dir:
    p.error("--glue_dir (or $GLUE_DIR) is required")
  start = time.perf_counter()
  setup = lib.load(args.glue_dir, args.examples, args.max_seq_len, args.teacher_ckpt, args.seed)
  batch = lib.encode(setup, setup.train.texts, setup.train.labels)
  base = config_lib.AugmentConfig(shift_degree=args.shift_degree)
  variants = [v for v in sweep_variants() if args.only is None or args.only in v.label]
  grads = {loss: lib.input_gradients(setup, batch, loss) for loss in ("kd", "ce", "both")
           if any(v.aug == "augpro_fgsm" and v.config(base).fgsm_loss == loss for v in variants)}
  nearest = {vocab: lib.nearest_of(setup, vocab, batch["ids"]) for vocab in VOCABS}
  rows = []
  for v in variants:
    t0 = time.perf_counter()
    new_ids, met = lib.run_variant(setup, v, batch, base, grads, seed=args.seed)
    prof = lib.profile(setup, batch, new_ids, met, nearest[v.config(base).projection_vocab])
    rows.append({"label": v.label, "aug": v.aug, "knobs": dict(v.knobs), "profile": prof,
                 "seconds": time.perf_counter() - t0})
    print(f"{time.perf_counter() - t0:6.1f}s  {v.label}: {lib.token_profile.format_line(prof)}",
          flush=True)
  full_cfg = config_lib.Config(task="sst2", glue_dir=args.glue_dir, max_seq_len=args.max_seq_len)
  full_train = pipeline.tokenize(data_lib.load_split(full_cfg, data_lib.resolve_task(full_cfg),
                                                     "train"), setup.tokenizer, args.max_seq_len)
  full_batch = {"ids": full_train.input_ids, "mask": full_train.attention_mask}
  task_full_split = pipeline.task_candidates(setup.candidates["full"], setup.is_special, full_train)
  is_non_ascii = setup.token_flags[1]
  table = np.asarray(setup.table)[setup.candidates["full"]]
  facts = {
      "examples": len(batch["ids"]), "max_seq_len": args.max_seq_len,
      "shift_degree": args.shift_degree, "seed": args.seed, "teacher_ckpt": args.teacher_ckpt,
      "backend": jax.default_backend(),
      "vocab_full": int(setup.candidates["full"].sum()),
      "vocab_task": int(setup.candidates["task"].sum()),
      "vocab_task_full_split": int(task_full_split.sum()),
      "non_ascii_ids": {"full": int((setup.candidates["full"] & is_non_ascii).sum()),
                        "task": int((setup.candidates["task"] & is_non_ascii).sum()),
                        "task_full_split": int((task_full_split & is_non_ascii).sum())},
      "data_non_ascii": lib.non_ascii_share(setup, batch),
      "data_non_ascii_full_split": lib.non_ascii_share(setup, full_batch),
      "data": vocabulary_facts(setup, batch),
      "data_full_split": vocabulary_facts(setup, full_batch),
      "table_median_row_norm": float(np.median(np.linalg.norm(table, axis=-1))),
      "absolute_alignment_special_share": absolute_alignment_share(
          setup, batch, args.shift_degree, args.seed),
  }
  report = {"facts": facts, "variants": rows,
            "approx_recall": approx_recall(setup, batch, base.knn_k, "full", base.projection_recall)}
  facts["seconds"] = time.perf_counter() - start
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(report, indent=2))
  print(write_tables(report, out))
  return 0


if __name__ == "__main__":
  sys.exit(main())
