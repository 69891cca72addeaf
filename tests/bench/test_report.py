"""Report: results.json structure, ratio tables (RSD speed-up first), the official-code comparison, the plot."""
from __future__ import annotations

import json

import pytest

from rsd_deploy.bench.baselines import OFFICIAL_MS
from rsd_deploy.bench.report import (finalize, official_baseline_ms,
                                     render_markdown, speedups, write_report)
from rsd_deploy.bench.runner import BenchConfig, run_benchmark

from .conftest import CountingBackend, fake_models


def _entry(contender, p50, backend="torch-fp32", size=(64, 64), device="cpu", precision="fp32", status="ok"):
    stats = {"n": 3, "p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.2, "mean": p50, "std": 0.1, "min": p50 * 0.9,
             "max": p50 * 1.2, "spread": 0.2}
    return {"contender": contender, "label": contender, "backend": backend, "runtime": "torch", "precision": precision,
            "device": device, "lr_size": list(size), "sr_size": [4 * size[0], 4 * size[1]], "batch": 1, "nfe": 1,
            "status": status, "reason": None if status == "ok" else "why", "latency_ms": stats,
            "stages_ms": {s: stats for s in ("encode", "denoise", "decode", "host")}, "first_call_ms": 2 * p50,
            "throughput_ips": 1000 / p50, "peak_device_mib": None, "peak_host_rss_mib": 500.0,
            "timing_only_steps": False, "process_cpu_ms": {**stats, "p50": p50 / 2}}


def _results(entries):
    cfg = BenchConfig()
    return {"settings": cfg.to_dict(), "entries": entries, "random_weights": True, "arch": "full",
            "model_sources": {}, "input_multiple": 64}


def test_speedups_are_baseline_over_rsd_on_the_same_backend_and_size():
    entries = [_entry("rsd", 100.0), _entry("sinsr", 110.0), _entry("resshift-v3", 400.0),
               _entry("resshift-v1", 1500.0), _entry("resshift-v1", 99.0, backend="torch-bf16"),
               _entry("rsd", 50.0, size=(128, 128)), _entry("resshift-v3", 75.0, size=(128, 128)),
               _entry("sinsr", 1.0, status="skipped")]
    sp = {(r["backend"], tuple(r["lr_size"]), r["baseline"]): r["speedup"] for r in speedups(entries)}
    assert all(r["speedup_by_cpu_time"] == pytest.approx(r["speedup"]) for r in speedups(entries))
    assert sp == {("torch-fp32", (64, 64), "sinsr"): pytest.approx(1.1),
                  ("torch-fp32", (64, 64), "resshift-v3"): pytest.approx(4.0),
                  ("torch-fp32", (64, 64), "resshift-v1"): pytest.approx(15.0),
                  ("torch-fp32", (128, 128), "resshift-v3"): pytest.approx(1.5)}


def test_official_baselines_cpu_and_gpu():
    ms, src = official_baseline_ms(_entry("resshift-v1", 1.0))
    c = OFFICIAL_MS[("cpu", "fp32", 64)]
    assert ms == pytest.approx(c["encode"] + 15 * c["unet"] + c["decode"]) and "MODEL_SPEC" in src
    ms, _ = official_baseline_ms(_entry("rsd", 1.0))
    assert ms == pytest.approx(c["encode"] + c["unet"] + c["decode"])
    ms, src = official_baseline_ms(_entry("sinsr", 1.0, device="cuda", precision="bf16"))
    assert ms == OFFICIAL_MS[("cuda", "bf16", 64)]["one-step"] and "H200" in src
    assert official_baseline_ms(_entry("rsd", 1.0, size=(128, 128))) is None  # no CPU figure at LR 128
    assert official_baseline_ms(_entry("rsd", 1.0, size=(64, 96))) is None


def test_markdown_leads_with_ratios_and_lists_skips():
    res = finalize(_results([_entry("rsd", 100.0), _entry("resshift-v1", 1500.0),
                             _entry("sinsr", 1.0, status="skipped")]), "cpu")
    md = render_markdown(res)
    first_table = md.index("## Speed-up of RSD")
    assert first_table < md.index("## Against the official") < md.index("## All measurements")
    assert "**15.00x**" in md
    assert "sinsr on torch-fp32: skipped: why" in md
    assert "random weights" in md


def test_write_report_files(tmp_path):
    res = finalize(_results([_entry("rsd", 100.0), _entry("resshift-v3", 300.0),
                             _entry("rsd", 300.0, size=(128, 128)), _entry("resshift-v3", 600.0, size=(128, 128))]),
                   "cpu", notes=["host busy"])
    paths = write_report(res, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    for key in ("schema_version", "device", "versions", "git", "settings", "entries", "speedups", "official_ratios",
                "notes", "created_utc", "host_load_1_5_15min"):
        assert key in data, key
    assert data["versions"]["torch"] and "cpu" in data["device"]
    assert "host busy" in data["notes"]
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["md"].read_text().startswith("# rsd-bench results")
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left


def test_end_to_end_results_from_a_fake_backend(tmp_path):
    cfg = BenchConfig(sizes=((16, 16),), repeats=2, output=str(tmp_path))
    res = run_benchmark(cfg, models=fake_models(), progress=False,
                        backend_factory=lambda v, c, m, s, cf, w: CountingBackend(noise_channels=c.noise_channels))
    out = finalize(res, "cpu")
    assert {r["baseline"] for r in out["speedups"]} == {"sinsr", "resshift-v3", "resshift-v1"}
    assert out["official_ratios"] == []  # LR 16: no official figure
    write_report(out, tmp_path)
    assert (tmp_path / "results.md").is_file()


def test_no_official_ratio_for_the_tiny_architecture():
    res = _results([_entry("rsd", 100.0), _entry("resshift-v1", 1500.0)])
    res["arch"] = "tiny"
    out = finalize(res, "cpu")
    assert out["official_ratios"] == [] and out["speedups"]
    assert "tiny architecture is not comparable" in render_markdown(out)
