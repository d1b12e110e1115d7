"""Motion images: what a frozen image model sees of movement.

The "RGB difference" modality of Temporal Segment Networks (Wang et al., ECCV 2016): the image of
frame ``t`` is ``clip(amp * |frame[t] - frame[t - gap]|, 0, 255)`` per RGB channel, from the
video's real neighbouring frames whatever frames are embedded (``--every``, ``--fps`` and
``--max-frames`` thin the rows, not the neighbours). Frames before ``gap`` have no earlier
partner and use the later one, ``|frame[t + gap] - frame[t]|``: the same magnitude of motion.
Gap 2 and no amplification were chosen by measurement on real KTH clips of unseen persons
(``benchmarks/streams.py``; numbers in ``benchmarks/RESULTS.md``, "Motion stream study").

Imports numpy only: it runs in the decoding workers, next to the decoder.
"""

from __future__ import annotations

import numpy as np

DEFAULT_GAP = 2
DEFAULT_AMP = 1.0


def partners(t: np.ndarray, gap: int, n_frames: int) -> np.ndarray:
    """The frame each frame of ``t`` is differenced with: ``t - gap``, or ``t + gap`` (at most the
    last of ``n_frames``) where ``t < gap``."""
    t = np.asarray(t, dtype=np.int64)
    earlier = t - gap
    later = np.minimum(t + gap, max(0, n_frames - 1))
    return np.where(earlier >= 0, earlier, later)


def difference_images(frames: np.ndarray, others: np.ndarray, amp: float) -> np.ndarray:
    """uint8 ``clip(amp * |frames - others|, 0, 255)`` of two ``(N, H, W, 3)`` uint8 arrays."""
    a = frames.astype(np.int16)
    diff = np.abs(a - others.astype(np.int16, copy=False))
    if amp == 1.0:
        return diff.astype(np.uint8)          # |a - b| <= 255: no clipping needed
    return np.clip(np.rint(diff * np.float32(amp)), 0, 255).astype(np.uint8)
