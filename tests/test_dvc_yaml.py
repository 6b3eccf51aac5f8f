"""dvc.yaml tells the truth: each stage depends on exactly the code and params its script reads.

The code list is derived from the imports (`contrastlab.infra.codegraph`): the stage's script,
every package module it imports directly or not, and the registries its params are checked
against. A module that no stage imports any more, or one a stage imports but dvc.yaml forgot,
fails here, and so does a param a script reads but dvc.yaml does not declare (or the reverse).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from contrastlab.infra import params
from contrastlab.infra.codegraph import EXEMPT, SOURCE_ROOT, closure
from contrastlab.methods.baselines import BASELINES
from project import ROOT

PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
STAGES = {name: stage.get("do", stage) for name, stage in PIPELINE.items()}
CODE = re.compile(r"^(stages|src)/.*\.py$")


def script_of(stage: dict) -> Path:
    return ROOT / re.search(r"python (stages/\w+\.py)", stage["cmd"])[1]


def reads_of(script: Path) -> tuple[str, ...]:
    spec = importlib.util.spec_from_file_location(f"stage_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.READS


def code_of(script: Path) -> set[str]:
    files = closure([script], params.registry_modules(reads_of(script)))
    return {script.relative_to(ROOT).as_posix(), *(f.relative_to(ROOT).as_posix() for f in files)}


@pytest.mark.parametrize("name", list(STAGES))
def test_a_stage_depends_on_exactly_the_code_it_imports(name):
    stage = STAGES[name]
    declared = {dep for dep in stage["deps"] if CODE.match(dep)}
    derived = code_of(script_of(stage))
    assert sorted(derived - declared) == [], f"dvc.yaml's {name} misses code it imports"
    assert sorted(declared - derived) == [], f"dvc.yaml's {name} lists code it does not import"


@pytest.mark.parametrize("name", list(STAGES))
def test_a_stage_declares_exactly_the_params_it_reads(name):
    stage = STAGES[name]
    assert sorted(stage["params"]) == sorted(reads_of(script_of(stage)))


def test_every_stage_script_is_in_the_pipeline():
    scripts = {script_of(stage).name for stage in STAGES.values()}
    assert scripts == {path.name for path in (ROOT / "stages").glob("*.py")}


def test_there_is_one_baseline_stage_per_registered_baseline_and_track_logs_each():
    assert PIPELINE["baseline"]["foreach"] == list(BASELINES)
    outputs = [f"metrics/baselines/{name}.json" for name in BASELINES]
    assert all(path in STAGES["track"]["deps"] for path in outputs)
    assert " ".join(outputs) in STAGES["track"]["cmd"]


def test_the_exempt_modules_exist_and_say_why():
    for path, reason in EXEMPT.items():
        assert (SOURCE_ROOT / path).is_file(), path
        assert len(reason) > 20


def test_dvc_reads_yaml_with_the_c_parser():
    """A no-op `dvc repro` parses params.yaml once per stage plus dvc.yaml and dvc.lock: with ruamel's pure-Python
    parser that took 2.4 of its 3.9 s (tiny repository, 11 stages, profiled), with the C one 0.35 s."""
    from _ruamel_yaml import CParser
    from ruamel.yaml import YAML

    assert YAML(typ="safe").Parser is CParser
