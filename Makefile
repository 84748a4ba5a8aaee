# The two commands of the README: `make demo` and `make test`. Both install first.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench

install:
	bash scripts/install.sh

demo: install
	$(BIN)/ragbatch index corpora/around.txt --store stores/around
	$(BIN)/ragbatch ask corpora/questions.jsonl --store stores/around --out outputs/around-answers.parquet --resume
	$(BIN)/python -c "import pyarrow.parquet as pq; print(pq.read_table('outputs/around-answers.parquet', columns=['id', 'answer', 'sources']).to_pandas().to_string(max_colwidth=70))"

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/index_bench.py
