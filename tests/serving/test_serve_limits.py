"""`ragbatch serve` for real traffic, over real HTTP: an API key, a bounded number of
requests (429 past the queue), bounded bodies, questions, max_tokens and time, unknown
models 404, and a cron `index` of the served local store that finishes while the server
runs and is served without a restart.

One server for the module, with tight limits (one slot, no queue) so each is reached."""

import json
import os
import socket
import time

import httpx
import pytest
from helpers import FACTS, Server
from helpers import ragbatch_cli as ragbatch

pytestmark = pytest.mark.slow

KEY = "s3cret-key"
TIMEOUT = 8
LIMITS = [
    "--api-key", KEY, "--max-concurrency", "1", "--max-queue", "0", "--max-body-bytes", "4000",
    "--max-question-chars", "300", "--max-answer-tokens", "1800", "--request-timeout", str(TIMEOUT),
]  # fmt: skip
SLOW = {"question": "What is the capital of Freedonia?", "max_tokens": 1800, "ignore_eos": True}  # runs well past TIMEOUT on a CPU


@pytest.fixture(scope="module")
def site(tmp_path_factory, indexed_store):
    store = indexed_store({"freedonia.txt": "\n".join(FACTS) + "\n"}, chunk_size=24, chunk_overlap=0)
    root = tmp_path_factory.mktemp("limits")
    env = {**os.environ, "RAGBATCH_CACHE": str(root / "cache"), "HF_HUB_OFFLINE": "1"}
    server = Server(store, env, root / "server.log", ["--max-model-len", "2048", *LIMITS])
    yield {"store": store, "server": server, "env": env}
    server.stop()


@pytest.fixture(scope="module")
def client(site):
    with httpx.Client(base_url=site["server"].url, headers={"Authorization": f"Bearer {KEY}"}, timeout=600) as c:
        yield c


def test_every_route_but_health_needs_the_key(site, client):
    url = site["server"].url
    assert httpx.get(f"{url}/health").status_code == 200
    routes = [("POST", "/search", {"question": "capital"}), ("POST", "/ask", {"question": "capital"}), ("GET", "/v1/models", None), ("GET", "/metrics", None)]
    for method, path, body in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            refused = httpx.request(method, url + path, json=body, headers=headers)
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key", (path, headers)
    found = client.post("/search", json={"question": "capital of Freedonia", "k": 1})
    assert found.status_code == 200 and found.json()["results"][0]["source"].startswith("freedonia.txt")


def test_the_openai_client_sends_its_key_and_an_unknown_model_gets_404(site):
    from openai import AuthenticationError, NotFoundError, OpenAI

    url = f"{site['server'].url}/v1"
    openai = OpenAI(base_url=url, api_key=KEY)
    model = openai.models.list().data[0].id
    reply = openai.chat.completions.create(model=model, messages=[{"role": "user", "content": "What is the capital of Freedonia?"}], max_tokens=16)
    assert reply.choices[0].message.content
    with pytest.raises(NotFoundError, match="The model `gpt-4o` does not exist"):
        openai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "capital?"}], max_tokens=4)
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=url, api_key="wrong").models.list()


def test_bodies_questions_and_max_tokens_are_bounded_before_any_work(client):
    big = client.post("/search", content=json.dumps({"question": "capital " * 1000}), headers={"content-type": "application/json"})
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(10):
            yield b" " * 1000
        yield json.dumps({"question": "capital"}).encode()

    streamed = client.post("/search", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    for route in ("/search", "/ask"):
        long = client.post(route, json={"question": "why " * 100})  # 400 characters
        assert long.status_code == 413 and "at most 300" in long.text, route
    many = client.post("/ask", json={"question": "capital?", "max_tokens": 1801})
    assert many.status_code == 422 and many.json()["detail"][0]["loc"] == ["body", "max_tokens"]


def metric(client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_past_the_slot_and_queue_429_and_a_client_that_goes_away_frees_its_slot(client):
    with client.stream("POST", "/ask", json={**SLOW, "stream": True}) as held:
        lines = held.iter_lines()  # kept: a dropped line iterator closes the response
        assert next(lines) == "event: sources"  # running: the one slot is taken
        busy = client.post("/search", json={"question": "capital"})
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1" and busy.json()["error"]["code"] == "too_many_requests"
    # The stream was closed mid-answer: its slot comes free, its generation is aborted.
    deadline = time.monotonic() + 30
    while (status := client.post("/search", json={"question": "capital"}).status_code) == 429 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert status == 200
    assert metric(client, "ragbatch_requests_rejected_total") >= 1 and metric(client, "ragbatch_generations_aborted_total") >= 1


def test_a_request_past_the_timeout_is_stopped_with_504(client):
    started = time.monotonic()
    stopped = client.post("/ask", json=SLOW)
    assert stopped.status_code == 504 and stopped.json()["error"]["code"] == "request_timeout"
    assert TIMEOUT <= time.monotonic() - started < TIMEOUT + 30
    assert client.post("/search", json={"question": "capital"}).status_code == 200  # its slot is free again
    assert metric(client, "ragbatch_requests_timed_out_total") == 1


def test_a_cron_index_of_the_served_store_finishes_and_is_served_without_restart(site, client):
    store = site["store"]
    old = client.get("/health").json()["version"]
    question = {"question": "Where does the Freedonian parliament meet?", "k": 1}
    assert client.post("/search", json=question).json()["results"][0]["source"].startswith("freedonia.txt")
    (store.parent / "news.txt").write_text("The Freedonian parliament meets in the old opera house of Marsovia.\n")
    run = ragbatch("index", str(store.parent / "freedonia.txt"), str(store.parent / "news.txt"), "--store", str(store), "--json", env=site["env"], timeout=600)
    assert run.returncode == 0, run.stderr  # the server holds no lock on the store
    found = client.post("/search", json=question).json()  # the first batch after the run reloads
    assert found["version"] != old and found["results"][0]["source"].startswith("news.txt")
    assert client.get("/health").json()["version"] == found["version"]
    assert "now serving version" in site["server"].log.read_text()


def test_listening_beyond_loopback_without_a_key_warns(site):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {key: value for key, value in site["env"].items() if key != "RAGBATCH_API_KEY"}
        result = ragbatch("serve", "--store", str(site["store"]), "--host", "0.0.0.0", "--port", str(port), env=env, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "warning: listening on 0.0.0.0 without an API key" in result.stderr and "cannot listen there" in result.stderr
