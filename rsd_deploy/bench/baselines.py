"""The official-code figures our benchmarks are compared with: one table, one place.

Official ResShift code, batch 1, ms, random weights: the GPU rows are shared/docs/GPU_BASELINE.md
section 1 (NVIDIA H200, torch 2.11), the CPU row is the per-component reference of
shared/docs/MODEL_SPEC.md section 8 (2-core box, fp32). Keys: (device, precision, latent side);
"one-step" is the SinSR/RSD structure without the RSD noise channel; "(mask cached)" rows are the
official code with its Swin masks cached. ``FLOOR_MS`` is GPU_BASELINE.md section 3 (H200 bf16 FLOP
floor).
"""
from __future__ import annotations

from typing import Dict, Tuple

OFFICIAL_MS: Dict[Tuple[str, str, int], Dict[str, float]] = {
    ("cpu", "fp32", 64): {"unet": 689.0, "encode": 2058.0, "decode": 4217.0},
    ("cuda", "fp32", 64): {"unet": 38.12, "encode": 4.85, "decode": 8.59, "one-step": 45.31, "resshift-v3": 154.01,
                           "resshift-v1": 635.62},
    ("cuda", "fp16", 64): {"unet": 40.98, "unet (mask cached)": 30.55, "encode": 5.01, "decode": 8.98,
                           "one-step": 76.21, "one-step (mask cached)": 44.69, "resshift-v3": 183.38,
                           "resshift-v1": 615.77},
    ("cuda", "bf16", 64): {"unet": 43.76, "encode": 5.06, "decode": 9.01, "one-step": 54.56, "resshift-v3": 179.57,
                           "resshift-v1": 635.33},
    ("cuda", "fp16", 256): {"unet": 59.58, "encode": 269.08, "decode": 319.0, "one-step": 654.59,
                            "resshift-v3": 831.27, "resshift-v1": 1500.43},
    ("cuda", "bf16", 256): {"unet": 62.43, "encode": 268.74, "decode": 318.66, "one-step": 652.79},
}
OFFICIAL_GPU_SOURCE = "official ResShift code on an NVIDIA H200, torch 2.11 (shared/docs/GPU_BASELINE.md)"
CPU_REF_SOURCE = ("CPU reference of shared/docs/MODEL_SPEC.md section 8 (2-core box, fp32, latent 64): "
                  "encode + NFE x UNet + decode, host work excluded")
FLOOR_MS = {64: {"unet": 0.133, "encode": 0.454, "decode": 0.883, "one-step": 1.47, "resshift-v3": 1.87,
                 "resshift-v1": 3.34},
            256: {"unet": 2.13, "encode": 18.1, "decode": 25.0, "one-step": 45.2, "resshift-v3": 51.6,
                  "resshift-v1": 75.1}}
#: UNet calls per image of each official pipeline
PIPELINE_NFE = {"one-step": 1, "resshift-v3": 4, "resshift-v1": 15}


def official_row(device: str, precision: str, latent: int) -> Dict[str, float]:
    """Every official figure for (device, precision, latent): components ('unet', 'encode',
    'decode') and pipelines ('one-step', 'resshift-v3', 'resshift-v1'). The CPU reference has
    components only: its pipelines are encode + NFE x UNet + decode (host work excluded)."""
    cuda = str(device).startswith("cuda")
    row = dict(OFFICIAL_MS.get(("cuda" if cuda else "cpu", precision, latent), {}))
    if not cuda and {"unet", "encode", "decode"} <= row.keys():
        for pipeline, nfe in PIPELINE_NFE.items():
            row[pipeline] = row["encode"] + nfe * row["unet"] + row["decode"]
    return row
