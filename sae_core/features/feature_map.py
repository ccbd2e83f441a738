"""The map of features: UMAP of decoder rows (cosine metric, fixed seed), one point per feature.

Decoder directions, not activations: two features that write the same direction sit together
whether or not they fire on the same tokens, and the map needs no pass over data. umap-learn is
imported here only (its numba compilation takes tens of seconds the first time).
"""
from __future__ import annotations

import logging
import warnings

import numpy as np
import torch

log = logging.getLogger(__name__)


def feature_map(W_dec_SD: torch.Tensor, seed: int = 0, n_neighbors: int = 15) -> torch.Tensor:
    """``[d_sae, 2]`` float32 coordinates. Fewer than 4 features: all at the origin (nothing to map)."""
    X = W_dec_SD.detach().float().cpu().numpy()
    S = X.shape[0]
    if S < 4:
        return torch.zeros(S, 2)
    import umap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state": seeded runs are serial
        reducer = umap.UMAP(n_components=2, metric="cosine", n_neighbors=min(n_neighbors, S - 1),
                            random_state=seed, low_memory=True, init="spectral" if S > 16 else "random")
        xy = reducer.fit_transform(X)
    return torch.from_numpy(np.ascontiguousarray(xy, dtype=np.float32))
