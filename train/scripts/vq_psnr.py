"""Reconstruction PSNR of a VQ autoencoder (or of the start a vq config builds) on folders of images.

  python train/scripts/vq_psnr.py --vq runs/demo/vq/vq.safetensors runs/hr_photos_val_zoomed/gt
  python train/scripts/vq_psnr.py --start train/configs/demo_vq.yaml --continuous runs/hr_photos_val_zoomed/gt

--continuous skips the codebook (the start has none fitted). Library: rsd_deploy.train.autoencoder.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--vq", type=Path, help="VQ checkpoint (safetensors or .pth)")
    source.add_argument("--start", type=Path, help="a method-vq config: its untrained start (vq_train.init)")
    parser.add_argument("--continuous", action="store_true", help="decode without the codebook")
    parser.add_argument("--max-images", type=int, default=24)
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    import torch

    from rsd_deploy.errors import RSDError
    from rsd_deploy.train.autoencoder import build_vq, reconstruction_psnr
    from rsd_deploy.train.config import load_config
    from rsd_deploy.train.data import list_images
    from rsd_deploy.train.method import load_network

    try:
        if args.vq:
            model = load_network(str(args.vq), "vq")
        else:
            cfg = load_config(args.start, [])
            torch.manual_seed(cfg.seed)
            model = build_vq(cfg.vq_train)
        model.eval()
        for folder in args.folders:
            paths = list_images([folder])[: args.max_images]
            score = reconstruction_psnr(model, paths, quantize=not args.continuous)
            print(f"{folder}: {score:.2f} dB mean RGB PSNR over {len(paths)} images")
    except RSDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
