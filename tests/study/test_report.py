"""The report from hand-made results: the numbers in its table and findings are checked by hand."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from contrastlab.pipeline.datasets import DATASETS
from contrastlab.study.report import Group, factor_effect, published_results, spread_test, write_report


def write_scenario(results: Path, loss: str, aug: str, seed: int, top1: float, train_s: float = 100.0,
                   variant: str = "", recipe: str = "protocol", shifted: dict | None = None,
                   wall_s: float = 120.0, machine: str | None = None, dataset: str = "mnist") -> None:
    name = "-".join([dataset, loss, aug, *([variant] if variant else []), *([recipe] if recipe != "protocol" else [])])
    folder = results / f"{name}-s{seed}"
    folder.mkdir(parents=True)
    overrides = {"dataset": dataset, "loss": loss, "aug": aug, "seed": seed}
    info = {"name": folder.name, "overrides": overrides, "wall_s": wall_s, "recipe": recipe,
            "finished": f"2026-11-25T10:0{seed}:00", **({"machine": machine} if machine else {})}
    (folder / "study.json").write_text(json.dumps(info))
    (folder / "probe.json").write_text(json.dumps({"top1": top1, "top3": 0.99, "knn": top1 - 0.01,
                                                   "shifted_top1": shifted or {}}))
    (folder / "train.json").write_text(json.dumps({"train_time_s": train_s}))
    classes = DATASETS[dataset].classes
    points = [("x", "y", "class"), *((str(i), str(-i), classes[i % 10]) for i in range(20))]
    (folder / "tsne.csv").write_text("\n".join(",".join(p) for p in points) + "\n")
    pairs = [("actual", "predicted"), (classes[0], classes[0]), (classes[0], classes[1]), (classes[1], classes[1])]
    (folder / "confusion.csv").write_text("\n".join(",".join(p) for p in pairs) + "\n")


def write_baseline(results: Path, kind: str, seed: int, top1: float) -> None:
    folder = results / f"baseline-mnist-{kind}-s{seed}"
    folder.mkdir(parents=True)
    (folder / "study.json").write_text(json.dumps({"name": folder.name, "dataset": "mnist", "baseline": kind,
                                                   "seed": seed, "wall_s": 10.0, "finished": "2026-11-25T11:00:00"}))
    (folder / "probe.json").write_text(json.dumps({"top1": top1, "top3": 0.98, "knn": top1}))


@pytest.fixture
def report(tmp_path) -> Path:
    results = tmp_path / "results"
    for seed, (a, b) in enumerate([(0.90, 0.80), (0.92, 0.81)]):
        write_scenario(results, "triplet", "simclr", seed, a)
        write_scenario(results, "pairwise", "simclr", seed, b)
        write_baseline(results, "raw_pixels", seed, 0.85)
    write_report(results, tmp_path / "report")
    return tmp_path / "report"


def test_table_has_mean_std_and_difference_to_the_published_number(report):
    text = (report / "README.md").read_text()
    # triplet/simclr: mean 0.91, sample std 0.01414; published 0.928 -> difference -0.018
    assert "| mnist | triplet / simclr | 2 | 0.9100 ± 0.0141 | 0.9280 | -0.0180 |" in text
    assert "| mnist | pairwise / simclr | 2 | 0.8050 ± 0.0071 | 0.5575 | +0.2475 |" in text
    assert "| mnist | *baseline:* raw pixels (logistic regression) | 2 | 0.8500 ± 0.0000 |" in text
    assert "## Training recipes" not in text  # only the protocol's recipe ran
    rows = list(csv.reader((report / "results.csv").open()))
    assert rows[1][:6] == ["mnist", "triplet / simclr", "2", "0.91", "0.0141", "0.928"]


def test_findings_name_the_best_scenario_and_what_beats_what(report):
    text = (report / "README.md").read_text()
    assert "- Best: triplet / simclr, probe top-1 0.9100 ± 0.0141 over 2 seed(s); runner-up pairwise / simclr" in text
    assert "- 1 of 2 scenarios beat raw pixels (0.8500)." in text
    assert "- 1 of 2 scenarios beat the published study's top-1." in text
    assert "- simclr: triplet - pairwise = +0.1050, larger than the seed spread." in text
    assert "- Total wall time of all 6 runs (scenarios, baselines and beyond): 0.14 h." in text  # 4 x 120 + 2 x 10 s
    for png in ("top1.png", "tsne_mnist_triplet.png", "tsne_mnist_pairwise.png", "confusion_mnist.png"):
        assert (report / png).read_bytes()[:4] == b"\x89PNG"


def test_recipes_are_compared_side_by_side_on_the_studys_scenarios(tmp_path):
    results = tmp_path / "results"
    for seed, (protocol, tuned) in enumerate([(0.80, 0.95), (0.82, 0.97)]):
        write_scenario(results, "triplet", "simclr", seed, protocol)
        write_scenario(results, "triplet", "simclr", seed, tuned, recipe="tuned")
        write_scenario(results, "pairwise", "none", seed, 0.70)
        write_scenario(results, "triplet", "simclr", seed, 0.99, variant="negatives-random", recipe="tuned")
        write_baseline(results, "raw_pixels", seed, 0.90)
    write_scenario(results, "triplet", "simclr", 0, 0.30, dataset="cifar10")  # the tuned recipe has not run here
    write_report(results, tmp_path / "report")
    text = (tmp_path / "report/README.md").read_text()
    assert "| dataset | loss / aug | protocol | tuned | Δ tuned |" in text
    assert "| cifar10 | triplet / simclr | 0.3000 (1 seed) |  |  |" in text
    assert "- cifar10, protocol: best triplet / simclr 0.3000 (1 seed)." in text
    assert "- cifar10, tuned" not in text
    # tuned - protocol = 0.96 - 0.81; standard error sqrt(2 * 0.0002 / 2) = 0.0141
    assert "| mnist | triplet / simclr | 0.8100 ± 0.0141 | 0.9600 ± 0.0141 | +0.1500, larger than the seed spread |" in text
    assert "| mnist | pairwise / none | 0.7000 ± 0.0000 |  |  |" in text  # not trained with the tuned recipe
    assert "- mnist, protocol: best triplet / simclr 0.8100 ± 0.0141; 0 of 2 beat raw pixels (0.9000)." in text
    assert "- mnist, tuned: best triplet / simclr 0.9600 ± 0.0141; 1 of 1 beat raw pixels (0.9000)." in text


def test_wall_times_are_reported_per_machine(tmp_path):
    # Seed 0 ran on an older machine that did not record itself; seeds 1 and 2 on a recorded one,
    # where seed 2 of pairwise is missing: seed 1 is the complete one there.
    results = tmp_path / "results"
    for loss, wall in (("triplet", 600.0), ("pairwise", 300.0)):
        write_scenario(results, loss, "simclr", 0, 0.9, wall_s=wall)
        write_scenario(results, loss, "simclr", 1, 0.9, wall_s=wall / 4, machine="fast CPU")
    write_scenario(results, "triplet", "simclr", 2, 0.9, wall_s=170.0, machine="fast CPU")
    write_report(results, tmp_path / "report")
    text = (tmp_path / "report/README.md").read_text()
    assert "- Total wall time of all 5 runs (scenarios, baselines and beyond): 0.36 h." in text  # 1295 s
    assert "- On a machine not recorded (2 runs):\n  - the 2 scenarios with one seed (seed 0): 15 min." in text
    assert "- On fast CPU (3 runs):\n  - the 2 scenarios with one seed (seed 1): 4 min." in text  # 150 + 75 s
    assert "mnist triplet / simclr 160 s, mnist pairwise / simclr 75 s." in text  # mean of 150 and 170 s


def group(values: list[float], loss="triplet", aug="none") -> Group:
    return Group("mnist", f"{loss}/{aug}", [
        {"probe": {"top1": v}, "study": {"overrides": {"loss": loss, "aug": aug}}} for v in values])


def test_spread_test_compares_the_difference_with_two_standard_errors():
    # std 0.1 each, 2 seeds: standard error sqrt(2 * 0.01 / 2) = 0.1; the difference must exceed 0.2
    assert spread_test(group([0.50, 0.6414]), group([0.40, 0.5414])) == "within the seed spread"
    assert spread_test(group([0.80, 0.9414]), group([0.40, 0.5414])) == "larger than the seed spread"
    assert spread_test(group([0.9]), group([0.4])) == "one seed only: spread unknown"


def test_factor_effect_is_the_range_of_marginal_means():
    groups = [group([0.9], "triplet", "none"), group([0.7], "triplet", "simclr"),
              group([0.5], "pairwise", "none"), group([0.5], "pairwise", "simclr")]
    span, means = factor_effect(groups, "loss")
    assert means == {"triplet": pytest.approx(0.8), "pairwise": pytest.approx(0.5)}
    assert span == pytest.approx(0.3)
    assert factor_effect(groups, "aug")[0] == pytest.approx(0.1)


def test_methods_beyond_the_study_are_compared_with_the_best_of_the_twelve_under_the_same_recipe(tmp_path):
    results = tmp_path / "results"
    for seed, (a, b, c, d) in enumerate([(0.90, 0.95, 0.80, 0.85), (0.92, 0.97, 0.80, 0.87)]):
        write_scenario(results, "triplet", "simclr", seed, a)
        write_scenario(results, "ntxent", "simclr", seed, b, shifted={"-3": 0.5, "3": 0.7, "-6": 0.1, "6": 0.3})
        write_scenario(results, "triplet", "simclr", seed, c, variant="negatives-random", recipe="tuned")
        write_scenario(results, "triplet", "simclr", seed, d, recipe="tuned")  # one of the 12, tuned: its reference
    write_scenario(results, "supcon", "simclr", 0, 0.5, recipe="other")  # the 12 never ran with `other`
    write_report(results, tmp_path / "report")
    text = (tmp_path / "report/README.md").read_text()
    beyond = text[text.index("## Beyond the study"):]
    assert "| mnist | triplet / simclr | 2 | 0.9100 ± 0.0141 | 0.9280 |" in text  # the 12-scenario table
    assert ("| mnist | ntxent / simclr | 2 | 0.9600 ± 0.0141 | 0.9900 ± 0.0000 | 0.9500 ± 0.0141 | 0.6000 | 0.2000 | "
            "+0.0500 vs triplet / simclr, larger than the seed spread |") in beyond
    # 0.80 - 0.86 against the tuned triplet / simclr, not against the protocol's 0.91
    assert ("| mnist | triplet / simclr / negatives-random (tuned recipe) | 2 | 0.8000 ± 0.0000 | 0.9900 ± 0.0000 | "
            "0.7900 ± 0.0000 |  |  | -0.0600 vs triplet / simclr (tuned recipe), larger than the seed spread |") in beyond
    assert "| mnist | supcon / simclr (other recipe) | 1 | 0.5000 |" in beyond  # falls back to the protocol's
    assert ("-0.4100 vs triplet / simclr (protocol recipe: other ran no study scenario here), "
            "one seed only: spread unknown |") in beyond
    assert ("| mnist | triplet / simclr | 2 | 0.9100 ± 0.0141 | 0.9900 ± 0.0000 | 0.9000 ± 0.0141 |  |  | "
            "(best of 1 study scenarios run with the protocol recipe) |") in beyond
    assert "| mnist | triplet / simclr (tuned recipe) | 2 | 0.8600 ± 0.0141 |" in beyond  # as a reference row only
    assert beyond.count("| mnist | triplet / simclr (tuned recipe) |") == 1
    assert "| mnist | **best new method: ntxent / simclr** |" in beyond
    assert (tmp_path / "report/top1_beyond.png").read_bytes()[:4] == b"\x89PNG"


def test_a_method_on_a_dataset_without_study_scenarios_has_no_comparison_and_old_figures_go(tmp_path):
    results = tmp_path / "results"
    write_scenario(results, "triplet", "simclr", 0, 0.9)
    write_scenario(results, "ntxent", "simclr", 0, 0.8, dataset="fashion_mnist")
    write_report(results, tmp_path / "report")
    text = (tmp_path / "report/README.md").read_text()
    assert "| fashion_mnist | ntxent / simclr | 1 | 0.8000 | 0.9900 | 0.7900 |  |  |  |" in text
    shutil.rmtree(results / "fashion_mnist-ntxent-simclr-s0")
    write_report(results, tmp_path / "report")  # no method beyond the study left: its figure must not stay
    assert "## Beyond the study" not in (tmp_path / "report/README.md").read_text()
    assert not (tmp_path / "report/top1_beyond.png").exists()


def test_published_results_are_the_studys_twelve_numbers():
    published = published_results()
    assert len(published) == 12
    assert published[("cifar10", "triplet", "simclr")] == {"top1": 0.364, "top3": 0.691, "knn": 0.357}
