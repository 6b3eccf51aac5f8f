"""The 2-d t-SNE map of the test embeddings."""

from __future__ import annotations

import numpy as np
from sklearn.manifold import TSNE


def tsne_map(embeddings: np.ndarray, *, perplexity: float, max_iter: int, seed: int) -> np.ndarray:
    """2-d t-SNE coordinates (sklearn, PCA init) of the given embeddings; sklearn needs perplexity < their number.

    Computed in float64 after centring and one global rescale (dividing by the overall standard deviation), so
    features of any size (~1e8 from a collapsing encoder) neither overflow nor lose their differences; the map
    does not depend on that scale, as each point's bandwidth is fitted to the perplexity. Rows that are all the
    same point have no map: all at (0, 0) (the t-SNE stage skips such collapsed features beforehand).
    """
    x = embeddings.astype(np.float64)
    x -= x.mean(axis=0)
    spread = x.std()
    if not spread > 0:
        return np.zeros((len(x), 2))
    tsne = TSNE(n_components=2, perplexity=perplexity, max_iter=max_iter, init="pca", random_state=seed)
    return tsne.fit_transform(x / spread)
