"""tiktoken encodings offline, from the BPE files bundled in bpe-openai."""

import hashlib
import socket

import pytest

from ragbatch.errors import RagbatchError
from ragbatch.generation import tokencount


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """A fresh tiktoken cache, offline hub settings, and any socket use fails the test."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError("tried to use the network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    # get_encoding caches Encoding objects per process: make it load the files again.
    import tiktoken.registry

    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    return tmp_path / "tiktoken"


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("cl100k_base", "hello world", 2),
        ("cl100k_base", "tiktoken is great!", 6),
        ("o200k_base", "hello world", 2),
    ],
)
def test_known_counts_offline(no_network, name, text, expected):
    enc = tokencount.encoding(name)
    assert enc.name == name
    assert tokencount.count(enc, text) == expected


def test_files_land_under_tiktokens_cache_key(no_network):
    tokencount.encoding("cl100k_base")
    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    cached = no_network / hashlib.sha1(url.encode()).hexdigest()
    digest = hashlib.sha256(cached.read_bytes()).hexdigest()
    assert digest == "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"


def test_special_token_text_counts_as_plain_text(no_network):
    enc = tokencount.encoding("cl100k_base")
    assert tokencount.count(enc, "<|endoftext|>") > 1


def test_unknown_encoding_lists_the_available_ones():
    with pytest.raises(RagbatchError) as error:
        tokencount.encoding("p50k_base")
    message = str(error.value)
    assert "\n" not in message
    assert "cl100k_base" in message and "o200k_base" in message
