"""The serve Guard (our glue) in front of a tiny app of our own, under a real uvicorn over
real HTTP: fast, and each limit reached on purpose. The same limits in front of the real
pipeline are in test_serve_limits.py."""

import asyncio
import threading
import time

import httpx
import pytest
import uvicorn
from helpers import free_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from ragbatch.serving.limits import Guard, Limits
from ragbatch.serving.options import is_loopback

KEY = "k3y"


async def slow(request: Request):
    seconds = float(request.query_params.get("seconds", "30"))

    async def ticks():
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            yield b"tick\n"
            await asyncio.sleep(0.1)

    return StreamingResponse(ticks())


async def sleep(request: Request):
    await asyncio.sleep(float(request.query_params["seconds"]))
    return JSONResponse({"slept": True})


async def echo(request: Request):
    return JSONResponse({"bytes": len(await request.body())})


async def health(request: Request):
    return JSONResponse({"status": "ok"})


@pytest.fixture(scope="module")
def url():
    app = Starlette(
        routes=[Route("/slow", slow), Route("/sleep", sleep), Route("/echo", echo, methods=["POST"]), Route("/health", health), Route("/metrics", health)]
    )
    app.add_middleware(Guard, limits=Limits(api_key=KEY, max_concurrency=1, max_queue=1, max_body_bytes=1000, request_timeout=3))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def client(url, key=KEY):
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=30)


def test_the_key_is_needed_everywhere_but_health(url):
    with client(url, key=None) as anonymous, client(url, key="wrong") as wrong, client(url) as right:
        assert anonymous.get("/health").status_code == 200
        for c in (anonymous, wrong):
            refused = c.post("/echo", content=b"{}")
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
            assert refused.headers["www-authenticate"] == "Bearer" and c.get("/metrics").status_code == 401
        assert right.post("/echo", content=b"x" * 1000).json() == {"bytes": 1000}


def test_bodies_over_the_limit_get_413_with_or_without_a_length(url):
    with client(url) as c:
        assert c.post("/echo", content=b"x" * 1001).status_code == 413
        chunked = c.post("/echo", content=iter([b"x" * 600, b"x" * 600]))  # no Content-Length
        assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "body_too_large"
        assert c.post("/echo", content=iter([b"x" * 500, b"x" * 500])).json() == {"bytes": 1000}


def test_past_the_slot_and_the_queue_429_and_a_gone_client_frees_its_slot(url):
    with client(url) as a, client(url) as b, client(url) as c:
        with a.stream("GET", "/slow") as running:
            lines = running.iter_lines()  # kept: a dropped line iterator closes the response
            assert next(lines) == "tick"  # the one slot
            waiting = threading.Thread(target=lambda: b.get("/slow", params={"seconds": 0.2}))
            waiting.start()  # the one place in the queue
            time.sleep(0.5)
            busy = c.post("/echo", content=b"{}")
            assert busy.status_code == 429 and busy.headers["retry-after"] == "1" and busy.json()["error"]["code"] == "too_many_requests"
            assert c.get("/health").status_code == 200 and c.get("/metrics").status_code == 200  # never queued
        # The running client went away: the queued request runs, then the slot is free.
        waiting.join(timeout=10)
        assert not waiting.is_alive() and c.post("/echo", content=b"{}").status_code == 200


def test_a_request_past_the_timeout_gets_504_or_its_stream_ends(url):
    with client(url) as c:
        started = time.monotonic()
        stopped = c.get("/sleep", params={"seconds": 30})
        assert stopped.status_code == 504 and stopped.json()["error"]["code"] == "request_timeout"
        assert 3 <= time.monotonic() - started < 10
        lines = []
        with pytest.raises(httpx.RemoteProtocolError), c.stream("GET", "/slow", params={"seconds": 30}) as cut:
            lines.extend(cut.iter_lines())  # the stream had started: it is cut, not answered 504
        assert 10 < len(lines) < 60 and 3 <= time.monotonic() - started < 20
        assert c.post("/echo", content=b"{}").status_code == 200


def test_what_counts_as_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("example.com")
