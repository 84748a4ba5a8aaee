"""Model folders built once and kept in the ragbatch cache: the packaged GGUF LLM as a
bf16 Hugging Face folder that vLLM can run on a CPU."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from ragbatch.locations import cache_dir as ragbatch_cache

log = logging.getLogger(__name__)

SOURCE_STAMP = "ragbatch-source.json"


def gguf_as_hf_folder(name: str, gguf: Path, package_version: str, cache_dir: str | Path | None = None) -> Path:
    """CACHE/models/<name>: `gguf` converted once (again only when the package changes)."""
    # Keep these keys: a folder converted by an earlier ragbatch is reused only if they match.
    stamp = {"gguf": gguf.name, "bytes": gguf.stat().st_size, "package_version": package_version}
    target = ragbatch_cache(cache_dir) / "models" / name
    return cached_conversion(target, stamp, lambda out: convert_gguf(gguf, out))


def cached_conversion(target: Path, stamp: dict, convert: Callable[[Path], None]) -> Path:
    """`target`, made by `convert(temp_folder)` unless a folder with this `stamp` exists.

    The folder appears atomically (rename of a finished temp folder), and a file lock
    makes a second process wait for the first one's conversion instead of repeating it.
    """
    if _stamp_of(target) == stamp:
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if _stamp_of(target) == stamp:  # another process finished while we waited
            return target
        log.info("building %s (once)", target)
        for leftover in target.parent.glob(f".{target.name}.tmp-*"):  # from a killed run
            shutil.rmtree(leftover, ignore_errors=True)
        temp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        temp.mkdir()  # not mkdtemp: its 0700 would hide a shared cache from other users
        try:
            convert(temp)
            (temp / SOURCE_STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
            if target.exists():  # stale: made from another version of the source
                stale = target.with_name(f".{target.name}.stale-{os.getpid()}")
                os.rename(target, stale)
                shutil.rmtree(stale, ignore_errors=True)
            os.rename(temp, target)
        finally:
            shutil.rmtree(temp, ignore_errors=True)
    return target


def _stamp_of(folder: Path) -> dict | None:
    try:
        return json.loads((folder / SOURCE_STAMP).read_text())
    except (OSError, ValueError):
        return None


def convert_gguf(gguf: Path, out: Path) -> None:
    """Write a bf16 Hugging Face folder (weights, config, tokenizer with its chat template)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.set_verbosity_error()
    started = time.perf_counter()
    with _progress_bars_hidden():
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
        # The weights are dequantized now: saved with these, vLLM would look for GGUF kernels.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer.save_pretrained(out)
    log.info("converted %s in %.1f s", gguf.name, time.perf_counter() - started)


@contextlib.contextmanager
def _progress_bars_hidden():
    """Hide transformers' progress bars, including the GGUF reader's own tqdm bar."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    original_tqdm = getattr(gguf_utils, "tqdm", None)
    if original_tqdm is not None:
        gguf_utils.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        yield
    finally:
        if original_tqdm is not None:
            gguf_utils.tqdm = original_tqdm
        if bars_were_on:
            hf_logging.enable_progress_bar()
