"""What stage one cost, per stream, recorded in the cache (attribute ``stage_one_cost``) so that
``harx compare`` can put each strategy's extraction cost beside its accuracy.

Per stream: ``{"ms_per_frame", "seconds", "frames", "device"}``, the model time per frame
measured while embedding it: submitting its batches to the backbone (or frames to the pose
estimator) and collecting the results. Decoding is left out (the streams share it), and a map
stream costs nothing beyond its image's pass (``rgb_map`` is read from ``rgb``'s forward pass).
Runs that add frames on the same device and chip are summed; a run on another replaces the
record, so a number always comes from one kind of machine.
"""

from __future__ import annotations

from pathlib import Path

from harx.features.errors import HarxError


def add_costs(*costs: dict) -> dict:
    """Sum cost records stream by stream (same device: summed; another: the later one wins)."""
    total: dict = {}
    for cost in costs:
        for name, entry in (cost or {}).items():
            if not isinstance(entry, dict):
                continue
            old = total.get(name)
            seconds, frames = float(entry.get("seconds", 0.0)), int(entry.get("frames", 0))
            if old and old.get("device") == entry.get("device"):
                seconds, frames = seconds + old["seconds"], frames + old["frames"]
            total[name] = {"ms_per_frame": round(1000 * seconds / max(1, frames), 3), "seconds": round(seconds, 3),
                           "frames": frames, "device": entry.get("device", "")}
    return total


def stage_one_cost(previous: Path | None, model_seconds: dict, device) -> dict:
    """The record after a run: ``previous`` (the cache before it, if any) plus this run's
    ``model_seconds`` (image -> [seconds, frames]) on ``device``."""
    from harx.features.writer import read_settings
    from harx.runtime import processor_name

    where = f"{device.type}: {processor_name(device)}"
    on_cpu = f"cpu: {processor_name(None)}"      # the pose estimator runs on the CPU whatever the device
    before = {}
    if previous is not None:
        try:
            before = read_settings(previous).get("stage_one_cost") or {}
        except HarxError:
            before = {}
    now = {name: {"seconds": seconds, "frames": frames, "device": on_cpu if name == "pose" else where}
           for name, (seconds, frames) in model_seconds.items()}
    return add_costs(before if isinstance(before, dict) else {}, now)
