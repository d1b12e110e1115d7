"""A fake dataset server on 127.0.0.1 for download tests: serves bytes by file name, honours
(or ignores) Range, may omit Content-Length or cut a file once; records what it was asked."""

from __future__ import annotations

import http.server
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class ServerState:
    """What the fake server serves and how it misbehaves; it records what it was asked."""

    files: dict[str, bytes] = field(default_factory=dict)
    omit_length: bool = False
    ignore_range: bool = False
    drop_once: set[str] = field(default_factory=set)  # names to cut halfway, once each
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)


class _Handler(http.server.BaseHTTPRequestHandler):
    state: ServerState  # set per server in the fixture

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        state = self.server.state  # type: ignore[attr-defined]
        name = self.path.rsplit("/", 1)[-1]
        rng = self.headers.get("Range")
        state.requests.append((self.path, rng))
        if name not in state.files:
            self.send_error(404)
            return
        body, start = state.files[name], 0
        if rng and not state.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        if not state.omit_length:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if name in state.drop_once:
            state.drop_once.discard(name)
            payload = payload[: len(payload) // 2]
        self.wfile.write(payload)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args) -> None:
        """Keep test output quiet."""


@contextmanager
def serve(files: dict[str, bytes], prefix: str = "/data/"):
    """Yield ``(state, base_url)`` of a server for ``files``; shut down afterwards."""
    state = ServerState(files=files)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}{prefix}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def closed_port_url() -> str:
    """A URL on a port nobody listens on: connecting fails at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


