"""Retrieval scores from embeddings: ranks of the match, recalls, R-1k blocks and class 5x200 hits.

The ``retrieval`` protocol (``harness.protocols.retrieval``) builds the gallery and embeds it; this
module turns L2-normalised image and text embeddings into per-query ranks or hits and their metrics,
and keeps each query's share of the main metric for the leaderboard's paired bootstrap
(``pair_units``, ``class_units``). Ties are pessimistic throughout: an item that scores the same as
the match is counted ahead of it. A metric at K over K or fewer candidates is NaN (``k_reason``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from harness import metrics
from harness.protocols.errors import ProtocolError

# --------------------------------------------------------------------------- ranks


def ranks(queries: torch.Tensor, gallery: torch.Tensor, relevant_of_query: torch.Tensor,
          gallery_group: torch.Tensor, max_entries: int = 2**24) -> np.ndarray:
    """Rank (1 = best, ties pessimistic) of each query's best-scored relevant gallery item.

    Gallery item ``g`` is relevant to query ``q`` iff ``gallery_group[g] == relevant_of_query[q]``.
    Query blocks of at most ``max_entries`` similarity entries (64 MiB in float32) keep memory bounded.

    Args:
        queries: ``(Q, D)`` L2-normalised.
        gallery: ``(G, D)`` L2-normalised.
        relevant_of_query: ``(Q,)`` group id each query looks for.
        gallery_group: ``(G,)`` group id of each gallery item.
    """
    block = max(1, max_entries // max(1, gallery.shape[0]))
    out = []
    for start in range(0, queries.shape[0], block):
        q = queries[start:start + block]
        scores = q @ gallery.T  # (b, G)
        relevant = gallery_group[None, :] == relevant_of_query[start:start + block, None]  # (b, G)
        if not bool(relevant.any(dim=1).all()):
            raise ProtocolError("retrieval: a query has no relevant gallery item")
        best = scores.masked_fill(~relevant, float("-inf")).max(dim=1).values  # (b,)
        ahead = ((scores >= best[:, None]) & ~relevant).sum(dim=1)  # (b,) ties count against the query
        out.append((ahead + 1).cpu())
    return torch.cat(out).numpy().astype(np.int64) if out else np.zeros(0, np.int64)


def pair_ranks(image_emb: torch.Tensor, text_emb: torch.Tensor, image_study: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """(image->text ranks over images, text->image ranks over texts) for one gallery."""
    study = torch.as_tensor(np.array(image_study, dtype=np.int64), device=image_emb.device)
    text_ids = torch.arange(text_emb.shape[0], device=text_emb.device)
    i2t = ranks(image_emb, text_emb, study, text_ids)
    t2i = ranks(text_emb, image_emb, text_ids, study)
    return i2t, t2i


def k_reason(k: int, candidates: int) -> str:
    """Why a metric at ``k`` over ``candidates`` gallery items says nothing of an encoder, or ''."""
    return (f"not measurable: K = {k} is not below the {candidates} candidates (every encoder retrieves them all)"
            if k >= candidates else "")


def recall_metrics(i2t: np.ndarray, t2i: np.ndarray, ks: list[int]) -> dict[str, float]:
    """Recall@K per direction, median ranks, and ``r_mean`` (the mean of all the recalls).

    An image query's candidates are the texts (``len(t2i)``), a text query's the images
    (``len(i2t)``): Recall@K with K >= the candidates is NaN (``k_reason``), and so is ``r_mean``.
    """
    out: dict[str, float] = {}
    for name, ranks, candidates in (("i2t", i2t, len(t2i)), ("t2i", t2i, len(i2t))):
        for k in ks:
            out[f"{name}_r{k}"] = float("nan") if k_reason(k, candidates) else metrics.recall_at_k(ranks, k)
        out[f"{name}_median_rank"] = metrics.median_rank(ranks)
    out["r_mean"] = float(np.mean([out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in ks]))  # NaN stays NaN
    return out


def block_ranks(image_emb: torch.Tensor, text_emb: torch.Tensor, block: int, seed: int
                ) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], dict[str, Any]]:
    """JoImTeRNet R-1k: per seeded block of ``block`` 1:1 pairs, its pair indices and both directions' ranks.

    Raises:
        ProtocolError: fewer pairs than one block (that would not be R-``block``).
    """
    n = image_emb.shape[0]
    if block < 1:
        raise ProtocolError(f"retrieval: block must be >= 1, got {block}")
    if n < block:
        raise ProtocolError(f"retrieval: block {block} needs at least {block} test pairs; the test gallery has {n} "
                            f"(R-{block} over {n} pairs would not be R-{block})")
    order = np.random.default_rng(seed).permutation(n)
    n_blocks = n // block
    parts = []
    for b in range(n_blocks):
        idx = order[b * block:(b + 1) * block]
        rows = torch.as_tensor(idx)
        i2t, t2i = pair_ranks(image_emb[rows], text_emb[rows], np.arange(len(idx)))
        parts.append((idx, i2t, t2i))
    return parts, {"blocks": n_blocks, "block_size": block, "pairs_outside_blocks": n - n_blocks * block}


def block_metrics(image_emb: torch.Tensor, text_emb: torch.Tensor, block: int, ks: list[int], seed: int
                  ) -> tuple[dict[str, float], dict[str, Any]]:
    """JoImTeRNet R-1k: metrics averaged over seeded blocks of ``block`` 1:1 pairs (``block_ranks``)."""
    parts, info = block_ranks(image_emb, text_emb, block, seed)
    per_block = [recall_metrics(i2t, t2i, ks) for _, i2t, t2i in parts]
    return {k: float(np.mean([m[k] for m in per_block])) for k in per_block[0]}, info


def pair_units(main: str, ks: list[int], galleries: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
               ) -> dict[str, np.ndarray]:
    """The kept per-query arrays of the main metric (``harness.metrics.paired``); {} for a median rank.

    Args:
        main: the main metric (``r_mean`` or a recall).
        ks: the K.
        galleries: per gallery (the whole one, or each block): ``(i2t ranks, t2i ranks, image patients,
            text patients)``; each (gallery, direction) is a stratum.

    Returns:
        ``groups``, ``strata`` and ``values__<main>`` over every query of every gallery.
    """
    values, strata, patients = [], [], []
    for b, (i2t, t2i, image_patients, text_patients) in enumerate(galleries):
        for d, (name, ranks, who) in enumerate((("i2t", i2t, image_patients), ("t2i", t2i, text_patients))):
            at = main[len(name) + 2:]  # "5" of "i2t_r5"
            if main == "r_mean":
                v = np.mean([ranks <= k for k in ks], axis=0)  # its share of the mean of the recalls
            elif main.startswith(f"{name}_r") and at.isdigit():
                v = ranks <= int(at)
            else:
                continue
            values.append(np.asarray(v, dtype=np.float64))
            strata.append(np.full(len(ranks), 2 * b + d))
            patients.append(np.asarray(who).astype(str))
    if not values:
        return {}
    return metrics.unit_predictions(np.concatenate(patients), {main: np.concatenate(values)}, np.concatenate(strata))


# --------------------------------------------------------------------------- class-5x200


def sample_5x200(targets: np.ndarray, per_class: int, seed: int, class_names: list[str]) -> tuple[np.ndarray,
                                                                                                   np.ndarray]:
    """Rows and class ids: ``per_class`` rows per class whose only positive is that class.

    ``targets`` is ``(N, C)`` over exactly ``class_names`` (NaN counts as not positive).
    Sampling is without replacement, from the candidates in row order, with
    ``numpy.random.default_rng(seed)``; too few candidates is an error naming the class.
    """
    positive = targets == 1.0
    single = positive.sum(axis=1) == 1
    rng = np.random.default_rng(seed)
    rows, classes = [], []
    for c, name in enumerate(class_names):
        candidates = np.flatnonzero(single & positive[:, c])
        if len(candidates) < per_class:
            raise ProtocolError(f"retrieval class-5x200: class {name!r} has {len(candidates)} studies with it as "
                                f"the only positive, fewer than per_class={per_class}")
        rows.append(np.sort(rng.choice(candidates, size=per_class, replace=False)))
        classes.append(np.full(per_class, c))
    return np.concatenate(rows), np.concatenate(classes)


def class_hits(image_emb: torch.Tensor, text_emb: torch.Tensor, classes: np.ndarray) -> dict[str, np.ndarray]:
    """Per direction, ``(N, N)`` bool: is each query's r-th retrieved item of its class (ties pessimistic)."""
    scores = (image_emb @ text_emb.T).cpu().numpy()  # (N, N): a few thousand items at most, so whole
    same_class = classes[:, None] == classes[None, :]  # (N, N) symmetric relevance
    return {name: metrics.relevance_in_rank_order(sim, same_class) for name, sim in (("i2t", scores),
                                                                                   ("t2i", scores.T))}


def class_metrics(image_emb: torch.Tensor, text_emb: torch.Tensor, classes: np.ndarray, ks: list[int]
                  ) -> dict[str, float]:
    """Hit@K and Precision@K in both directions; a retrieved item is a hit if it shares the class.

    With K >= the ``N`` items (each query's candidates) a metric is NaN (``k_reason``).
    """
    out: dict[str, float] = {}
    for name, hits in class_hits(image_emb, text_emb, classes).items():
        for k in ks:
            nan = bool(k_reason(k, hits.shape[1]))
            out[f"{name}_hit{k}"] = float("nan") if nan else metrics.hit_at_k(hits, k)
            out[f"{name}_prec{k}"] = float("nan") if nan else metrics.precision_at_k(hits, k)
    return out


def class_units(main: str, hits: dict[str, np.ndarray], image_patients: np.ndarray, text_patients: np.ndarray
                ) -> dict[str, np.ndarray]:
    """The kept per-query arrays of a 5x200 main metric (``{d}_hit{K}`` or ``{d}_prec{K}``)."""
    name, _, rest = main.partition("_")
    kind = "hit" if rest.startswith("hit") else "prec"
    k = int(rest[len(kind):])
    top = hits[name][:, :k]
    values = top.any(1) if kind == "hit" else top.sum(1) / k
    return metrics.unit_predictions(image_patients if name == "i2t" else text_patients, {main: values})
