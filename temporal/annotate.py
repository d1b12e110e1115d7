"""Write a video back with its predictions drawn on every frame: ``harx predict --annotate``.

Every frame gets, top left, the current label and its confidence on a class-coloured chip, with
the whole video's label below it (in amber, and saying "unfamiliar", when the video is unlike the
run's training videos: :mod:`temporal.familiarity`), and along the bottom a timeline strip (one
colour per class, the current position marked). The "current" label of a frame is that of the
window whose centre is nearest to it (sequence heads) or that of the latest sampled frame
(frame-level heads such as ``vote``, which label frames one by one).

The output keeps the input's frame count, size and frame rate: the video is decoded again at
full size, one frame at a time (:mod:`extract.stream`), drawn on and encoded as it streams
(H.264 MP4, see :mod:`extract.encode`), so memory holds a few frames whatever the length.
Audio is not copied. A variable-frame-rate input is written at its average frame rate.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harx.features.errors import HarxError

from .predictions import VideoPrediction

__all__ = ["AnnotatedVideo", "annotate_video", "class_colors", "frame_labels"]

_TAB10 = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
          (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


@dataclass
class AnnotatedVideo:
    path: Path
    n_frames: int
    size: tuple[int, int]        # (width, height)
    fps: float
    note: str = ""


def class_colors(n: int) -> np.ndarray:
    """``(n, 3)`` uint8 colours: matplotlib's tab10, then evenly spread hues (golden ratio)."""
    colors = [_TAB10[i] if i < len(_TAB10) else
              tuple(int(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65, 0.95)) for i in range(n)]
    return np.array(colors, dtype=np.uint8).reshape(n, 3)


def frame_labels(prediction: VideoPrediction, class_names: list[str], n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """The current label index and confidence of each of ``n_frames`` frames (see module docstring)."""
    index = {name: i for i, name in enumerate(class_names)}
    frames = np.arange(n_frames)
    if prediction.frames:
        at = np.array([f.frame for f in prediction.frames])
        k = np.clip(np.searchsorted(at, frames, side="right") - 1, 0, len(at) - 1)
        labels = np.array([index[f.label] for f in prediction.frames])[k]
        conf = np.array([f.confidence for f in prediction.frames], dtype=np.float32)[k]
        return labels, conf
    windows = prediction.timeline
    centres = np.array([(w.start_frame + w.stop_frame - 1) / 2 for w in windows])
    k = np.abs(frames[:, None] - centres[None, :]).argmin(axis=1) if len(frames) else np.zeros(0, int)
    labels = np.array([index[w.label] for w in windows])[k]
    conf = np.array([w.confidence for w in windows], dtype=np.float32)[k]
    return labels, conf


class _Overlay:
    """Draws the label box and the timeline strip; text boxes are rendered once per (class, %)."""

    def __init__(self, width: int, height: int, class_names: list[str], labels: np.ndarray, conf: np.ndarray,
                 video_line: str, warn: bool = False, skeletons: list | None = None):
        from PIL import ImageFont

        self.skeletons = skeletons
        self.width, self.height = width, height
        self.names, self.labels, self.conf = class_names, labels, conf
        self.colors = class_colors(len(class_names))
        size = int(np.clip(round(min(height, 1.4 * width) / 14), 9, 72))
        try:  # a scalable font where Pillow has FreeType, else its small bitmap font
            self.font, self.small = ImageFont.load_default(size=size), ImageFont.load_default(size=max(8, size * 7 // 10))
        except (TypeError, ImportError, OSError):
            self.font = self.small = ImageFont.load_default()
        self.video_line, self.warn = video_line, warn
        self.margin = max(2, size // 4)
        self.patches: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.strip_h = max(3, round(height / 28))
        n = max(1, len(labels))
        cols = np.minimum(n - 1, ((np.arange(width) + 0.5) * n / width).astype(int))
        self.strip = self.colors[labels[cols]] if len(labels) else np.zeros((width, 3), np.uint8)

    def _patch(self, k: int, pct: int) -> tuple[np.ndarray, np.ndarray]:
        key = (k, pct)
        if key not in self.patches:
            from PIL import Image, ImageDraw

            line1, line2 = f"{self.names[k]} {pct}%", self.video_line
            pad = self.margin
            b1, b2 = self.font.getbbox(line1), self.small.getbbox(line2)
            chip = b1[3] - b1[1]
            w = max(2 * pad + chip + b1[2], pad + b2[2]) + pad
            h = pad + b1[3] + pad + b2[3] + pad
            image = Image.new("RGBA", (int(w), int(h)), (0, 0, 0, 165))
            draw = ImageDraw.Draw(image)
            draw.rectangle([pad, pad + b1[1], pad + chip, pad + b1[3]], fill=tuple(int(c) for c in self.colors[k]))
            draw.text((2 * pad + chip, pad), line1, font=self.font, fill=(255, 255, 255, 255))
            draw.text((pad, 2 * pad + b1[3]), line2, font=self.small,
                      fill=(255, 176, 0, 255) if self.warn else (215, 215, 215, 255))
            rgba = np.asarray(image)
            self.patches[key] = (rgba[..., :3].astype(np.uint16), rgba[..., 3:].astype(np.uint16))
        return self.patches[key]

    def draw(self, frame: np.ndarray, i: int) -> np.ndarray:
        frame = frame if frame.flags.writeable else frame.copy()
        if self.skeletons is not None and i < len(self.skeletons) and self.skeletons[i] is not None:
            frame = draw_skeleton(frame, self.skeletons[i])
        i = min(i, len(self.labels) - 1)
        rgb, alpha = self._patch(int(self.labels[i]), int(round(100 * float(self.conf[i]))))
        h, w = min(rgb.shape[0], self.height - 1), min(rgb.shape[1], self.width - 1)
        y = x = min(self.margin, 4)
        h, w = min(h, self.height - y), min(w, self.width - x)
        region = frame[y:y + h, x:x + w]
        a = alpha[:h, :w]
        region[:] = ((region * (255 - a) + rgb[:h, :w] * a) // 255).astype(np.uint8)
        top = self.height - self.strip_h
        frame[top:] = ((frame[top:].astype(np.uint16) * 40 + self.strip[None].astype(np.uint16) * 215) // 255)
        cursor = min(self.width - 1, int(i * self.width / max(1, len(self.labels))))
        frame[top:, max(0, cursor - 1):cursor + 1] = 255
        return frame


def frame_skeletons(prediction: VideoPrediction, n_frames: int) -> list:
    """Each of ``n_frames`` frames' keypoints (``(33, 3)`` or ``None``): those of the latest
    sampled frame at or before it, while it is no more than a sampled step away."""
    at = np.asarray(prediction.keypoint_frames, dtype=np.int64)
    points = prediction.keypoints
    if not len(at):
        return [None] * n_frames
    step = int(np.median(np.diff(at))) if len(at) > 1 else 1
    k = np.searchsorted(at, np.arange(n_frames), side="right") - 1
    out = []
    for i, j in enumerate(k):
        ok = j >= 0 and i - at[j] < max(1, step) and not np.isnan(points[j]).all()
        out.append(points[j] if ok else None)
    return out


def draw_skeleton(frame: np.ndarray, points: np.ndarray, min_visibility: float = 0.3) -> np.ndarray:
    """``frame`` with the BlazePose skeleton drawn on it: bones between keypoints seen with
    ``min_visibility``, points on top."""
    from PIL import Image, ImageDraw

    from harx.extract.pose import SKELETON

    h, w = frame.shape[:2]
    xy = np.stack([points[:, 0] * w, points[:, 1] * h], axis=1)
    seen = points[:, 2] >= min_visibility
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    width = max(1, round(min(h, w) / 120))
    for a, b in SKELETON:
        if seen[a] and seen[b]:
            draw.line([tuple(xy[a]), tuple(xy[b])], fill=(0, 255, 128), width=width)
    r = width + 1
    for (x, y), ok in zip(xy, seen):
        if ok:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 64, 64))
    return np.array(image)          # a writable copy: the label box is drawn on it next


def annotate_video(prediction: VideoPrediction, out: str | Path, class_names: list[str], *,
                   crf: int = 20, preset: str = "veryfast") -> AnnotatedVideo:
    """Write ``prediction.path`` to ``out`` with ``prediction`` drawn on every frame.

    Raises:
        HarxError: the prediction failed, ``out`` is the input itself, the video no longer opens,
            or no frame decodes.
    """
    from harx.extract.encode import write_h264
    from harx.extract.stream import FrameStream

    src, out = Path(prediction.path), Path(out)
    if not prediction.ok:
        raise HarxError(f"{src}: nothing to draw ({prediction.error})")
    if out.resolve() == src.resolve():
        raise HarxError(f"--annotate {out} would overwrite the input video; choose another name")
    with FrameStream(src) as frames:
        n = max(prediction.n_frames, max((w.stop_frame for w in prediction.timeline), default=0), 1)
        labels, conf = frame_labels(prediction, class_names, n)
        line = f"video: {prediction.label} {round(100 * prediction.confidence)}%"
        if prediction.unfamiliar:
            line = f"unfamiliar video ({line})"
        overlay = _Overlay(frames.width, frames.height, class_names, labels, conf, line,
                           warn=bool(prediction.unfamiliar),
                           skeletons=frame_skeletons(prediction, n) if prediction.keypoints is not None else None)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            count = write_h264(out, (overlay.draw(f, i) for i, f in enumerate(frames)), (frames.width, frames.height),
                               frames.rate, crf=crf, preset=preset)
        except OSError as err:
            raise HarxError(f"cannot write {out}: {err.strerror or err}") from None
        note = f"{frames.error}; wrote the {count} frame(s) before it" if frames.error else ""
    if count == 0:
        out.unlink(missing_ok=True)
        raise HarxError(f"{src}: no frame decodes, nothing written")
    return AnnotatedVideo(out, count, (frames.width, frames.height), float(frames.rate), note)
