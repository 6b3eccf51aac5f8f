"""DVC as its users expect: the encoder is a registered model artifact, and `dvc plots show` colours the t-SNE map
by class (a custom template), not by revision."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from dvc.repo import Repo

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
