"""P3: reading the uint8 memmap image cache vs decoding and resizing the image files every epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.bench.fixtures import write_image_files
from harness.bench.measure import alternating_best, best_of
from harness.bench.profiles import TARGETS, BenchProfile
from harness.bench.report import Figure


def bench_images(profile: BenchProfile, work: Path) -> tuple[Figure, str]:
    """P3: an epoch of reads from the memmap cache vs an epoch of ``decode_image`` on the files."""
    from harness.data.images import decode_image, image_store

    size, batch = 128, 64
    paths = write_image_files(work / "p3-files", profile.p3_files, profile.p3_file_px)
    t_build, store = best_of(lambda: image_store(paths, size, cache_root=work / "p3-cache", progress=False), 1)
    order = np.random.default_rng(0).permutation(len(paths))

    def decode_epoch() -> int:
        return sum(decode_image(paths[i], size).size > 0 for i in order)

    def cache_epoch() -> int:
        return sum(len(store[np.sort(order[s:s + batch])]) for s in range(0, len(order), batch))

    t_decode, t_cache = alternating_best(decode_epoch, cache_epoch, profile.repeats, second_repeats=3)
    n = len(paths)
    ratio = t_decode / t_cache
    fig = Figure("P3", "image loading: cache / decode every epoch", f"{n / t_cache:,.0f} vs {n / t_decode:,.0f} img/s",
                 ratio, f">= {TARGETS['P3']:g}x", ratio >= TARGETS["P3"])
    text = (f"{n} files ({n // 2} JPEG q95 + {n - n // 2} PNG, {profile.p3_file_px} x {profile.p3_file_px} grey; "
            f"real MIMIC/CheXpert JPEGs are larger, which favours the cache further), read in a shuffled order "
            f"to {size} px. Decode: `decode_image` per file (Pillow, DCT-domain draft for large JPEGs, antialiased "
            f"resize), one process. Cache: batches of {batch} rows from the uint8 memmap (page cache warm, as on "
            f"every epoch after the first). One-off cache build: {t_build:.2f} s ({n / t_build:.0f} img/s).")
    return fig, text
