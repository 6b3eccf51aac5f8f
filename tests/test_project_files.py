"""The files that let others reuse and cite the project: the licence, the citation and the changelog agree with
pyproject.toml."""

from __future__ import annotations

import re
import tomllib

import yaml

from project import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_licence_is_mit_and_the_package_metadata_says_so():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]


def test_the_citation_names_this_version_and_the_study_it_reproduces():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "MIT"
    assert citation["version"] == PROJECT["version"] and citation["title"].startswith(PROJECT["name"])
    study, = citation["references"]
    assert {author["family-names"] for author in study["authors"]} == {"Hammer", "Pavlinec", "Zarbock", "Zeilmann"}


def test_the_changelogs_newest_entry_is_this_version():
    versions = re.findall(r"^## \[(.+?)\]", (ROOT / "CHANGELOG.md").read_text(), flags=re.M)
    assert versions and versions[0] == PROJECT["version"]
