"""Stage `download`: fetch, verify and store every dataset in `download.datasets`."""

import argparse
import os
from pathlib import Path

from contrastlab.infra import params
from contrastlab.infra.files import project_root, read_json
from contrastlab.infra.stage import run_stage
from contrastlab.pipeline.download import MIRROR_ENV, OFFICIAL_DIGESTS, fetch

READS = ("download",)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder that receives one subfolder per dataset")
    args = parser.parse_args()
    p = params.load(READS)["download"]

    mirror = os.environ.get(MIRROR_ENV) or p["mirror"]
    mirror = project_root() / mirror if mirror else None  # relative paths mean the repository root
    digests = read_json(project_root() / p["digests"]) if p["digests"] else OFFICIAL_DIGESTS
    for name in p["datasets"]:
        fetch(name, args.out / name, mirror=mirror, sources=p["sources"], digests=digests)


if __name__ == "__main__":
    run_stage(main)
