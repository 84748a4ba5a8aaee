"""`python -m ragbatch` is `ragbatch`."""

from ragbatch.cli import main

main(prog_name="ragbatch")
