"""PNG figures (DVC's HTML plots need a CDN, so every plot also exists as a picture)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from contrastlab.infra.files import atomic_path  # noqa: E402


def _save(fig, path: Path, dpi: int) -> None:
    with atomic_path(path) as partial:
        fig.savefig(partial, dpi=dpi)
    plt.close(fig)


def loss_curve(epoch_losses: list[float], title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
    epochs = np.arange(1, len(epoch_losses) + 1)
    ax.plot(epochs, epoch_losses, marker="o")
    ax.set(xlabel="epoch", ylabel="mean training loss", title=title)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    _save(fig, path, dpi=120)


def _scatter_classes(ax, coords: np.ndarray, labels: np.ndarray, class_names: list[str], size: float) -> None:
    """Points coloured by class (tab10: ten distinct colours), one legend entry per class."""
    cmap = plt.get_cmap("tab10")
    for c, name in enumerate(class_names):
        points = coords[labels == c]
        ax.scatter(points[:, 0], points[:, 1], s=size, color=cmap(c % 10), label=name, alpha=0.8, linewidths=0)
    ax.set(xticks=[], yticks=[])


def tsne_scatter(coords: np.ndarray, labels: np.ndarray, class_names: list[str], title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 6), layout="constrained")
    _scatter_classes(ax, coords, labels, class_names, size=8)
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=2.5, frameon=False, title="class")
    _save(fig, path, dpi=120)


def tsne_panels(panels: list[tuple[str, np.ndarray, np.ndarray]], class_names: list[str], title: str,
                path: Path) -> None:
    """Side-by-side t-SNE maps, one per (panel title, coords, labels), sharing one class legend."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels) + 1.5, 5), layout="constrained", squeeze=False)
    for ax, (panel_title, coords, labels) in zip(axes[0], panels):
        _scatter_classes(ax, coords, labels, class_names, size=5)
        ax.set_title(panel_title)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right center", markerscale=2.5, frameon=False, title="class")
    fig.suptitle(title)
    _save(fig, path, dpi=110)


def confusion_heatmap(matrix: np.ndarray, class_names: list[str], title: str, path: Path) -> None:
    """Row-normalised confusion matrix with counts written in each cell."""
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6), layout="constrained")
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(class_names))
    ax.set(xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="actual", title=title)
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    ax.set_yticklabels(class_names)
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, label="fraction of actual class")
    _save(fig, path, dpi=120)


def top1_bars(groups: dict[str, list[dict]], references: dict[str, dict[str, float]], path: Path) -> None:
    """One panel per dataset: mean probe top-1 per scenario with +-1 std error bars, the published
    value as a black marker and the baselines as horizontal lines.

    groups: dataset -> [{"label", "mean", "std", "published" (or None), optional "reference": drawn grey}];
    references: dataset -> {name: top-1}.
    """
    width = max(7.5, 0.55 * max(len(bars) for bars in groups.values()))  # room for every bar's label
    fig, axes = plt.subplots(1, len(groups), figsize=(width * len(groups), 4.8), layout="constrained", squeeze=False)
    line_styles = ["--", ":", "-."]
    for ax, (dataset, bars) in zip(axes[0], groups.items()):
        x = np.arange(len(bars))
        for kind, color, label in ((False, "tab:blue", "this project (mean, +-1 std over seeds)"),
                                   (True, "tab:gray", "best study scenario, same recipe")):
            shown = [i for i, b in enumerate(bars) if b.get("reference", False) == kind]
            if shown:
                ax.bar(x[shown], [bars[i]["mean"] for i in shown], yerr=[bars[i]["std"] for i in shown], capsize=3,
                       color=color, alpha=0.75, label=label)
        published = [(i, b["published"]) for i, b in enumerate(bars) if b["published"] is not None]
        if published:
            ax.scatter(*zip(*published), marker="D", color="black", zorder=3, label="published study")
        for (name, value), style in zip(references.get(dataset, {}).items(), line_styles * 3):
            ax.axhline(value, color="tab:red", linestyle=style, linewidth=1.2, label=f"{name}: {value:.3f}")
        ax.set_xticks(x, [b["label"].replace(" (", "\n(") for b in bars], rotation=35, ha="right")  # "(recipe)" below
        ax.set(ylabel="linear-probe top-1", title=dataset, ylim=(0, 1.32), yticks=np.linspace(0, 1, 6))
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", ncol=2)  # in the band above 1, where no bar or line reaches
    _save(fig, path, dpi=120)
