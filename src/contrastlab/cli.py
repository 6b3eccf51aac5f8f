"""`contrastlab <command> [args]`: the project's command-line tools under one name (each `--help` for its own).

contrastlab study --grid archs --recipe adamw_onecycle   # python -m contrastlab.study
contrastlab report --results study/results --out report   # python -m contrastlab.study.report
contrastlab mlflow --results study/results                # python -m contrastlab.study.import_runs
contrastlab docs --out docs/reference.md                  # python -m contrastlab.infra.reference
"""

from __future__ import annotations

import runpy
import sys

COMMANDS = {
    "study": ("contrastlab.study", "run a grid of scenarios over seeds as DVC experiments"),
    "report": ("contrastlab.study.report", "the study's report from its results folders"),
    "mlflow": ("contrastlab.study.import_runs", "the committed study results as MLflow runs"),
    "docs": ("contrastlab.infra.reference", "the params reference page from params.yaml"),
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in COMMANDS:
        listed = "\n".join(f"  {name:8s} {about}" for name, (_, about) in COMMANDS.items())
        print(f"usage: contrastlab {{{','.join(COMMANDS)}}} [args]  (each with --help)\n{listed}", file=sys.stderr)
        return 0 if args[:1] in (["-h"], ["--help"]) else 2
    module, _ = COMMANDS[args[0]]
    sys.argv = [f"contrastlab {args[0]}", *args[1:]]
    runpy.run_module(module, run_name="__main__")  # argparse names itself after sys.argv[0]
    return 0


if __name__ == "__main__":
    sys.exit(main())
