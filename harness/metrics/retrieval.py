"""Retrieval metrics: ranks of the matching item, recall / precision / hits at K.

``ranks`` are 1-based ranks of the matching item per query (``ranks_from_similarity``);
``relevance`` is a ``(Q, N)`` bool matrix of relevance in ranked order
(``relevance_in_rank_order``). Ties are pessimistic everywhere: an item that scores the same
as a relevant one is counted ahead of it. A metric at ``K`` over a gallery of ``N <= K``
items is the same for every encoder; the protocols report it as not measurable.
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
    """``(Q, N)`` bool: ``relevant`` reordered by descending similarity per query, ties pessimistic.

    Among items that score the same, the irrelevant ones come first, as in
    ``ranks_from_similarity``: a constant encoder finds nothing relevant in its top K,
    whatever the gallery's order (breaking ties by gallery order made it score by how the
    gallery happened to be sorted).
    """
    relevant = np.asarray(relevant, dtype=bool)
    order = np.lexsort((relevant, -np.asarray(similarity, dtype=np.float64)), axis=1)  # by -sim, then False first
    return np.take_along_axis(relevant, order, axis=1)


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Fraction of queries whose match is in the top ``k`` (image-text retrieval R@K)."""
    return float(np.mean(np.asarray(ranks) <= k))


def median_rank(ranks: np.ndarray) -> float:
    """Median 1-based rank of the match (lower is better)."""
    return float(np.median(np.asarray(ranks)))


def hit_at_k(relevance: np.ndarray, k: int) -> float:
    """Fraction of queries with at least one relevant item in the top ``k`` (``relevance_in_rank_order``)."""
    return float(np.mean(np.asarray(relevance, dtype=bool)[:, :k].any(1)))


def precision_at_k(relevance: np.ndarray, k: int) -> float:
    """Mean over queries of the number of relevant items in the top ``k``, divided by ``k``.

    Always by ``k``, also when a gallery has fewer than ``k`` items (dividing by ``min(k, N)``
    turned "the whole gallery" into a precision). With ``k >= N`` every encoder retrieves the
    whole gallery, so the value says nothing of it: the retrieval protocol reports such a
    metric as not measurable.
    """
    return float(np.mean(np.asarray(relevance, dtype=bool)[:, :k].sum(1) / k))
