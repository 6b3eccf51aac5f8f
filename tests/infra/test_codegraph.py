"""The import graph: what a stage's code is, and no module of the package imports itself in a circle."""

from __future__ import annotations

from contrastlab.infra.codegraph import PACKAGE, SOURCE_ROOT, closure, imported_modules, module_file


def relative(paths) -> set[str]:
    return {path.relative_to(SOURCE_ROOT).as_posix() for path in paths}


def test_a_lazy_import_inside_a_function_counts(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text("def main():\n    from contrastlab.pipeline.tsne import tsne_map\n")
    assert relative(closure([script])) == {"contrastlab/pipeline/tsne.py"}


def test_imports_are_followed_through_modules_and_exempt_ones_are_left_out(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text("from contrastlab.infra import params\nfrom contrastlab.infra.stage import run_stage\n")
    found = relative(closure([script]))
    assert found == {"contrastlab/infra/params.py"}  # params imports only errors (exempt), stage.py is exempt


def test_a_module_given_by_name_counts_itself_and_what_it_imports():
    assert relative(closure(modules=["contrastlab.pipeline.examples"])) == {"contrastlab/pipeline/examples.py"}
    assert module_file("contrastlab.pipeline.examples.build") is None  # a function, not a module
    assert module_file("numpy") is None


def test_the_package_has_no_import_circle():
    modules = {
        path: {module_file(name) for name in imported_modules(path)} - {None}
        for path in (SOURCE_ROOT / PACKAGE).rglob("*.py")
    }
    state: dict = {}

    def visit(path, trail):
        if state.get(path) == "done":
            return
        circle = " -> ".join(p.relative_to(SOURCE_ROOT).as_posix() for p in [*trail, path])
        assert state.get(path) != "open", f"import circle: {circle}"
        state[path] = "open"
        for imported in modules.get(path, ()):
            visit(imported, [*trail, path])
        state[path] = "done"

    for path in modules:
        visit(path, [])
