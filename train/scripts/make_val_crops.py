"""Cut the fixed hr_photos validation crops (HR 256 px, plain bicubic x4 LR) into a paired folder lq/ + gt/.

  python train/scripts/make_val_crops.py --hr ../shared/data/hr_photos \
      --split train/configs/hr_photos_split.json -o runs/hr_photos_val

Library: rsd_deploy.train.val_crops (crop placement, the LR rule, crops.json).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hr", type=Path, required=True, help="folder of HR photos")
    parser.add_argument("--split", type=Path, help="split JSON; its --part list selects the photos (default: all)")
    parser.add_argument("--part", default="val")
    parser.add_argument("-o", "--output", type=Path, required=True, help="paired folder to write (lq/, gt/)")
    parser.add_argument("--size", type=int, default=256, help="HR crop side (px)")
    parser.add_argument("--per-image", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--downscale", type=float, default=1.0,
                        help="area-downscale each photo by this factor before cropping (3: as detailed as the "
                             "demo's most zoomed training crops)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from rsd_deploy.errors import RSDError
    from rsd_deploy.train.data import read_split
    from rsd_deploy.train.val_crops import CropSetConfig, make_crop_set

    try:
        names = read_split(args.split, args.part) if args.split else None
        manifest = make_crop_set(CropSetConfig(hr_dir=args.hr, output_dir=args.output, names=names, size=args.size,
                                               per_image=args.per_image, seed=args.seed,
                                               downscale=args.downscale))
    except RSDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(manifest['crops'])} pairs to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
