"""``harx serve`` under load: live labels from a camera stream, and a burst of uploads.

    python benchmarks/serve.py --run RUN_DIR [--clips DIR] [--fps 10] [--seconds 20] [--uploads 20]

Starts the app in this process (uvicorn on 127.0.0.1, a free port) and measures, through real
sockets:

1. live: a websocket client sends the frames of a real clip as JPEG (320x240 at most, as the page
   sends them) at ``--fps`` for ``--seconds``, each stamped with the time it was sent, as the
   page does; for every label that comes back: latency from sending the frame to receiving its
   label; labels per second; the server's own time per frame; frames it dropped while busy.
2. load: ``--uploads`` clips posted to ``/api/predict`` at once (one thread each); every answer's
   status and latency (p50/p95), and the process's peak RSS before and after (VmHWM).

Prints a table and, last, one JSON line. Goal from the issue (2-core CPU, lite0, default
streams): live labels at >= 5 per second with latency <= 500 ms.
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import statistics
import struct
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_CLIPS = HERE.parent.parent / "shared" / "realdata" / "kth_walk_run"


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(run_root: Path, queue: int):
    import uvicorn

    from harx.temporal.serve import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app([run_root], device="cpu", queue=queue)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, port


def jpeg_frames(clip: Path, limit: int) -> list[bytes]:
    from PIL import Image

    from harx.extract.stream import FrameStream

    out = []
    with FrameStream(clip) as frames:
        for rgb in frames:
            image = Image.fromarray(rgb)
            image.thumbnail((320, 240))
            buf = io.BytesIO()
            image.save(buf, format="JPEG", quality=80)
            out.append(buf.getvalue())
            if len(out) >= limit:
                break
    return out


def live(port: int, rid: str, frames: list[bytes], fps: float, seconds: float) -> dict:
    import asyncio

    import websockets

    async def go():
        latencies, server_ms, dropped = [], [], 0
        async with websockets.connect(f"ws://127.0.0.1:{port}/api/live?run={rid}", max_size=None) as ws:
            started = time.perf_counter()

            async def receive():
                nonlocal dropped
                async for message in ws:
                    a = json.loads(message)
                    if "error" in a:
                        raise RuntimeError(a["error"])
                    latencies.append(1000 * time.perf_counter() - a["t"])
                    server_ms.append(a["server_ms"])
                    dropped = a["dropped"]

            reader = asyncio.create_task(receive())
            k = 0
            while time.perf_counter() - started < seconds:
                t = 1000 * time.perf_counter()
                await ws.send(struct.pack("<d", t) + frames[k % len(frames)])
                k += 1
                await asyncio.sleep(max(0.0, started + k / fps - time.perf_counter()))
            await asyncio.sleep(1.0)            # the last answers
            reader.cancel()
            elapsed = time.perf_counter() - started
        return {"sent": k, "labels": len(latencies), "labels_per_s": round(len(latencies) / elapsed, 2),
                "latency_ms_p50": round(statistics.median(latencies), 1),
                "latency_ms_p95": round(float(np.percentile(latencies, 95)), 1),
                "server_ms_per_frame_p50": round(statistics.median(server_ms), 1), "dropped": dropped}

    return asyncio.run(go())


def load(port: int, rid: str, clips: list[Path], n: int) -> dict:
    import httpx

    results = [None] * n
    barrier = threading.Barrier(n)

    def one(i: int) -> None:
        clip = clips[i % len(clips)]
        barrier.wait()
        t = time.perf_counter()
        with open(clip, "rb") as f:
            r = httpx.post(f"http://127.0.0.1:{port}/api/predict", files={"video": (clip.name, f)},
                           data={"run": rid}, timeout=600)
        results[i] = (r.status_code, time.perf_counter() - t)

    before = vm_hwm_mb()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = [s for _, s in results]
    return {"uploads": n, "statuses": sorted({c for c, _ in results}), "ok": sum(c == 200 for c, _ in results),
            "latency_s_p50": round(statistics.median(seconds), 2),
            "latency_s_p95": round(float(np.percentile(seconds, 95)), 2),
            "peak_rss_mb_before": round(before, 1), "peak_rss_mb_after": round(vm_hwm_mb(), 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a finished run folder (harx fit)")
    p.add_argument("--clips", type=Path, default=DEFAULT_CLIPS)
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--uploads", type=int, default=20)
    args = p.parse_args(argv)

    from harx.temporal.serve.catalog import run_id
    from harx.runtime import processor_name

    clips = sorted(args.clips.rglob("*.avi"))[:40]
    if not clips:
        p.error(f"no .avi clips under {args.clips}")
    server, thread, port = start_server(args.run.parent, queue=max(8, args.uploads + 4))
    rid = run_id(args.run)
    try:
        frames = jpeg_frames(clips[0], 300)
        result = {"cpu": processor_name(), "run": str(args.run), "fps_sent": args.fps,
                  "live": live(port, rid, frames, args.fps, args.seconds),
                  "load": load(port, rid, clips, args.uploads) if args.uploads else None}
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    lv, ld = result["live"], result["load"]
    print(f"live ({args.fps:g} frames/s sent for {args.seconds:g} s, {clips[0].name}): {lv['labels_per_s']} labels/s, "
          f"latency p50 {lv['latency_ms_p50']} ms, p95 {lv['latency_ms_p95']} ms; server {lv['server_ms_per_frame_p50']} "
          f"ms per frame; {lv['dropped']} of {lv['sent']} frames dropped while busy")
    if ld:
        print(f"load ({ld['uploads']} concurrent uploads): {ld['ok']} answered 200 (statuses {ld['statuses']}); "
              f"latency p50 {ld['latency_s_p50']} s, p95 {ld['latency_s_p95']} s; peak RSS {ld['peak_rss_mb_before']} "
              f"-> {ld['peak_rss_mb_after']} MB")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
