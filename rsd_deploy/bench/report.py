"""Write a benchmark's results: results.json (everything), results.md (ratios first), results.png.

Ratios lead: the speed-up of RSD over each baseline (ResShift v1, v3, SinSR) on the same backend,
size and batch (p50 end-to-end latency), then the speed-up over the official-code figures
(GPU_BASELINE.md on CUDA; the CPU reference of MODEL_SPEC.md section 8 on the CPU).
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import subprocess
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import torch

from rsd_deploy.bench.baselines import CPU_REF_SOURCE, OFFICIAL_GPU_SOURCE, official_row
from rsd_deploy.bench.contenders import CONTENDERS, REFERENCE_CONTENDER
from rsd_deploy.fileio import atomic_output, atomic_write_bytes

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1


def _pipeline_kind(contender: str) -> str:
    return "one-step" if CONTENDERS[contender].one_step else contender


def official_baseline_ms(entry: dict) -> Optional[Tuple[float, str]]:
    """The official-code figure to compare ``entry`` with, and its source, if one exists."""
    h, w = entry["lr_size"]
    if h != w or entry["batch"] != 1 or entry.get("tiled"):
        return None
    kind = _pipeline_kind(entry["contender"])
    if str(entry["device"]).startswith("cuda"):
        for prec in (entry["precision"], "fp16"):
            v = official_row("cuda", prec, h).get(kind)
            if v is not None:
                note = "" if prec == entry["precision"] else f" ({prec} column)"
                return v, OFFICIAL_GPU_SOURCE + note
        return None
    v = official_row("cpu", "fp32", h).get(kind)  # the CPU reference is fp32 only
    return None if v is None else (v, CPU_REF_SOURCE)


# ---------------------------------------------------------------- environment

def git_commit(repo: Optional[Path] = None) -> dict:
    repo = repo or Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str) -> dict:
    """Device, library versions, commit and host load, for results.json."""
    from importlib import metadata

    versions: Dict[str, Optional[str]] = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "rsd-deploy"):
        try:  # installed distributions, not whatever module of that name happens to be importable
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    dev: Dict[str, object] = {"requested": device, "cpu": _cpu_name(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads()}
    if device.startswith("cuda") and torch.cuda.is_available():
        idx = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(idx)
        dev.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"device": dev, "versions": versions, "git": git_commit(), "host_load_1_5_15min": load,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "platform": platform.platform()}


# ---------------------------------------------------------------- ratios

def _ok(entries: Iterable[dict]) -> List[dict]:
    return [e for e in entries if e.get("status") == "ok"]


def _on_cpu(e: dict) -> bool:
    return not str(e.get("device", "cpu")).startswith("cuda")


def _cpu_ms(e: dict) -> Optional[float]:
    v = (e.get("process_cpu_ms") or {}).get("p50")
    return float(v) if v else None


def speedups(entries: List[dict]) -> List[dict]:
    """RSD vs each baseline on the same backend/size/batch: ratio = baseline p50 / RSD p50 (>1: RSD faster)."""
    ok = _ok(entries)
    index = {(e["backend"], tuple(e["lr_size"]), e["batch"], e["contender"]): e for e in ok}
    out = []
    for e in ok:
        if e["contender"] != REFERENCE_CONTENDER:
            continue
        key = (e["backend"], tuple(e["lr_size"]), e["batch"])
        for other in CONTENDERS:
            b = index.get(key + (other,))
            if other == REFERENCE_CONTENDER or b is None:
                continue
            row = {"backend": e["backend"], "lr_size": e["lr_size"], "batch": e["batch"], "baseline": other,
                   "rsd_p50_ms": e["latency_ms"]["p50"], "baseline_p50_ms": b["latency_ms"]["p50"],
                   "speedup": b["latency_ms"]["p50"] / e["latency_ms"]["p50"],
                   "timing_only_steps": bool(b.get("timing_only_steps")), "speedup_by_cpu_time": None}
            cpu_rsd, cpu_base = _cpu_ms(e), _cpu_ms(b)
            if _on_cpu(e) and cpu_rsd and cpu_base:
                row["speedup_by_cpu_time"] = cpu_base / cpu_rsd
            out.append(row)
    return out


def measured_official_ms(entries: List[dict], entry: dict) -> Optional[Tuple[float, str]]:
    """The official sampler timed in this run (rsd-bench --official-repo) for ``entry``'s pipeline, if any."""
    kind = _pipeline_kind(entry["contender"])
    for o in _ok(entries):
        if (o.get("runtime") == "official" and _pipeline_kind(o["contender"]) == kind
                and o["lr_size"] == entry["lr_size"] and o["batch"] == entry["batch"]):
            return o["latency_ms"]["p50"], "official ResShift code, timed in this run (--official-repo)"
    return None


def official_ratios(entries: List[dict]) -> List[dict]:
    """Each measured entry vs the official code for the same pipeline (timed in this run when
    --official-repo was given, else the reference figures): official / ours."""
    out = []
    for e in _ok(entries):
        if e.get("runtime") == "official":
            continue
        ref = measured_official_ms(entries, e) or official_baseline_ms(e)
        if ref is None:
            continue
        ms, source = ref
        cpu = _cpu_ms(e) if _on_cpu(e) else None
        out.append({"backend": e["backend"], "contender": e["contender"], "lr_size": e["lr_size"],
                    "ours_p50_ms": e["latency_ms"]["p50"], "official_ms": ms,
                    "speedup_vs_official": ms / e["latency_ms"]["p50"], "ours_cpu_p50_ms": cpu,
                    "speedup_vs_official_by_cpu_time": ms / cpu if cpu else None, "source": source})
    return out


def finalize(results: dict, device: str, notes: Optional[List[str]] = None) -> dict:
    """Add schema version, environment, ratios and notes to the runner's results."""
    out = {"schema_version": SCHEMA_VERSION, **environment(device), **results}
    out["speedups"] = speedups(results["entries"])
    # the official figures are for the full-size architecture: a tiny model is not comparable
    out["official_ratios"] = official_ratios(results["entries"]) if results.get("arch") != "tiny" else []
    base_notes = list(notes or [])
    if device == "cpu":
        base_notes.append("CPU: latency is wall time; 'process CPU' is this process's CPU time over the same run "
                          "(all threads). On a shared machine wall time >> CPU time means we waited for other "
                          "processes (compare the host load above); with 1 thread the CPU-time ratios are the "
                          "contention-robust figures. With several threads on a busy machine, spinning OpenMP "
                          "threads inflate both")
    if results.get("random_weights"):
        base_notes.append("random weights: speed figures only; quality vs HR is n/a (random weights)")
    if any(e.get("timing_only_steps") for e in results["entries"]):
        base_notes.append("timing-only rows: the backend's denoiser graph has t = T-1 folded in, so the multi-step "
                          "samplers call that graph T times (same cost per call; the image is not valid)")
    out["notes"] = base_notes
    return out


# ---------------------------------------------------------------- writers

def _fmt(x: Optional[float], nd: int = 1) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{nd}f}"


def _size(e: dict) -> str:
    h, w = e["lr_size"]
    return f"{h}x{w}"


def render_markdown(res: dict) -> str:
    env = res["device"]
    lines = ["# rsd-bench results", ""]
    dev = env.get("gpu") or env.get("cpu")
    lines.append(f"- device: **{res['settings']['device']}** ({dev}; torch threads {env.get('torch_threads')})")
    lines.append(f"- commit: {res['git'].get('commit')}{' (dirty)' if res['git'].get('dirty') else ''}; "
                 f"created {res['created_utc']}; host load (1/5/15 min): {res.get('host_load_1_5_15min')}")
    v = res["versions"]
    lines.append("- versions: " + ", ".join(f"{k} {v[k]}" for k in v if v[k]))
    s = res["settings"]
    lines.append(f"- settings: batch {s['batch']}, warm-up {s['warmup']}, repeats {s['repeats']}, "
                 f"weights: {'random ' + res.get('arch', '') if res.get('random_weights') else 'checkpoints'}, "
                 f"seed {s['seed']}")
    lines.append("")

    lines += ["## Speed-up of RSD over each baseline (same backend, size, batch; p50 end-to-end)", ""]
    sp = res.get("speedups", [])
    if sp:
        lines += ["| backend | LR size | batch | baseline | baseline p50 ms | RSD p50 ms | RSD speed-up | "
                  "by process CPU time |", "|---|---|---|---|---|---|---|---|"]
        for r in sp:
            mark = " (timing-only)" if r["timing_only_steps"] else ""
            by_cpu = f"{r['speedup_by_cpu_time']:.2f}x" if r.get("speedup_by_cpu_time") else "-"
            lines.append(f"| {r['backend']} | {r['lr_size'][0]}x{r['lr_size'][1]} | {r['batch']} | "
                         f"{CONTENDERS[r['baseline']].label}{mark} | {_fmt(r['baseline_p50_ms'])} | "
                         f"{_fmt(r['rsd_p50_ms'])} | **{r['speedup']:.2f}x** | {by_cpu} |")
    else:
        lines.append("(no RSD/baseline pair was measured)")
    lines.append("")

    lines += ["## Against the official ResShift code", ""]
    orr = res.get("official_ratios", [])
    if orr:
        lines += ["| backend | contender | LR size | ours p50 ms | official ms | speed-up vs official | "
                  "ours process CPU ms | speed-up by CPU time |", "|---|---|---|---|---|---|---|---|"]
        for r in orr:
            by_cpu = r.get("speedup_vs_official_by_cpu_time")
            lines.append(f"| {r['backend']} | {CONTENDERS[r['contender']].label} | "
                         f"{r['lr_size'][0]}x{r['lr_size'][1]} | {_fmt(r['ours_p50_ms'])} | {_fmt(r['official_ms'])} | "
                         f"**{r['speedup_vs_official']:.2f}x** | {_fmt(r.get('ours_cpu_p50_ms'))} | "
                         f"{f'{by_cpu:.2f}x' if by_cpu else '-'} |")
        for src in sorted({r["source"] for r in orr}):
            lines.append(f"- official figures: {src}")
    else:
        lines.append("(no official figure for these sizes/devices"
                     + ("; the tiny architecture is not comparable with them)" if res.get("arch") == "tiny" else ")"))
    lines.append("")

    lines += ["## All measurements (ms; p50 / p90 / p99, spread = (p90 - p10) / p50)", ""]
    lines += ["| contender | backend | LR size | batch | p50 | p90 | p99 | spread | encode | denoise | decode | host "
              "| img/s | first call | peak MiB (dev / host RSS) | process CPU p50 |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in res["entries"]:
        if e["status"] != "ok":
            continue
        lat, st = e["latency_ms"], e["stages_ms"]
        mem = f"{_fmt(e.get('peak_device_mib'), 0)} / {_fmt(e.get('peak_host_rss_mib'), 0)}"
        label = e["label"] + (" (timing-only)" if e.get("timing_only_steps") else "")
        label += " (tiled)" if e.get("tiled") else ""
        lines.append(f"| {label} | {e['backend']} | {_size(e)} | {e['batch']} | {_fmt(lat['p50'])} | "
                     f"{_fmt(lat['p90'])} | {_fmt(lat['p99'])} | {lat['spread']:.2f} | {_fmt(st['encode']['p50'])} | "
                     f"{_fmt(st['denoise']['p50'])} | {_fmt(st['decode']['p50'])} | {_fmt(st['host']['p50'])} | "
                     f"{_fmt(e.get('throughput_ips'), 2)} | {_fmt(e.get('first_call_ms'))} | {mem} | "
                     f"{_fmt((e.get('process_cpu_ms') or {}).get('p50'))} |")
    skipped = [e for e in res["entries"] if e["status"] != "ok"]
    if skipped:
        lines += ["", "Not measured:", ""]
        seen = set()
        for e in skipped:
            key = (e["backend"], e["contender"], e["status"], e["reason"])
            if key in seen:
                continue
            seen.add(key)
            lines.append(f"- {e['label']} on {e['backend']}: {e['status']}: {e['reason']}")
    lines.append("")

    q = res.get("quality")
    if q:
        lines += render_quality(q)
    if res.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in res["notes"]] + [""]
    return "\n".join(lines)


def render_quality(q: dict) -> List[str]:
    lines = ["## Quality", "", f"- images: {q.get('lr_dir')} ({q.get('count')} images)"
             + (f", HR {q['hr_dir']}" if q.get("hr_dir") else ", no HR"), f"- {q.get('metric_note', '')}"]
    for n in q.get("notes", []):
        lines.append(f"- {n}")
    lines += ["", "| contender | backend | PSNR-Y dB | SSIM-Y | PSNR-RGB dB | SSIM-RGB | vs torch-fp32: max abs | "
              "mean abs | PSNR dB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in q.get("rows", []):
        hr = r.get("vs_hr") or {}
        ref = r.get("vs_reference") or {}

        def g(d: dict, k: str, nd: int) -> str:
            v = d.get(k)
            if isinstance(v, str):
                return v
            return f"{v:.2e}" if v is not None and 0 < abs(v) < 1e-3 else _fmt(v, nd)
        hr_cells = ("n/a (random weights)",) * 4 if r.get("vs_hr") == "n/a (random weights)" else (
            g(hr, "psnr_y", 2), g(hr, "ssim_y", 4), g(hr, "psnr_rgb", 2), g(hr, "ssim_rgb", 4))
        if r.get("status", "ok") != "ok":
            lines.append(f"| {r['label']} | {r['backend']} | {r['status']}: {r.get('reason')} |||||||")
            continue
        lines.append(f"| {r['label']} | {r['backend']} | " + " | ".join(hr_cells) + " | "
                     f"{g(ref, 'max_abs', 4)} | {g(ref, 'mean_abs', 5)} | {g(ref, 'psnr', 2)} |")
    lines.append("")
    return lines


def plot(res: dict, path: Path) -> Optional[Path]:
    """Latency vs LR size per contender and backend, and the RSD speed-up; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib not installed: no plot (pip install rsd-deploy[bench])")
        return None
    ok = [e for e in res["entries"] if e["status"] == "ok" and e["batch"] == res["settings"]["batch"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    series: Dict[Tuple[str, str], List[Tuple[int, float]]] = {}
    for e in ok:
        px = e["lr_size"][0] * e["lr_size"][1]
        series.setdefault((e["label"], e["backend"]), []).append((px, e["latency_ms"]["p50"]))
    for (label, backend), pts in sorted(series.items()):
        pts.sort()
        xs = [p[0] ** 0.5 for p in pts]
        ax1.plot(xs, [p[1] for p in pts], marker="o", label=f"{label} / {backend}")
    ax1.set_xlabel("LR side (sqrt of LR pixels)")
    ax1.set_ylabel("p50 latency per batch (ms)")
    ax1.set_yscale("log")
    ax1.set_title("Latency vs size")
    ax1.grid(True, which="both", alpha=0.3)
    if series:
        ax1.legend(fontsize=7)
    else:
        ax1.text(0.5, 0.5, "nothing measured", ha="center", va="center", transform=ax1.transAxes)
    sp = res.get("speedups", [])
    if sp:
        groups = sorted({(r["backend"], f"{r['lr_size'][0]}x{r['lr_size'][1]}") for r in sp})
        baselines = [b for b in CONTENDERS if b != REFERENCE_CONTENDER and any(r["baseline"] == b for r in sp)]
        width = 0.8 / max(1, len(baselines))
        for j, b in enumerate(baselines):
            vals = []
            for g in groups:
                m = [r["speedup"] for r in sp if (r["backend"], f"{r['lr_size'][0]}x{r['lr_size'][1]}") == g
                     and r["baseline"] == b]
                vals.append(m[0] if m else 0.0)
            bars = ax2.bar([i + j * width for i in range(len(groups))], vals, width, label=f"vs {CONTENDERS[b].label}")
            ax2.bar_label(bars, labels=[f"{v:.2f}x" if v else "" for v in vals], fontsize=7)
        ax2.set_xticks([i + width * (len(baselines) - 1) / 2 for i in range(len(groups))])
        ax2.set_xticklabels([f"{g[0]}\nLR {g[1]}" for g in groups], fontsize=7)
        ax2.axhline(1.0, color="k", lw=0.8)
        ax2.legend(fontsize=8)
    ax2.set_ylabel("RSD speed-up (baseline p50 / RSD p50)")
    ax2.set_title("Speed-up of RSD")
    fig.suptitle(f"rsd-bench on {res['device'].get('gpu') or res['device'].get('cpu')}", fontsize=9)
    fig.tight_layout()
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return path


def write_report(res: dict, out_dir: Path) -> Dict[str, Path]:
    """Write results.json, results.md and results.png into ``out_dir`` (each atomically)."""
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "results.json", "md": out_dir / "results.md"}
    atomic_write_bytes(paths["json"], (json.dumps(res, indent=2, default=str) + "\n").encode())
    atomic_write_bytes(paths["md"], render_markdown(res).encode())
    png = plot(res, out_dir / "results.png")
    if png is not None:
        paths["png"] = png
    return paths
