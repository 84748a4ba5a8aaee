"""Evaluation (`ragbatch eval`): references in, retrieval and answer quality out.

metrics.py holds the pure metrics (hit@k, MRR, SQuAD EM/F1); report.py writes the HTML
page; pipeline.py runs the retrieval and scores it.
"""
