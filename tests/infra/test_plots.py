"""The figures' content, read back from the matplotlib figure before it is saved."""

from __future__ import annotations

import matplotlib.colors as mcolors
import pytest

from contrastlab.infra import plots


@pytest.fixture
def drawn(monkeypatch, tmp_path):
    """The figures that would have been saved, still open."""
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, dpi: figures.append(fig))
    return figures


def test_top1_bars_draw_reference_bars_grey_and_keep_the_legend_above_every_bar(drawn, tmp_path):
    bars = [{"label": "ntxent / simclr (tuned recipe)", "mean": 0.9, "std": 0.01, "published": None},
            {"label": "triplet / simclr (tuned recipe)", "mean": 0.95, "std": 0.0, "published": None, "reference": True}]
    plots.top1_bars({"mnist": bars}, {"mnist": {"raw pixels": 0.91}}, tmp_path / "top1.png")
    ax = drawn[0].axes[0]
    colours = [mcolors.to_hex(patch.get_facecolor(), keep_alpha=False) for patch in ax.patches]
    assert colours == [mcolors.to_hex("tab:blue"), mcolors.to_hex("tab:gray")]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "raw pixels: 0.910", "this project (mean, +-1 std over seeds)", "best study scenario, same recipe"]
    assert ax.get_xticklabels()[0].get_text() == "ntxent / simclr\n(tuned recipe)"
    assert ax.get_ylim()[1] > 1.2 and max(ax.get_yticks()) == 1.0  # the band above 1 is the legend's
