"""`ragbatch serve` over real HTTP: the real server in a subprocess on a free port, the real
vLLM CPU engine and the packaged models, a published store, httpx and the `openai` client.

One server for the module (starting it loads the embedder and vLLM: tens of seconds)."""

import asyncio
import json
import os
import re
import time

import httpx
import pyarrow.parquet as pq
import pytest
from helpers import CAPITAL, FACTS, Server
from helpers import ragbatch_cli as ragbatch

from ragbatch.asking.answer_file import BASE_COLUMNS
from ragbatch.store.publish import publish

pytestmark = pytest.mark.slow

NEW_FACTS = ["The capital of Freedonia moved to Marsovia, a port on the Gulf of Klopstokia."] + FACTS[1:]
SERVER_OPTIONS = ["--max-model-len", "2048", "--count-tokens", "cl100k_base", "--price-prompt", "1.0", "--price-completion", "2.0"]


@pytest.fixture(scope="module")
def site(tmp_path_factory, indexed_store):
    root = tmp_path_factory.mktemp("serve")
    first = indexed_store({"freedonia.txt": "\n".join(FACTS) + "\n"}, name="books", chunk_size=24, chunk_overlap=0)  # the published link's name
    second = indexed_store({"freedonia.txt": "\n".join(NEW_FACTS) + "\n"}, name="books", chunk_size=24, chunk_overlap=0)
    published = root / "published"
    publish(first, published)
    env = {**os.environ, "RAGBATCH_CACHE": str(root / "cache"), "HF_HUB_OFFLINE": "1"}
    server = Server(published / "books", env, root / "server.log", SERVER_OPTIONS)
    yield {"root": root, "link": published / "books", "published": published, "next": second, "env": env, "server": server}
    server.stop()


@pytest.fixture(scope="module")
def client(site):
    with httpx.Client(base_url=site["server"].url, timeout=600) as c:
        yield c


def metrics(client) -> dict[str, float]:
    text = client.get("/metrics").text
    return {name: float(value) for name, value in re.findall(r"^(ragbatch_\S+) (\S+)$", text, flags=re.M)}


def events(response) -> list[tuple[str, dict]]:
    """Server-sent events of a streamed /ask, as (event, data)."""
    found, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            found.append((name, json.loads(line[6:])))
    return found


def test_unknown_store_and_taken_port_fail_at_start_with_one_line(site, tmp_path):
    result = ragbatch("serve", "--store", tmp_path / "nowhere", env=site["env"], timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nowhere'}: no such store yet; create it with `ragbatch index FILES --store {tmp_path / 'nowhere'}`"
    ]
    taken = ragbatch("serve", "--store", site["link"], "--port", site["server"].port, env=site["env"], timeout=300)
    assert taken.returncode == 1 and "Traceback" not in taken.stderr
    assert taken.stderr.strip().splitlines()[-1].startswith(f"error: --host 127.0.0.1 --port {site['server'].port}: cannot listen there")


def test_health_and_search_match_the_search_command(site, client):
    assert "Triton" not in site["server"].log.read_text()  # vLLM's import-time notices, from either process
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["llm"] == "smollm2-135m-instruct" and health["embedder"] == "all-MiniLM-L6-v2"
    served = client.post("/search", json={"question": CAPITAL, "k": 2, "retrieval": "hybrid"}).json()
    assert served["store"] == health["store"] == str(site["link"])  # as the CLI names it: the path given
    assert served["version"] == health["version"] and [r["rank"] for r in served["results"]] == [1, 2]
    assert "Zubrowka" in served["results"][0]["text"] or "Marsovia" in served["results"][0]["text"]
    command = ragbatch("search", CAPITAL, "--store", site["link"], "--k", 2, "--json", env=site["env"])
    assert command.returncode == 0, command.stderr
    expected = json.loads(command.stdout)["results"]
    assert [(r["chunk_id"], r["score"]) for r in served["results"]] == [(r["chunk_id"], r["score"]) for r in expected]
    lexical = client.post("/search", json={"question": CAPITAL, "k": 4, "retrieval": "bm25"}).json()["results"]
    assert len(lexical) == 4 and all(r["source"].startswith("freedonia.txt#L") for r in lexical)
    assert client.post("/search", json={"question": CAPITAL, "source_prefix": "elsewhere/"}).json()["results"] == []


def test_ask_route_gives_the_ask_command_row(site, client, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "capital", "question": CAPITAL}) + "\n")
    out = tmp_path / "answers.parquet"
    result = ragbatch("ask", questions, "--store", site["link"], "--out", out, "--k", 2, "--max-tokens", 24, *SERVER_OPTIONS, "--json", env=site["env"])
    assert result.returncode == 0, result.stderr
    row = pq.read_table(out).to_pylist()[0]
    served = client.post("/ask", json={"id": "capital", "question": CAPITAL, "k": 2, "max_tokens": 24})
    assert served.status_code == 200
    answer = served.json()
    columns = [name for name, _ in BASE_COLUMNS] + ["prompt_tokens_cl100k_base", "completion_tokens_cl100k_base"]
    assert {c: answer[c] for c in columns} == {c: row[c] for c in columns}
    assert answer["prompt_tokens"] > 0 and answer["cost_usd"] == pytest.approx((answer["prompt_tokens"] + 2 * answer["completion_tokens"]) / 1e6)
    assert answer["store"] == str(site["link"]) and answer["version"] == client.get("/health").json()["version"]


def test_ask_streams_tokens_then_the_row(client):
    whole = client.post("/ask", json={"question": "Who was the president of Freedonia in 1933?", "k": 2, "max_tokens": 32}).json()
    with client.stream("POST", "/ask", json={"question": "Who was the president of Freedonia in 1933?", "k": 2, "max_tokens": 32, "stream": True}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        got = events(response)
    names = [name for name, _ in got]
    assert names[0] == "sources" and names[-1] == "answer" and set(names[1:-1]) == {"token"} and len(names) > 3
    assert got[0][1]["sources"] == whole["sources"] and got[0][1]["chunk_ids"] == whole["chunk_ids"]
    streamed = "".join(data["text"] for name, data in got if name == "token")
    assert streamed.strip() == whole["answer"] == got[-1][1]["answer"]
    assert got[-1][1]["completion_tokens"] == whole["completion_tokens"]


def test_openai_client_works_unchanged_with_sources(site, client):
    from openai import OpenAI

    openai = OpenAI(base_url=f"{site['server'].url}/v1", api_key="unused")
    row = client.post("/ask", json={"question": CAPITAL, "k": 3, "max_tokens": 24}).json()
    response = openai.chat.completions.create(
        model="smollm2-135m-instruct", messages=[{"role": "user", "content": CAPITAL}], max_tokens=24, extra_body={"k": 3}
    )
    assert response.choices[0].message.content == row["answer"] and response.choices[0].finish_reason == row["finish_reason"]
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (row["prompt_tokens"], row["completion_tokens"])
    assert [s["chunk_id"] for s in response.model_extra["sources"]] == row["chunk_ids"]
    assert response.model_extra["citations"] == row["citations"] and isinstance(row["citations_dropped"], int)
    stream = openai.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": CAPITAL}],
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"k": 3},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == row["answer"]
    assert [s["chunk_id"] for s in chunks[0].model_extra["sources"]] == row["chunk_ids"]
    assert chunks[-1].usage.completion_tokens == row["completion_tokens"]
    assert next(c for c in chunks if c.choices and c.choices[0].finish_reason).model_extra["citations"] == row["citations"]
    assert [m.id for m in openai.models.list()] == ["smollm2-135m-instruct"]


def test_twenty_simultaneous_requests_run_in_one_engine_batch(client, site):
    before = metrics(client)

    async def burst():
        async with httpx.AsyncClient(base_url=site["server"].url, timeout=600) as c:
            questions = [f"{q} ({i})" for i, q in enumerate([CAPITAL, "What is Freedonia's national dish?"] * 10)]
            return await asyncio.gather(*[c.post("/ask", json={"question": q, "k": 2, "max_tokens": 48, "ignore_eos": True}) for q in questions])

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 20
    assert all(r.json()["completion_tokens"] == 48 for r in responses)
    after = metrics(client)

    def steps(bucket: str) -> float:  # engine steps in the burst that ran at most `bucket` requests
        key = f'ragbatch_engine_running_requests_bucket{{le="{bucket}"}}'
        return after[key] - before.get(key, 0.0)

    total = steps("+Inf")
    assert total > 0
    print(
        f"engine steps {total:.0f}, running >1: {total - steps('1.0'):.0f}, >8: {total - steps('8.0'):.0f}; max {after['ragbatch_engine_max_running_requests']:.0f}"
    )
    assert total - steps("1.0") > 0  # the engine ran several requests in one step: not one after the other
    assert total - steps("8.0") > 0  # more than eight at once


def test_bad_input_gets_its_status_and_field(client):
    def field(response) -> list:
        assert response.status_code == 422, response.text
        return [tuple(d["loc"]) for d in response.json()["detail"]]

    assert field(client.post("/ask", json={"k": 2})) == [("body", "question")]
    assert field(client.post("/ask", json={"question": CAPITAL, "k": 0})) == [("body", "k")]
    assert field(client.post("/ask", json={"question": "   "})) == [("body", "question")]
    assert field(client.post("/search", json={"question": CAPITAL, "retrieval": "fuzzy"})) == [("body", "retrieval")]
    assert field(client.post("/search", json={"question": CAPITAL, "colour": "red"})) == [("body", "colour")]
    unknown = client.post("/search", json={"question": CAPITAL, "where": {"colour": "red"}})
    assert field(unknown) == [("body", "where")]
    assert unknown.json()["detail"][0]["msg"].startswith("where colour: chunks have no such field")  # the field, not a CLI option
    assert field(client.post("/ask", json={"question": CAPITAL, "max_tokens": 4096})) == [("body", "max_tokens")]
    assert field(client.post("/ask", content=b"{not json", headers={"content-type": "application/json"}))[0][0] == "body"
    assert field(client.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "system", "content": "hi"}]})) == [("body", "messages")]

    huge = "Why? " * 3000
    for route, body in (("/ask", {"question": huge}), ("/v1/chat/completions", {"messages": [{"role": "user", "content": huge}]})):
        response = client.post(route, json=body)
        assert response.status_code == 413, response.text
        detail = response.json()
        assert detail["prompt_tokens"] > detail["budget"] == 2048 - 128 and detail["context_window"] == 2048
        assert f"take {detail['prompt_tokens']} tokens" in detail["detail"]


def test_client_gone_mid_stream_aborts_its_generation(client):
    before = metrics(client)
    body = {"question": CAPITAL, "k": 2, "max_tokens": 1500, "ignore_eos": True, "stream": True}
    with client.stream("POST", "/ask", json=body) as response:
        tokens = 0
        for line in response.iter_lines():
            tokens += line.startswith("event: token")
            if tokens == 3:
                break  # leaving the block closes the connection
    while True:  # until vLLM no longer tracks the request
        now = metrics(client)
        if now["ragbatch_engine_unfinished_requests"] == 0 and now["ragbatch_engine_requests_in_flight"] == 0:
            break
        time.sleep(0.5)
    assert now["ragbatch_generations_aborted_total"] - before.get("ragbatch_generations_aborted_total", 0) == 1
    # Stopped early: far fewer than the 1,500 tokens it would have generated to finish.
    assert now["ragbatch_engine_generation_tokens_total"] - before["ragbatch_engine_generation_tokens_total"] < 1500
    assert now["ragbatch_completion_tokens_total"] == before["ragbatch_completion_tokens_total"]


def test_hot_reload_when_the_link_switches(site, client):
    old = client.get("/health").json()["version"]
    reloads = metrics(client).get("ragbatch_store_reloads_total", 0.0)
    body = {"question": CAPITAL, "k": 1, "max_tokens": 64, "ignore_eos": True, "stream": True}
    with client.stream("POST", "/ask", json=body) as response:
        lines = response.iter_lines()
        first = [next(lines), next(lines)]
        assert first[0] == "event: sources" and json.loads(first[1][6:])["version"] == old
        # In flight on the old version, the link switches to a new one (another store: forced).
        version = publish(site["next"], site["published"], force=True).version
        fresh = client.post("/search", json={"question": CAPITAL, "k": 1}).json()
        assert fresh["version"] == version.name != old
        assert "Marsovia" in fresh["results"][0]["text"]
        answer = client.post("/ask", json={"question": CAPITAL, "k": 1, "max_tokens": 24}).json()
        assert answer["version"] == version.name and answer["chunk_ids"] == [fresh["results"][0]["chunk_id"]]
        rest = [(name, data) for name, data in events_of(lines)]
    # The request in flight finished on the old version, complete.
    assert rest[-1][0] == "answer" and rest[-1][1]["version"] == old and rest[-1][1]["completion_tokens"] == 64
    assert client.get("/health").json()["version"] == version.name
    assert metrics(client)["ragbatch_store_reloads_total"] == reloads + 1
    assert site["server"].proc.poll() is None  # nothing restarted


def events_of(lines):
    name = None
    for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            yield name, json.loads(line[6:])
