"""Prompt building within the token budget, with the packaged SmolLM2 tokenizer (no vLLM)."""

import copy

import pytest

from ragbatch.errors import RagbatchError
from ragbatch.generation.prompting import (
    DEFAULT_SYSTEM_PROMPT,
    TRUNCATION_MARKER,
    PromptTooLong,
    build_prompt,
)

PASSAGES = [
    "Alpha passage: the lighthouse at Varn was built in 1821 by the harbour guild.",
    "Beta passage: its lamp burned whale oil until 1890, then paraffin.",
    "Gamma passage: the keeper's cottage became a museum in 1974.",
    "Delta passage: storms in 1953 destroyed the old pier beside it.",
]
QUESTION = "When was the lighthouse at Varn built?"


@pytest.fixture(scope="module")
def tokenizer(llm_folder):
    # The same tokenizer AutoTokenizer gives, without importing transformers' model zoo (~10 s).
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(llm_folder)


def decoded(tokenizer, prompt):
    return tokenizer.decode(prompt.token_ids)


def test_all_passages_fit(tokenizer):
    prompt = build_prompt(tokenizer, QUESTION, PASSAGES, context_window=2048, max_tokens=128)
    assert prompt.used == len(PASSAGES)
    assert not prompt.truncated
    text = decoded(tokenizer, prompt)
    positions = [text.index(f"[{i}] {p}") for i, p in enumerate(PASSAGES, 1)]
    assert positions == sorted(positions)
    assert text.index(f"Question: {QUESTION}") > positions[-1]


def test_chat_template_is_applied(tokenizer):
    prompt = build_prompt(tokenizer, QUESTION, PASSAGES, context_window=2048, max_tokens=128)
    text = decoded(tokenizer, prompt)
    assert text.startswith(f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert prompt.token_ids.count(im_start) == 3  # system, user, assistant


def test_token_ids_equal_the_templates_own_tokenization(tokenizer):
    prompt = build_prompt(tokenizer, QUESTION, PASSAGES[:2], context_window=2048, max_tokens=128)
    user = "Context passages:\n" + "".join(f"[{i}] {p}\n\n" for i, p in enumerate(PASSAGES[:2], 1))
    messages = [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": user + f"Question: {QUESTION}"},
    ]
    expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if not isinstance(expected, list):  # transformers 5 returns a BatchEncoding
        expected = expected["input_ids"]
    assert prompt.token_ids == list(expected)


def prompt_lengths(tokenizer):
    """Prompt length with the top k passages, k = 0..len(PASSAGES)."""
    return [len(build_prompt(tokenizer, QUESTION, PASSAGES[:k], 4096, 1).token_ids) for k in range(len(PASSAGES) + 1)]


def test_tight_budget_drops_the_lowest_ranked_passages_whole(tokenizer):
    lengths = prompt_lengths(tokenizer)
    max_tokens = 100
    for budget, expected_used in [
        (lengths[2], 2),  # exactly two passages' worth
        (lengths[3] - 1, 2),  # one token short of three
        (lengths[1], 1),
    ]:
        prompt = build_prompt(tokenizer, QUESTION, PASSAGES, budget + max_tokens, max_tokens)
        assert prompt.used == expected_used
        assert len(prompt.token_ids) == lengths[expected_used] <= budget
        text = decoded(tokenizer, prompt)
        assert all(p in text for p in PASSAGES[:expected_used])
        assert not any(p.split(":")[0] in text for p in PASSAGES[expected_used:])


def test_top_passage_too_long_is_cut_at_a_word_boundary_with_a_marker(tokenizer):
    long_passage = " ".join(f"word{i}" for i in range(600))
    lengths = prompt_lengths(tokenizer)
    budget = lengths[0] + 60
    prompt = build_prompt(tokenizer, QUESTION, [long_passage, PASSAGES[0]], budget + 50, 50)
    assert (prompt.used, prompt.truncated) == (1, True)
    assert len(prompt.token_ids) <= budget
    text = decoded(tokenizer, prompt)
    kept = text.split("[1] ", 1)[1].split(TRUNCATION_MARKER, 1)[0]
    assert long_passage.startswith(kept) and long_passage[len(kept)] == " "
    assert len(kept.split()) > 10  # it filled the room, not just a word
    # One more word would not have fitted.
    next_word = f" word{len(kept.split())}"
    longer = long_passage[: len(kept) + len(next_word)] + TRUNCATION_MARKER
    assert len(build_prompt(tokenizer, QUESTION, [longer], 4096, 1).token_ids) > budget


def test_no_room_for_any_of_the_top_passage_gives_no_passages(tokenizer):
    lengths = prompt_lengths(tokenizer)
    prompt = build_prompt(tokenizer, QUESTION, ["x" * 400], lengths[0] + 10, 10)
    assert (prompt.used, prompt.truncated) == (0, False)
    assert len(prompt.token_ids) == lengths[0]


def test_question_too_long_raises(tokenizer):
    question = "why " * 300
    with pytest.raises(PromptTooLong, match="question and system prompt take"):
        build_prompt(tokenizer, question, PASSAGES, context_window=256, max_tokens=64)


def test_max_tokens_must_leave_room(tokenizer):
    with pytest.raises(RagbatchError, match="no room"):
        build_prompt(tokenizer, QUESTION, PASSAGES, context_window=256, max_tokens=256)


def test_no_passages(tokenizer):
    prompt = build_prompt(tokenizer, QUESTION, [], context_window=2048, max_tokens=64)
    assert prompt.used == 0
    assert "Context passages" not in decoded(tokenizer, prompt)


def test_plain_layout_without_a_chat_template(tokenizer):
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    prompt = build_prompt(plain, QUESTION, PASSAGES, context_window=2048, max_tokens=64)
    text = decoded(plain, prompt)
    assert prompt.used == len(PASSAGES)
    assert "<|im_start|>" not in text
    assert text.startswith(DEFAULT_SYSTEM_PROMPT)
    assert text.endswith(f"Question: {QUESTION}\nAnswer:")


def test_citations_are_the_sources_the_answer_numbers_in_the_order_first_cited():
    from ragbatch.generation.rows import citations

    sources = ["a.txt#L1-L2", "b.html#x", "c.md"]
    assert citations("Zubrowka [2]. It is on the Vel [1, 2]; see also [1-3].", sources) == (["b.html#x", "a.txt#L1-L2", "c.md"], 0)
    # A marker past the passages the prompt held points nowhere: dropped and counted.
    assert citations("Firefly [4] was president [1] in [x] 1933 [0].", sources) == (["a.txt#L1-L2"], 2)
    assert citations("No markers here.", sources) == ([], 0)
