"""The host, as both stages see it: which device and precision to run on, and the process-wide
settings that decide CPU speed. One place, so that ``harx extract`` and ``harx fit`` resolve
``--device``/``--precision`` the same way and neither stage imports the other for it.

* :func:`resolve_device`, :func:`resolve_precision`, :func:`cpu_bf16`: ``auto`` means CUDA, then
  Apple MPS, then the CPU; half precision only where the hardware has it natively. CPUs differ
  between machines of one fleet (AVX2 only; AVX-512 with BF16; AMX), so nothing here assumes bf16.

Found by measurement on the 2-core CPU (``benchmarks/RESULTS.md``):

* :class:`CpuThreads`: torch's OpenMP threads spin-wait between layers (libgomp's default). On a
  free CPU that is the fastest policy, but when another process keeps a core busy, each barrier
  waits for a thread the scheduler has parked behind the spinner, and extraction slows to a
  fraction. Instead of giving up the spin everywhere (``OMP_WAIT_POLICY=PASSIVE``),
  :class:`CpuThreads` watches how much of our cores other processes use and runs one thread fewer
  per core they take. Extraction only: its numbers do not depend on the thread count.
* :func:`fixed_cpu_threads`: training's numbers depend on torch's thread count, so a fit runs on
  one count chosen from the CPUs it may use (never from load, unlike :class:`CpuThreads`) and
  keeps it to the end: the same seed gives the same model beside a busy process too.
* :func:`keep_freed_memory`: glibc returns large freed blocks to the kernel at once (anything
  over its mmap threshold, 128 KiB at start). A forward pass allocates and frees the same
  activation buffers every batch, so each batch faulted its memory in again, and a third of the
  time went to the kernel's page-fault handling. Raising the thresholds lets glibc
  reuse those blocks: no faults, and the same peak memory, since the blocks are needed again at
  the next batch anyway.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

PRECISIONS = ("auto", "fp32", "bf16", "fp16")

_MMAP_THRESHOLD_MB = 64    # blocks below this come from the heap and are reused (lite0 batch 8: 13 MB at most)
_TRIM_THRESHOLD_MB = 256   # free heap kept before glibc trims it back to the kernel
_tuned = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process, once; ``True`` if they are set.

    Does nothing off glibc (macOS, Windows, musl), or when the user has tuned malloc through
    ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or ``GLIBC_TUNABLES``, or set
    ``HARX_MALLOC_TUNING=0``.
    """
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("HARX_MALLOC_TUNING") == "0":
        return False
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's <malloc.h>
    _tuned = bool(mallopt(m_mmap_threshold, _MMAP_THRESHOLD_MB << 20)) and \
        bool(mallopt(m_trim_threshold, _TRIM_THRESHOLD_MB << 20))
    return _tuned


def cgroup_cpu_limit(root: str = "/sys/fs/cgroup") -> float | None:
    """Cores this container may use by its CPU quota (cgroup v2 ``cpu.max``, v1
    ``cpu.cfs_quota_us``), or ``None`` when there is no quota. torch sizes its thread pool by the
    host's cores, not the quota; spinning threads beyond the quota burn it and get throttled."""
    try:  # v2: "QUOTA PERIOD", or "max PERIOD"
        with open(f"{root}/cpu.max") as fh:
            quota, period = fh.read().split()
    except (OSError, ValueError):
        try:  # v1: the two numbers in two files, quota -1 when unlimited
            with open(f"{root}/cpu/cpu.cfs_quota_us") as fh, open(f"{root}/cpu/cpu.cfs_period_us") as fp:
                quota, period = fh.read().strip(), fp.read().strip()
        except OSError:
            return None
    try:
        return None if quota in ("max", "-1") else max(int(quota) / int(period), 0.01)
    except (ValueError, ZeroDivisionError):
        return None


def memory_available(root: str = "/sys/fs/cgroup") -> tuple[int, str]:
    """``(bytes, what limits them)``: the memory this process may still take, the least of
    what the kernel reports available (``MemAvailable``), the room under the container's cgroup
    limit (v2 ``memory.max`` minus ``memory.current``; v1 ``memory.limit_in_bytes`` minus
    ``memory.usage_in_bytes``) and the room under the address-space and data limits
    (``prlimit --as``/``--data``: the limit minus what the process maps now). Page cache counts in a
    cgroup's usage but is given back under pressure, so the cgroup room is a cautious estimate."""
    import resource

    found: list[tuple[int, str]] = []
    meminfo = _read_kib("/proc/meminfo", "MemAvailable:")
    if meminfo is not None:
        found.append((meminfo, "available RAM"))
    for limit_file, usage_file in ((f"{root}/memory.max", f"{root}/memory.current"),
                                   (f"{root}/memory/memory.limit_in_bytes", f"{root}/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as fl, open(usage_file) as fu:
                limit, usage = fl.read().strip(), int(fu.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:
            found.append((max(0, int(limit) - usage), "the cgroup's memory limit"))
        break
    for which, status_key, name in ((resource.RLIMIT_AS, "VmSize:", "the address-space limit (ulimit -v)"),
                                    (resource.RLIMIT_DATA, "VmData:", "the data-segment limit (ulimit -d)")):
        soft = resource.getrlimit(which)[0]
        used = _read_kib("/proc/self/status", status_key)
        if soft != resource.RLIM_INFINITY and used is not None:
            found.append((max(0, soft - used), name))
    if not found:
        return (1 << 62, "no limit found")
    return min(found)


def _read_kib(path: str, key: str) -> int | None:
    """The ``key: N kB`` line of a /proc file, in bytes."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def threads_for(others: float, cores: int, max_threads: int, taken_share: float = 0.5) -> int:
    """Threads to run when other processes used ``others`` cores' worth of our ``cores``: one
    fewer per core they take (``taken_share`` of a core counts as taken), within 1..max_threads."""
    taken = int(others + 1.0 - taken_share)
    return max(1, min(max_threads, cores - taken))


class CpuThreads:
    """Keeps torch's CPU threads to the cores other processes leave free; call :meth:`update`
    after each unit of work (a batch). It re-reads ``/proc/stat`` at most every ``interval_s``.

    "Other processes" means CPU time spent on our cores by anything but this process (our own
    decoding workers included: they need a core too), averaged over the last interval; a core
    counts as taken when they used at least ``taken_share`` of one. A container's CPU quota caps
    the threads too (:func:`cgroup_cpu_limit`). The 1 s interval averages
    out bursts such as a decoding worker's start-up (0.3 s of one core), which at 0.5 s cost a
    needless drop to one thread at the start of every run. Never more threads than torch
    had at the start (the user's ``OMP_NUM_THREADS`` or ``torch.set_num_threads`` is the cap),
    never fewer than one. Off Linux, when ``/proc/stat`` is unreadable, or with ``enabled=False``
    (a GPU backbone: its host threads only feed the device), it does nothing.
    Hypervisor steal is not counted: spinning does not slow a stolen core's return. Changing
    the count changes no embedding: lite0's forward pass is bit-identical at one and two threads
    (a test holds it to that). Training is not: its gradients depend on the thread count (see
    :func:`fixed_cpu_threads`), so training does not use this class.
    The speeds behind these choices are in ``benchmarks/RESULTS.md``.
    """

    def __init__(self, interval_s: float = 1.0, taken_share: float = 0.5, enabled: bool = True):
        import torch

        self._torch, self.enabled = torch, enabled
        self.interval_s, self.taken_share = interval_s, taken_share
        self.start_threads = torch.get_num_threads()
        limit = cgroup_cpu_limit() if enabled else None
        self.max_threads = self.start_threads if limit is None else max(1, min(self.start_threads, math.ceil(limit)))
        if self.max_threads != self.start_threads:
            torch.set_num_threads(self.max_threads)
        try:
            self._cpus = {f"cpu{c}" for c in os.sched_getaffinity(0)}
        except (AttributeError, OSError):
            self._cpus = set()
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._last = self._sample() if self._cpus else None

    @property
    def active(self) -> bool:
        return self.enabled and self._last is not None and self.max_threads > 1

    def _sample(self) -> tuple[float, float, float] | None:
        """(now, busy CPU-seconds on our cores, this process's CPU-seconds), or None."""
        busy = 0
        try:
            with open("/proc/stat") as stat:
                for line in stat:
                    if not line.startswith("cpu"):
                        break
                    name, *ticks = line.split()
                    if name in self._cpus:
                        t = [int(v) for v in ticks[:8]] + [0] * (8 - len(ticks[:8]))
                        busy += sum(t) - t[3] - t[4] - t[7]  # all but idle, iowait and steal
        except (OSError, ValueError):
            return None
        own = os.times()
        return time.monotonic(), busy / self._tick, own.user + own.system

    def __enter__(self) -> "CpuThreads":
        return self

    def __exit__(self, *exc) -> None:
        """Give torch back the thread count it had (a notebook goes on after an extraction)."""
        if self._torch.get_num_threads() != self.start_threads:
            self._torch.set_num_threads(self.start_threads)

    def update(self) -> int:
        """Adjust the thread count if the interval has passed; return the current count."""
        torch = self._torch
        if not self.active or time.monotonic() - self._last[0] < self.interval_s:
            return torch.get_num_threads()
        now = self._sample()
        if now is None:
            self._last = None
            return torch.get_num_threads()
        (t0, busy0, own0), (t1, busy1, own1) = self._last, now
        self._last = now
        others = max(0.0, (busy1 - busy0) - (own1 - own0)) / max(t1 - t0, 1e-6)  # cores' worth
        want = threads_for(others, len(self._cpus), self.max_threads, self.taken_share)
        if want != torch.get_num_threads():
            torch.set_num_threads(want)
        return want


def fixed_thread_count() -> int:
    """torch threads for work whose numbers must not depend on the machine's load: training.

    Chosen from the CPUs this process may use, never from load: torch's current count (the
    user's ``OMP_NUM_THREADS``, or torch's default of one per core), capped by the CPU affinity
    mask and the container's quota (:func:`cgroup_cpu_limit`). Unless ``OMP_NUM_THREADS`` says
    otherwise, one core is left free (``n - 1``, at least 1): a fixed count cannot step aside as
    :class:`CpuThreads` does, and spin-waiting threads on every core stall at each barrier as soon
    as another process (a decoding worker, a second fit) takes one of them.
    """
    import torch

    n = torch.get_num_threads()
    try:
        n = min(n, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        pass
    limit = cgroup_cpu_limit()
    if limit is not None:
        n = min(n, math.ceil(limit))
    if not os.environ.get("OMP_NUM_THREADS"):
        n -= 1
    return max(1, n)


@contextmanager
def fixed_cpu_threads(enabled: bool = True) -> Iterator[int]:
    """``with fixed_cpu_threads() as n:`` torch runs on :func:`fixed_thread_count` threads inside,
    and gets back the count it had afterwards.

    Training needs one thread count from its first step to its last, the same in every run: CPU
    kernels split their sums by thread (the weight gradient of a small ``Linear`` in MKL's sgemm,
    ``LayerNorm``'s backward pass, a packed bidirectional LSTM), so the same seed gives other
    numbers at another count, and runs drift apart after a few epochs. With ``enabled=False``
    (training on a GPU) it changes nothing and ``n`` is torch's count.
    """
    import torch

    start = torch.get_num_threads()
    n = fixed_thread_count() if enabled else start
    if n != start:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if torch.get_num_threads() != start:
            torch.set_num_threads(start)


# ----------------------------------------------------------------------------- device and precision

def resolve_device(spec: str | None = "auto"):
    """``auto`` picks CUDA, then Apple MPS, then the CPU; an explicit device must exist.

    Raises:
        InvalidOptionError: an unknown device, or one torch cannot see (names the fix).
    """
    import torch

    from harx.features.errors import InvalidOptionError

    spec = (spec or "auto").lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise InvalidOptionError(f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidOptionError(f"--device {spec}: no CUDA GPU is visible to torch; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InvalidOptionError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InvalidOptionError("--device mps: Apple MPS is not available here; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise InvalidOptionError(f"unsupported device {spec!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def cpu_bf16() -> tuple[bool, bool]:
    """``(native, supported)`` bf16 on this CPU.

    *native*: the CPU has bf16 instructions (AVX512-BF16 or AMX), so oneDNN's bf16 kernels are
    faster than fp32 ones. *supported*: oneDNN runs bf16 at all (native, or emulated on
    AVX512BW/VL/DQ, where it is slower than fp32). An AVX2-only CPU has neither: oneDNN refuses
    bf16 convolutions there. ``ONEDNN_MAX_CPU_ISA`` (oneDNN's own cap, e.g. ``AVX2``) is honoured,
    which also lets one machine stand in for an older class.
    """
    import torch

    def probe(name: str) -> bool:
        fn = getattr(torch.cpu, name, None)
        try:
            return bool(fn()) if fn is not None else False
        except RuntimeError:
            return False

    try:
        supported = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        supported = False
    native = supported and (probe("_is_avx512_bf16_supported") or probe("_is_amx_tile_supported"))
    # A user (or a test of another machine class) may cap oneDNN's instruction set below the CPU's.
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    if cap and cap not in ("ALL", "DEFAULT"):
        native = native and ("BF16" in cap or "AMX" in cap or "AVX10" in cap)
        supported = supported and (cap.startswith(("AVX512", "AVX10")) or cap == "AVX2_VNNI_2")
    return native, supported


def resolve_precision(spec: str | None, device, *, cpu_half: bool = True) -> str:
    """The precision to run in: ``auto`` is bf16 on CUDA with bf16 support (else fp16), fp16 on
    MPS, bf16 on a CPU with native bf16 (AVX512-BF16 or AMX), else fp32.

    ``cpu_half=False`` (training: small models, where fp32 is fast and exact) makes every CPU
    choice fp32.

    Raises:
        InvalidOptionError: an unknown name, fp16 on a CPU, or bf16 on a CPU whose oneDNN has none.
    """
    from harx.features.errors import InvalidOptionError

    spec = (spec or "auto").lower()
    if spec not in PRECISIONS:
        raise InvalidOptionError(f"unknown precision {spec!r}; choose one of: {', '.join(PRECISIONS)}")
    if device.type == "cpu":
        if not cpu_half:
            return "fp32"
        if spec == "fp16":
            raise InvalidOptionError("--precision fp16 is slow or unsupported on the CPU; use bf16 or fp32")
        native, supported = cpu_bf16()
        if spec == "bf16" and not supported:
            raise InvalidOptionError("--precision bf16: this CPU has no bf16 support in oneDNN (it needs "
                                     "AVX512-BF16, AMX or AVX512BW/VL/DQ); use --precision fp32 or auto")
        if spec == "auto":
            return "bf16" if native else "fp32"
        return spec
    if spec != "auto":
        return spec
    if device.type == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp16"           # mps


def processor_name(device=None) -> str:
    """The chip a device is: the GPU's name for CUDA, the CPU's model (``/proc/cpuinfo``) otherwise;
    so that a recorded cost says what it was measured on."""
    if device is not None and getattr(device, "type", str(device)).startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(device)
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
