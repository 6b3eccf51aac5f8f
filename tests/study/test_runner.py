"""The study command end to end on tiny data (2 scenarios x 1 seed), plus its planning logic."""

from __future__ import annotations

import argparse
import copy
import json
import os
import sqlite3
import subprocess
import sys

import pytest
import yaml

from contrastlab.infra.errors import ParamError
from contrastlab.methods.baselines import BASELINES
from contrastlab.study import runner
from contrastlab.study.names import BaselineRun, Scenario
from contrastlab.study.runner import fixed_value, made_with, plan, set_flag, with_values
from project import committed_params
from tinydata import make_tiny_repo, sh

RAW = committed_params()


def test_plan_runs_seed_by_seed_each_seeds_baselines_before_its_scenarios():
    runs = plan(RAW, seeds=2)
    names = [run.name for run in runs]
    baselines = RAW["study"]["baselines"]
    first = 2 * len(baselines)
    assert len(runs) == 2 * (12 + first)
    assert names[:first] == [f"baseline-{d}-{b}-s0" for d in ("mnist", "cifar10") for b in baselines]
    assert names[first : first + 3] == [
        "mnist-pairwise-none-s0",
        "mnist-pairwise-pad_rotate_scale-s0",
        "mnist-pairwise-simclr-s0",
    ]
    assert names[first + 12 :][:first] == [f"baseline-{d}-{b}-s1" for d in ("mnist", "cifar10") for b in baselines]
    second = 2 * first + 12
    assert names[second] == "mnist-pairwise-none-s1"
    assert runs[second].identity == Scenario("mnist", "pairwise", "none", seed=1)
    assert runs[second].overrides == {"dataset": "mnist", "loss": "pairwise", "aug": "none", "seed": 1}
    assert runs[0].identity == BaselineRun("mnist", baselines[0], 0) and runs[0].is_baseline
    assert runs[0].overrides == {"dataset": "mnist", "seed": 0}


def test_baselines_run_once_per_setting_of_the_params_they_read_and_are_named_by_it():
    raw = with_grid(
        {
            "dataset": ["mnist"],
            "loss": ["pairwise", "triplet"],
            "probe.features": ["embedding", "backbone"],
            "model.arch": ["study", "vgg_small"],
        },
        baselines=["random_init"],
    )
    runs = plan(raw, seeds=1, grid_name="test")
    baselines = [run for run in runs if run.is_baseline]  # two losses share each of the four settings
    assert [run.name for run in baselines] == [
        "baseline-mnist-random_init-s0",
        "baseline-mnist-random_init-arch-vgg_small-s0",
        "baseline-mnist-random_init-features-backbone-s0",
        "baseline-mnist-random_init-features-backbone-arch-vgg_small-s0",
    ]
    last = baselines[-1]
    # named with the axes in the grid's order, as its scenarios are
    assert last.identity == BaselineRun("mnist", "random_init", 0, variant="features-backbone-arch-vgg_small")
    assert last.identity.group == "mnist-baseline-random_init-features-backbone-arch-vgg_small"
    assert last.overrides == {"dataset": "mnist", "probe.features": "backbone", "model.arch": "vgg_small", "seed": 0}
    assert last.params["model"]["arch"] == "vgg_small" and last.params["probe"]["features"] == "backbone"
    assert "loss" not in last.params  # what study.json keeps: the params the baseline reads
    scenario = next(run for run in runs if run.name == "mnist-triplet-simclr-features-backbone-arch-vgg_small-s0")
    assert scenario.params["loss"] == "triplet" and scenario.params["model"]["arch"] == "vgg_small"


def test_a_set_param_is_one_more_axis_of_the_grid_named_like_one():
    runs = plan(RAW, seeds=1, grid_name="main", fixed={"probe.features": "backbone"})
    assert [run.name for run in runs] == [run.name for run in plan(RAW, seeds=1, grid_name="backbone")]
    assert fixed_value("probe.features=backbone") == ("probe.features", "backbone")
    assert fixed_value("train.epochs=25") == ("train.epochs", 25) and fixed_value("embed.shifts=[3]") == (
        "embed.shifts",
        [3],
    )
    with pytest.raises(argparse.ArgumentTypeError, match="'features' is not KEY=VALUE"):
        fixed_value("features")
    with pytest.raises(ParamError, match="probe.features='pixels' is not allowed"):
        plan(RAW, seeds=1, fixed={"probe.features": "pixels"})


def with_grid(grid: dict, **study) -> dict:
    return {**RAW, "study": {**RAW["study"], "grids": {**RAW["study"]["grids"], "test": grid}, **study}}


def test_an_extra_axis_is_named_only_where_it_differs_from_params_yaml():
    raw = with_grid({"loss": ["triplet"], "pairs.negatives": ["label_aware", "random"]}, baselines=[])
    runs = plan(raw, seeds=1, grid_name="test")
    assert [run.name for run in runs] == ["mnist-triplet-simclr-s0", "mnist-triplet-simclr-negatives-random-s0"]
    assert runs[1].identity.variant == "negatives-random"
    assert runs[1].overrides == {
        "dataset": "mnist",
        "loss": "triplet",
        "aug": "simclr",
        "pairs.negatives": "random",
        "seed": 0,
    }


def test_a_recipe_applies_to_every_point_and_names_the_runs():
    raw = with_grid(
        {"loss": ["pairwise", "triplet"]},
        baselines=[],
        recipes={"protocol": {}, "fast": {"train.epochs": 1, "train.optimizer": "adamw"}},
    )
    runs = plan(raw, seeds=1, grid_name="test", recipe="fast")
    assert [run.name for run in runs] == ["mnist-pairwise-simclr-fast-s0", "mnist-triplet-simclr-fast-s0"]
    assert runs[0].identity.recipe == "fast"
    assert runs[0].overrides["train.epochs"] == 1 and runs[0].overrides["train.optimizer"] == "adamw"


def test_every_grid_of_params_yaml_plans_with_every_recipe():
    # A typo in a committed grid or recipe should fail here, not an hour into `make study`.
    study = RAW["study"]
    for grid in study["grids"]:
        for recipe in study["recipes"]:
            runs = plan(RAW, seeds=1, grid_name=grid, recipe=recipe)
            assert runs and all(
                run.name.endswith(f"-{recipe}-s0") == (recipe != "protocol") for run in runs if not run.is_baseline
            )


def test_unknown_grid_or_recipe_names_the_known_ones():
    with pytest.raises(ParamError, match="no study grid 'mian'; known: main, losses, negatives"):
        plan(RAW, seeds=1, grid_name="mian")
    with pytest.raises(ParamError, match="no study recipe 'fast'; known: protocol"):
        plan(RAW, seeds=1, recipe="fast")


@pytest.mark.parametrize(
    "grid, message",
    [
        ({"aug": ["simclar"]}, "aug='simclar' is not allowed"),
        ({"train.momentun": [0.9]}, "study axis 'train.momentun' is not a param"),
        ({"optim.lr": [0.1]}, "study axis 'optim.lr' is not a param (no section 'optim')"),
        ({"train.epochs": [0]}, "train.epochs=0 is not allowed"),
        ({"loss": ["pairwise"], "pairs.negatives": ["hard"]}, "pairs.negatives='hard' mines semi-hard negatives"),
        ({"train.batch_size": [1024, 64], "embed.batch_size": [64, 2048]}, "gives two scenarios the name"),
    ],
)
def test_a_bad_grid_fails_before_anything_runs(grid, message):
    with pytest.raises(ParamError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan(with_grid(grid), seeds=1, grid_name="test")


def test_names_are_valid_git_refs_even_for_list_values():
    runs = plan(with_grid({"loss": ["triplet"], "embed.shifts": [[-3, 3]]}, baselines=[]), seeds=1, grid_name="test")
    assert runs[0].name == "mnist-triplet-simclr-shifts-_-3_3_-s0"


def test_set_flag_writes_values_as_yaml_reads_them():
    assert set_flag("aug", "simclr") == "aug=simclr"
    assert set_flag("train.lr", 0.1) == "train.lr=0.1"
    assert set_flag("seed", 2) == "seed=2"


def mlflow_scenarios(repo) -> list[str]:
    with sqlite3.connect(repo / "mlflow.db") as db:
        rows = db.execute(
            "SELECT t.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "WHERE t.key = 'scenario' ORDER BY t.value"
        ).fetchall()
    return [value for (value,) in rows]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    repo, env = make_tiny_repo(tmp_path_factory.mktemp("study"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["study"].update(
        seeds=1, grids={"main": {"dataset": ["mnist"], "loss": ["triplet"], "aug": ["none", "simclr"]}}
    )
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cmd = (sys.executable, "-m", "contrastlab.study", "--results", "study/results")
    first = sh(*cmd, cwd=repo, env=env)
    report = sh(
        sys.executable,
        "-m",
        "contrastlab.study.report",
        "--results",
        "study/results",
        "--out",
        "report",
        cwd=repo,
        env=env,
    )
    return repo, env, cmd, first, report


KEPT_BASELINES = RAW["study"]["baselines"]  # the tiny repo's study keeps the committed list
RUNS = 2 + len(KEPT_BASELINES)


@pytest.mark.e2e
def test_study_keeps_every_run_and_tracks_each_once(study):
    repo, _, _, first, _ = study
    results = repo / "study/results"
    assert sorted(p.name for p in results.iterdir()) == sorted(
        ["mnist-triplet-none-s0", "mnist-triplet-simclr-s0", *(f"baseline-mnist-{b}-s0" for b in KEPT_BASELINES)]
    )
    kept = results / "mnist-triplet-none-s0"
    assert sorted(p.name for p in kept.iterdir()) == [
        "confusion.csv",
        "examples.json",
        "probe.details.json",
        "probe.json",
        "study.json",
        "train.details.json",
        "train.json",
        "train_loss.csv",
        "tsne.csv",
    ]
    info = json.loads((kept / "study.json").read_text())
    assert info["overrides"] == {"dataset": "mnist", "loss": "triplet", "aug": "none", "seed": 0}
    assert Scenario(**{key: info[key] for key in Scenario.__dataclass_fields__}) == Scenario("mnist", "triplet", "none")
    assert sorted(p.name for p in (results / "baseline-mnist-supervised-s0").iterdir()) == [
        "probe.details.json",
        "probe.json",
        "study.json",
    ]
    baseline = json.loads((results / "baseline-mnist-supervised-s0/study.json").read_text())
    assert (baseline["dataset"], baseline["baseline"], baseline["seed"]) == ("mnist", "supervised", 0)
    assert info["wall_s"] > 0
    assert f"=== study [{RUNS}/{RUNS}] mnist-triplet-simclr-s0 (0 to go" in first.stdout  # baselines ran first
    assert mlflow_scenarios(repo) == sorted(
        [*(f"mnist-baseline-{b}" for b in BASELINES), "mnist-triplet-none", "mnist-triplet-simclr"]
    )
    with sqlite3.connect(repo / "mlflow.db") as db:  # a study run is named by its experiment, seed included
        names = sorted(name for (name,) in db.execute("SELECT name FROM runs"))
    assert names[-2:] == ["mnist-triplet-none-s0", "mnist-triplet-simclr-s0"]
    listed = sh("dvc", "exp", "show", "--csv", "--only-changed", cwd=repo, env=study[1]).stdout
    assert "mnist-triplet-none-s0" in listed and "mnist-triplet-simclr-s0" in listed


@pytest.mark.e2e
def test_report_has_both_scenarios_and_the_baselines(study):
    repo = study[0]
    text = (repo / "report/README.md").read_text()
    assert "| mnist | triplet / none | 1 |" in text and "| mnist | triplet / simclr | 1 |" in text
    for baseline in BASELINES.values():
        assert f"| mnist | *baseline:* {baseline.label} | 1 |" in text
    assert "(one seed: untested)" in text  # one seed per scenario: no difference is tested
    for png in ("top1.png", "tsne_mnist_triplet.png", "confusion_mnist.png"):
        assert (repo / "report" / png).read_bytes()[:4] == b"\x89PNG"
    assert len((repo / "report/results.csv").read_text().splitlines()) == 1 + 2 + len(KEPT_BASELINES)


@pytest.mark.e2e
def test_running_the_study_again_retrains_nothing(study):
    repo, env, cmd, _, _ = study
    again = sh(*cmd, cwd=repo, env=env)
    assert f"{RUNS} already in study/results, 0 to run" in again.stdout
    assert "Running stage" not in again.stdout + again.stderr
    assert len(mlflow_scenarios(repo)) == 2 + len(BASELINES)


@pytest.mark.e2e
def test_a_lost_results_folder_comes_back_from_dvc_without_training(study):
    repo, env, cmd, _, _ = study
    kept = repo / "study/results/mnist-triplet-none-s0"
    before = (kept / "probe.json").read_text()
    subprocess.run(["rm", "-r", str(kept)], check=True)
    again = sh(*cmd, cwd=repo, env=env)
    assert "1 to run" in again.stdout and "Running stage" not in again.stdout
    assert (kept / "probe.json").read_text() == before


def test_an_experiment_made_with_other_params_is_not_taken_for_a_run(tmp_path):
    raw = copy.deepcopy(RAW)
    runs = plan(raw, 1)
    scenario = runs[-1]
    baseline = next(
        run for run in runs if run.is_baseline and run.overrides["dataset"] == scenario.overrides["dataset"]
    )
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@e",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@e",
    }

    def experiment(params: dict) -> str:
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        subprocess.run(["git", "add", "params.yaml"], cwd=tmp_path, check=True, env=env)
        subprocess.run(["git", "commit", "-qm", "exp", "--allow-empty"], cwd=tmp_path, check=True, env=env)
        return "HEAD"

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    as_run = with_values(raw, scenario.overrides)
    assert made_with(tmp_path, experiment(as_run), scenario) and made_with(tmp_path, "HEAD", baseline)
    as_run["train"]["lr"] = 0.123  # not a grid axis, so not in the name
    assert not made_with(tmp_path, experiment(as_run), scenario) and made_with(tmp_path, "HEAD", baseline)
    as_run["probe"]["knn_k"] = 7  # read by the baselines too
    assert not made_with(tmp_path, experiment(as_run), baseline)


def test_only_the_named_baselines_run_for_each_setting_of_the_grid_and_no_scenario():
    raw = with_grid(
        {"dataset": ["mnist", "cifar10"], "loss": ["triplet"], "aug": ["simclr"], "patches.centroids": [64, 1600]}
    )
    runs = plan(raw, seeds=1, grid_name="test", only_baselines=["kmeans_patches"])
    assert [run.name for run in runs] == [
        "baseline-mnist-kmeans_patches-s0",
        "baseline-mnist-kmeans_patches-centroids-1600-s0",
        "baseline-cifar10-kmeans_patches-s0",
        "baseline-cifar10-kmeans_patches-centroids-1600-s0",
    ]
    assert all(run.is_baseline for run in runs)


def test_without_baselines_only_the_scenarios_run_seed_by_seed_up_to_probe_and_tsne():
    raw = with_grid({"dataset": ["mnist"], "loss": ["triplet", "pairwise"], "aug": ["simclr"]})
    runs = plan(raw, seeds=2, grid_name="test", with_baselines=False)
    assert [run.name for run in runs] == [
        "mnist-triplet-simclr-s0",
        "mnist-pairwise-simclr-s0",
        "mnist-triplet-simclr-s1",
        "mnist-pairwise-simclr-s1",
    ]
    assert {run.stages for run in runs} == {("probe", "tsne")}
    with_them = plan(raw, seeds=1, grid_name="test")
    assert {run.stages for run in with_them if not run.is_baseline} == {()}  # the whole pipeline, track too
    assert all(run.stages == (f"baseline@{run.identity.baseline}",) for run in with_them if run.is_baseline)


def test_dvc_exp_run_targets_the_runs_stages_and_keeps_only_what_they_wrote(monkeypatch, tmp_path):
    raw = with_grid({"dataset": ["mnist"], "loss": ["triplet"], "aug": ["simclr"]})
    (scenario,) = plan(raw, seeds=1, grid_name="test", with_baselines=False)
    commands, refs = [], iter([None, "refs/exps/x"])
    monkeypatch.setattr(runner, "experiment_ref", lambda root, name: next(refs))
    monkeypatch.setattr(runner, "run_child", lambda cmd, *args: commands.append(cmd))
    monkeypatch.setattr(runner, "git", lambda root, *args: "{}")
    files = runner.experiment_files(tmp_path, scenario)
    assert commands == [
        [
            "dvc",
            "exp",
            "run",
            "--temp",
            "-n",
            "mnist-triplet-simclr-s0",
            *[arg for path, value in scenario.overrides.items() for arg in ("-S", set_flag(path, value))],
            "probe",
            "tsne",
        ]
    ]
    assert set(files) == {*runner.KEPT.values(), "study.json"}


def test_the_study_command_refuses_baselines_and_no_baselines_together_in_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "contrastlab.study", "--no-baselines", "--baselines", "raw_pixels"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "not allowed with argument --no-baselines" in done.stderr.splitlines()[-1]


def test_the_study_command_refuses_an_unknown_baseline_in_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "contrastlab.study", "--baselines", "pixelz"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "no baseline 'pixelz'; known: raw_pixels" in done.stderr
