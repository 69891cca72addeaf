"""Export the full-size RSD architecture (random weights) to ONNX on the CPU and record time and sizes.

    python benchmarks/export_fullsize.py [--out /tmp/rsd-fullsize] [--fp16] [--int8]

Writes benchmarks/results/export_fullsize_cpu.md. Random weights are enough here: the point is
that the full graphs export, stay shape-generic and match PyTorch; accuracy on real weights is
checked by the tiny-fixture tests and by `rsd-export` itself.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import time
from pathlib import Path

import torch

from rsd_deploy.config import UNetConfig, VQConfig
from rsd_deploy.export.exporter import ExportConfig, export_models
from rsd_deploy.models import UNetSwin, VQAutoencoder

RESULTS = Path(__file__).resolve().parent / "results" / "export_fullsize_cpu.md"


def random_models(seed: int = 0):
    torch.manual_seed(seed)
    unet = UNetSwin(UNetConfig.full(noise_channels=1)).eval()
    vq = VQAutoencoder(VQConfig.full()).eval()
    with torch.no_grad():  # the bias tables start at zero: give them values so they are exercised
        for name, p in unet.named_parameters():
            if "relative_position_bias_table" in name:
                p.normal_(0.0, 0.02)
    return unet, vq


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/rsd-fullsize-export"))
    ap.add_argument("--fp16", action="store_true")
    ap.add_argument("--int8", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    unet, vq = random_models()
    start = time.perf_counter()
    result = export_models(ExportConfig(out_dir=args.out, unet=unet, vq_model=vq, model="rsd", demo=True,
                                        fp16=args.fp16, int8=args.int8, accuracy_count=1, calib_count=4,
                                        progress=False))
    total = time.perf_counter() - start
    lines = [
        "# Full-size RSD export on the CPU (random weights)", "",
        f"Command: `python benchmarks/export_fullsize.py{' --fp16' if args.fp16 else ''}{' --int8' if args.int8 else ''}"
        f" --threads {args.threads}`  ",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), torch "
        f"{torch.__version__}, {args.threads} thread(s); TorchScript exporter, opset 17. Total wall time "
        f"{total:.0f} s (export, parity at 3 shapes, conversions, accuracy report, lint).", "",
        "| graph | precision | file(s) | size (MB) | export/convert time (s) |", "|---|---|---|---|---|",
    ]
    for g, variants in result.files.items():
        for p, path in variants.items():
            ext = " + .data" if Path(str(path) + ".data").exists() else ""
            secs = result.export_seconds.get(f"{g}.{p}")
            lines.append(f"| {g} | {p} | {path.name}{ext} | {result.bytes[g][p] / 1e6:.1f} | "
                         f"{'- (the fp32 graph is its int8 variant)' if secs is None else f'{secs:.1f}'} |")
    lines += ["", "FP32 parity, ONNX Runtime CPU vs PyTorch (latent shapes B x h x w):", "",
              "| graph | shape | max abs | mean abs | atol |", "|---|---|---|---|---|"]
    for r in result.parity:
        lines.append(f"| {r.graph} | {'x'.join(map(str, r.shape))} | {r.max_abs:.2e} | {r.mean_abs:.2e} | {r.atol:.0e} |")
    lines += ["", "End to end (1 real LR crop at latent 64, SR PSNR vs PyTorch fp32; random weights, so the INT8 "
              "number says little about trained weights):", ""]
    lines += [f"- {line}" for line in result.accuracy.summary_lines()]  # type: ignore[attr-defined]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
