"""JoImTeRNet / GLoRIA losses: sentence-level and word-region matching, triplets, MLM.

Follows specs/methods.md section 2 ("Losses [CODE]"), all with in-batch negatives:

1. sentence CE: cosine(image global, sentence) x GAMMA3, softmax CE both directions;
2. word-region CE (AttnGAN / DAMSM): every word attends over the regions of an
   image (softmax across words, x GAMMA1, softmax across regions), gets an
   attention-weighted region context, relevance = cosine(word, context); a
   caption-image score is log sum_words exp(GAMMA2 cos); scores x GAMMA3, CE both directions;
3. sentence triplet: hinge on cosine distance with one random in-batch negative, both anchors;
4. word-region triplet: the same hinge on the word-region score;
5. MLM: cross-entropy over the selected positions only.

Shapes: ``B`` pairs, ``L`` tokens, ``R`` regions, ``E`` the joint dim. ``word_mask``
is True for the words that take part ([CLS] and padding are excluded by the caller).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sentence_logits(images: torch.Tensor, sentences: torch.Tensor, gamma3: float) -> torch.Tensor:
    """``(B, E), (B, E) -> (B_img, B_txt)`` cosine similarities x GAMMA3."""
    return gamma3 * F.normalize(images.float(), dim=-1) @ F.normalize(sentences.float(), dim=-1).T


def word_region_attention(words: torch.Tensor, word_mask: torch.Tensor, regions: torch.Tensor, gamma1: float
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each word's attention over regions and its attention-weighted region context (paired inputs).

    ``words (B, L, E), word_mask (B, L) bool, regions (B, R, E) -> attention (B, L, R), context (B, L, E)``.
    AttnGAN order: softmax over words (masked words get no share), x GAMMA1, then softmax over regions.
    Masked words get a uniform (harmless) attention row; callers ignore them.
    """
    scores = words.float() @ regions.float().transpose(1, 2)  # (B, L, R)
    scores = scores.masked_fill(~word_mask[:, :, None], float("-inf"))
    over_words = torch.softmax(scores, dim=1).nan_to_num(0.0)  # (B, L, R); a caption with no word: all 0
    attention = torch.softmax(gamma1 * over_words, dim=2)  # (B, L, R), rows sum to 1
    context = attention @ regions.float()  # (B, L, E)
    return attention, context


def word_region_scores(words: torch.Tensor, word_mask: torch.Tensor, regions: torch.Tensor, gamma1: float,
                       gamma2: float) -> torch.Tensor:
    """``(B_t, L, E), (B_t, L), (B_i, R, E) -> (B_t, B_i)``: log sum_words exp(GAMMA2 cos(word, context)).

    Loops over images so memory stays O(B_t L E) (the paper's batch 128 x 160 words x 256 regions).
    """
    columns = []
    for j in range(regions.shape[0]):
        region_j = regions[j:j + 1].expand(words.shape[0], -1, -1)  # (B_t, R, E)
        _, context = word_region_attention(words, word_mask, region_j, gamma1)
        relevance = F.cosine_similarity(words.float(), context, dim=-1, eps=1e-8)  # (B_t, L)
        relevance = (gamma2 * relevance).masked_fill(~word_mask, float("-inf"))
        columns.append(torch.logsumexp(relevance, dim=1))  # (B_t,)
    return torch.stack(columns, dim=1)  # (B_t, B_i)


def bidirectional_ce(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax CE over rows and over columns of a square matrix whose diagonal holds the pairs."""
    target = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, target), F.cross_entropy(logits.T, target)


def random_negatives(n: int, generator: torch.Generator) -> torch.Tensor:
    """One in-batch negative per anchor: index ``(i + k) mod n`` with ``k`` uniform in 1..n-1 (never i)."""
    if n < 2:
        raise ValueError("triplet losses need at least 2 pairs in a batch")
    return (torch.arange(n) + torch.randint(1, n, (n,), generator=generator)) % n


def triplet_from_similarity(similarity: torch.Tensor, negatives: tuple[torch.Tensor, torch.Tensor],
                            margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Hinge ``relu(d(pos) - d(neg) + margin)`` with ``d = -similarity`` both ways.

    ``similarity (B, B)`` is indexed [image, text]. Image-anchored: the negative is another text;
    text-anchored: another image. ``negatives`` = (text index per image, image index per text).
    """
    i = torch.arange(similarity.shape[0], device=similarity.device)
    neg_text, neg_image = (n.to(similarity.device) for n in negatives)
    positive = similarity[i, i]
    image_anchor = F.relu(similarity[i, neg_text] - positive + margin).mean()
    text_anchor = F.relu(similarity[neg_image, i] - positive + margin).mean()
    return image_anchor, text_anchor


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE of the ``(M, V)`` logits at the selected positions against their ``(M,)`` original ids;
    0 (still in the graph) when no position was selected."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels)
