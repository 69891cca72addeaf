"""What detail costs in PSNR without new information: bicubic x4 sharpened by unsharp masking at
increasing amounts, scored like train/RESULTS.md's tables (Y-PSNR, pooled detail ratio):

    python train/scripts/detail_frontier.py ../shared/data/imagenet_val_sr [--sigma 1.5]

sharpened = bicubic + amount * (bicubic - GaussianBlur(bicubic, sigma)), clipped to 8 bits. Issue 12 asks
for a detail ratio of 0.7-1.3 within 1 dB of bicubic's Y-PSNR; this measures how far a filter gets.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

AMOUNTS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="paired set: lq/ and gt/ with the same file names")
    parser.add_argument("--sigma", type=float, default=1.5, help="Gaussian blur of the unsharp mask, HR px")
    args = parser.parse_args()
    import cv2
    import numpy as np

    from rsd_deploy.errors import RSDError
    from rsd_deploy.pipeline.image_io import read_image
    from rsd_deploy.train.compare import bicubic_rgb8, paired_folder, pooled_detail_ratio, score
    from rsd_deploy.train.data import list_images

    try:
        lq_dir, gt_dir = paired_folder(args.folder)
        names = [p.name for p in list_images([gt_dir])]
        rows = {a: [] for a in AMOUNTS}
        for name in names:
            gt = read_image(gt_dir / name).rgb
            bic = bicubic_rgb8(read_image(lq_dir / name).rgb).astype(np.float32)
            high = bic - cv2.GaussianBlur(bic, (0, 0), args.sigma)
            for amount in AMOUNTS:
                sharp = np.clip(np.rint(bic + amount * high), 0, 255).astype(np.uint8)
                rows[amount].append(score(sharp, gt))
    except RSDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.folder} ({len(names)} pairs), unsharp mask sigma {args.sigma}")
    print("| amount | Y-PSNR (dB) | vs bicubic (dB) | detail ratio (pooled) |")
    print("|---|---|---|---|")
    base = float(np.mean([s["psnr_y"] for s in rows[0.0]]))
    for amount, scores in rows.items():
        psnr = float(np.mean([s["psnr_y"] for s in scores]))
        print(f"| {amount:g} | {psnr:.2f} | {psnr - base:+.2f} | {pooled_detail_ratio(scores):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
