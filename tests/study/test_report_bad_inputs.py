"""The report from damaged, duplicated or missing results, and killed while it writes: one line for each problem,
never a traceback, and never a report that mixes old and new files or passes partial data for whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_report import write_baseline, write_scenario

from contrastlab.study import report as report_module
from contrastlab.study.report import VERDICT_END, VERDICT_START, write_report


def study(results: Path) -> None:
    """Two seeds of two of the study's scenarios and of raw pixels."""
    for seed, (a, b) in enumerate([(0.90, 0.80), (0.92, 0.81)]):
        write_scenario(results, "triplet", "simclr", seed, a)
        write_scenario(results, "pairwise", "simclr", seed, b)
        write_baseline(results, "raw_pixels", seed, 0.85)


def report_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "contrastlab.study.report", *args], cwd=cwd, capture_output=True, text=True
    )


def edit(path: Path, **fields) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def test_damaged_folders_are_skipped_one_line_each_and_the_report_says_it_is_partial(tmp_path):
    results = tmp_path / "results"
    study(results)
    (write_scenario(results, "triplet", "none", 0, 0.7) / "probe.json").unlink()
    edit(write_scenario(results, "triplet", "none", 1, 0.7) / "study.json", seed="1")
    (write_scenario(results, "pairwise", "none", 0, 0.7) / "probe.json").write_text('{"top1": 0.')
    edit(write_scenario(results, "pairwise", "none", 1, 0.7) / "probe.json", top1="abc")
    write_scenario(results, "triplet", "simclr", 2, float("nan"))
    done = report_cli("--results", "results", "--out", "report", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "warning: skipped results/mnist-pairwise-none-s0: probe.json is not valid JSON (Expecting ',' delimiter: "
        "line 1 column 11 (char 10))",
        "warning: skipped results/mnist-pairwise-none-s1: probe.json: top1 is 'abc', not a finite number",
        "warning: skipped results/mnist-triplet-none-s0: no probe.json",
        "warning: skipped results/mnist-triplet-none-s1: study.json: seed is '1', not a whole number",
        "warning: skipped results/mnist-triplet-simclr-s2: probe.json: top1 is nan, not a finite number",
    ]
    text = (tmp_path / "report/README.md").read_text()
    assert (
        "from the 6 runs kept in results.\n\n**Partial data:** every number here leaves out 5 folders of results "
        "that could not be read:\n\n- results/mnist-pairwise-none-s0: probe.json is not valid JSON"
    ) in text
    assert "| mnist | triplet / simclr | 2 | 0.9100 ± 0.1271 |" in text and text.count("nan") == 1  # its refusal


def test_a_missing_results_folder_is_one_line_and_writes_nothing(tmp_path):
    done = report_cli("--results", "results", "--out", "report", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2,
        "error: no results folder results (run the study first, or name its folder with --results)\n",
    )
    assert not (tmp_path / "report").exists()


def test_a_readme_without_the_verdicts_markers_is_refused_before_anything_is_written(tmp_path):
    study(tmp_path / "results")
    (tmp_path / "README.md").write_text("# no markers\n")
    done = report_cli("--results", "results", "--out", "report", "--readme", "README.md", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        1,
        f"error: README.md has no lines {VERDICT_START} and {VERDICT_END} to put the verdict between\n",
    )
    assert not (tmp_path / "report").exists() and (tmp_path / "README.md").read_text() == "# no markers\n"


def test_a_partial_report_says_so_in_the_readmes_verdict_too(tmp_path):
    study(tmp_path / "results")
    (write_scenario(tmp_path / "results", "triplet", "none", 0, 0.7) / "probe.json").unlink()
    (tmp_path / "README.md").write_text(f"# Title\n{VERDICT_START}\n{VERDICT_END}\n")
    done = report_cli("--results", "results", "--out", "report", "--readme", "README.md", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert (
        "- Partial data: 1 folder of results could not be read (report/README.md names it)."
        in (tmp_path / "README.md").read_text()
    )


def test_a_scenario_folder_copied_under_another_name_is_counted_once_and_named(tmp_path):
    results = tmp_path / "results"
    study(results)
    kept = results / "mnist-triplet-simclr-s0"
    (results / "copy").mkdir()
    for file in kept.iterdir():
        (results / "copy" / file.name).write_bytes(file.read_bytes())
    refused: list[str] = []
    write_report(results, tmp_path / "report", refused)
    assert refused == [
        f"{results}/copy: seed 0 of mnist-triplet-simclr again (already read from mnist-triplet-simclr-s0)"
    ]
    assert "| mnist | triplet / simclr | 2 | 0.9100 ± 0.1271 |" in (tmp_path / "report/README.md").read_text()


def test_a_caller_that_cannot_say_data_is_partial_gets_no_report(tmp_path):
    results = tmp_path / "results"
    study(results)
    edit(results / "mnist-triplet-simclr-s0" / "probe.json", top1=float("nan"))
    with pytest.raises(Exception, match=r"mnist-triplet-simclr-s0: probe.json: top1 is nan, not a finite number"):
        write_report(results, tmp_path / "report")
    assert not (tmp_path / "report").exists()


def test_a_report_killed_while_written_leaves_the_old_one_whole(tmp_path, monkeypatch):
    results, out = tmp_path / "results", tmp_path / "report"
    study(results)
    write_report(results, out)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    write_scenario(results, "triplet", "simclr", 2, 0.5)

    def killed(*args):
        raise KeyboardInterrupt  # after the table, figures and findings are written: before README.md

    monkeypatch.setattr(report_module, "verdict_section", killed)
    with pytest.raises(KeyboardInterrupt):
        write_report(results, out)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["report", "results"]  # nothing half-written left beside it
    monkeypatch.undo()
    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / f".report.partial-{gone.pid}").mkdir()  # what a report killed by SIGKILL leaves: no finally ran
    write_report(results, out)
    assert "| mnist | triplet / simclr | 3 |" in (out / "README.md").read_text()
    assert sorted(os.listdir(tmp_path)) == ["report", "results"]


def test_a_folder_holding_what_the_report_does_not_make_is_never_replaced(tmp_path):
    study(tmp_path / "results")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "code.py").write_text("precious\n")
    done = report_cli("--results", "results", "--out", "src", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2,
        "error: src holds what the report does not make (code.py): name a new folder or the report's own with --out\n",
    )
    assert os.listdir(tmp_path / "src") == ["code.py"]
