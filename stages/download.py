"""Stage `download`: fetch, verify and store the scenario's dataset (DVC's run cache keeps earlier ones)."""

import argparse
from pathlib import Path

from contrastlab.infra import params
from contrastlab.infra.files import project_root, read_json
from contrastlab.infra.stage import run_stage
from contrastlab.pipeline.download import OFFICIAL_DIGESTS, fetch, mirror_folder

READS = ("dataset", "download")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder that receives the dataset's arrays")
    args = parser.parse_args()
    p = params.load(READS)
    download = p["download"]

    mirror = mirror_folder(download["mirror"], project_root())
    digests = read_json(project_root() / download["digests"]) if download["digests"] else OFFICIAL_DIGESTS
    fetch(p["dataset"], args.out, mirror=mirror, sources=download["sources"], digests=digests)


if __name__ == "__main__":
    run_stage(main)
