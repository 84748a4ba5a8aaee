# The two commands of the README: `make demo` and `make test`. Both install first.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench

install:
	bash scripts/install.sh

demo: install
	$(BIN)/ragbatch index corpora/around.txt --store stores/around

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/index_bench.py
