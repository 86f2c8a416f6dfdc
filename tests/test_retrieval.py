"""Retrieval: ranks equal a brute-force loop, the R-1k and 5x200 variants give hand-computed answers,
and the protocol runs end to end on the toy image-text world."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_imagetext_support import CHEXPERT_5, JointEncoder, RegionEncoder, context, task_data, toy_task

from harness import metrics
from harness.protocols import retrieval, retrieval_scores
from harness.protocols.errors import ProtocolError


def brute_force_ranks(sim: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """For each query: 1 + the number of irrelevant items scoring >= its best relevant item."""
    ranks = []
    for q in range(sim.shape[0]):
        best = max(sim[q, g] for g in range(sim.shape[1]) if relevant[q, g])
        ranks.append(1 + sum(1 for g in range(sim.shape[1]) if not relevant[q, g] and sim[q, g] >= best))
    return np.array(ranks)


def test_ranks_equal_brute_force_with_many_images_per_study_and_ties():
    rng = np.random.default_rng(0)
    image_study = np.array([0, 0, 1, 2, 2, 2, 3, 4, 5, 5])
    images = F.normalize(torch.from_numpy(rng.integers(-2, 3, (10, 4))).float() + 1e-3, dim=1)
    texts = F.normalize(torch.from_numpy(rng.integers(-2, 3, (6, 4))).float() + 1e-3, dim=1)
    i2t, t2i = retrieval_scores.pair_ranks(images, texts, image_study)
    sim = (images @ texts.T).numpy()
    relevant = image_study[:, None] == np.arange(6)[None, :]  # (images, texts)
    assert np.array_equal(i2t, brute_force_ranks(sim, relevant))
    assert np.array_equal(t2i, brute_force_ranks(sim.T, relevant.T))
    # 1:1 pairs: the same as the metrics module's dense ranks
    i2t_pairs, _ = retrieval_scores.pair_ranks(images[:6], texts, np.arange(6))
    assert np.array_equal(i2t_pairs, metrics.ranks_from_similarity(sim[:6], np.arange(6)))


def test_ranks_are_the_same_in_small_query_blocks():
    gen = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(50, 8, generator=gen), dim=1)
    texts = F.normalize(images + 0.8 * torch.randn(50, 8, generator=gen), dim=1)
    dense = metrics.ranks_from_similarity((images @ texts.T).numpy(), np.arange(50))
    ids = torch.arange(50)
    for max_entries in (1, 120, 50 * 50):  # 1 and 2 queries per block, then one block
        assert np.array_equal(retrieval_scores.ranks(images, texts, ids, ids, max_entries=max_entries), dense)


def test_constant_encoder_ranks_every_match_last():
    same = F.normalize(torch.ones(6, 3), dim=1)
    i2t, t2i = retrieval_scores.pair_ranks(same, same, np.arange(6))
    assert i2t.tolist() == [6] * 6 and t2i.tolist() == [6] * 6


def test_block_variant_known_answers():
    same = F.normalize(torch.ones(7, 3), dim=1)  # a constant encoder: every item ties
    full = retrieval_scores.recall_metrics(*retrieval_scores.pair_ranks(same, same, np.arange(7)), [1, 5, 10])
    blocks, info = retrieval_scores.block_metrics(same, same, block=3, ks=[1, 5, 10], seed=0)
    assert info == {"blocks": 2, "block_size": 3, "pairs_outside_blocks": 1}
    # in a block of 3 every rank is 3: R@1 = 0; R@5 over 3 candidates is 1 for ANY encoder: not measurable
    assert blocks["i2t_r1"] == 0 and np.isnan(blocks["i2t_r5"]) and blocks["t2i_median_rank"] == 3
    assert np.isnan(blocks["r_mean"])  # it averages R@5 and R@10
    # over all 7 the rank is 7: R@5 = 0; R@10 over 7 candidates is not measurable
    assert full["i2t_r5"] == 0 and np.isnan(full["i2t_r10"]) and full["i2t_median_rank"] == 7
    eye = torch.eye(8)  # perfect pairs: perfect in any block
    perfect, info = retrieval_scores.block_metrics(eye, eye, block=4, ks=[1], seed=3)
    assert perfect["i2t_r1"] == perfect["t2i_r1"] == 1.0 and info["blocks"] == 2
    with pytest.raises(ProtocolError, match=r"block 1000 needs at least 1000 test pairs; the test gallery has 8"):
        retrieval_scores.block_metrics(eye, eye, block=1000, ks=[1], seed=0)  # R-1k over 8 pairs is not R-1k


def test_5x200_sampling_and_known_answers():
    targets = np.zeros((30, 5))
    targets[np.arange(30), np.arange(30) % 5] = 1
    targets[0, 1] = 1  # two positives: never sampled
    targets[1, 2] = np.nan  # unknown is not positive: still a single-positive row
    rows, classes = retrieval_scores.sample_5x200(targets, per_class=2, seed=0, class_names=list(CHEXPERT_5))
    assert 0 not in rows and len(rows) == 10 and np.bincount(classes).tolist() == [2] * 5
    again, _ = retrieval_scores.sample_5x200(targets, per_class=2, seed=0, class_names=list(CHEXPERT_5))
    assert np.array_equal(rows, again)
    assert all(targets[r, c] == 1 for r, c in zip(rows, classes, strict=True))
    with pytest.raises(ProtocolError, match="Atelectasis"):
        retrieval_scores.sample_5x200(targets, per_class=6, seed=0, class_names=list(CHEXPERT_5))

    # class one-hot + a tiny unique offset: every item's nearest items are its own class
    emb = F.normalize(torch.eye(5)[torch.as_tensor(classes)] + 1e-3 * torch.randn(10, 5), dim=1)
    m = retrieval_scores.class_metrics(emb, emb, classes, ks=[1, 2, 5])
    assert m["i2t_hit1"] == m["i2t_prec1"] == m["i2t_prec2"] == 1.0
    assert m["i2t_prec5"] == pytest.approx(2 / 5) and m["t2i_hit5"] == 1.0
    flipped = retrieval_scores.class_metrics(emb, -emb, classes, ks=[1, 2])  # the worst possible encoder
    assert flipped["i2t_hit1"] == 0.0 and flipped["i2t_prec2"] == 0.0


def test_gallery_relation(tmp_path):
    data = task_data(task=toy_task(views=None), empty_every=7)
    g, counts = retrieval.build_gallery(data.test.frame, "test", ["findings", "impression"], "one-per-study")
    frame = data.test.frame
    assert len(g.texts) == len(g.split_rows) == frame.loc[frame["findings"] != "", "study_id"].nunique()
    assert set(frame.iloc[g.split_rows]["view"]) == {"PA"}  # the frontal image represents its study
    assert counts["studies_without_text"] == frame.loc[frame["findings"] == "", "study_id"].nunique() > 0
    assert g.texts[0].startswith("there is ") and "\n\nno other acute process" in g.texts[0]
    every, _ = retrieval.build_gallery(frame, "test", ["findings"], "all-images")
    assert len(every.split_rows) == int((frame["findings"] != "").sum()) > len(g.split_rows)
    assert len(every.texts) == len(g.texts)


def test_run_matches_brute_force_and_reports(tmp_path):
    data = task_data(task=toy_task(views=None))
    ctx = context(data, JointEncoder(), tmp_path, args={"gallery": "all-images", "n_bootstrap": 50})
    result = retrieval.run(ctx)
    image, text = result.predictions["image_embeddings"], result.predictions["text_embeddings"]
    study = result.predictions["image_to_text_index"]
    relevant = study[:, None] == np.arange(len(text))[None, :]
    sim = image @ text.T
    i2t, t2i = brute_force_ranks(sim, relevant), brute_force_ranks(sim.T, relevant.T)
    for k in (1, 5, 10):
        assert result.metrics[f"i2t_r{k}"] == pytest.approx(np.mean(i2t <= k))
        assert result.metrics[f"t2i_r{k}"] == pytest.approx(np.mean(t2i <= k))
    assert result.metrics["i2t_median_rank"] == np.median(i2t)
    assert len(image) > len(text)  # laterals are gallery items too
    lo, hi = result.ci["i2t_r10"]
    assert lo <= result.metrics["i2t_r10"] <= hi
    # with --save-predictions: the embeddings; always: the per-query arrays of the paired bootstrap
    assert set(result.predictions) == {"image_embeddings", "text_embeddings", "image_to_text_index", "groups",
                                       "strata", "values__r_mean"}
    assert all(isinstance(v, np.ndarray) and v.dtype.kind in "fiu" for v in result.predictions.values())


def test_run_variants_end_to_end(tmp_path):
    data = task_data(n_studies=200)
    enc = JointEncoder()
    full = retrieval.run(context(data, enc, tmp_path, args={"n_bootstrap": 20}))
    # this encoder only knows the class: an image's own report ties with its classmates', and
    # pessimistic ties put them all ahead of it
    assert full.metrics["i2t_r1"] == 0 < full.metrics["i2t_r10"]
    blocked = retrieval.run(context(data, enc, tmp_path, args={"block": 12}))
    assert blocked.details["blocks"] == full.details["n_images"] // 12
    assert blocked.metrics["i2t_median_rank"] < full.metrics["i2t_median_rank"]
    # in blocks of 4 every rank is <= 4: R@5 and R@10, and so r_mean, say nothing: refused
    with pytest.raises(ProtocolError, match=r"r_mean is not measurable: it averages \['i2t_r5', 'i2t_r10'"):
        retrieval.run(context(data, enc, tmp_path, args={"block": 4}))
    data.task = toy_task(metrics=("i2t_prec1", "t2i_hit5"), main_metric="i2t_prec1")
    cls = retrieval.run(context(data, enc, tmp_path, args={"mode": "class-5x200", "per_class": 3,
                                                           "pool_splits": ["val", "test"]}))
    assert cls.details["n_items"] == 15 and cls.metrics["i2t_prec1"] == 1.0 and cls.metrics["t2i_hit5"] == 1.0


def test_run_refuses_what_it_cannot_score(tmp_path):
    data = task_data()
    with pytest.raises(ProtocolError, match="unknown protocol arg"):
        retrieval.run(context(data, JointEncoder(), tmp_path, args={"blocks": 3}))
    with pytest.raises(ProtocolError, match="zero-shot"):
        retrieval.run(context(data, JointEncoder(), tmp_path, fraction=0.1))
    with pytest.raises(ProtocolError, match="pool_splits"):
        retrieval.run(context(data, JointEncoder(), tmp_path, args={"mode": "class-5x200", "pool_splits": ["dev"]}))
    with pytest.raises(ProtocolError, match=r"cannot compute metric\(s\) \['r_mean'\]"):
        retrieval.run(context(data, JointEncoder(), tmp_path, args={"mode": "class-5x200"}))
    with pytest.raises(ProtocolError, match="1:1"):
        retrieval.run(context(data, JointEncoder(), tmp_path, args={"block": 3, "gallery": "all-images"}))

    class Mismatched(RegionEncoder):
        def encode_text(self, texts):
            return torch.ones(len(texts), 3)

    with pytest.raises(ProtocolError, match="one space"):
        retrieval.run(context(data, Mismatched(), tmp_path))
