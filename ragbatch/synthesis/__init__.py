"""`ragbatch synth`: synthetic questions and reference answers from a store (sampling, pipeline)."""
