"""Every CPU path side by side: torch fp32/bf16 (+ torch.compile), ONNX Runtime fp32/int8, OpenVINO fp32/
bf16/int8 and the official ResShift code, interleaved round by round on a loaded box.

    python benchmarks/cpu_fast.py timing --onnx DIR --official-repo PATH [--threads 2] [--rounds 3]
    python benchmarks/cpu_fast.py timing --arch embedded --contenders rsd --onnx DIR   # the embedded demo model
    python benchmarks/cpu_fast.py quality-embedded --onnx DIR        # rsd-export --int8 of the embedded model
    python benchmarks/cpu_fast.py plot

``timing``: full-size architectures with rsd-bench's seeded random weights (``--onnx DIR`` holds
rsd-bench's exports, DIR/<contender>/; missing ones are exported there first), LR 64 -> SR 256, batch 1;
``--arch embedded``: the embedded demo model instead (RSD only; ``--onnx`` its ``rsd-export`` folder).
The ``torch-compile-*`` paths compile in the warm-up round (its time is the run's ``first_call_ms``).
Each round runs every (path, contender) once, in turn, so the other helpers' load hits all paths alike;
wall time, process CPU time and the RSS growth during the run are recorded per run, with ``uptime``
before and after. The one-step image of every path is compared with torch fp32 (PSNR, 8-bit) and with
the official code's image. ``quality-embedded``: every path against torch fp32 on the imagenet_val_sr LR
images through the embedded demo model (bench/precision_accuracy.py: PSNR and VQ code flips).
Results go to benchmarks/results/cpu-fast/ (JSON + the plot); the README there is written by hand
from them.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict

import numpy as np
import torch

OUT = Path(__file__).resolve().parent / "results" / "cpu-fast"
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
ONE_STEP_PATHS = ("torch-fp32-nchw", "torch-fp32", "torch-bf16", "torch-compile-bf16", "ort-fp32", "ort-int8",
                  "ov-fp32", "ov-bf16", "ov-int8", "official-fp32")
logger = logging.getLogger("cpu_fast")


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


_COPIES: dict = {}


def build_path(name: str, contender, models, schedule, config, workdir: Path):
    """A backend (or the official sampler) for one path name."""
    from rsd_deploy.backends.base import create_backend
    from rsd_deploy.bench.contenders import parse_backend_variant
    from rsd_deploy.bench.runner import default_backend_factory

    import copy

    unet, vq = models.unets[contender.key], models.vq
    if name.startswith("torch"):  # own copies per path: channels-last converts a module's weights in place
        key = (name, id(unet))
        if key not in _COPIES:  # contenders sharing a UNet (SinSR, v3, v1) share the path's copy
            _COPIES[key] = (copy.deepcopy(unet), _COPIES.get((name, "vq")) or copy.deepcopy(vq))
            _COPIES[(name, "vq")] = _COPIES[key][1]
        models = copy.copy(models)
        unet, vq = _COPIES[key]
        models.unets = dict(models.unets, **{contender.key: unet})
        models.vq = vq
    if name == "torch-fp32-nchw":  # the pre-issue-11 torch path: NCHW fp32 (what the official code does too)
        return create_backend("torch", unet=unet, vq=vq, schedule=schedule, precision="fp32", channels_last=False)
    if name == "official-fp32":
        from rsd_deploy.bench.official import _noise_free_unet, build_official

        official_unet = _noise_free_unet(unet, config.seed) if int(unet.config.noise_channels) else unet
        return build_official(Path(config.official_repo), official_unet, vq, schedule, contender.one_step)
    variant = parse_backend_variant(name, "cpu")
    return default_backend_factory(variant, contender, models, schedule, config, workdir)


def embedded_models(contenders):
    """The embedded demo model as rsd-bench's ModelSet (RSD only: it is an RSD student)."""
    from rsd_deploy.bench.contenders import ModelSet
    from rsd_deploy.default_model import load_default_models

    if [c.key for c in contenders] != ["rsd"]:
        raise SystemExit("--arch embedded: the embedded model is an RSD student; pass --contenders rsd")
    unet, vq, info = load_default_models()
    return ModelSet(unets={"rsd": unet}, vq=vq, random_weights=False, arch="embedded",
                    sources={"rsd": str(info.get("label")), "vq": str(info.get("label"))})


def timing(args) -> None:
    from rsd_deploy.bench.contenders import CONTENDERS, random_models, schedule_for
    from rsd_deploy.bench.runner import BenchConfig, draw_noises, super_resolve
    from rsd_deploy.bench.timer import HostMemory
    from rsd_deploy.metrics import psnr, to_uint8

    torch.set_num_threads(args.threads)
    contenders = [CONTENDERS[k] for k in args.contenders.split(",")]
    paths = args.paths.split(",")
    multi_paths = args.multistep_paths.split(",")
    config = BenchConfig(contenders=tuple(c.key for c in contenders), backends=("ort-fp32", "ort-int8", "ov-int8"),
                         onnx_dir=args.onnx, threads=args.threads, official_repo=args.official_repo, seed=0)
    models = embedded_models(contenders) if args.arch == "embedded" else random_models(contenders, arch="full", seed=0)
    workdir = Path(args.onnx).parent / "cpu-fast-work"
    workdir.mkdir(parents=True, exist_ok=True)
    record = {"command": " ".join(sys.argv), "threads": args.threads, "rounds": args.rounds,
              "uptime_start": uptime(), "lr": args.size,
              "arch": "embedded demo model" if args.arch == "embedded" else "full (rsd-bench random weights, seed 0)",
              "runs": {}, "build_seconds": {}, "quality_vs_torch_fp32_db": {}, "quality_vs_official_db": {}}
    try:
        from rsd_deploy.backends.capabilities import cpu_summary

        record["cpu"] = cpu_summary()
    except ImportError:
        pass
    onnx_for = set(args.onnx_contenders.split(","))
    jobs = []
    for c in contenders:
        for p in (paths if c.one_step else multi_paths):
            if p.startswith(("ort-", "ov-")) and c.key not in onnx_for:
                continue  # each exported contender is a long full-size export on this box
            jobs.append((p, c))
    backends = {}
    for p, c in jobs:
        t0 = time.perf_counter()
        try:
            backends[(p, c.key)] = build_path(p, c, models, schedule_for(c), config, workdir)
        except Exception as e:  # noqa: BLE001 - a path that cannot be built is recorded, not fatal
            logger.warning("%s / %s: %s", p, c.key, e)
            record["runs"][f"{p}/{c.key}"] = {"status": "skipped", "reason": str(e).splitlines()[0][:200]}
            continue
        record["build_seconds"][f"{p}/{c.key}"] = round(time.perf_counter() - t0, 2)
    h = w = args.size
    lq = torch.rand((1, 3, h, w), generator=torch.Generator().manual_seed(0)) * 2 - 1
    images: Dict[str, torch.Tensor] = {}
    mem = HostMemory()
    for r in range(args.rounds + 1):  # round 0: warm-up (first calls compile, allocate, autotune)
        for (p, key), backend in backends.items():
            c = CONTENDERS[key]
            schedule = schedule_for(c)
            gen = torch.Generator().manual_seed(0)
            noises = draw_noises(c, schedule, (1, 3, h, w), gen, torch.device("cpu"))
            base = rss_mib()
            mem.reset_peak()
            t0, c0 = time.perf_counter(), time.process_time()
            with torch.inference_mode():
                if p == "official-fp32":
                    out = backend.run(lq, noises.prior)
                else:
                    steps = None
                    supported = getattr(backend, "supported_steps", None)
                    if supported is not None and not c.one_step:  # timing-only: the folded T-1 graph T times
                        steps = [max(supported)] * c.nfe
                    out = super_resolve(backend, c, schedule, lq, noises, None, steps)
            wall, cpu = (time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000
            entry = record["runs"].setdefault(f"{p}/{key}", {"status": "ok", "wall_ms": [], "cpu_ms": [],
                                                             "rss_growth_mib": []})
            if r == 0:
                entry["first_call_ms"] = round(wall, 1)
                if c.one_step:
                    images[f"{p}/{key}"] = out.float().cpu()
                continue
            entry["wall_ms"].append(round(wall, 1))
            entry["cpu_ms"].append(round(cpu, 1))
            entry["rss_growth_mib"].append(round(mem.peak_mib() - base, 1))
            logger.info("round %d %s/%s: %.0f ms wall, %.0f ms cpu", r, p, key, wall, cpu)
        record[f"uptime_after_round_{r}"] = uptime()
    for name, e in record["runs"].items():
        if e.get("status") == "ok" and e["wall_ms"]:
            e["wall_p50_ms"] = float(np.median(e["wall_ms"]))
            e["cpu_p50_ms"] = float(np.median(e["cpu_ms"]))
    for key in {k.split("/")[1] for k in images}:
        ref = images.get(f"torch-fp32-nchw/{key}")
        official = images.get(f"official-fp32/{key}")
        for name, img in images.items():
            if not name.endswith("/" + key):
                continue
            if ref is not None:
                record["quality_vs_torch_fp32_db"][name] = psnr(to_uint8(img), to_uint8(ref))
            if official is not None:
                record["quality_vs_official_db"][name] = psnr(to_uint8(img), to_uint8(official))
    for key in ("rsd", "sinsr"):
        folder = Path(args.onnx) / key
        if (folder / "manifest.json").is_file():
            m = json.loads((folder / "manifest.json").read_text())
            record.setdefault("model_mib", {})[key] = {
                p: round(sum(g["variants"][p]["bytes"] for g in m["graphs"].values()) / 2**20, 1)
                for p in ("fp32", "int8") if all(p in g["variants"] for g in m["graphs"].values())}
    record["uptime_end"] = uptime()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / args.json).write_text(json.dumps(record, indent=1))
    print(json.dumps({k: v.get("wall_p50_ms") for k, v in record["runs"].items()}, indent=1))


def quality_embedded(args) -> None:
    from rsd_deploy.backends.base import create_backend
    from rsd_deploy.bench.precision_accuracy import compare_paths, lr_test_images
    from rsd_deploy.default_model import load_default_models
    from rsd_deploy.models import Schedule

    torch.set_num_threads(args.threads)
    unet, vq, info = load_default_models()
    schedule = Schedule.preset("v1")
    ref = create_backend("torch", unet=unet, vq=vq, schedule=schedule, precision="fp32", channels_last=False)
    import copy

    def torch_path(p, cl=True):
        return create_backend("torch", unet=copy.deepcopy(unet), vq=copy.deepcopy(vq), schedule=schedule,
                              precision=p, channels_last=cl)

    cache = Path(args.onnx).parent / "ov-cache-embedded"
    candidates = {"torch-fp32": torch_path("fp32"), "torch-bf16": torch_path("bf16"),
                  "ort-fp32": create_backend("onnxruntime", export_dir=args.onnx, precision="fp32",
                                             intra_op_threads=args.threads),
                  "ort-int8": create_backend("onnxruntime", export_dir=args.onnx, precision="int8",
                                             intra_op_threads=args.threads),
                  "ov-fp32": create_backend("openvino", export_dir=args.onnx, precision="fp32", threads=args.threads,
                                            cache_dir=cache),
                  "ov-bf16": create_backend("openvino", export_dir=args.onnx, precision="bf16", threads=args.threads,
                                            cache_dir=cache),
                  "ov-bf16-whole-decoder": create_backend("openvino", export_dir=args.onnx, precision="bf16",
                                                          threads=args.threads, cache_dir=cache,
                                                          precise_quantizer=False),
                  "ov-int8": create_backend("openvino", export_dir=args.onnx, precision="int8", threads=args.threads,
                                            cache_dir=cache),
                  "ov-int8-fp32-float": create_backend("openvino", export_dir=args.onnx, precision="int8",
                                                       threads=args.threads, cache_dir=cache, int8_float="fp32")}
    images = lr_test_images(DATA / "imagenet_val_sr" / "lq", args.limit, int(unet.config.input_multiple))
    results = compare_paths(ref, candidates, schedule, images, vq.quantize.embedding.weight.detach().numpy(),
                            int(unet.config.noise_channels))
    manifest = json.loads((Path(args.onnx) / "manifest.json").read_text())
    record = {"command": " ".join(sys.argv), "model": info.get("label"), "images": len(images),
              "image_folder": "shared/data/imagenet_val_sr/lq (64 x 64 LR)", "reference": "torch fp32 (NCHW)",
              "int8_recipe": {g: v["variants"]["int8"]["precision_recipe"].get("reason",
                                                                              v["variants"]["int8"]["precision_recipe"]
                                                                              .get("tool"))
                              for g, v in manifest["graphs"].items()},
              "paths": {r.path: {k: v for k, v in r.to_dict().items() if k != "path"} for r in results}}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "quality_embedded.json").write_text(json.dumps(record, indent=1))
    for r in results:
        d = r.to_dict()
        print(f"{r.path:24s} {d['psnr_mean_db']:6.2f} dB (min {d['psnr_min_db']:.2f}) flips {100 * d['flip_rate']:.2f} %"
              f" decoder max abs {d['decoder_max_abs']:.3f}")


def plot(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timing_rec = json.loads((OUT / args.json).read_text())
    quality = json.loads((OUT / "quality_embedded.json").read_text())["paths"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, e in timing_rec["runs"].items():
        path, key = name.split("/")
        if key != "rsd" or e.get("status") != "ok":
            continue
        q = quality.get(path if path != "torch-fp32-nchw" else "torch-fp32", {}).get("psnr_mean_db")
        if path == "official-fp32" or q is None:
            q = 60.0 if path in ("official-fp32", "torch-fp32-nchw") else None
        if q is None:
            continue
        q = min(q, 60.0)
        ax.scatter(e["wall_p50_ms"], q, s=40)
        ax.annotate(path, (e["wall_p50_ms"], q), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("full-size one-step image, LR 64 -> SR 256, p50 wall ms (log)")
    ax.set_ylabel("PSNR vs torch fp32, embedded model, real LR (dB; fp32 capped at 60)")
    ax.set_title("CPU paths: speed vs fidelity (RSD)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(OUT / "speed_vs_psnr.png", dpi=120)


def rsd_speedup_lines(rec: dict) -> list:
    """Markdown rows: RSD's speed-up over every other contender on the same path (p50 wall and CPU)."""
    ok = {k: v for k, v in rec["runs"].items() if v.get("status") == "ok" and v.get("wall_p50_ms")}
    rows = []
    for key, e in sorted(ok.items()):
        path, contender = key.split("/")
        mine = ok.get(f"{path}/rsd")
        if contender == "rsd" or mine is None:
            continue
        rows.append(f"| {path} | {contender} | {e['wall_p50_ms'] / mine['wall_p50_ms']:.2f}x | "
                    f"{e['cpu_p50_ms'] / mine['cpu_p50_ms']:.2f}x |")
    if not rows:
        return []
    return ["", "RSD's speed-up over each contender on the same path (contender p50 / RSD p50):", "",
            "| path | over | wall | CPU |", "|---|---|---|---|"] + rows


def report(args) -> None:
    """results/cpu-fast/tables.md from the JSON files (numbers only; the README interprets them)."""
    lines = ["# cpu-fast tables (generated by `python benchmarks/cpu_fast.py report`)", ""]
    for name in args.json.split(","):
        path = OUT / name
        if not path.is_file():
            continue
        rec = json.loads(path.read_text())
        lines += [f"## {name}", "", f"Command: `{rec['command']}`  ", f"CPU: {rec.get('cpu', '?')}; threads "
                  f"{rec['threads']}; {rec['rounds']} timed rounds after one warm-up round; load: "
                  f"start `{rec['uptime_start']}`, end `{rec['uptime_end']}`", "",
                  "| path / contender | p50 wall ms | p50 CPU ms | runs (wall) | first call ms | RSS growth MiB "
                  "| PSNR vs torch fp32 (dB) | PSNR vs official (dB) |", "|---|---|---|---|---|---|---|---|"]
        official = {k.split("/")[1]: v.get("wall_p50_ms") for k, v in rec["runs"].items()
                    if k.startswith("official-fp32/") and v.get("status") == "ok"}
        for key, e in sorted(rec["runs"].items(), key=lambda kv: (kv[0].split("/")[1], kv[1].get("wall_p50_ms") or 1e12)):
            if e.get("status") != "ok":
                lines.append(f"| {key} | skipped: {e.get('reason')} | | | | | | |")
                continue
            q = rec["quality_vs_torch_fp32_db"].get(key)
            qo = rec["quality_vs_official_db"].get(key)
            off = official.get(key.split("/")[1])
            speed = f" ({off / e['wall_p50_ms']:.2f}x official)" if off and not key.startswith("official") else ""
            lines.append(f"| {key} | {e['wall_p50_ms']:.0f}{speed} | {e['cpu_p50_ms']:.0f} | "
                         f"{', '.join(f'{x:.0f}' for x in e['wall_ms'])} | {e.get('first_call_ms', 0):.0f} | "
                         f"{max(e['rss_growth_mib']):.0f} | {'' if q is None else f'{q:.1f}'} | "
                         f"{'' if qo is None else f'{qo:.1f}'} |")
        lines += rsd_speedup_lines(rec)
        if rec.get("model_mib"):
            lines += ["", f"Model size on disk (MiB, three graphs): {json.dumps(rec['model_mib'])}"]
        lines.append("")
    q = OUT / "quality_embedded.json"
    if q.is_file():
        rec = json.loads(q.read_text())
        lines += ["## quality_embedded.json", "", f"Command: `{rec['command']}`  ",
                  f"{rec['images']} images of {rec['image_folder']}, model: {rec['model']}, reference: "
                  f"{rec['reference']}", "", "| path | PSNR mean (dB) | PSNR min (dB) | VQ code flips | decoder max abs |",
                  "|---|---|---|---|---|"]
        for path, d in rec["paths"].items():
            lines.append(f"| {path} | {d['psnr_mean_db']:.2f} | {d['psnr_min_db']:.2f} | "
                         f"{100 * d['flip_rate']:.2f} % | {d['decoder_max_abs']:.3f} |")
        lines += ["", "INT8 recipe per graph: " + "; ".join(f"{g}: {r}" for g, r in rec["int8_recipe"].items()), ""]
    (OUT / "tables.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("timing")
    t.add_argument("--onnx", required=True)
    t.add_argument("--official-repo")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--rounds", type=int, default=3)
    t.add_argument("--size", type=int, default=64)
    t.add_argument("--arch", choices=("full", "embedded"), default="full",
                   help="full-size random weights, or the embedded demo model (--contenders rsd, --onnx its export)")
    t.add_argument("--contenders", default="rsd,sinsr,resshift-v3,resshift-v1")
    t.add_argument("--paths", default=",".join(ONE_STEP_PATHS))
    t.add_argument("--multistep-paths", default="torch-fp32-nchw,torch-bf16,official-fp32")
    t.add_argument("--onnx-contenders", default="rsd", help="contenders run on the ONNX paths (ort-*, ov-*)")
    t.add_argument("--json", default="timing_full.json")
    q = sub.add_parser("quality-embedded")
    q.add_argument("--onnx", required=True)
    q.add_argument("--threads", type=int, default=1)
    q.add_argument("--limit", type=int, default=32)
    p = sub.add_parser("plot")
    p.add_argument("--json", default="timing_full.json")
    r = sub.add_parser("report")
    r.add_argument("--json", default="timing_full.json", help="comma list of timing JSON files")
    args = ap.parse_args()
    {"timing": timing, "quality-embedded": quality_embedded, "plot": plot, "report": report}[args.cmd](args)


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
