"""P2: the harness linear probe (extract once, L-BFGS on cached features) vs a naive re-encoding probe."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.bench.fixtures import planted_images, random_encoder
from harness.bench.measure import best_of
from harness.bench.profiles import TARGETS, BenchProfile
from harness.bench.report import Figure


def naive_probe(encoder: Any, data: dict[str, tuple[np.ndarray, np.ndarray]], epochs: int, batch: int = 64,
                lr: float = 1e-3, seed: int = 0) -> np.ndarray:
    """The probe of many paper codebases: frozen encoder, linear head, Adam, re-encoding every epoch.

    Like MoCo's ``main_lincls``: each epoch trains on every training image (encoded again,
    under ``no_grad``), then validates; the head of the best validation AUROC-macro scores
    test. A ``BatchNorm1d`` without affine parameters standardises the features (MAE's
    linear probe). Returns the test scores ``(N_test, L)``.
    """
    import torch

    from harness import metrics
    from harness.encoders.preprocess import to_model_input

    torch.manual_seed(seed)
    pp = encoder.card.preprocess
    x_train, y_train = data["train"]
    head = torch.nn.Sequential(torch.nn.BatchNorm1d(encoder.num_features, affine=False),
                               torch.nn.Linear(encoder.num_features, y_train.shape[1]))
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    encoder.eval()

    def scores(images: np.ndarray) -> np.ndarray:
        head.eval()
        with torch.no_grad():
            parts = [torch.sigmoid(head(encoder.encode_image(to_model_input(images[s:s + batch], pp))))
                     for s in range(0, len(images), batch)]
        return torch.cat(parts).numpy()

    best, best_state = -1.0, None
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        head.train()
        for idx in np.array_split(rng.permutation(len(x_train)), max(1, len(x_train) // batch)):
            with torch.no_grad():
                feats = encoder.encode_image(to_model_input(x_train[np.sort(idx)], pp))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                head(feats), torch.as_tensor(y_train[np.sort(idx)]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        auroc = metrics.auroc_macro(data["val"][1], scores(data["val"][0]))
        if auroc > best:
            best, best_state = auroc, {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    return scores(data["test"][0])


def harness_probe(encoder: Any, data: dict[str, tuple[np.ndarray, np.ndarray]], cache: Path) -> np.ndarray:
    """The harness path: features of each split (cached), one L-BFGS fit per L2 strength, test scores."""
    from harness.features import extract_features
    from harness.protocols.linear_probe import ProbeConfig, fit_probe

    feats = {name: extract_features(encoder, images, encoder.card.preprocess, cache_key={
        "weights_sha256": "bench", "split": name}, cache_root=cache, progress=False)
        for name, (images, _) in data.items()}
    fit = fit_probe(feats["train"], data["train"][1], feats["val"], data["val"][1], ProbeConfig())
    return fit.probe.predict(feats["test"])


def bench_probe(profile: BenchProfile, work: Path) -> tuple[Figure, str]:
    """P2: harness probe (cold and warm feature cache) vs ``naive_probe``; AUROC of both."""
    from harness import metrics
    from harness.features import extraction_seconds

    encoder = random_encoder(profile.method_profile, image_size=profile.p2_image_size)
    n_total = sum(profile.p2_sizes)
    images, labels = planted_images(n_total, profile.p2_image_size, seed=2)
    cut = np.cumsum(profile.p2_sizes)[:-1]
    data = {name: (x, y) for name, x, y in zip(("train", "val", "test"), np.split(images, cut),
                                                np.split(labels, cut), strict=True)}
    y_test = data["test"][1]
    runs = iter(range(10**6))
    split = {"extract_s": float("inf"), "fit_s": float("inf")}

    def harness_cold() -> np.ndarray:  # a new cache folder every time: always a miss
        with extraction_seconds() as extract:
            t = time.perf_counter()
            scores = harness_probe(encoder, data, work / f"p2-cold-{next(runs)}")
        total = time.perf_counter() - t
        if total < split["extract_s"] + split["fit_s"]:  # the split of the best (reported) run
            split.update(extract_s=extract[0], fit_s=total - extract[0])
        return scores

    t_cold = t_naive = float("inf")
    for _ in range(profile.repeats):  # alternate, so both see the same background load
        t, s_harness = best_of(harness_cold, 1)
        t_cold = min(t_cold, t)
        t, s_naive = best_of(lambda: naive_probe(encoder, data, profile.p2_epochs), 1)
        t_naive = min(t_naive, t)
    warm_cache = work / "p2-warm"
    harness_probe(encoder, data, warm_cache)
    t_warm, _ = best_of(lambda: harness_probe(encoder, data, warm_cache), profile.repeats)
    auc_h, auc_n = metrics.auroc_macro(y_test, s_harness), metrics.auroc_macro(y_test, s_naive)
    ratio = t_naive / t_cold
    same = abs(auc_h - auc_n) <= 0.005
    fig = Figure("P2", "linear probe: naive re-encoding / harness (cold cache)",
                 f"{t_cold:.1f} s vs {t_naive:.1f} s; AUROC {auc_h:.4f} vs {auc_n:.4f}", ratio,
                 f">= {TARGETS['P2']:g}x, AUROC +-0.005", ratio >= TARGETS["P2"] and same)
    text = (f"{' / '.join(map(str, profile.p2_sizes))} train / val / test images of {profile.p2_image_size} px with "
            f"{labels.shape[1]} planted findings (blob, stripes, dark quadrant, speckle; `planted_images`), "
            f"`random` resnet18 encoder. Harness: `extract_features` of the three splits with an empty cache, then "
            f"`fit_probe` (L-BFGS with the gradient written out, all labels at once, the default 7-value L2 grid "
            f"strongest first and warm-started, chosen on validation AUROC): {t_cold:.2f} s "
            f"(extraction {split['extract_s']:.2f} s, probe fits {split['fit_s']:.2f} s); with the features already "
            f"cached (every further fraction, seed or grid value): {t_warm:.2f} s ({t_naive / t_warm:.0f}x). "
            f"Naive: `naive_probe`, {profile.p2_epochs} epochs of Adam (lr 1e-3, batch 64) on a BatchNorm + linear "
            f"head, re-encoding the training images every epoch and validating every epoch, best validation epoch "
            f"kept (MoCo `main_lincls` runs 100 epochs, so the ratio there is about {100 / profile.p2_epochs:.0f}x "
            f"this one): {t_naive:.2f} s. Both sides best of {profile.repeats} alternating runs. Test "
            f"AUROC-macro: harness {auc_h:.4f}, naive {auc_n:.4f} (difference {auc_h - auc_n:+.4f}; "
            f"{'within' if same else 'OUTSIDE'} 0.005).")
    return fig, text
