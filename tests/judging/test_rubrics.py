"""The judge's requests and the reading of its verdicts: schemas, sentences, parsing,
expected scores, and prompts cut to the judge's window (with the packaged model's tokenizer)."""

import json
import math
from types import SimpleNamespace

import pytest

from ragbatch.generation.prompting import PromptTooLong
from ragbatch.judging import rubrics
from ragbatch.judging.inputs import Judged
from ragbatch.judging.prompts import CUT_MARKER, requests_for
from ragbatch.judging.verdicts import Unparsed, expected_score, parse_score, parse_sentences, parse_supported


def test_the_score_comes_before_a_reason_whose_length_the_grammar_bounds(llm_folder):
    """Checked with xgrammar itself, the grammar vLLM compiles the schema with: a reason one
    character over the bound is refused, so a verdict cannot run on to max_tokens."""
    import xgrammar
    from transformers import AutoTokenizer

    ask = rubrics.quality("Where is Etna?", "Sicily", "In Sicily.")
    schema = ask.constraint["json"]
    assert list(schema["properties"]) == ["score", "reason"]
    compiler = xgrammar.GrammarCompiler(xgrammar.TokenizerInfo.from_huggingface(AutoTokenizer.from_pretrained(llm_folder)))
    grammar = compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=(",", ":"))

    def accepted(text: str) -> bool:
        return xgrammar.GrammarMatcher(grammar).accept_string(text)

    assert accepted('{"score":4,"reason":"' + "a" * rubrics.REASON_CHARS + '"}')
    assert not accepted('{"score":4,"reason":"' + "a" * (rubrics.REASON_CHARS + 1))
    assert not accepted('{"reason":"first","score":4}') and not accepted('{"score":7,')
    assert not accepted('{"score":4,\n')  # no free whitespace to loop in
    assert ask.max_tokens >= rubrics.REASON_CHARS + len('{"score":4,"reason":""}')


def test_groundedness_asks_exactly_one_boolean_per_sentence():
    ask = rubrics.groundedness(["Etna is in Sicily."], ["Etna is in Sicily.", "It is 3 km high."])
    schema = ask.constraint["json"]
    assert schema["required"] == ["s1", "s2"] and not schema["additionalProperties"]
    assert "s1: Etna is in Sicily.\ns2: It is 3 km high." in ask.user and "[1] Etna is in Sicily." in ask.user


def test_sentences_split_at_ends_and_list_items_and_keep_numbers_whole():
    text = "Ray 2.5 is fast. It runs tasks!\n- on CPUs\n2. on GPUs\n\n---\nDone?"
    assert rubrics.split_sentences(text) == ["Ray 2.5 is fast.", "It runs tasks!", "on CPUs", "on GPUs", "Done?"]
    assert len(rubrics.split_sentences(" ".join(f"Claim {i}." for i in range(50)))) == rubrics.MAX_SENTENCES


def test_verdicts_parse_or_say_why_not():
    assert parse_score('{"score":4,"reason":"mostly right"}') == (4, "mostly right")
    assert parse_sentences('{"s1": true, "s2": false}', 2) == [True, False]
    with pytest.raises(Unparsed, match="not valid JSON"):
        parse_score('{"score":4,"reason":"cut off')
    with pytest.raises(Unparsed, match="score of 1-5"):
        parse_score('{"score":7,"reason": ""}')
    with pytest.raises(Unparsed, match="each of 3 sentences"):
        parse_sentences('{"s1": true, "s2": false}', 3)


class DigitTokenizer:
    """Token i decodes to str(i) for 0-9 and to '{' otherwise: enough to find the score."""

    def decode(self, ids):
        return "".join(str(i) if i < 10 else "{" for i in ids)


def test_the_expected_score_weighs_the_scores_the_judge_considered_at_the_score():
    step = {4: SimpleNamespace(logprob=math.log(0.6)), 5: SimpleNamespace(logprob=math.log(0.3)), 11: SimpleNamespace(logprob=math.log(0.1))}
    # `{` then the score 4 then more: the alternatives of the score's step decide, renormalized over 1-5.
    assert expected_score([11, 4, 11], [{11: SimpleNamespace(logprob=0.0)}, step, {}], DigitTokenizer()) == pytest.approx((4 * 0.6 + 5 * 0.3) / 0.9)
    assert expected_score([11, 11], [{}, {}], DigitTokenizer()) is None
    assert expected_score([4], None, DigitTokenizer()) is None


@pytest.fixture(scope="module")
def tokenizer(llm_folder):
    from ragbatch.generation.vllm_engine import load_tokenizer

    return load_tokenizer(llm_folder)


def test_a_row_asks_for_what_it_can_be_judged_on(tokenizer):
    row = {"id": "1", "question": "Where is Etna?", "answer": "In Sicily. It erupts often."}
    full = requests_for(0, Judged(row, "Sicily", ["Etna is on Sicily."]), rubrics.ASPECTS, tokenizer, 2048)
    assert [r.ask.aspect for r in full] == ["quality", "relevance", "groundedness"]
    assert full[2].sentences == ["In Sicily.", "It erupts often."]
    assert "Reference answer: Sicily" in full[0].ask.user
    bare = requests_for(0, Judged(row, None, None), rubrics.ASPECTS, tokenizer, 2048)
    assert [r.ask.aspect for r in bare] == ["relevance"]


def test_long_texts_are_cut_until_prompt_and_verdict_fit_the_window(tokenizer):
    row = {"id": "1", "question": "Where is Etna?", "answer": "Etna is in Sicily. " * 400}
    passages = ["Etna is a volcano in Sicily. " * 100 for _ in range(3)]
    made = requests_for(0, Judged(row, "Sicily " * 50, passages), rubrics.ASPECTS, tokenizer, 1024)
    for request in made:
        assert len(request.token_ids) + request.ask.max_tokens <= 1024
    assert CUT_MARKER.strip() in made[0].ask.user  # the answer lost its tail
    assert made[2].ask.user.count("] Etna is a volcano") == 1  # the last passages went first
    with pytest.raises(PromptTooLong):
        requests_for(0, Judged({**row, "question": "Where? " * 300}, None, None), ("relevance",), tokenizer, 400)


def test_the_schemas_are_valid_json_schema_documents():
    for schema in (rubrics.score_schema(), rubrics.sentences_schema(3)):
        assert json.loads(json.dumps(schema)) == schema


def test_a_sentence_that_cites_passages_is_checked_against_those_alone(tokenizer):
    row = {"id": "1", "question": "Where is Etna?", "answer": "Etna is in Sicily [2]. It erupts [1, 3]. Fine [9]."}
    passages = ["Etna erupts often.", "Etna is on Sicily.", "Sicily is an island."]
    made = requests_for(0, Judged(row, None, passages), ("groundedness",), tokenizer, 2048)
    checks = [r for r in made if r.ask.aspect == "citation"]
    assert [r.sentences for r in checks] == [["Etna is in Sicily [2]."], ["It erupts [1, 3]."]]  # [9] points nowhere: not checked
    assert "[2] Etna is on Sicily." in checks[0].ask.user and "Etna erupts" not in checks[0].ask.user
    assert "[1] Etna erupts often." in checks[1].ask.user and "[3] Sicily is an island." in checks[1].ask.user
    assert parse_supported('{"supported":false}') is False
    with pytest.raises(Unparsed):
        parse_supported('{"supported":"yes"}')
