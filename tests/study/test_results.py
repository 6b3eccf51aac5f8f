"""Loading the kept results and the statistics the report draws from them, checked by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from test_report import write_baseline, write_scenario

from contrastlab.infra.errors import DataError
from contrastlab.methods.augmentations import AUGMENTATIONS
from contrastlab.methods.baselines import BASELINES
from contrastlab.methods.losses import LOSSES
from contrastlab.study.names import BaselineRun, Scenario
from contrastlab.study.results import (
    BACKBONE_WIDTH,
    FAMILIES,
    DamagedRun,
    Group,
    Ledger,
    baseline,
    compare_groups,
    factor_effect,
    in_registry_order,
    is_main_scenario,
    is_precision_twin,
    is_recipe_cell,
    is_study_scenario,
    load,
    published_results,
    read_run,
    shift_top1,
    study_repeat_spread,
)


def edit_study(folder: Path, **fields) -> None:
    study = json.loads((folder / "study.json").read_text())
    (folder / "study.json").write_text(json.dumps({**study, **fields}))


def group(values: list[float], loss="triplet", aug="none", recipe="protocol", variant="", seeds=None) -> Group:
    """A scenario's runs with these top-1s, of seeds 0, 1, ... unless `seeds` says which."""
    seeds = range(len(values)) if seeds is None else seeds
    return Group(
        [
            {
                "probe": {"top1": v},
                "study": Scenario("mnist", loss, aug, variant=variant, recipe=recipe, seed=seed).fields(),
            }
            for v, seed in zip(values, seeds, strict=True)
        ]
    )


def baseline_group(kind: str, seeds=(0,), dataset="mnist", params: dict | None = None, **study) -> Group:
    return Group(
        [
            {
                "probe": {"top1": 0.5},
                "study": {
                    **BaselineRun(dataset, kind, seed).fields(),
                    **study,
                    **({"params": params} if params else {}),
                },
            }
            for seed in seeds
        ]
    )


def test_runs_are_grouped_by_the_fields_study_json_records_not_by_their_names(tmp_path):
    results = tmp_path / "results"
    folders = [
        write_scenario(results, "triplet", "simclr", seed, 0.9, variant="negatives-hard", recipe="tuned")
        for seed in (0, 1)
    ]
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
        kind: entry.label for kind, entry in BASELINES.items()
    }


def test_the_study_scenarios_are_its_published_twelve_without_other_axes():
    assert is_main_scenario(group([0.9], "triplet", "simclr"))
    assert not is_recipe_cell(group([0.9], "triplet", "simclr"))
    assert is_recipe_cell(group([0.9], "triplet", "simclr", recipe="tuned"))
    assert not is_study_scenario(group([0.9], "triplet", "simclr", variant="negatives-hard"))
    assert not is_study_scenario(group([0.9], "ntxent", "simclr"))  # never published


def test_runs_are_compared_pair_by_pair_over_the_seeds_they_share():
    # a = 0.60, 0.70 at seeds 0, 1; b = 0.50, 0.40 at seeds 0, 1: differences 0.10, 0.30, mean 0.2, std 0.141421,
    # standard error 0.1, t = 2 with 1 degree of freedom: p = 1 - (2 / pi) atan(2) = 0.295167;
    # CI 0.2 -+ 12.7062 x 0.1 = [-1.070620, +1.470620]
    paired = compare_groups(group([0.60, 0.70]), group([0.50, 0.40]))
    assert paired.test == "paired, 2 seeds" and paired.diff == pytest.approx(0.2)
    assert paired.p == pytest.approx(1 - 2 / math.pi * math.atan(2)) == pytest.approx(0.295167, abs=1e-6)
    assert (paired.low, paired.high) == (pytest.approx(-1.070620, abs=1e-5), pytest.approx(1.470620, abs=1e-5))
    assert str(paired) == "+0.2000 [-1.0706, +1.4706], p = 0.295 (paired, 2 seeds)"
    # the same numbers at seeds 2, 3: no pairs, Welch's test. Variances 0.005 each, standard error
    # sqrt(0.005 / 2 + 0.005 / 2) = 0.070711, t = 0.2 / 0.070711 = 2.828427 with (equal variances and sizes)
    # 2 degrees of freedom: p = 1 - t / sqrt(t^2 + 2) = 0.105573; CI 0.2 -+ 4.3027 x 0.070711 = [-0.104250, +0.504250]
    welch = compare_groups(group([0.60, 0.70]), group([0.50, 0.40], seeds=[2, 3]))
    assert welch.test == "Welch, 2 vs 2 seeds" and welch.diff == pytest.approx(0.2)
    assert welch.p == pytest.approx(1 - 2.828427 / math.sqrt(2.828427**2 + 2), abs=1e-6)
    assert (welch.low, welch.high) == (pytest.approx(-0.104250, abs=1e-5), pytest.approx(0.504250, abs=1e-5))
    assert not compare_groups(group([0.9], seeds=[0]), group([0.4], seeds=[0])).tested
    assert str(compare_groups(group([0.9]), group([0.4]))) == "+0.5000 (one seed: untested)"


def test_a_difference_the_two_standard_error_rule_called_larger_than_the_seed_spread_is_no_finding_with_two_seeds():
    # a = 0.60, 0.70; b = 0.40, 0.45 at the same seeds. The old rule: standard error sqrt(0.005 / 2 + 0.00125 / 2)
    # = 0.055902, and |0.225| > 2 x 0.055902 = 0.1118: "larger than the seed spread". Paired: differences 0.20,
    # 0.25, mean 0.225, std 0.035355, standard error 0.025, t = 9 with 1 degree of freedom:
    # p = 1 - (2 / pi) atan(9) = 0.070447; CI 0.225 -+ 12.7062 x 0.025 = [-0.092655, +0.542655] holds 0
    a, b = group([0.60, 0.70]), group([0.40, 0.45])
    assert abs(a.mean("top1") - b.mean("top1")) > 2 * math.sqrt(a.std("top1") ** 2 / 2 + b.std("top1") ** 2 / 2)
    result = compare_groups(a, b)
    assert result.p == pytest.approx(1 - 2 / math.pi * math.atan(9)) == pytest.approx(0.070447, abs=1e-6)
    assert (result.low, result.high) == (pytest.approx(-0.092655, abs=1e-5), pytest.approx(0.542655, abs=1e-5))
    assert not result.finding


def test_one_seed_is_compared_only_where_it_is_taken_to_vary_as_the_other_groups_seeds():
    # 0.785 against 0.80, 0.81: std 0.0070711, error 0.0070711 x sqrt(1 + 1/2) = 0.0086603, t = -0.020 / 0.0086603
    # = -2.309401 with 1 degree of freedom: p = 1 - (2 / pi) atan(2.309401) = (2 / pi) atan(0.433013) = 0.260147.
    # The old rule called it "larger than the seed spread" (0.020 > 2 x 0.0086603 = 0.0173).
    seeds = group([0.80, 0.81])
    result = compare_groups(group([0.785], seeds=[5]), seeds, one_seed_varies_alike=True)
    assert result.test == "1 run vs 2 seeds" and result.diff == pytest.approx(-0.020)
    assert result.p == pytest.approx(1 - 2 / math.pi * math.atan(0.020 / 0.0086603), abs=1e-5)
    assert result.p == pytest.approx(0.260147, abs=1e-6) and not result.finding
    assert compare_groups(seeds, group([0.785], seeds=[5]), one_seed_varies_alike=True).p == pytest.approx(result.p)
    assert not compare_groups(group([0.785], seeds=[5]), seeds).tested  # not unless asked
    assert not compare_groups(group([0.9]), group([0.4]), one_seed_varies_alike=True).tested  # nothing varies


def test_a_ledger_family_is_holm_corrected_within_itself_and_recorded_row_by_row():
    # paired, 1 degree of freedom, p = 1 - (2 / pi) atan(t): differences 0.10, 0.11 -> t = 0.105 / 0.005 = 21,
    # p = 0.030292; differences 0.20, 0.25 -> t = 9, p = 0.070447. Holm over the two tested: 2 x 0.030292 =
    # 0.060585, then max(0.060585, 1 x 0.070447) = 0.070447; the one-seed comparison is untested
    triplet, pairwise = group([0.90, 0.92], "triplet", "simclr"), group([0.80, 0.81], "pairwise", "simclr")
    ntxent, supcon = group([0.60, 0.70], "ntxent", "simclr"), group([0.40, 0.45], "supcon", "simclr")
    alone = group([0.5], "triplet", "none")
    ledger = Ledger()
    tested = ledger.family("findings, mnist", [(triplet, pairwise), (ntxent, supcon), (alone, pairwise)])
    assert [c.p_holm for c in tested] == [pytest.approx(0.060585, abs=1e-6), pytest.approx(0.070447, abs=1e-6), None]
    assert [c.finding for c in tested] == [False, False, False]
    # the same difference alone in its family: Holm changes nothing and p = 0.030 < 0.05 is a finding
    assert ledger.family("precision", [(triplet, pairwise)])[0].finding
    with pytest.raises(ValueError, match="tested already"):  # a family is corrected once, all together
        ledger.family("precision", [(ntxent, supcon)])
    rows = ledger.rows
    assert all(list(row) == Ledger.COLUMNS for row in rows)
    assert [(row["family"], row["a"], row["b"], row["a_group"], row["b_group"], row["test"]) for row in rows] == [
        (
            "findings, mnist",
            "triplet / simclr",
            "pairwise / simclr",
            "mnist-triplet-simclr",
            "mnist-pairwise-simclr",
            "paired, 2 seeds",
        ),
        (
            "findings, mnist",
            "ntxent / simclr",
            "supcon / simclr",
            "mnist-ntxent-simclr",
            "mnist-supcon-simclr",
            "paired, 2 seeds",
        ),
        (
            "findings, mnist",
            "triplet / none",
            "pairwise / simclr",
            "mnist-triplet-none",
            "mnist-pairwise-simclr",
            "one seed: untested",
        ),
        (
            "precision",
            "triplet / simclr",
            "pairwise / simclr",
            "mnist-triplet-simclr",
            "mnist-pairwise-simclr",
            "paired, 2 seeds",
        ),
    ]
    # CI 0.105 -+ 12.7062 x 0.005 = [0.041469, 0.168531]; the untested row leaves its numbers blank
    assert [
        (row["dataset"], row["diff"], row["ci_low"], row["ci_high"], row["p"], row["p_holm"], row["finding"])
        for row in rows
    ] == [
        (
            "mnist",
            0.105,
            pytest.approx(0.041469, abs=2e-6),
            pytest.approx(0.168531, abs=2e-6),
            pytest.approx(0.030292, abs=2e-6),
            pytest.approx(0.060585, abs=2e-6),
            "no",
        ),
        (
            "mnist",
            0.225,
            pytest.approx(-0.092655, abs=2e-6),
            pytest.approx(0.542655, abs=2e-6),
            pytest.approx(0.070447, abs=2e-6),
            pytest.approx(0.070447, abs=2e-6),
            "no",
        ),
        ("mnist", -0.305, "", "", "", "", "no"),
        (
            "mnist",
            0.105,
            pytest.approx(0.041469, abs=2e-6),
            pytest.approx(0.168531, abs=2e-6),
            pytest.approx(0.030292, abs=2e-6),
            pytest.approx(0.030292, abs=2e-6),
            "yes",
        ),
    ]


def test_a_group_belongs_to_the_family_of_what_trained_it():
    # SimCLR's ntxent takes the batch as negatives: label-free whatever pairs.negatives says; the protocol's
    # triplets pick label-aware negatives, random ones make it label-free
    assert group([0.5], "ntxent", "simclr").family == "label-free contrastive"
    assert group([0.5], "triplet", "simclr").family == "label-using contrastive"
    random_negatives = group([0.5], "triplet", "simclr").runs
    random_negatives[0]["study"]["overrides"] = {"pairs.negatives": "random"}
    assert Group(random_negatives).family == "label-free contrastive"
    assert group([0.5], "supcon", "simclr").family == "label-using contrastive"
    assert {kind: baseline_group(kind).family for kind in BASELINES} == {
        "raw_pixels": "raw pixels",
        "random_init": "random init",
        "supervised": "supervised ceiling",
        "supervised_tuned": "supervised ceiling",
        "kmeans_patches": "classical label-free",
        "random_patches": "classical label-free",
    }
    assert {baseline_group(kind).family for kind in BASELINES} | {
        "label-free contrastive",
        "label-using contrastive",
    } == set(FAMILIES)


def test_a_groups_width_is_how_many_features_its_probe_reads():
    backbone = {"probe": {"features": "backbone"}}
    assert group([0.5]).width == 32  # the protocol's embedding
    wide = group([0.5]).runs
    wide[0]["study"]["params"] = {"model": {"embedding_dim": 128}}
    assert Group(wide).width == 128
    on_backbone = group([0.5]).runs
    on_backbone[0]["study"]["params"] = backbone
    assert Group(on_backbone).width == BACKBONE_WIDTH == 256
    assert baseline_group("raw_pixels").width == 28 * 28  # mnist: 1 channel of 28 x 28
    assert baseline_group("raw_pixels", dataset="cifar10").width == 3 * 32 * 32
    assert baseline_group("raw_pixels", params=backbone).width == 256  # projected to the backbone's size
    assert baseline_group("kmeans_patches").width == 4 * 64  # 4 pooled quadrants x the protocol's 64 centroids
    assert baseline_group("random_patches", params={"patches": {"centroids": 100}}).width == 400
    assert baseline_group("supervised", params=backbone).width == 256 and baseline_group("random_init").width == 32


def test_cpu_minutes_are_training_time_times_the_machines_threads():
    runs = group([0.5, 0.6]).runs
    runs[0] |= {"train": {"train_time_s": 120.0}}
    runs[0]["study"]["machine"] = "AMD EPYC 7763 64-Core Processor, 8 threads, x86_64, avx2 fma"
    runs[1] |= {"train": {"train_time_s": 60.0}}  # a machine not recorded: 2 threads
    assert Group(runs).cpu_minutes == pytest.approx(9.0)  # (120 x 8 + 60 x 2) / 2 / 60
    one = group([0.5]).runs
    one[0] |= {"train": {"train_time_s": 90.0}}
    one[0]["study"]["machine"] = "Apple M2, 1 thread, arm64, no AVX"
    assert Group(one).cpu_minutes == pytest.approx(1.5)  # 90 x 1 / 60
    # a baseline trains inside its whole run: study.json's wall time (an upper bound); raw pixels train nothing
    assert baseline_group(
        "supervised", wall_s=30.0, machine="Intel Xeon, 4 threads, x86_64, avx512f"
    ).cpu_minutes == pytest.approx(2.0)  # 30 x 4 / 60
    assert baseline_group("kmeans_patches", seeds=(0, 1), wall_s=45.0).cpu_minutes == pytest.approx(1.5)  # 45 x 2 / 60
    assert baseline_group("raw_pixels", wall_s=30.0).cpu_minutes == 0.0


def test_a_precision_twin_is_a_study_scenario_changed_only_in_precision():
    assert is_precision_twin(group([0.9], "triplet", "simclr", variant="precision-bf16"))
    assert not is_precision_twin(group([0.9], "triplet", "simclr", variant="precision-bf16-negatives-hard"))
    assert not is_precision_twin(group([0.9], "triplet", "simclr", variant="precision-bf16", recipe="tuned"))
    assert not is_precision_twin(group([0.9], "ntxent", "simclr", variant="precision-bf16"))  # not one of the 12
    assert not is_precision_twin(group([0.9], "triplet", "simclr"))


def test_factor_effect_is_the_range_of_marginal_means_in_the_registrys_order():
    groups = [
        group([0.5], "pairwise", "simclr"),
        group([0.7], "triplet", "simclr"),
        group([0.5], "pairwise", "none"),
        group([0.9], "triplet", "none"),
    ]
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


@pytest.mark.parametrize(
    "loss, negatives, used",
    [
        ("triplet", "label_aware", True),
        ("triplet", "hard", True),
        ("triplet", "random", False),
        ("pairwise", "random", False),
        ("ntxent", "label_aware", False),
        ("supcon", "label_aware", True),
    ],
)
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
    used = {
        kind: Group([{"probe": {"top1": 0.5}, "study": BaselineRun("mnist", kind).fields()}]).labels_used
        for kind in BASELINES
    }
    assert used == {kind: baseline.uses_labels for kind, baseline in BASELINES.items()}
    assert used["supervised"] and used["supervised_tuned"] and not used["raw_pixels"] and not used["random_init"]


def test_the_studys_repeat_spread_is_the_gap_between_its_two_sheets_for_the_same_settings():
    low, high = study_repeat_spread()
    assert (round(low, 3), round(high, 3)) == (
        0.006,
        0.044,
    )  # triplet/cifar10/simclr 0.37 vs 0.364; mnist/none 0.77 vs 0.814


def test_a_param_added_after_a_run_was_made_has_the_protocols_value_for_it():
    run = group([0.5]).runs[0]
    run["study"]["params"] = {"model": {"arch": "vgg_small"}}  # recorded before `split` existed
    assert Group([run]).param("split.validation_per_class") == 0


def test_an_override_of_a_param_the_protocols_list_lacks_is_read_from_the_overrides():
    run = group([0.5]).runs[0]
    run["study"].update(params={"model": {"arch": "study"}}, overrides={"train.warmup_epochs": 1})
    assert Group([run]).param("train.warmup_epochs") == 1


def edit_json(path: Path, **fields) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def without(path: Path, name: str) -> None:
    data = json.loads(path.read_text())
    del data[name]
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda f: without(f / "study.json", "seed"), "study.json has no seed"),
        (lambda f: edit_json(f / "study.json", seed="0"), "study.json: seed is '0', not a whole number"),
        (lambda f: edit_json(f / "study.json", seed=True), "study.json: seed is True, not a whole number"),
        (lambda f: without(f / "study.json", "loss"), "study.json has no loss"),
        (
            lambda f: edit_json(f / "study.json", dataset="svhn"),
            "study.json: dataset 'svhn' is not one of mnist, cifar10, fashion_mnist",
        ),
        (lambda f: (f / "probe.json").unlink(), "no probe.json"),
        (
            lambda f: (f / "probe.json").write_text('{"top1": '),
            "probe.json is not valid JSON (Expecting value: line 1 column 10 (char 9))",
        ),
        (
            lambda f: (f / "probe.json").write_bytes(b"\xff"),
            "probe.json is not valid JSON ('utf-8' codec can't decode byte 0xff in position 0: invalid start byte)",
        ),
        (lambda f: (f / "probe.json").write_text("[0.9]"), "probe.json holds no JSON object"),
        (lambda f: edit_json(f / "probe.json", top1="abc"), "probe.json: top1 is 'abc', not a finite number"),
        (lambda f: edit_json(f / "probe.json", top1=float("nan")), "probe.json: top1 is nan, not a finite number"),
        (lambda f: edit_json(f / "probe.json", knn=float("inf")), "probe.json: knn is inf, not a finite number"),
        (
            lambda f: edit_json(f / "probe.json", shifted_top1={"3": "x"}),
            "probe.json: shifted_top1 is {'3': 'x'}, not an object of finite numbers",
        ),
        (lambda f: (f / "train.json").unlink(), "no train.json"),
        (
            lambda f: (f / "tsne.csv").write_text("x,y,class\n0,1,7\n2,3,seven\n"),
            "tsne.csv line 3: class 'seven' is not one of mnist's classes",
        ),
        (
            lambda f: (f / "tsne.csv").write_text("x,y,class\n0,abc,7\n"),
            "tsne.csv line 2: y is 'abc', not a finite number",
        ),
        (lambda f: (f / "confusion.csv").unlink(), "no confusion.csv"),
    ],
)
def test_a_damaged_run_folder_is_refused_saying_what_is_wrong(tmp_path, damage, problem):
    folder = write_scenario(tmp_path / "results", "triplet", "simclr", 0, 0.9)
    damage(folder)
    with pytest.raises(DamagedRun) as refused:
        read_run(folder)
    assert str(refused.value) == problem


def test_a_sound_folder_is_read_whole_its_csvs_as_columns(tmp_path):
    run = read_run(write_scenario(tmp_path / "results", "triplet", "simclr", 0, 0.9))
    assert run["probe"]["top1"] == 0.9 and run["train"]["train_time_s"] == 100.0
    assert run["tables"]["tsne.csv"]["class"][:3] == [0, 1, 2] and run["tables"]["confusion.csv"]["predicted"] == [
        0,
        1,
        1,
    ]
    assert "train_loss.csv" not in run["tables"]  # the report needs none; the importer refuses a scenario without it
    assert "tables" not in read_run(write_baseline(tmp_path / "results", "raw_pixels", 0, 0.8))


def test_load_leaves_out_what_it_cannot_read_only_where_it_can_say_so(tmp_path):
    results = tmp_path / "results"
    write_scenario(results, "triplet", "simclr", 0, 0.9)
    edit_json(write_scenario(results, "triplet", "simclr", 1, 0.8) / "probe.json", top1=None)
    (results / "mnist-triplet-simclr-s2.partial").mkdir()
    copy = results / "mnist-triplet-simclr-s0-again"
    copy.mkdir()
    for file in (results / "mnist-triplet-simclr-s0").iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    with pytest.raises(
        DataError,
        match=r"mnist-triplet-simclr-s0-again: seed 0 of mnist-triplet-simclr again "
        r"\(already read from mnist-triplet-simclr-s0\) \(and 2 more folders\)$",
    ):
        load(results)
    refused: list[str] = []
    scenarios, _ = load(results, refused)
    assert [run["folder"].name for run in scenarios["mnist-triplet-simclr"].runs] == ["mnist-triplet-simclr-s0"]
    assert refused == [
        f"{results}/mnist-triplet-simclr-s0-again: seed 0 of mnist-triplet-simclr again (already read from "
        "mnist-triplet-simclr-s0)",
        f"{results}/mnist-triplet-simclr-s1: probe.json: top1 is None, not a finite number",
        f"{results}/mnist-triplet-simclr-s2.partial: a run still being written (or interrupted while written)",
    ]
    with pytest.raises(DataError, match="^no results folder .*/nowhere \\(run the study first"):
        load(tmp_path / "nowhere")
