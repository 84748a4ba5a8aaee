"""Generation with the real vLLM (CPU build here) on the packaged SmolLM2: the slow module.

The engine is loaded once per session (`llm_generator` in conftest.py): ~15-25 s on 2 cores.
"""

import json
import threading
import time
from pathlib import Path

import pytest

from ragbatch.errors import RagbatchError
from ragbatch.generation import (
    DEFAULT_LLM,
    SOURCE_STAMP,
    Generation,
    cached_conversion,
    resolve_llm,
)
from ragbatch.prompting import build_prompt

pytestmark = pytest.mark.slow


# --- resolving --llm -------------------------------------------------------------------


def test_packaged_model_is_converted_once_then_reused(llm_folder):
    folder = Path(llm_folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert "quantization_config" not in config  # plain bf16 weights, no GGUF left
    assert list(folder.glob("*.safetensors"))
    tokenizer_config = folder / "tokenizer_config.json"
    assert "im_start" in tokenizer_config.read_text() + _read(folder / "chat_template.jinja")

    started = time.perf_counter()
    assert resolve_llm(None) == resolve_llm(DEFAULT_LLM) == llm_folder
    assert time.perf_counter() - started < 1.0


def _read(path):
    return path.read_text() if path.exists() else ""


def test_conversion_runs_once_even_when_two_callers_race(tmp_path):
    calls = []

    def slow_convert(out):
        calls.append(out)
        time.sleep(0.3)
        (out / "config.json").write_text("{}")

    target = tmp_path / "models" / "m"
    threads = [
        threading.Thread(target=cached_conversion, args=(target, {"v": 1}, slow_convert))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert (target / "config.json").exists()
    assert json.loads((target / SOURCE_STAMP).read_text()) == {"v": 1}
    assert _listing(target.parent) == ["m"]

    # A new source version replaces the folder (and clears what a killed run left);
    # a failed conversion leaves nothing behind.
    (target.parent / ".m.tmp-999-dead").mkdir()
    cached_conversion(target, {"v": 2}, slow_convert)
    assert _listing(target.parent) == ["m"]
    assert len(calls) == 2 and json.loads((target / SOURCE_STAMP).read_text()) == {"v": 2}

    def broken_convert(out):
        (out / "half-written").write_text("x")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError):
        cached_conversion(tmp_path / "models" / "n", {"v": 1}, broken_convert)
    assert _listing(target.parent) == ["m"]  # no temp folder, no "n"


def _listing(folder):
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_local_folder_is_used_as_is(llm_folder):
    assert resolve_llm(llm_folder) == llm_folder


@pytest.mark.parametrize("name", ["nobody/no-such-model", "./no/such/folder", "not a valid id"])
def test_unknown_llm_is_one_clear_line(name):
    with pytest.raises(RagbatchError) as error:
        resolve_llm(name)
    message = str(error.value)
    assert message.startswith(f"--llm {name}: ")
    assert "\n" not in message


# --- generating ------------------------------------------------------------------------


@pytest.fixture
def sent_and_received(llm_generator, monkeypatch):
    """Records what Generator.generate passes to vLLM and the raw outputs it gets back."""
    calls = []
    real_generate = llm_generator._llm.generate

    def spy(prompts, params, **kwargs):
        outputs = real_generate(prompts, params, **kwargs)
        calls.append((prompts, outputs))
        return outputs

    monkeypatch.setattr(llm_generator._llm, "generate", spy)
    return calls


def chat_prompt(generator, question, passages=()):
    return build_prompt(
        generator.tokenizer, question, list(passages), generator.context_window, 64
    ).token_ids


def test_engine_settings(llm_generator):
    assert llm_generator.context_window == 2048
    assert llm_generator.name == DEFAULT_LLM


def test_one_batched_call_with_exact_token_counts(llm_generator, sent_and_received):
    prompts = [
        chat_prompt(llm_generator, q)
        for q in ["What is the capital of France?", "Name a colour.", "Say hello."]
    ]
    results = llm_generator.generate(prompts, max_tokens=8, temperature=0.0, seed=1)

    assert len(sent_and_received) == 1  # every prompt in one LLM.generate call
    (sent, outputs), = sent_and_received
    assert len(results) == len(outputs) == 3
    for ids, result, output in zip(prompts, results, outputs):
        assert isinstance(result, Generation)
        assert result.text.strip()
        assert list(output.prompt_token_ids) == ids  # the tokens we counted are the ones sent
        assert result.prompt_tokens == len(ids)
        assert result.completion_tokens == len(output.outputs[0].token_ids)
        assert 1 <= result.completion_tokens <= 8
        assert result.finish_reason in ("stop", "length")


def test_max_tokens_reached_is_length(llm_generator):
    prompt = chat_prompt(llm_generator, "Tell me a long story about a dragon.")
    (result,) = llm_generator.generate([prompt], max_tokens=2, temperature=0.0, seed=None)
    assert (result.completion_tokens, result.finish_reason) == (2, "length")


def test_answers_from_the_context(llm_generator):
    prompt = chat_prompt(
        llm_generator,
        "What is the capital of Freedonia?",
        ["The capital of Freedonia is Zubrowka."],
    )
    (result,) = llm_generator.generate([prompt], max_tokens=16, temperature=0.0, seed=0)
    assert "Zubrowka" in result.text


def test_same_seed_same_sample(llm_generator):
    prompt = chat_prompt(llm_generator, "Write one word about the sea.")
    first, second = (
        llm_generator.generate([prompt], max_tokens=4, temperature=1.0, seed=7)[0].text
        for _ in range(2)
    )
    assert first == second


def test_empty_batch(llm_generator):
    assert llm_generator.generate([], max_tokens=8, temperature=0.0, seed=0) == []


def test_stream_yields_each_prompt_once_as_it_finishes(llm_generator):
    prompts = [
        chat_prompt(llm_generator, q) for q in ["Say yes.", "Count to five.", "Name a fruit."]
    ]
    batch = llm_generator.generate(prompts, max_tokens=6, temperature=0.0, seed=0)
    streamed = dict(llm_generator.stream(prompts, max_tokens=6, temperature=0.0, seed=0))
    assert sorted(streamed) == [0, 1, 2]
    for index, result in streamed.items():
        assert result.prompt_tokens == len(prompts[index])
        assert result.text == batch[index].text


def test_leaving_a_stream_early_aborts_the_rest(llm_generator):
    prompts = [chat_prompt(llm_generator, q) for q in ("Say yes.", "Tell a long story about owls.")]
    stream = llm_generator.stream(prompts, max_tokens=200, temperature=0.0, seed=0)
    index, first = next(stream)  # "Yes." ends after a few tokens; the story is still going
    assert (index, first.finish_reason) == (0, "stop")
    stream.close()
    assert not llm_generator._llm.llm_engine.has_unfinished_requests()
