"""The pipeline stages' figures, read back from the matplotlib figure before it is saved."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from contrastlab.infra import plots


@pytest.fixture
def drawn(monkeypatch):
    """The figures that would have been saved, still open."""
    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, path, dpi: figures.append(fig))
    return figures


def test_confusion_heatmap_colours_rates_per_actual_class_and_writes_the_counts(drawn, tmp_path):
    plots.confusion_heatmap(np.array([[3, 1], [0, 2]]), ["cat", "dog"], "probe", tmp_path / "confusion.png")
    ax = drawn[0].axes[0]
    assert ax.images[0].get_array().tolist() == [[0.75, 0.25], [0.0, 1.0]]  # 3 of 4 cats, 2 of 2 dogs
    assert [(t.get_text(), t.get_color()) for t in ax.texts] == [
        ("3", "white"),
        ("1", "black"),
        ("0", "black"),
        ("2", "white"),
    ]  # white on the dark cells
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog"]


def test_tsne_scatter_has_one_legend_entry_per_class(drawn, tmp_path):
    coords = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    plots.tsne_scatter(coords, np.array([0, 2, 2]), ["a", "b", "c"], "t-SNE", tmp_path / "tsne.png")
    ax = drawn[0].axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "c"]
    assert [len(c.get_offsets()) for c in ax.collections] == [1, 0, 2]


def test_a_placeholder_only_says_why_there_is_nothing_to_draw(drawn, tmp_path):
    message = "No t-SNE map: the embedding features collapsed: all 80 rows are 0; lower train.lr or change the recipe."
    plots.placeholder(message, "t-SNE", tmp_path / "tsne.png")
    ax = drawn[0].axes[0]
    assert [t.get_text().replace("\n", " ") for t in ax.texts] == [message]  # wrapped, every word kept
    assert ax.get_title() == "t-SNE" and not ax.collections and not ax.get_xticks().size


def test_save_writes_the_png_and_the_process_keeps_no_figure_or_backend(tmp_path):
    drawing = (
        "import sys; from pathlib import Path; from contrastlab.infra import plots; "
        f"plots.loss_curve([2.0, 1.0], 'loss', Path({str(tmp_path / 'figure.png')!r})); "
        "print('matplotlib.pyplot' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", drawing], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"  # pyplot never imported: no backend chosen, no figure kept for the process
    assert (tmp_path / "figure.png").read_bytes()[:4] == b"\x89PNG"
