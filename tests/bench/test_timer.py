"""Timer: percentiles, warm-up and repeats, synchronisation around every timed run, stage accounting."""
from __future__ import annotations

import mmap

import numpy as np
import pytest

from rsd_deploy.bench.timer import STAGES, DeviceTimer, HostMemory, Stats, StageRecorder, measure


def test_stats_match_numpy_percentiles():
    samples = [5.0, 1.0, 9.0, 3.0, 7.0, 11.0, 2.0]
    s = Stats.from_samples(samples)
    a = np.array(samples)
    assert s.n == 7
    assert s.p50 == pytest.approx(np.percentile(a, 50))
    assert s.p90 == pytest.approx(np.percentile(a, 90))
    assert s.p99 == pytest.approx(np.percentile(a, 99))
    assert s.std == pytest.approx(a.std(ddof=1))
    assert (s.min, s.max) == (1.0, 11.0)
    assert s.spread == pytest.approx((np.percentile(a, 90) - np.percentile(a, 10)) / np.percentile(a, 50))
    with pytest.raises(ValueError):
        Stats.from_samples([])


def test_measure_warms_up_repeats_and_synchronises(fake_clock):
    syncs = []
    timer = DeviceTimer("cpu", synchronize=lambda: syncs.append(fake_clock.now))
    calls = []

    def run(rec: StageRecorder):
        calls.append(len(calls))
        fake_clock.advance(1.0)  # host work before the first stage
        with rec.stage("encode"):
            fake_clock.advance(3.0 + len(calls))  # runs get slower: 4, 5, 6, ... ms
        with rec.stage("denoise"):
            fake_clock.advance(5.0)
        with rec.stage("denoise"):
            fake_clock.advance(5.0)
        with rec.stage("decode"):
            fake_clock.advance(7.0)

    m = measure(run, timer, warmup=3, repeats=4)
    assert len(calls) == 3 + 4  # cold call + 2 more warm-ups + 4 timed runs
    assert m.total.n == 4 and len(m.samples_ms) == 4
    # cold call: sync before and after; after warm-ups: 1; each timed run: sync before and after
    assert m.sync_calls == 2 + 1 + 2 * 4 == timer.sync_count
    # timed runs are calls 4..7 -> encode 7, 8, 9, 10 ms; denoise 2 x 5; decode 7; host 1
    assert m.stages["encode"].p50 == pytest.approx(8.5)
    assert m.stages["denoise"].p50 == pytest.approx(10.0)
    assert m.stages["decode"].p50 == pytest.approx(7.0)
    assert m.stages["host"].p50 == pytest.approx(1.0)
    assert m.samples_ms == pytest.approx([1 + e + 10 + 7 for e in (7, 8, 9, 10)])
    assert m.first_call_ms == pytest.approx(1 + 4 + 10 + 7)
    assert set(m.stages) == set(STAGES)
    assert m.peak_device_mib is None and m.peak_host_rss_mib > 0


def test_measure_always_has_a_cold_call_and_rejects_zero_repeats(fake_clock):
    timer = DeviceTimer("cpu")
    n = []
    m = measure(lambda rec: n.append(1), timer, warmup=0, repeats=2)
    assert len(n) == 3 and m.warmup_runs == 1
    with pytest.raises(ValueError):
        measure(lambda rec: None, timer, repeats=0)


def test_unknown_or_nested_stage():
    rec = StageRecorder(DeviceTimer("cpu"))
    with pytest.raises(ValueError, match="unknown stage"):
        with rec.stage("host"):
            pass
    rec.begin()
    with rec.stage("encode"):
        with rec.stage("decode"):  # nested: counted once, in the outer stage
            pass
    out = rec.end()
    assert out["decode"] == 0.0 and out["total"] >= out["encode"]


def test_host_memory_peak_sees_an_allocation():
    mem = HostMemory()
    mem.reset_peak()
    before = mem.peak_mib()
    # fresh anonymous pages, touched: a numpy array could reuse freed, still-resident heap (the CLI's
    # reuse_freed_memory() mallopt keeps freed memory), which would not raise the peak at all
    block = mmap.mmap(-1, 40 * 2**20)
    block.write(b"\x01" * len(block))
    assert mem.peak_mib() >= before + 30 or not mem.resettable
    block.close()
