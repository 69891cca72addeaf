#!/usr/bin/env python3
"""Write the noise `rsd-upscale` draws for an image, so `rsd_upscale` (C++) reproduces it.

    python export/cpp/scripts/pipeline_noise.py --bundle out/rsd --input lr.png --tile 64 --overlap 8 \
        --seed 0 --out-dir noise/
    build/cpp/rsd_upscale --bundle out/rsd --input lr.png --output sr_cpp.png --tile 64 --overlap 8 \
        --prior-noise noise/prior.npy --student-noise noise/student.npy
    rsd-upscale lr.png -o py_out --onnx out/rsd --tile 64 --overlap 8 --seed 0   # same picture (+-1 level)

The Python pipeline's noise is keyed by LR position (64x64 cells seeded from the seed and the cell
index), so one map over the latent grid covering every padded tile holds the noise of all tiles.
Prints the rsd_upscale arguments. Needs rsd_deploy importable.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def noise_maps(manifest: dict, height: int, width: int, tile: int, overlap: int, seed: int):
    """(prior (1,3,Hn,Wn), student (1,C,Hn,Wn) or None) as the pipeline draws them for this image."""
    from rsd_deploy.pipeline.noise import draw_region_noise
    from rsd_deploy.pipeline.tiling import TilePlan

    multiple = int(manifest["preprocess"]["latent_multiple"])
    tile_or_none = None if tile <= 0 else -(-tile // multiple) * multiple  # the pipeline rounds the tile up
    plan = TilePlan.build(height, width, tile_or_none, overlap)
    up = lambda v: -(-v // multiple) * multiple  # noqa: E731
    extent = (plan.ys[-1] + up(plan.tile_h), plan.xs[-1] + up(plan.tile_w))
    noise = draw_region_noise(seed, 0, 0, extent[0], extent[1], noise_channels=int(manifest["model"]["noise_channels"]))
    return noise.prior.numpy(), None if noise.student is None else noise.student.numpy()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, type=Path, help="rsd-export folder (manifest.json)")
    parser.add_argument("--input", required=True, type=Path, help="the LR image")
    parser.add_argument("--tile", type=int, default=64, help="LR px, as given to rsd-upscale (0: no tiling)")
    parser.add_argument("--overlap", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    from rsd_deploy.errors import RSDError
    from rsd_deploy.bundle.manifest import load_manifest
    from rsd_deploy.pipeline.image_io import read_image

    try:
        manifest = load_manifest(args.bundle, check_files=False)
        image = read_image(args.input)
    except RSDError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    prior, student = noise_maps(manifest, image.height, image.width, args.tile, args.overlap, args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    np.save(args.out_dir / "prior.npy", prior)
    flags = f"--tile {args.tile} --overlap {args.overlap} --prior-noise {args.out_dir / 'prior.npy'}"
    if student is not None:
        np.save(args.out_dir / "student.npy", student)
        flags += f" --student-noise {args.out_dir / 'student.npy'}"
    print(flags)
    return 0


if __name__ == "__main__":
    sys.exit(main())
