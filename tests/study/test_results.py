"""Loading the kept results and the statistics the report draws from them, checked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_report import write_baseline, write_scenario

from contrastlab.methods.augmentations import AUGMENTATIONS
from contrastlab.methods.baselines import BASELINES
from contrastlab.methods.losses import LOSSES
from contrastlab.study.names import BaselineRun, Scenario
from contrastlab.study.results import (
    Group, baseline, factor_effect, in_registry_order, is_main_scenario, is_recipe_cell, is_study_scenario, load,
    is_precision_twin, published_results, shift_top1, spread_test, study_repeat_spread,
)


def edit_study(folder: Path, **fields) -> None:
    study = json.loads((folder / "study.json").read_text())
    (folder / "study.json").write_text(json.dumps({**study, **fields}))


def group(values: list[float], loss="triplet", aug="none", recipe="protocol", variant="") -> Group:
    fields = Scenario("mnist", loss, aug, variant=variant, recipe=recipe).fields()
    return Group([{"probe": {"top1": v}, "study": fields} for v in values])


def test_runs_are_grouped_by_the_fields_study_json_records_not_by_their_names(tmp_path):
    results = tmp_path / "results"
    folders = [write_scenario(results, "triplet", "simclr", seed, 0.9, variant="negatives-hard", recipe="tuned")
               for seed in (0, 1)]
    folders += [write_baseline(results, "raw_pixels", seed, 0.8) for seed in (0, 1)]
    for number, folder in enumerate(folders):  # names nothing could parse
        edit_study(folder, name=f"run-s{number}")
        folder.rename(results / f"run-{number}")
    scenarios, baselines = load(results)
    scenario = Scenario("mnist", "triplet", "simclr", variant="negatives-hard", recipe="tuned").group
    assert list(scenarios) == [scenario] and len(scenarios[scenario].runs) == 2
    assert scenarios[scenario].label == "triplet / simclr / negatives-hard (tuned recipe)"
    raw_pixels = BaselineRun("mnist", "raw_pixels").group
    assert list(baselines) == [raw_pixels] and len(baselines[raw_pixels].runs) == 2
    assert baseline(baselines, "mnist", "raw_pixels") is baselines[raw_pixels]
    assert baseline(baselines, "cifar10", "raw_pixels") is None


def test_groups_come_in_the_order_of_the_study_by_seed_then_by_finish(tmp_path):
    results = tmp_path / "results"
    write_scenario(results, "pairwise", "none", 1, 0.5)
    write_scenario(results, "triplet", "none", 0, 0.5)
    edit_study(write_scenario(results, "pairwise", "none", 0, 0.5), finished="2026-11-25T10:00:30")  # after triplet
    scenarios, _ = load(results)
    assert list(scenarios) == ["mnist-triplet-none", "mnist-pairwise-none"]
    assert [run["study"]["seed"] for run in scenarios["mnist-pairwise-none"].runs] == [0, 1]


def test_every_baseline_is_labelled_as_its_registry_says(tmp_path):
    results = tmp_path / "results"
    for kind in BASELINES:
        write_baseline(results, kind, 0, 0.5)
    _, baselines = load(results)
    assert {kind: baseline(baselines, "mnist", kind).label for kind in BASELINES} == {
        kind: entry.label for kind, entry in BASELINES.items()}


def test_the_study_scenarios_are_its_published_twelve_without_other_axes():
    assert is_main_scenario(group([0.9], "triplet", "simclr"))
    assert not is_recipe_cell(group([0.9], "triplet", "simclr"))
    assert is_recipe_cell(group([0.9], "triplet", "simclr", recipe="tuned"))
    assert not is_study_scenario(group([0.9], "triplet", "simclr", variant="negatives-hard"))
    assert not is_study_scenario(group([0.9], "ntxent", "simclr"))  # never published


def test_spread_test_compares_the_difference_with_two_standard_errors():
    # std 0.1 each, 2 seeds: standard error sqrt(2 * 0.01 / 2) = 0.1; the difference must exceed 0.2
    assert spread_test(group([0.50, 0.6414]), group([0.40, 0.5414])) == "within the seed spread"
    assert spread_test(group([0.80, 0.9414]), group([0.40, 0.5414])) == "larger than the seed spread"
    assert spread_test(group([0.9]), group([0.4])) == "one seed only: spread unknown"


def test_one_seed_can_be_judged_by_the_spread_of_the_other_groups_seeds():
    # std of [0.80, 0.81] 0.00707; one run against two seeds: error 0.00707 * sqrt(1 + 1/2) = 0.00866, 2x = 0.0173
    seeds = group([0.80, 0.81])
    assert spread_test(group([0.82]), seeds, one_seed_varies_alike=True) == "within the seed spread"  # +0.015
    assert spread_test(group([0.785]), seeds, one_seed_varies_alike=True) == "larger than the seed spread"  # -0.020
    assert spread_test(seeds, group([0.785]), one_seed_varies_alike=True) == "larger than the seed spread"
    assert spread_test(group([0.82]), seeds) == "one seed only: spread unknown"  # not unless asked
    assert spread_test(group([0.9]), group([0.4]), one_seed_varies_alike=True) == "one seed only: spread unknown"


def test_a_precision_twin_is_a_study_scenario_changed_only_in_precision():
    assert is_precision_twin(group([0.9], "triplet", "simclr", variant="precision-bf16"))
    assert not is_precision_twin(group([0.9], "triplet", "simclr", variant="precision-bf16-negatives-hard"))
    assert not is_precision_twin(group([0.9], "triplet", "simclr", variant="precision-bf16", recipe="tuned"))
    assert not is_precision_twin(group([0.9], "ntxent", "simclr", variant="precision-bf16"))  # not one of the 12
    assert not is_precision_twin(group([0.9], "triplet", "simclr"))


def test_factor_effect_is_the_range_of_marginal_means_in_the_registrys_order():
    groups = [group([0.5], "pairwise", "simclr"), group([0.7], "triplet", "simclr"),
              group([0.5], "pairwise", "none"), group([0.9], "triplet", "none")]
    span, means = factor_effect(groups, "loss")
    assert means == {"triplet": pytest.approx(0.8), "pairwise": pytest.approx(0.5)}
    assert list(means) == [loss for loss in LOSSES if loss in means]
    assert span == pytest.approx(0.3)
    span, means = factor_effect(groups, "aug")
    assert span == pytest.approx(0.1)  # none 0.7, simclr 0.6
    assert list(means) == [aug for aug in AUGMENTATIONS if aug in means]


def test_registry_order_keeps_levels_the_registry_no_longer_lists_last():
    augs = list(AUGMENTATIONS)
    assert in_registry_order("aug", ["retired", *reversed(augs), augs[0]]) == [*augs, "retired"]
    assert in_registry_order("loss", reversed(LOSSES)) == list(LOSSES)


def test_shift_top1_averages_both_directions_over_seeds():
    shifted = group([0.9, 0.9])
    shifted.runs[0]["probe"]["shifted_top1"] = {"3": 0.6, "-3": 0.4, "6": 0.2}
    shifted.runs[1]["probe"]["shifted_top1"] = {"3": 0.8, "-3": 0.6}
    assert shift_top1(shifted, 3) == pytest.approx(0.6)  # (0.6 + 0.4 + 0.8 + 0.6) / 4
    assert shift_top1(shifted, 6) == pytest.approx(0.2)  # measured on one seed, in one direction
    assert shift_top1(group([0.9]), 3) is None


def test_published_results_are_the_studys_twelve_numbers():
    published = published_results()
    assert len(published) == 12
    assert {(loss, aug) for _, loss, aug in published} <= {(loss, aug) for loss in LOSSES for aug in AUGMENTATIONS}
    assert published[("cifar10", "triplet", "simclr")] == {"top1": 0.364, "top3": 0.691, "knn": 0.357}


@pytest.mark.parametrize("loss, negatives, used", [("triplet", "label_aware", True), ("triplet", "hard", True),
                                                    ("triplet", "random", False), ("pairwise", "random", False),
                                                    ("ntxent", "label_aware", False), ("supcon", "label_aware", True)])
def test_labels_are_used_by_label_aware_or_mined_negatives_and_by_supcon_not_by_two_view_ntxent(loss, negatives, used):
    runs = group([0.5], loss=loss, aug="simclr").runs
    runs[0]["study"]["overrides"] = {"pairs.negatives": negatives}
    assert Group(runs).labels_used is used


def test_a_param_comes_from_study_json_or_for_older_folders_from_the_overrides_and_the_protocol():
    old = group([0.5]).runs[0]
    old["study"]["overrides"] = {"pairs.negatives": "random"}
    assert Group([old]).param("pairs.negatives") == "random" and Group([old]).param("model.arch") == "study"
    new = {**old, "study": {**old["study"], "params": {"model": {"arch": "vgg_small"}}}}
    assert Group([new]).param("model.arch") == "vgg_small"


def test_a_baseline_uses_labels_as_its_registry_entry_says():
    used = {kind: Group([{"probe": {"top1": 0.5}, "study": BaselineRun("mnist", kind).fields()}]).labels_used
            for kind in BASELINES}
    assert used == {kind: baseline.uses_labels for kind, baseline in BASELINES.items()}
    assert used["supervised"] and used["supervised_tuned"] and not used["raw_pixels"] and not used["random_init"]


def test_the_studys_repeat_spread_is_the_gap_between_its_two_sheets_for_the_same_settings():
    low, high = study_repeat_spread()
    assert (round(low, 3), round(high, 3)) == (0.006, 0.044)  # triplet/cifar10/simclr 0.37 vs 0.364; mnist/none 0.77 vs 0.814


def test_a_param_added_after_a_run_was_made_has_the_protocols_value_for_it():
    run = group([0.5]).runs[0]
    run["study"]["params"] = {"model": {"arch": "vgg_small"}}  # recorded before `split` existed
    assert Group([run]).param("split.validation_per_class") == 0


def test_an_override_of_a_param_the_protocols_list_lacks_is_read_from_the_overrides():
    run = group([0.5]).runs[0]
    run["study"].update(params={"model": {"arch": "study"}}, overrides={"train.warmup_epochs": 1})
    assert Group([run]).param("train.warmup_epochs") == 1
