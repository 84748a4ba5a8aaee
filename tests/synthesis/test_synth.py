"""`ragbatch synth` for real: the packaged model writes questions from a real store's
chunks; the file is ready for `eval`."""

import json

import pytest
from helpers import ragbatch_cli

import ragbatch

pytestmark = pytest.mark.slow

PAGES = {
    "etna.txt": "Mount Etna is an active stratovolcano on the east coast of Sicily, in the metropolitan city of Catania, between Messina and Catania. "
    "It is the tallest active volcano in Europe outside the Caucasus and erupts several times a year.",
    "sourdough.txt": "Sourdough bread rises with a starter of wild yeast and lactobacilli rather than baker's yeast. Bakers keep the starter alive "
    "by feeding it flour and water every day, and the lactic acid gives the bread its sour taste and long shelf life.",
    "chess.txt": "The Sicilian Defence is a chess opening that begins with the moves 1.e4 c5. It is the most popular response to the king's pawn "
    "opening, because Black fights for the centre from the side and gets an unbalanced game with chances to win.",
    "rook.txt": "A king and rook can always force checkmate against a lone king. The rook cuts the enemy king off along a rank or a file, and "
    "the attacking king approaches until the defending king is pushed to the edge of the board and mated.",
}


def test_synth_writes_questions_eval_can_score(indexed_store, tmp_path):
    store = indexed_store(PAGES, chunk_size=128, chunk_overlap=0)
    out = tmp_path / "synth.jsonl"
    result = ragbatch_cli("synth", "--store", store, "--n", "4", "--out", out, "--json", "--max-model-len", "2048")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    # The packaged 135M model often copies its passage: those are dropped and counted.
    assert report["written"] == len(lines) >= 1 and report["chunks"] == 4
    assert report["written"] + report["unparsed"] + report["duplicates"] + report["copied"] == report["chunks"]
    assert len({line["question"] for line in lines}) == len(lines) and len({line["id"] for line in lines}) == len(lines)
    for line in lines:
        assert set(line) == {"id", "question", "answer", "source", "chunk_id"}
        assert line["source"] in PAGES and 10 <= len(line["question"]) <= 200 and 10 <= len(line["answer"]) <= 300
    again = ragbatch_cli("synth", "--store", store, "--n", "4", "--out", out)
    assert again.returncode == 1 and "already exists" in again.stderr
    scored = ragbatch.evaluate(str(out), store, ks=[1, 4])
    assert scored.summary["questions"] == len(lines) and scored.summary["missing_sources"] == 0


def test_synth_on_ray_replicas_writes_what_the_local_engine_writes(indexed_store, tmp_path):
    """--executor ray: the prompts built here, generated on a vLLM replica of a local Ray
    (generation.ray_generator.RayGenerator): at temperature 0 the same lines, but for
    float noise (measured: equal files in one run, one answer's tail in another)."""
    store = indexed_store(PAGES, chunk_size=128, chunk_overlap=0)
    written = {}
    for executor in ("local", "ray"):
        out = tmp_path / f"{executor}.jsonl"
        done = ragbatch_cli("synth", "--store", store, "--n", "4", "--out", out, "--json", "--max-model-len", "2048", "--executor", executor)
        assert done.returncode == 0, done.stderr[-3000:]
        written[executor] = out.read_text()
    # The same prompts in one batch; the replica's engine is another process, whose bf16
    # sums may round differently: the lines are to be nearly all the same.
    local, ray = written["local"].splitlines(), written["ray"].splitlines()
    assert ray and abs(len(ray) - len(local)) <= 1
    assert sum(line in local for line in ray) >= len(ray) - 1, (local, ray)
