"""A local static file server (the TLC mirror's layout) with injectable faults, for tests.

``FileServer(root)`` serves ``root/<path>`` on 127.0.0.1; ``fail_next(path, status)`` answers the
next request for ``path`` with an error, ``truncate(path)`` serves it cut short with a matching
Content-Length (a corrupt file, not a network error), ``gather(n, timeout)`` holds every answer
back until ``n`` requests are in flight (or ``timeout`` passed), so the overlap of concurrent
clients is measured without depending on their timing (``max_in_flight``, of held paths).
Every request is recorded.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from testsupport._process import Service


@dataclass(frozen=True)
class Served:
    path: str
    status: int


class FileServer(Service):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[Served] = []
        self._failures: dict[str, list[int]] = {}
        self._truncated: set[str] = set()
        self._gather: tuple[int, float, str] | None = None
        self._in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def fail_next(self, path: str, status: int, times: int = 1) -> None:
        with self._lock:
            self._failures.setdefault(path, []).extend([status] * times)

    def truncate(self, path: str) -> None:
        with self._lock:
            self._truncated.add(path)

    def gather(self, requests: int, timeout: float, *, prefix: str = "/") -> None:
        """Hold each answer for a path under ``prefix`` until ``requests`` of them are in
        flight, at most ``timeout`` s (``clear()`` releases every held answer)."""
        with self._lock:
            self._gather = (requests, timeout, prefix)

    def clear(self) -> None:
        with self._lock:
            self._failures.clear()
            self._truncated.clear()
            self.requests.clear()
            self._gather = None
            self.max_in_flight = 0
            self._changed.notify_all()  # held answers go now

    def gets(self, path: str) -> int:
        """How many requests for ``path`` were answered 200."""
        return sum(1 for r in self.requests if r.path == path and r.status == 200)

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        held = self._gather is not None and path.startswith(self._gather[2])
        with self._changed:
            if held:
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
                self._changed.notify_all()
            gather = self._gather
            if held and gather is not None:
                wanted, timeout, _ = gather
                deadline = time.monotonic() + timeout
                while (
                    self._gather is gather
                    and self._in_flight < wanted
                    and time.monotonic() < deadline
                ):
                    self._changed.wait(deadline - time.monotonic())
        try:
            self._respond(handler)
        finally:
            if held:
                with self._changed:
                    self._in_flight -= 1

    def _respond(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        with self._lock:
            queued = self._failures.get(path)
            status = queued.pop(0) if queued else 200
            truncated = path in self._truncated
        target = (self.root / path.lstrip("/")).resolve()
        if status == 200 and (self.root.resolve() not in target.parents or not target.is_file()):
            status = 404
        body = b"not found" if status == 404 else b"error"
        if status == 200:
            body = target.read_bytes()
            if truncated:
                body = body[: len(body) // 2]
        with self._lock:
            self.requests.append(Served(path, status))
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Content-Type", "application/octet-stream")
        handler.end_headers()
        handler.wfile.write(body)

    def start(self) -> FileServer:
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                app._answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
