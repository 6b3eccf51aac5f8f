import subprocess
import sys

import numpy as np
import pytest
import yaml
from sklearn.manifold import TSNE

from contrastlab.pipeline.tsne import tsne_map
from project import ROOT, committed_params

RNG = np.random.default_rng(0)
LABELS = np.tile(np.arange(10), 10)
CLUSTERS = np.eye(10)[LABELS] * 10 + RNG.normal(0, 0.1, (100, 10))  # ten tight, well separated clusters


def assert_clusters_apart(coords):
    centres = np.array([coords[LABELS == c].mean(0) for c in range(10)])
    spread = np.mean([np.linalg.norm(coords[LABELS == c] - centres[c], axis=1).mean() for c in range(10)])
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=2)[~np.eye(10, dtype=bool)]
    assert gaps.min() > 2 * spread


def test_tsne_is_seeded_and_keeps_clusters_apart():
    a = tsne_map(CLUSTERS, perplexity=20, max_iter=500, seed=0)
    b = tsne_map(CLUSTERS, perplexity=20, max_iter=500, seed=0)
    assert a.shape == (100, 2) and np.allclose(a, b)
    assert_clusters_apart(a)


def test_features_of_1e8_are_mapped_in_float64_after_a_global_rescale():
    huge = (1e8 + CLUSTERS * 1e8).astype(np.float32)  # a collapsing encoder's backbone: ~1e8, squares ~1e16
    coords = tsne_map(huge, perplexity=20, max_iter=500, seed=0)
    assert np.isfinite(coords).all()
    assert_clusters_apart(coords)


def test_identical_rows_are_all_at_the_origin_without_running_tsne(monkeypatch):
    monkeypatch.setattr("contrastlab.pipeline.tsne.TSNE", None)  # calling it would fail
    assert tsne_map(np.full((5, 3), 1e8, dtype=np.float32), perplexity=2, max_iter=250, seed=0).tolist() == [[0, 0]] * 5


def test_sklearn_needs_perplexity_below_the_number_of_points():
    """The condition the tsne stage checks before calling it (it no longer lowers a perplexity quietly)."""
    points = CLUSTERS[:30]
    with pytest.raises(ValueError, match=r"perplexity \(30\) must be less than n_samples \(30\)"):
        TSNE(perplexity=30, max_iter=250, init="pca").fit_transform(points)
    assert np.isfinite(TSNE(perplexity=29.5, max_iter=250, init="pca", random_state=0).fit_transform(points)).all()


def run_stage(tmp_path, embeddings: np.ndarray, **tsne) -> subprocess.CompletedProcess:
    """The tsne stage as DVC runs it, on `embeddings` of images labelled 0..9 in turn, with `tsne` params."""
    params = committed_params()
    params["tsne"].update(tsne)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    np.savez(
        tmp_path / "embeddings.npz", labels=np.arange(len(embeddings)) % 10, embedding=embeddings, backbone=embeddings
    )
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "stages" / "tsne.py"),
            "--embeddings",
            "embeddings.npz",
            "--csv",
            "tsne.csv",
            "--png",
            "tsne.png",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )


def test_the_stage_refuses_a_perplexity_of_at_least_the_points_in_one_line(tmp_path):
    result = run_stage(tmp_path, CLUSTERS[:40], n_points=30, perplexity=30)
    assert result.returncode == 2
    assert result.stderr == (
        "error: params.yaml: tsne.perplexity=30 but the map has only 30 points; use a perplexity "
        "below 30 or more tsne.n_points (at most 40)\n"
    )
    result = run_stage(tmp_path, CLUSTERS[:40], n_points="all", perplexity=40.5)
    assert result.stderr == (
        "error: params.yaml: tsne.perplexity=40.5 but the map has only 40 points; use a perplexity below 40\n"
    )
    assert not (tmp_path / "tsne.csv").exists() and not (tmp_path / "tsne.png").exists()


def test_the_stage_maps_collapsed_features_to_the_origin_and_says_so(tmp_path):
    result = run_stage(tmp_path, np.zeros((40, 4), dtype=np.float32), n_points=30, perplexity=5)
    assert result.returncode == 0 and result.stderr == ""
    warning = "the embedding features collapsed: all 30 rows are 0; lower train.lr or change the recipe"
    assert result.stdout.splitlines() == [
        f"warning: {warning}",
        "no t-SNE of 30 collapsed points: all at (0, 0) in tsne.csv, tsne.png says why",
    ]
    rows = (tmp_path / "tsne.csv").read_text().splitlines()
    assert rows[0] == "x,y,class" and rows[1:3] == ["0.0000,0.0000,0", "0.0000,0.0000,1"] and len(rows) == 31
    assert (tmp_path / "tsne.png").read_bytes()[:4] == b"\x89PNG"
