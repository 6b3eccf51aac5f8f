"""The docs cannot rot: every relative link and anchor resolves, every command they show exists, the study's
grids are all documented, and what they tell users to run stays safe (MLflow only on 127.0.0.1)."""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from project import ROOT, committed_params

PAGES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "report" / "README.md",
    ROOT / "BENCHMARKS.md",
]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@functools.cache
def anchors(page: Path) -> set[str]:
    """Every heading's anchor on a Markdown page (outside code blocks); a repeated heading gets -1, -2, ..."""
    found: set[str] = set()
    fenced = False
    for line in page.read_text().splitlines():
        fenced ^= line.startswith("```")
        heading = re.match(r"#{1,6} (.+)", line)
        if heading and not fenced:
            name, n = slug(heading.group(1)), 0
            while (name if n == 0 else f"{name}-{n}") in found:
                n += 1
            found.add(name if n == 0 else f"{name}-{n}")
    return found


def broken_links(page: Path) -> list[str]:
    """The relative links and images of `page` whose file or anchor does not exist."""
    broken = []
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        where = (page.parent / path).resolve() if path else page
        if not where.exists() or (anchor and where.suffix == ".md" and anchor not in anchors(where)):
            broken.append(target)
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    assert broken_links(page) == []


def test_the_link_check_sees_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## Cached re-runs in CI: `dvc pull`\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#cached-re-runs-in-ci-dvc-pull) [gone](missing.md) [no anchor](other.md#nothing)\n"
        "[web](https://example.org/x) ![img](other.md) [self](#title)\n# Title\n"
        "```\n[in code](ignored.md)\n```\n"
    )
    assert broken_links(page) == ["missing.md", "other.md#nothing"]


def commands(page: Path) -> list[str]:
    """The commands of the page's bash code blocks (comments and `$ ` prompts dropped, continuations joined)."""
    found = []
    for block in re.findall(r"```(?:bash|console)\n(.*?)```", page.read_text(), flags=re.S):
        block = re.sub(r"\\\n\s*", " ", block)
        for line in block.splitlines():
            line = line.split(" #", 1)[0].removeprefix("$ ").strip()
            if line and not line.startswith("#"):
                found += [part.strip() for part in re.split(r"&&|;", line) if part.strip()]
    return found


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][\w-]*):", text, flags=re.M))


SHOWN = sorted({c for page in PAGES if page.exists() for c in commands(page)})


def test_every_make_target_shown_exists():
    shown = {word.split("=")[0] for c in SHOWN if c.startswith("make ") for word in shlex.split(c)[1:2]}
    assert shown and shown <= make_targets(), shown - make_targets()


@pytest.mark.parametrize(
    "command", sorted({" ".join(shlex.split(c)[:3]) for c in SHOWN if re.match(r"python (-m \S+|\S+\.py)", c)})
)
def test_every_python_command_shown_answers_help(command):
    words = shlex.split(command)
    program = words[1:3] if words[1] == "-m" else words[1:2]
    result = subprocess.run([sys.executable, *program, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_study_grid_has_a_row_in_the_study_guide():
    rows = re.findall(r"^\| (`[^|]+`) \|", (ROOT / "docs" / "study.md").read_text(), flags=re.M)
    documented = {name for row in rows for name in re.findall(r"`(\w+)`", row)}
    assert set(committed_params()["study"]["grids"]) <= documented


def test_the_readme_is_short_and_opens_with_the_result_and_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200 and len(text.split()) <= 2000
    headings = re.findall(r"^## (.+)", text, flags=re.M)
    assert headings[:2] == ["What it found", "Two commands"]


def mlflow_commands(text: str) -> list[str]:
    """Each `mlflow ui` / `mlflow server` command, with its backslash-continued lines."""
    joined = re.sub(r"\s*\\\n\s*", " ", text)
    return re.findall(r"mlflow (?:ui|server)\b[^\n`]*", joined)


def test_every_mlflow_ui_or_server_command_in_the_docs_binds_to_localhost():
    commands = [c for path in (*PAGES, ROOT / "Makefile") if path.exists() for c in mlflow_commands(path.read_text())]
    assert len(commands) >= 3
    for command in commands:
        assert "--host 127.0.0.1" in command, command


def test_the_check_sees_a_command_that_would_listen_on_every_interface():
    assert mlflow_commands("run `mlflow server \\\n    --host 0.0.0.0 --port 5000`") == [
        "mlflow server --host 0.0.0.0 --port 5000"
    ]
