"""Assemble the single local LPIPS(VGG) weights file that rsd-train's `lpips.weights` expects.

Inputs (download them yourself once, on a machine with internet; rsd-train never downloads):
  --vgg   torchvision's VGG16 ImageNet weights (vgg16-397923af.pth), keys features.<i>.weight/bias
  --lin   the LPIPS v0.1 linear heads for VGG from the `lpips` package (lpips/weights/v0.1/vgg.pth),
          keys lin<k>.model.1.weight
Output: one file with features.* (up to relu5_3) and lin<k>.weight, loadable with weights_only=True.

  python train/scripts/make_lpips_weights.py --vgg vgg16-397923af.pth --lin vgg.pth -o weights/lpips_vgg_full.pth
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vgg", type=Path, required=True)
    parser.add_argument("--lin", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    from rsd_deploy.train.checkpointing import atomic_torch_save
    from rsd_deploy.train.lpips import LPIPS

    vgg = torch.load(args.vgg, map_location="cpu", weights_only=True)
    lin = torch.load(args.lin, map_location="cpu", weights_only=True)
    state = {k: v for k, v in vgg.items() if k.startswith("features.")}
    state.update({k: v for k, v in lin.items() if k.startswith("lin")})
    LPIPS().load_weights(state, "assembled weights")  # raises with the missing key if incomplete
    atomic_torch_save(state, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
