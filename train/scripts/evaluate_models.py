"""Evaluate ResShift-type models on paired folders: PSNR/SSIM (Y) and CPU time per image.

  python train/scripts/evaluate_models.py --vq VQ --teacher TEACHER [--student STUDENT] \
      --lq ../shared/data/imagenet_val_sr/lq --gt ../shared/data/imagenet_val_sr/gt [--json out.json]

Rows: teacher at 1 step (from T-1), teacher with its full T steps, student at 1 step (if given), and the
bicubic x4 baseline. Same seed per image for every row.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def bicubic_scores(lq_dir: str, gt_dir: str, limit: int | None) -> dict:
    from rsd_deploy import metrics
    from rsd_deploy.pipeline.image_io import bicubic_x4
    from rsd_deploy.train.data import PairedDataset

    ds = PairedDataset(lq_dir, gt_dir, lq_size=None, hflip=False)
    n = len(ds) if limit is None else min(limit, len(ds))
    p, s = [], []
    for i in range(n):
        item = ds[i]
        up = bicubic_x4(item["lq"][None])
        a = metrics.rgb_to_y(metrics.to_uint8(up[0]), channel_axis=0)
        b = metrics.rgb_to_y(metrics.to_uint8(item["gt"]), channel_axis=0)
        p.append(metrics.psnr(a, b))
        s.append(metrics.ssim(a, b))
    return {"psnr": sum(p) / n, "ssim": sum(s) / n, "seconds_per_image": 0.0, "images": n}


def interleaved_timing(vq, schedule, runs, lq_dir: str, gt_dir: str, n: int) -> dict:  # noqa: ANN001
    import statistics

    from rsd_deploy.train.data import PairedDataset
    from rsd_deploy.train.evaluate import super_resolve

    ds = PairedDataset(lq_dir, gt_dir, lq_size=None, hflip=False)
    times: dict = {name: [] for name, _, _ in runs}
    for i in range(min(n, len(ds))):
        lq = ds[i]["lq"][None]
        for name, net, one in runs:
            start = time.perf_counter()
            super_resolve(net, vq, schedule, lq, one, torch.Generator().manual_seed(i))
            times[name].append((time.perf_counter() - start) * 1000)
    return {k: round(statistics.median(v), 1) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vq", required=True)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student")
    parser.add_argument("--lq", required=True)
    parser.add_argument("--gt", required=True)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--timing", type=int, default=0,
                        help="also time the rows interleaved image by image on N images (median ms), so that "
                             "load changes on a shared machine hit every row alike")
    parser.add_argument("--rows", default="bicubic,teacher_1_step,teacher_15_steps,student_1_step",
                        help="comma-separated subset of rows to compute")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from rsd_deploy import load_checkpoint
    from rsd_deploy.models.schedule import Schedule
    from rsd_deploy.train.evaluate import evaluate_pairs

    vq, teacher = load_checkpoint(args.vq), load_checkpoint(args.teacher)
    schedule = Schedule.preset("v1")
    wanted = set(args.rows.split(","))
    rows = {"bicubic": bicubic_scores(args.lq, args.gt, args.limit)} if "bicubic" in wanted else {}
    runs = [("teacher_1_step", teacher, True), ("teacher_15_steps", teacher, False)]
    if args.student:
        runs.append(("student_1_step", load_checkpoint(args.student), True))
    for name, net, one in runs:
        if name not in wanted:
            continue
        t0 = time.time()
        rows[name] = evaluate_pairs(net, vq, schedule, args.lq, args.gt, one_step=one, max_images=args.limit)
        print(f"{name:18s} PSNR {rows[name]['psnr']:.2f}  SSIM {rows[name]['ssim']:.4f}  "
              f"{rows[name]['seconds_per_image'] * 1000:.0f} ms/image  ({time.time() - t0:.0f}s)", flush=True)
    if "bicubic" in rows:
        print(f"{'bicubic':18s} PSNR {rows['bicubic']['psnr']:.2f}  SSIM {rows['bicubic']['ssim']:.4f}")
    if args.timing:
        rows["interleaved_timing_ms"] = interleaved_timing(vq, schedule, runs, args.lq, args.gt, args.timing)
        print("interleaved median ms/image:", rows["interleaved_timing_ms"])
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
