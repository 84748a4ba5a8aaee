"""Which chunks synthetic questions come from, and which questions are dropped as copies."""

from ragbatch.synthesis.pipeline import QUESTION_CHARS, copies, schema
from ragbatch.synthesis.sampling import MIN_WORDS, sample, usable

PROSE = "The steamer left Suez on Wednesday and reached Bombay two days early, so Fogg won back the time lost in the storm at sea near the coast of Arabia and the crew rested."


def record(i, page, text=PROSE):
    return (f"c{i:03d}", f"({i}) {text}", {"source": page})


def test_near_empty_and_non_prose_chunks_are_not_asked_about():
    assert usable(PROSE) and len(PROSE.split()) >= MIN_WORDS
    assert not usable("Home | Docs | API")
    assert not usable("0x1f 0x2e 0x3d " * 20)


def test_the_sample_spreads_over_pages_before_taking_a_second_chunk_of_any():
    records = [record(i, "big.html#s") for i in range(40)] + [record(100 + i, f"small{i}.txt") for i in range(4)]
    picked = sample(records, 5, seed=1)
    assert len({c.source.split("#")[0] for c in picked}) == 5  # one of each page
    assert sample(records, 5, seed=1) == picked and sample(records, 5, seed=2) != picked  # seeded
    assert len(sample(records, 100)) == 44  # never more than there are


def test_copied_texts_and_templates_are_left_out():
    records = [record(i, f"page{i}.html") for i in range(10)]
    template = [(f"t{i}", "Copyright notice. " + PROSE + f" {i}", {"source": f"page{i}.html#footer"}) for i in range(10)]
    picked = sample(records + template, 100, copied={"c000"})
    ids = {c.chunk_id for c in picked}
    assert "c000" not in ids and not any(i.startswith("t") for i in ids) and len(ids) == 9


def test_a_question_that_copies_its_chunk_is_caught():
    assert copies("The steamer left Suez on Wednesday?", PROSE)
    assert copies("Why did the crew rested after Fogg won back the time lost in the storm at sea?", PROSE)
    assert not copies("When did Fogg's ship arrive in India?", PROSE)


def test_question_and_answer_lengths_are_bounded_by_the_grammar(llm_folder):
    """Checked with xgrammar, which vLLM compiles the schema with."""
    import json

    import xgrammar
    from transformers import AutoTokenizer

    assert list(schema()["properties"]) == ["question", "answer"]
    compiler = xgrammar.GrammarCompiler(xgrammar.TokenizerInfo.from_huggingface(AutoTokenizer.from_pretrained(llm_folder)))
    grammar = compiler.compile_json_schema(json.dumps(schema()), any_whitespace=False, separators=(",", ":"))

    def accepted(text: str) -> bool:
        return xgrammar.GrammarMatcher(grammar).accept_string(text)

    assert accepted('{"question":"' + "q" * QUESTION_CHARS + '","answer":"' + "a" * 10 + '"}')
    assert not accepted('{"question":"' + "q" * (QUESTION_CHARS + 1))
    assert not accepted('{"question":"short",')  # under 10 characters
