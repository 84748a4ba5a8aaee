# The two commands of the README: `make demo` and `make test`. Both install first.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test check lint bench

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
