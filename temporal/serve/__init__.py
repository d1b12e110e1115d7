"""``harx serve``: a local web page to look at runs and their mistakes and to classify videos.

    from harx.temporal.serve import create_app, serve
    serve(runs=None, host="127.0.0.1", port=8000)       # what `harx serve` runs
    app = create_app()                                 # the ASGI app, for any ASGI server or a test client

Safe by default: it binds to 127.0.0.1; another address needs a token (``--token``), since the
page then answers any machine that can reach it. Paths never come from the client (see
:mod:`temporal.serve.catalog`), uploads are streamed to a temporary folder with a size limit and deleted
when done (:mod:`temporal.serve.uploads`), and predictions share one model per run and queue with a bound
(:mod:`temporal.serve.predicting`).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from harx.features.errors import InvalidOptionError

from .app import create_app

__all__ = ["check_address", "create_app", "serve"]


def check_address(host: str, token: str | None) -> str | None:
    """A warning for an address other machines can reach (None for loopback).

    Raises:
        InvalidOptionError: such an address without a token.
    """
    loopback = host == "localhost"
    try:
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if loopback:
        return None
    if not token:
        raise InvalidOptionError(f"--host {host} lets other machines reach the page and run models on uploads; give "
                                 "--token SECRET too (clients then send it), or keep the default 127.0.0.1")
    return (f"serving on {host}: reachable from other machines; requests must carry the token "
            "(?token=... or Authorization: Bearer ...)")


def _check_free(host: str, port: int) -> None:
    """One line now, instead of uvicorn's error after the address was printed, when the port is taken."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as err:
        raise InvalidOptionError(f"cannot listen on {host}:{port} ({err.strerror or err}); another program (or "
                                 "another harx serve) has it: choose another --port") from None


def serve(runs: list[str | Path] | None = None, *, host: str = "127.0.0.1", port: int = 8000,
          token: str | None = None, max_upload_mb: float = 200, queue: int = 32, device: str = "auto",
          on_ready=None) -> None:
    """Run the page until interrupted (uvicorn). ``on_ready(url)`` is called with the address."""
    import uvicorn

    if not 1 <= int(port) <= 65535:
        raise InvalidOptionError(f"--port must be 1-65535, got {port}")
    if max_upload_mb <= 0:
        raise InvalidOptionError(f"--max-upload-mb must be > 0, got {max_upload_mb}")
    _check_free(host, int(port))
    loopback = check_address(host, token) is None
    app = create_app(runs, token=token, max_upload_mb=max_upload_mb, queue=queue, device=device,
                     allowed_hosts=sorted({host, "localhost", "127.0.0.1", "::1"}) if loopback else None)
    config = uvicorn.Config(app, host=host, port=int(port), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    if on_ready is not None:
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        on_ready(f"http://{shown}:{port}/" + (f"?token={token}" if token else ""))
    server.run()
