"""The packaged MiniLM on this CPU: torch against ONNX Runtime (fp32 and dynamic int8).

Every chunk of corpora/around.txt (ragbatch's own Chunker, 254/31, as gpu_embed_bench.py
cuts them) is embedded by
- torch: ragbatch's Embedder (sentence-transformers, float32, batch 32);
- onnx-fp32: the same weights exported with torch.onnx.export, run by onnxruntime, with
  sentence-transformers' steps done by hand (tokenizer.json, batches of 32 sorted by
  length, mean pooling over the attention mask, L2 normalisation);
- onnx-int8: that model after onnxruntime.quantization.quantize_dynamic (int8 weights);
- openvino-fp32, if `openvino` is importable (the exported ONNX file, compiled for CPU).

sentence-transformers' own `backend="onnx"` / `"openvino"` need optimum-onnx / optimum-intel,
whose current releases require transformers < 4.58 and cannot load next to the
transformers 5.x ragbatch uses, so the runtimes are driven directly here.

Prints ms/vector (median of --repeat timed passes after a warm-up) and the minimum and
median cosine of each backend's vectors to torch's, chunk by chunk. The adoption rule
(issue 11): at least 1.5x faster than torch with cosine >= 0.999 on every chunk.

    python benchmarks/cpu_backends_bench.py [--repeat 2] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
BATCH = 32


def export_onnx(model_dir: str, out: Path) -> Path:
    import torch
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()

    class Wrapped(torch.nn.Module):  # keyword call: transformers 5 reordered forward's arguments
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    model = Wrapped()
    ids = torch.ones((2, 16), dtype=torch.long)
    axes = {0: "batch", 1: "seq"}
    with torch.no_grad():
        torch.onnx.export(
            model,
            (ids, ids, torch.zeros_like(ids)),
            str(out),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes, "last_hidden_state": axes},
            opset_version=17,
            dynamo=False,
        )
    return out


class Runtime:
    """Tokenise, run one session call per batch of 32 (texts sorted by length), pool, normalise."""

    def __init__(self, model_dir: str, run):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        self.tokenizer.enable_truncation(256)
        self.tokenizer.enable_padding()
        self.run = run

    def encode(self, texts: list[str]) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), 384), dtype=np.float32)
        for start in range(0, len(texts), BATCH):
            picked = order[start : start + BATCH]
            enc = self.tokenizer.encode_batch([texts[i] for i in picked])
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            hidden = self.run(ids, mask, np.zeros_like(ids))
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            out[picked] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import onnxruntime as ort
    import torch
    from gpu_embed_bench import chunks_of_around
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from ragbatch.models.embedder import Embedder, resolve_embedder

    torch.set_num_threads(args.threads)
    spec = resolve_embedder(None)
    texts = chunks_of_around(None)
    work = Path(tempfile.mkdtemp(prefix="cpu-backends-"))
    fp32 = export_onnx(spec.path, work / "model.onnx")
    int8 = work / "model-int8.onnx"
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)

    def ort_runner(path: Path):
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda ids, mask, types: session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]

    torch_embedder = Embedder(spec, device="cpu", batch_size=BATCH)
    backends = {"torch": torch_embedder.embed_documents}
    backends["onnx-fp32"] = Runtime(spec.path, ort_runner(fp32)).encode
    backends["onnx-int8"] = Runtime(spec.path, ort_runner(int8)).encode
    try:
        import openvino as ov

        compiled = ov.Core().compile_model(str(fp32), "CPU", {"INFERENCE_NUM_THREADS": args.threads})
        backends["openvino-fp32"] = Runtime(spec.path, lambda ids, mask, types: compiled([ids, mask, types])[0]).encode
    except ImportError:
        print("openvino not importable: skipped")

    print(
        f"{len(texts)} chunks of corpora/around.txt; torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
        f"onnxruntime {ort.__version__}, {args.threads} threads, batch {BATCH}"
    )
    reference = None
    rows = []
    for name, encode in backends.items():
        encode(texts[:BATCH])  # warm-up
        times, vectors = [], None
        for _ in range(args.repeat):
            started = time.perf_counter()
            vectors = np.asarray(encode(texts), dtype=np.float32)
            times.append(time.perf_counter() - started)
        if reference is None:
            reference = vectors
        cosines = np.sum(vectors * reference, axis=1) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1))
        rows.append((name, 1000 * statistics.median(times) / len(texts), float(cosines.min()), float(np.median(cosines))))
        print(f"{name}: {rows[-1][1]:.2f} ms/vector, cosine to torch min {rows[-1][2]:.5f}", flush=True)
    base = rows[0][1]
    print("\n| backend | ms/vector | speed-up vs torch | min cosine to torch | median cosine | adopt rule (>= 1.5x, min cos >= 0.999) |")
    print("|---|---|---|---|---|---|")
    for name, ms, low, mid in rows:
        ok = name != "torch" and base / ms >= 1.5 and low >= 0.999
        print(f"| {name} | {ms:.2f} | {base / ms:.2f}x | {low:.5f} | {mid:.5f} | {'yes' if ok else ('-' if name == 'torch' else 'no')} |")


if __name__ == "__main__":
    main()
