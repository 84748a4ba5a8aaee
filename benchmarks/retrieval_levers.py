"""Retrieval levers on the three evaluation sets, measured without re-indexing.

Each chunk text variant (plain, or with its context line) is embedded once per set and
the vectors cached as .npy under --cache; questions are embedded once per set. Dense
ranking is exact cosine over those vectors (a store's HNSW index is approximate, so
`ragbatch eval` may differ by a question or two), BM25 is `lexical.py`'s own matrix
with a chosen tokeniser, fusion and diversity are the functions in `fusion.py`.
Every figure comes from `evaluation.question_row`/`summarize`, as `ragbatch eval`'s do.

    python benchmarks/retrieval_levers.py [--sets raydocs-real,raydocs-dev,squad-dev] [--groups all]

Prints one Markdown table per group of variants; rows go to --cache/results.jsonl too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EVAL = ROOT.parent / "shared" / "eval"
SETS = ("raydocs-real", "raydocs-dev", "squad-dev")
KS = [1, 3, 5, 10, 20]
ANCHORS = True  # section hits also through the anchors inside a section (as `ragbatch eval` now does)


# -- corpus, chunks, vectors ------------------------------------------------------------


def load_chunks(name: str, size: int, overlap: int) -> list[dict]:
    """The chunks `ragbatch index` would make, each with its `context` line."""
    from ragbatch.ingest import readers
    from ragbatch.ingest.chunking import Chunker, chunk_context
    from ragbatch.models.embedder import describe_embedder, resolve_embedder
    from ragbatch.store.manifest import ChunkingParams

    info = describe_embedder(resolve_embedder(None))
    chunker = Chunker(info.tokenizer_json, ChunkingParams(size, overlap, context=0))  # ids as the baseline store has them
    chunks = []
    for file in readers.discover([str(EVAL / name / "corpus")]).files:
        sections = readers.read_file(file)
        for chunk in chunker.chunk_file(sections):
            chunk["context"] = chunk.get("context") or chunk_context(sections[chunk["section"]])
            chunks.append(chunk)
    return chunks


_EMBEDDER = None


def embedder():
    global _EMBEDDER
    if _EMBEDDER is None:
        from ragbatch.models.embedder import Embedder, resolve_embedder

        _EMBEDDER = Embedder(resolve_embedder(None), device="cpu", batch_size=32)
    return _EMBEDDER


def cached_vectors(cache: Path, label: str, texts: list[str], queries: bool = False) -> np.ndarray:
    digest = hashlib.sha256(json.dumps([queries, texts]).encode()).hexdigest()[:16]
    path = cache / f"{label}-{digest}.npy"
    if path.exists():
        return np.load(path)
    started = time.perf_counter()
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = np.zeros((len(texts), 384), dtype=np.float32)
    model = embedder()
    encode = model.embed_queries if queries else model.embed_documents
    for start in range(0, len(order), 256):
        block = order[start : start + 256]
        out[block] = encode([texts[i] for i in block])
    np.save(path, out)
    print(f"  embedded {len(texts)} {label} in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return out


def seed_from_store(store: Path, ids: list[str]) -> np.ndarray | None:
    """The vectors of these chunk ids from a store built by `ragbatch index`, if it has them all."""
    if not (store / "chroma").exists():
        return None
    from ragbatch.store.local import LocalVectors
    from ragbatch.store.manifest import read_manifest

    chroma = LocalVectors(store, read_manifest(store).collection, create=False)
    try:
        found = {}
        for start in range(0, len(ids), 5000):
            page = chroma.collection.get(ids=ids[start : start + 5000], include=["embeddings"])
            found.update(zip(page["ids"], page["embeddings"]))
    finally:
        chroma.close()
    if len(found) != len(ids):
        return None
    return np.asarray([found[i] for i in ids], dtype=np.float32)


# -- rankers ------------------------------------------------------------------------------


def dense_rank(q: np.ndarray, d: np.ndarray, depth: int) -> list[list[int]]:
    scores = q @ d.T
    depth = min(depth, d.shape[0])
    top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
    return [list(row[np.argsort(-scores[i, row], kind="stable")]) for i, row in enumerate(top)]


def bm25_rank(doc_tokens: list[list[str]], query_tokens: list[list[str]], depth: int) -> list[list[int]]:
    import pyarrow as pa

    from ragbatch.store.lexical import _build_retriever, _tokens_type

    retriever = _build_retriever(pa.array(doc_tokens, _tokens_type()))
    results = []
    for tokens in query_tokens:
        ids = retriever.get_tokens_ids(tokens)
        if not ids:
            results.append([])
            continue
        scores = retriever.get_scores_from_ids(ids)
        matches = np.flatnonzero(scores > 0)
        order = np.lexsort((matches, -scores[matches]))[:depth]
        results.append(list(matches[order]))
    return results


def rrf(lists: list[list[int]], weights: list[float], c: int) -> list[int]:
    fused: dict[int, float] = {}
    for ranking, weight in zip(lists, weights):
        for rank, i in enumerate(ranking, start=1):
            fused[i] = fused.get(i, 0.0) + weight / (c + rank)
    return [i for i, _ in sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))]


def cap_per_key(ranked: list[int], keys: list[str], cap: int) -> list[int]:
    """At most `cap` items per key first (in rank order), then the rest in rank order."""
    if cap <= 0:
        return ranked
    seen: dict[str, int] = {}
    first, rest = [], []
    for i in ranked:
        if keys[i] is None:  # not limited
            first.append(i)
            continue
        n = seen.get(keys[i], 0)
        (first if n < cap else rest).append(i)
        seen[keys[i]] = n + 1
    return first + rest


def mmr(ranked: list[int], vectors: np.ndarray, lam: float, k: int = 20) -> list[int]:
    """Maximal marginal relevance over a fused list: relevance is the fused rank mapped
    to [0, 1] (first 1, last 0), redundancy the highest cosine to a chunk already taken."""
    if len(ranked) < 2:
        return ranked
    rel = {i: 1 - r / (len(ranked) - 1) for r, i in enumerate(ranked)}
    chosen, left = [], list(ranked)
    sims = vectors[ranked] @ vectors[ranked].T
    pos = {i: n for n, i in enumerate(ranked)}
    while left and len(chosen) < k:
        best = max(left, key=lambda i: lam * rel[i] - (1 - lam) * max((sims[pos[i], pos[j]] for j in chosen), default=0.0))
        chosen.append(best)
        left.remove(best)
    return chosen + left


# -- one evaluation ---------------------------------------------------------------------


def score(name: str, refs: list[dict], chunks: list[dict], ranked: list[list[int]]) -> dict:
    from ragbatch.evaluation.metrics import question_row, summarize
    from ragbatch.retrieval.sources import page_of

    pages = {page_of(c["source"]) for c in chunks}
    rows = [
        question_row(
            ref,
            [(chunks[i]["source"], chunks[i]["text"]) for i in r[: max(KS)]],
            KS,
            pages,
            None,
            [chunks[i].get("anchors", "").split() for i in r[: max(KS)]] if ANCHORS else None,
        )
        for ref, r in zip(refs, ranked)
    ]
    s = summarize(rows, KS)
    return {
        "page@1": s["hit_at"][1],
        "page@5": s["hit_at"][5],
        "page@10": s["hit_at"][10],
        "page@20": s["hit_at"][20],
        "sec@5": (s["section_hit_at"] or {}).get(5),
        "ans@5": (s["answer_hit_at"] or {}).get(5),
        "mrr": s["mrr"],
    }


class SetData:
    def __init__(self, name: str, cache: Path, size: int, overlap: int):
        self.name = name
        self.refs = [json.loads(line) for line in (EVAL / name / "questions.jsonl").read_text().splitlines() if line.strip()]
        self.chunks = load_chunks(name, size, overlap)
        self.pages = [c["source"].split("#", 1)[0] for c in self.chunks]
        self.sections = [c["source"] for c in self.chunks]
        self.anchored = [s if "#" in s else None for s in self.sections]  # what retrieval.MAX_PER_SECTION limits
        self.q = cached_vectors(cache, f"{name}-questions", [r["question"] for r in self.refs], queries=True)
        self.cache, self.size = cache, size
        self._vectors: dict[str, np.ndarray] = {}
        self._tokens: dict[tuple, list] = {}

    def text(self, i: int, context: bool) -> str:
        from ragbatch.store.records import indexed_text

        c = self.chunks[i]
        return indexed_text(c) if context else c["text"]

    def vectors(self, context: bool) -> np.ndarray:
        key = "ctx" if context else "plain"
        if key not in self._vectors:
            texts = [self.text(i, context) for i in range(len(self.chunks))]
            seeded = None if context else seed_from_store(ROOT / "stores" / f"base-{self.name}", [c["id"] for c in self.chunks])
            if seeded is not None:
                self._vectors[key] = seeded
            else:
                self._vectors[key] = cached_vectors(self.cache, f"{self.name}-{self.size}-{key}", texts)
        return self._vectors[key]

    def doc_tokens(self, tokenizer: str, context: bool):
        key = (tokenizer, context)
        if key not in self._tokens:
            fn = TOKENIZERS[tokenizer]
            self._tokens[key] = [fn(self.text(i, context)) for i in range(len(self.chunks))]
        return self._tokens[key]

    def query_tokens(self, tokenizer: str):
        key = (tokenizer, "q")
        if key not in self._tokens:
            self._tokens[key] = [TOKENIZERS[tokenizer](r["question"]) for r in self.refs]
        return self._tokens[key]


def _words(text):
    from ragbatch.store.lexical import tokenize

    return tokenize(text)


def _words_stem(text):
    from ragbatch.store.lexical import tokenize

    return tokenize(text, "snowball-english")


def _code(text, stem=False):
    from ragbatch.store.lexical import tokenize

    return tokenize(text, "snowball-english" if stem else None, identifiers=True)


TOKENIZERS = {"words": _words, "words+stem": _words_stem, "code": _code, "code+stem": lambda t: _code(t, True)}


def run_variant(data: SetData, v: dict) -> list[list[int]]:
    """v: mode, ctx_dense, ctx_bm25, tokenizer, depth, c, w_dense, w_bm25, cap, cap_key."""
    depth = v.get("depth", 50)
    lists = []
    if v["mode"] in ("dense", "hybrid"):
        lists.append(dense_rank(data.q, data.vectors(v.get("ctx_dense", False)), depth if v["mode"] == "hybrid" else 200))
    if v["mode"] in ("bm25", "hybrid"):
        tok = v.get("tokenizer", "words")
        lists.append(bm25_rank(data.doc_tokens(tok, v.get("ctx_bm25", False)), data.query_tokens(tok), depth if v["mode"] == "hybrid" else 200))
    if v["mode"] == "hybrid":
        weights = [v.get("w_dense", 1.0), v.get("w_bm25", 1.0)]
        ranked = [rrf([d, b], weights, v.get("c", 60)) for d, b in zip(*lists)]
    else:
        ranked = lists[0]
    if v.get("mmr"):
        vectors = data.vectors(v.get("ctx_dense", False))
        ranked = [mmr(r[:50], vectors, v["mmr"]) for r in ranked]
    cap = v.get("cap", 0)
    if cap:
        key = v.get("cap_key", "page")
        keys = data.pages if key == "page" else data.sections if key == "section" else data.anchored
        ranked = [cap_per_key(r, keys, cap) for r in ranked]
    return ranked


BASE = {"mode": "hybrid", "ctx_dense": False, "ctx_bm25": False, "tokenizer": "words", "depth": 50, "c": 60}


def groups() -> dict[str, list[tuple[str, dict]]]:
    g = {}
    g["modes"] = [(m, {**BASE, "mode": m}) for m in ("dense", "bm25", "hybrid")]
    g["tokenizer"] = [(f"bm25 {t}", {**BASE, "mode": "bm25", "tokenizer": t}) for t in TOKENIZERS] + [
        (f"hybrid {t}", {**BASE, "tokenizer": t}) for t in TOKENIZERS
    ]
    g["context"] = [
        ("dense plain", {**BASE, "mode": "dense"}),
        ("dense ctx", {**BASE, "mode": "dense", "ctx_dense": True}),
        ("bm25 plain", {**BASE, "mode": "bm25"}),
        ("bm25 ctx", {**BASE, "mode": "bm25", "ctx_bm25": True}),
        ("hybrid plain", BASE),
        ("hybrid ctx dense only", {**BASE, "ctx_dense": True}),
        ("hybrid ctx bm25 only", {**BASE, "ctx_bm25": True}),
        ("hybrid ctx both", {**BASE, "ctx_dense": True, "ctx_bm25": True}),
    ]
    g["diversity"] = [("hybrid no cap", BASE)] + [
        (f"hybrid cap {n}/{key}", {**BASE, "cap": n, "cap_key": key}) for key in ("page", "section") for n in (1, 2, 3)
    ]
    g["fusion"] = [
        (f"depth {d} c {c} w {wd}:{wb}", {**BASE, "depth": d, "c": c, "w_dense": wd, "w_bm25": wb})
        for d, c, wd, wb in [
            (20, 60, 1, 1),
            (50, 60, 1, 1),
            (100, 60, 1, 1),
            (200, 60, 1, 1),
            (50, 20, 1, 1),
            (50, 60, 1.5, 1),
            (50, 60, 1, 1.5),
            (50, 60, 2, 1),
            (50, 60, 1, 2),
        ]
    ]
    return g


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--groups", default="all")
    parser.add_argument("--size", type=int, default=254)
    parser.add_argument("--overlap", type=int, default=31)
    parser.add_argument("--variants", help="JSON list of [label, overrides of the base variant]")
    parser.add_argument("--cache", default=str(ROOT / "stores" / "levers"))
    parser.add_argument("--no-anchors", action="store_true", help="section hits by exact source only (the metric before anchors)")
    args = parser.parse_args()
    global ANCHORS
    ANCHORS = not args.no_anchors
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    all_groups = groups()
    if args.variants:
        chosen = {"custom": [(label, {**BASE, **over}) for label, over in json.loads(args.variants)]}
    else:
        chosen = all_groups if args.groups == "all" else {g: all_groups[g] for g in args.groups.split(",")}
    data = {name: SetData(name, cache, args.size, args.overlap) for name in args.sets.split(",")}
    with open(cache / "results.jsonl", "a") as log:
        for group, variants in chosen.items():
            print(f"\n### {group} (chunks {args.size}/{args.overlap})\n")
            print("| variant | set | page@1 | page@5 | page@10 | page@20 | section@5 | answer@5 | MRR |")
            print("|---|---|---|---|---|---|---|---|---|")
            for label, v in variants:
                for name, d in data.items():
                    s = score(name, d.refs, d.chunks, run_variant(d, v))
                    f = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
                    print(
                        f"| {label} | {name} | {f(s['page@1'])} | {f(s['page@5'])} | {f(s['page@10'])} | {f(s['page@20'])} | {f(s['sec@5'])} | {f(s['ans@5'])} | {f(s['mrr'])} |",
                        flush=True,
                    )
                    log.write(json.dumps({"group": group, "label": label, "set": name, "size": args.size, "overlap": args.overlap, "variant": v, **s}) + "\n")


if __name__ == "__main__":
    main()
