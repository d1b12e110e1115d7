"""Live recognition from a camera: frames in over a websocket, the current action out.

The page sends camera frames as JPEG (a few per second, each with the time it was taken, in the
browser's clock); for each frame the session computes the run's streams as stage one would (the
backbone on the frame for ``rgb``, on ``|frame - frame two before|`` for ``motion``, BlazePose for
``pose``) and keeps the features of the last ``window_s`` seconds; the run's head classifies that
window, calibrated as ``harx predict`` calibrates, and the answer carries the frame's time back,
so the page measures the latency from frame to label.

Frames that arrive while one is being processed are not queued: the session always takes the
newest and drops the others (counted in ``dropped``), so latency stays at one frame's work however
fast the camera sends; the label rate is then what the CPU can do. Differences from a cached
video: the camera's rate sets which frames are neighbours (motion's gap of 2 is two *sent*
frames), and the window is measured in seconds of camera time.
"""

from __future__ import annotations

import io
import time
from collections import deque

import numpy as np

from harx.features.errors import HarxError
from harx.features.schema import is_map_stream, side_by_side


#: the most frames a window holds (a camera sending 30 frames/s for a 10 s window)
MAX_WINDOW_FRAMES = 300
#: the largest frame taken, in pixels (the page sends 320x240)
MAX_FRAME_PIXELS = 1920 * 1080
#: live sessions at once (each holds a window, and a BlazePose graph for pose runs)
MAX_SESSIONS = 4


class LiveSession:
    """One camera's sliding window over one run (see the module docstring). ``lock`` is held while
    the shared predictor is used."""

    def __init__(self, predictor, window_s: float | None = None, lock=None):
        maps = [s.name for s in predictor.streams if is_map_stream(s.name)]
        if maps:
            raise HarxError(f"live recognition does not run map heads yet (this run reads {', '.join(maps)}); "
                            "choose a run on vector streams")
        import threading

        self.predictor = predictor
        self.lock = lock or threading.Lock()
        self.window_s = float(window_s or predictor.window_s)
        self.streams = list(predictor.streams)
        self.gap = max([int(s.spec.get("gap", 0)) for s in self.streams if s.input == "motion"] or [0])
        self.recent: deque[np.ndarray] = deque(maxlen=max(1, self.gap + 1))   # frames for motion
        self.window: deque[tuple[float, np.ndarray]] = deque(maxlen=MAX_WINDOW_FRAMES)  # (server time s, features)
        self.pose = None
        if any(s.input == "pose" for s in self.streams):
            from harx.extract.pose import PoseEstimator

            self.pose = PoseEstimator()
            self.pose.start_video()

    def close(self) -> None:
        if self.pose is not None:
            self.pose.shutdown()

    def features(self, frame: np.ndarray) -> np.ndarray:
        """One frame's features of the run's streams side by side, as the head reads them."""
        from harx.extract.motion import difference_images

        self.recent.append(frame)
        made = {}
        for s in self.streams:
            if s.input == "rgb":
                made[s.name] = self.predictor.backbone.embed(frame[None])
            elif s.input == "motion":
                other = self.recent[0] if len(self.recent) > self.gap else frame
                image = difference_images(frame[None], other[None], float(s.spec.get("amp", 1.0)))
                made[s.name] = self.predictor.backbone.embed(image)
            elif s.input == "pose":
                made[s.name], _ = self.pose.estimate(frame[None])
            else:
                raise HarxError(f"live recognition cannot make stream {s.name!r}")
        return side_by_side(self.streams, made)[0].astype(np.float32)

    def classify(self, jpeg: bytes, t_ms: float) -> dict:
        """Add one JPEG frame taken at ``t_ms`` (the client's clock) and classify the window."""
        from PIL import Image, UnidentifiedImageError

        started = time.perf_counter()
        try:
            image = Image.open(io.BytesIO(jpeg))
            if image.size[0] * image.size[1] > MAX_FRAME_PIXELS:
                raise HarxError(f"a live frame of {image.size[0]}x{image.size[1]} is too large; send at most 1920x1080")
            frame = np.array(image.convert("RGB"))   # writable: torch takes it as is
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            raise HarxError("a live frame is not a JPEG or PNG image") from None
        # the window is kept in the server's clock (the client's times are only echoed back)
        t = time.monotonic()
        with self.lock:
            self.window.append((t, self.features(frame)))
            while self.window and self.window[0][0] < t - self.window_s:
                self.window.popleft()
            x = np.stack([f for _, f in self.window]).astype(np.float16)
            p = self.predictor.predict_proba([x])[0]
        names = self.predictor.class_names
        k = int(np.argmax(p))
        return {"t": t_ms, "label": names[k], "confidence": round(float(p[k]), 4),
                "probabilities": {n: round(float(v), 4) for n, v in zip(names, p)},
                "frames_in_window": len(self.window), "window_s": self.window_s,
                "server_ms": round(1000 * (time.perf_counter() - started), 1)}


async def live_socket(websocket, state) -> None:
    """The websocket ``/api/live?run=RID``: binary messages in (8 bytes of little-endian float64,
    the frame's time in ms, then the JPEG), JSON out (one per frame processed)."""

    await websocket.accept()
    rid = websocket.query_params.get("run") or ""
    if state.live_sessions >= MAX_SESSIONS:
        await websocket.send_json({"error": f"{MAX_SESSIONS} live sessions are running; try again later"})
        await websocket.close()
        return
    state.live_sessions += 1
    try:
        await _serve_session(websocket, state, rid)
    finally:
        state.live_sessions -= 1


async def _serve_session(websocket, state, rid: str) -> None:
    import asyncio
    import struct

    from starlette.websockets import WebSocketDisconnect

    try:
        run = state.catalog.run(rid) if rid else state.catalog.newest()
        if run is None:
            raise HarxError("no finished run yet")
        predictor = await asyncio.to_thread(state.service.predictor, run.path)
        session = await asyncio.to_thread(LiveSession, predictor, None, state.service.lock(predictor))
    except HarxError as err:
        await websocket.send_json({"error": str(err)})
        await websocket.close()
        return
    latest: list = []                    # the newest frame not yet processed (at most one)
    ready = asyncio.Event()
    stats = {"dropped": 0, "done": 0}
    running: list = []                   # the frame in work, as a future (awaited before closing)

    async def work():
        while True:
            await ready.wait()
            ready.clear()
            if not latest:
                continue
            message = latest.pop()
            t_ms = struct.unpack("<d", message[:8])[0]
            t_ms = t_ms if np.isfinite(t_ms) else 0.0
            job = asyncio.ensure_future(asyncio.to_thread(session.classify, message[8:], t_ms))
            running[:] = [job]
            try:
                answer = await asyncio.shield(job)
            except HarxError as err:
                answer = {"t": t_ms, "error": str(err)}
            except Exception as err:     # noqa: BLE001 - the socket answers, whatever went wrong
                answer = {"t": t_ms, "error": f"the frame could not be classified ({type(err).__name__}: {err})"}
            stats["done"] += 1
            await websocket.send_json(dict(answer, dropped=stats["dropped"], processed=stats["done"]))

    worker = asyncio.create_task(work())
    try:
        while True:
            message = await websocket.receive_bytes()
            if len(message) <= 8:
                continue
            if latest:
                stats["dropped"] += 1
                latest.clear()
            latest.append(message)
            ready.set()
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        worker.cancel()
        if running:                      # the graph is closed only once no frame is in it
            await asyncio.wait(running)
        await asyncio.to_thread(session.close)
