"""Device-synchronised timing: warm-up, repeated runs, per-stage intervals, percentiles, peak memory.

On CUDA every interval is a pair of ``torch.cuda.Event`` s recorded on the current stream and read
after ``torch.cuda.synchronize``; on the CPU it is ``time.perf_counter`` around the call (CPU ops are
synchronous). A run is one call of ``run_fn(recorder)``; the run function marks its stages with
``recorder.stage(name)``. The time of a run not covered by a stage is reported as ``host``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import resource
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Iterator, List, Optional

import numpy as np
import torch

logger = logging.getLogger(__name__)

#: the stages the pipeline is split into; ``host`` is whatever a run spends outside the others
STAGES = ("encode", "denoise", "decode", "host")


@dataclass
class Stats:
    """Summary of repeated samples in milliseconds; ``spread`` = (p90 - p10) / p50."""

    n: int
    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    spread: float

    @classmethod
    def from_samples(cls, samples_ms: List[float]) -> "Stats":
        if not samples_ms:
            raise ValueError("no samples to summarise")
        a = np.asarray(samples_ms, dtype=np.float64)
        p10, p50, p90, p99 = np.percentile(a, [10, 50, 90, 99])
        return cls(
            n=int(a.size), p50=float(p50), p90=float(p90), p99=float(p99), mean=float(a.mean()),
            std=float(a.std(ddof=1)) if a.size > 1 else 0.0, min=float(a.min()), max=float(a.max()),
            spread=float((p90 - p10) / p50) if p50 > 0 else 0.0,
        )

    def to_dict(self) -> dict:
        return asdict(self)


class _Interval:
    """One timed interval; ``elapsed_ms`` is valid after the device has been synchronised."""

    def __init__(self, use_cuda_events: bool) -> None:
        self._cuda = use_cuda_events
        if use_cuda_events:
            self._start_evt = torch.cuda.Event(enable_timing=True)
            self._end_evt = torch.cuda.Event(enable_timing=True)
        self._t0 = self._t1 = 0.0

    def start(self) -> None:
        if self._cuda:
            self._start_evt.record()
        else:
            self._t0 = time.perf_counter()

    def stop(self) -> None:
        if self._cuda:
            self._end_evt.record()
        else:
            self._t1 = time.perf_counter()

    def elapsed_ms(self) -> float:
        if self._cuda:
            return float(self._start_evt.elapsed_time(self._end_evt))
        return (self._t1 - self._t0) * 1000.0


class DeviceTimer:
    """Makes intervals for one device and synchronises it.

    ``synchronize`` may be injected (tests count the calls); by default it is
    ``torch.cuda.synchronize(device)`` on CUDA and a no-op on the CPU.
    """

    def __init__(self, device: torch.device | str = "cpu",
                 synchronize: Optional[Callable[[], None]] = None) -> None:
        self.device = torch.device(device)
        self.uses_cuda_events = self.device.type == "cuda"
        if synchronize is None:
            if self.uses_cuda_events:
                dev = self.device
                synchronize = lambda: torch.cuda.synchronize(dev)  # noqa: E731
            else:
                synchronize = lambda: None  # noqa: E731
        self._synchronize = synchronize
        self.sync_count = 0

    def synchronize(self) -> None:
        self._synchronize()
        self.sync_count += 1

    def interval(self) -> _Interval:
        return _Interval(self.uses_cuda_events)


class StageRecorder:
    """Records the stage intervals of ONE run; ``result()`` synchronises and returns ms per stage."""

    def __init__(self, timer: DeviceTimer) -> None:
        self._timer = timer
        self._total = timer.interval()
        self._stages: List[tuple] = []
        self._open = False
        self._cpu0 = 0.0

    def begin(self) -> None:
        self._timer.synchronize()  # nothing queued before the run may leak into it
        self._cpu0 = time.process_time()
        self._total.start()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if name not in STAGES or name == "host":
            raise ValueError(f"unknown stage {name!r}; use one of {STAGES[:-1]}")
        if self._open:  # nested stages would be counted twice
            yield
            return
        interval = self._timer.interval()
        self._open = True
        interval.start()
        try:
            yield
        finally:
            interval.stop()
            self._open = False
            self._stages.append((name, interval))

    def end(self) -> Dict[str, float]:
        """Stop, synchronise, and return {"total": ms, "encode": ms, ..., "host": ms, "cpu": ms}.

        ``cpu`` is the process CPU time of the run (all threads): on a shared CPU it shows how much of
        the wall time was our own work rather than waiting for other processes."""
        self._total.stop()
        self._timer.synchronize()
        cpu_ms = (time.process_time() - self._cpu0) * 1000.0
        out = {s: 0.0 for s in STAGES}
        for name, interval in self._stages:
            out[name] += interval.elapsed_ms()
        total = self._total.elapsed_ms()
        out["host"] = max(0.0, total - sum(out[s] for s in STAGES if s != "host"))
        out["total"] = total
        out["cpu"] = cpu_ms
        return out


class NullRecorder:
    """A recorder that times nothing (used for untimed reference runs)."""

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        yield


# ---------------------------------------------------------------- memory

def _proc_status_kib(key: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class HostMemory:
    """Peak resident set size of this process over a window (Linux: VmHWM, reset via clear_refs)."""

    def __init__(self) -> None:
        self.resettable = False

    def reset_peak(self) -> None:
        try:
            # writing 5 resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)
            with open(f"/proc/{os.getpid()}/clear_refs", "w") as f:
                f.write("5")
            self.resettable = True
        except OSError:
            self.resettable = False

    def peak_mib(self) -> float:
        hwm = _proc_status_kib("VmHWM") if self.resettable else None
        if hwm is None:  # process-lifetime peak: an upper bound of the window's peak
            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        return hwm / 1024.0


# ---------------------------------------------------------------- measurement

@dataclass
class Measurement:
    """What ``measure`` returns: per-run totals and stages (ms), first call, memory."""

    total: Stats
    stages: Dict[str, Stats]
    cpu_time: Stats
    first_call_ms: float
    warmup_runs: int
    samples_ms: List[float]
    peak_device_mib: Optional[float] = None
    peak_host_rss_mib: Optional[float] = None
    sync_calls: int = 0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "latency_ms": self.total.to_dict(),
            "stages_ms": {k: v.to_dict() for k, v in self.stages.items()},
            "process_cpu_ms": self.cpu_time.to_dict(),
            "first_call_ms": self.first_call_ms,
            "warmup_runs": self.warmup_runs,
            "samples_ms": self.samples_ms,
            "peak_device_mib": self.peak_device_mib,
            "peak_host_rss_mib": self.peak_host_rss_mib,
            "sync_calls": self.sync_calls,
        }


def measure(run_fn: Callable[[StageRecorder], object], timer: DeviceTimer, *, warmup: int = 1,
            repeats: int = 3) -> Measurement:
    """Time ``run_fn`` properly: a first (cold) call, ``warmup - 1`` further untimed calls, then
    ``repeats`` timed calls, each bracketed by device synchronisations.

    ``run_fn(recorder)`` must do one complete run and mark its stages with ``recorder.stage``.
    Peak device memory (CUDA allocator) or host RSS is taken over the timed runs.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    warmup = max(1, warmup)  # the first call is always a warm-up: it compiles, autotunes, allocates
    sync_before = timer.sync_count
    on_cuda = timer.uses_cuda_events

    timer.synchronize()
    t0 = time.perf_counter()
    run_fn(StageRecorder(timer))
    timer.synchronize()
    first_call_ms = (time.perf_counter() - t0) * 1000.0
    for _ in range(warmup - 1):
        run_fn(StageRecorder(timer))
    timer.synchronize()

    host_mem = HostMemory()
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(timer.device)
    else:
        host_mem.reset_peak()

    runs: List[Dict[str, float]] = []
    for _ in range(repeats):
        rec = StageRecorder(timer)
        rec.begin()
        run_fn(rec)
        runs.append(rec.end())

    peak_dev = torch.cuda.max_memory_allocated(timer.device) / 2**20 if on_cuda else None
    peak_host = host_mem.peak_mib()
    totals = [r["total"] for r in runs]
    stages = {s: Stats.from_samples([r[s] for r in runs]) for s in STAGES}
    logger.debug("measured %d runs: p50 %.2f ms", repeats, float(np.median(totals)))
    return Measurement(
        total=Stats.from_samples(totals), stages=stages, cpu_time=Stats.from_samples([r["cpu"] for r in runs]),
        first_call_ms=first_call_ms,
        warmup_runs=warmup, samples_ms=totals, peak_device_mib=peak_dev, peak_host_rss_mib=peak_host,
        sync_calls=timer.sync_count - sync_before,
    )
