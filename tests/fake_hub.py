"""A stand-in for the Hugging Face hub on 127.0.0.1: serves model folders to
huggingface_hub's snapshot_download and records every request (tests only)."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


class FakeHub:
    """`models`: repo id -> folder to serve; `tokens`: repo id -> the token a gated repo wants."""

    def __init__(self, models: dict[str, Path], tokens: dict[str, str] | None = None):
        self.models = {repo: Path(folder) for repo, folder in models.items()}
        self.tokens = tokens or {}
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub._answer(self, body=False)

            def do_GET(self):
                hub._answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def _files(self, repo):
        folder = self.models[repo]
        return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())

    @staticmethod
    def _sha(repo):
        return hashlib.sha1(repo.encode()).hexdigest()

    def _answer(self, handler, body: bool):
        path = unquote(urlparse(handler.path).path)
        self.requests.append(f"{handler.command} {path}")
        for repo in self.models:
            sha = self._sha(repo)
            if repo in self.tokens and f"/{repo}/" in f"{path}/":
                if handler.headers.get("Authorization") != f"Bearer {self.tokens[repo]}":
                    return self._refuse(handler, 403, "GatedRepo")
            if path.startswith(f"/api/models/{repo}/revision/"):
                return self._send(
                    handler, body, json.dumps({"id": repo, "sha": sha, "siblings": [{"rfilename": f} for f in self._files(repo)]}).encode(), "application/json"
                )
            if path.startswith(f"/api/models/{repo}/tree/"):
                entries = [
                    {
                        "type": "file",
                        "path": f,
                        "size": (self.models[repo] / f).stat().st_size,
                        "oid": hashlib.sha1((self.models[repo] / f).read_bytes()).hexdigest(),
                    }
                    for f in self._files(repo)
                ]
                return self._send(handler, body, json.dumps(entries).encode(), "application/json")
            prefix = f"/{repo}/resolve/"
            if path.startswith(prefix):
                rel = path[len(prefix) :].split("/", 1)[1]
                file = self.models[repo] / rel
                if file.is_file():
                    data = file.read_bytes()
                    etag = hashlib.sha1(data).hexdigest()
                    return self._send(handler, body, data, "application/octet-stream", {"X-Repo-Commit": sha, "ETag": f'"{etag}"'})
        self._refuse(handler, 404, "RepoNotFound")

    @staticmethod
    def _refuse(handler, status, code):
        handler.send_response(status)
        handler.send_header("X-Error-Code", code)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    @staticmethod
    def _send(handler, body, data, content_type, headers=None):
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        if body:
            handler.wfile.write(data)
