"""A raw SIXray folder of the real size, made cheaply: the scale benchmark's input.

    python3 -m bench.scale_folder --out /tmp/scale/raw [--negatives 1050302] [--base-negatives 10000]

`pipeline synth` writes every positive and `--base-negatives` negatives at half size; the remaining
negatives `N<7 digits>` up to `--negatives` are hard links cycling over those (copies where the file
system has no hard links), and the label files under ImageSet/{10,100,1000}/ are rewritten for the full
id range by the generator's own writer. Ingest sees the real layout and reads every file; only the pixel
content repeats. Resumable: existing links are kept.
"""

import argparse
import os
import shutil
import subprocess
from pathlib import Path

from base.vocabulary import RELEASE_NEGATIVES, RELEASE_POSITIVES
from pipeline.layout import negative_id
from pipeline.xray.synth import write_label_files

POSITIVES, NEGATIVES = RELEASE_POSITIVES, RELEASE_NEGATIVES


def build_folder(out: Path, *, positives: int = POSITIVES, negatives: int = NEGATIVES,
                 base_negatives: int = 10_000, seed: int = 0) -> Path:
    base = min(base_negatives, negatives)
    subprocess.run(["pipeline", "synth", "--out", str(out), "--positives",
                    str(positives), "--negatives", str(base), "--size-factor", "0.5", "--seed", str(seed)],
                   check=True, stdout=subprocess.DEVNULL)
    images = out / "JPEGImage"
    for number in range(base + 1, negatives + 1):
        target = images / f"{negative_id(number)}.jpg"
        if not os.path.lexists(target):
            source = images / f"{negative_id((number - 1) % base + 1)}.jpg"
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
    write_label_files(out, seed, positives, negatives)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--positives", type=int, default=POSITIVES)
    parser.add_argument("--negatives", type=int, default=NEGATIVES)
    parser.add_argument("--base-negatives", type=int, default=10_000)
    args = parser.parse_args()
    build_folder(args.out, positives=args.positives, negatives=args.negatives,
                 base_negatives=args.base_negatives)
    print(args.out)


if __name__ == "__main__":
    main()
