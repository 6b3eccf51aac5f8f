"""Which source files decide a stage's outputs: the package modules its script imports, transitively.

This is the one source of the code list: `tests/test_dvc_yaml.py` checks that every stage in
dvc.yaml depends on exactly these files (so DVC re-runs a stage when, and only when, code it runs
changed), and training keys its checkpoints on the files of `contrastlab.pipeline.train`. Imports
are read from the source (every `import` statement, also inside functions), not from a running
process, so a lazy import counts as much as one at the top. Modules whose change cannot alter any
output are left out; `EXEMPT` lists them with the reason.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "contrastlab"
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the package: src/

# package-relative path -> why a change to it cannot alter any stage's output
EXEMPT = {
    "contrastlab/infra/stage.py": "the error boundary: prints an error that already stopped the stage",
    "contrastlab/infra/errors.py": "exception classes only; their messages are written where they are raised",
    "contrastlab/infra/codegraph.py": "picks the files a training checkpoint's key hashes; a checkpoint is no output",
}


def _is_exempt(path: Path) -> bool:
    relative = path.relative_to(SOURCE_ROOT).as_posix()
    return relative in EXEMPT or path.name == "__init__.py"  # package markers: a docstring each


def module_file(name: str) -> Path | None:
    """The source file of package module `name`, or None if it is not one (e.g. a class imported
    from a module). Found by path, without importing anything."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    base = SOURCE_ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every package module a file names in an import statement (`from a import b` also tries `a.b`)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name == PACKAGE or name.startswith(PACKAGE + ".")}


def closure(scripts: Iterable[Path] = (), modules: Iterable[str] = ()) -> list[Path]:
    """The package's source files that `scripts` and `modules` import, directly or not, sorted,
    without the exempt ones (a module given in `modules` counts itself)."""
    todo = [Path(s).resolve() for s in scripts] + [f for f in map(module_file, modules) if f]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(path):
            found = module_file(name)
            if found and found not in seen:
                todo.append(found)
    return sorted(path for path in seen if path.is_relative_to(SOURCE_ROOT) and not _is_exempt(path))
