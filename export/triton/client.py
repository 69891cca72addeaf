#!/usr/bin/env python3
"""Send an LR image to the `rsd` ensemble of a Triton server (written by `rsd-export --triton DIR`)
and save the x4 SR image.

    pip install "tritonclient[http]" opencv-python-headless numpy
    python export/triton/client.py --url localhost:8000 --input lr.png --output sr.png
    python export/triton/client.py --url localhost:8000 --input big.png --output big_sr.png --tile 256 --overlap 32

Without --tile the whole image is one request (it must fit the engines' profile when the server runs
TensorRT plans). With --tile the image is cut into equal tiles that are sent concurrently (the
server's dynamic batcher groups them) and blended with the same raised-cosine feathering as
rsd-upscale (tile seeds: seed + tile index). Needs `rsd_deploy` importable for the tile geometry.
"""
from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np

InferFn = Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]


def make_inputs(lr_rgb: np.ndarray, seed: int, module):
    """tritonclient InferInput objects for one (H, W, 3) uint8 RGB image (batch of 1)."""
    image = module.InferInput("LR_IMAGE", [1, *lr_rgb.shape], "UINT8")
    image.set_data_from_numpy(np.ascontiguousarray(lr_rgb[None], dtype=np.uint8))
    seed_in = module.InferInput("SEED", [1, 1], "INT64")
    seed_in.set_data_from_numpy(np.array([[seed]], dtype=np.int64))
    return [image, seed_in]


def triton_infer_fn(url: str, model: str, protocol: str = "http") -> InferFn:
    """An InferFn that calls the ensemble on a server."""
    if protocol == "grpc":
        import tritonclient.grpc as module
    else:
        import tritonclient.http as module
    client = module.InferenceServerClient(url=url)
    if not client.is_model_ready(model):
        raise SystemExit(f"error: model {model!r} is not ready on {url}; check the server log (tritonserver "
                         f"--model-repository DIR)")

    def infer(feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        inputs = make_inputs(feeds["LR_IMAGE"], int(feeds["SEED"]), module)
        result = client.infer(model, inputs, outputs=[module.InferRequestedOutput("SR_IMAGE")])
        return {"SR_IMAGE": result.as_numpy("SR_IMAGE")[0]}

    return infer


def upscale(lr_rgb: np.ndarray, infer: InferFn, *, seed: int = 0, tile: Optional[int] = None, overlap: int = 32,
            scale: int = 4, workers: int = 4) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (scale*H, scale*W, 3) uint8 RGB through ``infer``."""
    if tile is None:
        return infer({"LR_IMAGE": lr_rgb, "SEED": np.int64(seed)})["SR_IMAGE"]
    from rsd_deploy.pipeline.tiling import FeatherBlender, TilePlan

    height, width = lr_rgb.shape[:2]
    plan = TilePlan.build(height, width, tile, overlap)
    out = np.empty((height * scale, width * scale, 3), np.uint8)

    def sink(y0: int, rows: np.ndarray) -> None:
        out[y0:y0 + rows.shape[0]] = np.clip(np.rint(rows), 0, 255).astype(np.uint8)

    blender = FeatherBlender(plan, scale, 3, sink)
    tiles = plan.tiles

    def run(i: int) -> np.ndarray:
        t = tiles[i]
        crop = np.ascontiguousarray(lr_rgb[t.y:t.y + t.h, t.x:t.x + t.w])
        return infer({"LR_IMAGE": crop, "SEED": np.int64(seed + i)})["SR_IMAGE"]

    with ThreadPoolExecutor(max_workers=workers) as pool:  # concurrent requests -> server-side batches
        for t, sr in zip(tiles, pool.map(run, range(len(tiles)))):
            blender.add(t, sr.astype(np.float32))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="localhost:8000", help="server address (8000 http, 8001 grpc)")
    parser.add_argument("--protocol", choices=("http", "grpc"), default="http")
    parser.add_argument("--model", default="rsd", help="ensemble name (default: rsd)")
    parser.add_argument("--input", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tile", type=int, default=None, help="tile size in LR pixels (default: whole image)")
    parser.add_argument("--overlap", type=int, default=32)
    args = parser.parse_args(argv)
    import cv2

    if args.output.resolve() == args.input.resolve():
        print("error: --output must differ from --input", file=sys.stderr)
        return 2
    bgr = cv2.imread(str(args.input), cv2.IMREAD_COLOR)
    if bgr is None:
        print(f"error: {args.input}: cannot read the image; pass a PNG or JPEG file", file=sys.stderr)
        return 5
    sr = upscale(np.ascontiguousarray(bgr[:, :, ::-1]), triton_infer_fn(args.url, args.model, args.protocol),
                 seed=args.seed, tile=args.tile, overlap=args.overlap)
    tmp = args.output.with_name(f".{args.output.name}.tmp{args.output.suffix}")
    if not cv2.imwrite(str(tmp), sr[:, :, ::-1]):
        print(f"error: {args.output}: cannot write the output", file=sys.stderr)
        return 5
    tmp.replace(args.output)
    print(f"{args.input} {bgr.shape[1]}x{bgr.shape[0]} -> {args.output} {sr.shape[1]}x{sr.shape[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
