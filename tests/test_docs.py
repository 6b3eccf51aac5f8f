"""What the docs tell users to run stays safe: MLflow's UI and server only on 127.0.0.1."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def mlflow_commands(text: str) -> list[str]:
    """Each `mlflow ui` / `mlflow server` command, with its backslash-continued lines."""
    joined = re.sub(r"\s*\\\n\s*", " ", text)
    return re.findall(r"mlflow (?:ui|server)\b[^\n`]*", joined)


def test_every_mlflow_ui_or_server_command_in_the_docs_binds_to_localhost():
    commands = [c for name in ("README.md", "Makefile") for c in mlflow_commands((ROOT / name).read_text())]
    assert len(commands) >= 3
    for command in commands:
        assert "--host 127.0.0.1" in command, command


def test_the_check_sees_a_command_that_would_listen_on_every_interface():
    assert mlflow_commands("run `mlflow server \\\n    --host 0.0.0.0 --port 5000`") == ["mlflow server --host 0.0.0.0 --port 5000"]
