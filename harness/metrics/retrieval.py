"""Retrieval metrics: ranks of the matching item, recall / precision / hits at K.

``ranks`` are 1-based ranks of the matching item per query (``ranks_from_similarity``);
``relevance`` is a ``(Q, N)`` bool matrix of relevance in ranked order
(``relevance_in_rank_order``).
"""

from __future__ import annotations

import numpy as np


def ranks_from_similarity(similarity: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of each query's matching item; ties count against the query.

    ``similarity`` is ``(Q, N)``, ``targets`` ``(Q,)`` the index of each query's
    match. Rank = number of items scoring >= the match (pessimistic), so a
    constant encoder ranks every match last instead of first.
    """
    similarity = np.asarray(similarity)
    targets = np.asarray(targets, dtype=np.int64)
    true = similarity[np.arange(len(targets)), targets][:, None]
    return (similarity >= true).sum(1).astype(np.int64)


def relevance_in_rank_order(similarity: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """``(Q, N)`` bool: ``relevant`` reordered by descending similarity per query (stable)."""
    order = np.argsort(-np.asarray(similarity), axis=1, kind="stable")
    return np.take_along_axis(np.asarray(relevant, dtype=bool), order, axis=1)


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Fraction of queries whose match is in the top ``k`` (image-text retrieval R@K)."""
    return float(np.mean(np.asarray(ranks) <= k))


def median_rank(ranks: np.ndarray) -> float:
    """Median 1-based rank of the match (lower is better)."""
    return float(np.median(np.asarray(ranks)))


def hit_at_k(relevance: np.ndarray, k: int) -> float:
    """Fraction of queries with at least one relevant item in the top ``k``."""
    return float(np.mean(np.asarray(relevance, dtype=bool)[:, :k].any(1)))


def precision_at_k(relevance: np.ndarray, k: int) -> float:
    """Mean over queries of the fraction of the top ``k`` that is relevant."""
    return float(np.mean(np.asarray(relevance, dtype=bool)[:, :k].mean(1)))
