"""DVC as its users expect: the encoder is a registered model artifact, `dvc plots show` colours the t-SNE map
by class (a custom template), not by revision, and metrics files hold numbers only (the rest beside them)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from dvc.repo import Repo

from contrastlab.infra.files import details_path, is_metric
from project import ROOT


def test_the_encoder_is_a_model_artifact_and_the_train_stages_output():
    artifact = Repo(str(ROOT)).artifacts.read()["dvc.yaml"]["encoder"]
    assert (artifact.type, artifact.path) == ("model", "models/encoder.pt")
    train = Repo(str(ROOT)).stage.collect("train")[0]
    assert artifact.path in {str(out.def_path) for out in train.outs}


def test_dvc_plots_show_colours_the_tsne_map_by_class(tmp_path):
    for path in ("dvc.yaml", "params.yaml", ".dvc/config", ".dvc/plots/tsne_by_class.json"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, tmp_path / path)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots/tsne.csv").write_text("x,y,class\n1.5,2.5,7\n-3.0,0.5,2\n")
    shown = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), "plots", "show", "--json", "plots/tsne.csv"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    (plot,) = json.loads(shown.stdout)["data"]["plots/tsne.csv"]
    encoding = plot["content"]["encoding"]
    assert encoding["color"]["field"] == "class" and encoding["color"]["type"] == "nominal"
    assert [point["class"] for point in plot["content"]["data"]["values"]] == ["7", "2"]


def declared(kind: str) -> dict[str, list[str]]:
    """Each stage of dvc.yaml (a foreach stage once, its `${item}` as written) -> the paths it declares as `kind`."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {
        name: [next(iter(out)) if isinstance(out, dict) else out for out in stage.get("do", stage).get(kind, [])]
        for name, stage in stages.items()
    }


def test_the_committed_metrics_files_hold_numbers_only():
    """`dvc metrics show/diff` compare numbers: text, flags and lists go to the details file beside each."""
    files = [path for paths in declared("metrics").values() for path in paths]
    expanded = [p for path in files for p in ROOT.glob(path.replace("${item}", "*")) if ".details." not in p.name]
    assert len(expanded) == 9  # examples, train, probe and the six baselines
    for path in expanded:
        assert all(map(is_metric, json.loads(path.read_text()).values())), path


def test_the_details_of_each_metrics_file_are_a_declared_output_that_track_reads():
    outs, metrics = declared("outs"), declared("metrics")
    track = set(declared("deps")["track"])
    for stage, paths in metrics.items():
        for path in paths:
            if stage != "examples":  # a false-negative rate and nothing else
                assert details_path(path).as_posix() in outs[stage], path
                assert {
                    path.replace("${item}", "raw_pixels"),
                    details_path(path).as_posix().replace("${item}", "raw_pixels"),
                } <= track
