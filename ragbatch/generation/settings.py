"""The generation settings `ask` and `serve` share, end to end: one options type, one
prepare step. Everything that can fail on the user's input is checked here, before a
model loads: the prompt file, the prices, the tiktoken encoding, the model, the device,
the engine arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ragbatch.errors import Note, ParameterError, RagbatchError
from ragbatch.generation.pricing import Price, load_prices, price_for
from ragbatch.generation.prompting import DEFAULT_SYSTEM_PROMPT
from ragbatch.generation.tokencount import encoding
from ragbatch.generation.vllm_engine import engine_settings
from ragbatch.models.devices import pick_device
from ragbatch.models.weights import DEFAULT_LLM, resolve_llm

# The LLM on a GPU when none is named: an open (Apache-2.0, not gated) 7B instruct model
# whose bf16 weights (~15 GB) leave a 24 GB card room for its KV cache at 8k tokens.
GPU_LLM = "Qwen/Qwen2.5-7B-Instruct"


@dataclass
class GenerationOptions:
    llm: str | None = None  # packaged name, local folder or Hugging Face id [default: the packaged model]
    device: str = "auto"
    seed: int | None = None  # a per-request sampling seed; None: none (vLLM's engine seed, 0, still repeats runs)
    system_prompt: str | None = None
    prompt_file: Path | None = None  # the system prompt, read from a file
    count_tokens: str | None = None  # a tiktoken encoding to count prompts and answers in
    prices: Path | None = None  # JSON or TOML table of USD per million tokens
    price_prompt: float | None = None
    price_completion: float | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int | None = None
    vllm_args: dict = field(default_factory=dict)  # any other vLLM engine argument

    def __post_init__(self) -> None:
        if self.system_prompt and self.prompt_file:
            raise ParameterError("system_prompt", None, "give it or {prompt_file}, not both", refers=("prompt_file",))


@dataclass(frozen=True)
class GenerationInputs:
    """What the user's files say, read before anything else is done."""

    system_prompt: str
    price_table: dict | None
    counter: object  # a tiktoken Encoding, or None


@dataclass(frozen=True)
class GenerationSetup:
    """Everything an engine and the answer rows need, resolved."""

    options: GenerationOptions
    inputs: GenerationInputs
    llm_name: str
    llm_path: str
    device: str  # "cpu" or "cuda"
    engine: dict  # the user's engine arguments, checked
    price: Price

    @property
    def system_prompt(self) -> str:
        return self.inputs.system_prompt


def with_default_llm(options: GenerationOptions, notify=lambda line: None) -> GenerationOptions:
    """The options with their LLM named: the one given; else, where the device resolves to
    cuda, GPU_LLM if it can be had (the Hugging Face cache, else the hub), or the packaged
    model with a `notice:` saying why; on a CPU the packaged model. The rule of a new
    store's embedder (models/embedder.py)."""
    if options.llm:
        return options
    if pick_device(options.device) != "cuda":
        return replace(options, llm=DEFAULT_LLM)
    try:
        resolve_llm(GPU_LLM)
    except RagbatchError as exc:
        notify(Note(f"notice: using the packaged {DEFAULT_LLM}, because {exc.message}", exc.refers))
        return replace(options, llm=DEFAULT_LLM)
    return replace(options, llm=GPU_LLM)


def read_inputs(options: GenerationOptions) -> GenerationInputs:
    """The system prompt, the prices and the token counter: quick, and checked first."""
    counter = encoding(options.count_tokens) if options.count_tokens else None  # fails now if it cannot be loaded offline
    table = load_prices(options.prices) if options.prices else None
    return GenerationInputs(system_prompt_of(options), table, counter)


def prepare(options: GenerationOptions, inputs: GenerationInputs | None = None) -> GenerationSetup:
    """Resolve the model (converting the packaged one once), the device and the engine
    arguments; each fails with one line before any model loads."""
    inputs = inputs or read_inputs(options)
    llm_name = options.llm or DEFAULT_LLM
    return GenerationSetup(
        options=options,
        inputs=inputs,
        llm_name=llm_name,
        llm_path=resolve_llm(options.llm),  # fails fast when the model is not here
        device=pick_device(options.device),  # and when the device is not
        engine=engine_settings(options.gpu_memory_utilization, options.tensor_parallel_size, options.vllm_args),  # or a setting
        price=price_for(llm_name, inputs.price_table, options.price_prompt, options.price_completion),
    )


def system_prompt_of(options: GenerationOptions) -> str:
    if options.prompt_file:
        try:
            return Path(options.prompt_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ParameterError("prompt_file", options.prompt_file, f"cannot read ({exc})") from None
    return options.system_prompt or DEFAULT_SYSTEM_PROMPT
