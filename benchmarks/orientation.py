"""What turning a phone's portrait video upright costs (``extract.orientation``).

    python benchmarks/orientation.py [--seconds 10] [--size 1920x1080] [--rounds 3]

Writes one H.264 clip twice with the same encoded frames: with a display matrix of -90 degrees
(how a phone stores portrait video) and without. Then, alternating turned and plain (A B A B) in
one process, decodes every frame through harx's decoding workers as ``harx extract`` does (frames
scaled in FFmpeg to twice the backbone's input) and times each: the turned clip goes through PyAV
and ``np.rot90``, the plain one through decord. Prints turned / plain per round, their median,
and last one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))          # tests/videos.py writes real encoded clips


def main() -> None:
    from harx.extract.decode import DecodeJob, Frames, VideoDecoder
    from harx.extract.sampling import Sampling
    from videos import make_frames, write_frames

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--size", default="1920x1080", help="coded WxH (default 1920x1080)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-short-side", type=int, default=512, help="as harx extract asks (2 x 256)")
    args = ap.parse_args()
    width, height = map(int, args.size.lower().split("x"))
    n = int(round(args.seconds * 30))
    folder = Path(tempfile.mkdtemp(prefix="harx-bench-orientation-"))
    frames = make_frames(n, (width, height), pattern="square")
    clips = {"turned": write_frames(folder / "turned.mp4", frames, fps=30, rotation=-90),
             "plain": write_frames(folder / "plain.mp4", frames, fps=30)}
    del frames

    def decode(path: Path, decoder: VideoDecoder) -> float:
        job = DecodeJob(key=0, path=str(path), ranges=(None,), sampling=Sampling(),
                        max_short_side=args.max_short_side)
        start = time.perf_counter()
        got = sum(len(e.frames) for e in decoder.decode([job]) if isinstance(e, Frames))
        assert got == n, f"{path.name}: {got} of {n} frames"
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"turned": [], "plain": []}
    with VideoDecoder(num_workers=1, timeout_s=120).start() as decoder:
        decode(clips["plain"], decoder)                        # warm the worker and the page cache
        for _ in range(args.rounds):
            for name in ("turned", "plain"):
                times[name].append(decode(clips[name], decoder))
    ratios = [t / p for t, p in zip(times["turned"], times["plain"])]
    mb = clips["turned"].stat().st_size / 2**20
    for k, (t, p, r) in enumerate(zip(times["turned"], times["plain"], ratios)):
        print(f"round {k + 1}: turned {t:.2f} s, plain {p:.2f} s, turned / plain {r:.3f}")
    print(f"{n} frames {width}x{height} ({mb:.1f} MB): turned / plain median {statistics.median(ratios):.3f}")
    print(json.dumps({"frames": n, "size": [width, height], "file_mb": round(mb, 1),
                      "turned_s": times["turned"], "plain_s": times["plain"], "ratios": ratios,
                      "ratio_median": statistics.median(ratios)}))
    for path in clips.values():
        path.unlink()
    folder.rmdir()


if __name__ == "__main__":
    main()
