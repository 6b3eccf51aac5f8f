"""The 2-d t-SNE map of the test embeddings."""

from __future__ import annotations

import numpy as np
from sklearn.manifold import TSNE


def tsne_map(embeddings: np.ndarray, *, perplexity: float, max_iter: int, seed: int) -> np.ndarray:
    """2-d t-SNE coordinates (sklearn, PCA init) of the given embeddings."""
    perplexity = min(perplexity, (len(embeddings) - 1) / 3)  # sklearn needs perplexity < n_samples
    tsne = TSNE(n_components=2, perplexity=perplexity, max_iter=max_iter, init="pca", random_state=seed)
    return tsne.fit_transform(embeddings.astype(np.float32))
