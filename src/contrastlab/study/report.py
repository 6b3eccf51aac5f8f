"""The study report: one table, the figures and generated findings, from the kept results alone.

    python -m contrastlab.study.report --results study/results --out report

It reads only the folders the study command keeps (so it also runs on a machine that never trained)
and writes `<out>/README.md`, `<out>/results.csv` and PNG figures, all into a folder beside `<out>` that replaces
it once complete (so a killed report leaves the old one whole). A damaged folder of results is skipped, named in one
line (exit status 1), and the report says it is partial. Scenarios are compared with the
published study (`published_results.csv`, copied from the study's report) and with the baselines of
the same dataset, all scored on the same probe split. This module only renders: the numbers come from
`contrastlab.study.results`, the pictures from `contrastlab.study.figures`.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

from contrastlab.infra.errors import FileError
from contrastlab.infra.files import one_line, write_csv, write_text
from contrastlab.infra.stage import alive, run_stage
from contrastlab.methods.baselines import BASELINES
from contrastlab.study import figures, verdict
from contrastlab.study.names import MAIN_AXES, PROTOCOL, Scenario
from contrastlab.study.results import (
    CLASSICAL,
    FACTORS,
    FAMILIES,
    METRICS,
    Group,
    Ledger,
    baseline,
    by_dataset,
    factor_effect,
    group_name,
    in_registry_order,
    is_main_scenario,
    is_precision_twin,
    is_recipe_cell,
    is_study_scenario,
    load,
    needed_text,
    ranking,
    shift_top1,
    study_repeat_spread,
    without_axes,
)
from contrastlab.study.stats import Comparison, seeds_needed


def fmt(group: Group, metric: str) -> str:
    """Mean ± the half-width of its 95% confidence interval over seeds; one seed has no interval and says so. A linear
    probe's metric is marked `verdict.UNCONVERGED` where a seed's probe stopped before converging (kNN fits nothing)."""
    half = group.ci(metric)
    mark = f" {verdict.UNCONVERGED}" if group.unconverged and metric != "knn" else ""
    return (f"{group.mean(metric):.4f} (1 seed)" if half is None else f"{group.mean(metric):.4f} ± {half:.4f}") + mark


def table(scenarios: dict[str, Group], baselines: dict[str, Group]) -> list[str]:
    """The Markdown table: scenarios, then baselines, per dataset (their numbers are rows of results.csv)."""
    lines = [
        "| dataset | scenario (loss / aug) | seeds | probe top-1 | study | Δ | reproduces | top-3 | study | kNN | "
        "study | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dataset in dict.fromkeys(g.dataset for g in [*scenarios.values(), *baselines.values()]):
        for group in [g for g in scenarios.values() if g.dataset == dataset]:
            ref = group.published()
            verdict = reproduces(group)
            cells = []
            for metric in METRICS:
                cells.append(fmt(group, metric))
                cells.append(f"{ref[metric]:.4f}" if ref else "")
                if metric == "top1":
                    cells += [f"{group.mean('top1') - ref['top1']:+.4f}" if ref else "", verdict]
            train_s = statistics.fmean(run["train"]["train_time_s"] for run in group.runs)
            lines.append(
                f"| {dataset} | {group.label} | {len(group.runs)} | " + " | ".join(cells) + f" | {train_s:.0f} |"
            )
        for group in [g for g in baselines.values() if g.dataset == dataset]:
            lines.append(
                f"| {dataset} | *baseline:* {group.label} | {len(group.runs)} | {fmt(group, 'top1')} | – | – | – | "
                f"{fmt(group, 'top3')} | – | {fmt(group, 'knn')} | – | – |"
            )
    return lines


def reproduces(group: Group) -> str:
    """ "yes" when our mean top-1 lies within the study's own run-to-run spread of its published number
    (its two runs of identical settings differ by up to `study_repeat_spread()`), else "better"/"worse"."""
    ref = group.published()
    if ref is None:
        return ""
    diff = group.mean("top1") - ref["top1"]
    return "yes" if abs(diff) <= study_repeat_spread()[1] else ("better" if diff > 0 else "worse")


def figures_section(scenarios: dict[str, Group], baselines: dict[str, Group], out: Path) -> list[str]:
    """Write the figures; return Markdown lines that show them."""
    grouped = by_dataset(scenarios)
    figures.top1(grouped, baselines, out / "top1.png")
    lines = [
        "### Probe top-1 of every scenario",
        "",
        "![top-1 of every scenario](top1.png)",
        "",
        "### t-SNE maps (first seed; panels as in the study's figures 10-13)",
        "",
    ]
    for dataset, groups in grouped.items():
        for loss in in_registry_order("loss", (g.setting("loss") for g in groups)):
            name = f"tsne_{dataset}_{loss}.png"
            figures.tsne_maps([g for g in groups if g.setting("loss") == loss], out / name)
            lines += [f"![t-SNE {dataset} {loss}]({name})", ""]
    lines += ["### Confusion matrices of the best scenario per dataset (summed over seeds)", ""]
    for dataset, groups in grouped.items():
        name = f"confusion_{dataset}.png"
        figures.confusion(max(groups, key=ranking), out / name)
        lines += [f"![confusion {dataset}]({name})", ""]
    return lines


def factor_findings(groups: list[Group]) -> list[str]:
    """The marginal means of each factor the groups vary, and which factor matters most."""
    effects = {factor: factor_effect(groups, factor) for factor in FACTORS}
    effects = {factor: effect for factor, effect in effects.items() if len(effect[1]) > 1}
    strongest = max(effects, key=lambda f: effects[f][0], default=None)
    lines = []
    for factor, (span, means) in effects.items():
        levels = ", ".join(f"{level} {value:.3f}" for level, value in means.items())
        lines.append(
            f"- {factor}: mean top-1 by level {levels} (range {span:.3f})"
            + (" — the factor that matters most here." if factor == strongest and len(effects) > 1 else ".")
        )
    return lines


def with_seeds_needed(test: Comparison) -> str:
    """The comparison, and for a tested one that is no finding how many seeds would tell a difference of its size
    apart (`contrastlab.study.stats.seeds_needed`)."""
    needed = "" if test.finding or not test.tested else needed_text(seeds_needed(test))
    return f"{test}" + (f"; {needed} seeds would tell a difference of this size apart" if needed else "")


def loss_pairs(groups: list[Group]) -> list[tuple[str, Group, Group]]:
    """For each augmentation, every pair of losses that ran with it: (aug, the later loss in the registry, the
    earlier)."""
    pairs = []
    for aug in in_registry_order("aug", (g.setting("aug") for g in groups)):
        by_loss = {g.setting("loss"): g for g in groups if g.setting("aug") == aug}
        for earlier, later in itertools.combinations(in_registry_order("loss", by_loss), 2):
            pairs.append((aug, by_loss[later], by_loss[earlier]))
    return pairs


def findings(ledger: Ledger, scenarios: dict[str, Group], baselines: dict[str, Group]) -> list[str]:
    lines = []
    for dataset, groups in by_dataset(scenarios).items():
        ranked = sorted(groups, key=ranking, reverse=True)
        best = ranked[0]
        losses = loss_pairs(groups)
        pairs = [(a, b) for _, a, b in losses]
        ids = [(id(a), id(b)) for a, b in pairs]
        runner_up = (
            [(best, ranked[1])]
            if len(ranked) > 1 and not {(id(best), id(ranked[1])), (id(ranked[1]), id(best))} & set(ids)
            else []
        )  # a pair the losses compare already is tested once
        claims = [*runner_up, *pairs]
        tested = dict(
            zip(((id(a), id(b)) for a, b in claims), ledger.family(f"findings, {dataset}", claims), strict=True)
        )
        lines += [f"**{dataset}**", ""]
        if len(ranked) < 2:
            runner = "."
        elif (id(best), id(ranked[1])) in tested:
            runner = f"; minus the runner-up {ranked[1].label}: {with_seeds_needed(tested[id(best), id(ranked[1])])}."
        else:  # tested the other way round among the losses below
            runner = f"; the runner-up {ranked[1].label} is compared with it below."
        lines.append(f"- Best: {best.label}, probe top-1 {fmt(best, 'top1')} over {len(best.runs)} seed(s){runner}")
        lines += factor_findings(groups)
        lines += [
            f"- {aug}: {a.setting('loss')} - {b.setting('loss')} = {with_seeds_needed(test)}."
            for aug, a, b in losses
            for test in [tested[id(a), id(b)]]
        ]
        raw = baseline(baselines, dataset, "raw_pixels")
        if raw:
            beat = [g for g in groups if g.mean("top1") > raw.mean("top1")]
            lines.append(
                f"- {len(beat)} of {len(groups)} scenarios have a higher mean than raw pixels ({raw.mean('top1'):.4f}; "
                "tested in the representations section)."
            )
        supervised = baseline(baselines, dataset, "supervised")
        if supervised:
            lines.append(
                f"- The supervised ceiling is {supervised.mean('top1'):.4f}; the best scenario reaches "
                f"{best.mean('top1') / supervised.mean('top1'):.0%} of it."
            )
        compared = [(g, ref) for g in groups if (ref := g.published())]
        if compared:
            above = sum(g.mean("top1") > ref["top1"] for g, ref in compared)
            lines.append(f"- {above} of {len(compared)} scenarios have a higher mean than the published study's top-1.")
            low, high = study_repeat_spread()
            within = [(g, g.mean("top1") - ref["top1"]) for g, ref in compared if reproduces(g) == "yes"]
            short = [f"{g.label} {diff:+.3f}" for g, diff in within if diff < 0]
            lines.append(
                f"- {len(within)} of {len(compared)} reproduce the published top-1 within the study's own "
                f"repeat spread ({low:.3f}-{high:.3f}: its two results sheets for the same triplet settings, "
                "study_repeats.csv)" + (f"; the shortfalls among them: {', '.join(short)}." if short else ".")
            )
        lines.append("")
    return lines


def fmt_shift(group: Group, pixels: int) -> str:
    """`shift_top1` for a table cell, blank where it was not measured."""
    found = shift_top1(group, pixels)
    return "" if found is None else f"{found:.4f}"


def beyond_section(
    ledger: Ledger, beyond: dict[str, Group], main: dict[str, Group], baselines: dict[str, Group], out: Path
) -> list[str]:
    """Methods beyond the study's 12 scenarios, each against the best of the 12 trained with the same recipe,
    so that the method's effect shows apart from the recipe's."""
    methods = [g for g in beyond.values() if not is_recipe_cell(g) and g.param("probe.features") == "embedding"]
    if not methods:
        (out / "top1_beyond.png").unlink(missing_ok=True)  # left from an earlier report
        return []
    lines = [
        "## Beyond the study",
        "",
        'Other losses and negatives (under any recipe), with the same probe; "vs best study scenario" compares '
        "with the best of the study's scenarios that ran on the same dataset with the same recipe (with the "
        "protocol's where that recipe ran none, said so), as the mean difference with its test. Shift "
        "columns: the probe's top-1 on held-out test images shifted horizontally by ±3 / ±6 pixels.",
        "",
        "| dataset | method | seeds | probe top-1 | top-3 | kNN | shift ±3 | shift ±6 | vs best study scenario |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    shown: dict[str, list[Group]] = defaultdict(list)
    for dataset in dict.fromkeys(g.dataset for g in methods):
        twelve: dict[str, list[Group]] = defaultdict(list)  # recipe -> the study's scenarios trained with it
        for g in [*main.values(), *beyond.values()]:
            if g.dataset == dataset and is_study_scenario(g):
                twelve[g.recipe].append(g)
        best_of = {recipe: max(groups, key=ranking) for recipe, groups in twelve.items()}
        here = [g for g in methods if g.dataset == dataset]
        reference = {id(g): best_of.get(g.recipe, best_of.get(PROTOCOL)) for g in here}
        used = list({id(r): r for r in reference.values() if r is not None}.values())
        compared = [(g, ref) for g in here if (ref := reference[id(g)]) is not None]
        tested = dict(
            zip(
                (id(g) for g, _ in compared),
                ledger.family(f"beyond the study, {dataset}", compared),
                strict=True,
            )
        )
        for g in sorted([*here, *used], key=lambda g: g.mean("top1"), reverse=True):
            r = reference.get(id(g))
            if id(g) not in reference:
                versus = f"(best of {len(twelve[g.recipe])} study scenarios run with the {g.recipe} recipe)"
            elif r is None:
                versus = ""
            else:
                other = f" (protocol recipe: {g.recipe} ran no study scenario here)" if r.recipe != g.recipe else ""
                versus = f"{tested[id(g)]} vs {r.label}{other}"
            lines.append(
                f"| {dataset} | {g.label} | {len(g.runs)} | {fmt(g, 'top1')} | {fmt(g, 'top3')} | "
                f"{fmt(g, 'knn')} | {fmt_shift(g, 3)} | {fmt_shift(g, 6)} | {versus} |"
            )
            shown[dataset].append(g)
    lines.append("")
    for dataset in shown:
        best = max((g for g in methods if g.dataset == dataset), key=ranking)
        lines.append(f"- {dataset}: the best new method is {best.label}, {fmt(best, 'top1')}.")
    figures.top1(shown, baselines, out / "top1_beyond.png", published=False, is_reference=is_study_scenario)
    return [*lines, "", "![top-1 beyond the study](top1_beyond.png)", ""]


def recipe_section(ledger: Ledger, scenarios: dict[str, Group], baselines: dict[str, Group]) -> list[str]:
    """The study's scenarios trained with each recipe side by side: the recipe's effect apart from
    the effect of loss and augmentation."""
    cells: dict[tuple[str, str, str], dict[str, Group]] = defaultdict(dict)
    for g in scenarios.values():
        if is_study_scenario(g):
            cells[(g.dataset, g.setting("loss"), g.setting("aug"))][g.recipe] = g
    found = {recipe for by_recipe in cells.values() for recipe in by_recipe}
    others = sorted(found - {PROTOCOL})
    if PROTOCOL not in found or not others:
        return []
    recipes = [PROTOCOL, *others]
    lines = [
        "## Training recipes",
        "",
        "The study's scenarios with the protocol's recipe (plain SGD, fixed lr, sigmoid head) and with "
        + ", ".join(f"`{r}`" for r in others)
        + " (`study.recipes` in params.yaml): probe top-1, mean ± 95% CI "
        "over seeds; Δ = recipe - protocol with its test.",
        "",
        "| dataset | loss / aug | " + " | ".join(recipes) + " | " + " | ".join(f"Δ {r}" for r in others) + " |",
        "|---|---|" + "---|" * (len(recipes) + len(others)),
    ]
    compared = [
        (by_recipe[r], by_recipe[PROTOCOL])
        for by_recipe in cells.values()
        for r in others
        if r in by_recipe and PROTOCOL in by_recipe
    ]
    tested = dict(zip((id(g) for g, _ in compared), ledger.family("training recipes", compared), strict=True))
    for (dataset, loss, aug), by_recipe in cells.items():
        row = [fmt(by_recipe[r], "top1") if r in by_recipe else "" for r in recipes]
        row += [str(tested[id(by_recipe[r])]) if r in by_recipe and id(by_recipe[r]) in tested else "" for r in others]
        lines.append(f"| {dataset} | {loss} / {aug} | " + " | ".join(row) + " |")
    lines.append("")
    for dataset in dict.fromkeys(dataset for dataset, _, _ in cells):
        raw = baseline(baselines, dataset, "raw_pixels")
        for recipe in recipes:
            groups = [
                by_recipe[recipe] for (d, _, _), by_recipe in cells.items() if d == dataset and recipe in by_recipe
            ]
            if not groups:  # this recipe has not run on this dataset (yet)
                continue
            best = max(groups, key=ranking)
            beat = (
                f"; {sum(g.mean('top1') > raw.mean('top1') for g in groups)} of {len(groups)} have a higher mean "
                f"than raw pixels ({raw.mean('top1'):.4f})"
                if raw
                else ""
            )
            lines.append(
                f"- {dataset}, {recipe}: best {best.setting('loss')} / {best.setting('aug')} {fmt(best, 'top1')}{beat}."
            )
    return [*lines, ""]


def precision_section(ledger: Ledger, main: dict[str, Group], twins: dict[str, Group]) -> list[str]:
    """The study's scenarios trained at another precision beside the same scenarios in fp32: whether the probe
    moves significantly, and what the precision saves in time on the machine it ran on."""
    pairs = [
        (twin, fp32)
        for twin in twins.values()
        if (fp32 := main.get(Scenario(twin.dataset, twin.setting("loss"), twin.setting("aug")).group))
    ]
    if not pairs:
        return []
    lines = [
        "## Precision: the study's scenarios at another `train.precision`",
        "",
        "The same scenarios (protocol recipe) trained at another precision, against fp32's seeds (a single run "
        "taken to vary as fp32's seeds do). Times: training seconds (train.json) and whole runs (`dvc exp run`, "
        "study.json), fp32's averaged over its seeds on the same machine (made with the code of their day); "
        "times from different CPUs do not compare.",
        "",
        "| dataset | loss / aug | precision | seeds | top-1 | fp32 top-1 | Δ | train s | fp32 train s | fp32 / it |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    totals: dict[str, dict] = defaultdict(
        lambda: {"n": 0, "beyond": [], "wall": 0.0, "fp32 wall": 0.0, "fp32 runs": True}
    )
    tested = ledger.family("precision", pairs, one_seed_varies_alike=True)
    for (twin, fp32), test in zip(pairs, tested, strict=True):
        precision, where = twin.param("train.precision"), machine_of(twin.runs[0])
        same_machine = [run for run in fp32.runs if machine_of(run) == where]
        train_s = statistics.fmean(run["train"]["train_time_s"] for run in twin.runs)
        fp32_train_s = statistics.fmean(run["train"]["train_time_s"] for run in same_machine) if same_machine else None
        total = totals[precision]
        total["n"] += 1
        if test.finding:
            total["beyond"].append(f"{twin.dataset} {fp32.label} {twin.mean('top1') - fp32.mean('top1'):+.4f}")
        total["wall"] += statistics.fmean(run["study"]["wall_s"] for run in twin.runs)
        total["fp32 runs"] &= bool(same_machine)
        total["fp32 wall"] += statistics.fmean(run["study"]["wall_s"] for run in same_machine) if same_machine else 0.0
        lines.append(
            f"| {twin.dataset} | {fp32.label} | {precision} | {len(twin.runs)} | {fmt(twin, 'top1')} | "
            f"{fmt(fp32, 'top1')} | {test} | {train_s:.0f} | "
            + (f"{fp32_train_s:.0f} | {fp32_train_s / train_s:.2f}x |" if fp32_train_s else "| |")
        )
    lines.append("")
    for precision, total in totals.items():
        beyond = f" (different: {'; '.join(total['beyond'])})" if total["beyond"] else ""
        wall = f"; the {total['n']} runs took {total['wall'] / 60:.0f} min of wall time"
        if total["fp32 runs"]:
            wall += (
                f" against fp32's {total['fp32 wall'] / 60:.0f} min on the same machine "
                f"({total['fp32 wall'] / total['wall']:.2f}x)"
            )
        lines.append(
            f"- {precision}: top-1 not significantly different from fp32's on {total['n'] - len(total['beyond'])} "
            f"of {total['n']} scenarios{beyond}{wall}."
        )
    return [*lines, ""]


REPRESENTATION_COLUMNS = [
    "dataset",
    "arch",
    "loss",
    "aug",
    "negatives",
    "recipe",
    "features",
    "labels_used",
    "seeds",
    "top1_mean",
    "top1_std",
    "knn_mean",
    "epochs",
    "train_time_s",
]

# The aims for the best mean top-1 (dataset -> (what, threshold, which groups count)).
AIMS = {
    "mnist": [("a label-free method", 0.99, lambda g: not g.labels_used), ("the best method", 0.993, lambda g: True)],
    "cifar10": [
        ("a label-free method", 0.70, lambda g: not g.labels_used),
        ("the best method on the study's encoder", 0.60, lambda g: g.param("model.arch") == "study"),
    ],
}


def representation_row(group: Group) -> list:
    """One row of representations.csv: what was trained and probed, and how well (mean over seeds). The recipe
    column adds the training settings the run changed beyond its recipe (`adamw_onecycle (temperature-0.2)`;
    a baseline has no recipe of the study's, only those settings: `(batch_size-256)`)."""
    is_baseline = group.is_baseline
    changed = without_axes(group.variant, "arch", "features", "negatives", "epochs")
    recipe = " ".join(part for part in ("" if is_baseline else group.recipe, f"({changed})" if changed else "") if part)
    trained = [run["train"] for run in group.runs if "train" in run]
    return [
        group.dataset,
        group.param("model.arch"),
        f"baseline:{group.setting('baseline')}" if is_baseline else group.setting("loss"),
        "" if is_baseline else group.setting("aug"),
        "" if is_baseline else group.param("pairs.negatives"),
        recipe,
        group.param("probe.features"),
        "yes" if group.labels_used else "no",
        len(group.runs),
        round(group.mean("top1"), 4),
        round(group.std("top1"), 4) if len(group.runs) > 1 else "",
        round(group.mean("knn"), 4),
        trained[0].get("epochs", "") if trained else "",
        round(statistics.fmean(t["train_time_s"] for t in trained), 1) if trained else "",
    ]


TUNED = "tuned"  # the recipe of `study.recipes` chosen for the 12 scenarios (issue 5's sweep)
BACKBONE = "features-backbone"  # the variant the `backbone` grid (or `--set probe.features=backbone`) names


def trained_epochs(group: Group) -> int | None:
    """How many epochs the group's runs trained (None for a run that trains nothing)."""
    return group.runs[0].get("train", {}).get("epochs")


def aim_evidence(best: Group, groups: list[Group]) -> str:
    """What the results say about a missed aim: the ceiling of the best method's encoder (trained with labels,
    probed on the same features), how its top-1 moved with training length, and the same method on other
    encoders."""

    def same_method(g: Group, *free_axes: str) -> bool:
        return (
            not g.is_baseline
            and g.dataset == best.dataset
            and g.recipe == best.recipe
            and (g.setting("loss"), g.setting("aug")) == (best.setting("loss"), best.setting("aug"))
            and without_axes(g.variant, *free_axes) == without_axes(best.variant, *free_axes)
        )

    arch, features = best.param("model.arch"), best.param("probe.features")
    notes = []
    ceilings = [
        g
        for g in groups
        if g.is_baseline
        and g.dataset == best.dataset
        and g.param("model.arch") == arch
        and g.param("probe.features") == features
        and BASELINES[g.setting("baseline")].uses_labels
    ]
    if ceilings:
        ceiling = max(ceilings, key=ranking)
        notes.append(f"the {arch} encoder trained with labels ({ceiling.label}) reaches {fmt(ceiling, 'top1')}")
    lengths = sorted(
        # a scenario trains, so its epochs are never None
        (
            (cast(int, trained_epochs(g)), g)
            for g in groups
            if same_method(g, "epochs") and g.param("model.arch") == arch
        ),
        key=lambda pair: pair[0],
    )
    if len(lengths) > 1:
        notes.append("by training length " + ", ".join(f"{e} epochs {g.mean('top1'):.4f}" for e, g in lengths))
    encoders = [
        g
        for g in groups
        if same_method(g, "arch", "epochs")
        and trained_epochs(g) == trained_epochs(best)
        and g.param("model.arch") != arch
    ]
    if encoders:
        notes.append(
            "at the same length on "
            + ", ".join(f"the {g.param('model.arch')} encoder {fmt(g, 'top1')}" for g in encoders)
        )
    return f" Evidence: {'; '.join(notes)}." if notes else ""


def epoch_curves(scenarios: dict[str, Group]) -> dict[str, dict[str, list[tuple[int, float, float]]]]:
    """dataset -> method -> [(epochs, mean top-1, its 95% CI half-width or 0)] for every method that ran with two or
    more training lengths and otherwise the same settings (the grid's other axes and the recipe)."""
    runs_by_method: dict[tuple, dict[int, Group]] = defaultdict(dict)
    for g in scenarios.values():
        epochs = trained_epochs(g)
        if epochs is None:
            continue
        settings = (g.dataset, g.setting("loss"), g.setting("aug"), without_axes(g.variant, "epochs"), g.recipe)
        known = runs_by_method[settings].get(epochs)
        if known is None or len(g.runs) > len(known.runs):  # two groups of the same settings and length: more seeds
            runs_by_method[settings][epochs] = g
    curves: dict[str, dict[str, list[tuple[int, float, float]]]] = defaultdict(dict)
    for (dataset, loss, aug, variant, recipe), by_epochs in runs_by_method.items():
        if len(by_epochs) > 1:
            label = " / ".join(part for part in (loss, aug, variant, recipe) if part)
            curves[dataset][label] = [
                (e, by_epochs[e].mean("top1"), by_epochs[e].ci("top1") or 0.0) for e in sorted(by_epochs)
            ]
    return curves


def representations_section(
    ledger: Ledger, scenarios: dict[str, Group], baselines: dict[str, Group], out: Path
) -> list[str]:
    """Every scenario and baseline as a row of representations.csv; the study's scenarios probed on the
    embedding and on the backbone side by side, each against the random-init encoder on the same features;
    the aims' status."""
    groups = [*scenarios.values(), *baselines.values()]
    write_csv(out / "representations.csv", REPRESENTATION_COLUMNS, [representation_row(g) for g in groups])
    lines = [
        "## Representations: the embedding and the backbone",
        "",
        "`probe.features: backbone` probes the encoder's last hidden feature map averaged over its positions "
        "(256 features for every arch) instead of the embedding the loss sees. A wider probe is not by itself "
        "a better representation, so each is compared with the random-init encoder *on the same features* "
        "(gain = scenario - random init), and raw pixels are projected to the same 256 dimensions at random. "
        "All rows: [representations.csv](representations.csv).",
        "",
    ]
    pairs = []
    for g in scenarios.values():
        if not (is_main_scenario(g) and g.param("probe.features") == "embedding"):
            continue
        twin = next(
            (
                h
                for h in scenarios.values()
                if h.param("probe.features") == "backbone"
                and h.recipe == g.recipe
                and h.variant == BACKBONE
                and (h.dataset, h.setting("loss"), h.setting("aug")) == (g.dataset, g.setting("loss"), g.setting("aug"))
            ),
            None,
        )
        if twin is not None:
            pairs.append((g, twin))
    if pairs:
        lines += [
            f"The study's 12 scenarios (protocol recipe) probed both ways; the `{TUNED}` recipe's embedding "
            "is the third way to beat raw pixels (each against raw pixels on its own kind of features).",
            "",
            "| dataset | loss / aug | embedding top-1 | gain over random init | backbone top-1 | gain over random "
            f"init | backbone - embedding | {TUNED} recipe top-1 | beats raw pixels with |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        misses = []
        rows = []
        for g, twin in pairs:
            init = [baseline(baselines, g.dataset, "random_init", variant) for variant in ("", BACKBONE)]
            raw = [baseline(baselines, g.dataset, "raw_pixels", variant) for variant in ("", BACKBONE)]
            tuned = scenarios.get(Scenario(g.dataset, g.setting("loss"), g.setting("aug"), recipe=TUNED).group)
            ways = [
                (x, r, name)
                for x, r, name in (
                    (g, raw[0], "embedding"),
                    (twin, raw[1], "backbone"),
                    (tuned, raw[0], f"{TUNED} recipe"),
                )
                if x
            ]
            rows.append((g, twin, init, tuned, ways))
        # one family: every way of every scenario against raw pixels, and every backbone - embedding difference
        claims = {
            "representations vs raw pixels": [(x, r) for *_, ways in rows for x, r, _ in ways if r],
            "backbone - embedding": [(twin, g) for g, twin, *_ in rows],
        }
        tested = {
            (id(a), id(b)): c
            for name, pairs in claims.items()
            for (a, b), c in zip(pairs, ledger.family(name, pairs), strict=True)
        }
        for g, twin, init, tuned, ways in rows:
            gains = [
                f"{x.mean('top1') - r.mean('top1'):+.4f}" if r else "" for x, r in zip((g, twin), init, strict=True)
            ]
            beats = [
                name + (" (one seed)" if not tested[id(x), id(r)].tested else "")
                for x, r, name in ways
                if r
                and x.mean("top1") > r.mean("top1")
                and (tested[id(x), id(r)].finding or not tested[id(x), id(r)].tested)
            ]
            unknown = any(not r for _, r, _ in ways)  # a raw-pixels baseline has not run yet
            higher = any(r and x.mean("top1") > r.mean("top1") for x, r, _ in ways)
            verdict = ", ".join(beats) or (
                "not known yet: a raw-pixels baseline is missing"
                if unknown
                else "none significantly"
                if higher
                else "none"
            )
            if verdict.startswith("none"):
                misses.append(
                    f"{g.dataset} {g.label}: "
                    + ", ".join(
                        f"{name} {x.mean('top1'):.4f} vs {r.mean('top1'):.4f}"
                        + (" (higher, not significantly)" if x.mean("top1") > r.mean("top1") else "")
                        for x, r, name in ways
                        if r is not None  # all of them: a missing raw-pixels baseline says "not known yet"
                    )
                    + (f"; training moved the backbone {gains[1]} from the random-init encoder's" if gains[1] else "")
                )
            lines.append(
                f"| {g.dataset} | {g.setting('loss')} / {g.setting('aug')} | {fmt(g, 'top1')} | {gains[0]} | "
                f"{fmt(twin, 'top1')} | {gains[1]} | {tested[id(twin), id(g)]} | "
                f"{fmt(tuned, 'top1') if tuned else ''} | {verdict} |"
            )
        lines.append("")
        lines += [f"- Beats raw pixels significantly in none of the ways: {miss}." for miss in misses]
        for dataset in dict.fromkeys(g.dataset for g, _ in pairs):
            cells = [
                f"{kind} {fmt(b, 'top1')}"
                for variant in ("", BACKBONE)
                for kind in BASELINES
                if (b := baseline(baselines, dataset, kind, variant))
            ]
            lines.append(
                f"- {dataset} baselines (on the protocol's features, then on 256 backbone-sized ones): "
                + "; ".join(cells)
                + "."
            )
        lines.append("")
    curves = epoch_curves(scenarios)
    if curves:
        figures.top1_by_epochs(curves, out / "top1_by_epochs.png")
        lines += [
            "### Probe top-1 against training epochs",
            "",
            "Methods trained for several lengths, everything else equal (mean and its 95% CI over seeds as error "
            "bars):",
            "",
            "![top-1 against epochs](top1_by_epochs.png)",
            "",
        ]
        for dataset, methods in curves.items():
            for label, points in methods.items():
                lines.append(f"- {dataset}, {label}: " + ", ".join(f"{e} epochs {m:.4f}" for e, m, _ in points) + ".")
        lines.append("")
    else:
        (out / "top1_by_epochs.png").unlink(missing_ok=True)  # left from an earlier report
    lines += ["**Aims** (mean top-1 over seeds; best group found so far among all results):", ""]
    for dataset, aims in AIMS.items():
        for what, threshold, counts in aims:
            found = [g for g in groups if g.dataset == dataset and counts(g) and not g.is_baseline]
            if not found:
                lines.append(f"- {dataset}, {what} >= {threshold}: no result yet.")
                continue
            best = max(found, key=ranking)
            met = best.mean("top1") >= threshold
            verdict = "met" if met else f"missed by {threshold - best.mean('top1'):.4f}"
            lines.append(
                f"- {dataset}, {what} >= {threshold}: {verdict}; best {best.label} "
                f"({best.param('model.arch')} encoder, {best.param('probe.features')}) {fmt(best, 'top1')}."
                + ("" if met else aim_evidence(best, groups))
            )
    lines += supervised_aim(groups, "cifar10")
    return [*lines, ""]


def supervised_aim(groups: list[Group], dataset: str) -> list[str]:
    """The aim "SupCon or hard negatives >= the supervised baseline of the same encoder", per arch: the best such
    method against the best supervised baseline of its arch, probed on the same features."""
    lines = []
    for arch in sorted({g.param("model.arch") for g in groups if g.dataset == dataset}):
        mine = [g for g in groups if g.dataset == dataset and g.param("model.arch") == arch]
        rivals = [
            g
            for g in mine
            if not g.is_baseline and (g.setting("loss") == "supcon" or g.param("pairs.negatives") == "hard")
        ]
        if not rivals:
            continue
        best = max(rivals, key=ranking)
        ceilings = [
            g
            for g in mine
            if g.is_baseline
            and BASELINES[g.setting("baseline")].uses_labels
            and g.param("probe.features") == best.param("probe.features")
        ]
        if not ceilings:
            continue
        ceiling = max(ceilings, key=ranking)
        gap = best.mean("top1") - ceiling.mean("top1")
        lines.append(
            f"- {dataset}, SupCon or hard negatives >= the supervised baseline of the same encoder ({arch}): "
            f"{'met' if gap >= 0 else f'missed by {-gap:.4f}'}; best {best.label} {fmt(best, 'top1')} "
            f"vs {ceiling.label} {fmt(ceiling, 'top1')} ({best.param('probe.features')})."
        )
    return lines


def differing_settings(group: Group, candidates: list[Group]) -> str:
    """ "<setting> <value>, ..." for the settings of `group` that differ between the candidates (a temperature,
    say), not the held-out split or features they all share."""
    overrides = [g.runs[0]["study"].get("overrides", {}) for g in candidates]
    own = group.runs[0]["study"].get("overrides", {})
    return ", ".join(
        f"{path.rsplit('.', 1)[-1]} {value}"
        for path, value in own.items()
        if path not in (*MAIN_AXES, "seed") and any(o.get(path) != value for o in overrides)
    )


def candidate_label(group: Group, candidates: list[Group]) -> str:
    """ "<loss> / <aug>[ / <differing settings>][ (<recipe> recipe)]"."""
    return group.described_by(differing_settings(group, candidates))


HELD_OUT = {
    "split.validation_per_class",
    "pairs.anchors_per_class",
    "seed",
}  # where a held-out run and its twin may differ


def trained_alike(a: Group, b: Group) -> bool:
    """Whether `a` and `b` trained the same way apart from the held-out split (its images taken out of training:
    `split.validation_per_class` and the `pairs.anchors_per_class` that leaves): a held-out candidate and its
    twin on the test split (the `chosen` grid)."""

    def value(g: Group, path: str):
        try:
            return g.param(path)
        except KeyError:  # a param neither recorded nor in the protocol's list: equal to nothing
            return object()

    paths = {path for g in (a, b) for path in g.runs[0]["study"].get("overrides", {})} - HELD_OUT
    return a.recipe == b.recipe and all(value(a, path) == value(b, path) for path in paths)


def on_test_split(ledger: Ledger, winner: Group, loser: Group, tested: dict[str, Group]) -> str:
    """ " (on the test split: ...)" comparing the test-split twins of two held-out candidates; "" unless both ran
    there."""
    twins = [
        max(
            (g for g in tested.values() if not g.is_baseline and trained_alike(g, held_out)),
            key=lambda g: len(g.runs),
            default=None,
        )
        for held_out in (winner, loser)
    ]
    won, lost = twins
    if won is None or lost is None:
        return ""
    name = (
        "held-out choice on the test split: "  # named by the held-out pair, which is chosen once
        f"{group_name(winner.runs[0]['study'])} vs {group_name(loser.runs[0]['study'])}"
    )
    return f" (on the test split: {fmt(won, 'top1')} vs {fmt(lost, 'top1')}, {ledger.family(name, [(won, lost)])[0]})"


def method_choices(ledger: Ledger, validation: dict[str, Group], tested: dict[str, Group]) -> list[str]:
    """Per method (dataset, arch, loss): the best held-out candidate, and which others fall below it by more
    than seeds alone move a single run: 2 x sqrt(2) x the method's seed std on the test split (two runs of one
    seed each differ by sqrt(2) sigma, give or take), pooled over its groups with several seeds there (on the
    best's features where it has any): three seeds of one group alone give a std that may be half or twice sigma."""
    methods: dict[tuple, list[Group]] = defaultdict(list)
    for g in validation.values():
        if not g.is_baseline:
            methods[(g.dataset, g.param("model.arch"), g.setting("loss"))].append(g)
    lines = []
    for (dataset, arch, loss), candidates in sorted(methods.items()):
        if len(candidates) < 2:
            continue
        candidates.sort(key=lambda g: -g.mean("top1"))
        best = candidates[0]
        named = {id(g): differing_settings(g, candidates) or g.label for g in candidates}
        head = f"- {dataset} / {arch} / {loss}: best of {len(candidates)} {named[id(best)]} ({best.mean('top1'):.4f})"
        seeded = [
            g
            for g in tested.values()
            if not g.is_baseline
            and len(g.runs) > 1
            and g.std("top1") > 0
            and g.dataset == dataset
            and g.param("model.arch") == arch
            and g.setting("loss") == loss
        ]
        if not seeded:
            lines.append(
                f"{head}; no run of it with several seeds on the test split, so no spread to judge the "
                f"others by (lowest {candidates[-1].mean('top1'):.4f})."
            )
            continue
        features = best.param("probe.features")
        seeded = [g for g in seeded if g.param("probe.features") == features] or seeded
        freedom = sum(len(g.runs) - 1 for g in seeded)
        pooled = (sum((len(g.runs) - 1) * g.std("top1") ** 2 for g in seeded) / freedom) ** 0.5
        bar = 2 * 2**0.5 * pooled
        below = [g for g in candidates[1:] if best.mean("top1") - g.mean("top1") > bar]
        spread = (
            f"one run's seed spread {bar:.4f} (2√2 × the std {pooled:.4f} pooled over {len(seeded)} "
            f"{'group' if len(seeded) == 1 else 'groups'} of it on the test split, "
            f"{sum(len(g.runs) for g in seeded)} runs)"
        )
        if below:
            lines.append(
                f"{head}; below it by more than {spread}: "
                + ", ".join(
                    f"{named[id(g)]} ({g.mean('top1'):.4f}){on_test_split(ledger, best, g, tested)}" for g in below
                )
                + f"; the other {len(candidates) - 1 - len(below)} within it."
            )
        else:
            lines.append(
                f"{head}; all within {best.mean('top1') - candidates[-1].mean('top1'):.4f} of it, less than "
                f"{spread}: no setting is told apart from another."
            )
    return (
        [
            "Chosen per method (one seed each, so a setting counts as worse only by more than one run's seed spread):",
            "",
            *lines,
            "",
        ]
        if lines
        else []
    )


def validation_section(ledger: Ledger, validation: dict[str, Group], tested: dict[str, Group]) -> list[str]:
    """Runs probed on held-out training images (`split.validation_per_class`), where recipes are chosen: kept
    apart from every test-set number above."""
    if not validation:
        return []
    lines = [
        "## Recipe selection on the held-out validation split",
        "",
        "Trained without the last `split.validation_per_class` training images of each class and probed on "
        "those (never on the test set), best first per dataset and arch, with the baselines on the same images.",
        "",
        "| dataset | arch | run | labels used | seeds | validation top-1 | kNN | epochs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    scenarios = [g for g in validation.values() if not g.is_baseline]
    baselines = [g for g in validation.values() if g.is_baseline]
    for g in sorted(validation.values(), key=lambda g: (g.dataset, g.param("model.arch"), -g.mean("top1"))):
        epochs = g.runs[0].get("train", {}).get("epochs", "")
        run = (
            ", ".join(filter(None, (f"*baseline:* {g.label}", differing_settings(g, baselines))))
            if g.is_baseline
            else candidate_label(g, scenarios)
        )
        lines.append(
            f"| {g.dataset} | {g.param('model.arch')} | {run} | {'yes' if g.labels_used else 'no'} | "
            f"{len(g.runs)} | {fmt(g, 'top1')} | {fmt(g, 'knn')} | {epochs} |"
        )
    return [*lines, "", *method_choices(ledger, validation, tested)]


def machine_of(run: dict) -> str:
    return run["study"].get("machine", "a machine not recorded")


def timing(main: dict[str, Group], beyond: dict[str, Group], baselines: dict[str, Group]) -> list[str]:
    """Wall times, per machine: runs made on different CPUs are not comparable."""
    runs = [run for g in [*main.values(), *beyond.values(), *baselines.values()] for run in g.runs]
    total = sum(run["study"]["wall_s"] for run in runs)
    lines = [f"- Total wall time of all {len(runs)} runs (scenarios, baselines and beyond): {total / 3600:.2f} h."]
    for where in dict.fromkeys(machine_of(run) for run in runs):
        here = {
            key: {run["study"]["seed"]: run for run in g.runs if machine_of(run) == where} for key, g in main.items()
        }
        there = [run["study"]["wall_s"] for run in runs if machine_of(run) == where]
        lines.append(f"- On {where} ({len(there)} runs, {sum(there) / 3600:.2f} h):")
        complete = sorted(set.intersection(*(set(seeds) for seeds in here.values()))) if here else []
        if complete:
            seed = complete[0]
            first = sum(seeds[seed]["study"]["wall_s"] for seeds in here.values())
            lines.append(f"  - the {len(main)} scenarios with one seed (seed {seed}): {first / 60:.0f} min.")
        per_scenario = [
            f"{main[key].dataset} {main[key].label} "
            f"{statistics.fmean(r['study']['wall_s'] for r in seeds.values()):.0f} s"
            for key, seeds in here.items()
            if seeds
        ]
        if per_scenario:
            lines.append(
                "  - mean wall time of one run per scenario (train + embed + t-SNE + probe + tracking, via "
                "`dvc exp run`): " + ", ".join(per_scenario) + "."
            )
        elif not complete:  # nothing to break down: one line
            lines[-1] = lines[-1].removesuffix(":") + "; none of them one of the study's 12 scenarios."
    return lines


RESULT_COLUMNS = [
    "dataset",
    "family",
    "configuration",
    "group",
    "protocol",
    "labels_used",
    "width",
    "seeds",
    "cpu_minutes",
    *(f"{m}_{x}" for m in METRICS for x in ("mean", "ci95", "std")),
    "unconverged_seeds",
    "study_top1",
    "reproduces",
    "leader",
]


def result_row(group: Group, leader: bool) -> dict:
    """One group of results.csv: the leaderboard's columns, every metric's mean, CI half-width and std."""
    row = verdict.leaderboard_row(group)
    del row["top1_mean"], row["top1_ci95"]
    for metric in METRICS:
        half = group.ci(metric)
        row |= {
            f"{metric}_mean": round(group.mean(metric), 4),
            f"{metric}_ci95": "" if half is None else round(half, 4),
            f"{metric}_std": round(group.std(metric), 4) if len(group.runs) > 1 else "",
        }
    published = group.published() if not group.is_baseline else None
    return {
        **row,
        "study_top1": published["top1"] if published else "",
        "reproduces": reproduces(group) if published else "",
        "leader": "yes" if leader else "no",
    }


# What the classical baselines' papers report on CIFAR-10 (a linear classifier on the same kind of features):
# baseline -> (their K, top-1, where). Neither paper reports MNIST.
PUBLISHED_CLASSICAL = {
    "kmeans_patches": (1600, 0.779, "Coates, Lee & Ng 2011, K = 1,600 (79.6% with K = 4,000)"),
    "random_patches": (2048, 0.816, "Thiry et al. 2021, K = 2,048 with their pooling and classifier"),
}


def classical_section(baselines: dict[str, Group]) -> list[str]:
    """The classical label-free baselines at each width and probe protocol, beside their published numbers, and
    why the two differ."""
    groups = sorted(
        (g for g in baselines.values() if g.setting("baseline") in CLASSICAL),
        key=lambda g: (g.dataset, g.setting("baseline"), g.width, g.param("probe.protocol")),
    )
    if not groups:
        return []
    lines = [
        "## Classical label-free baselines",
        "",
        "Features from one layer of whitened image patches, no network trained, no label seen "
        "(`src/contrastlab/methods/patches.py`), probed like every representation here:",
        "",
        "| dataset | baseline | K | width | protocol | seeds | top-1 | published (CIFAR-10) | CPU-min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for g in groups:
        _, top1, where = PUBLISHED_CLASSICAL[g.setting("baseline")]
        published = f"{top1:.3f} ({where})" if g.dataset == "cifar10" else "–"
        lines.append(
            f"| {g.dataset} | {g.setting('baseline')} | {g.param('patches.centroids')} | {g.width} | "
            f"{g.param('probe.protocol')} | {len(g.runs)} | {fmt(g, 'top1')} | {published} | "
            f"{g.cpu_minutes:.1f} |"
        )
    return [
        *lines,
        "",
        "They score below the published numbers for known reasons: the study protocol fits the probe on 8,000 "
        "test images, not the 50,000 training images (the `standard` rows fit on all of them); the probe is a "
        "logistic regression with C = 1 on standardised features, where Coates et al. tune an L2-SVM's penalty "
        "by cross-validation; Thiry et al. also pool 5 x 5 regions (a 9 x 9 grid, not 4 quadrants), add the "
        "opposite atoms and train a convolutional classifier on augmented images for 80 epochs; and both use "
        "wider dictionaries.",
        *(
            [
                "",
                f"{verdict.UNCONVERGED}: the probe of the widest features stopped at `probe.max_iter` steps before "
                "converging in some seed, so these numbers are most likely a little low (see the glossary).",
            ]
            if any(g.unconverged for g in groups)
            else []
        ),
        "",
    ]


def verdict_section(ledger: Ledger, groups: list[Group], out: Path) -> tuple[list[str], list[str]]:
    """The first screen: the leaderboard, the sentences, the summary figure and the glossary (the Markdown lines),
    and the sentences alone (README.md shows them too)."""
    leaders = verdict.leaders(groups)
    rows = [verdict.leaderboard_row(g) for g in leaders]
    for dataset in dict.fromkeys(g.dataset for g in leaders):
        here: dict[tuple[str, str], Group] = {}
        for g in leaders:  # a family's group of several seeds comes before its better single run
            if g.dataset == dataset:
                here.setdefault((g.family, g.param("probe.protocol")), g)
        pairs = [
            (here[FAMILIES[0], protocol], here[FAMILIES[3], protocol])
            for protocol in verdict.PROTOCOLS
            if (FAMILIES[0], protocol) in here and (FAMILIES[3], protocol) in here
        ]
        if pairs:  # tested on the protocol where both have the most seeds; the literature's on a tie
            ledger.family(
                f"{verdict.VERSUS_CLASSICAL}, {dataset}",
                [
                    max(
                        pairs,
                        key=lambda pair: (
                            min(len(g.runs) for g in pair),
                            verdict.PROTOCOLS.index(pair[0].param("probe.protocol")),
                        ),
                    )
                ],
            )
    said = verdict.sentences(rows, ledger.rows)
    panels: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    lines: dict[str, dict[str, tuple[str, float]]] = defaultdict(dict)
    for g in groups:
        if g.is_baseline:
            best = lines[g.dataset].get(g.family)
            if best is None or g.mean("top1") > best[1]:
                lines[g.dataset][g.family] = (g.label, g.mean("top1"))
        else:
            panels[g.dataset][g.family].append((g.label, g.cpu_minutes, g.mean("top1"), g.ci("top1")))
    figures.summary(panels, lines, out / "summary.png")
    text = [
        "## Verdict",
        "",
        "The best configuration of each family per dataset and probe protocol, over everything "
        "the results folder holds (all rows: [results.csv](results.csv); every test: "
        "[comparisons.csv](comparisons.csv)):",
        "",
        *verdict.leaderboard_table(rows),
        "",
        *(f"- {sentence}" for sentence in said),
        "",
        "![top-1 against training CPU-minutes](summary.png)",
        "",
        "The best label-free contrastive configuration within each training budget:",
        "",
        *verdict.budget_table(verdict.within_budgets(groups)),
        "",
        "**Glossary**",
        "",
        *verdict.GLOSSARY,
        "",
    ]
    return text, said


def check_replaceable(out: Path) -> None:
    """Refuse an `out` holding anything but what a report makes (README.md, CSVs and PNGs), as the new report
    replaces the whole folder: `--out .` or `--out src` must never delete what they hold."""
    if not out.exists():
        return
    foreign = (
        sorted(
            path.name
            for path in out.iterdir()
            if path.is_dir() or (path.suffix not in (".csv", ".png") and path.name != "README.md")
        )
        if out.is_dir()
        else [out.name]
    )
    if foreign:
        raise FileError(
            f"{out} holds what the report does not make ({', '.join(foreign[:5])}): name a new folder "
            "or the report's own with --out"
        )


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A new folder beside `out` to write the report into, which replaces `out` once the block succeeds and is
    removed if it fails, so the report is never part old, part new. The swap is two renames within one folder: a
    kill between them leaves no `out` but the old report whole beside it, at `.<out>.old-<pid>`."""
    check_replaceable(out)
    staging, old = (out.absolute().with_name(f".{out.name}.{kind}-{os.getpid()}") for kind in ("partial", "old"))
    for left in staging.parent.glob(f".{out.name}.*-*"):  # what a report killed before left (SIGKILL runs no finally)
        kind, _, pid = left.name.rpartition("-")
        if (
            kind in (f".{out.name}.partial", f".{out.name}.old")
            and pid.isdigit()
            and (left == staging or not alive(int(pid)))
        ):
            shutil.rmtree(left, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        yield staging
        if out.exists():
            out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as err:
        raise FileError(f"the report was not written into {out}: {one_line(err, 300)}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_report(results: Path, out: Path, refused: list[str] | None = None) -> list[str]:
    """Write the report into `out` (`staged`); return the verdict's sentences. A folder of `results` that cannot be
    read is left out, named in a line added to `refused`, and the report says it is partial; without that list
    to say so in, it is an error (`load`)."""
    every_scenario, every_baseline = load(results, refused)
    validation = {key: g for key, g in every_scenario.items() if g.param("split.validation_per_class")}
    scenarios = {key: g for key, g in every_scenario.items() if key not in validation}  # probed on the test set
    validation_baselines = {key: g for key, g in every_baseline.items() if g.param("split.validation_per_class")}
    tested_baselines = {key: g for key, g in every_baseline.items() if key not in validation_baselines}
    baselines = {key: g for key, g in tested_baselines.items() if not g.variant}  # on the protocol's encoder and probe
    precision = {key: g for key, g in scenarios.items() if is_precision_twin(g)}
    beyond = {key: g for key, g in scenarios.items() if not is_main_scenario(g) and key not in precision}
    main = {key: g for key, g in scenarios.items() if is_main_scenario(g)}
    if not main:
        raise SystemExit(f"error: no finished scenario of the study's 12 in {results}; run `make study` first")
    with staged(out) as folder:
        ledger = Ledger()
        body = [
            "## The study's 12 scenarios",
            "",
            "Probe scores are mean ± the 95% confidence interval's half-width over seeds on the test set's "
            "stratified 80/20 split (the study's protocol); `study` is the published number; Δ = ours - study; "
            f"`reproduces` is yes where |Δ| <= {study_repeat_spread()[1]:.3f}, the largest gap between the study's own "
            "two runs of identical settings (study_repeats.csv).",
            "",
            *table(main, baselines),
            "",
            "## Findings",
            "",
            "Each dataset's list is one family of tests (Holm-corrected together; the glossary says how). The loss "
            "pairs are fixed before the runs; the best scenario and its runner-up are picked by their means first, so "
            "their test overstates the evidence somewhat.",
            "",
            *findings(ledger, main, baselines),
            *recipe_section(ledger, {**main, **beyond}, baselines),
            *precision_section(ledger, main, precision),
            "## Figures",
            "",
            *figures_section(main, baselines, folder),
            *beyond_section(ledger, beyond, main, baselines, folder),
            *representations_section(ledger, {**main, **beyond}, tested_baselines, folder),
            *classical_section(tested_baselines),
            "## Time",
            "",
            *timing(main, {**beyond, **precision, **validation}, every_baseline),
            "",
        ]
        appendix = validation_section(ledger, {**validation, **validation_baselines}, {**main, **beyond})
        on_test = [*scenarios.values(), *tested_baselines.values()]
        first_screen, said = verdict_section(ledger, on_test, folder)
        leaders = {id(g) for g in verdict.leaders(on_test)}
        write_csv(
            folder / "results.csv",
            RESULT_COLUMNS,
            ([row[c] for c in RESULT_COLUMNS] for row in (result_row(g, id(g) in leaders) for g in on_test)),
        )
        write_csv(folder / "comparisons.csv", Ledger.COLUMNS, ([row[c] for c in Ledger.COLUMNS] for row in ledger.rows))
        runs = sum(len(g.runs) for g in [*every_scenario.values(), *every_baseline.values()])
        text = [
            "# Study report",
            "",
            f"Generated by `python -m contrastlab.study.report --results {results} --out {out}` from the {runs} runs "
            f"kept in {results}.",
            "",
            *(
                [
                    f"**Partial data:** every number here leaves out {len(refused)} "
                    f"folder{'s' * (len(refused) > 1)} of {results} that could not be read:",
                    "",
                    *(f"- {line}" for line in refused),
                    "",
                ]
                if refused
                else []
            ),
            *first_screen,
            *body,
            *(
                ["## Appendix: recipe selection on the held-out validation split", "", *appendix[2:]]
                if appendix
                else []
            ),
        ]
        write_text(folder / "README.md", "\n".join(text) + "\n")
    return said


VERDICT_START, VERDICT_END = "<!-- verdict: generated by make report -->", "<!-- /verdict -->"


def marked(readme: Path) -> str:
    """The text of `readme`, refused unless it holds the verdict's markers (`main` checks before writing anything)."""
    try:
        text = readme.read_text()
    except OSError as err:
        raise SystemExit(f"error: cannot read {readme}: {err.strerror or err}") from None
    if VERDICT_START not in text or VERDICT_END not in text:
        raise SystemExit(f"error: {readme} has no lines {VERDICT_START} and {VERDICT_END} to put the verdict between")
    return text


def show_verdict(readme: Path, said: list[str], out: Path) -> None:
    """Replace what `readme` holds between the verdict's markers with the sentences and the summary figure."""
    head, rest = marked(readme).split(VERDICT_START, 1)
    figure = (out / "summary.png").as_posix()
    block = "\n".join(
        [
            VERDICT_START,
            "",
            f"![top-1 against training CPU-minutes]({figure})",
            "",
            *(f"- {sentence}" for sentence in said),
            "",
            VERDICT_END,
        ]
    )
    write_text(readme, head + block + rest.split(VERDICT_END, 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("study/results"))
    parser.add_argument("--out", type=Path, default=Path("report"))
    parser.add_argument(
        "--readme",
        type=Path,
        help=f"also put the verdict's sentences into this file, between the lines {VERDICT_START} and {VERDICT_END}",
    )
    args = parser.parse_args()
    if args.readme:
        marked(args.readme)  # a README the verdict cannot go into stops the report before it is written
    refused: list[str] = []
    said = write_report(args.results, args.out, refused)
    for line in refused:
        print(f"warning: skipped {line}", file=sys.stderr)
    if args.readme:  # last, and in one write: the report it points to is complete
        partial = (
            [
                f"Partial data: {len(refused)} folder{'s' * (len(refused) > 1)} of {args.results} could not be "
                f"read ({args.out / 'README.md'} names {'them' if len(refused) > 1 else 'it'})."
            ]
            if refused
            else []
        )
        show_verdict(args.readme, [*said, *partial], args.out)
    print(f"report -> {args.out / 'README.md'}")
    if refused:
        sys.exit(1)


if __name__ == "__main__":
    run_stage(main)
