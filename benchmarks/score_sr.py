"""Score folders of SR images (e.g. rsd-upscale outputs of one LR set, one folder per precision or
runtime) against the HR references, with the paired Y-PSNR difference of each row from the first:

    python benchmarks/score_sr.py --gt ../shared/data/imagenet_val_sr/gt --json OUT.json \
        fp32=/tmp/sr_fp32 ov-int8=/tmp/sr_ov-int8 ...

SR files match a reference by stem, with or without rsd-upscale's ``_x4`` suffix. Metrics are
rsd_deploy.train.compare.score (the figures of train/RESULTS.md). Writes OUT.json and OUT.md atomically.
benchmarks/demo_precisions.sh runs it on every CPU path of the embedded model.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _match(folder: Path, stem: str, files: Dict[str, Path]) -> Path:
    for key in (stem, f"{stem}_x4"):
        if key in files:
            return files[key]
    raise FileNotFoundError(f"{folder} has no SR image for {stem} (expected {stem}.* or {stem}_x4.*); "
                            "run rsd-upscale on the LR set into it")


def main() -> int:
    from rsd_deploy.train.compare import named_folder_arg

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt", type=Path, required=True, help="HR reference folder")
    parser.add_argument("--json", type=Path, required=True, help="results file; the table goes beside it (.md)")
    parser.add_argument("rows", type=named_folder_arg("rows are NAME=SR_DIR"), nargs="+", metavar="NAME=SR_DIR")
    args = parser.parse_args()
    import numpy as np

    from rsd_deploy.errors import RSDError
    from rsd_deploy.fileio import atomic_write_text
    from rsd_deploy.pipeline.image_io import image_files, read_image
    from rsd_deploy.train.compare import NOTES, pooled_detail_ratio, score

    try:
        refs = image_files(args.gt)
        if not refs:
            raise RSDError(f"--gt {args.gt} holds no images")
        per_row: Dict[str, List[Dict[str, float]]] = {}
        for name, folder in args.rows:
            files = {p.stem: p for p in image_files(folder)}
            per_row[name] = [score(read_image(_match(folder, ref.stem, files)).rgb, read_image(ref).rgb)
                             for ref in refs]
    except (RSDError, FileNotFoundError, NotADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    first = args.rows[0][0]
    base = np.array([s["psnr_y"] for s in per_row[first]])
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    summary = {}
    lines = [f"# SR folders scored against {args.gt} ({len(refs)} images)", "", "```bash", command, "```", "",
             f"| row | Y-PSNR (dB) | SSIM (Y) | colour error | detail ratio (pooled) | Y-PSNR - {first}: mean | min |",
             "|---|---|---|---|---|---|---|"]
    for name, scores in per_row.items():
        diff = np.array([s["psnr_y"] for s in scores]) - base
        mean = {k: float(np.mean([s[k] for s in scores])) for k in ("psnr_y", "ssim_y", "colour_error")}
        row = dict(mean, detail_ratio_pooled=pooled_detail_ratio(scores), diff_mean=float(diff.mean()),
                   diff_min=float(diff.min()))
        summary[name] = row
        lines.append(f"| {name} | {row['psnr_y']:.2f} | {row['ssim_y']:.4f} | {row['colour_error']:.2f} | "
                     f"{row['detail_ratio_pooled']:.3f} | {row['diff_mean']:+.3f} | {row['diff_min']:+.3f} |")
        print(lines[-1])
    lines += ["", *[f"* {note}" for note in NOTES], ""]
    data = {"command": command, "gt": str(args.gt), "rows": summary,
            "per_image": {name: [dict(s, image=ref.name) for s, ref in zip(scores, refs)]
                          for name, scores in per_row.items()}}
    atomic_write_text(args.json, json.dumps(data, indent=1) + "\n")
    atomic_write_text(args.json.with_suffix(".md"), "\n".join(lines))
    print(f"wrote {args.json} and {args.json.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
