"""A real Chroma server (`chroma run`, shipped by the chromadb package) in a subprocess."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMA = Path(sys.executable).parent / "chroma"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ChromaServer:
    """`chroma run --path PATH --port PORT` until the context ends; `url` once it answers."""

    def __init__(self, path: Path, port: int | None = None):
        self.path, self.port = Path(path), port or free_port()
        self.url = f"http://localhost:{self.port}"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> ChromaServer:
        self.path.mkdir(parents=True, exist_ok=True)
        self.log = open(self.path.parent / f"chroma-{self.port}.log", "wb")
        self.process = subprocess.Popen([str(CHROMA), "run", "--path", str(self.path), "--port", str(self.port)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/api/v2/heartbeat", timeout=2).read()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"chroma run did not start: see {self.log.name}") from None
                time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
