"""A deterministic WordPiece vocabulary learner shared by every text model the harness trains.

HF ``tokenizers``' ``WordPieceTrainer`` breaks ties between equally frequent merges in hash-map
order, so two processes given the same reports and seed learn different vocabularies (and so
different token ids, weights and numbers). This learner runs the same algorithm with ties broken
by the pieces' strings; HF's normaliser, pre-tokeniser and greedy longest-match encoder still do
the rest.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def learn_wordpiece_vocab(word_counts: Counter[str], vocab_size: int, prefix: str = "##") -> list[str]:
    """WordPiece vocabulary by BPE-style merges of ``##``-continued characters, deterministically.

    The algorithm of HF's ``WordPieceTrainer`` (the most frequent adjacent pair of pieces is merged
    until ``vocab_size`` pieces exist), with ties broken by the pieces' strings. HF's trainer is not
    used because it numbers pieces, and so breaks ties, in hash-map order: two runs with one seed
    would get different vocabularies and different numbers.

    Example: ``{"fever": 3, "fetal": 1}`` first merges ``f`` + ``##e`` -> ``fe`` (count 4).
    """
    words = sorted(word_counts)
    seqs = [[w[0], *(prefix + c for c in w[1:])] for w in words]
    counts = [word_counts[w] for w in words]
    vocab = sorted({piece for seq in seqs for piece in seq})  # the alphabet: every piece is reachable
    known = set(vocab)
    pair_counts: dict[tuple[str, str], int] = defaultdict(int)
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, seq in enumerate(seqs):
        for pair in zip(seq, seq[1:], strict=False):
            pair_counts[pair] += counts[i]
            where[pair].add(i)
    heap = [(-c, pair) for pair, c in pair_counts.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        neg, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg or neg == 0:
            continue  # stale entry: the count changed since it was pushed
        a, b = pair
        merged = a + b[len(prefix):]
        if merged not in known:
            vocab.append(merged)
            known.add(merged)
        for i in sorted(where.pop(pair)):
            old, out, j = seqs[i], [], 0
            while j < len(old):
                if j + 1 < len(old) and old[j] == a and old[j + 1] == b:
                    out.append(merged)
                    j += 2
                else:
                    out.append(old[j])
                    j += 1
            for p in zip(old, old[1:], strict=False):
                pair_counts[p] -= counts[i]
            for p in zip(out, out[1:], strict=False):
                pair_counts[p] += counts[i]
                where[p].add(i)
            seqs[i] = out
            for p in {*zip(old, old[1:], strict=False), *zip(out, out[1:], strict=False)}:
                if pair_counts[p] > 0:
                    heapq.heappush(heap, (-pair_counts[p], p))
        pair_counts.pop(pair, None)
    return vocab
