"""Fit the taps of the VQ's linear start (rsd_deploy.train.autoencoder.ENCODER_TAPS / DECODER_TAPS).

The start is linear per colour component: two 3x3 stride-2 encoder convs, then two 3x3 convs after
nearest x2 (``linear_start``). This fits their separable 1-D taps to the MSE of the reconstruction of
128 px HR training crops (zoomed like the demo's training data), from the box start (2x2 averages and
centre copies), and prints the taps, each stage normalised to sum 1 (GroupNorm removes the scale), with
the PSNR on a folder of validation images of the box start, these taps and the taps in the code (an earlier
fit on other crops of the same photos; train/RESULTS.md has the figures):

  python train/scripts/fit_pooling_taps.py --hr ../shared/data/hr_photos --split train/configs/hr_photos_split.json \\
      --val runs/hr_photos_val_zoomed/gt
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hr", type=Path, required=True, help="folder of HR training photos")
    parser.add_argument("--split", type=Path, help="split JSON; its 'train' list selects the photos")
    parser.add_argument("--val", type=Path, help="folder of validation images to report PSNR on")
    parser.add_argument("--crops", type=int, default=204)
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    import torch

    from rsd_deploy import metrics
    from rsd_deploy.train.autoencoder import (BOX_DECODER_TAPS, BOX_ENCODER_TAPS, DECODER_TAPS, ENCODER_TAPS,
                                             linear_start)
    from rsd_deploy.train.data import DegradedHRDataset, list_images, read_rgb, read_split, to_tensor
    from rsd_deploy.train.degradation import DegradationConfig

    torch.manual_seed(args.seed)
    only = read_split(args.split, "train") if args.split else None
    data = DegradedHRDataset([args.hr], gt_size=128, rescale_gt=False, zoom_range=(0.35, 1.0), only=only,
                             degradation=DegradationConfig(bicubic_prob=1.0), seed=args.seed, hflip=False,
                             cache_bytes=1 << 30)
    crops = torch.stack([data[i]["gt"] for i in range(args.crops)])
    taps = [torch.tensor(BOX_ENCODER_TAPS) for _ in range(2)] + [torch.tensor(BOX_DECODER_TAPS) for _ in range(2)]
    box = [t.clone() for t in taps]
    for t in taps:
        t.requires_grad_(True)
    optimizer = torch.optim.Adam(taps, lr=3e-3)
    for _ in range(args.iterations):
        x = crops[torch.randint(len(crops), (32,))]
        loss = (linear_start(x, taps[:2], taps[2:])[1] - x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    fitted = [[round(v, 3) for v in (t.detach() / t.detach().sum()).tolist()] for t in taps]
    print(f"ENCODER_TAPS = ({tuple(fitted[0])}, {tuple(fitted[1])})")
    print(f"DECODER_TAPS = ({tuple(fitted[2])}, {tuple(fitted[3])})")
    if args.val:
        images = [to_tensor(read_rgb(p)) for p in list_images([args.val])]
        current = [torch.tensor(v) for v in ENCODER_TAPS + DECODER_TAPS]
        for name, t in (("box", box), ("fitted now", [torch.tensor(v) for v in fitted]), ("in the code", current)):
            with torch.no_grad():
                scores = [metrics.psnr(metrics.to_uint8(linear_start(x[None], t[:2], t[2:])[1][0].clamp(-1, 1)),
                                       metrics.to_uint8(x)) for x in images]
            print(f"{name}: {sum(scores) / len(scores):.2f} dB mean PSNR on {len(scores)} images of {args.val}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
