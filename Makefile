# Two commands a user needs: `make run` (default scenario) and `make test` (the test suite).
# Both create the virtual environment first, pinned by requirements.lock.
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: setup run study report mlflow docs lint test test-avx2 lock clean-env

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[pipeline,dev]'
	touch $@

run: setup
	dvc repro
	@echo
	@echo "Results of the scenario in params.yaml:"
	@echo "  metrics:  metrics/probe.json, metrics/train.json, metrics/examples.json, metrics/baselines/   (dvc metrics show)"
	@echo "  figures:  plots/tsne.png, plots/confusion.png, plots/train_loss.png"
	@echo "  encoder:  models/encoder.pt"
	@echo "  MLflow:   $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000   -> http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning"
	@dvc metrics show

# The 12-scenario study (study.* in params.yaml) as DVC experiments, then its report.
# Resumes where it stopped. `make study SEEDS=1` for one seed per scenario;
# `make study GRID=losses RECIPE=<name>` for another grid or recipe of params.yaml.
# On Dask, one task per run: `make study WORKERS=2` (an embedded cluster on this machine, THREADS each),
# `make study SCHEDULER=tcp://host:8786` (an existing cluster), `make study CLUSTER=slurm JOBS=20`.
GRID ?= main
RECIPE ?= protocol
study: setup
	$(BIN)/python -m contrastlab.study --results study/results --grid $(GRID) --recipe $(RECIPE) $(if $(SEEDS),--seeds $(SEEDS)) \
		$(if $(WORKERS),--workers $(WORKERS)) $(if $(THREADS),--threads $(THREADS)) $(if $(SCHEDULER),--scheduler $(SCHEDULER)) \
		$(if $(CLUSTER),--cluster $(CLUSTER) --jobs $(or $(JOBS),1))
	$(MAKE) report

report: setup mlflow
	$(BIN)/python -m contrastlab.study.report --results study/results --out report --readme README.md

# The committed study results as MLflow runs (nested per study), so the MLflow UI compares them after a clone.
# Adds only what the store does not hold yet.
mlflow: setup
	$(BIN)/python -m contrastlab.study.import_runs --results study/results

# docs/reference.md, the params reference, generated from params.yaml's comments and defaults, the params schema
# and dvc.yaml (tests/infra/test_reference.py fails when it is stale). Run it after editing params.yaml itself,
# not while `dvc exp run -S` has left an experiment's values in it.
docs: setup
	$(BIN)/python -m contrastlab.infra.reference --out docs/reference.md

# ruff's lint rules and formatting, and mypy's types of the package (configured in pyproject.toml); `make test`
# runs it first. `$(BIN)/ruff format .` reformats, `$(BIN)/ruff check --fix .` applies the safe fixes.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy src

# One pytest worker per core, each test file on one worker (its module fixtures are built once): most of the
# suite's time is single-threaded process start-up (dvc, torch imports), so 2 cores take about half as long.
test: setup lint
	$(BIN)/python -m pytest -n auto --dist loadfile

# The tests whose numbers hang on how a CPU rounds (marked cpu_sensitive) again, on an AVX2-only AMD CPU's kernels:
# torch's as `cpu_kernels: portable` sets them (contrastlab.infra.machine.PORTABLE_KERNELS; on AMD CPUs MKL computes
# as its COMPATIBLE mode does), NumPy's and OpenBLAS's capped at AVX2. On an AVX-512 CPU this catches a change that
# would fail on an AVX2 one.
AVX2_KERNELS = ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=COMPATIBLE \
	OPENBLAS_CORETYPE=$${OPENBLAS_CORETYPE:-Haswell} NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR"
test-avx2: setup
	$(AVX2_KERNELS) $(BIN)/python -m pytest -n auto --dist loadfile -m cpu_sensitive

# Re-pin every dependency to what is installed now (after changing pyproject.toml).
lock:
	$(BIN)/python -m pip freeze --exclude-editable > requirements.lock

clean-env:
	rm -rf $(VENV)
