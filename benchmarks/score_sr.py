"""Score folders of SR images (e.g. rsd-upscale outputs of one LR set, one folder per precision or
runtime) against the HR references, with the paired Y-PSNR difference of each row from the first:

    python benchmarks/score_sr.py --gt ../shared/data/imagenet_val_sr/gt --json OUT.json \
        fp32=/tmp/sr_fp32 ov-int8=/tmp/sr_ov-int8 ...

SR files match a reference by stem, with or without rsd-upscale's ``_x4`` suffix. Scores, means, paired
differences and the files are those of evaluate_models.py (rsd_deploy.train.compare): OUT.json and OUT.md,
both written atomically.
benchmarks/demo_precisions.sh runs it on every CPU path of the embedded model.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Dict

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
    from rsd_deploy.errors import RSDError
    from rsd_deploy.pipeline.image_io import image_files, read_image
    from rsd_deploy.train.compare import NOTES, SetResult, markdown, paired_differences, score, write_results

    try:
        refs = image_files(args.gt)
        if not refs:
            raise RSDError(f"--gt {args.gt} holds no images")
        names = [name for name, _ in args.rows]
        result = SetResult(args.gt.parent.name or str(args.gt), str(args.gt), rows=names,
                           images=[{"image": ref.name} for ref in refs])
        for name, folder in args.rows:
            files = {p.stem: p for p in image_files(folder)}
            for entry, ref in zip(result.images, refs):
                entry[name] = score(read_image(_match(folder, ref.stem, files)).rgb, read_image(ref).rgb)
    except (RSDError, FileNotFoundError, NotADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result.summarise()
    for name in names[1:]:  # each row against the first, image by image
        result.paired.update(paired_differences(result.images, [names[0], name], of=name))
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    title = "SR folders scored against their references (benchmarks/score_sr.py)"
    json_path, md_path = write_results(args.json, [result], None, {"gt": str(args.gt), **{
        name: str(folder) for name, folder in args.rows}}, command, NOTES[:2], title)  # NOTES[2]: its own upscaling
    print(markdown([result], None, "", [], title))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
