"""Embedding speed of an instructor-large-shaped encoder, on a GPU or the CPU.

Embeds around.txt's chunks (ragbatch's own chunking) with a T5-large encoder of random
weights laid out like hkunlp/instructor-large (encoder_shapes.py; device machines cannot
download the real one, and its speed is the same), two ways in one run:

- ragbatch's Embedder: chunks sorted by length, blocks of 512, bf16 on a GPU that has it;
- the seed notebook's way: INSTRUCTOR-style float32, batch 32, chunks in input order.

Prints ms/vector for each, their ratio, tokens per vector, and (on a GPU) the share of
its bf16 peak reached: a ~335M-parameter encoder costs about 2 x 335M FLOP per token.

    python benchmarks/gpu_embed_bench.py [--limit N] [--peak-tflops 990]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARAMETERS = 335e6
# Dense bf16 peaks (TFLOP/s) of the GPUs ragbatch is measured on; --peak-tflops for others.
BF16_PEAKS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "A10G": 70.0, "L4": 121.0}


def chunks_of_around(limit: int | None) -> list[str]:
    from ragbatch.ingest.chunking import Chunker
    from ragbatch.ingest.readers import discover, read_file
    from ragbatch.models.embedder import describe_embedder, resolve_embedder
    from ragbatch.store.manifest import ChunkingParams

    info = describe_embedder(resolve_embedder(None))
    sections = read_file(discover([str(ROOT / "corpora" / "around.txt")]).files[0])
    texts = [c["text"] for c in Chunker(info.tokenizer_json, ChunkingParams(254, 31)).chunk_file(sections)]
    return texts[:limit] if limit else texts


def timed(fn) -> float:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="embed only the first N chunks (default: all on a GPU, 48 on a CPU)")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, if not in the table")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "ragbatch-instructor-large-shaped"))
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from benchmarks.encoder_shapes import instructor_large_shaped
    from ragbatch.ingest.local_executor import ENCODE_BLOCK
    from ragbatch.models.embedder import INSTRUCTOR_DOCUMENT, INSTRUCTOR_QUERY, Embedder, EmbedderSpec

    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    texts = chunks_of_around(args.limit or (None if gpu else 48))
    folder = instructor_large_shaped(args.work)
    spec = EmbedderSpec("instructor-large-shaped", str(folder), "local", INSTRUCTOR_DOCUMENT, INSTRUCTOR_QUERY)

    ours = Embedder(spec, device=device, batch_size=128 if gpu else 32)
    tokenizer = ours.model.tokenizer
    tokens = [len(tokenizer(INSTRUCTOR_DOCUMENT + t.strip())["input_ids"]) for t in texts]
    ordered = sorted(texts, key=len, reverse=True)  # as the executors hand them over
    ours.embed_documents(ordered[:64])  # warm-up: kernels, allocator
    ours_s = timed(lambda: [ours.embed_documents(ordered[i : i + ENCODE_BLOCK]) for i in range(0, len(ordered), ENCODE_BLOCK)])
    ours.release()

    seed = SentenceTransformer(str(folder), device=device)  # float32, as INSTRUCTOR loaded it
    seed.set_pooling_include_prompt(False)
    seed.encode(texts[:32], prompt=INSTRUCTOR_DOCUMENT, batch_size=32)  # warm-up
    seed_s = timed(lambda: seed.encode(texts, prompt=INSTRUCTOR_DOCUMENT, batch_size=32, normalize_embeddings=True))

    name = torch.cuda.get_device_name() if gpu else f"CPU ({torch.get_num_threads()} threads)"
    n = len(texts)
    print(f"device: {name}; {n} chunks of around.txt, {sum(tokens) / n:.0f} tokens per vector on average (max {max(tokens)})")
    print(f"ragbatch Embedder ({ours.dtype}, length-sorted, batch {ours.batch_size}): {1000 * ours_s / n:.3f} ms/vector")
    print(f"seed's way (float32, batch 32, input order):       {1000 * seed_s / n:.3f} ms/vector")
    print(f"speed-up: {seed_s / ours_s:.2f}x")
    peak = args.peak_tflops or next((v for k, v in BF16_PEAKS.items() if k in name), None)
    if gpu and peak:
        achieved = 2 * PARAMETERS * sum(tokens) / ours_s / 1e12
        print(f"bf16 throughput: {achieved:.0f} TFLOP/s of a {peak:.0f} TFLOP/s peak ({100 * achieved / peak:.0f} %)")


if __name__ == "__main__":
    main()
