# The two commands of the README: `make demo` and `make test`. Both install first.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test check lint bench gpu-check

install:
	bash scripts/install.sh

# The design card's two commands, verbatim, where their files are: they write
# corpora/stores/default/ and corpora/outputs/questions.jsonl-answers.parquet.
demo: install
	cd corpora && $(abspath $(BIN))/ragbatch index around.txt
	cd corpora && $(abspath $(BIN))/ragbatch ask questions.jsonl
	$(BIN)/python -c "import pyarrow.parquet as pq; print(pq.read_table('corpora/outputs/questions.jsonl-answers.parquet', columns=['id', 'answer', 'sources']).to_pandas().to_string(max_colwidth=70))"

# The whole suite, as CI runs it: lint, types, every test.
test: install lint
	$(BIN)/python -m pytest

# The inner loop (under 2 minutes): lint, types, and the tests not marked slow, cluster or faults.
check: install lint
	$(BIN)/python -m pytest -m "not slow and not cluster and not faults" -q

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install
	$(BIN)/python benchmarks/index_bench.py

# The GPU verification in one command, on a machine with an NVIDIA GPU: the gpu build, the
# GPU tests (failing, not skipping, where torch sees no GPU), the embedder benchmark and a
# small ask benchmark; everything printed also goes to outputs/gpu-check.txt.
gpu-check: SHELL := /bin/bash
gpu-check:
	RAGBATCH_FLAVOUR=gpu bash scripts/install.sh
	mkdir -p outputs
	{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; \
	  RAGBATCH_EXPECT_GPU=1 $(BIN)/python -m pytest -m gpu -q -p no:cacheprovider; status=$$?; \
	  $(BIN)/python benchmarks/gpu_embed_bench.py; \
	  $(BIN)/python benchmarks/ask_bench.py --questions 50; exit $$status; } 2>&1 | tee outputs/gpu-check.txt; exit $${PIPESTATUS[0]}
