"""The step's building blocks timed alone, XLA:CPU against PyTorch, at the benchmark's shapes.

Command (about a minute on 2 CPU cores; docs/benchmarks.md shows its table):
  .venv/bin/python experiments/op_microbench.py --out=experiments/results/op_microbench_cpu.md

Each row is one jitted function (or one PyTorch call) on [32, 64, ...] float32 inputs, the shapes of
`--mode=benchmark`'s student (2x384, 12 heads, intermediate 1536): median ms of 30 calls after 3
warm-up calls, all rows in one process, so their ratios are comparable. "fwd+bwd" rows time the
VJP (the input's and the parameters' gradients) for a fixed cotangent. PyTorch runs eager with its
default threads. XLA:CPU runs with the flags `main.py` sets (YNNPACK fusions off).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import time
from typing import Any, Callable

import numpy as np

BATCH, SEQ, HIDDEN, HEADS, INTERMEDIATE = 32, 64, 384, 12, 1536


def median_ms(call: Callable[[], Any], calls: int = 30, warmup: int = 3) -> float:
  for _ in range(warmup):
    call()
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    call()
    times.append((time.perf_counter() - start) * 1e3)
  return statistics.median(times)


def _jax_rows() -> list[tuple[str, str, Callable[[], Any]]]:
  """(block, implementation, call) for the JAX forms."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from augpro_jax import layers  # pylint: disable=g-import-not-at-top

  rng = np.random.RandomState(0)
  normal = lambda *shape: jnp.asarray(rng.randn(*shape).astype(np.float32))
  x, wide = normal(BATCH, SEQ, HIDDEN), normal(BATCH, SEQ, INTERMEDIATE)
  rows = []
  for name, module in (("flax nn.Dense", nn.Dense(INTERMEDIATE)),
                       ("augpro_jax layers.Dense", layers.Dense(INTERMEDIATE))):
    params = module.init(jax.random.PRNGKey(0), x)
    forward = jax.jit(module.apply)
    backward = jax.jit(lambda p, x, m=module: jax.vjp(m.apply, p, x)[1](wide))
    rows.append(("dense 384->1536 fwd", name, lambda f=forward, p=params: f(p, x)))
    rows.append(("dense 384->1536 fwd+bwd", name, lambda f=backward, p=params: f(p, x)))
  for name, fn in (("jax.nn.gelu (erfc form)", lambda v: jax.nn.gelu(v, approximate=False)),
                   ("augpro_jax layers.gelu (erf form)", layers.gelu)):
    rows.append(("exact GELU [32,64,1536] fwd", name, lambda f=jax.jit(fn): f(wide)))
  norm = nn.LayerNorm(epsilon=1e-12)
  norm_params = norm.init(jax.random.PRNGKey(0), x)
  rows.append(("LayerNorm [32,64,384] fwd", "flax nn.LayerNorm",
               lambda f=jax.jit(norm.apply): f(norm_params, x)))
  q, k, v = (normal(BATCH, SEQ, HEADS, HIDDEN // HEADS) for _ in range(3))

  def attention(q, k, v):
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(HIDDEN // HEADS)
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)

  rows.append(("attention core fwd", "jnp einsum + softmax (as the model)",
               lambda f=jax.jit(attention): f(q, k, v)))
  return [(block, name, lambda c=call: jax.block_until_ready(c())) for block, name, call in rows]


def _torch_rows() -> list[tuple[str, str, Callable[[], Any]]]:
  """(block, implementation, call) for the PyTorch forms."""
  import torch  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  x, wide = torch.randn(BATCH, SEQ, HIDDEN), torch.randn(BATCH, SEQ, INTERMEDIATE)
  linear = torch.nn.Linear(HIDDEN, INTERMEDIATE)
  x_grad = x.clone().requires_grad_(True)

  def linear_backward():
    linear.zero_grad(set_to_none=True)
    x_grad.grad = None
    linear(x_grad).backward(wide)

  norm = torch.nn.LayerNorm(HIDDEN, eps=1e-12)
  q, k, v = (torch.randn(BATCH, HEADS, SEQ, HIDDEN // HEADS) for _ in range(3))
  with torch.no_grad():
    rows = [("dense 384->1536 fwd", "torch nn.Linear", lambda: linear(x)),
            ("exact GELU [32,64,1536] fwd", "torch gelu", lambda: torch.nn.functional.gelu(wide)),
            ("LayerNorm [32,64,384] fwd", "torch nn.LayerNorm", lambda: norm(x)),
            ("attention core fwd", "torch scaled_dot_product_attention",
             lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))]
  rows.insert(1, ("dense 384->1536 fwd+bwd", "torch nn.Linear", linear_backward))
  return [(block, name, _no_grad(call) if "bwd" not in block else call)
          for block, name, call in rows]


def _no_grad(call: Callable[[], Any]) -> Callable[[], Any]:
  import torch  # pylint: disable=g-import-not-at-top

  def run():
    with torch.no_grad():
      return call()
  return run


def table() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  rows = _jax_rows() + _torch_rows()
  order = list(dict.fromkeys(block for block, _, _ in rows))
  timed = [(block, name, median_ms(call)) for block, name, call in rows]
  lines = [f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} "
           f"({torch.get_num_threads()} threads); median ms of 30 calls.", "",
           "| block | implementation | ms | × the fastest |", "|---|---|---:|---:|"]
  for block in order:
    group = [(name, ms) for b, name, ms in timed if b == block]
    best = min(ms for _, ms in group)
    lines += [f"| {block} | {name} | {ms:.2f} | {ms / best:.2f} |" for name, ms in group]
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", help="markdown table path (printed either way)")
  args = parser.parse_args()
  if "ynn_fusion_type" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_experimental_ynn_fusion_type=").strip()
  text = table() + "\n"
  print(text, end="")
  if args.out:
    pathlib.Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
  main()
