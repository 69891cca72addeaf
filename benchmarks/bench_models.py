#!/usr/bin/env python
"""Time our full-size models beside the official-code figures (issue 2's model benchmark).

Components (UNet forward, VQ encode, VQ decode incl. quantise) and pipelines (one-step
SinSR/RSD structure, ResShift v3 4 steps, v1 15 steps) at full size, batch 1, random weights,
timed with rsd_deploy.bench.timer (warm-up, repeats, device synchronisation). The official
figures are the CPU reference of MODEL_SPEC.md section 8 (2-core box) and GPU_BASELINE.md (H200).

    python benchmarks/bench_models.py                      # CPU, latent 64, fp32
    python benchmarks/bench_models.py --device cuda --precision fp16 --latent 64 --latent 256
    python benchmarks/bench_models.py --device cuda --precision fp16 --fast   # CUDA graphs path

Writes benchmarks/results/bench_models-<device>-<precision>[-fast].{json,md} (or -o DIR).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

import torch

from rsd_deploy.bench.baselines import FLOOR_MS, official_row
from rsd_deploy.bench.contenders import CONTENDERS, random_models
from rsd_deploy.bench.report import environment
from rsd_deploy.bench.runner import draw_noises, super_resolve
from rsd_deploy.bench.timer import DeviceTimer, measure
from rsd_deploy.models import Schedule


def make_backend(unet, vq, schedule, args):
    from rsd_deploy.backends.base import create_backend

    return create_backend("torch-fast" if args.fast else "torch", unet=unet, vq=vq, schedule=schedule,
                          device=args.device, precision=args.precision)


def run(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    models = random_models([CONTENDERS["sinsr"]], arch="full", seed=0)  # one-step timing = SinSR structure
    unet, vq = models.unets["sinsr"], models.vq
    timer = DeviceTimer(args.device)
    rows = []
    for latent in args.latent:
        shape = (1, 3, latent, latent)
        g = torch.Generator().manual_seed(0)
        lq = (torch.rand(shape, generator=g) * 2 - 1).to(args.device)
        img = (torch.rand((1, 3, 4 * latent, 4 * latent), generator=g) * 2 - 1).to(args.device)
        z = torch.randn(shape, generator=g).to(args.device)
        official = official_row(args.device, args.precision, latent)
        floors = FLOOR_MS.get(latent, {}) if args.device.startswith("cuda") else {}
        items = []
        v1 = Schedule.preset("v1")
        backend = make_backend(unet, vq, v1, args)
        items += [("unet", lambda rec, b=backend: _stage(rec, "denoise", b.denoise, z, 14, lq)),
                  ("encode", lambda rec, b=backend: _stage(rec, "encode", b.encode, img)),
                  ("decode", lambda rec, b=backend: _stage(rec, "decode", b.decode, z))]
        for key in args.pipelines:
            contender = CONTENDERS["sinsr" if key == "one-step" else key]
            sched = Schedule.preset(contender.schedule)
            b = backend if contender.schedule == "v1" else make_backend(unet, vq, sched, args)
            gen = torch.Generator(device=args.device if args.device.startswith("cuda") else "cpu").manual_seed(0)

            def pipe(rec, b=b, c=contender, s=sched, gen=gen):
                with torch.inference_mode():
                    noises = draw_noises(c, s, shape, gen, b.device)
                    return super_resolve(b, c, s, lq, noises, rec)

            items.append((key, pipe))
        for name, fn in items:
            if latent >= 256 and name == "resshift-v1" and not args.device.startswith("cuda"):
                continue  # hours on a CPU
            print(f"latent {latent}: {name} ...", file=sys.stderr, flush=True)
            try:
                m = measure(fn, timer, warmup=args.warmup, repeats=args.repeats)
            except RuntimeError as e:  # e.g. CUDA out of memory at latent 256
                rows.append({"latent": latent, "item": name, "error": str(e).splitlines()[0][:200]})
                if args.device.startswith("cuda"):
                    torch.cuda.empty_cache()
                continue
            ref = official.get(name)
            rows.append({"latent": latent, "item": name, **m.to_dict(), "official_ms": ref,
                         "speedup_vs_official": (ref / m.total.p50) if ref else None,
                         "floor_ms": floors.get(name), "x_floor": (m.total.p50 / floors[name]) if name in floors
                         else None})
    return {"script": "benchmarks/bench_models.py", **environment(args.device),
            "settings": {"device": args.device, "precision": args.precision, "fast": args.fast,
                         "latent": args.latent, "warmup": args.warmup, "repeats": args.repeats, "batch": 1,
                         "weights": "random (full-size architecture)"},
            "official_source": "CPU: MODEL_SPEC.md section 8 (2-core box; pipelines = sum of components); "
                               "GPU: GPU_BASELINE.md (official code, H200, torch 2.11)",
            "rows": rows}


def _stage(rec, stage, fn, *a):
    with torch.inference_mode(), rec.stage(stage):
        return fn(*a)


def to_markdown(res: dict) -> str:
    s = res["settings"]
    lines = [f"# Model benchmark: {res['device'].get('gpu') or res['device']['cpu']}, {s['precision']}"
             f"{' fast path' if s['fast'] else ''}", "",
             f"- {res['created_utc']}, commit {res['git'].get('commit')}, torch {res['versions']['torch']}, "
             f"threads {res['device']['torch_threads']}, host load {res['host_load_1_5_15min']}",
             f"- batch 1, random weights, warm-up {s['warmup']}, repeats {s['repeats']}; official: "
             f"{res['official_source']}", "",
             "| latent | item | p50 ms | p90 ms | spread | process CPU p50 ms | first call ms | peak MiB (dev / host) | "
             "official ms | speed-up vs official | by process CPU time | x FLOP floor |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(x, nd=1):
        return "-" if x is None else (f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.{nd}f}")
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"| {r['latent']} | {r['item']} | failed: {r['error']} ||||||||||")
            continue
        lat = r["latency_ms"]
        cpu = r["process_cpu_ms"]["p50"]
        on_cpu = not str(res["settings"]["device"]).startswith("cuda")
        by_cpu = f"{r['official_ms'] / cpu:.2f}x" if (on_cpu and r["official_ms"] and cpu) else "-"
        lines.append(f"| {r['latent']} | {r['item']} | {f(lat['p50'], 2)} | {f(lat['p90'], 2)} | {lat['spread']:.2f} | "
                     f"{f(r['process_cpu_ms']['p50'])} | "
                     f"{f(r['first_call_ms'])} | {f(r['peak_device_mib'], 0)} / {f(r['peak_host_rss_mib'], 0)} | "
                     f"{f(r['official_ms'], 2)} | {f(r['speedup_vs_official'], 2)}x | {by_cpu} | {f(r['x_floor'], 1)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--fast", action="store_true", help="rsd_deploy.backends.fast_torch_backend (CUDA graphs, low-precision weights)")
    p.add_argument("--latent", type=int, action="append", help="latent (= LR) size, repeatable; default 64")
    p.add_argument("--pipelines", nargs="*", default=["one-step", "resshift-v3", "resshift-v1"])
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int)
    p.add_argument("-o", "--output", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)
    args.latent = args.latent or [64]
    res = run(args)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"bench_models-{args.device.split(':')[0]}-{args.precision}{'-fast' if args.fast else ''}"
    for suffix, text in ((".json", json.dumps(res, indent=2, default=str) + "\n"), (".md", to_markdown(res))):
        tmp = out / f".{stem}{suffix}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / f"{stem}{suffix}")
    print(to_markdown(res))
    print(f"wrote {out / stem}.json/.md ({dt.datetime.now():%H:%M})", file=sys.stderr)


if __name__ == "__main__":
    main()
