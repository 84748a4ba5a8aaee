"""Generation with the real vLLM (CPU build here) on the packaged SmolLM2: the slow module.

The engine is loaded once per session (`llm_generator` in conftest.py): ~15-25 s on 2 cores.
"""

import pytest

from ragbatch.generation.prompting import build_prompt
from ragbatch.generation.vllm_engine import Generation
from ragbatch.models.weights import DEFAULT_LLM

pytestmark = pytest.mark.slow


# --- generating ------------------------------------------------------------------------


@pytest.fixture
def sent_and_received(llm_generator, monkeypatch):
    """Records what Generator.stream queues in vLLM and the raw outputs the engine returns."""
    calls, outputs = [], []
    real_enqueue, engine = llm_generator._llm.enqueue, llm_generator._llm.llm_engine
    real_step = engine.step

    def spy_enqueue(prompts, params, **kwargs):
        calls.append((prompts, engine.has_unfinished_requests()))
        return real_enqueue(prompts, params, **kwargs)

    def spy_step():
        step_outputs = real_step()
        outputs.extend(out for out in step_outputs if out.finished)
        return step_outputs

    monkeypatch.setattr(llm_generator._llm, "enqueue", spy_enqueue)
    monkeypatch.setattr(engine, "step", spy_step)
    return calls, outputs


def generate(generator, prompts, **settings):
    """Every prompt's Generation, in prompt order, as `ask` gets them (Generator.stream)."""
    results = dict(generator.stream(prompts, **settings))
    return [results[index] for index in range(len(prompts))]


def chat_prompt(generator, question, passages=()):
    return build_prompt(generator.tokenizer, question, list(passages), generator.context_window, 64).token_ids


def test_engine_settings(llm_generator):
    assert llm_generator.context_window == 2048
    assert llm_generator.name == DEFAULT_LLM


def test_one_batched_call_with_exact_token_counts(llm_generator, sent_and_received):
    prompts = [chat_prompt(llm_generator, q) for q in ["What is the capital of France?", "Name a colour.", "Say hello."]]
    results = generate(llm_generator, prompts, max_tokens=8, temperature=0.0, seed=1)

    calls, outputs = sent_and_received
    assert len(calls) == 1  # every prompt queued in one call, before the engine's first step
    ((sent, busy),) = calls
    assert len(sent) == 3 and not busy
    outputs = sorted(outputs, key=lambda out: int(out.request_id))  # vLLM numbers them in order
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
    (result,) = generate(llm_generator, [prompt], max_tokens=2, temperature=0.0, seed=None)
    assert (result.completion_tokens, result.finish_reason) == (2, "length")


def test_answers_from_the_context(llm_generator):
    prompt = chat_prompt(
        llm_generator,
        "What is the capital of Freedonia?",
        ["The capital of Freedonia is Zubrowka."],
    )
    (result,) = generate(llm_generator, [prompt], max_tokens=16, temperature=0.0, seed=0)
    assert "Zubrowka" in result.text


def test_same_seed_same_sample(llm_generator):
    prompt = chat_prompt(llm_generator, "Write one word about the sea.")
    first, second = (generate(llm_generator, [prompt], max_tokens=4, temperature=1.0, seed=7)[0].text for _ in range(2))
    assert first == second


def test_empty_batch(llm_generator):
    assert list(llm_generator.stream([], max_tokens=8, temperature=0.0, seed=0)) == []


def test_stream_yields_each_prompt_once_as_it_finishes(llm_generator):
    prompts = [chat_prompt(llm_generator, q) for q in ["Say yes.", "Count to five.", "Name a fruit."]]
    # The reference: one bare LLM.generate of the same prompts (what ask_bench compares with).
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = SamplingParams(max_tokens=6, temperature=0.0, seed=0)
    batch = llm_generator._llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    streamed = dict(llm_generator.stream(prompts, max_tokens=6, temperature=0.0, seed=0))
    assert sorted(streamed) == [0, 1, 2]
    for index, result in streamed.items():
        assert result.prompt_tokens == len(prompts[index])
        assert result.text == batch[index].outputs[0].text


def test_leaving_a_stream_early_aborts_the_rest(llm_generator):
    prompts = [chat_prompt(llm_generator, q) for q in ("Say yes.", "Tell a long story about owls.")]
    stream = llm_generator.stream(prompts, max_tokens=200, temperature=0.0, seed=0)
    index, first = next(stream)  # "Yes." ends after a few tokens; the story is still going
    assert (index, first.finish_reason) == (0, "stop")
    stream.close()
    assert not llm_generator._llm.llm_engine.has_unfinished_requests()


def test_prompts_built_lazily_join_the_running_batch_and_answer_as_one_generate_does(llm_generator, sent_and_received):
    """A lazy iterable is built on a thread while the engine steps; at least max_num_seqs
    prompts per step are queued, so every step runs what one LLM.generate runs."""
    import time

    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    prompts = [chat_prompt(llm_generator, f"Name a number after {i}.") for i in range(300)]

    def built_slowly():
        for i, ids in enumerate(prompts):
            if i == 270:
                time.sleep(1.0)  # the engine steps meanwhile
            yield ids

    streamed = dict(llm_generator.stream(built_slowly(), max_tokens=4, temperature=0.0, seed=None))
    calls, _ = sent_and_received
    assert len(calls) == 2 and 256 <= len(calls[0][0]) < 300 and calls[1][1]  # the rest joined a running engine
    params = SamplingParams(max_tokens=4, temperature=0.0)
    batch = llm_generator._llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    assert sorted(streamed) == list(range(300))
    assert [streamed[i].token_ids for i in range(300)] == [list(out.outputs[0].token_ids) for out in batch]


def test_a_prompt_that_fails_to_build_stops_the_stream_with_its_error(llm_generator):
    def failing():
        yield chat_prompt(llm_generator, "Say yes.")
        raise ValueError("no prompt for line 2")

    with pytest.raises(ValueError, match="no prompt for line 2"):
        list(llm_generator.stream(failing(), max_tokens=4, temperature=0.0, seed=None))
    assert not llm_generator._llm.llm_engine.has_unfinished_requests()
