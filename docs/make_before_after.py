"""Make docs/images/before_after.png: an LR crop upscaled x4 by nearest neighbour (left) next to
the rsd-upscale output for the same crop (right).

    python docs/make_before_after.py LR_IMAGE SR_IMAGE [--box X Y SIZE] [-o docs/images/before_after.png]

SR_IMAGE is the rsd-upscale output of LR_IMAGE (4x its size); the box is in LR pixels.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np


def side_by_side(lr: np.ndarray, sr: np.ndarray, x: int, y: int, size: int) -> np.ndarray:
    """(H, W, 3) LR and its (4H, 4W, 3) SR -> (4 size + label band, 8 size + gap, 3) comparison."""
    if sr.shape[:2] != (4 * lr.shape[0], 4 * lr.shape[1]):
        raise SystemExit(f"SR image {sr.shape[:2]} is not 4x the LR image {lr.shape[:2]}")
    crop = lr[y:y + size, x:x + size]
    left = cv2.resize(crop, (4 * size, 4 * size), interpolation=cv2.INTER_NEAREST)
    right = sr[4 * y:4 * (y + size), 4 * x:4 * (x + size)]
    gap = np.full((4 * size, 8, 3), 255, np.uint8)
    panel = np.concatenate([left, gap, right], axis=1)
    band = np.full((28, panel.shape[1], 3), 255, np.uint8)
    for text, x0 in (("LR (nearest x4)", 8), ("rsd-upscale x4", 4 * size + 16)):
        cv2.putText(band, text, (x0, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, panel], axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lr", type=Path)
    parser.add_argument("sr", type=Path)
    parser.add_argument("--box", type=int, nargs=3, default=(0, 0, 64), metavar=("X", "Y", "SIZE"))
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/images/before_after.png"))
    args = parser.parse_args()
    lr, sr = cv2.imread(str(args.lr), cv2.IMREAD_COLOR), cv2.imread(str(args.sr), cv2.IMREAD_COLOR)
    if lr is None or sr is None:
        raise SystemExit(f"cannot read {args.lr if lr is None else args.sr}")
    image = side_by_side(lr, sr, *args.box)
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    args.output.parent.mkdir(parents=True, exist_ok=True)
    buf.tofile(str(args.output))
    print(f"wrote {args.output} ({image.shape[1]}x{image.shape[0]}, {buf.size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
