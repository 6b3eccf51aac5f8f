"""`contrastlab <command>`: each command is the module's own command line, an unknown one is refused in a usage line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from contrastlab.cli import COMMANDS


def contrastlab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "contrastlab.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_is_its_modules_command_line(command):
    done = contrastlab(command, "--help")
    assert done.returncode == 0 and done.stdout.startswith(f"usage: contrastlab {command} ")


def test_an_unknown_command_is_refused_with_the_list():
    done = contrastlab("studdy")
    assert done.returncode == 2 and done.stderr.startswith("usage: contrastlab {study,report,mlflow,docs}")
    assert all(name in done.stderr for name in COMMANDS)
