"""harness.metrics against scikit-learn / scikit-image on random and edge-case inputs."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from harness import metrics as M


def _random(seed: int, n: int = 150, labels: int = 4, rounding: int = 1):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, labels)) < 0.3).astype(float)
    s = np.round(rng.normal(size=(n, labels)) + y, rounding)  # rounding makes ties
    return y, s


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_auprc_match_sklearn_with_ties(seed):
    y, s = _random(seed)
    for j in range(y.shape[1]):
        assert M.auroc_per_label(y, s)[j] == pytest.approx(roc_auc_score(y[:, j], s[:, j]), abs=1e-12)
        assert M.auprc_per_label(y, s)[j] == pytest.approx(average_precision_score(y[:, j], s[:, j]), abs=1e-12)
    assert M.auroc_macro(y, s) == pytest.approx(roc_auc_score(y, s, average="macro"), abs=1e-12)
    assert M.auprc_macro(y, s) == pytest.approx(average_precision_score(y, s, average="macro"), abs=1e-12)
    assert M.auroc_micro(y, s) == pytest.approx(roc_auc_score(y, s, average="micro"), abs=1e-12)


def test_nan_targets_are_ignored_per_label():
    y, s = _random(3)
    y_nan = y.copy()
    y_nan[::5, 1] = np.nan
    keep = ~np.isnan(y_nan[:, 1])
    assert M.auroc_per_label(y_nan, s)[1] == pytest.approx(roc_auc_score(y[keep, 1], s[keep, 1]))
    assert M.auroc_per_label(y_nan, s)[0] == pytest.approx(roc_auc_score(y[:, 0], s[:, 0]))
    flat = ~np.isnan(y_nan.ravel())
    assert M.auroc_micro(y_nan, s) == pytest.approx(roc_auc_score(y_nan.ravel()[flat], s.ravel()[flat]))


def test_single_class_label_is_skipped_and_reported():
    y, s = _random(4)
    y[:, 2] = 0
    value, skipped = M.auroc_macro(y, s, return_skipped=True)
    assert skipped == [2]
    assert value == pytest.approx(np.mean([roc_auc_score(y[:, j], s[:, j]) for j in (0, 1, 3)]))
    assert np.isnan(M.auprc_per_label(y, s)[2])
    assert np.isnan(M.auroc_macro(np.zeros((5, 2)), np.ones((5, 2))))


def test_perfect_inverted_and_constant_scores():
    y = np.array([0, 0, 1, 1, 0, 1.0])
    assert M.auroc_macro(y, y) == 1.0
    assert M.auroc_macro(y, -y) == 0.0
    assert M.auroc_macro(y, np.zeros(6)) == 0.5
    assert M.auprc_macro(y, y) == 1.0
    assert M.auprc_macro(y, np.zeros(6)) == pytest.approx(average_precision_score(y, np.zeros(6)))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="shape"):
        M.auroc_macro(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="1, 0 or NaN"):
        M.auroc_macro(np.array([0, 2.0]), np.zeros(2))
    with pytest.raises(ValueError, match="NaN or inf"):
        M.auroc_macro(np.array([0, 1.0]), np.array([0, np.nan]))


@pytest.mark.parametrize("seed", [0, 5])
def test_f1_threshold_chosen_on_val_matches_sklearn(seed):
    y_val, s_val = _random(seed)
    y_test, s_test = _random(seed + 100)
    thresholds = M.choose_thresholds(y_val, s_val)
    for j in range(y_val.shape[1]):  # the chosen threshold is the best among all candidates
        best = max(f1_score(y_val[:, j], s_val[:, j] >= t) for t in np.unique(s_val[:, j]))
        assert f1_score(y_val[:, j], s_val[:, j] >= thresholds[j]) == pytest.approx(best)
    expected = f1_score(y_test, s_test >= thresholds, average="macro", zero_division=0)
    assert M.f1_at(y_test, s_test, thresholds) == pytest.approx(expected)


def test_f1_label_without_val_positive_predicts_negative():
    y_val, s_val = _random(7)
    y_val[:, 0] = 0
    assert np.isinf(M.choose_thresholds(y_val, s_val)[0])


def test_retrieval_metrics():
    sim = np.array([[0.9, 0.1, 0.5], [0.2, 0.2, 0.1], [0.0, 0.3, 0.3]])
    ranks = M.ranks_from_similarity(sim, np.array([0, 1, 2]))
    assert ranks.tolist() == [1, 2, 2]  # ties count against the query
    assert M.recall_at_k(ranks, 1) == pytest.approx(1 / 3)
    assert M.median_rank(ranks) == 2
    relevance = M.relevance_in_rank_order(sim, np.array([[0, 0, 1], [1, 0, 0], [1, 0, 0]]))
    # row 1 ties its relevant item with an irrelevant one: pessimistic, the irrelevant one first
    assert relevance.tolist() == [[False, True, False], [False, True, False], [False, False, True]]
    assert M.hit_at_k(relevance, 1) == 0.0
    assert M.hit_at_k(relevance, 2) == pytest.approx(2 / 3)
    assert M.precision_at_k(relevance, 2) == pytest.approx((0.5 + 0.5 + 0) / 3)
    assert M.METRICS["recall_at_5"](np.array([1, 6])) == 0.5


@pytest.mark.parametrize("seed", [0, 1])
def test_psnr_ssim_match_skimage(seed):
    rng = np.random.default_rng(seed)
    x = rng.random((2, 33, 40))
    y = np.clip(x + rng.normal(scale=0.1, size=x.shape), 0, 1)
    for i in range(2):
        assert M.psnr(x[i], y[i], 1.0) == pytest.approx(peak_signal_noise_ratio(x[i], y[i], data_range=1.0),
                                                        abs=1e-6)
        assert M.ssim(x[i], y[i], 1.0) == pytest.approx(structural_similarity(x[i], y[i], data_range=1.0), abs=1e-6)
        ref = structural_similarity(x[i], y[i], data_range=1.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
        got = M.ssim(x[i], y[i], 1.0, gaussian_weights=True, win_size=None, use_sample_covariance=False)
        assert got == pytest.approx(ref, abs=1e-6)
        assert M.ssim(x[i], y[i], 2.0, win_size=5) == pytest.approx(
            structural_similarity(x[i], y[i], data_range=2.0, win_size=5), abs=1e-6)
    batch = M.ssim(x, y, 1.0)
    assert batch.shape == (2,) and batch[1] == pytest.approx(M.ssim(x[1], y[1], 1.0), abs=1e-12)
    assert M.psnr(x, y, 1.0)[0] == pytest.approx(M.psnr(x[0], y[0], 1.0))
    assert M.ssim(x[0], x[0], 1.0) == pytest.approx(1.0)
    assert np.isinf(M.psnr(x[0], x[0], 1.0))


def test_pointing_game():
    heat = np.zeros((3, 4, 4))
    heat[0, 1, 1] = heat[1, 3, 3] = heat[2, 0, 0] = 1
    masks = np.zeros((3, 4, 4), bool)
    masks[:, :2, :2] = True
    assert M.pointing_game(heat, masks) == pytest.approx(2 / 3)
    masks[2] = False
    with pytest.raises(ValueError, match="empty"):
        M.pointing_game(heat, masks)


def _grouped(seed: int, n_patients: int = 40):
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"p{i}" for i in range(n_patients)], rng.integers(1, 4, n_patients))
    y, s = _random(seed, n=len(groups))
    return y, s, groups


def test_bootstrap_reproducible_and_resamples_patients():
    y, s, groups = _grouped(0)
    a = M.bootstrap_ci(M.auroc_macro, y, s, groups=groups, n=300, seed=0)
    b = M.bootstrap_ci(M.auroc_macro, y, s, groups=groups, n=300, seed=0)
    c = M.bootstrap_ci(M.auroc_macro, y, s, groups=groups, n=300, seed=1)
    assert a == b and (a.lo, a.hi) != (c.lo, c.hi)
    assert a.lo < a.estimate < a.hi and a.n_resamples + a.n_skipped == 300
    lo, hi = a
    assert (lo, hi) == (a.lo, a.hi)


@pytest.mark.parametrize("metric", [M.auroc_macro, M.auroc_micro])
def test_weighted_fast_path_equals_materialised_resamples(metric):
    y, s, groups = _grouped(1)
    y[::7, 0] = np.nan
    fast = M.bootstrap_values(metric, y, s, groups=groups, n=200, seed=3)
    slow = M.bootstrap_values(lambda a, b: metric(a, b), y, s, groups=groups, n=200, seed=3)
    np.testing.assert_allclose(fast, slow, atol=1e-12)


def test_bootstrap_skips_and_counts_undefined_resamples():
    groups = np.array([f"p{i}" for i in range(20)])
    y = np.zeros(20)
    y[0] = 1  # one positive patient: resamples without it are undefined
    s = np.linspace(0, 1, 20)
    ci = M.bootstrap_ci(M.auroc_macro, y, s, groups=groups, n=200, seed=0)
    assert ci.n_skipped > 0 and ci.n_resamples + ci.n_skipped == 200
    slow = M.bootstrap_ci(lambda a, b: M.auroc_macro(a, b), y, s, groups=groups, n=200, seed=0)
    assert slow.n_skipped == ci.n_skipped
    none = M.bootstrap_ci(M.auroc_macro, np.zeros(20), s, groups=groups, n=50, seed=0)
    assert none.n_skipped == 50 and np.isnan(none.lo)


def test_paired_bootstrap_detects_a_better_method():
    y, s, groups = _grouped(2, n_patients=80)
    rng = np.random.default_rng(0)
    good = y + rng.normal(scale=0.5, size=y.shape)
    bad = rng.normal(size=y.shape)
    delta, lo, hi, p = M.paired_bootstrap(M.auroc_macro, y, good, bad, groups, n=300, seed=0)
    assert delta == pytest.approx(M.auroc_macro(y, good) - M.auroc_macro(y, bad))
    assert 0 < lo < delta < hi and p < 0.01
    same = M.paired_bootstrap(M.auroc_macro, y, good, good, groups, n=100, seed=0)
    assert same.delta == 0 and same.p_value == 1.0


def test_score_classification_report():
    y, s, groups = _grouped(3)
    out = M.score_classification(("auroc_macro", "f1_macro"), (y, s), (y, s), groups, ci_metrics=("f1_macro",),
                                 n_boot=50, seed=0)
    assert out.metrics["auroc_macro"] == pytest.approx(M.auroc_macro(y, s))
    lo, hi = out.ci["f1_macro"]
    assert lo <= out.metrics["f1_macro"] <= hi
    with pytest.raises(ValueError, match="not a classification metric"):
        M.score_classification(("psnr",), (y, s), (y, s), groups)


def test_ssim_masked_is_the_skimage_map_over_the_mask():
    rng = np.random.default_rng(3)
    x = rng.random((2, 30, 30))
    y = np.clip(x + rng.normal(scale=0.2, size=x.shape), 0, 1)
    mask = np.zeros(x.shape, bool)
    mask[0, 5:20, 0:12] = True  # touches the border: the full map is used there
    mask[1, 10:14, 10:28] = True
    got = M.ssim_masked(x, y, mask, 1.0)
    for i in range(2):
        _, full = structural_similarity(x[i], y[i], data_range=1.0, full=True)
        assert got[i] == pytest.approx(full[mask[i]].mean(), abs=1e-9)
        assert M.ssim_masked(x[i], y[i], mask[i], 1.0) == pytest.approx(got[i])
    with pytest.raises(ValueError, match="empty mask"):
        M.ssim_masked(x[0], y[0], np.zeros((30, 30), bool), 1.0)


def test_mask_iou():
    a = np.zeros((3, 4, 4), bool)
    b = np.zeros((3, 4, 4), bool)
    a[0, :2, :2] = b[0, :2, :] = True  # 4 / 8
    a[1] = b[1] = True
    iou = M.mask_iou(a, b)
    assert iou[0] == 0.5 and iou[1] == 1.0 and np.isnan(iou[2])
