"""The committed report agrees with the committed results: every confidence interval in report/results.csv and
every p-value and interval in report/comparisons.csv is recomputed here from the run folders with scipy.stats
directly, not through contrastlab.study.stats."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[2]
REPORT, RESULTS = ROOT / "report", ROOT / "study/results"


def read_csv(name: str) -> list[dict]:
    with (REPORT / name).open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def top1_by_group() -> dict[str, dict[int, float]]:
    """group name -> seed -> probe top-1, from every complete run folder."""
    from contrastlab.study.results import group_name  # the name only: the numbers are read here

    groups: dict[str, dict[int, float]] = {}
    for folder in RESULTS.iterdir():
        if (folder / "study.json").exists() and not folder.name.endswith(".partial"):
            study = json.loads((folder / "study.json").read_text())
            top1 = json.loads((folder / "probe.json").read_text())["top1"]
            groups.setdefault(group_name(study), {})[study["seed"]] = top1
    return groups


def test_every_mean_and_confidence_interval_of_results_csv(top1_by_group):
    rows = read_csv("results.csv")
    assert rows
    for row in rows:
        values = list(top1_by_group[row["group"]].values())
        assert int(row["seeds"]) == len(values)
        assert float(row["top1_mean"]) == pytest.approx(statistics.fmean(values), abs=5e-5)
        if len(values) == 1:
            assert row["top1_ci95"] == ""
            continue
        low, _ = stats.t.interval(0.95, len(values) - 1, loc=statistics.fmean(values), scale=stats.sem(values))
        assert float(row["top1_ci95"]) == pytest.approx(statistics.fmean(values) - low, abs=5e-5)


def test_every_p_value_and_interval_of_comparisons_csv(top1_by_group):
    rows = read_csv("comparisons.csv")
    assert rows
    for row in rows:
        a, b = top1_by_group[row["a_group"]], top1_by_group[row["b_group"]]
        shared = sorted(set(a) & set(b))
        if row["test"].startswith("paired"):
            assert row["test"] == f"paired, {len(shared)} seeds"
            result = stats.ttest_rel([a[s] for s in shared], [b[s] for s in shared])
        elif row["test"].startswith("Welch"):
            assert len(shared) < 2
            result = stats.ttest_ind(list(a.values()), list(b.values()), equal_var=False)
        else:  # one run against seeds, or untested: no scipy test to repeat
            continue
        if math.isnan(result.pvalue):  # identical runs: the report states the test's limit
            continue
        interval = result.confidence_interval(0.95)
        assert float(row["p"]) == pytest.approx(result.pvalue, abs=1e-6), row
        assert (float(row["ci_low"]), float(row["ci_high"])) == (
            pytest.approx(interval.low, abs=1e-6),
            pytest.approx(interval.high, abs=1e-6),
        ), row


def test_holm_within_each_family_of_comparisons_csv():
    families: dict[str, list[dict]] = {}
    for row in read_csv("comparisons.csv"):
        if row["p"]:
            families.setdefault(row["family"], []).append(row)
    for rows in families.values():
        ranked = sorted(rows, key=lambda r: float(r["p"]))
        running = 0.0
        for rank, row in enumerate(ranked):
            running = max(running, min(1.0, (len(ranked) - rank) * float(row["p"])))
            # from p-values rounded to 6 decimals: off by up to the family's size x 5e-7
            assert float(row["p_holm"]) == pytest.approx(running, abs=len(ranked) * 1e-6)
            assert row["finding"] == ("yes" if running < 0.05 else "no")


def test_the_readme_shows_the_reports_verdict_word_for_word():
    from contrastlab.study.report import VERDICT_END, VERDICT_START

    block = (ROOT / "README.md").read_text().split(VERDICT_START, 1)[1].split(VERDICT_END, 1)[0]
    shown = [line for line in block.splitlines() if line.startswith("- ")]
    verdict = (REPORT / "README.md").read_text().split("## Verdict", 1)[1].split("\n## ", 1)[0]
    sentences = [line for line in verdict.split("![", 1)[0].splitlines() if line.startswith("- ")]
    assert shown and shown == sentences
    assert "![top-1 against training CPU-minutes](report/summary.png)" in block
