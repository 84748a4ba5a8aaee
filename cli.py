"""Shim: `python cli.py ...` is `ragbatch ...`."""

from ragbatch.cli import main

if __name__ == "__main__":
    main()
