"""The study report: one table, the figures and generated findings, from the kept results alone.

    python -m contrastlab.study.report --results study/results --out report

It reads only the folders the study command keeps (so it also runs on a machine that never trained)
and writes `<out>/README.md`, `<out>/results.csv` and PNG figures. Scenarios are compared with the
published study (`published_results.csv`, copied from the study's report) and with the baselines of
the same dataset, all scored on the same probe split.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from contrastlab.infra import plots
from contrastlab.pipeline.datasets import DATASETS
from contrastlab.infra.files import write_csv, write_text

METRICS = ("top1", "top3", "knn")
BASELINE_NAMES = {
    "raw_pixels": "raw pixels (logistic regression)",
    "random_init": "encoder at random init",
    "supervised": "encoder trained supervised (cross-entropy)",
}
PANELS = ("none", "pad_rotate_scale", "simclr")


@dataclass
class Group:
    """All seeds of one scenario (or one baseline on one dataset)."""

    dataset: str
    label: str                      # "<loss> / <aug>[ / <variant>]" or the baseline's name
    runs: list[dict] = field(default_factory=list)
    main: bool = True               # one of the study's scenarios: its losses, no variant, its recipe
    recipe: str = "protocol"
    variant: str = ""               # grid axes beyond dataset/loss/aug, e.g. "negatives-random"

    def values(self, metric: str) -> list[float]:
        return [run["probe"][metric] for run in self.runs]

    def mean(self, metric: str) -> float:
        return statistics.fmean(self.values(metric))

    def std(self, metric: str) -> float:
        """Sample standard deviation over seeds (0 with one seed, where the spread is unknown)."""
        values = self.values(metric)
        return statistics.stdev(values) if len(values) > 1 else 0.0

    def setting(self, name: str):
        """A param of the scenario as the study set it (the same for every seed)."""
        return self.runs[0]["study"]["overrides"][name]

    def published(self) -> dict[str, float] | None:
        """The published study's numbers for this scenario, if it has any."""
        return published_results().get((self.setting("dataset"), self.setting("loss"), self.setting("aug")))


@functools.cache
def published_results() -> dict[tuple[str, str, str], dict[str, float]]:
    """(dataset, loss, aug) -> the study's published probe_top1, probe_top3, knn_top1."""
    text = resources.files("contrastlab").joinpath("published_results.csv").read_text()
    return {
        (row["dataset"], row["loss"], row["aug"]): {
            "top1": float(row["probe_top1"]), "top3": float(row["probe_top3"]), "knn": float(row["knn_top1"])
        }
        for row in csv.DictReader(text.splitlines())
    }


def load(results: Path) -> tuple[dict[str, Group], dict[str, Group]]:
    """Scenario groups and baseline groups keyed by name without the seed, in the order of the study."""
    scenarios: dict[str, Group] = {}
    baselines: dict[str, Group] = {}
    runs = []
    for folder in results.iterdir():
        if folder.is_dir() and not folder.name.endswith(".partial") and (folder / "study.json").exists():
            study = json.loads((folder / "study.json").read_text())
            run = {"folder": folder, "study": study, "probe": json.loads((folder / "probe.json").read_text())}
            if (folder / "train.json").exists():
                run["train"] = json.loads((folder / "train.json").read_text())
            runs.append(run)
    for run in sorted(runs, key=lambda r: (r["study"].get("overrides", r["study"])["seed"], r["study"]["finished"])):
        study = run["study"]
        key = study["name"].rsplit("-s", 1)[0]
        if "baseline" in study:
            group = baselines.setdefault(key, Group(study["dataset"], BASELINE_NAMES[study["baseline"]]))
        else:
            o, recipe = study["overrides"], study.get("recipe", "protocol")
            variant = key.removeprefix(f"{o['dataset']}-{o['loss']}-{o['aug']}").removesuffix(f"-{recipe}").strip("-")
            label = " / ".join([o["loss"], o["aug"], *([variant] if variant else [])])
            label += f" ({recipe} recipe)" if recipe != "protocol" else ""
            main = recipe == "protocol" and not variant and (o["dataset"], o["loss"], o["aug"]) in published_results()
            group = scenarios.setdefault(key, Group(o["dataset"], label, main=main, recipe=recipe, variant=variant))
        group.runs.append(run)
    return scenarios, baselines


def by_dataset(groups: dict[str, Group]) -> dict[str, list[Group]]:
    grouped: dict[str, list[Group]] = defaultdict(list)
    for group in groups.values():
        grouped[group.dataset].append(group)
    return grouped


def spread_test(a: Group, b: Group, metric: str = "top1") -> str:
    """Whether mean(a) - mean(b) is larger than the seed-to-seed spread: |diff| > 2 standard errors."""
    if len(a.runs) < 2 or len(b.runs) < 2:
        return "one seed only: spread unknown"
    error = (a.std(metric) ** 2 / len(a.runs) + b.std(metric) ** 2 / len(b.runs)) ** 0.5
    diff = a.mean(metric) - b.mean(metric)
    return "larger than the seed spread" if abs(diff) > 2 * error else "within the seed spread"


def fmt(group: Group, metric: str) -> str:
    """Mean ± std over seeds; one seed has no spread to show (a ± 0.0000 would claim one)."""
    if len(group.runs) == 1:
        return f"{group.mean(metric):.4f}"
    return f"{group.mean(metric):.4f} ± {group.std(metric):.4f}"


def fmt_seeds(group: Group, metric: str) -> str:
    """`fmt`, saying so when there is one seed, for tables without a seed-count column."""
    return fmt(group, metric) + (" (1 seed)" if len(group.runs) == 1 else "")


def table(scenarios: dict[str, Group], baselines: dict[str, Group]) -> tuple[list[str], list[list]]:
    """The Markdown table (scenarios, then baselines, per dataset) and the same numbers as CSV rows."""
    lines = [
        "| dataset | scenario (loss / aug) | seeds | probe top-1 | study | Δ | top-3 | study | kNN | study | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [["dataset", "scenario", "seeds", *(f"{m}_{s}" for m in METRICS for s in ("mean", "std", "study")),
             "train_time_s"]]
    for dataset in dict.fromkeys(g.dataset for g in [*scenarios.values(), *baselines.values()]):
        for group in [g for g in scenarios.values() if g.dataset == dataset]:
            ref = group.published()
            cells = []
            for metric in METRICS:
                cells.append(fmt(group, metric))
                cells.append(f"{ref[metric]:.4f}" if ref else "")
                if metric == "top1":
                    cells.append(f"{group.mean('top1') - ref['top1']:+.4f}" if ref else "")
            train_s = statistics.fmean(run["train"]["train_time_s"] for run in group.runs)
            lines.append(f"| {dataset} | {group.label} | {len(group.runs)} | " + " | ".join(cells) + f" | {train_s:.0f} |")
            rows.append([dataset, group.label, len(group.runs),
                         *(x for m in METRICS for x in (round(group.mean(m), 4), round(group.std(m), 4),
                                                        ref[m] if ref else "")), round(train_s, 1)])
        for group in [g for g in baselines.values() if g.dataset == dataset]:
            lines.append(f"| {dataset} | *baseline:* {group.label} | {len(group.runs)} | {fmt(group, 'top1')} | | | "
                         f"{fmt(group, 'top3')} | | {fmt(group, 'knn')} | | |")
            rows.append([dataset, f"baseline: {group.label}", len(group.runs),
                         *(x for m in METRICS for x in (round(group.mean(m), 4), round(group.std(m), 4), "")), ""])
    return lines, rows


def read_points(path: Path, classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    with path.open() as f:
        points = list(csv.DictReader(f))
    coords = np.array([[float(p["x"]), float(p["y"])] for p in points])
    return coords, np.array([classes.index(p["class"]) for p in points])


def summed_confusion(group: Group, classes: tuple[str, ...]) -> np.ndarray:
    """The probe's confusion matrix summed over the group's seeds."""
    counts: Counter = Counter()
    for run in group.runs:
        with (run["folder"] / "confusion.csv").open() as f:
            counts.update((row["actual"], row["predicted"]) for row in csv.DictReader(f))
    return np.array([[counts[(a, p)] for p in classes] for a in classes])


def figures(scenarios: dict[str, Group], baselines: dict[str, Group], out: Path) -> list[str]:
    """Write the figures; return Markdown lines that show them."""
    lines = []
    grouped = by_dataset(scenarios)
    bars = {
        dataset: [{"label": g.label, "mean": g.mean("top1"), "std": g.std("top1"),
                   "published": (g.published() or {}).get("top1")} for g in groups]
        for dataset, groups in grouped.items()
    }
    references = {d: {g.label: g.mean("top1") for g in baselines.values() if g.dataset == d} for d in grouped}
    plots.top1_bars(bars, references, out / "top1.png")
    lines += ["### Probe top-1 of every scenario", "", "![top-1 of every scenario](top1.png)", ""]

    lines += ["### t-SNE maps (first seed; panels as in the study's figures 10-13)", ""]
    for dataset, groups in grouped.items():
        classes = DATASETS[dataset].classes
        for loss in dict.fromkeys(g.setting("loss") for g in groups):
            panels = []
            for letter, aug in zip("ABC", PANELS):
                match = [g for g in groups if g.setting("loss") == loss and g.setting("aug") == aug]
                if match:
                    coords, labels = read_points(match[0].runs[0]["folder"] / "tsne.csv", classes)
                    panels.append((f"({letter}) {aug}  top-1 {match[0].mean('top1'):.3f}", coords, labels))
            if panels:
                name = f"tsne_{dataset}_{loss}.png"
                plots.tsne_panels(panels, list(classes), f"{dataset}, {loss} loss: t-SNE of test embeddings", out / name)
                lines += [f"![t-SNE {dataset} {loss}]({name})", ""]

    lines += ["### Confusion matrices of the best scenario per dataset (summed over seeds)", ""]
    for dataset, groups in grouped.items():
        best = max(groups, key=lambda g: g.mean("top1"))
        classes = DATASETS[dataset].classes
        name = f"confusion_{dataset}.png"
        plots.confusion_heatmap(summed_confusion(best, classes), list(classes),
                                f"{dataset}: {best.label}, probe top-1 {best.mean('top1'):.3f}", out / name)
        lines += [f"![confusion {dataset}]({name})", ""]
    return lines


def factor_effect(groups: list[Group], factor: str) -> tuple[float, dict[str, float]]:
    """Range of the factor's marginal means (averaged over the other factors) and the means themselves."""
    levels: dict[str, list[float]] = defaultdict(list)
    for g in groups:
        levels[g.setting(factor)].append(g.mean("top1"))
    means = {level: statistics.fmean(v) for level, v in levels.items()}
    return max(means.values()) - min(means.values()), means


def findings(scenarios: dict[str, Group], baselines: dict[str, Group]) -> list[str]:
    lines = []
    for dataset, groups in by_dataset(scenarios).items():
        ranked = sorted(groups, key=lambda g: g.mean("top1"), reverse=True)
        best = ranked[0]
        base = {g.label: g for g in baselines.values() if g.dataset == dataset}
        lines += [f"**{dataset}**", ""]
        lines.append(f"- Best: {best.label}, probe top-1 {fmt(best, 'top1')} over {len(best.runs)} seed(s)"
                     + (f"; runner-up {ranked[1].label} ({ranked[1].mean('top1'):.4f}): the gap is "
                        f"{spread_test(best, ranked[1])}." if len(ranked) > 1 else "."))
        effects = {factor: factor_effect(groups, factor) for factor in ("loss", "aug")}
        effects = {factor: effect for factor, effect in effects.items() if len(effect[1]) > 1}  # varied factors
        strongest = max(effects, key=lambda f: effects[f][0], default=None)
        for factor, (span, means) in effects.items():
            levels = ", ".join(f"{level} {value:.3f}" for level, value in means.items())
            lines.append(f"- {factor}: mean top-1 by level {levels} (range {span:.3f})"
                         + (" — the factor that matters most here." if factor == strongest and len(effects) > 1 else "."))
        for aug in dict.fromkeys(g.setting("aug") for g in groups):
            pair = {g.setting("loss"): g for g in groups if g.setting("aug") == aug}
            if {"triplet", "pairwise"} <= set(pair):
                diff = pair["triplet"].mean("top1") - pair["pairwise"].mean("top1")
                lines.append(f"- {aug}: triplet - pairwise = {diff:+.4f}, {spread_test(pair['triplet'], pair['pairwise'])}.")
        raw = base.get(BASELINE_NAMES["raw_pixels"])
        if raw:
            beat = [g for g in groups if g.mean("top1") > raw.mean("top1")]
            lines.append(f"- {len(beat)} of {len(groups)} scenarios beat raw pixels ({raw.mean('top1'):.4f}).")
        supervised = base.get(BASELINE_NAMES["supervised"])
        if supervised:
            lines.append(f"- The supervised ceiling is {supervised.mean('top1'):.4f}; the best scenario reaches "
                         f"{best.mean('top1') / supervised.mean('top1'):.0%} of it.")
        compared = [(g, g.published()) for g in groups if g.published()]
        if compared:
            beat = sum(g.mean("top1") > ref["top1"] for g, ref in compared)
            lines.append(f"- {beat} of {len(compared)} scenarios beat the published study's top-1.")
        lines.append("")
    return lines


def shift_top1(group: Group, pixels: int) -> str:
    """Mean probe top-1 over seeds on test images shifted by +-pixels ("" where not measured)."""
    found = [run["probe"]["shifted_top1"][key] for run in group.runs
             for key in (str(pixels), str(-pixels)) if key in run["probe"].get("shifted_top1", {})]
    return f"{statistics.fmean(found):.4f}" if found else ""


def is_study_scenario(group: Group) -> bool:
    """One of the study's 12 scenarios (loss, aug, no other axis changed), with any recipe."""
    return not group.variant and group.published() is not None


def is_recipe_cell(group: Group) -> bool:
    """One of the study's 12 scenarios, trained with another recipe: shown in the recipe table."""
    return group.recipe != "protocol" and is_study_scenario(group)


def beyond_section(beyond: dict[str, Group], main: dict[str, Group], baselines: dict[str, Group], out: Path) -> list[str]:
    """Methods beyond the study's 12 scenarios, each against the best of the 12 trained with the same recipe,
    so that the method's effect shows apart from the recipe's."""
    methods = [g for g in beyond.values() if not is_recipe_cell(g)]
    if not methods:
        (out / "top1_beyond.png").unlink(missing_ok=True)  # left from an earlier report
        return []
    lines = ["## Beyond the study", "",
             "Other losses and negatives (under any recipe), with the same probe; \"vs best study scenario\" compares "
             "with the best of the study's scenarios that ran on the same dataset with the same recipe (with the "
             "protocol's where that recipe ran none, said so), as the mean difference with the spread test. Shift "
             "columns: the probe's top-1 on held-out test images shifted horizontally by ±3 / ±6 pixels.", "",
             "| dataset | method | seeds | probe top-1 | top-3 | kNN | shift ±3 | shift ±6 | vs best study scenario |",
             "|---|---|---|---|---|---|---|---|---|"]
    bars: dict[str, list[dict]] = defaultdict(list)
    for dataset in dict.fromkeys(g.dataset for g in methods):
        twelve: dict[str, list[Group]] = defaultdict(list)  # recipe -> the study's scenarios trained with it
        for g in [*main.values(), *beyond.values()]:
            if g.dataset == dataset and is_study_scenario(g):
                twelve[g.recipe].append(g)
        best_of = {recipe: max(groups, key=lambda g: g.mean("top1")) for recipe, groups in twelve.items()}
        here = [g for g in methods if g.dataset == dataset]
        reference = {id(g): best_of.get(g.recipe, best_of.get("protocol")) for g in here}
        used = list({id(r): r for r in reference.values() if r is not None}.values())
        for g in sorted([*here, *used], key=lambda g: g.mean("top1"), reverse=True):
            r = reference.get(id(g))
            if id(g) not in reference:
                versus = f"(best of {len(twelve[g.recipe])} study scenarios run with the {g.recipe} recipe)"
            elif r is None:
                versus = ""
            else:
                other = f" (protocol recipe: {g.recipe} ran no study scenario here)" if r.recipe != g.recipe else ""
                versus = f"{g.mean('top1') - r.mean('top1'):+.4f} vs {r.label}{other}, {spread_test(g, r)}"
            lines.append(f"| {dataset} | {g.label} | {len(g.runs)} | {fmt(g, 'top1')} | {fmt(g, 'top3')} | "
                         f"{fmt(g, 'knn')} | {shift_top1(g, 3)} | {shift_top1(g, 6)} | {versus} |")
            bars[dataset].append({"label": g.label, "mean": g.mean("top1"), "std": g.std("top1"), "published": None,
                                  "reference": id(g) not in reference})
        best = max(here, key=lambda g: g.mean("top1"))
        lines.append(f"| {dataset} | **best new method: {best.label}** | | | | | | | |")
    references = {d: {g.label: g.mean("top1") for g in baselines.values() if g.dataset == d} for d in bars}
    plots.top1_bars(bars, references, out / "top1_beyond.png")
    return [*lines, "", "![top-1 beyond the study](top1_beyond.png)", ""]


def recipe_section(scenarios: dict[str, Group], baselines: dict[str, Group]) -> list[str]:
    """The study's scenarios trained with each recipe side by side: the recipe's effect apart from
    the effect of loss and augmentation."""
    cells: dict[tuple[str, str, str], dict[str, Group]] = defaultdict(dict)
    for g in scenarios.values():
        if is_study_scenario(g):
            cells[(g.dataset, g.setting("loss"), g.setting("aug"))][g.recipe] = g
    found = {recipe for by_recipe in cells.values() for recipe in by_recipe}
    others = sorted(found - {"protocol"})
    if "protocol" not in found or not others:
        return []
    recipes = ["protocol", *others]
    lines = ["## Training recipes", "",
             "The study's scenarios with the protocol's recipe (plain SGD, fixed lr, sigmoid head) and with "
             + ", ".join(f"`{r}`" for r in others) + " (`study.recipes` in params.yaml): probe top-1, mean ± std "
             "over seeds; Δ = recipe - protocol with the spread test.", "",
             "| dataset | loss / aug | " + " | ".join(recipes) + " | " + " | ".join(f"Δ {r}" for r in others) + " |",
             "|---|---|" + "---|" * (len(recipes) + len(others))]
    for (dataset, loss, aug), by_recipe in cells.items():
        row = [fmt_seeds(by_recipe[r], "top1") if r in by_recipe else "" for r in recipes]
        protocol = by_recipe.get("protocol")
        for r in others:
            g = by_recipe.get(r)
            row.append(f"{g.mean('top1') - protocol.mean('top1'):+.4f}, {spread_test(g, protocol)}"
                       if g and protocol else "")
        lines.append(f"| {dataset} | {loss} / {aug} | " + " | ".join(row) + " |")
    lines.append("")
    for dataset in dict.fromkeys(dataset for dataset, _, _ in cells):
        raw = baselines.get(f"baseline-{dataset}-raw_pixels")
        for recipe in recipes:
            groups = [by_recipe[recipe] for (d, _, _), by_recipe in cells.items() if d == dataset and recipe in by_recipe]
            if not groups:  # this recipe has not run on this dataset (yet)
                continue
            best = max(groups, key=lambda g: g.mean("top1"))
            beat = (f"; {sum(g.mean('top1') > raw.mean('top1') for g in groups)} of {len(groups)} beat raw pixels "
                    f"({raw.mean('top1'):.4f})" if raw else "")
            lines.append(f"- {dataset}, {recipe}: best {best.setting('loss')} / {best.setting('aug')} "
                         f"{fmt_seeds(best, 'top1')}{beat}.")
    return [*lines, ""]


def machine_of(run: dict) -> str:
    return run["study"].get("machine", "a machine not recorded")


def timing(main: dict[str, Group], beyond: dict[str, Group], baselines: dict[str, Group]) -> list[str]:
    """Wall times, per machine: runs made on different CPUs are not comparable."""
    runs = [run for g in [*main.values(), *beyond.values(), *baselines.values()] for run in g.runs]
    total = sum(run["study"]["wall_s"] for run in runs)
    lines = [f"- Total wall time of all {len(runs)} runs (scenarios, baselines and beyond): {total / 3600:.2f} h."]
    for where in dict.fromkeys(machine_of(run) for run in runs):
        here = {key: {run["study"]["overrides"]["seed"]: run for run in g.runs if machine_of(run) == where}
                for key, g in main.items()}
        lines.append(f"- On {where} ({sum(machine_of(run) == where for run in runs)} runs):")
        complete = sorted(set.intersection(*(set(seeds) for seeds in here.values()))) if here else []
        if complete:
            seed = complete[0]
            first = sum(seeds[seed]["study"]["wall_s"] for seeds in here.values())
            lines.append(f"  - the {len(main)} scenarios with one seed (seed {seed}): {first / 60:.0f} min.")
        per_scenario = [
            f"{main[key].dataset} {main[key].label} {statistics.fmean(r['study']['wall_s'] for r in seeds.values()):.0f} s"
            for key, seeds in here.items() if seeds
        ]
        if per_scenario:
            lines.append("  - mean wall time of one run per scenario (train + embed + t-SNE + probe + tracking, via "
                         "`dvc exp run`): " + ", ".join(per_scenario) + ".")
    return lines


def write_report(results: Path, out: Path) -> None:
    scenarios, baselines = load(results)
    if not any(g.main for g in scenarios.values()):
        raise SystemExit(f"error: no finished scenario of the study's 12 in {results}; run `make study` first")
    beyond = {key: g for key, g in scenarios.items() if not g.main}
    scenarios = {key: g for key, g in scenarios.items() if g.main}
    out.mkdir(parents=True, exist_ok=True)
    lines, rows = table(scenarios, baselines)
    write_csv(out / "results.csv", rows[0], rows[1:])
    text = [
        "# Study report",
        "",
        f"Generated by `python -m contrastlab.study.report --results {results} --out {out}` from {sum(len(g.runs) for g in scenarios.values())} "
        f"scenario runs and {sum(len(g.runs) for g in baselines.values())} baseline runs. Probe scores are mean ± std "
        "over seeds on the test set's stratified 80/20 split; `study` is the published number; Δ = ours - study. "
        "Numbers as CSV: [results.csv](results.csv).",
        "",
        *lines,
        "",
        "## Findings",
        "",
        *findings(scenarios, baselines),
        *recipe_section({**scenarios, **beyond}, baselines),
        "## Time",
        "",
        *timing(scenarios, beyond, baselines),
        "",
        "## Figures",
        "",
        *figures(scenarios, baselines, out),
        *beyond_section(beyond, scenarios, baselines, out),
    ]
    write_text(out / "README.md", "\n".join(text) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("study/results"))
    parser.add_argument("--out", type=Path, default=Path("report"))
    args = parser.parse_args()
    write_report(args.results, args.out)
    print(f"report -> {args.out / 'README.md'}")


if __name__ == "__main__":
    main()
