"""The compute floor of this CPU: dense matrix throughput per precision, and what it means per image.

    python benchmarks/cpu_floor.py [--threads 2] [--repeats 5] [--count-flops] [--official-ms MS]

Measures, with ``--threads`` threads: torch matmul 4096 x 4096 in fp32 and bf16, a bf16 and fp32 3x3
convolution (channels-last, 1 x 256 x 128 x 128 -> 256), torch ``_int_mm`` int8 (4096^3, int32
accumulate), and OpenVINO on the same matmul in f32, bf16 and int8 (FakeQuantize on both inputs, which
the CPU plugin runs as int8 kernels). Each figure is the best of ``--repeats`` timed calls after one
warm-up (a floor, not a typical time). ``--count-flops`` counts the FLOPs of one full-size one-step RSD
image (LR 64 -> SR 256, encoder + UNet + decoder) with torch's FLOP counter (about a minute of fp32
work). The floor per image is those FLOPs at the best measured rate; with ``--official-ms`` (the
official code's measured time for that image) it also prints the best possible "x the official code".
Writes benchmarks/results/cpu-fast/cpu_floor.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from cpu_fast import OUT, uptime  # benchmarks/ is on sys.path when this script runs


def best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: first calls pick kernels, allocate, pack weights
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def torch_rates(n: int, repeats: int) -> dict:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    flops = 2.0 * n ** 3
    out = {}
    with torch.inference_mode():
        out["torch matmul fp32"] = flops / best_seconds(lambda: a @ b, repeats)
        ab, bb = a.bfloat16(), b.bfloat16()
        out["torch matmul bf16"] = flops / best_seconds(lambda: ab @ bb, repeats)
        ai = torch.randint(-127, 128, (n, n), dtype=torch.int8, generator=g)
        bi = torch.randint(-127, 128, (n, n), dtype=torch.int8, generator=g)
        out["torch _int_mm int8"] = flops / best_seconds(lambda: torch._int_mm(ai, bi), repeats)
        c, hw = 256, 128
        x = torch.randn(1, c, hw, hw, generator=g).to(memory_format=torch.channels_last)
        conv = torch.nn.Conv2d(c, c, 3, padding=1).to(memory_format=torch.channels_last).eval()
        conv_flops = 2.0 * c * c * 9 * hw * hw
        out["torch conv3x3 fp32 (1x256x128x128, channels-last)"] = conv_flops / best_seconds(lambda: conv(x), repeats)
        conv_b, xb = conv.bfloat16(), x.bfloat16()
        out["torch conv3x3 bf16 (1x256x128x128, channels-last)"] = conv_flops / best_seconds(lambda: conv_b(xb), repeats)
    return out


def openvino_rates(n: int, repeats: int, threads: int) -> dict:
    try:
        import openvino as ov
        from openvino import opset13 as ops
    except ImportError:
        return {}
    core = ov.Core()
    flops = 2.0 * n ** 3
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    w = rng.standard_normal((n, n), dtype=np.float32)

    def fq(node, lo, hi):  # symmetric 255-level fake quantisation: the CPU plugin runs it as int8
        c = lambda v: ops.constant(np.array(v, dtype=np.float32))  # noqa: E731
        return ops.fake_quantize(node, c(lo), c(hi), c(lo), c(hi), 255)

    out = {}
    for name, precision, quantise in (("openvino matmul f32", "f32", False), ("openvino matmul bf16", "bf16", False),
                                      ("openvino matmul int8 (FakeQuantize inputs)", "bf16", True)):
        x = ops.parameter([n, n], ov.Type.f32, name="x")
        weight = ops.constant(w)
        lhs, rhs = (fq(x, -4.0, 4.0), fq(weight, -4.0, 4.0)) if quantise else (x, weight)
        model = ov.Model([ops.matmul(lhs, rhs, False, False)], [x], "mm")
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                      "INFERENCE_NUM_THREADS": threads,
                                                      "PERFORMANCE_HINT": "LATENCY"})
        req = compiled.create_infer_request()
        out[name] = flops / best_seconds(lambda: req.infer({0: a}), repeats)
    c, hw = 256, 128  # the torch convolution's shape
    xc = rng.standard_normal((1, c, hw, hw), dtype=np.float32)
    wc = rng.standard_normal((c, c, 3, 3), dtype=np.float32) * 0.05
    conv_flops = 2.0 * c * c * 9 * hw * hw
    for name, precision, quantise in (("openvino conv3x3 bf16 (1x256x128x128)", "bf16", False),
                                      ("openvino conv3x3 int8 (FakeQuantize inputs)", "bf16", True)):
        x = ops.parameter([1, c, hw, hw], ov.Type.f32, name="x")
        weight = ops.constant(wc)
        lhs, rhs = (fq(x, -4.0, 4.0), fq(weight, -0.2, 0.2)) if quantise else (x, weight)
        model = ov.Model([ops.convolution(lhs, rhs, [1, 1], [1, 1], [1, 1], [1, 1])], [x], "conv")
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                      "INFERENCE_NUM_THREADS": threads,
                                                      "PERFORMANCE_HINT": "LATENCY"})
        req = compiled.create_infer_request()
        out[name] = conv_flops / best_seconds(lambda: req.infer({0: xc}), repeats)
    return out


def one_step_flops() -> float:
    """FLOPs of one full-size one-step RSD image (LR 64 -> SR 256) through torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    from rsd_deploy.backends.base import create_backend
    from rsd_deploy.bench.contenders import CONTENDERS, random_models, schedule_for
    from rsd_deploy.bench.runner import draw_noises, super_resolve

    c = CONTENDERS["rsd"]
    models = random_models([c], arch="full", seed=0)
    schedule = schedule_for(c)
    backend = create_backend("torch", unet=models.unets[c.key], vq=models.vq, schedule=schedule, precision="fp32",
                             channels_last=False)
    lq = torch.rand((1, 3, 64, 64), generator=torch.Generator().manual_seed(0)) * 2 - 1
    noises = draw_noises(c, schedule, (1, 3, 64, 64), torch.Generator().manual_seed(0), torch.device("cpu"))
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        super_resolve(backend, c, schedule, lq, noises, None, None)
    return float(counter.get_total_flops())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=4096, help="matmul side")
    ap.add_argument("--count-flops", action="store_true")
    ap.add_argument("--image-tflop", type=float, default=1.12, help="used when --count-flops is not given")
    ap.add_argument("--official-ms", type=float, help="the official code's measured ms for the same image")
    ap.add_argument("--json", default="cpu_floor.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    record = {"command": " ".join(["python"] + sys.argv), "threads": args.threads, "uptime_start": uptime()}
    try:
        from rsd_deploy.backends.capabilities import cpu_summary

        record["cpu"] = cpu_summary()
    except ImportError:
        pass
    rates = torch_rates(args.size, args.repeats)
    rates.update(openvino_rates(args.size, args.repeats, args.threads))
    record["tflops"] = {k: round(v / 1e12, 3) for k, v in rates.items()}
    record["uptime_after_rates"] = uptime()
    if args.count_flops:
        record["image_tflop_counted"] = round(one_step_flops() / 1e12, 4)
    tflop = record.get("image_tflop_counted", args.image_tflop)
    record["image_tflop_used"] = tflop
    best_name = max(rates, key=rates.get)
    record["best_rate"] = best_name
    record["floor_ms_per_image"] = round(tflop / (rates[best_name] / 1e12) * 1000, 1)
    record["floor_ms_per_image_by_rate"] = {k: round(tflop / (v / 1e12) * 1000, 1) for k, v in rates.items()}
    if args.official_ms:
        record["official_ms"] = args.official_ms
        record["best_possible_x_official"] = round(args.official_ms / record["floor_ms_per_image"], 2)
    record["uptime_end"] = uptime()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / args.json).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
