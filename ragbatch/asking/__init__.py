"""Asking in bulk (`ragbatch ask`): questions in (questions.py), one resumable Parquet
answers file out (answer_file.py); pipeline.py runs retrieval and generation between."""
