"""`ragbatch judge`: rate answers with an LLM judge (rubrics, prompts, verdicts, summary, report, pipeline)."""
