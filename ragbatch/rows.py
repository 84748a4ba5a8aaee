"""One answer row, the same for `ask` (a Parquet row) and `serve` (a JSON object).

`base_row` holds what retrieval decided (sources, chunk ids, scores); `finish_row` adds
what generation returned: the answer, exact token counts from vLLM, the cost from the
price table, and optional tiktoken counts.
"""

from __future__ import annotations


def base_row(question: dict, hits, llm: str, embedder: str, schema=None, count_encoding: str | None = None) -> dict:
    """`schema` types the question's carried-through fields (answers.answer_schema); a
    question with none (serve's) needs none."""
    from ragbatch.answers import carry_values

    return {
        "id": question["id"],
        "question": question["question"],
        "answer": None,
        "sources": [h.cited for h in hits],
        "chunk_ids": [h.chunk_id for h in hits],
        "scores": [round(h.score, 6) for h in hits],
        "passages_used": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": 0.0,
        "llm": llm,
        "embedder": embedder,
        "finish_reason": None,
        "error": None,
        **(carry_values(question, schema, count_encoding) if schema is not None else {}),
    }


def finish_row(row: dict, generation, price, counter=None, count_encoding: str | None = None, tokenizer=None, prompt_ids=None) -> dict:
    """Fill `row` from a finished Generation; `counter` (a tiktoken encoding) adds the
    `prompt_tokens_<encoding>` and `completion_tokens_<encoding>` columns."""
    row.update(
        answer=generation.text.strip(),
        prompt_tokens=generation.prompt_tokens,
        completion_tokens=generation.completion_tokens,
        cost_usd=price.cost(generation.prompt_tokens, generation.completion_tokens),
        finish_reason=generation.finish_reason,
    )
    if counter is not None:
        from ragbatch.tokencount import count

        row[f"prompt_tokens_{count_encoding}"] = count(counter, tokenizer.decode(prompt_ids))
        row[f"completion_tokens_{count_encoding}"] = count(counter, row["answer"])
    return row


def ranked_sources(hits) -> list[dict]:
    """`search`'s JSON results (and serve's /search): rank, source as cited, chunk id, score, text."""
    return [{"rank": rank, "source": h.cited, "chunk_id": h.chunk_id, "score": round(h.score, 6), "text": h.text} for rank, h in enumerate(hits, start=1)]
