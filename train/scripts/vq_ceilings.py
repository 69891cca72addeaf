"""What a latent SR model on this VQ autoencoder can reach on a paired set, before any UNet runs.

  python train/scripts/vq_ceilings.py --vq rsd_deploy/assets/demo_vq.safetensors ../shared/data/imagenet_val_sr

Rows (the columns of evaluate_models.py, ``rsd_deploy.train.compare.score``, means over the set):
- bicubic: the pipeline's conditioning upsample of the LR;
- VQ(bicubic): decode(encode(bicubic)) through the codebook, i.e. a UNet that returns x0 = z_y; a trained
  model that scores below it has not yet learnt to keep the LR's content;
- VQ(HR): decode(encode(HR)) through the codebook, the best any latent x0 can give with this decoder.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vq", type=Path, required=True, help="VQ checkpoint (safetensors or .pth)")
    parser.add_argument("--limit", type=int, default=0, help="first N pairs (0: all)")
    parser.add_argument("folder", type=Path, help="paired set: lq/ and gt/ with the same file names")
    args = parser.parse_args()
    import numpy as np
    import torch

    from rsd_deploy import metrics
    from rsd_deploy.errors import RSDError
    from rsd_deploy.pipeline.image_io import read_image, to_model_range
    from rsd_deploy.train.compare import bicubic_rgb8, paired_folder, score
    from rsd_deploy.train.data import list_images
    from rsd_deploy.train.method import load_network

    def round_trip(model, rgb8: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(to_model_range(rgb8)).permute(2, 0, 1)[None]
        return metrics.to_uint8(model.decode(model.encode(x))[0].clamp(-1, 1)).transpose(1, 2, 0)

    try:
        model = load_network(str(args.vq), "vq").eval()
        lq_dir, gt_dir = paired_folder(args.folder)
        names = [p.name for p in list_images([gt_dir])][: args.limit or None]
        rows = {"bicubic": [], "VQ(bicubic)": [], "VQ(HR)": []}
        with torch.no_grad():
            for name in names:
                lr, gt = read_image(lq_dir / name).rgb, read_image(gt_dir / name).rgb
                bic = bicubic_rgb8(lr)
                rows["bicubic"].append(score(bic, gt))
                rows["VQ(bicubic)"].append(score(round_trip(model, bic), gt))
                rows["VQ(HR)"].append(score(round_trip(model, gt), gt))
    except RSDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.folder} ({len(names)} pairs), VQ {args.vq}")
    print("| row | Y-PSNR (dB) | SSIM | colour error | detail ratio (mean) |")
    print("|---|---|---|---|---|")
    for row, scores in rows.items():
        mean = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
        print(f"| {row} | {mean['psnr_y']:.2f} | {mean['ssim_y']:.3f} | {mean['colour_error']:.2f} | "
              f"{mean['detail_ratio']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
