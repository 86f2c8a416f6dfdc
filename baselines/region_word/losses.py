"""JoImTeRNet / GLoRIA losses: sentence-level and word-region matching, triplets, MLM, and their sum.

Follows docs/methods.md section 2 ("Losses [CODE]"), all with in-batch negatives:

1. sentence CE: cosine(image global, sentence) x GAMMA3, softmax CE both directions;
2. word-region CE (AttnGAN / DAMSM): every word attends over the regions of an
   image (softmax across words, x GAMMA1, softmax across regions), gets an
   attention-weighted region context, relevance = cosine(word, context); a
   caption-image score is log sum_words exp(GAMMA2 cos); scores x GAMMA3, CE both directions;
3. sentence triplet: hinge on cosine distance with one random in-batch negative per pair, the
   same index serving the image anchor (a negative text) and the text anchor (a negative image);
4. word-region triplet: the same hinge on the word-region score. Harness choice: a negative
   caption's score uses its OWN words; the authors' ``words_triplet_loss`` cuts the negative text
   at the anchor's length (``cap_lens[i]``), reading padding or dropping words when they differ;
5. MLM: cross-entropy over the selected positions only.

The objective (``total_loss``), with the paper's weights ``lambda_DAMSM`` (sentence and
word) and ``lambda_TRIPLET``::

    L_ITM = l_sent (CE_s(i->t) + CE_s(t->i)) + l_word (CE_w(i->t) + CE_w(t->i))
            + l_trip (T_s(img) + T_s(txt) + T_w(img) + T_w(txt))
    L     = L_ITM + l_mlm L_MLM                    (small / smoke: both terms every step)
    L     = L_ITM on an ITM step (p 0.3), else l_mlm L_MLM   (paper: ``is_itm_step``)

``matching_losses`` computes the ITM terms on the GLOBAL batch under DDP (the features of
every rank are gathered, so the negatives are those one process would see).

Shapes: ``B`` pairs, ``L`` tokens, ``R`` regions, ``E`` the joint dim. ``word_mask`` says
which words take part ([CLS] and padding do not).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from baselines.common import distributed
from baselines.common.seeding import step_generator
from baselines.region_word.config import RegionWordConfig


def word_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """The words that enter word-region matching: real tokens except [CLS] (position 0), as in the paper."""
    mask = attention_mask.bool().clone()
    mask[:, 0] = False
    return mask


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


def gather_pairs(*features: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every rank's ``(B/W, ...)`` features -> ``(B, ...)`` in rank order, with gradient (identity on one process).

    The one place region-word talks to other processes: the matching losses then see the
    global batch's negatives (``baselines.region_word.pretrain`` says why the gradients are exact).
    """
    return tuple(distributed.all_gather_with_grad(f) for f in features)


def matching_losses(image_global: torch.Tensor, regions: torch.Tensor, sentence: torch.Tensor, words: torch.Tensor,
                    attention_mask: torch.Tensor, cfg: RegionWordConfig, generator: torch.Generator
                    ) -> dict[str, torch.Tensor]:
    """The ITM terms (sentence and word-region CE, triplets) of the GLOBAL batch: this rank's ``(B/W, ...)``
    features are gathered with every other rank's, so the negatives are those one process would see.

    Args:
        image_global, regions, sentence, words: this rank's projected features ``(B/W, E)``,
            ``(B/W, R, E)``, ``(B/W, E)``, ``(B/W, L, E)``.
        attention_mask: ``(B/W, L)`` of the reports (the same ``L`` on every rank).
        cfg: the gammas and the margin.
        generator: draws the triplet negatives; the same on every rank under DDP.

    Returns:
        The terms by the paper trainer's names (``sent_i2t`` ... ``trip_word_txt``) and ``i2t_top1`` (a metric).
    """
    image_global, regions, sentence, words = gather_pairs(image_global, regions, sentence, words)
    words_used = word_mask(distributed.concat_all_gather(attention_mask))  # (B, L)
    sent_logits = sentence_logits(image_global, sentence, cfg.gamma3)  # (B_img, B_txt)
    word_scores = word_region_scores(words, words_used, regions, cfg.gamma1, cfg.gamma2).T  # (B_img, B_txt)
    n = sent_logits.shape[0]
    negative = random_negatives(n, generator)  # one draw for both anchors, as the authors' neg_ids
    negatives = (negative, negative)
    out: dict[str, torch.Tensor] = {}
    out["sent_i2t"], out["sent_t2i"] = bidirectional_ce(sent_logits)
    out["word_i2t"], out["word_t2i"] = bidirectional_ce(cfg.gamma3 * word_scores)
    out["trip_sent_img"], out["trip_sent_txt"] = triplet_from_similarity(sent_logits / cfg.gamma3, negatives,
                                                                               cfg.margin)
    out["trip_word_img"], out["trip_word_txt"] = triplet_from_similarity(word_scores, negatives, cfg.margin)
    out["i2t_top1"] = (sent_logits.argmax(1) == torch.arange(n, device=sent_logits.device)).float().mean()
    return out


def total_loss(terms: dict[str, torch.Tensor], cfg: RegionWordConfig, itm_step: bool | None = None
               ) -> torch.Tensor:
    """The objective ``L`` of the module docstring: the weighted sum of the terms.

    Args:
        terms: ``matching_losses``' ITM terms and ``"mlm"``.
        cfg: the weights (``weight_sentence``, ``weight_word``, ``weight_triplet``, ``weight_mlm``).
        itm_step: True / False keeps only the ITM / MLM part (the paper's sampled steps); None both.

    Returns:
        The scalar loss.
    """
    itm = (cfg.weight_sentence * (terms["sent_i2t"] + terms["sent_t2i"])
           + cfg.weight_word * (terms["word_i2t"] + terms["word_t2i"])
           + cfg.weight_triplet * (terms["trip_sent_img"] + terms["trip_sent_txt"] + terms["trip_word_img"]
                                   + terms["trip_word_txt"]))
    mlm = cfg.weight_mlm * terms["mlm"]
    if itm_step is None:
        return itm + mlm
    # The unused part is multiplied by 0, not skipped: every parameter still gets a (zero) gradient, which
    # DDP needs, and the graph is the same on every rank.
    return itm + 0.0 * mlm if itm_step else 0.0 * itm + mlm


def is_itm_step(cfg: RegionWordConfig, seed: int, step: int) -> bool | None:
    """The paper's per-step task draw, identical on every rank (rank 0's stream); None when summing."""
    if cfg.itm_probability is None:
        return None
    return bool(torch.rand((), generator=step_generator(seed, step, 0, 7)) < cfg.itm_probability)
