"""PNG figures of the pipeline stages (DVC's HTML plots need a CDN, so every plot also exists as a picture).

The study report's figures are in `contrastlab.study.figures`: the train stage imports this module, and
a report chart must not make DVC retrain an encoder.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from contrastlab.infra.files import atomic_path


def agg_figure(width: float, height: float) -> Figure:
    """A figure drawn by Agg (PNG), outside pyplot: no backend is chosen for the process and nothing global is kept."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure(width: float, height: float) -> tuple[Figure, matplotlib.axes.Axes]:
    fig = agg_figure(width, height)
    return fig, fig.subplots()


def save(fig: Figure, path: Path, dpi: int) -> None:
    """Write the figure all at once (a half-written PNG never shows)."""
    with atomic_path(path) as partial:
        fig.savefig(partial, dpi=dpi)


def loss_curve(epoch_losses: list[float], title: str, path: Path) -> None:
    fig, ax = figure(5, 3.5)
    epochs = np.arange(1, len(epoch_losses) + 1)
    ax.plot(epochs, epoch_losses, marker="o")
    ax.set(xlabel="epoch", ylabel="mean training loss", title=title)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    save(fig, path, dpi=120)


def scatter_classes(ax, coords: np.ndarray, labels: np.ndarray, class_names: list[str], size: float) -> None:
    """Points coloured by class (tab10: ten distinct colours), one legend entry per class."""
    cmap = matplotlib.colormaps["tab10"]
    for c, name in enumerate(class_names):
        points = coords[labels == c]
        ax.scatter(points[:, 0], points[:, 1], s=size, color=cmap(c % 10), label=name, alpha=0.8, linewidths=0)
    ax.set(xticks=[], yticks=[])


def tsne_scatter(coords: np.ndarray, labels: np.ndarray, class_names: list[str], title: str, path: Path) -> None:
    fig, ax = figure(7, 6)
    scatter_classes(ax, coords, labels, class_names, size=8)
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=2.5, frameon=False, title="class")
    save(fig, path, dpi=120)


def placeholder(message: str, title: str, path: Path) -> None:
    """A figure that only says why there is nothing to draw (e.g. no t-SNE map of collapsed features)."""
    fig, ax = figure(7, 6)
    ax.text(0.5, 0.5, textwrap.fill(message, 60), ha="center", va="center", transform=ax.transAxes)
    ax.set(xticks=[], yticks=[], title=title)
    save(fig, path, dpi=120)


def confusion_heatmap(matrix: np.ndarray, class_names: list[str], title: str, path: Path) -> None:
    """Row-normalised confusion matrix with counts written in each cell."""
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = figure(7, 6)
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(class_names))
    ax.set(xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="actual", title=title)
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    ax.set_yticklabels(class_names)
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            ax.text(
                j,
                i,
                str(matrix[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if rates[i, j] > 0.5 else "black",
            )
    fig.colorbar(image, ax=ax, label="fraction of actual class")
    save(fig, path, dpi=120)
