"""Where models come from (models.py): packaged, a local folder, or a Hugging Face id.

The hub tests run a fake hub (fake_hub.py) on 127.0.0.1 and ragbatch in a subprocess,
so the user's HF_ENDPOINT / HF_HOME / HF_HUB_OFFLINE are what huggingface_hub reads.
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fake_hub import FakeHub
from helpers import ROOT

from ragbatch.errors import RagbatchError
from ragbatch.models.conversion import SOURCE_STAMP, cached_conversion
from ragbatch.models.embedder import resolve_embedder
from ragbatch.models.weights import DEFAULT_LLM, resolve_llm

# --- the packaged LLM --------------------------------------------------------------------


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
    threads = [threading.Thread(target=cached_conversion, args=(target, {"v": 1}, slow_convert)) for _ in range(2)]
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


# --- local folders and unknown names -----------------------------------------------------


def test_local_folder_is_used_as_is(llm_folder):
    assert resolve_llm(llm_folder) == llm_folder
    spec = resolve_embedder(str(Path(resolve_embedder(None).path)))
    assert spec.revision == "local" and Path(spec.path).is_dir()


def test_folder_without_config_is_not_an_llm(tmp_path):
    with pytest.raises(RagbatchError, match=f"llm {tmp_path}: .* has no config.json"):
        resolve_llm(str(tmp_path))


@pytest.mark.parametrize("name", ["nobody/no-such-model", "./no/such/folder", "not a valid id"])
def test_unknown_llm_is_one_clear_line(name):
    with pytest.raises(RagbatchError) as error:
        resolve_llm(name)
    message = str(error.value)
    assert message.startswith(f"llm {name}: ") and error.value.param == "llm"
    assert "\n" not in message


def test_offline_and_not_cached_says_what_to_do():
    """HF_HUB_OFFLINE is set for the tests (conftest.py), as a user offline would set it."""
    with pytest.raises(RagbatchError) as error:
        resolve_embedder("nobody/absent")
    message = str(error.value)
    assert message.startswith("embedder nobody/absent: cannot be loaded offline: it is not in the Hugging Face cache (")
    assert "HF_HUB_OFFLINE" in message and "`hf download nobody/absent`" in message and "set HF_HOME" in message
    assert "\n" not in message


# --- the hub, through a fake one ---------------------------------------------------------


def run_python(code: str, env: dict, *args: str) -> dict:
    """Run `code` in a fresh interpreter (huggingface_hub reads the environment at import);
    it prints one JSON object as its last line."""
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    return {**json.loads(result.stdout.splitlines()[-1]), "stderr": result.stderr}


def user_env(**settings) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return {**env, "PYTHONPATH": str(ROOT), **settings}


DOWNLOAD_AND_EMBED = """
import json
from ragbatch.models.embedder import Embedder, resolve_embedder
from ragbatch.errors import RagbatchError
spec = resolve_embedder("tester/minilm")
vector = Embedder(spec, device="cpu").embed_queries(["Who wagered?"])[0]
errors = []
for name in ("nobody/absent", "tester/gated"):
    try:
        resolve_embedder(name)
    except RagbatchError as exc:
        errors.append(str(exc))
print(json.dumps({"path": spec.path, "revision": spec.revision, "dimension": len(vector), "errors": errors}))
"""

RESOLVE = """
import json, sys
from ragbatch.models.embedder import resolve_embedder
print(json.dumps({"path": resolve_embedder(sys.argv[1]).path}))
"""


@pytest.mark.slow
def test_hub_id_is_downloaded_into_the_users_cache_then_used_offline(tmp_path):
    packaged = Path(resolve_embedder(None).path)
    hf_home = tmp_path / "hf-home"
    models = {"tester/minilm": packaged, "tester/gated": packaged}
    with FakeHub(models, tokens={"tester/gated": "hf_secret"}) as hub:
        first = run_python(DOWNLOAD_AND_EMBED, user_env(HF_ENDPOINT=hub.url, HF_HOME=str(hf_home)))
        downloaded = list(hub.requests)
        hub.requests.clear()
        offline = user_env(HF_ENDPOINT=hub.url, HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
        again = run_python(RESOLVE, offline, "tester/minilm")
        assert hub.requests == []  # offline: the cache only
        gated = run_python(RESOLVE, user_env(HF_ENDPOINT=hub.url, HF_HOME=str(hf_home), HF_TOKEN="hf_secret"), "tester/gated")

    assert Path(first["path"]).is_relative_to(hf_home / "hub") and first["dimension"] == 384
    assert first["revision"] == Path(first["path"]).name  # the snapshot's commit
    assert any(r.endswith("/model.safetensors") for r in downloaded)
    assert "Fetching" not in first["stderr"]  # no progress bars off a terminal
    assert again["path"] == first["path"]
    assert Path(gated["path"]).is_relative_to(hf_home / "hub")  # HF_TOKEN was sent
    absent, refused = first["errors"]
    assert absent.startswith(f"embedder nobody/absent: no such model on the Hugging Face hub ({hub.url})")
    assert refused == "embedder tester/gated: gated on the Hugging Face hub; accept its terms there and set HF_TOKEN"


PACKAGED_ONLY = """
import json
from transformers import AutoTokenizer
from ragbatch.models.embedder import Embedder, resolve_embedder
from ragbatch.models.weights import resolve_llm
Embedder(resolve_embedder(None), device="cpu").embed_documents(["Fogg left London."])
AutoTokenizer.from_pretrained(resolve_llm(None))
print(json.dumps({}))
"""


@pytest.mark.slow
def test_packaged_models_load_without_asking_the_hub(tmp_path, llm_folder):
    """No HF_HUB_OFFLINE, a reachable hub: packaged models still load from their folders."""
    with FakeHub({}) as hub:
        run_python(PACKAGED_ONLY, user_env(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home")))
    assert hub.requests == []


@pytest.mark.slow
def test_index_and_ask_fetch_hub_ids_through_the_cli(tmp_path, llm_folder):
    """As a user with network runs it: `index --embedder ORG/NAME` and `ask --llm ORG/NAME`
    download into HF_HOME and work; the store records the id, and a later `ask` finds
    the embedder in the cache."""
    (tmp_path / "fogg.txt").write_text("Phileas Fogg lived at 7 Saville Row.\n\nHe wagered twenty thousand pounds.\n")
    (tmp_path / "q.jsonl").write_text('{"id": "home", "question": "Where did Fogg live?"}\n')
    models = {"tester/minilm": Path(resolve_embedder(None).path), "tester/smollm2": Path(llm_folder)}
    with FakeHub(models) as hub:
        env = user_env(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"))
        cli = [sys.executable, str(ROOT / "cli.py")]
        index = subprocess.run(
            [*cli, "index", "fogg.txt", "--embedder", "tester/minilm", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert index.returncode == 0, index.stderr
        ask = subprocess.run(
            [*cli, "ask", "q.jsonl", "--llm", "tester/smollm2", "--max-tokens", "16", "--json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert ask.returncode == 0, ask.stderr
    assert json.loads(index.stdout)["embedder"] == "tester/minilm"
    report = json.loads(ask.stdout)
    assert report["answered"] == 1 and report["llm"] == "tester/smollm2" and report["embedder"] == "tester/minilm"
    fetched = {r.rsplit("/", 1)[-1] for r in hub.requests if "/resolve/" in r}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= fetched
    assert any("/tester/smollm2/resolve/" in r for r in hub.requests) and any("/tester/minilm/resolve/" in r for r in hub.requests)
    snapshots = tmp_path / "hf-home" / "hub"
    assert (snapshots / "models--tester--minilm").is_dir() and (snapshots / "models--tester--smollm2").is_dir()
