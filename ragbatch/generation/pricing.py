"""What tokens cost: USD per million prompt and completion tokens, per model.

Local models cost nothing by default (you pay for the machine, not per token); give
a price to compare against a hosted model. A prices file (JSON or TOML) maps model
names to prices and may set a "default" for models it does not name:

    [models."smollm2-135m-instruct"]
    prompt = 0.0
    completion = 0.0
    [default]
    prompt = 0.15
    completion = 0.60
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ragbatch.errors import ParameterError, RagbatchError


@dataclass(frozen=True)
class Price:
    prompt: float = 0.0  # USD per million tokens
    completion: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt + completion_tokens * self.completion) / 1_000_000


LOCAL = Price(0.0, 0.0)


def load_prices(path: str | Path) -> dict:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
        data = json.loads(text) if file.suffix.lower() == ".json" else _toml(text)
    except OSError as exc:
        raise ParameterError("prices", path, f"cannot read ({exc.strerror})") from None
    except ValueError as exc:
        raise ParameterError("prices", path, f"not valid {'JSON' if file.suffix.lower() == '.json' else 'TOML'} ({exc})") from None
    if not isinstance(data, dict):
        raise ParameterError("prices", path, "expected a table of models")
    return data


def _toml(text: str) -> dict:
    import tomllib

    return tomllib.loads(text)


def price_for(llm: str, table: dict | None = None, prompt: float | None = None, completion: float | None = None) -> Price:
    """Options override the file; the file's entry for the model, then its default."""
    base = LOCAL
    if table:
        entry = table.get("models", {}).get(llm) or table.get("default")
        if entry is not None:
            try:
                base = Price(float(entry.get("prompt", 0.0)), float(entry.get("completion", 0.0)))
            except (TypeError, ValueError, AttributeError):
                raise RagbatchError(f"prices for {llm}: expected numbers for prompt and completion, got {entry!r}") from None
    return Price(base.prompt if prompt is None else prompt, base.completion if completion is None else completion)
