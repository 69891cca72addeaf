"""Run in a subprocess by test_memory.py: peak memory of one large image through the pipeline.

Usage: python -m tests.pipeline.memory_probe SIZE TILE BATCH -> prints JSON
{"peak_over_start_mb", "output_mb", "seconds"}. The networks are the cheap local stand-in, so
what is measured is the pipeline's own memory (input, noise, tiles, accumulator, output canvas).
"""
from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch


def current_rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so earlier peaks (imports) are not counted."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def main() -> None:
    size, tile, batch = (int(a) for a in sys.argv[1:4])
    torch.set_num_threads(1)
    from rsd_deploy.pipeline import LRImage, ModelInfo, ModelKind, SRPipeline, TileConfig
    from tests.pipeline.helpers import LocalStandInBackend, schedule

    rng = np.random.default_rng(0)
    lr = LRImage(Path("big.png"), rng.integers(0, 256, (size, size, 3), dtype=np.uint8), None, grayscale=False)
    pipe = SRPipeline(LocalStandInBackend(1), ModelInfo(ModelKind.RSD, schedule("v1"), 16, 1),
                      TileConfig(tile, tile // 4, batch))
    pipe.upscale_array(lr.rgb[:64, :64])  # warm up allocators and lazy imports
    reset = reset_peak_rss()
    start = current_rss_mb()
    t0 = time.perf_counter()
    canvas = pipe.upscale_image(lr)
    seconds = time.perf_counter() - t0
    peak = peak_rss_mb()
    assert canvas.pixels.shape == (4 * size, 4 * size, 3)
    print(json.dumps({"peak_over_start_mb": peak - start, "output_mb": canvas.pixels.nbytes / 2**20,
                      "seconds": seconds, "peak_reset": reset}))


if __name__ == "__main__":
    main()
