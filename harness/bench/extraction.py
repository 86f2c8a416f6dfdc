"""P1: ``features.extract_features`` with a cold cache vs a bare ``encode_image`` loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.bench.fixtures import planted_images, random_encoder
from harness.bench.measure import alternating_best
from harness.bench.profiles import TARGETS, BenchProfile
from harness.bench.report import Figure


def bench_extraction(profile: BenchProfile, work: Path) -> tuple[Figure, str]:
    """P1: ``extract_features`` with a cold cache vs ``encode_image`` on pre-made tensors."""
    import torch

    from harness.encoders.preprocess import to_model_input
    from harness.features import extract_features

    encoder = random_encoder(profile.method_profile)
    pp, batch = encoder.card.preprocess, 64
    images, _ = planted_images(profile.p1_images, pp.image_size, seed=1)
    inputs = [to_model_input(images[s:s + batch], pp) for s in range(0, len(images), batch)]

    def bare() -> Any:
        with torch.inference_mode():
            return torch.cat([encoder.encode_image(x) for x in inputs])

    runs = iter(range(10**6))

    def harness_cold() -> np.ndarray:  # a new cache folder every time: always a miss
        return extract_features(encoder, images, pp, batch_size=batch, cache_key={"weights_sha256": "bench"},
                                cache_root=work / f"p1-{next(runs)}", progress=False)

    t_bare, t_harness = alternating_best(bare, harness_cold, profile.repeats)
    n = len(images)
    ratio = t_bare / t_harness
    fig = Figure("P1", "feature extraction: harness / bare model(x)", f"{n / t_harness:.1f} vs {n / t_bare:.1f} img/s",
                 ratio, f">= {TARGETS['P1']}x", ratio >= TARGETS["P1"])
    text = (f"{n} images, {pp.image_size} px, `random` encoder ({profile.method_profile} profile), batch {batch}. "
            f"Bare: `encode_image` over tensors preprocessed beforehand (not timed). Harness: "
            f"`extract_features` from uint8 with an empty cache (preprocessing, chunking, checksum and the "
            f"atomic .npy write all timed). Best of {profile.repeats}: harness {t_harness:.2f} s, bare "
            f"{t_bare:.2f} s.")
    return fig, text
