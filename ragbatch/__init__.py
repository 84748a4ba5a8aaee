"""ragbatch: batch retrieval-augmented generation on one machine."""

__version__ = "0.1.0"
