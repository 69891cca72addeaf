"""Package a trained demo model as the embedded default (rsd_deploy/assets/): fp16 safetensors + info JSON.

Training happens in rsd-train (train/configs/demo_{vq,teacher,rsd}.yaml); this script only packages its
exports, atomically, after checking that the pair loads and fits the size budget:

  python train/scripts/build_default_model.py --run runs/demo        # RUN/vq/vq.safetensors + RUN/rsd/rsd_ema.safetensors
  python train/scripts/build_default_model.py --vq VQ --unet UNET [--assets DIR]

The whole chain from scratch: train/scripts/rebuild_demo_model.sh (see train/RESULTS.md).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

MAX_BYTES = 20 * 2 ** 20  # the embedded files' budget (issue 12)


def package(vq_file: Path, unet_file: Path, assets: Path) -> dict:
    from rsd_deploy.checkpoint import load_checkpoint, save_safetensors
    from rsd_deploy.default_model import LABEL
    from rsd_deploy.errors import CheckpointError
    from rsd_deploy.fileio import atomic_write_text
    from rsd_deploy.models.unet import UNetSwin
    from rsd_deploy.models.vq import VQAutoencoder

    unet, vq = load_checkpoint(unet_file), load_checkpoint(vq_file)
    if not isinstance(unet, UNetSwin) or not isinstance(vq, VQAutoencoder):
        raise CheckpointError(f"{unet_file} must be a UNet and {vq_file} a VQ autoencoder")
    kind = "rsd" if unet.config.noise_channels else "resshift-v1"
    assets.mkdir(parents=True, exist_ok=True)
    meta = {"rsd_deploy.demo": "1", "rsd_deploy.model_kind": kind}
    save_safetensors(unet.half(), assets / "demo_unet.safetensors", meta)
    save_safetensors(vq.half(), assets / "demo_vq.safetensors", meta)
    size = sum((assets / n).stat().st_size for n in ("demo_unet.safetensors", "demo_vq.safetensors"))
    if size > MAX_BYTES:
        raise CheckpointError(f"the embedded files are {size / 2**20:.1f} MiB, over the {MAX_BYTES / 2**20:.0f} MiB "
                              "budget; train smaller widths")
    info = {"kind": kind, "label": LABEL, "schedule": "v1", "unet": "demo_unet.safetensors",
            "vq": "demo_vq.safetensors", "steps": 1 if kind == "rsd" else 15,
            "trained_on": "the training split of ../shared/data/hr_photos (train/configs/hr_photos_split.json): "
                          "Real-ESRGAN-style degradation plus 30 % plain bicubic pairs; no test set",
            "recipe": "train/scripts/rebuild_demo_model.sh (rsd-train train/configs/demo_vq.yaml, demo_teacher.yaml, "
                      "demo_rsd.yaml)",
            "results": "train/RESULTS.md", "weights_dtype": "float16 (loaded as float32)",
            "parameters": {"unet": sum(p.numel() for p in unet.parameters()),
                           "vq": sum(p.numel() for p in vq.parameters())},
            "bytes": size}
    atomic_write_text(assets / "demo_model.json", json.dumps(info, indent=1) + "\n")
    for p in assets.iterdir():
        p.chmod(0o644)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="the rebuild's run folder (vq/, rsd/ inside)")
    parser.add_argument("--vq", type=Path)
    parser.add_argument("--unet", type=Path, help="the student (or a teacher, shipped as resshift-v1)")
    parser.add_argument("--assets", type=Path, default=REPO / "rsd_deploy" / "assets")
    args = parser.parse_args()
    if args.run is None and (args.vq is None or args.unet is None):
        parser.error("give --run RUN, or --vq and --unet")
    vq = args.vq or args.run / "vq" / "vq.safetensors"
    unet = args.unet or args.run / "rsd" / "rsd_ema.safetensors"
    for path in (vq, unet):
        if not path.is_file():
            sys.exit(f"error: {path} not found; run train/scripts/rebuild_demo_model.sh first")
    info = package(vq, unet, args.assets)
    print(f"packaged {info['kind']} ({info['bytes'] / 2**20:.1f} MiB) into {args.assets}")


if __name__ == "__main__":
    main()
