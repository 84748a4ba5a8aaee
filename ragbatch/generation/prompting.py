"""Build one generation prompt from a question and its ranked passages, within a token budget.

Layout. The system prompt goes in the system message; the user message holds the
numbered passages, in rank order, then the question:

    Context passages:
    [1] first passage

    [2] second passage

    Question: ...

The tokenizer's chat template renders the messages (a template that refuses a system
role gets the system prompt at the top of the user message instead). A tokenizer
without a template gets the same text laid out plainly, ending with "Answer:".

Budget. The prompt has at most `context_window - max_tokens` tokens, counted with the
generator's own tokenizer, so the answer always has room for `max_tokens`. Passages are
kept whole; the lowest-ranked ones are dropped first. If even the top passage alone does
not fit, it is cut at a word boundary and ends with " [...]" (and `Prompt.truncated` is
set), because part of the best passage beats no context at all. If the question and the
system prompt alone do not fit, `PromptTooLong` is raised.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from ragbatch.errors import ParameterError

DEFAULT_SYSTEM_PROMPT = (
    "Answer the question using only the numbered context passages. "
    "Cite the passages you use by number, like [1]. "
    'If the passages do not contain the answer, say "I don\'t know". '
    "Be brief."
)

CONTEXT_HEADER = "Context passages:\n"
TRUNCATION_MARKER = " [...]"


@dataclass
class Prompt:
    token_ids: list[int]
    used: int  # passages included: the top `used` of the ranked list
    truncated: bool = False  # the one passage included was cut to fit


class PromptTooLong(Exception):
    """The question and system prompt alone exceed the token budget."""

    def __init__(self, message: str, tokens: int = 0, budget: int = 0):
        super().__init__(message)
        self.tokens = tokens  # the question and system prompt, rendered
        self.budget = budget  # what the prompt may take: context window - max_tokens


def build_prompt(
    tokenizer,
    question: str,
    passages: list[str],
    context_window: int,
    max_tokens: int,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
) -> Prompt:
    budget = context_window - max_tokens
    if budget <= 0:
        raise ParameterError("max_tokens", max_tokens, f"leaves no room for a prompt in the model's context window ({context_window} tokens)")

    def render(kept: list[str]) -> list[int]:
        return _render(tokenizer, system_prompt, question, kept)

    bare = render([])
    if len(bare) > budget:
        raise PromptTooLong(
            f"the question and system prompt take {len(bare)} tokens, more than the "
            f"{budget} available (context window {context_window} - max_tokens {max_tokens})",
            tokens=len(bare),
            budget=budget,
        )
    if not passages:
        return Prompt(bare, 0)

    # Estimate from per-piece counts (one batched tokenizer call), then render and verify:
    # BPE merges differ across piece boundaries (a "\n\n" before "[2]" is two tokens, not
    # one), so the estimate is off by about a token per passage.
    pieces = [_numbered(i, p) for i, p in enumerate(passages, 1)]
    header_length, *piece_lengths = map(len, _encode_batch(tokenizer, [CONTEXT_HEADER] + pieces))
    estimates = [len(bare)]  # estimates[k]: prompt length with the top k passages
    running = len(bare) + header_length
    for length in piece_lengths:
        running += length
        estimates.append(running)

    used = bisect.bisect_right(estimates, budget) - 1  # estimates only grow
    ids = render(passages[:used]) if used else bare
    while len(ids) > budget:
        used -= 1
        ids = render(passages[:used])
    # Corrected by what the last render showed, one more passage may still fit.
    while used < len(passages) and estimates[used + 1] + len(ids) - estimates[used] <= budget:
        more = render(passages[: used + 1])
        if len(more) > budget:
            break
        used, ids = used + 1, more

    if used == 0:
        return _truncated_top_passage(render, passages[0], budget, bare)
    return Prompt(ids, used)


def _truncated_top_passage(render, passage: str, budget: int, bare: list[int]) -> Prompt:
    """The longest word-boundary prefix of `passage` (plus the marker) that fits, or none."""
    word_ends = [m.end() for m in re.finditer(r"\S+", passage)]

    def fits(n_words: int) -> list[int] | None:
        ids = render([passage[: word_ends[n_words - 1]] + TRUNCATION_MARKER])
        return ids if len(ids) <= budget else None

    # Binary search for the most words that fit: a handful of renders, and only
    # for the rare question whose single best passage overflows the window.
    best, low, high = None, 1, len(word_ends)
    while low <= high:
        middle = (low + high) // 2
        ids = fits(middle)
        if ids is None:
            high = middle - 1
        else:
            best, low = ids, middle + 1
    if best is None:
        return Prompt(bare, 0)
    return Prompt(best, 1, truncated=True)


def _numbered(number: int, passage: str) -> str:
    return f"[{number}] {passage.strip()}\n\n"


def _user_message(question: str, passages: list[str]) -> str:
    context = ""
    if passages:
        context = CONTEXT_HEADER + "".join(_numbered(i, p) for i, p in enumerate(passages, 1))
    return f"{context}Question: {question.strip()}"


def _render(tokenizer, system_prompt: str, question: str, passages: list[str]) -> list[int]:
    return render_chat(tokenizer, system_prompt, _user_message(question, passages))


def render_chat(tokenizer, system_prompt: str, user: str, lead: str = "Answer:") -> list[int]:
    """The token ids of a system and a user message as the model expects them: through its
    chat template, or (no template) laid out plainly and ending with `lead`."""
    if getattr(tokenizer, "chat_template", None):
        text = _chat_text(tokenizer, system_prompt, user)
        # The rendered template already holds its special tokens as text.
        return _encode(tokenizer, text, add_special_tokens=False)
    text = f"{system_prompt}\n\n{user}\n{lead}" if system_prompt else f"{user}\n{lead}"
    return _encode(tokenizer, text, add_special_tokens=True)


def _chat_text(tokenizer, system_prompt: str, user: str) -> str:
    messages = [{"role": "user", "content": user}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    try:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception:
        if not system_prompt:
            raise
        # Some templates (Gemma's, for one) refuse a system role.
        merged = [{"role": "user", "content": f"{system_prompt}\n\n{user}"}]
        return tokenizer.apply_chat_template(merged, add_generation_prompt=True, tokenize=False)


def _encode(tokenizer, text: str, add_special_tokens: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


def _encode_batch(tokenizer, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"]
