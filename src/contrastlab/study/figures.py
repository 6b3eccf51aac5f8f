"""The study report's figures, drawn from result groups.

They live apart from `contrastlab.infra.plots` (the pipeline stages' figures) because the train stage
imports that module: a change to a report chart must not make DVC retrain an encoder.
"""

from __future__ import annotations

import csv
import string
import textwrap
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.ticker
import numpy as np
from matplotlib.lines import Line2D

from contrastlab.infra import plots
from contrastlab.methods.augmentations import AUGMENTATIONS
from contrastlab.pipeline.datasets import DATASETS
from contrastlab.study.results import Group, in_registry_order


def top1_bars(groups: dict[str, list[dict]], references: dict[str, dict[str, float]], path: Path) -> None:
    """One panel per dataset: mean probe top-1 per scenario with its 95% confidence interval (over seeds) as error
    bars, the published value as a black marker and the baselines as horizontal lines.

    groups: dataset -> [{"label", "mean", "ci" (half-width; 0 for one run), "published" (or None), optional
    "reference": drawn grey}];
    references: dataset -> {name: top-1}.
    """
    width = max(7.5, 0.75 * max(len(bars) for bars in groups.values()))  # room for every bar's label
    fig = plots.agg_figure(width * len(groups), 5.8)
    axes = fig.subplots(1, len(groups), squeeze=False)
    names = list(dict.fromkeys(name for lines in references.values() for name in lines))
    styles: dict[str, tuple[str, Any]] = {  # name -> (colour, line style)
        name: (BASELINE_COLORS[i % len(BASELINE_COLORS)], ["--", ":", "-."][i % 3]) for i, name in enumerate(names)
    }
    for ax, (dataset, bars) in zip(axes[0], groups.items(), strict=True):
        x = np.arange(len(bars))
        for kind, color, label in (
            (False, "tab:blue", "this project (mean, 95% CI over seeds)"),
            (True, "tab:gray", "best study scenario, same recipe"),
        ):
            shown = [i for i, b in enumerate(bars) if b.get("reference", False) == kind]
            if shown:
                ax.bar(
                    x[shown],
                    [bars[i]["mean"] for i in shown],
                    yerr=[bars[i]["ci"] for i in shown],
                    capsize=3,
                    color=color,
                    alpha=0.75,
                    label=label if ax is axes[0][0] else None,
                )
        published = [(i, b["published"]) for i, b in enumerate(bars) if b["published"] is not None]
        if published:
            ax.scatter(
                *zip(*published, strict=True),
                marker="D",
                color="black",
                zorder=3,
                label="published study" if ax is axes[0][0] else None,
            )
        for name, value in references.get(dataset, {}).items():
            color, style = styles[name]
            ax.axhline(value, color=color, linestyle=style, linewidth=1.4)
        label_lines(ax, {name: (value, styles[name][0]) for name, value in references.get(dataset, {}).items()})
        ax.set_xticks(x, [textwrap.fill(b["label"], 30) for b in bars], rotation=90, fontsize=7)
        ax.set(ylabel="linear-probe top-1", title=dataset, ylim=(0, 1.02), yticks=np.linspace(0, 1, 6))
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    handles += [Line2D([], [], color=styles[n][0], linestyle=styles[n][1]) for n in names]
    fig.legend(handles, labels + [f"baseline: {n}" for n in names], loc="outside lower center", ncol=3, fontsize=8)
    plots.save(fig, path, dpi=120)


BASELINE_COLORS = ["tab:red", "tab:purple", "tab:brown", "tab:olive", "tab:cyan", "tab:pink", "tab:green"]
FAMILY_COLORS = {
    "label-free contrastive": "tab:blue",
    "label-using contrastive": "tab:orange",
    "supervised ceiling": "tab:green",
    "classical label-free": "tab:purple",
    "raw pixels": "tab:red",
    "random init": "tab:gray",
}


def label_lines(ax, lines: dict[str, tuple[float, str]], gap: float = 0.035) -> None:
    """Write each horizontal line's value just right of the axes, moved apart where lines lie closer than `gap`
    (in data units), so no two labels overlap."""
    placed: list[float] = []
    for value, color in sorted(lines.values()):
        y = max(value, placed[-1] + gap) if placed else value
        placed.append(y)
        ax.annotate(
            f"{value:.3f}",
            (1.0, y),
            xycoords=("axes fraction", "data"),
            fontsize=7,
            color=color,
            xytext=(2, 0),
            textcoords="offset points",
            va="center",
            annotation_clip=False,
        )


def summary(
    panels: dict[str, dict[str, list[tuple[str, float, float, float | None]]]],
    lines: dict[str, dict[str, tuple[str, float]]],
    path: Path,
) -> None:
    """The report's summary: one panel per dataset, probe top-1 against training CPU-minutes (log scale), one
    marker per configuration (95% CI as error bar) coloured by family, and the reference points as horizontal lines.

    panels: dataset -> family -> [(label, cpu_minutes, top-1, ci half-width or None)];
    lines: dataset -> family -> (label, top-1), drawn across the panel.
    """
    fig = plots.agg_figure(6.5 * len(panels), 5.2)
    axes = fig.subplots(1, len(panels), squeeze=False)
    shown: dict[str, object] = {}
    for ax, (dataset, families) in zip(axes[0], panels.items(), strict=True):
        for name, points in families.items():
            minutes = [max(m, 0.1) for _, m, _, _ in points]
            errors = [0 if ci is None else ci for *_, ci in points]
            shown[name] = ax.errorbar(
                minutes,
                [t for _, _, t, _ in points],
                yerr=errors,
                fmt="o",
                capsize=3,
                color=FAMILY_COLORS[name],
                alpha=0.8,
                markersize=5,
            )
        for name, (_, value) in lines.get(dataset, {}).items():
            shown[name] = ax.axhline(value, color=FAMILY_COLORS[name], linestyle="--", linewidth=1.3)
        label_lines(ax, {name: (value, FAMILY_COLORS[name]) for name, (_, value) in lines.get(dataset, {}).items()})
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))  # 1, 2, 5, 10, 20, ...
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # "3 x 10^0"-style labels would overlap
        ax.set(xlabel="training CPU-minutes (log scale)", ylabel="linear-probe top-1", title=dataset, ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    order = [name for name in FAMILY_COLORS if name in shown]
    fig.legend(  # type: ignore[call-overload]  # errorbar's ErrorbarContainer is a handle too; the stub says Artist
        [shown[n] for n in order],
        [n + (" (line)" if isinstance(shown[n], Line2D) else "") for n in order],
        loc="outside lower center",
        ncol=3,
        fontsize=9,
    )
    plots.save(fig, path, dpi=120)


def top1(
    groups: dict[str, list[Group]],
    baselines: dict[str, Group],
    path: Path,
    *,
    published: bool = True,
    is_reference: Callable[[Group], bool] = lambda group: False,
) -> None:
    """`top1_bars` of the groups of each dataset with that dataset's baselines as lines; `published` adds
    the published study's number of each group, `is_reference` tells the groups drawn grey."""
    bars = {
        dataset: [
            {
                "label": g.label,
                "mean": g.mean("top1"),
                "ci": g.ci("top1") or 0.0,
                "reference": is_reference(g),
                "published": (g.published() or {}).get("top1") if published else None,
            }
            for g in here
        ]
        for dataset, here in groups.items()
    }
    references = {d: {g.label: g.mean("top1") for g in baselines.values() if g.dataset == d} for d in groups}
    top1_bars(bars, references, path)


def tsne_panels(
    panels: list[tuple[str, np.ndarray, np.ndarray]], class_names: list[str], title: str, path: Path
) -> None:
    """Side-by-side t-SNE maps, one per (panel title, coords, labels), sharing one class legend."""
    fig = plots.agg_figure(5 * len(panels) + 1.5, 5)
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (panel_title, coords, labels) in zip(axes[0], panels, strict=True):
        plots.scatter_classes(ax, coords, labels, class_names, size=5)
        ax.set_title(panel_title)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right center", markerscale=2.5, frameon=False, title="class")
    fig.suptitle(title)
    plots.save(fig, path, dpi=110)


def read_points(path: Path, classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A run's tsne.csv: the points and the index of each one's class."""
    with path.open() as f:
        points = list(csv.DictReader(f))
    coords = np.array([[float(p["x"]), float(p["y"])] for p in points])
    return coords, np.array([classes.index(p["class"]) for p in points])


def tsne_maps(groups: list[Group], path: Path) -> None:
    """The t-SNE maps of one dataset and loss (the first seed of each group, one group per augmentation),
    side by side in the order of the augmentations' registry and lettered as in the study's figures."""
    dataset, loss = groups[0].dataset, groups[0].setting("loss")
    classes = DATASETS[dataset].classes
    by_aug = {g.setting("aug"): g for g in groups}
    panels = []
    letters = dict(zip(in_registry_order("aug", [*AUGMENTATIONS, *by_aug]), string.ascii_uppercase, strict=False))
    for aug in in_registry_order("aug", by_aug):  # a panel keeps its letter when another augmentation did not run
        coords, labels = read_points(by_aug[aug].runs[0]["folder"] / "tsne.csv", classes)
        panels.append((f"({letters[aug]}) {aug}  top-1 {by_aug[aug].mean('top1'):.3f}", coords, labels))
    tsne_panels(panels, list(classes), f"{dataset}, {loss} loss: t-SNE of test embeddings", path)


def summed_confusion(group: Group, classes: tuple[str, ...]) -> np.ndarray:
    """The probe's confusion matrix summed over the group's seeds."""
    counts: Counter = Counter()
    for run in group.runs:
        with (run["folder"] / "confusion.csv").open() as f:
            counts.update((row["actual"], row["predicted"]) for row in csv.DictReader(f))
    return np.array([[counts[(a, p)] for p in classes] for a in classes])


def confusion(group: Group, path: Path) -> None:
    """The group's confusion heatmap, summed over its seeds."""
    classes = DATASETS[group.dataset].classes
    plots.confusion_heatmap(
        summed_confusion(group, classes),
        list(classes),
        f"{group.dataset}: {group.label}, probe top-1 {group.mean('top1'):.3f}",
        path,
    )


def top1_by_epochs(curves: dict[str, dict[str, list[tuple[int, float, float]]]], path: Path) -> None:
    """One panel per dataset: mean probe top-1 (and its 95% CI over seeds) against training epochs, one
    line per method. curves: dataset -> method label -> [(epochs, mean, CI half-width)] in increasing epochs."""
    fig = plots.agg_figure(6.5 * len(curves), 4.5)
    axes = fig.subplots(1, len(curves), squeeze=False)
    for ax, (dataset, lines) in zip(axes[0], curves.items(), strict=True):
        for label, points in lines.items():
            epochs, means, halves = zip(*points, strict=True)
            ax.errorbar(epochs, means, yerr=halves, marker="o", capsize=3, label=label)
        ax.set_xscale("log")
        ticks = sorted({e for points in lines.values() for e, _, _ in points})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xticks([], minor=True)  # a log axis otherwise labels its minor ticks "2 x 10^1", ...
        ax.set(xlabel="training epochs", ylabel="linear-probe top-1", title=dataset)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.15), frameon=False)  # below the axes
    plots.save(fig, path, dpi=120)
