"""Assemble the single local LPIPS weights file that rsd-train's `lpips.weights` (and rsd-eval) expect.

Inputs (download them yourself once, on a machine with internet; rsd-train never downloads):
  --backbone  torchvision's ImageNet weights: alexnet-owt-7be5be79.pth (--net alex, the default and the
              official RSD loss) or vgg16-397923af.pth (--net vgg); keys features.<i>.weight/bias
  --lin       the LPIPS v0.1 linear heads from the `lpips` package (lpips/weights/v0.1/alex.pth or vgg.pth),
              keys lin<k>.model.1.weight
Output: one file with features.* (up to relu5) and lin<k>.*, loadable with weights_only=True.

  python train/scripts/make_lpips_weights.py --net alex --backbone alexnet-owt-7be5be79.pth --lin alex.pth \
      -o weights/lpips_alex.pth
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", choices=("alex", "vgg"), default="alex")
    parser.add_argument("--backbone", "--vgg", type=Path, required=True)
    parser.add_argument("--lin", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    from rsd_deploy.train.checkpointing import atomic_torch_save
    from rsd_deploy.train.lpips import LPIPS

    backbone = torch.load(args.backbone, map_location="cpu", weights_only=True)
    lin = torch.load(args.lin, map_location="cpu", weights_only=True)
    state = {k: v for k, v in backbone.items() if k.startswith("features.")}
    state.update({k: v for k, v in lin.items() if k.startswith("lin")})
    LPIPS(args.net).load_weights(state, "assembled weights")  # raises with the missing key if incomplete
    atomic_torch_save(state, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
