"""Stage `check`: every param a stage reads, validated before any stage runs. DVC deletes a stage's outputs
just before it runs the stage, so a mistake found by the stage itself (`-S aug=simclar`) would cost the
workspace that stage's earlier outputs; found here, first, it stops the pipeline before DVC touches any.
Its one output persists (DVC never deletes it) and reads the same whenever the params are valid, so it
re-runs no later stage."""

import argparse
from pathlib import Path

from contrastlab.infra import params
from contrastlab.infra.files import write_text
from contrastlab.infra.stage import run_stage

READS = params.SCENARIO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="written when every param is valid")
    args = parser.parse_args()
    params.load(READS)
    write_text(args.out, "every param of params.yaml that a stage reads is valid\n")


if __name__ == "__main__":
    run_stage(main)
