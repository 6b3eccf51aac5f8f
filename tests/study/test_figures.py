"""The report's figures, read back from the matplotlib figure before it is saved."""

from __future__ import annotations

import string

import matplotlib.colors as mcolors
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


def test_top1_bars_draw_reference_bars_grey_and_keep_the_legend_above_every_bar(drawn, tmp_path):
    bars = [{"label": "ntxent / simclr (tuned recipe)", "mean": 0.9, "std": 0.01, "published": None},
            {"label": "triplet / simclr (tuned recipe)", "mean": 0.95, "std": 0.0, "published": None, "reference": True}]
    figures.top1_bars({"mnist": bars}, {"mnist": {"raw pixels": 0.91}}, tmp_path / "top1.png")
    ax = drawn[0].axes[0]
    assert colours(ax) == [mcolors.to_hex("tab:blue"), mcolors.to_hex("tab:gray")]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "raw pixels: 0.910", "this project (mean, +-1 std over seeds)", "best study scenario, same recipe"]
    assert ax.get_xticklabels()[0].get_text() == "ntxent / simclr\n(tuned recipe)"
    assert ax.get_ylim()[1] > 1.2 and max(ax.get_yticks()) == 1.0  # the band above 1 is the legend's


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
    lines = [line.get_label() for line in ax.get_lines() if line.get_color() == "tab:red"]
    assert lines == [f"{BASELINES['raw_pixels'].label}: 0.850"]  # mnist's baseline only


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
    assert titles == [f"({letter}) {aug}  top-1 {top1[aug]:.3f}" for letter, aug in zip(string.ascii_uppercase, augs)]
    assert drawn[0].get_suptitle() == "mnist, triplet loss: t-SNE of test embeddings"


def test_a_tsne_panel_keeps_its_letter_when_another_augmentation_did_not_run(drawn, tmp_path):
    results = tmp_path / "results"
    first, last = list(AUGMENTATIONS)[0], list(AUGMENTATIONS)[-1]
    write_scenario(results, "triplet", first, 0, 0.5)
    write_scenario(results, "triplet", last, 0, 0.7)
    scenarios, _ = load(results)
    figures.tsne_maps(list(scenarios.values()), tmp_path / "tsne.png")
    letter_of_last = string.ascii_uppercase[len(AUGMENTATIONS) - 1]
    assert [ax.get_title() for ax in drawn[0].axes] == [f"(A) {first}  top-1 0.500", f"({letter_of_last}) {last}  top-1 0.700"]


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
    curves = {"mnist": {"ntxent": [(10, 0.9, 0.01), (50, 0.95, 0.0)], "supcon": [(10, 0.97, 0.0), (25, 0.98, 0.0)]},
              "cifar10": {"ntxent": [(10, 0.5, 0.0), (100, 0.6, 0.0)]}}
    figures.top1_by_epochs(curves, tmp_path / "epochs.png")
    mnist, cifar10 = drawn[0].axes
    assert (mnist.get_title(), cifar10.get_title()) == ("mnist", "cifar10")
    assert [list(line.get_xdata()) for line in mnist.get_lines() if line.get_marker() == "o"] == [[10, 50], [10, 25]]
    assert [list(line.get_ydata()) for line in cifar10.get_lines() if line.get_marker() == "o"] == [[0.5, 0.6]]
    assert [text.get_text() for text in mnist.get_legend().get_texts()] == ["ntxent", "supcon"]
