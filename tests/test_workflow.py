"""The GitHub Actions workflow users get: valid by GitHub's published schema, and doing what it says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def validate(path: Path) -> subprocess.CompletedProcess:
    checker = Path(sys.executable).parent / "check-jsonschema"
    return subprocess.run(
        [str(checker), "--builtin-schema", "vendor.github-workflows", str(path)], capture_output=True, text=True
    )


def test_workflow_matches_the_github_workflow_schema():
    result = validate(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_catches_a_broken_workflow(tmp_path):
    text = WORKFLOW.read_text()
    assert "    runs-on: ubuntu-latest\n" in text
    (tmp_path / "ci.yml").write_text(text.replace("    runs-on: ubuntu-latest\n", ""))
    assert validate(tmp_path / "ci.yml").returncode != 0


def test_workflow_restores_both_caches_runs_the_readme_tests_and_a_cached_repro():
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["test-and-repro"]["steps"]
    uses = {step["uses"].split("@")[0]: step for step in steps if "uses" in step}
    runs = "\n".join(step["run"] for step in steps if "run" in step)
    assert uses["actions/setup-python"]["with"]["cache"] == "pip"
    assert uses["actions/cache"]["with"]["path"] == ".dvc/cache"
    assert "dvc.lock" in uses["actions/cache"]["with"]["key"]
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make test" in runs.splitlines()
    assert "make run" in runs  # `dvc repro` of the default scenario, restored from the cache
