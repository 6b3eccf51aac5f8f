"""How far does the converged probe move results scored with the earlier one? Re-scores the test embeddings
of every DVC experiment in a repository (its `refs/exps`, e.g. a study's `dvc exp run --temp` runs, with
their embeddings in the repository's DVC cache) on both features, with the earlier probe (scikit-learn's
default lbfgs, tol 1e-4, on the stored float32 features) and with today's `probe`, on the same split.

    python benchmarks/rescore_probe.py --repo . --match features-backbone-s2 --features embedding
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from contrastlab.pipeline.features import stored_features
from contrastlab.pipeline.probe import fit_settings, probe


def git_show(repo: Path, ref: str, path: str) -> str:
    return subprocess.run(["git", "show", f"{ref}:{path}"], cwd=repo, check=True, capture_output=True, text=True).stdout


def earlier_top1(features: np.ndarray, labels: np.ndarray, settings: dict, seed: int) -> float:
    """The probe's top-1 as scored before it was solved to the optimum."""
    fit, scored = train_test_split(
        np.arange(len(labels)), test_size=settings["test_size"], stratify=labels, random_state=seed
    )
    model = LogisticRegression(max_iter=settings["max_iter"]).fit(features[fit], labels[fit])
    return float(np.mean(model.predict(features[scored]) == labels[scored]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=Path("."))
    parser.add_argument("--match", default="", help="only experiments whose name contains this")
    parser.add_argument("--features", nargs="+", default=["embedding", "backbone"])
    parser.add_argument("--out", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    refs = subprocess.run(
        ["git", "for-each-ref", "refs/exps", "--format=%(refname)"],
        cwd=args.repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    rows = []
    names = {ref: ref.rsplit("/", 1)[-1] for ref in refs}
    # a baseline's experiment runs its own stage only: its dvc.lock's embed entry is the base commit's
    for ref in sorted(ref for ref, name in names.items() if args.match in name and not name.startswith("baseline-")):
        lock = yaml.safe_load(git_show(args.repo, ref, "dvc.lock"))["stages"]
        p = yaml.safe_load(git_show(args.repo, ref, "params.yaml"))
        md5 = next(out["md5"] for out in lock["embed"]["outs"] if out["path"] == "data/embeddings.npz")
        saved = dict(np.load(args.repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]))
        for features in args.features:
            x = stored_features(saved, features)[0]
            start = time.perf_counter()
            now = probe(x, saved["labels"], **fit_settings(p["probe"]), seed=p["seed"])
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "experiment": names[ref],
                    "features": features,
                    "earlier": earlier_top1(x, saved["labels"], p["probe"], p["seed"]),
                    "converged": now["top1"],
                    "converged_s": round(seconds, 1),
                    "warnings": now["warnings"],
                }
            )
            if p["probe"]["features"] == features:  # the earlier probe's own record of the same features
                rows[-1]["recorded"] = json.loads(git_show(args.repo, ref, "metrics/probe.json"))["top1"]
            print(json.dumps(rows[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    moved = [abs(row["converged"] - row["earlier"]) for row in rows]
    if moved:
        print(f"{sum(m > 0 for m in moved)} of {len(rows)} top-1 changed; largest change {max(moved):.4f}")


if __name__ == "__main__":
    main()
