"""The report's figures, read back from the matplotlib figure before it is saved."""

from __future__ import annotations

import string

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pytest
from test_report import write_baseline, write_scenario

from contrastlab.infra import plots
from contrastlab.methods.augmentations import AUGMENTATIONS
from contrastlab.methods.baselines import BASELINES
from contrastlab.pipeline.datasets import DATASETS
from contrastlab.study import figures
from contrastlab.study.results import load


@pytest.fixture
def drawn(monkeypatch):
    """The figures that would have been saved, still open."""
    saved = []
    monkeypatch.setattr(plots, "save", lambda fig, path, dpi: saved.append(fig))
    return saved


def colours(ax) -> list[str]:
    return [mcolors.to_hex(patch.get_facecolor(), keep_alpha=False) for patch in ax.patches]


def horizontal_lines(ax) -> list:
    """The lines drawn across the axes (`axhline`), not the error bars' caps."""
    return [line for line in ax.get_lines() if list(line.get_xdata()) == [0, 1] and line.get_linestyle() != "None"]


def test_top1_bars_draw_reference_bars_grey_and_put_baselines_and_the_legend_outside_the_bars(drawn, tmp_path):
    bars = [
        {"label": "ntxent / simclr (tuned recipe)", "mean": 0.9, "ci": 0.01, "published": None},
        {
            "label": "triplet / simclr / negatives-random (tuned recipe)",
            "mean": 0.95,
            "ci": 0.0,
            "published": None,
            "reference": True,
        },
    ]
    figures.top1_bars({"mnist": bars}, {"mnist": {"raw pixels": 0.91, "random init": 0.5}}, tmp_path / "top1.png")
    fig = drawn[0]
    ax = fig.axes[0]
    assert colours(ax) == [mcolors.to_hex("tab:blue"), mcolors.to_hex("tab:gray")]
    assert ax.get_legend() is None and len(fig.legends) == 1  # one legend for the figure, below the panels
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "this project (mean, 95% CI over seeds)",
        "best study scenario, same recipe",
        "baseline: raw pixels",
        "baseline: random init",
    ]
    # each baseline its own colour and line style, its value written right of the axes in that colour
    lines = [(line.get_ydata()[0], line.get_color(), line.get_linestyle()) for line in horizontal_lines(ax)]
    assert lines == [(0.91, figures.BASELINE_COLORS[0], "--"), (0.5, figures.BASELINE_COLORS[1], ":")]
    assert sorted((t.get_text(), t.get_color()) for t in ax.texts) == [
        ("0.500", figures.BASELINE_COLORS[1]),
        ("0.910", figures.BASELINE_COLORS[0]),
    ]
    # labels wrapped at 30 characters and written vertically; the y axis ends at 1, the legend needs no room in it
    labels = ax.get_xticklabels()
    assert labels[0].get_text() == "ntxent / simclr (tuned recipe)"  # 30 characters: one line
    assert labels[1].get_text() == "triplet / simclr / negatives-\nrandom (tuned recipe)"
    assert {label.get_rotation() for label in labels} == {90.0}
    assert ax.get_ylim() == (0, 1.02) and max(ax.get_yticks()) == 1.0


def test_top1_of_groups_shows_their_published_number_and_the_datasets_baselines(drawn, tmp_path):
    results = tmp_path / "results"
    write_scenario(results, "triplet", "simclr", 0, 0.9)
    write_scenario(results, "ntxent", "simclr", 0, 0.8)
    write_baseline(results, "raw_pixels", 0, 0.85)
    write_baseline(results, "supervised", 0, 0.35, dataset="cifar10")
    scenarios, baselines = load(results)
    groups = [scenarios["mnist-triplet-simclr"], scenarios["mnist-ntxent-simclr"]]
    figures.top1({"mnist": groups}, baselines, tmp_path / "top1.png", is_reference=lambda g: g is groups[1])
    ax = drawn[0].axes[0]
    assert colours(ax) == [mcolors.to_hex("tab:blue"), mcolors.to_hex("tab:gray")]
    published = [c for c in ax.collections if c.get_label() == "published study"]
    assert published[0].get_offsets().tolist() == [[0.0, 0.928]]  # triplet / simclr's; ntxent was never published
    assert [(line.get_ydata()[0], line.get_color()) for line in horizontal_lines(ax)] == [
        (0.85, "tab:red")
    ]  # mnist's only
    assert [text.get_text() for text in ax.texts] == ["0.850"]
    assert f"baseline: {BASELINES['raw_pixels'].label}" in [t.get_text() for t in drawn[0].legends[0].get_texts()]


def display_points(ax) -> np.ndarray:
    """Every point the axes plot, in display pixels: the collections' offsets (scatter markers) and segments (error
    bars), the lines' vertices (errorbar's markers, curves, axhline's two ends), each straight segment sampled
    between its ends; only those inside the axes, which clip what they draw."""
    found = [np.empty((0, 2))]
    for collection in ax.collections:
        found.append(collection.get_offset_transform().transform(collection.get_offsets()))
        for segment in getattr(collection, "get_segments", lambda: [])():
            found.append(sampled(collection.get_transform().transform(segment)))
    for line in ax.get_lines():
        found.append(sampled(line.get_transform().transform(line.get_xydata())))
    points = np.concatenate(found)
    box = ax.get_window_extent()
    inside = (points[:, 0] >= box.x0) & (points[:, 0] <= box.x1) & (points[:, 1] >= box.y0) & (points[:, 1] <= box.y1)
    return points[inside & np.isfinite(points).all(axis=1)]


def sampled(vertices: np.ndarray, steps: int = 50) -> np.ndarray:
    """The vertices and `steps` points along each straight segment between two of them."""
    if len(vertices) < 2:
        return vertices
    t = np.linspace(0, 1, steps)[:, None]
    return np.concatenate([vertices, *(a + t * (b - a) for a, b in zip(vertices[:-1], vertices[1:], strict=True))])


def legend_problems(fig) -> list[tuple[int, str]]:
    """What is wrong with where the figure's legends sit, as (legend, what): a legend (the figure's, then the axes')
    reaching out of the figure, or covering a plotted point, line or bar of an axes (named by its title)."""
    fig.canvas.draw()  # lays the figure out (constrained layout) as saving it would
    renderer = fig.canvas.get_renderer()
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
    problems = []
    for i, legend in enumerate(legends):
        box = legend.get_window_extent(renderer)
        if not (fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1):
            problems.append((i, "out of the figure"))
        for ax in fig.axes:
            if any(box.contains(x, y) for x, y in display_points(ax)):
                problems.append((i, f"over points of {ax.get_title()!r}"))
            if any(box.overlaps(patch.get_window_extent(renderer)) for patch in ax.patches):
                problems.append((i, f"over bars of {ax.get_title()!r}"))
    return problems


def test_the_legend_check_catches_a_legend_over_points_lines_or_bars_or_out_of_the_figure():
    fig, axes = plt.subplots(1, 4, figsize=(12, 3), layout="constrained")
    grid = np.linspace(0, 1, 11)
    axes[0].scatter(*np.meshgrid(grid, grid), label="points")
    axes[1].plot([0, 1], [0.5, 0.5], label="line")  # two vertices, both far from the legend in the middle
    axes[2].bar([0, 1, 2], [1, 1, 1], label="bars")
    axes[3].plot([0, 1], [0, 1], label="clear")
    for ax, title in zip(axes, ("scatter", "line", "bar", "clear"), strict=True):
        ax.set_title(title)
        ax.legend(loc="center" if title != "clear" else "lower right")  # the diagonal stays clear of that corner
    fig.legend(handles=axes[0].get_legend_handles_labels()[0], loc="center left", bbox_to_anchor=(1.05, 0.5))
    problems = legend_problems(fig)
    plt.close(fig)
    assert problems == [
        (0, "out of the figure"),
        (1, "over points of 'scatter'"),
        (2, "over points of 'line'"),
        (3, "over bars of 'bar'"),
    ]


def draw_top1_bars(tmp_path):
    # tall bars, a published marker at the top and baselines high up: where a legend inside the axes would sit
    bars = [
        {
            "label": f"loss {i} / simclr / a variant with a long name",
            "mean": 0.9 + i / 100,
            "ci": 0.02,
            "published": 0.99 if i % 2 else None,
            "reference": i == 0,
        }
        for i in range(6)
    ]
    references = {"raw pixels": 0.97, "supervised": 0.99, "random init": 0.2}
    figures.top1_bars(
        {"mnist": bars, "cifar10": bars[:3]}, {"mnist": references, "cifar10": references}, tmp_path / "top1.png"
    )


def draw_top1(tmp_path):
    results = tmp_path / "results"
    for seed in (0, 1):
        write_scenario(results, "triplet", "simclr", seed, 0.95 + seed / 100)
        write_scenario(results, "ntxent", "simclr", seed, 0.97)
        write_baseline(results, "raw_pixels", seed, 0.98)
    scenarios, baselines = load(results)
    figures.top1({"mnist": list(scenarios.values())}, baselines, tmp_path / "top1.png")


def draw_top1_by_epochs(tmp_path):
    curves = {
        "mnist": {f"method {i}": [(10, 0.5 + i / 10, 0.01), (25, 0.9, 0.02), (100, 0.99, 0.0)] for i in range(4)},
        "cifar10": {"ntxent": [(10, 0.1, 0.0), (100, 0.6, 0.05)]},
    }
    figures.top1_by_epochs(curves, tmp_path / "epochs.png")


def draw_summary(tmp_path):
    families = list(figures.FAMILY_COLORS)
    points = {
        family: [
            (f"config {i}", 10.0 ** (i - 1) * (1 + f), 0.5 + i / 10 - f / 20, 0.02 if i % 2 else None) for i in range(5)
        ]
        for f, family in enumerate(families[:3])
    }
    lines = {family: (family, value) for family, value in zip(families[3:], (0.95, 0.97, 0.1), strict=True)}
    figures.summary({"mnist": points, "cifar10": points}, {"mnist": lines, "cifar10": lines}, tmp_path / "summary.png")


def draw_tsne_panels(tmp_path):
    rng = np.random.default_rng(0)
    coords, labels = rng.normal(size=(500, 2)), rng.integers(0, 10, 500)
    classes = list(DATASETS["mnist"].classes)
    figures.tsne_panels(
        [("(A) none", coords, labels), ("(B) simclr", -coords, labels)], classes, "t-SNE", tmp_path / "tsne.png"
    )


@pytest.mark.parametrize("draw", [draw_top1_bars, draw_top1, draw_top1_by_epochs, draw_summary, draw_tsne_panels])
def test_every_legend_lies_inside_the_figure_and_covers_no_point_line_or_bar(drawn, tmp_path, draw):
    draw(tmp_path)
    fig = drawn[0]
    assert fig.legends or any(ax.get_legend() for ax in fig.axes)  # a figure whose legend is checked
    assert legend_problems(fig) == []
    assert all(len(display_points(ax)) or ax.patches for ax in fig.axes)  # against something plotted


def test_baseline_values_are_written_at_least_a_gap_apart_in_their_colours():
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.set_ylim(0, 1)
    # sorted 0.50, 0.51, 0.52, 0.80: each label moves up to the last one + 0.035: 0.50, 0.535, 0.57; 0.80 stays
    figures.label_lines(
        ax,
        {"a": (0.51, "tab:red"), "b": (0.80, "tab:blue"), "c": (0.50, "tab:green"), "d": (0.52, "tab:olive")},
        gap=0.035,
    )
    written = sorted((text.xy[1], text.get_text(), text.get_color()) for text in ax.texts)
    fig.canvas.draw()
    boxes = [text.get_window_extent(fig.canvas.get_renderer()) for text in ax.texts]
    plt.close(fig)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])  # 7-point text, 0.035 apart
    assert [y for y, _, _ in written] == [pytest.approx(y) for y in (0.50, 0.535, 0.57, 0.80)]
    assert [(text, colour) for _, text, colour in written] == [
        ("0.500", "tab:green"),
        ("0.510", "tab:red"),
        ("0.520", "tab:olive"),
        ("0.800", "tab:blue"),
    ]
    assert all(b - a >= 0.035 - 1e-12 for (a, _, _), (b, _, _) in zip(written, written[1:], strict=False))
    assert {text.xy[0] for text in ax.texts} == {1.0}  # at the right edge of the axes, outside them


def test_tsne_panels_are_the_augmentations_present_in_the_registrys_order(drawn, tmp_path, monkeypatch):
    monkeypatch.setitem(AUGMENTATIONS, "blur", lambda images, generator: images)  # a fourth augmentation
    results = tmp_path / "results"
    augs = list(AUGMENTATIONS)
    for seed, aug in enumerate(reversed(augs)):  # seeds put the registry's last augmentation first in the data
        write_scenario(results, "triplet", aug, seed, 0.5 + 0.1 * seed)
    scenarios, _ = load(results)
    figures.tsne_maps(list(scenarios.values()), tmp_path / "tsne.png")
    titles = [ax.get_title() for ax in drawn[0].axes]
    top1 = {aug: 0.5 + 0.1 * seed for seed, aug in enumerate(reversed(augs))}
    assert titles == [
        f"({letter}) {aug}  top-1 {top1[aug]:.3f}" for letter, aug in zip(string.ascii_uppercase, augs, strict=False)
    ]
    assert drawn[0].get_suptitle() == "mnist, triplet loss: t-SNE of test embeddings"


def test_a_tsne_panel_keeps_its_letter_when_another_augmentation_did_not_run(drawn, tmp_path):
    results = tmp_path / "results"
    first, last = list(AUGMENTATIONS)[0], list(AUGMENTATIONS)[-1]
    write_scenario(results, "triplet", first, 0, 0.5)
    write_scenario(results, "triplet", last, 0, 0.7)
    scenarios, _ = load(results)
    figures.tsne_maps(list(scenarios.values()), tmp_path / "tsne.png")
    letter_of_last = string.ascii_uppercase[len(AUGMENTATIONS) - 1]
    assert [ax.get_title() for ax in drawn[0].axes] == [
        f"(A) {first}  top-1 0.500",
        f"({letter_of_last}) {last}  top-1 0.700",
    ]


def test_confusion_is_summed_over_seeds(tmp_path):
    results = tmp_path / "results"
    for seed in (0, 1):
        write_scenario(results, "triplet", "simclr", seed, 0.9)  # each: (0, 0), (0, 1), (1, 1)
    scenarios, _ = load(results)
    matrix = figures.summed_confusion(scenarios["mnist-triplet-simclr"], DATASETS["mnist"].classes)
    expected = np.zeros((10, 10), dtype=int)
    expected[0, 0] = expected[0, 1] = expected[1, 1] = 2
    assert (matrix == expected).all()


def test_the_epochs_figure_has_a_panel_per_dataset_and_a_line_per_method_at_its_epochs(drawn, tmp_path):
    curves = {
        "mnist": {"ntxent": [(10, 0.9, 0.01), (50, 0.95, 0.0)], "supcon": [(10, 0.97, 0.0), (25, 0.98, 0.0)]},
        "cifar10": {"ntxent": [(10, 0.5, 0.0), (100, 0.6, 0.0)]},
    }
    figures.top1_by_epochs(curves, tmp_path / "epochs.png")
    mnist, cifar10 = drawn[0].axes
    assert (mnist.get_title(), cifar10.get_title()) == ("mnist", "cifar10")
    assert [list(line.get_xdata()) for line in mnist.get_lines() if line.get_marker() == "o"] == [[10, 50], [10, 25]]
    assert [list(line.get_ydata()) for line in cifar10.get_lines() if line.get_marker() == "o"] == [[0.5, 0.6]]
    assert [text.get_text() for text in mnist.get_legend().get_texts()] == ["ntxent", "supcon"]
