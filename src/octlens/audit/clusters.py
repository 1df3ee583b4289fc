"""Explanation clusters: groups of scans the model explains alike, found without a hypothesis
(Spectral Relevance Analysis, Lapuschkin et al., *Nat Commun* 2019).

Within each predicted class, every map is pooled to ``size x size``, clipped at zero and scaled to
unit sum (where the attention is, not how much), the scans are joined to their nearest neighbours
(a symmetric k-nearest-neighbour graph, Euclidean distance, :math:`k = \\max(3, \\ln n)`: few
neighbours, so a minority of a handful of scans is not joined to the majority), and the graph is
cut by spectral clustering. The number of clusters is the *eigengap*: with
:math:`\\lambda_1 \\le \\lambda_2 \\le \\dots` the eigenvalues of the graph's normalized Laplacian,
:math:`k = \\arg\\max_{1 \\le i \\le k_{max}} (\\lambda_{i+1} - \\lambda_i)` (a group with no
neighbour outside it is its own connected component, and counts as a cluster). A corner-reading
minority then shows up as a small cluster with a large corner share, beside the majority that
looks at the lesion.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy.sparse.csgraph import laplacian
from sklearn.cluster import SpectralClustering
from sklearn.neighbors import kneighbors_graph

#: A class needs this many scans to be clustered (fewer form one group).
MIN_SCANS = 8


def map_features(maps: torch.Tensor, size: int = 16) -> np.ndarray:
    """(N, S, S) maps -> (N, size*size): pooled, clipped at zero, unit sum (an empty map is
    spread evenly)."""
    pooled = torch.nn.functional.adaptive_avg_pool2d(maps[:, None].float(), size)[:, 0]
    pooled = pooled.clamp(min=0).flatten(1)
    total = pooled.sum(dim=1, keepdim=True)
    even = torch.full_like(pooled, 1 / pooled.shape[1])
    return torch.where(total > 0, pooled / total.clamp(min=1e-12), even).numpy()


def cluster_count(affinity: np.ndarray, max_clusters: int) -> int:
    """The eigengap choice of the number of clusters of a symmetric affinity matrix."""
    eigenvalues = np.linalg.eigvalsh(laplacian(affinity, normed=True))
    gaps = np.diff(eigenvalues[: max_clusters + 1])
    return int(np.argmax(gaps)) + 1


def cluster_maps(features: np.ndarray, max_clusters: int = 4, seed: int = 0) -> np.ndarray:
    """(N,) cluster of each row of ``features`` (0 .. k-1, largest cluster first)."""
    n = len(features)
    if n < MIN_SCANS:
        return np.zeros(n, dtype=int)
    neighbours = min(n - 1, max(3, round(np.log(n))))
    graph = kneighbors_graph(features, neighbours, include_self=False).toarray()
    affinity = np.maximum(graph, graph.T)
    count = cluster_count(affinity, max_clusters)
    if count == 1:
        return np.zeros(n, dtype=int)
    clustering = SpectralClustering(count, affinity="precomputed", random_state=seed)
    with warnings.catch_warnings():  # a separate group is the point, not a problem
        warnings.filterwarnings("ignore", "Graph is not fully connected")
        labels = clustering.fit_predict(affinity)
    order = np.argsort(-np.bincount(labels, minlength=count), kind="stable")
    return np.argsort(order)[labels]


def explanation_clusters(
    maps: torch.Tensor, predictions: torch.Tensor, max_clusters: int = 4, seed: int = 0
) -> list[tuple[int, np.ndarray]]:
    """``(predicted class, member indices)`` of every cluster, class by class; each cluster's
    members ordered from the one nearest its mean map outwards (the best examples first)."""
    features = map_features(maps)
    classes = predictions.cpu().numpy()
    groups = []
    for predicted in np.unique(classes):
        members = np.flatnonzero(classes == predicted)
        labels = cluster_maps(features[members], max_clusters, seed)
        for cluster in range(labels.max() + 1):
            chosen = members[labels == cluster]
            centre = features[chosen].mean(axis=0)
            distance = np.linalg.norm(features[chosen] - centre, axis=1)
            groups.append((int(predicted), chosen[np.argsort(distance, kind="stable")]))
    return groups
