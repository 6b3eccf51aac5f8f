import numpy as np

from contrastlab.pipeline.tsne import tsne_map

RNG = np.random.default_rng(0)


def test_tsne_is_seeded_and_keeps_clusters_apart():
    labels = np.tile(np.arange(10), 10)
    points = np.eye(10)[labels] * 10 + RNG.normal(0, 0.1, (100, 10))
    a = tsne_map(points, perplexity=20, max_iter=500, seed=0)
    b = tsne_map(points, perplexity=20, max_iter=500, seed=0)
    assert a.shape == (100, 2) and np.allclose(a, b)
    centres = np.array([a[labels == c].mean(0) for c in range(10)])
    spread = np.mean([np.linalg.norm(a[labels == c] - centres[c], axis=1).mean() for c in range(10)])
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=2)[~np.eye(10, dtype=bool)]
    assert gaps.min() > 2 * spread
