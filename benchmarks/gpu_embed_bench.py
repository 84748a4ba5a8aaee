"""Embedding speed of an instructor-large-shaped encoder, on a GPU or the CPU.

What `ragbatch index` embeds: `indexed_text` (context line + text) of the chunks of
corpora/around.txt and, where ../shared/eval is present, the squad-dev and Ray-docs
corpora, chunked as `index` chunks them for this model; each distinct text once (a store
embeds a repeated text once too), at least 5,000 on a GPU. The encoder is a T5-large of
random weights laid out like hkunlp/instructor-large (encoder_shapes.py; device machines
cannot download the real one, and its speed is the same). Two ways, in the same run:

- ragbatch's Embedder at `ragbatch index`'s default batch size, fed as the local
  executor feeds it (buffers sorted by length, blocks of ENCODE_BLOCK), bf16 where the
  GPU has it;
- the seed notebook's way: INSTRUCTOR-style float32, batch 32, texts in input order.

Each is warmed up on one full block, then timed `--runs` times (3) over every text; the
median is reported, with the spread. Prints ms/vector, ms per 256 tokens, and on a GPU
the share of its dense bf16 peak: 2 FLOP per non-embedding parameter per real token (the
token embedding and T5's relative-position table are lookups, not matmuls; attention's
own score matmuls, ~4 % more at 256 tokens, are left out, so the share is a floor).

    python benchmarks/gpu_embed_bench.py [--limit N] [--runs 3] [--layers 24] [--peak-tflops F]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED_EVAL = ROOT.parent / "shared" / "eval"
CORPORA = [ROOT / "corpora" / "around.txt", *(SHARED_EVAL / name / "corpus" for name in ("squad-dev", "raydocs-dev", "raydocs-real"))]
MIN_TEXTS = 5000
# Dense bf16 tensor peaks (TFLOP/s, FP32 accumulate), by what torch.cuda.get_device_name()
# contains; the first match wins, so the longer names come first (A100 before A10, L40S
# before L4). --peak-tflops for any other GPU.
BF16_PEAKS = [
    (("H200", "NVL"), 835.0),
    (("H200",), 989.4),  # SXM
    (("H100", "PCIe"), 756.5),
    (("H100", "NVL"), 835.5),
    (("H100",), 989.4),  # SXM ("NVIDIA H100 80GB HBM3")
    (("A100",), 312.0),
    (("A10G",), 70.0),  # AWS's A10G: half the A10's tensor rate with FP32 accumulate
    (("L40S",), 362.0),
    (("L40",), 181.0),
    (("L4",), 121.0),
    (("A10",), 125.0),
]


def peak_tflops(device_name: str) -> float | None:
    for parts, peak in BF16_PEAKS:
        if all(part in device_name for part in parts):
            return peak
    return None


def indexed_texts(folder: Path, limit: int | None) -> list[str]:
    """The distinct texts `index` would embed for these corpora with this model, in input order."""
    from ragbatch.ingest import readers
    from ragbatch.ingest.chunking import Chunker
    from ragbatch.ingest.pipeline import IndexOptions, settle_settings
    from ragbatch.store.records import indexed_text

    _, info, params = settle_settings(IndexOptions(paths=[], store=Path(folder), embedder=str(folder)), None, [])
    chunker = Chunker(info.tokenizer_json, params)
    seen: dict[str, None] = {}
    for file in readers.discover([str(p) for p in CORPORA if p.exists()]).files:
        for chunk in chunker.chunk_file(readers.read_file(file)):
            seen.setdefault(indexed_text(chunk))
            if limit and len(seen) >= limit:
                return list(seen)
    return list(seen)


def executor_order(texts: list[str]) -> list[list[str]]:
    """The blocks the local executor hands the Embedder: buffers of BUFFER_BLOCKS blocks,
    each sorted longest first, cut into ENCODE_BLOCK texts."""
    from ragbatch.ingest.local_executor import BUFFER_BLOCKS, ENCODE_BLOCK

    blocks = []
    buffer = BUFFER_BLOCKS * ENCODE_BLOCK
    for start in range(0, len(texts), buffer):
        ordered = sorted(texts[start : start + buffer], key=len, reverse=True)
        blocks += [ordered[i : i + ENCODE_BLOCK] for i in range(0, len(ordered), ENCODE_BLOCK)]
    return blocks


def cli_batch_size() -> int:
    """`ragbatch index --batch-size`'s default, read from the command itself."""
    from ragbatch.cli.main import index

    return next(int(p.default) for p in index.params if p.name == "batch_size")


def timed_runs(fn, runs: int) -> list[float]:
    import torch

    seconds = []
    for _ in range(runs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    return seconds


def non_embedding_parameters(model) -> int:
    """Parameters that multiply: all but embedding tables (token embeddings, T5's relative
    position buckets), which are looked up."""
    import torch

    tables = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in tables)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="embed only the first N texts (default: all, at least 5,000, on a GPU; 48 on a CPU)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each way; the median is reported")
    parser.add_argument("--layers", type=int, default=24, help="encoder layers (24 is T5-large's; fewer for a quick CPU check)")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, if not in the table")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "ragbatch-instructor-large-shaped"))
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from benchmarks.encoder_shapes import instructor_large_shaped
    from ragbatch.models.embedder import INSTRUCTOR_DOCUMENT, INSTRUCTOR_QUERY, Embedder, EmbedderSpec

    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    # "instructor" in the folder name: resolve_embedder then gives it INSTRUCTOR's instructions, as index does.
    folder = instructor_large_shaped(Path(args.work) / f"instructor-large-shaped-{args.layers}", layers=args.layers)
    texts = indexed_texts(folder, args.limit or (None if gpu else 48))
    if not args.limit and len(texts) < MIN_TEXTS:
        print(f"warning: only {len(texts)} distinct texts (is ../shared/eval there?); the figures need {MIN_TEXTS}", file=sys.stderr)
    spec = EmbedderSpec("instructor-large-shaped", str(folder), "local", INSTRUCTOR_DOCUMENT, INSTRUCTOR_QUERY)

    batch_size = cli_batch_size()
    ours = Embedder(spec, device=device, batch_size=batch_size)
    tokenizer, max_len = ours.model.tokenizer, ours.model.max_seq_length
    tokens = [min(max_len, len(tokenizer(INSTRUCTOR_DOCUMENT + t.strip())["input_ids"])) for t in texts]  # what the model reads
    parameters = non_embedding_parameters(ours.model)
    blocks = executor_order(texts)
    ours.embed_documents(blocks[0])  # warm-up on a full block: kernels, allocator, autotuning
    ours_runs = timed_runs(lambda: [ours.embed_documents(block) for block in blocks], args.runs)
    ours_dtype = ours.dtype
    ours.release()

    seed = SentenceTransformer(str(folder), device=device)  # float32, as INSTRUCTOR loaded it
    seed.set_pooling_include_prompt(False)  # INSTRUCTOR's pooling: the instruction out of the mean
    stripped = [t.strip() for t in texts]
    seed.encode(stripped[: len(blocks[0])], prompt=INSTRUCTOR_DOCUMENT, batch_size=32)  # warm-up on a full block
    seed_runs = timed_runs(lambda: seed.encode(stripped, prompt=INSTRUCTOR_DOCUMENT, batch_size=32, normalize_embeddings=True), args.runs)

    name = torch.cuda.get_device_name() if gpu else f"CPU ({torch.get_num_threads()} threads)"
    n, total_tokens = len(texts), sum(tokens)
    print(f"device: {name}; {n} distinct indexed texts, {total_tokens / n:.0f} tokens per vector on average (max {max(tokens)})")
    print(f"encoder: {args.layers} layers, {parameters / 1e6:.0f}M non-embedding parameters; median of {args.runs} runs each (min-max)")

    def line(label: str, runs: list[float]) -> float:
        median = statistics.median(runs)
        print(
            f"{label}: {1000 * median / n:.3f} ms/vector, {1000 * median * 256 / total_tokens:.3f} ms per 256 tokens "
            f"({1000 * min(runs) / n:.3f}-{1000 * max(runs) / n:.3f} ms/vector)"
        )
        return median

    ours_s = line(f"ragbatch Embedder ({ours_dtype}, executor's length-sorted blocks, batch {batch_size})", ours_runs)
    seed_s = line("seed's way (float32, batch 32, input order)", seed_runs)
    print(f"speed-up: {seed_s / ours_s:.2f}x")
    peak = args.peak_tflops or (peak_tflops(name) if gpu else None)
    if gpu and peak:
        achieved = 2 * parameters * total_tokens / ours_s / 1e12
        print(f"bf16 throughput: {achieved:.0f} TFLOP/s of the {name}'s {peak:.0f} TFLOP/s dense peak ({100 * achieved / peak:.1f} %)")
    elif gpu:
        print(f"no bf16 peak known for {name}: pass --peak-tflops for the share")


if __name__ == "__main__":
    main()
