"""What the server lets in: a key, a bounded number of requests, bounded bodies and time.

An ASGI middleware in front of every route, so a refused request costs no parsing, no
tokenising and no retrieval:

- `api_key`: every route but /health needs `Authorization: Bearer KEY` (what OpenAI's
  clients send for `api_key`); missing or wrong: 401.
- `max_concurrency` requests run at once (a streamed answer holds its slot until its
  last event, or until the client goes away); up to `max_queue` more wait for a slot; past
  that, 429 with Retry-After. /health and /metrics are never queued.
- `max_body_bytes`: a larger body gets 413 before the app reads it.
- `request_timeout` seconds: a request still running then is cancelled (its generation
  aborted in the engine): 504 if nothing was sent yet, else its stream ends.

Errors have OpenAI's shape, {"error": {"message", "type", "code"}}, which its clients raise.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from dataclasses import dataclass

UNGUARDED = ("/health",)  # load balancers probe it without a key
UNQUEUED = ("/health", "/metrics")


@dataclass(frozen=True)
class Limits:
    api_key: str | None = None
    max_concurrency: int = 64
    max_queue: int = 256
    max_body_bytes: int = 1_000_000
    request_timeout: float | None = 600.0  # None: no limit
    max_question_chars: int = 20_000  # checked by the routes, before any tokenising
    max_answer_tokens: int = 4096  # a request's max_tokens


def error_body(message: str, kind: str, code: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class Guard:
    def __init__(self, app, limits: Limits):
        self.app, self.limits = app, limits
        self._slots = asyncio.Semaphore(limits.max_concurrency)
        self.waiting = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        headers = dict(scope["headers"])
        if self.limits.api_key and path not in UNGUARDED and not self._authorised(headers):
            refused = error_body("missing or wrong API key: send Authorization: Bearer KEY", "invalid_request_error", "invalid_api_key")
            return await _respond(send, 401, refused, {b"www-authenticate": b"Bearer"})
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limits.max_body_bytes:
            return await _respond(send, 413, self._too_large(int(length)))
        # The body is read here, counted as it arrives (a body sent without a length), and
        # handed to the app whole: a refused one is never parsed.
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limits.max_body_bytes:
                return await _respond(send, 413, self._too_large(len(body)))
        receive = _replay(bytes(body), receive)
        if path in UNQUEUED:
            return await self.app(scope, receive, send)
        if self._slots.locked() and self.waiting >= self.limits.max_queue:
            _count(scope, "rejected")
            message = f"busy: {self.limits.max_concurrency} requests running and {self.waiting} waiting; retry shortly"
            return await _respond(send, 429, error_body(message, "rate_limit_exceeded", "too_many_requests"), {b"retry-after": b"1"})
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        try:
            await self._run(scope, receive, send)
        finally:
            self._slots.release()

    def _authorised(self, headers: dict) -> bool:
        given = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, key = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(key.strip().encode(), (self.limits.api_key or "").encode())

    def _too_large(self, size: int) -> dict:
        return error_body(
            f"request body of {size}+ bytes is over this server's limit of {self.limits.max_body_bytes}", "invalid_request_error", "body_too_large"
        )

    async def _run(self, scope, receive, send) -> None:
        started = False

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, receive, tracking_send), self.limits.request_timeout)
        except TimeoutError:
            _count(scope, "timed_out")
            if not started:
                message = f"the request ran past this server's limit of {self.limits.request_timeout:g} s and was stopped"
                await _respond(send, 504, error_body(message, "timeout", "request_timeout"))


def _replay(body: bytes, receive):
    """The body once, then the connection's own messages (a disconnect, say)."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _count(scope, what: str) -> None:
    metrics = getattr(scope["app"].state, "metrics", None)  # set when the lifespan starts
    if metrics is not None:
        getattr(metrics, what).inc()


async def _respond(send, status: int, body: dict, headers: dict | None = None) -> None:
    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *(headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})
