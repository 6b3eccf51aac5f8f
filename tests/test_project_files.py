"""The files that let others reuse and cite the project: the licence, the citation and the changelog agree with
pyproject.toml."""

from __future__ import annotations

import re
import tomllib

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from project import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_licence_is_mit_and_the_package_metadata_says_so():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]


def test_the_citation_names_this_version_and_the_study_it_reproduces():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "MIT"
    assert citation["version"] == PROJECT["version"] and citation["title"].startswith(PROJECT["name"])
    (study,) = citation["references"]
    assert {author["family-names"] for author in study["authors"]} == {"Hammer", "Pavlinec", "Zarbock", "Zeilmann"}


def test_the_changelogs_newest_entry_is_this_version():
    versions = re.findall(r"^## \[(.+?)\]", (ROOT / "CHANGELOG.md").read_text(), flags=re.M)
    assert versions and versions[0] == PROJECT["version"]


def test_the_lock_satisfies_every_bound_and_the_internals_we_use_are_bounded_both_ways():
    pinned = dict(
        line.split("==")
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    pinned = {canonicalize_name(name): version.split(";")[0].strip() for name, version in pinned.items()}
    declared = PROJECT["dependencies"] + [r for extra in PROJECT["optional-dependencies"].values() for r in extra]
    requirements = {canonicalize_name(r.name): r for r in map(Requirement, declared)}
    for name, requirement in requirements.items():
        assert requirement.specifier.contains(pinned[name]), f"{name}=={pinned[name]} breaks {requirement}"
    for name in ("torch", "scikit-learn", "dvc", "mlflow", "distributed"):
        operators = {spec.operator for spec in requirements[name].specifier}
        assert operators == {">=", "<"}, f"{name} needs a lower and an upper bound"


def test_the_library_alone_needs_none_of_the_pipelines_tools():
    library = {canonicalize_name(Requirement(r).name) for r in PROJECT["dependencies"]}
    assert not library & {"dvc", "mlflow", "dask", "distributed", "dask-jobqueue"}
    assert {"dvc", "mlflow", "distributed"} <= {
        Requirement(r).name for r in PROJECT["optional-dependencies"]["pipeline"]
    }
