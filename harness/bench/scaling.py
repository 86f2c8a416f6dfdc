"""Scaling: extraction, probe and retrieval at 1x, 4x, 16x a base size: time and peak RSS (no target)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from harness.bench.fixtures import planted_images, random_encoder
from harness.bench.measure import best_of, peak_rss
from harness.bench.profiles import BenchProfile
from harness.bench.report import Figure


def _scaling_row(kind: str, multiple: int, n: int, fn: Callable[[], Any]) -> dict[str, Any]:
    with peak_rss() as mem:
        seconds, _ = best_of(fn, 1)
    return {"kind": kind, "multiple": multiple, "n": n, "seconds": seconds, **mem}


def bench_scaling(profile: BenchProfile, work: Path) -> tuple[Figure, str]:
    """Extraction, probe and retrieval at ``scaling_multiples`` x a base size: time and peak RSS."""
    import torch

    from harness.features import extract_features
    from harness.protocols.linear_probe import ProbeConfig, fit_probe
    from harness.protocols.retrieval_scores import pair_ranks

    encoder = random_encoder(profile.method_profile)
    pp, base = encoder.card.preprocess, profile.scaling_base
    tile, _ = planted_images(base["extraction"], pp.image_size, seed=4)
    rng = np.random.default_rng(5)
    rows = []
    for m in profile.scaling_multiples:
        images = np.concatenate([tile] * m)  # extraction time does not depend on the pixels
        rows.append(_scaling_row("extraction", m, len(images), lambda images=images, m=m: extract_features(
            encoder, images, pp, cache_key={"weights_sha256": "bench"}, cache_root=work / f"x{m}", progress=False)))
        n = base["probe"] * m
        x = rng.normal(size=(n, 512)).astype(np.float32)
        y = (rng.random((n, 14)) < 1 / (1 + np.exp(-x @ rng.normal(size=(512, 14)) / 8))).astype(np.float32)
        cut = int(0.8 * n)
        rows.append(_scaling_row("probe (fit_probe, 3 L2 values)", m, n, lambda x=x, y=y, cut=cut: fit_probe(
            x[:cut], y[:cut], x[cut:], y[cut:], ProbeConfig(l2_grid=(1.0, 1e-2, 1e-4), max_iter=100))))
        n = base["retrieval"] * m
        img = torch.nn.functional.normalize(torch.randn(n, 256), dim=1)
        txt = torch.nn.functional.normalize(img + 0.8 * torch.randn(n, 256), dim=1)
        rows.append(_scaling_row("retrieval (pair_ranks, both directions)", m, n,
                                 lambda img=img, txt=txt, n=n: pair_ranks(img, txt, np.arange(n))))
    lines = [f"Base sizes: extraction {base['extraction']} images of {pp.image_size} px (`random` "
             f"{profile.method_profile} encoder, cold cache), probe {base['probe']} rows x 512 features x 14 labels "
             f"(80 % train, 20 % val), retrieval {base['retrieval']} image-report pairs of 256-d embeddings; "
             f"multiples {list(profile.scaling_multiples)}. Peak RSS: the process's high-water mark during the step "
             "(Linux VmHWM, reset before it) and the part added by the step.", "",
             "| step | x | n | seconds | per 1k items s | peak RSS MB | added MB |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['kind']} | {r['multiple']} | {r['n']:,} | {r['seconds']:.2f} | {1000 * r['seconds'] / r['n']:.3f} "
              f"| {r['peak_mb']:.0f} | {r['added_mb']:.0f} |" for r in rows]
    top = max(profile.scaling_multiples)
    growth = {r["kind"].split()[0]: r["seconds"] for r in rows if r["multiple"] == top}
    first = {r["kind"].split()[0]: r["seconds"] for r in rows if r["multiple"] == 1}
    measured = ", ".join(f"{k} {growth[k] / max(first[k], 1e-9):.1f}x time" for k in growth)
    fig = Figure("scaling", f"1x -> {top}x the base size", measured, None,
                 f"extraction, probe ~{top}x; retrieval ~{top * top}x (N x N), memory bounded", None)
    return fig, "\n".join(lines)
