"""Issue 12's result tables: bicubic, the teacher (all steps and its one-step x0) and the RSD student on
paired sets, plus the colour check of the student's rsd-upscale outputs (e.g. on realset65).

  python train/scripts/evaluate_models.py --vq VQ --teacher TEACHER --student STUDENT \
      --pairs imagenet_val_sr=../shared/data/imagenet_val_sr --pairs hr_photos_val=runs/hr_photos_val \
      --colour-check ../shared/data/realset65 --json runs/eval/compare.json
  python train/scripts/evaluate_models.py --student default --colour-check ../shared/data/realset65 \
      --json runs/eval/default_colour.json          # the embedded demo model, no teacher

--pairs NAME=DIR: DIR holds lq/ and gt/ with the same file names (make_val_crops.py writes one).
Without --teacher the teacher rows are skipped. Writes JSON and a Markdown table (same stem, .md),
both atomically, with this command line. Library: rsd_deploy.train.compare.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path
from typing import List

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> int:
    from rsd_deploy.train.compare import named_folder_arg

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vq", type=Path, help="VQ-f4 autoencoder of the teacher and student checkpoints")
    parser.add_argument("--teacher", type=Path, help="ResShift teacher checkpoint (rows: all steps, one-step x0)")
    parser.add_argument("--teacher-kind", default="resshift-v1", choices=("resshift-v1", "resshift-v3"))
    parser.add_argument("--student", help="RSD student checkpoint, or 'default' for the embedded demo model")
    parser.add_argument("--pairs", type=named_folder_arg("--pairs takes NAME=DIR (DIR with lq/ and gt/)"),
                        action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--colour-check", type=Path, metavar="LR_DIR",
                        help="colour error of each student output against its bicubic upscale (needs --student)")
    parser.add_argument("--limit", type=int, help="first N images of every set")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (rsd-upscale's --seed), same for every row")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", choices=("cpu", "cuda"))
    parser.add_argument("--json", type=Path, required=True, help="results file; the table goes beside it (.md)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from rsd_deploy.errors import RSDError
    from rsd_deploy.train import compare
    from rsd_deploy.types import ModelKind

    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    notes: List[str] = list(compare.NOTES)
    try:
        if not args.pairs and args.colour_check is None:
            raise RSDError("nothing to do: pass --pairs NAME=DIR and/or --colour-check LR_DIR")
        if args.colour_check is not None and args.student is None:
            raise RSDError("--colour-check runs the student: pass --student PATH (with --vq) or --student default")
        for _, folder in args.pairs:
            compare.paired_folder(folder)  # before any model loads: a wrong folder fails at once
        rows = compare.contenders(args.vq, args.teacher, args.student, ModelKind(args.teacher_kind), args.device,
                                  args.threads)
        if args.teacher is None and args.pairs:
            notes.append("no --teacher given: the teacher rows are skipped")
            logging.warning("no --teacher given: the teacher rows (all steps, one-step x0) are skipped")
        pipelines = {c.name: compare.build_pipeline(c.source, seed=args.seed) for c in rows}
        labels = {c.name: c.label for c in rows}
        if args.student is not None:
            labels[compare.STUDENT] += " (embedded demo model)" if args.student == "default" else ""
        sets = []
        for name, folder in args.pairs:
            result = compare.compare_set(name, folder, pipelines, labels, args.limit)
            sets.append(result)
            for r in result.rows:
                m = result.means[r]
                print(f"{name:16s} {r:18s} Y-PSNR {m['psnr_y']:6.2f}  SSIM {m['ssim_y']:.4f}  colour "
                      f"{m['colour_error']:5.2f}  detail {m['detail_ratio']:.3f}", flush=True)
            for k, d in result.paired.items():
                print(f"{name:16s} {k:36s} {d['mean']:+.2f} +- {d['std']:.2f} dB, wins {d['wins']}/{d['total']}")
        colour = None
        if args.colour_check is not None:
            colour = compare.colour_check(pipelines[compare.STUDENT], args.colour_check, args.limit)
            colour["model"] = labels[compare.STUDENT]
            print(f"colour check {args.colour_check}: max {colour['max']:.2f}, mean {colour['mean']:.2f}, "
                  f"{colour['over_threshold']}/{colour['images']} over {colour['threshold']:g} levels; worst "
                  + ", ".join(f"{w['image']} {w['colour_error']:.2f}" for w in colour["worst"]))
        settings = {"vq": str(args.vq) if args.vq else None, "teacher": str(args.teacher) if args.teacher else None,
                    "teacher_kind": args.teacher_kind, "student": args.student, "seed": args.seed,
                    "threads": args.threads, "limit": args.limit}
        json_path, md_path = compare.write_results(args.json, sets, colour, settings, command, notes)
    except RSDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
