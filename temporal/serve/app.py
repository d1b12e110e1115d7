"""The ASGI app of ``harx serve`` (Starlette): one page, a JSON API, videos.

Routes (every ``RID`` is an id from ``/api/runs``, every ``K`` a row of a run's test samples):

    GET  /                                  the page (plain HTML + JS, no build step)
    GET  /api/runs                          the finished runs, newest first
    GET  /api/runs/RID                      metrics with protocol, curves, confusion, compare reports
    GET  /api/runs/RID/pictures/NAME        curves | confusion (PNG, as harx fit drew them)
    GET  /api/runs/RID/samples?true=A&predicted=B   test samples (a confusion cell: its mistakes)
    GET  /api/runs/RID/samples/K/video      the sample's video as H.264 MP4 (browsers play it)
    GET  /api/runs/RID/samples/K/timeline   harx predict's JSON for that video (label timeline)
    POST /api/predict                       multipart field ``video`` (+ optional ``run``): the
                                            JSON object ``harx predict --json`` prints, plus
                                            ``annotated``: the URL of the video with labels drawn
    GET  /api/annotated/ID                  that video
    WS   /api/live?run=RID                  live recognition (:mod:`temporal.serve.live`): binary
                                            frames in (float64 time in ms + JPEG), JSON labels out

Errors are JSON ``{"error": "one line"}`` with a 4xx status for the client's mistakes (an unknown
id: 404, a non-video or truncated upload: 422, too large: 413, busy: 503). With a token, every
request must carry it (``Authorization: Bearer TOKEN``, or ``?token=TOKEN`` for links the page
makes).
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import shutil
import tempfile
import threading
from pathlib import Path

from harx.features.errors import HarxError

from .catalog import RunCatalog, run_id
from .predicting import PredictionService
from .uploads import receive_upload

STATIC = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}


class ServerState:
    """What the app holds between requests: the catalog, the shared predictors, the videos it made."""

    def __init__(self, runs: list[str | Path] | None, *, token: str | None, max_upload_mb: float,
                 queue: int, device: str):
        self.catalog = RunCatalog(runs)
        self.token = token
        self.max_upload = int(max_upload_mb * 2**20)
        self.service = PredictionService(queue=queue, device=device)
        self.scratch = Path(tempfile.mkdtemp(prefix="harx-serve-"))
        self.annotated: dict[str, Path] = {}
        self.transcodes = asyncio.Semaphore(2)
        self.live_sessions = 0
        self._made: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)

    def keep_annotated(self, aid: str, path: Path, keep: int = 50) -> None:
        """Remember an annotated video; the oldest beyond ``keep`` are deleted (disk stays bounded)."""
        self.annotated[aid] = path
        while len(self.annotated) > keep:
            old = next(iter(self.annotated))
            self.annotated.pop(old).unlink(missing_ok=True)

    def lock_for(self, key: str) -> threading.Lock:
        with self._lock:
            return self._made.setdefault(key, threading.Lock())


def create_app(runs: list[str | Path] | None = None, *, token: str | None = None, max_upload_mb: float = 200,
               queue: int = 32, device: str = "auto", allowed_hosts: list[str] | None = None):
    """The Starlette app; ``runs``: folders to look for run folders in (default: ``harx runs``');
    ``allowed_hosts``: the ``Host`` names it answers to (None: any; :func:`serve` gives the
    loopback names when it binds to loopback)."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from starlette.routing import Route, WebSocketRoute

    from .live import live_socket

    state = ServerState(runs, token=token, max_upload_mb=max_upload_mb, queue=queue, device=device)

    def error(message: str, status: int) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def index(request):
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    async def static(request):
        name = request.path_params["name"]
        if name not in STATIC_FILES:
            return error("not found", 404)
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name])

    async def runs_list(request):
        return JSONResponse({"runs": state.catalog.refresh()})

    async def run_details(request):
        return JSONResponse(state.catalog.details(request.path_params["rid"]))

    async def picture(request):
        return FileResponse(state.catalog.picture(request.path_params["rid"], request.path_params["name"]),
                            media_type="image/png")

    async def samples(request):
        rid = request.path_params["rid"]
        rows = state.catalog.test_samples(rid)
        want_true, want_pred = request.query_params.get("true"), request.query_params.get("predicted")
        rows = [s for s in rows if (want_true is None or s.true_label == want_true)
                and (want_pred is None or s.predicted_label == want_pred)]
        return JSONResponse({"samples": [s.as_dict() for s in rows]})

    async def sample_video(request):
        rid, k = request.path_params["rid"], int(request.path_params["k"])
        path, _ = await asyncio.to_thread(state.catalog.sample_video, rid, k)   # reads the run's CSV and cache
        out = state.scratch / f"{rid}-{k}.mp4"
        async with state.transcodes:    # not behind the predictions: the page plays it meanwhile
            await asyncio.to_thread(_transcode, path, out, state.lock_for(str(out)))
        return FileResponse(out, media_type="video/mp4")

    async def sample_timeline(request):
        rid, k = request.path_params["rid"], int(request.path_params["k"])
        path, frames = await asyncio.to_thread(state.catalog.sample_video, rid, k)
        run = state.catalog.run(rid)
        doc = await state.service.run(_predict_one, state.service, run.path, path, None)
        doc["sample_frames"] = list(frames) if frames else None
        return JSONResponse(doc)

    async def predict(request):
        upload = await receive_upload(request, "video", state.max_upload, state.scratch)
        try:
            rid = upload.fields.get("run") or ""
            run = state.catalog.run(rid) if rid else state.catalog.newest()
            if run is None:
                return error("no finished run to predict with; run harx fit (or harx demo) first", 409)
            aid = secrets.token_hex(8)
            target = state.scratch / f"annotated-{aid}.mp4"
            doc = await state.service.run(_predict_one, state.service, run.path, upload.file, target)
            doc["path"] = upload.filename or doc.get("path")
            if doc.get("error"):
                return JSONResponse(doc, status_code=422)
            doc["run"] = run_id(run.path)
            if target.is_file():
                state.keep_annotated(aid, target)
                doc["annotated"] = f"/api/annotated/{aid}"
            return JSONResponse(doc)
        finally:
            upload.discard()

    async def annotated(request):
        aid = request.path_params["aid"]
        if aid not in state.annotated:
            return error("not found", 404)
        return FileResponse(state.annotated[aid], media_type="video/mp4")

    async def live(websocket):
        await live_socket(websocket, state)

    routes = [Route("/", index), Route("/static/{name}", static), Route("/api/runs", runs_list),
              Route("/api/runs/{rid}", run_details), Route("/api/runs/{rid}/pictures/{name}", picture),
              Route("/api/runs/{rid}/samples", samples),
              Route("/api/runs/{rid}/samples/{k:int}/video", sample_video),
              Route("/api/runs/{rid}/samples/{k:int}/timeline", sample_timeline),
              Route("/api/predict", predict, methods=["POST"]), Route("/api/annotated/{aid}", annotated),
              WebSocketRoute("/api/live", live)]

    class RequestGuard:
        """What every request must pass before a route sees it: the token, when one is set; a
        ``Host`` the server answers to (``allowed_hosts``: on 127.0.0.1 a web page elsewhere cannot
        reach it by DNS rebinding); and no other site's ``Origin`` (a page elsewhere cannot post
        uploads or open the live socket through the user's browser; curl sends no Origin)."""

        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            if scope["type"] not in ("http", "websocket"):
                return await self.app(scope, receive, send)
            why = _refusal(scope, state.token, allowed_hosts)
            if why is not None:
                if scope["type"] == "websocket":          # refused before it is accepted (policy violation)
                    return await send({"type": "websocket.close", "code": 1008})
                return await error(why[1], why[0])(scope, receive, send)
            await self.app(scope, receive, send)

    async def harx_error(request, exc):
        # an error that names its HTTP status (unknown id, bad upload, busy) answers with it; another
        # HarxError: the request asked for something that cannot be done
        return error(str(exc), getattr(exc, "status", 422))

    async def http_error(request, exc):
        return error("not found" if exc.status_code == 404 else str(exc.detail), exc.status_code)

    from starlette.exceptions import HTTPException

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            state.close()            # the transcoded and annotated videos go with the server

    app = Starlette(routes=routes, middleware=[Middleware(RequestGuard)],
                    exception_handlers={HarxError: harx_error, HTTPException: http_error}, lifespan=lifespan)
    app.state.harx = state
    return app


def _refusal(scope, token: str | None, allowed_hosts: list[str] | None) -> tuple[int, str] | None:
    """``(status, message)`` when a request may not pass (see RequestGuard), else None."""
    from urllib.parse import urlsplit

    headers = dict(scope.get("headers") or [])
    host = headers.get(b"host", b"").decode("latin-1")
    if allowed_hosts is not None and urlsplit(f"//{host}").hostname not in allowed_hosts:
        return 400, f"this server answers to {', '.join(allowed_hosts)}, not to host {host!r}"
    origin = headers.get(b"origin")
    if origin is not None and origin != b"null" and urlsplit(origin.decode("latin-1")).netloc != host:
        return 403, "requests from another site's page are refused"
    if token and not _has_token(scope, token):
        return 401, "a token is needed: add ?token=... or Authorization: Bearer ..."
    return None


def _has_token(scope, token: str) -> bool:
    from urllib.parse import parse_qs

    headers = dict(scope.get("headers") or [])
    given = headers.get(b"authorization", b"").decode("latin-1")
    if given.startswith("Bearer "):
        given = given[7:]
    else:
        given = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token") or [""])[0]
    return hmac.compare_digest(given.encode(), token.encode())


def _predict_one(service: PredictionService, run_dir: Path, video: Path, annotate_to: Path | None) -> dict:
    """harx predict's JSON for one video (and the annotated video, when asked), in a worker thread."""
    predictor = service.predictor(run_dir)
    with service.lock(predictor):
        item = next(iter(predictor.predict_files([video], annotate=annotate_to)))
    doc = item.prediction.as_dict(predictor.protocol)
    if item.annotate_error:
        doc["annotate_error"] = item.annotate_error
    return doc


def _transcode(src: Path, out: Path, lock: threading.Lock) -> None:
    """``src`` as H.264 MP4 at ``out`` (once; browsers do not play KTH's MPEG-4 AVI)."""
    from harx.extract.encode import write_h264
    from harx.extract.stream import FrameStream

    with lock:
        if out.is_file():
            return
        tmp = out.with_name(out.name + ".tmp.mp4")
        with FrameStream(src) as frames:
            write_h264(tmp, iter(frames), (frames.width, frames.height), frames.rate, crf=23, preset="veryfast")
        tmp.replace(out)
